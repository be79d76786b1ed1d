"""Serving's replica of the learner: `stream` predictions from a model that learned every label before them.

Learning is deterministic given the merged stream (DESIGN.md, "Flow and guarantees"),
so a second learner fed the same `features` and `labels` records predicts exactly
what training's does. The replica starts from its own checkpoint, else training's
latest (the learner and the input offsets it reflects; fresh if there is none),
keeps only the champion, and reads every partition of both topics itself (assigned,
not balanced by a consumer group) from those offsets; it commits what it has read to
serving's group only so that lag tools show how far behind it is. Each batch goes
through training's own `LearnerFeed`; each prediction the champion makes becomes a
`stream` prediction, produced, and its acks awaited once per batch. So what serving
scores the stream with is never behind the learner, where a model followed from the
live slot lags it by up to a second, which on a drifting stream costs accuracy
(README, "Performance").

The price is the champion's learning CPU a second time (cheap for `logreg`, a core
for `arf` at a few thousand events/s): `STREAM_MODEL=follow` scores with the model
followed from the live slot instead. A prediction's version is the champion's
newest registry version (the live slot's stamp, read every `VERSION_POLL_S`); its
id is `<event_id>:<model>:stream`, the same on every replica and every replay, so
a restart (which replays from the checkpoint) or a second serving replica makes
duplicates that monitoring drops. Serving replicas scale HTTP; one replica is
enough for the stream (`STREAM_SCORING=false` on the others saves their CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from services.serving import metrics
from services.training.checkpoint import CheckpointStore, TrainingState, fresh_state, resume
from services.training.feed import LearnerFeed
from services.training.learner import LearnerOutput, PredictionMade
from services.training.worker import prediction_json
from shared import tasks
from shared.clock import utcnow
from shared.kafka import produce_all
from shared.messages import GLOBAL_KEY
from shared.pipeline import PipelineConfig
from shared.registry import ModelRegistry
from shared.settings import CommonSettings

__all__ = [
    "GC_THRESHOLDS",
    "VERSION_POLL_S",
    "LearnerReplica",
    "Published",
    "published_ahead",
    "restore_replica",
    "stream_records",
]

log = logging.getLogger(__name__)

COMMIT_S = 0.2  # how often the group's offsets follow the replica (for lag tools only)
VERSION_POLL_S = 1.0
# As in training, whose learner state this is: predictions waiting for their labels
# would otherwise reach the oldest generation and be walked again and again.
GC_THRESHOLDS = (50_000, 20, 100)


async def restore_replica(
    own: CheckpointStore,
    training: CheckpointStore,
    pipeline: PipelineConfig,
    settings: CommonSettings,
    now: float,
    champion: str | None = None,
) -> tuple[TrainingState, Published | None]:
    """The replica's own checkpoint, else training's, else a fresh state; and what
    the replica had published ahead of that state (a new champion).

    Its own first (when it learned `champion`, the initial one if None): training's
    may be ahead of the predictions the replica published before it stopped, and the
    events in between would never be scored. A new champion comes from training's
    (its own learned only the one before). The `features` records training's
    checkpoint is behind on, up to where the replica's own had read (it saves as it
    stops for the change: `save_and_stop`), were scored by the previous champion (but
    for the vectors its learner still buffered): the new one learns them and does not
    publish them again.
    """
    champion = champion or pipeline.initial_champion()
    mine = resume(await own.load(), own.key, pipeline, settings, now)
    if mine is not None and champion in mine.learner.models:
        return mine, None
    state = resume(await training.load(), training.key, pipeline, settings, now)
    if state is None:  # none yet: from the beginning
        state = fresh_state(pipeline, settings)
    if mine is None:
        return state, None
    features = {tp for tp in {*state.offsets, *mine.offsets} if tp.topic.endswith("features")}
    skipped = {
        f"{tp.topic}/{tp.partition}": (mine.offsets.get(tp, 0), state.offsets[tp])
        for tp in features
        if state.offsets.get(tp, 0) > mine.offsets.get(tp, 0)
    }
    if skipped:
        log.warning(
            "the new champion %s starts from training's checkpoint, ahead of what the"
            " replica had scored: vectors at offsets %s get no stream prediction",
            champion,
            skipped,
        )
    return state, published_ahead(state, mine, features)


def published_ahead(
    state: TrainingState, mine: TrainingState, features: set[TopicPartition]
) -> Published | None:
    """What the previous champion's replica (at `mine`) published that a replica
    restored at `state` would predict again; None if nothing."""
    spans = {
        tp: (state.offsets.get(tp, 0), mine.offsets[tp])
        for tp in features
        if mine.offsets.get(tp, 0) > state.offsets.get(tp, 0)
    }
    if not spans:
        return None
    published = Published(spans, set(mine.learner.buffered_vectors()))
    for event_id, ref in state.learner.buffered_vectors().items():  # read, not predicted
        if ref is not None and ref[2] < mine.offsets.get(TopicPartition(ref[0], ref[1]), 0):
            published.add(event_id)  # by training then; by the previous champion since
    return published


@dataclass
class Published:
    """What the previous champion's replica published: the vectors of `features` in
    `spans` (per partition: from, until), but for those still `buffered` (read, not
    predicted). `note` collects, as they are read again, the event ids in `scored`."""

    spans: dict[TopicPartition, tuple[int, int]]
    buffered: set[str]
    scored: set[str] = field(default_factory=set)

    def note(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Add the event ids of `batch`'s vectors the previous champion scored."""
        for tp, records in batch.items():
            start, until = self.spans.get(tp, (0, 0))
            for record in records:
                if record.offset >= until:
                    self.spans.pop(tp, None)
                    break
                if record.offset < start:  # re-read for a prediction made before
                    continue
                with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                    self.add(str(orjson.loads(record.value)["event_id"]))

    def add(self, event_id: str) -> None:
        """`event_id` was read by the previous champion: scored unless still buffered."""
        if event_id not in self.buffered:
            self.scored.add(event_id)


def stream_records(
    outputs: list[LearnerOutput],
    champion: str,
    version: str,
    entities: dict[str, str | None],
    scored: set[str] | None = None,
) -> list[tuple[bytes, bytes]]:
    """The champion's predictions among `outputs` as `stream` prediction records (key,
    JSON), but for events in `scored` (published before: taken out of it).

    Forgets the entity of every event predicted (the learner predicts an event once).
    """
    now = utcnow()
    records = []
    for output in outputs:
        if not isinstance(output, PredictionMade):
            continue
        entity = entities.pop(output.event_id, None)
        if output.model != champion:
            continue
        if scored and output.event_id in scored:
            scored.discard(output.event_id)
            continue
        value = prediction_json(output, version, entity, now, source="stream")
        records.append(((entity or GLOBAL_KEY).encode(), value))
    return records


class LearnerReplica:
    """Feeds a copy of training's learner and publishes the champion's predictions."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        feed: LearnerFeed,
        registry: ModelRegistry,
        store: CheckpointStore,
        *,
        champion: str,
        predictions_topic: str,
        checkpoint_seconds: float = 10.0,
        batch_size: int = 5000,
        poll_ms: int = 200,
        clock: Callable[[], float] = time.monotonic,
        published: Published | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.feed = feed
        self.registry = registry
        self.store = store
        self.checkpoint_seconds = checkpoint_seconds
        self.champion = champion
        self.predictions_topic = predictions_topic
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.clock = clock
        self.version = feed.state.version_of(champion)
        self.last_poll = clock()
        self._last_commit = 0.0
        self._uncommitted = False  # read past the group's offsets (monitoring asks them)
        self._commit_warned = -60.0
        self._last_checkpoint = clock()
        self._saving: asyncio.Task[None] | None = None
        self._stepping = asyncio.Lock()
        # a champion change: what the previous one published is learned, not published
        self.published = published or Published({}, set())
        feed.state.learner.keep_only([champion])

    def seconds_since_poll(self) -> float:
        return self.clock() - self.last_poll

    async def start(self, partitions: dict[str, list[int]]) -> None:
        """Read `partitions` (topic -> numbers) from where the restored state stands."""
        state = self.feed.state
        assigned = [TopicPartition(t, p) for t, numbers in partitions.items() for p in numbers]
        self.consumer.assign(assigned)
        await self.feed.seek(self.consumer, assigned)
        state.watermark.assign(assigned, self.clock())
        await self.store.write(state)  # a restart resumes here, not at training's newer one
        self._uncommitted = True  # the group's offsets follow, also if nothing new comes
        log.info(
            "replica of the learner for %s resumes at %s (0: the beginning)",
            self.champion,
            {f"{tp.topic}/{tp.partition}": state.offsets.get(tp, 0) for tp in assigned},
        )

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(
                timeout_ms=self.poll_ms, max_records=self.batch_size
            )
            self.last_poll = self.clock()
            async with self._stepping:
                await self.step(batch)

    async def save_and_stop(self) -> None:
        """Checkpoint between two batches and take no more (the champion changed): the
        next champion's replica then knows exactly what this one published."""
        await self._stepping.acquire()  # kept: `run` stops before its next batch
        if self._saving is not None:
            await self._saving
        await self.store.write(self.feed.state)
        await self._commit(self.clock())

    async def step(self, batch: dict[TopicPartition, list]) -> None:
        """Add `batch`, advance, publish the champion's predictions and wait for their acks."""
        now = self.clock()
        if self.published.spans:
            self.published.note(batch)
        _, _, bad = self.feed.take(batch, now)
        for topic, partition, offset, code, message in bad:
            metrics.INVALID_MESSAGES.labels(topic).inc()
            log.warning(
                "replica skips an invalid record topic=%s partition=%d offset=%d code=%s: %s",
                topic,
                partition,
                offset,
                code,
                message,
            )
        await self.feed.refresh(self.consumer, metrics.STREAM_LAG, now, polled=bool(batch))
        outputs = self.feed.advance(now)
        if outputs:
            state = self.feed.state
            records = stream_records(
                outputs, self.champion, self.version, state.entities, self.published.scored
            )
            await produce_all(self.producer, self.predictions_topic, records)
            if records:
                metrics.PREDICTIONS.labels("stream", self.champion).inc(len(records))
        self._uncommitted |= bool(batch)
        if self._uncommitted and now - self._last_commit >= COMMIT_S:
            await self._commit(now)
        saving = self._saving is not None and not self._saving.done()
        if now - self._last_checkpoint >= self.checkpoint_seconds and not saving:
            self._last_checkpoint = now
            write = self.store.write(self.feed.state)
            self._saving = tasks.start(self._checkpoint(write), name="replica-checkpoint")

    async def _checkpoint(self, write: Awaitable[None]) -> None:
        try:
            await write
        except Exception as error:  # Redis away: a restart replays a little more
            log.warning("replica checkpoint not written (the next one tries again): %r", error)

    async def follow_versions(self) -> None:
        """Keep `version` on the champion's newest registry version (the live slot's stamp)."""
        while True:
            try:
                stamp = await self.registry.live_stamp(self.champion)
            except (RedisError, OSError) as error:
                log.warning(
                    "cannot read %s's version (keeping %s): %r",
                    self.champion,
                    self.version,
                    error,
                )
            else:
                if stamp is not None:
                    self.version = stamp.version
            await asyncio.sleep(VERSION_POLL_S)

    async def _commit(self, now: float) -> None:
        """Commit the group's offsets at what the replica has read: lag tools see how far
        behind it is (a restart resumes from the replica's checkpoint, not from these)."""
        self._last_commit = now
        try:
            await self.consumer.commit(dict(self.feed.state.offsets))
            self._uncommitted = False
        except KafkaError as error:  # a broker away, a group in use by `follow` scorers
            if now - self._commit_warned >= 60:
                self._commit_warned = now
                log.warning("replica offsets not committed (lag tools only): %r", error)
