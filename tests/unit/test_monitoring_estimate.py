"""The label-free accuracy estimate: close to the realised accuracy when calibrated,
and ahead of the labels when confidence falls."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from services.monitoring.monitor import Monitor
from shared.messages import Label, Prediction

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _prediction(i: int, p_true: float) -> Prediction:
    return Prediction(
        prediction_id=f"p{i}",
        event_id=f"e{i}",
        model="lr",
        model_version="1",
        y_pred=p_true >= 0.5,
        probabilities={"True": p_true, "False": 1 - p_true},
        source="stream",
        event_time=T0 + timedelta(seconds=i),
        time=T0 + timedelta(seconds=i),
    )


def _row(monitor: Monitor) -> dict:
    [row] = monitor.summary()["models"]
    return row


def test_a_calibrated_model_is_estimated_within_two_points() -> None:
    rng = random.Random(4)
    monitor = Monitor("binary", ttl=timedelta(hours=1), window_size=2000)
    for i in range(4000):
        p = rng.betavariate(2, 2)
        monitor.add_prediction(_prediction(i, p))
        monitor.add_label(Label(event_id=f"e{i}", label=rng.random() < p))
    monitor.advance(T0 + timedelta(seconds=4000))
    row = _row(monitor)
    estimated = row["estimated"]
    assert estimated["n"] == 2000
    assert abs(estimated["accuracy"] - row["window"]["accuracy"]) < 0.02
    assert abs(estimated["calibration_gap"]) < 0.02


def test_falling_confidence_shows_before_the_labels_come() -> None:
    rng = random.Random(5)
    monitor = Monitor("binary", ttl=timedelta(hours=1), window_size=500)
    for i in range(1000):  # confident and right, labelled
        p = rng.choice([0.05, 0.95])
        monitor.add_prediction(_prediction(i, p))
        monitor.add_label(Label(event_id=f"e{i}", label=p > 0.5))
    monitor.advance(T0 + timedelta(seconds=1000))
    before = _row(monitor)
    assert before["estimated"]["accuracy"] > 0.9 and before["window"]["accuracy"] == 1.0
    for i in range(1000, 1500):  # the inputs moved to the boundary: no label yet
        monitor.add_prediction(_prediction(i, rng.uniform(0.45, 0.6)))
    after = _row(monitor)
    assert after["window"]["accuracy"] == 1.0, "the realised accuracy has not seen it"
    assert after["estimated"]["accuracy"] < 0.62


def test_no_estimate_without_probabilities() -> None:
    monitor = Monitor("binary", ttl=timedelta(hours=1))
    bare = _prediction(1, 0.9).model_copy(update={"probabilities": None})
    monitor.add_prediction(bare)
    monitor.add_label(Label(event_id="e1", label=True))
    monitor.advance(T0 + timedelta(seconds=5))
    assert _row(monitor)["estimated"] is None
