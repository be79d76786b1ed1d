"""Training's feed of the learner: one event dated hours ahead must not expire the rest;
items late within the allowed lateness are learned in time order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from river import evaluate, metrics

from services.training.checkpoint import TrainingState
from services.training.feed import LearnerFeed
from services.training.learner import OnlineLearner
from shared.catalogue import build_model
from shared.watermark import EPSILON, LearnerWatermark

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


def out_of_order(margin: timedelta) -> OnlineLearner:
    """Events a second apart, each label half a second after its event, all on one
    partition each; every tenth event arrives 3 s late (after the three next ones)."""
    watermark = LearnerWatermark(idle_s=1.0)
    watermark.margin = EPSILON + margin
    learner = OnlineLearner({"lr": build_model("logreg")}, ttl=timedelta(hours=1))
    feed = LearnerFeed(
        TrainingState(learner, watermark, config_hash="x"),
        features="features",
        labels="labels",
        task="binary",
    )
    watermark.assign([F, L], now=0.0)
    order = list(range(400))
    for i in range(5, 395, 10):  # 5 comes after 6, 7, 8
        order[i : i + 4] = [i + 1, i + 2, i + 3, i]
    for offset, i in enumerate(order):
        at = T0 + timedelta(seconds=i)
        vector = {
            "event_id": f"e{i}",
            "entity_id": None,
            "event_time": at.isoformat(),
            "features": {"x": float(i % 7), "y": float(i % 3)},
            "feature_set_version": "v",
        }
        label = {
            "event_id": f"e{i}",
            "label": (i % 7) + (i % 3) > 4,
            "label_time": (at + timedelta(milliseconds=500)).isoformat(),
        }
        feed.take({F: [record(F, offset, vector)], L: [record(L, offset, label)]}, 0.0)
        feed.advance(0.0)
    watermark.caught_up(F, True)
    watermark.caught_up(L, True)
    feed.advance(5.0)  # both idle: the end of the stream
    return learner


def test_items_late_within_the_allowed_lateness_are_learned_in_time_order() -> None:
    """With the lateness margin, the reorder buffer puts each late event back in its
    place: the counts equal River's on the rows in event-time order."""
    rows = [({"x": float(i % 7), "y": float(i % 3)}, (i % 7) + (i % 3) > 4) for i in range(400)]
    accuracy = metrics.Accuracy()
    dataset: list[Any] = rows
    evaluate.progressive_val_score(dataset, build_model("logreg"), accuracy)
    river = (int(accuracy.cm.total_weight), int(accuracy.cm.total_true_positives))

    learner = out_of_order(timedelta(seconds=5))
    assert learner.late == 0
    assert (learner.scores["lr"].n_scored, learner.scores["lr"].n_correct) == river
    hurried = out_of_order(timedelta(0))
    assert hurried.late > 0 and hurried.scores["lr"].n_learned == 400
