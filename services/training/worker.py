"""The Kafka side of training: consume `features` and `labels`, learn, publish, checkpoint.

One loop, one consumer group over both topics. For each batch: validate and add each
record to the learner (bad ones are logged, counted and skipped), note each
partition's progress in the watermark, advance the learner as far as the watermark
allows, publish the learner's predictions and wait for their acks. About every
`live_seconds` each model that learned is written to its live slot in the registry
(`live`), which serving follows. Every `checkpoint_every` records or
`checkpoint_seconds`, and at shutdown, the state is checkpointed, with a new version
of each model that learned when `version_seconds` have passed since the last ones
(a model's first version comes at its first checkpoint); versions are announced on
`models`. A checkpoint takes its snapshot in the loop (a forked child pickles it,
see `snapshot`) and is written in the background while learning goes on; the next
waits for it.
Every `COMMIT_SECONDS` the group's offsets are committed at what the learner has read,
so lag tools (and monitoring, waiting for the learner's predictions) see how far behind
it is; they are not where a restart resumes.

On every partition assignment the consumer is positioned from the checkpointed
state, never from the group's committed offsets: at the state's next offset for a
partition the learner has read, at the beginning for one it never read. So a
restart resumes exactly where the restored learner stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from services.training import metrics
from services.training.champion import Drift, Promotion
from services.training.checkpoint import CheckpointStore, TrainingState
from services.training.feed import LearnerFeed
from services.training.learner import LearnerOutput, PredictionMade
from services.training.live import LiveModels
from services.training.promotions import drift_record, promotion_record
from shared import tasks
from shared.catalogue import Task
from shared.clock import utcnow
from shared.kafka import send_all
from shared.messages import GLOBAL_KEY, ModelPublished, Prediction
from shared.prometheus import observe_all
from shared.registry import ModelRegistry
from shared.topics import Topics
from shared.upstream import Upstream
from shared.watermark import Partition

__all__ = ["TrainingWorker", "prediction_fields", "prediction_json", "to_prediction"]

log = logging.getLogger(__name__)

CHECKPOINT_RETRY_S = 5.0
COMMIT_SECONDS = 0.2  # how often the group's offsets follow the learner (for lag tools)
_CONSUMED_FEATURES = metrics.CONSUMED.labels("features")
_CONSUMED_LABELS = metrics.CONSUMED.labels("labels")
MAX_UNACKED_BATCHES = 200  # producer batches in flight before the loop waits for acks


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds; anything else unchanged."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, bool | int | float | str) else value


def prediction_fields(
    made: PredictionMade,
    version: str,
    entity_id: str | None,
    now: datetime,
    source: Literal["learner", "stream"] = "learner",
) -> dict[str, Any]:
    """The fields of the prediction message for one model's prediction of one event
    (`stream` when serving's replica of the learner made it)."""
    probabilities = None
    if made.proba is not None:
        probabilities = {
            str(_plain(label)): min(1.0, max(0.0, float(p)))
            for label, p in made.proba.items()
            if math.isfinite(float(p))
        }
    return {
        "prediction_id": f"{made.event_id}:{made.model}:{source}",
        "event_id": made.event_id,
        "entity_id": entity_id,
        "model": made.model,
        "model_version": version,
        "y_pred": _plain(made.y_pred),
        "probabilities": probabilities,
        "source": source,
        "event_time": made.event_time,
        "time": now,
    }


def to_prediction(
    made: PredictionMade, version: str, entity_id: str | None, now: datetime
) -> Prediction:
    """The `learner` prediction message (what `prediction_json` encodes, as the typed model).

    >>> from datetime import UTC, datetime
    >>> t = datetime(2024, 1, 1, tzinfo=UTC)
    >>> made = PredictionMade("e1", "logreg", 1, {0: 0.25, 1: 0.75}, t)
    >>> p = to_prediction(made, "3", "k1", t)
    >>> p.prediction_id, p.model_version, p.y_pred, p.probabilities
    ('e1:logreg:learner', '3', 1, {'0': 0.25, '1': 0.75})
    >>> Prediction.model_validate_json(prediction_json(made, "3", "k1", t)) == p
    True
    """
    return Prediction(**prediction_fields(made, version, entity_id, now))


def prediction_json(
    made: PredictionMade,
    version: str,
    entity_id: str | None,
    now: datetime,
    source: Literal["learner", "stream"] = "learner",
) -> bytes:
    """The prediction message as JSON, encoded without building the model."""
    fields = prediction_fields(made, version, entity_id, now, source)
    return orjson.dumps(fields, option=orjson.OPT_UTC_Z)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: TrainingWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.worker.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.assigned(assigned)


class TrainingWorker:
    """Feeds the learner from Kafka, publishes its predictions, checkpoints its state."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        store: CheckpointStore,
        registry: ModelRegistry,
        topics: Topics,
        state: TrainingState,
        *,
        checkpoint_every: int = 100_000,
        checkpoint_seconds: float = 30.0,
        batch_size: int = 5000,
        poll_ms: int = 200,
        task: Task,
        clock: Callable[[], float] = time.monotonic,
        live_seconds: float = 0.5,
        version_seconds: float = 0.0,
        upstream: Upstream | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.registry = registry
        self.topics = topics
        self.state = state
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.task = task
        self.clock = clock
        self.listener = _Rebalance(self)
        self.feed = LearnerFeed(
            state, features=topics.features, labels=topics.labels, task=task, upstream=upstream
        )
        self.live = LiveModels(registry, every_s=live_seconds)
        self.version_seconds = version_seconds
        self.last_versions = clock()  # when the last checkpoint published versions
        self.last_poll = clock()
        self.last_checkpoint = clock()
        self._since_checkpoint = 0  # records consumed since the last checkpoint
        self._dirty = False  # anything changed since the last checkpoint
        self._last_commit = 0.0
        self._uncommitted = False  # read past the group's offsets (monitoring asks them)
        self._retry_at = 0.0  # after a failed checkpoint, not before this
        self._revoked_times: dict[Partition, datetime] = {}
        self._stop = asyncio.Event()
        self._unacked: list[asyncio.Future[Any]] = []  # prediction batches not yet acked
        self._saving: asyncio.Task[None] | None = None  # a checkpoint being written
        self.restored = {  # what the process started from (checkpoint or nothing)
            "records": state.records,
            "versions": dict(state.versions),
            "saved_at": state.saved_at.isoformat() if state.saved_at else None,
        }

    # ---- lifecycle

    def seconds_since_poll(self) -> float:
        return self.clock() - self.last_poll

    def stop(self) -> None:
        """Finish the current batch, write a last checkpoint, and return from `run`."""
        self._stop.set()

    async def run(self) -> None:
        await self._announce_current()
        while not self._stop.is_set():
            batch = await self.consumer.getmany(
                timeout_ms=self.poll_ms, max_records=self.batch_size
            )
            self.last_poll = self.clock()
            await self.step(batch)
        await self._saved()
        if self._dirty or self._since_checkpoint:
            await self.checkpoint()
        log.info("training stopped; its state is checkpointed at records=%d", self.state.records)

    # ---- rebalance

    def revoked(self, partitions: list[TopicPartition]) -> None:
        self._revoked_times.update(
            {p: t for p, t in self.state.watermark.last_times().items() if p in partitions}
        )
        self.state.watermark.revoke(partitions)

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        await self.feed.seek(self.consumer, partitions)
        self.state.watermark.assign(partitions, self.clock(), self._revoked_times)
        self._uncommitted = True  # the group's offsets follow the restored position,
        # also when nothing new comes (a kill -9 left them behind the checkpoint)
        for topic in (self.topics.features, self.topics.labels):
            known = self.consumer.partitions_for_topic(topic) or set()
            mine = {tp.partition for tp in partitions if tp.topic == topic}
            if known - mine:
                log.warning(
                    "assigned %s of %s's partitions: another replica shares the group;"
                    " one learner must read them all (run a single training replica)",
                    sorted(mine),
                    topic,
                )
        log.info(
            "assigned; resuming at %s (0: the beginning)",
            {f"{tp.topic}/{tp.partition}": self.state.offsets.get(tp, 0) for tp in partitions},
        )

    # ---- one batch

    async def step(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        started = time.perf_counter()
        now = self.clock()
        state = self.state
        n_features, n_labels, bad = self.feed.take(batch, now)
        for topic, partition, offset, code, message in bad:
            metrics.BAD_MESSAGES.labels(topic, code).inc()
            log.warning(
                "skipping an invalid record topic=%s partition=%d offset=%d code=%s: %s",
                topic,
                partition,
                offset,
                code,
                message,
            )
        if batch:
            self._since_checkpoint += sum(len(records) for records in batch.values())
            self._dirty = True
            metrics.HELD_JUMPS.set(state.watermark.held_jumps)
        await self.feed.refresh(self.consumer, metrics.CONSUMER_LAG, now, polled=bool(batch))
        outputs = self.feed.advance(now)
        if outputs is not None:
            self._dirty = True
            await self._publish(outputs)
        if self.live.due(now):
            await self.live.publish(state.learner, state.versions, now)
        if batch:
            _CONSUMED_FEATURES.inc(n_features)
            _CONSUMED_LABELS.inc(n_labels)
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            wall_ms = time.time() * 1000
            observe_all(
                metrics.LATENCY,
                [
                    max(0.0, (wall_ms - record.timestamp) / 1000)
                    for records in batch.values()
                    for record in records
                ],
            )
        self._uncommitted |= bool(batch)
        if self._uncommitted and now - self._last_commit >= COMMIT_SECONDS:
            await self._commit_offsets(now)
        if self._checkpoint_due(now):
            # A failed send ends the loop here, as it should: the restart re-learns from
            # the last checkpoint, whose state never claims an unacknowledged prediction.
            await self._await_acks()
            try:
                finish = await self._begin_checkpoint()
            except Exception:  # Redis away: keep learning, try again later
                self._checkpoint_failed()
            else:  # written while the loop goes on learning
                self._saving = tasks.start(self._end_checkpoint(finish), name="checkpoint")

    async def _publish(self, outputs: list[LearnerOutput]) -> None:
        """Queue the learner's predictions; their acks are awaited before a checkpoint."""
        now = utcnow()
        entities = self.state.entities
        records = []
        predicted: set[str] = set()
        counts: dict[str, int] = {}
        for output in outputs:
            if not isinstance(output, PredictionMade):
                continue
            entity = entities.get(output.event_id)
            value = prediction_json(output, self.state.version_of(output.model), entity, now)
            records.append(((entity or GLOBAL_KEY).encode(), value))
            counts[output.model] = counts.get(output.model, 0) + 1
            predicted.add(output.event_id)
        self._unacked += await send_all(self.producer, self.topics.predictions, records)
        if self.state.champion is not None:
            await self._champion(self.state.champion.take())
        if len(self._unacked) > MAX_UNACKED_BATCHES:
            await self._await_acks()
        for model, count in counts.items():
            metrics.PREDICTIONS.labels(model).inc(count)
        for event_id in predicted:
            entities.pop(event_id, None)

    async def _champion(self, decided: list[Promotion | Drift]) -> None:
        """Send the policy's promotions and drifts (made as the learner learned)."""
        if not decided:
            return
        clock = self.state.learner.clock
        changes = [promotion_record(d, clock) for d in decided if isinstance(d, Promotion)]
        drifts = [d for d in decided if isinstance(d, Drift)]
        self._unacked += await send_all(self.producer, self.topics.champions, changes)
        alerts = [drift_record(d, clock) for d in drifts]
        self._unacked += await send_all(self.producer, self.topics.alerts, alerts)

    async def _await_acks(self) -> None:
        """Wait for every prediction sent so far (raises if one failed)."""
        unacked, self._unacked = self._unacked, []
        await asyncio.gather(*unacked)

    # ---- checkpoints

    def _checkpoint_due(self, now: float) -> bool:
        if now < self._retry_at or (self._saving is not None and not self._saving.done()):
            return False
        if self._since_checkpoint >= self.checkpoint_every:
            return True
        return self._dirty and now - self.last_checkpoint >= self.checkpoint_seconds

    async def checkpoint(self) -> None:
        """Save the state and new versions, announce them, commit the group offsets."""
        await self._saved()
        await self._end_checkpoint(await self._begin_checkpoint(), background=False)

    async def _begin_checkpoint(self) -> Callable[[], Awaitable[list[ModelPublished]]]:
        """Take the snapshot (see `CheckpointStore.begin`); the learner may go on after."""
        await self._await_acks()  # the state claims these predictions were published
        versions = self.clock() - self.last_versions >= self.version_seconds
        finish = await self.store.begin(self.state, versions=versions)
        self.last_checkpoint = self.clock()
        if versions:
            self.last_versions = self.last_checkpoint
        self._since_checkpoint = 0
        self._dirty = False
        return finish

    async def _end_checkpoint(
        self, finish: Callable[[], Awaitable[list[ModelPublished]]], background: bool = True
    ) -> None:
        """Write the snapshot, then announce its versions and commit the group offsets."""
        try:
            published = await finish()
            metrics.CHECKPOINTS.inc()
            for version in published:
                await self.producer.send_and_wait(
                    self.topics.models, version.to_json(), key=version.name.encode()
                )
        except Exception:
            if not background:
                raise
            self._checkpoint_failed()
            return
        await self._commit_offsets(self.clock())
        log.info(
            "checkpoint records=%d versions=%s",
            self.state.records,
            {p.name: p.version for p in published},
        )

    def _checkpoint_failed(self) -> None:
        log.exception("checkpoint failed; retrying in %.0f s", CHECKPOINT_RETRY_S)
        self._dirty = True
        self._retry_at = self.clock() + CHECKPOINT_RETRY_S

    async def _saved(self) -> None:
        """Wait for the checkpoint being written, if any."""
        if self._saving is not None:
            with contextlib.suppress(Exception):
                await self._saving
            self._saving = None

    async def _commit_offsets(self, now: float) -> None:
        """Commit the group's offsets at what the learner has read: for lag tools, and
        for monitoring, which waits for the learner's predictions while they lag."""
        self._last_commit = now
        offsets = {
            tp: o for tp, o in self.state.offsets.items() if tp in self.consumer.assignment()
        }
        try:
            if offsets:
                await self.consumer.commit(offsets)
            self._uncommitted = False
        except KafkaError as error:  # a rebalance, a broker away: the checkpoint has them
            log.warning("offset commit failed (the checkpoint has them): %r", error)

    async def _announce_current(self) -> None:
        """Re-announce the checkpoint's versions: a crash may have come before the send."""
        for name, version in self.state.versions.items():
            try:
                published = await self.registry.get(name, version)
            except LookupError:
                log.warning("model %s version %s is not in the registry", name, version)
                continue
            await self.producer.send_and_wait(
                self.topics.models, published.to_json(), key=name.encode()
            )
