"""Joiner: order independence, duplicates, TTL expiry in event time, null predictions."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from services.monitoring.joiner import Joiner
from services.monitoring.monitor import Monitor
from shared.messages import Label, Prediction

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TTL = timedelta(hours=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def prediction(
    event: int, model: str = "lr", source: str = "learner", y_pred: Any = 1, minute: float = 0
) -> Prediction:
    return Prediction(
        prediction_id=f"{model}-{source}-{event}",
        event_id=f"e{event}",
        model=model,
        model_version="1",
        y_pred=y_pred,
        probabilities=None,
        source=source,  # type: ignore[arg-type]
        event_time=at(minute),
        time=at(minute),
    )


def label(event: int, value: Any = 1, minute: float | None = None) -> Label:
    return Label(
        event_id=f"e{event}", label=value, label_time=None if minute is None else at(minute)
    )


def joined_pairs(joiner: Joiner, items: list[Prediction | Label]) -> set[tuple[str, Any]]:
    out = set()
    for item in items:
        found = (
            joiner.add_prediction(item) if isinstance(item, Prediction) else joiner.add_label(item)
        )
        out |= {(j.prediction.prediction_id, j.label) for j in found}
    return out


def test_every_arrival_order_gives_the_same_joins() -> None:
    items: list[Prediction | Label] = [
        prediction(1, "lr", "learner"),
        prediction(1, "lr", "stream"),
        prediction(1, "hat", "learner"),
        label(1, 0),
        prediction(2, "lr", "learner"),
        label(2, 1),
    ]
    expected = {
        ("lr-learner-1", 0),
        ("lr-stream-1", 0),
        ("hat-learner-1", 0),
        ("lr-learner-2", 1),
    }
    for order in itertools.permutations(items):
        assert joined_pairs(Joiner(TTL), list(order)) == expected


def test_duplicates_count_once_in_any_order() -> None:
    items: list[Prediction | Label] = [prediction(i) for i in range(20)] + [
        label(i) for i in range(20)
    ]
    replayed = items + items[::3] + items[5:9]
    for seed in range(5):
        random.Random(seed).shuffle(replayed)
        joiner = Joiner(TTL)
        pairs = joined_pairs(joiner, replayed)
        assert len(pairs) == 20
        assert joiner.duplicate_predictions + joiner.duplicate_labels == len(replayed) - 40


def test_a_duplicate_after_the_join_never_scores_twice_even_late() -> None:
    joiner = Joiner(TTL)
    assert len(joined_pairs(joiner, [prediction(1, minute=0), label(1, minute=5)])) == 1
    joiner.advance(at(30))
    assert joined_pairs(joiner, [prediction(1, minute=0), label(1, minute=5)]) == set()
    assert (joiner.duplicate_predictions, joiner.duplicate_labels) == (1, 1)


def test_one_prediction_per_event_model_and_source_counts_whatever_its_id() -> None:
    """A /predict caller repeating an event_id (each answer has a fresh prediction id)
    weighs the http metrics once, and never the other sources'."""
    joiner = Joiner(TTL)
    repeated = [
        prediction(1, source="http").model_copy(update={"prediction_id": f"r{i}"})
        for i in range(50)
    ]
    pairs = joined_pairs(joiner, [*repeated, prediction(1), label(1, 0), repeated[0]])
    assert pairs == {("r0", 0), ("lr-learner-1", 0)}
    assert joiner.duplicate_predictions == 50


def test_predictions_expire_in_event_time_after_the_ttl() -> None:
    joiner = Joiner(TTL)
    joined_pairs(joiner, [prediction(1, minute=0), prediction(2, minute=30)])
    assert joiner.advance(at(59)) == []
    assert [p.event_id for p in joiner.advance(at(61))] == ["e1"]
    assert joined_pairs(joiner, [label(1, minute=61)]) == set(), "too late: not joined"
    assert len(joined_pairs(joiner, [label(2, minute=61)])) == 1
    assert joiner.waiting_predictions == 0


def test_a_prediction_waits_until_the_labels_stream_itself_is_past_the_ttl() -> None:
    """Predictions of another era (years ahead) must not expire ones whose labels come."""
    joiner = Joiner(TTL)
    joined_pairs(joiner, [prediction(1, minute=0), prediction(2, minute=0)])
    years_later = at(60 * 24 * 365 * 6)
    assert joiner.advance(years_later, labels_at=at(10), predictions_at=years_later) == []
    assert len(joined_pairs(joiner, [label(1, minute=10)])) == 1
    expired = joiner.advance(years_later, labels_at=at(61), predictions_at=years_later)
    assert [p.event_id for p in expired] == ["e2"]


def test_labels_wait_for_late_predictions_then_expire() -> None:
    joiner = Joiner(TTL)
    joined_pairs(joiner, [label(1, minute=0), label(2, minute=0)])
    assert len(joined_pairs(joiner, [prediction(1, minute=0)])) == 1  # after its label
    joiner.advance(at(61))
    assert joiner.expired_labels == 1  # e2's label: nothing joined it
    assert joined_pairs(joiner, [prediction(2, minute=0)]) == set()


def test_labels_without_label_time_wait_from_their_events_time() -> None:
    joiner = Joiner(TTL)
    joined_pairs(joiner, [prediction(1, minute=10), label(1)])
    assert len(joined_pairs(joiner, [prediction(1, "hat", minute=10)])) == 1


def test_predictions_without_an_event_id_are_counted_not_joined() -> None:
    joiner = Joiner(TTL)
    free = prediction(1).model_copy(update={"event_id": None, "prediction_id": "x"})
    assert joined_pairs(joiner, [free, label(1)]) == set()
    assert joiner.without_event == 1


def test_null_predictions_are_joined_but_not_scored() -> None:
    monitor = Monitor("binary", TTL)
    monitor.add_prediction(prediction(1, y_pred=None))
    monitor.add_prediction(prediction(2, y_pred=True))
    monitor.add_label(label(1, True))
    monitor.add_label(label(2, True))
    assert monitor.flush() == []
    row = monitor.summary()["models"][0]
    assert (row["n"], row["unscored"], row["metrics"]["accuracy"]) == (1, 1, 1.0)
    assert monitor.summary()["unscored"] == 1


def test_monitor_counts_expired_per_model_and_source() -> None:
    monitor = Monitor("binary", TTL)
    monitor.add_prediction(prediction(1, "lr", "stream", minute=0))
    monitor.add_prediction(prediction(2, "lr", "stream", minute=90))
    assert monitor.advance(at(90)) == []
    summary = monitor.summary()
    assert (summary["expired"], summary["models"][0]["expired"]) == (1, 1)


def test_joins_are_scored_in_event_time_once_the_watermark_passes() -> None:
    monitor = Monitor("binary", TTL)
    for event in (2, 1):  # read out of order (another partition came first)
        monitor.add_prediction(prediction(event, y_pred=event == 1, minute=event))
        monitor.add_label(label(event, True, minute=event + 5))
    assert monitor.advance(at(5)) == [] and monitor.unreleased == 2
    monitor.advance(at(6))
    assert (monitor.unreleased, monitor.summary()["models"][0]["n"]) == (1, 1)
    monitor.advance(at(7))
    series = monitor.series[("lr", "learner")]
    assert (series.cumulative.n, series.drift.n) == (2, 2)


def test_per_version_quality_keeps_the_newest_versions_in_numeric_order() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    monitor = Monitor("binary", ttl=timedelta(hours=1), keep_versions=3)
    for v in range(1, 13):
        p = Prediction(
            prediction_id=f"p{v}",
            event_id=f"e{v}",
            model="lr",
            model_version=str(v),
            y_pred=1,
            probabilities=None,
            source="stream",
            time=t0,
        )
        monitor.add_prediction(p)
        monitor.add_label(Label(event_id=f"e{v}", label=True))
    monitor.advance(t0)
    row = monitor.summary()["models"][0]
    assert row["n"] == 12
    assert [v["version"] for v in row["versions"]] == ["10", "11", "12"]


def test_history_spans_the_whole_stream_in_bounded_points() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    monitor = Monitor("binary", ttl=timedelta(hours=1), history_every=1, history_points=8)
    for i in range(1, 101):
        monitor.add_prediction(
            Prediction(
                prediction_id=f"p{i}",
                event_id=f"e{i}",
                model="lr",
                model_version="1",
                y_pred=1,
                probabilities=None,
                source="stream",
                time=t0,
            )
        )
        monitor.add_label(Label(event_id=f"e{i}", label=i % 3 == 0))
    monitor.advance(t0)
    series = monitor.series[("lr", "stream")]
    assert series.cumulative.n == 100
    points = [p.n for p in series.history]
    assert len(points) < 8
    assert points == list(range(series.history_every, 101, series.history_every))
    assert points[0] <= 16 and points[-1] >= 100 - series.history_every  # start to end
