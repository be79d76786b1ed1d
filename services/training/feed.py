"""Feeding the learner from Kafka records, as training's worker and serving's replica do.

`LearnerFeed.take` adds a polled batch of `features` and `labels` records to the
learner (each parsed once with its typed model), notes each partition's progress in
the watermark and the next offset to read in the state; `advance` then runs the
learner as far as the watermark allows. Both need no I/O. The two consumer steps
around them are here too: `seek` (where to read from) and `refresh` (which
partitions are caught up, for the watermark's idle rule). Training's worker and
serving's replica of the learner (`services.serving.replica`) feed the same state
the same way, which is what makes the replica's predictions equal training's.

>>> from datetime import timedelta
>>> from aiokafka import ConsumerRecord, TopicPartition
>>> from river import linear_model
>>> from services.training.learner import OnlineLearner
>>> from shared.watermark import LearnerWatermark
>>> state = TrainingState(
...     OnlineLearner({"lr": linear_model.LogisticRegression()}, ttl=timedelta(hours=1)),
...     LearnerWatermark(), config_hash="x")
>>> feed = LearnerFeed(state, features="features", labels="labels", task="binary")
>>> tp = TopicPartition("features", 0)
>>> state.watermark.assign([tp], now=0.0)
>>> def vector(offset, second):
...     value = (f'{{"event_id": "e{offset}", "entity_id": null, "event_time": '
...              f'"2024-01-01T00:00:{second:02d}Z", "features": {{"x": 1.0}}, '
...              f'"feature_set_version": "v1"}}')
...     return ConsumerRecord("features", 0, offset, 0, 0, None, value.encode(), None, 0, 0, [])
>>> feed.take({tp: [vector(0, 0), vector(1, 5)]}, now=0.0), state.offsets[tp]
((2, 0, []), 2)
>>> [(type(out).__name__, out.event_id) for out in feed.advance(now=0.0)]
[('PredictionMade', 'e0')]
>>> bad = ConsumerRecord("labels", 0, 7, 0, 0, None, b'{"x": 1}', None, 0, 0, [])
>>> feed.take({TopicPartition("labels", 0): [bad]}, now=0.0)[2]
[('labels', 0, 7, 'missing_field', "'event_id' is required")]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import Gauge

from services.training.checkpoint import TrainingState
from services.training.learner import LearnerOutput
from shared.catalogue import Task
from shared.labels import target
from shared.messages import FeatureVector, Label
from shared.upstream import Upstream
from shared.validation import parse_message

__all__ = ["REFRESH_S", "Bad", "LearnerFeed"]

log = logging.getLogger(__name__)

REFRESH_S = 0.5  # how often caught-up status and lag are checked while records flow

# A record skipped as invalid: (topic, partition, offset, error code, message).
Bad: TypeAlias = tuple[str, int, int, str, str]


class LearnerFeed:
    """Adds records to `state` and advances its learner (see the module doc)."""

    def __init__(
        self,
        state: TrainingState,
        *,
        features: str,
        labels: str,
        task: Task,
        upstream: Upstream | None = None,
    ) -> None:
        self.state = state
        self.features = features
        self.labels = labels
        self.task = task
        self.upstream = upstream  # None: no word from upstream (every partition drained)
        self._last_refresh = 0.0

    def take(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]], now: float
    ) -> tuple[int, int, list[Bad]]:
        """Add every record of `batch`: (valid features, valid labels, the invalid ones)."""
        state = self.state
        counts = {self.features: 0, self.labels: 0}
        bad: list[Bad] = []
        for tp, records in batch.items():
            end = state.replay.get(tp)
            if end is not None:
                records = self._reread(tp, records, end)
                if not records:
                    continue
            for record in records:
                error = self._add(tp, record, now)
                if error is None:
                    counts[tp.topic] += 1
                else:
                    bad.append((tp.topic, tp.partition, record.offset, *error))
            state.offsets[tp] = records[-1].offset + 1
            state.records += len(records)
        return counts[self.features], counts[self.labels], bad

    def _reread(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord], end: int
    ) -> Sequence[ConsumerRecord]:
        """Hand the learner back the vectors of its waiting predictions among `records`
        read again before `end` (a restored checkpoint's read position), and return the
        records from `end` on: read for the first time."""
        learner = self.state.learner
        for record in records:
            if record.offset >= end:
                break
            message = parse_message(FeatureVector, record.value).message
            if isinstance(message, FeatureVector):
                x = {k: v for k, v in message.features.items() if v is not None}
                learner.fill((tp.topic, tp.partition, record.offset), x, message.event_time)
        if records[-1].offset >= end - 1:  # this partition is re-read
            del self.state.replay[tp]
            self.state.replay_from.pop(tp, None)
            for ref in learner.unfilled_refs():
                if (ref[0], ref[1]) == (tp.topic, tp.partition):
                    log.error(
                        "the vector at %s/%d offset %d is no longer in Kafka (retention?):"
                        " its waiting prediction cannot be learned and expires",
                        *ref,
                    )
                    learner.abandon(ref)
        return [record for record in records if record.offset >= end]

    async def seek(self, consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> None:
        """Position `consumer` where the state stands: at its next offset on a partition
        it has read, at the beginning of one it never read."""
        offsets, replay_from = self.state.offsets, self.state.replay_from
        for tp in partitions:
            if tp in self.state.replay and tp in replay_from:
                consumer.seek(tp, replay_from[tp])  # re-read the waiting vectors first
            elif tp in offsets:
                consumer.seek(tp, offsets[tp])
        fresh = [tp for tp in partitions if tp not in offsets]
        if fresh:
            await consumer.seek_to_beginning(*fresh)

    async def refresh(
        self, consumer: AIOKafkaConsumer, lag: Gauge, now: float, *, polled: bool
    ) -> None:
        """Note which partitions are drained upstream and caught up (asked in that
        order: see `shared.upstream`), and set `lag` per partition: every
        `REFRESH_S`, after an empty poll, and before a quiet partition is skipped while
        records flow (the stream may just have resumed, with its records on their way)."""
        stale = polled and self.state.watermark.skipping(now)
        if polled and not stale and now - self._last_refresh < REFRESH_S:
            return
        self._last_refresh = now
        assigned = list(consumer.assignment())
        if not assigned:
            return
        if self.upstream is not None:
            for tp, drained in (await self.upstream.drained(assigned)).items():
                self.state.watermark.drained(tp, drained)
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            position = await consumer.position(tp)
            end = ends.get(tp, position)
            self.state.watermark.caught_up(tp, position >= end)
            lag.labels(tp.topic, tp.partition).set(max(0, end - position))

    def advance(self, now: float) -> list[LearnerOutput] | None:
        """Run the learner up to the watermark: its outputs, or None if it had nothing to do."""
        watermark = self.state.watermark.get(now)
        learner = self.state.learner
        if watermark is None or learner.unfilled:  # restored vectors still being re-read
            return None
        if learner.buffered or learner.clock is None or watermark > learner.clock:
            return learner.advance(watermark)
        return None

    def _add(
        self, tp: TopicPartition, record: ConsumerRecord, now: float
    ) -> tuple[str, str] | None:
        """Add one record to the learner; None, or why it is invalid (then skipped)."""
        state, learner = self.state, self.state.learner
        kind = FeatureVector if tp.topic == self.features else Label
        result = parse_message(kind, record.value)
        message = result.message
        if message is None:
            state.watermark.observe(tp, None, now)
            return result.errors[0].code, result.errors[0].message
        if isinstance(message, FeatureVector):
            x = {k: v for k, v in message.features.items() if v is not None}
            duplicates = learner.duplicates
            ref = (tp.topic, tp.partition, record.offset)
            learner.add_features(message.event_id, message.event_time, x, ref)
            if learner.duplicates == duplicates:
                state.entities[message.event_id] = message.entity_id
            state.watermark.release(message.event_id)
            state.watermark.observe(tp, message.event_time, now)
            return None
        assert isinstance(message, Label)
        y = target(message.label, self.task)
        if y is None:
            state.watermark.observe(tp, None, now)
            return "invalid_value", f"label {message.label!r} is no {self.task} target"
        learner.add_label(message.event_id, y, message.label_time)
        if not learner.has_features(message.event_id):  # the features topic owes this event
            state.watermark.hold(message.event_id, self.features, now)
        state.watermark.observe(tp, message.label_time, now)
        return None
