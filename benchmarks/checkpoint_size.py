"""What training's checkpoint costs: its pickled size and time against the items pending.

Drives a `TrainingState` through `LearnerFeed` as training's worker does (default
pipeline: `logreg` and `hat`, 9 numeric features, label TTL 1 h, events 1 ms apart, so
1,000 events/s): `WARM` events learned first (so the models hold something), then N
events whose features came and whose labels have not (N predictions waiting, as at
1,000 events/s with a label delay of N / 1,000 s), and prints, per N, the checkpoint's
pickled size and time beside the models' own. A second table has N events learned
and none pending: what the ids remembered for de-duplication (for the TTL after an
event is done) cost alone. "whole" is a checkpoint that writes every per-event record
(the first, and one now and then: `services.training.checkpoint`); "next" the one
after another second of traffic, which writes only the records that changed. No Kafka or Redis needed:

    .venv/bin/python -m benchmarks.checkpoint_size [N ...]
"""

from __future__ import annotations

import pickle
import random
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import ConsumerRecord, TopicPartition

from services.training.checkpoint import TrainingState
from services.training.feed import LearnerFeed
from services.training.learner import OnlineLearner, PredictionMade
from shared.catalogue import build_model
from shared.watermark import LearnerWatermark

__all__ = ["measure", "pending_state"]

T0 = datetime(2024, 1, 1, tzinfo=UTC)
FEATURES = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
PARTITIONS = 3
WARM = 2_000
FEATURE_TPS = [TopicPartition("features", p) for p in range(PARTITIONS)]
LABEL_TPS = [TopicPartition("labels", p) for p in range(PARTITIONS)]


class _Stream:
    """Features and labels records over `PARTITIONS` partitions each, keyed by entity."""

    def __init__(self, state: TrainingState) -> None:
        self.feed = LearnerFeed(state, features="features", labels="labels", task="binary")
        self.offsets = dict.fromkeys(FEATURE_TPS + LABEL_TPS, 0)
        self.rng = random.Random(1)
        state.watermark.assign(FEATURE_TPS + LABEL_TPS, now=0.0)

    def record(self, tp: TopicPartition, value: Mapping[str, object]) -> ConsumerRecord:
        offset = self.offsets[tp]
        self.offsets[tp] += 1
        body = orjson.dumps(value)
        return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, body, None, 0, 0, [])

    def events(self, start: int, stop: int, labelled: bool) -> None:
        """Events [start, stop) 1 ms apart; with `labelled`, each label at its event's time."""
        for chunk in range(start, stop, 1000):
            batch: dict[TopicPartition, list[ConsumerRecord]] = {}
            for i in range(chunk, min(stop, chunk + 1000)):
                at = (T0 + timedelta(milliseconds=i)).isoformat()
                x = {name: self.rng.uniform(0, 100) for name in FEATURES}
                vector = {
                    "event_id": f"ev-{i:09d}",
                    "entity_id": f"customer-{i % 500}",
                    "event_time": at,
                    "features": x,
                    "feature_set_version": "default-v1",
                }
                tp = FEATURE_TPS[i % PARTITIONS]
                batch.setdefault(tp, []).append(self.record(tp, vector))
                if labelled:
                    label = {"event_id": f"ev-{i:09d}", "label": x["age"] > 50, "label_time": at}
                    tp = LABEL_TPS[i % PARTITIONS]
                    batch.setdefault(tp, []).append(self.record(tp, label))
            self.feed.take(batch, now=0.0)
            self._advance(now=0.0)
        # the end of the stream: every partition caught up and idle, the learner flushed
        for tp in self.offsets:
            self.feed.state.watermark.caught_up(tp, True)
        self._advance(now=10.0)

    def _advance(self, now: float) -> None:
        """Advance, and forget the entities of the events predicted (as the worker does)."""
        for output in self.feed.advance(now) or []:
            if isinstance(output, PredictionMade):
                self.feed.state.entities.pop(output.event_id, None)


def fresh() -> TrainingState:
    models = {name: build_model(name, {}, "binary") for name in ("logreg", "hat")}
    learner = OnlineLearner(models, ttl=timedelta(hours=1))
    return TrainingState(learner, LearnerWatermark(), config_hash="bench")


def pending_state(n: int) -> tuple[TrainingState, _Stream]:
    """`WARM` events learned, then `n` predictions waiting for their labels."""
    state = fresh()
    stream = _Stream(state)
    stream.events(0, WARM, labelled=True)
    stream.events(WARM, WARM + n, labelled=False)
    assert state.learner.awaiting_labels == n, state.learner.awaiting_labels
    return state, stream


def learned_state(n: int) -> tuple[TrainingState, _Stream]:
    """`WARM + n` events learned, none pending: only the remembered ids grow."""
    state = fresh()
    stream = _Stream(state)
    stream.events(0, WARM + n, labelled=True)
    assert state.learner.awaiting_labels == 0
    return state, stream


def checkpoint(state: TrainingState, whole: bool) -> tuple[int, float]:
    """(bytes, seconds) of a checkpoint as `CheckpointStore` makes it: the state
    without the per-event records, and the records (all, or those changed)."""
    learner = state.learner
    started = time.perf_counter()
    changes = learner.take_changes()
    learner._items_apart = True
    try:
        blob = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
    finally:
        learner._items_apart = False
    items = pickle.dumps(learner.pack_items(None if whole else changes), pickle.HIGHEST_PROTOCOL)
    return len(blob) + len(items), time.perf_counter() - started


def measure(made: tuple[TrainingState, _Stream], n: int) -> tuple[int, float, int, float, int]:
    """A whole checkpoint's bytes and seconds, then the next one's after another second
    of traffic (1,000 labelled events), and the models' own bytes."""
    state, stream = made
    whole, whole_s = checkpoint(state, whole=True)
    stream.events(WARM + n, WARM + n + 1_000, labelled=True)
    change, change_s = checkpoint(state, whole=False)
    models = len(pickle.dumps(state.learner.models, pickle.HIGHEST_PROTOCOL))
    return whole, whole_s, change, change_s, models


def main(sizes: list[int]) -> None:
    print(
        f"{'items':>9} {'what':<22} {'whole':>12} {'time':>9}"
        f" {'next (1 s later)':>17} {'time':>9} {'models':>10}"
    )
    for label, make in (
        ("pending predictions", pending_state),
        ("learned, ids kept", learned_state),
    ):
        for n in [0, *sizes]:
            whole, whole_s, change, change_s, models = measure(make(n), n)
            print(
                f"{n:>9,} {label:<22} {whole:>12,} {whole_s * 1000:>7.1f}ms"
                f" {change:>17,} {change_s * 1000:>7.1f}ms {models:>10,}"
            )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000])
