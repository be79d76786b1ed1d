"""Checkpoints: the whole training state and the input offsets it reflects, in one key.

`TrainingState` is what a restart needs to neither skip nor re-learn an event: the
learner (models, buffers, counters), the watermark, the next offset to read on every
input partition, and the model versions published so far. `CheckpointStore.save`
writes it under one Redis key in the same MULTI/EXEC as the registry versions of
every model that learned something since its last version, so the versions and the
checkpoint they belong to become visible together or not at all.

The learner's per-event records (what each event of the last label TTL waits for,
`services.training.ledger`) grow with the rate, not with the models, so they are not
rewritten at every checkpoint: a checkpoint adds to the `<key>:items` hash only the
records that changed since the one before (`OnlineLearner.take_changes`), and writes
them all, replacing the others, only when the changes written add up to more than
the last whole write. So a checkpoint costs the models plus what changed since the
last one, and Redis holds at most about twice the records.

The state's bytes are signed with the registry's signing key (`shared.signing`) and
verified before they are unpickled. A checkpoint whose signature is missing or wrong
is refused (counted in `driftline_registry_rejected_total{what="checkpoint"}`, logged)
and read as no checkpoint: the learner starts from the beginning of the topics. The
training service's own store (`keep_refused`) first renames the refused hash to
`<key>:refused`, so that a checkpoint refused only because the key was changed by
mistake is not overwritten: with the right key back, renaming it back resumes it.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import pickle
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from redis.asyncio import Redis

from services.training import metrics
from services.training.champion import ChampionPolicy, policy_for
from services.training.learner import OnlineLearner
from shared.catalogue import build_model
from shared.clock import utcnow
from shared.messages import ModelPublished, PartitionOffset
from shared.pipeline import PipelineConfig
from shared.registry import ModelRegistry
from shared.settings import CommonSettings
from shared.signing import SignatureError, SigningKey, loads_signed
from shared.snapshot import parts_later
from shared.watermark import EPSILON, LearnerWatermark

__all__ = [
    "CheckpointStore",
    "TrainingState",
    "checkpoint_key",
    "fresh_state",
    "model_metrics",
    "restore_state",
    "wire_champion",
]

log = logging.getLogger(__name__)

COMPACT_MIN = 1 << 20  # changes below this many bytes are always added, never compacted

# Classes a checkpoint written by an earlier release names, and where they live now
# (same state layout), so an upgrade resumes instead of failing to start.
MOVED = {
    ("services.training.watermark", "Watermark"): ("shared.watermark", "LearnerWatermark"),
    ("services.training.watermark", "PartitionProgress"): (
        "shared.watermark",
        "PartitionProgress",
    ),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        return super().find_class(*MOVED.get((module, name), (module, name)))


def _loads(data: bytes | memoryview) -> object:
    return _Unpickler(io.BytesIO(data)).load()


@dataclass
class TrainingState:
    """Everything the training service knows, as of the records it has consumed."""

    learner: OnlineLearner
    watermark: LearnerWatermark
    config_hash: str
    # The next offset to read on each input partition: every record before it is in
    # the learner (processed, or buffered beyond the watermark).
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    # event_id -> entity_id for features added but not yet predicted (for the key).
    entities: dict[str, str | None] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # model -> latest version
    published_n: dict[str, int] = field(default_factory=dict)  # model -> n_learned then
    records: int = 0  # input records consumed, ever
    saved_at: datetime | None = None
    # While restored vectors are re-read: partition -> the offset the re-read starts at
    # (the lowest of a waiting prediction's vector) and the offset it ends at (where
    # the checkpoint had read to: `offsets`). Empty once every vector is back.
    replay_from: dict[TopicPartition, int] = field(default_factory=dict)
    replay: dict[TopicPartition, int] = field(default_factory=dict)
    # How many entries of the checkpoint's items hash hold the learner's per-event
    # records (0: they are inside the learner's pickle)
    items: int = 0
    champion: ChampionPolicy | None = None  # which model serving answers with (`champion`)

    def __getstate__(self) -> dict[str, object]:
        """The state, with where to re-read the vectors of the waiting predictions: the
        learner keeps only their refs (`OnlineLearner.add_features`)."""
        state = dict(self.__dict__)
        starts: dict[TopicPartition, int] = {}
        for topic, partition, offset in self.learner.waiting_refs():
            tp = TopicPartition(topic, partition)
            starts[tp] = min(offset, starts.get(tp, offset))
        state["replay_from"] = starts
        state["replay"] = {}
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("replay_from", {})  # a checkpoint from before the re-read
        state.setdefault("items", 0)
        state.setdefault("champion", None)
        self.__dict__.update(state)
        self.replay = {tp: self.offsets[tp] for tp in self.replay_from}

    def version_of(self, model: str) -> str:
        """The model's current version: the last one published, "0" before the first."""
        return self.versions.get(model, "0")

    def partition_offsets(self) -> list[PartitionOffset]:
        return [
            PartitionOffset(topic=tp.topic, partition=tp.partition, offset=offset)
            for tp, offset in sorted(self.offsets.items())
        ]


def model_metrics(learner: OnlineLearner, model: str) -> dict[str, float]:
    score = learner.scores[model]
    return {
        "n_learned": float(score.n_learned),
        "n_scored": float(score.n_scored),
        "n_correct": float(score.n_correct),
        "accuracy": score.accuracy,
    }


def checkpoint_key(topic_prefix: str) -> str:
    """The Redis key of training's checkpoint (serving's replica of the learner reads it too)."""
    return f"driftline:{topic_prefix}training:checkpoint"


@dataclass
class _Chain:
    """The items hash as last written, and for which state: entries, and the bytes of
    the whole write (entry 0) and of the changes after it."""

    state: TrainingState
    n: int
    whole: int
    changes: int


class CheckpointStore:
    """Reads and writes the `TrainingState` under `key`, with the registry versions,
    signed with the registry's signing key (see the module doc for `keep_refused`)."""

    def __init__(
        self, redis: Redis, registry: ModelRegistry, key: str, *, keep_refused: bool = False
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.key = key
        self.keep_refused = keep_refused
        self.items_key = f"{key}:items"
        self._chain: _Chain | None = None

    async def load(self) -> TrainingState | None:
        """The checkpointed state; None if there is none or its signature is refused."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.key, "state")
        pipe.hgetall(self.items_key)
        data, items = await pipe.execute()
        if data is None:
            return None
        if not isinstance(data, bytes):
            raise TypeError(f"checkpoint {self.key!r} was read as text, not bytes")
        key = self.registry.signing_key
        try:
            state = await asyncio.to_thread(loads_signed, key, data, "checkpoint", _loads)
        except SignatureError as error:
            await self._refused(error)
            return None
        if not isinstance(state, TrainingState):
            raise TypeError(f"checkpoint {self.key!r} holds a {type(state).__name__}")
        if state.items:
            blobs = [items.get(str(i).encode()) for i in range(state.items)]
            if any(blob is None for blob in blobs):
                raise ValueError(f"checkpoint {self.key!r} lacks entries of {self.items_key!r}")
            try:
                await asyncio.to_thread(_load_items, key, state, blobs)
            except SignatureError as error:
                await self._refused(error)
                return None
            changes = sum(len(blob) for blob in blobs[1:])
            self._chain = _Chain(state, len(blobs), len(blobs[0]), changes)
        return state

    async def _refused(self, error: SignatureError) -> None:
        aside = f"{self.key}:refused"
        if self.keep_refused:
            await self.redis.rename(self.key, aside)
            if await self.redis.exists(self.items_key):
                await self.redis.rename(self.items_key, f"{aside}:items")
        log.error(
            "REFUSED the checkpoint at %s (not unpickled): %s; read as no checkpoint%s",
            self.key,
            error,
            f"; it is kept at {aside}" if self.keep_refused else "",
        )

    def write(self, state: TrainingState) -> Awaitable[None]:
        """Snapshot `state` now (a forked child pickles it, see `snapshot`) and return the
        write of it alone, no versions: serving's replica of the learner keeps its own."""
        state.saved_at = utcnow()
        summary = {"saved_at": state.saved_at.isoformat(), "records": state.records}
        snapshot = self._snapshot(state)

        async def finish() -> None:
            pipe = self.redis.pipeline(transaction=True)
            await snapshot.stage(pipe, summary)
            await snapshot.commit(pipe)

        return finish()

    async def save(self, state: TrainingState, *, versions: bool = True) -> list[ModelPublished]:
        """Write `state`, and a new version of each model that learned since its last one
        (with `versions` false: only of a model that has no version yet).

        Returns the new versions (to announce on `models`). On failure `state` is left
        as it was and the error is raised.
        """
        finish = await self.begin(state, versions=versions)
        return await finish()

    async def begin(
        self, state: TrainingState, *, versions: bool = True
    ) -> Callable[[], Awaitable[list[ModelPublished]]]:
        """`save` in two steps: this one takes the snapshot (the versions' models and the
        state as they are now, the state pickled by a forked child), and the function it
        returns writes it. Between the two `state` may change: the checkpoint is of now.
        """
        learner = state.learner
        due = [
            name
            for name, score in learner.scores.items()
            if score.n_learned > state.published_n.get(name, 0)
            and (versions or name not in state.versions)
        ]
        numbers = {name: await self.registry.next_version(name) for name in due}
        retire = {name: await self.registry.retiring(name) for name in due}
        before = (dict(state.versions), dict(state.published_n), state.saved_at)
        now = utcnow()
        offsets = state.partition_offsets()
        pipe = self.redis.pipeline(transaction=True)
        published = []
        try:
            for name in due:
                published.append(
                    self.registry.stage(
                        pipe,
                        name,
                        numbers[name],
                        learner.models[name],
                        model_metrics(learner, name),
                        offsets,
                        state.config_hash,
                        learner.scores[name].n_learned,
                        published_at=now,
                        retire=retire[name],
                    )
                )
                state.versions[name] = numbers[name]
                state.published_n[name] = learner.scores[name].n_learned
            state.saved_at = now
            summary = {
                "saved_at": now.isoformat(),
                "config_hash": state.config_hash,
                "records": state.records,
                "versions": dict(state.versions),
                "offsets": [o.model_dump() for o in offsets],
                "n_learned": {n: s.n_learned for n, s in learner.scores.items()},
            }
            snapshot = self._snapshot(state)
        except BaseException:
            state.versions, state.published_n, state.saved_at = before
            raise

        async def finish() -> list[ModelPublished]:
            try:
                await snapshot.stage(pipe, summary)
                await snapshot.commit(pipe)
            except BaseException:
                state.versions, state.published_n, state.saved_at = before
                raise
            for name, old in retire.items():
                metrics.VERSIONS_RETIRED.labels(name).inc(len(old))
            return published

        return finish

    def _snapshot(self, state: TrainingState) -> _Snapshot:
        """Fork the child that pickles `state` and the learner's records, all of them
        or those changed since the last write (the chain goes on)."""
        chain = self._chain if self._chain is not None and self._chain.state is state else None
        changes = state.learner.take_changes()
        whole = changes is None or chain is None or chain.changes > max(chain.whole, COMPACT_MIN)
        n = 1 if whole else chain.n + 1  # type: ignore[union-attr]
        learner = state.learner

        def make() -> list[bytes]:
            items_before, apart_before = state.items, learner._items_apart
            state.items, learner._items_apart = n, True
            try:
                pickled = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
            finally:
                state.items, learner._items_apart = items_before, apart_before
            packed = learner.pack_items(None if whole else changes)
            return [pickled, pickle.dumps(packed, pickle.HIGHEST_PROTOCOL)]

        try:
            parts = parts_later(make, self.registry.signing_key)
        except BaseException:
            learner.lose_changes()
            raise
        return _Snapshot(self, state, parts, n, whole)


@dataclass
class _Snapshot:
    """A checkpoint being pickled, and how to write it into a transaction."""

    store: CheckpointStore
    state: TrainingState
    parts: asyncio.Future[list[bytes]]
    n: int
    whole: bool
    items_bytes: int = 0
    state_bytes: int = 0

    async def stage(self, pipe: Any, summary: dict[str, object]) -> None:
        try:
            blob, items = await self.parts
        except BaseException:
            self.failed()
            raise
        store = self.store
        summary = {**summary, "items": self.n, "items_bytes": len(items), "state_bytes": len(blob)}
        pipe.hset(store.key, mapping={"state": blob, "summary": json.dumps(summary)})
        if self.whole:
            pipe.delete(store.items_key)
        pipe.hset(store.items_key, str(self.n - 1), items)
        self.items_bytes, self.state_bytes = len(items), len(blob)

    async def commit(self, pipe: Any) -> None:
        try:
            await pipe.execute()
        except BaseException:
            self.failed()
            raise
        store = self.store
        if self.whole or store._chain is None:
            store._chain = _Chain(self.state, self.n, self.items_bytes, 0)
        else:
            store._chain.n = self.n
            store._chain.changes += self.items_bytes
        metrics.CHECKPOINT_BYTES.labels("state").set(self.state_bytes)
        metrics.CHECKPOINT_BYTES.labels("records").set(self.items_bytes)
        metrics.CHECKPOINT_BYTES.labels("held").set(store._chain.whole + store._chain.changes)

    def failed(self) -> None:
        """Not written: the next checkpoint writes every record again."""
        self.state.learner.lose_changes()
        self.store._chain = None


def _load_items(key: SigningKey, state: TrainingState, blobs: list[bytes]) -> None:
    state.learner.load_items(loads_signed(key, blob, "checkpoint", pickle.loads) for blob in blobs)
    state.learner.take_changes()  # tracked from here: the next checkpoint adds to these
    state.items = 0


def wire_champion(state: TrainingState, pipeline: PipelineConfig) -> None:
    """Have the champion policy watch each event as the learner learns it, refit the
    batch challengers or start a fresh copy of the champion when a drift's action says
    so (training only)."""
    policy, learner = state.champion, state.learner
    if policy is None:
        return
    params = {m.name: m.params for m in pipeline.models}

    def reset(name: str, model: str) -> None:
        learner.replace_model(name, build_model(model, params.get(model), pipeline.task))
        state.published_n.pop(name, None)  # its versions follow the fresh one's count
        log.info("a fresh %s starts as the challenger %s after the champion's drift", model, name)

    def retrain() -> None:
        for name, model in learner.models.items():
            if hasattr(model, "retrain_now"):
                model.retrain_now()
                log.info("refitting the batch challenger %s after the champion's drift", name)

    learner.after_learn = policy.observe_event
    policy.retrain, policy.reset = retrain, reset


def fresh_state(pipeline: PipelineConfig, settings: CommonSettings) -> TrainingState:
    """Untrained models of the pipeline, side by side in one learner; nothing read yet."""
    models = {m.name: build_model(m.name, m.params, pipeline.task) for m in pipeline.models}
    return TrainingState(
        learner=OnlineLearner(models, ttl=pipeline.labels.ttl),
        watermark=_tuned(LearnerWatermark(), settings),
        config_hash=pipeline.config_hash(),
        champion=policy_for(pipeline, None),
    )


def _tuned(watermark: LearnerWatermark, settings: CommonSettings) -> LearnerWatermark:
    """`watermark` with the waits the settings give (a checkpoint's are those of its day)."""
    watermark.idle_s = settings.idle_ms / 1000
    watermark.hold_s = settings.label_wait_ms / 1000
    watermark.max_jump = settings.max_jump()
    watermark.margin = EPSILON + timedelta(seconds=settings.allowed_lateness_s)
    return watermark


async def restore_state(
    store: CheckpointStore, pipeline: PipelineConfig, settings: CommonSettings, now: float
) -> TrainingState:
    """The checkpointed state, or a fresh one if there is none or the pipeline changed."""
    state = resume(await store.load(), store.key, pipeline, settings, now)
    return state if state is not None else fresh_state(pipeline, settings)


def resume(
    state: TrainingState | None,
    key: str,
    pipeline: PipelineConfig,
    settings: CommonSettings,
    now: float,
) -> TrainingState | None:
    """`state` (loaded from `key`) ready to go on, or None if none or of another pipeline."""
    if state is None:
        log.info("no checkpoint at %s: learning from the beginning of the topics", key)
        return None
    if state.config_hash != pipeline.config_hash():
        log.warning(
            "the checkpoint at %s was made with pipeline %s, not %s: not resumed",
            key,
            state.config_hash,
            pipeline.config_hash(),
        )
        return None
    _tuned(state.watermark, settings).restart(now)
    state.champion = policy_for(pipeline, state.champion)
    log.info(
        "restored the checkpoint at %s of %s: records=%d versions=%s",
        key,
        state.saved_at,
        state.records,
        state.versions,
    )
    return state
