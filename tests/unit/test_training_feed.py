"""Training's feed of the learner: one event dated hours ahead must not expire the rest."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord, TopicPartition

from services.training.checkpoint import TrainingState
from services.training.feed import LearnerFeed
from services.training.learner import OnlineLearner
from shared.catalogue import build_model
from shared.watermark import LearnerWatermark

T0 = datetime(2024, 1, 1, tzinfo=UTC)
F, L = TopicPartition("features", 0), TopicPartition("labels", 0)


def record(tp: TopicPartition, offset: int, value: Mapping[str, object]) -> ConsumerRecord:
    body = json.dumps(value).encode()
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, body, None, 0, 0, [])


def replay(future: bool, max_jump: timedelta | None) -> tuple[OnlineLearner, LearnerWatermark]:
    """A live stream, labels 5 s after their events, a 1 h TTL, a pause every 50 events
    in which every partition is caught up and idle; with `future`, event 100 is dated
    3 h ahead."""
    watermark = LearnerWatermark(idle_s=1.0, max_jump=max_jump)
    learner = OnlineLearner({"lr": build_model("logreg")}, ttl=timedelta(hours=1))
    state = TrainingState(learner, watermark, config_hash="x")
    feed = LearnerFeed(state, features="features", labels="labels", task="binary")
    watermark.assign([F, L], now=0.0)
    now = 0.0
    for i in range(300):
        at = T0 + timedelta(seconds=i + (3 * 3600 if future and i == 100 else 0))
        vector = {
            "event_id": f"e{i}",
            "entity_id": None,
            "event_time": at.isoformat(),
            "features": {"x": float(i % 7)},
            "feature_set_version": "v",
        }
        label_time = (at + timedelta(seconds=5)).isoformat()
        label = {"event_id": f"e{i}", "label": i % 2 == 0, "label_time": label_time}
        feed.take({F: [record(F, i, vector)], L: [record(L, i, label)]}, now)
        feed.advance(now)
        if i % 50 == 49:
            watermark.caught_up(F, True)
            watermark.caught_up(L, True)
            now += 2.0
            feed.advance(now)
    return learner, watermark


def test_an_event_dated_hours_ahead_is_held_and_the_stream_goes_on_learning() -> None:
    """The probe of issue 8: before the jump limit, the pause after one event dated
    hours ahead moved the learner's clock there and every event after it expired."""
    unlimited, _ = replay(future=True, max_jump=None)
    assert unlimited.expired_labels > 100, "the failure the limit prevents"

    plain, _ = replay(future=False, max_jump=timedelta(minutes=10))
    learner, watermark = replay(future=True, max_jump=timedelta(minutes=10))
    expired = (learner.expired_features, learner.expired_labels)
    assert expired == (plain.expired_features, plain.expired_labels)
    assert learner.late <= plain.late
    assert learner.scores["lr"].n_learned == plain.scores["lr"].n_learned - 1  # it is held
    assert watermark.held_jumps == 2  # the event and its label
    assert learner.clock is not None and learner.clock < T0 + timedelta(minutes=10)
