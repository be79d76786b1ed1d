"""Concept drift: an alert after an abrupt drift, none on a stationary stream.

The error streams are those of the learner: test-then-train predictions of the
catalogue's `logreg` and `hat` on River's Agrawal stream, classification function 0
for 3000 rows then function 2 (abrupt drift), against 6000 stationary rows. They go
through the whole `Monitor` (join, score, ADWIN), as Kafka messages would.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from river import datasets, linear_model, preprocessing, tree

from services.monitoring.drift import ErrorDrift
from services.monitoring.monitor import Monitor
from shared.messages import Alert, Label, Prediction

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ROWS, DRIFT_AT = 6000, 3000


def agrawal(seed: int, drift: bool) -> Iterator[tuple[dict[str, Any], Any]]:
    first = datasets.synth.Agrawal(classification_function=0, seed=seed)
    if not drift:
        return itertools.islice(first, ROWS)
    # ConceptDriftStream(position=3000, width=1) overflows in math.exp: chain instead.
    second = datasets.synth.Agrawal(classification_function=2, seed=seed + 1000)
    return itertools.islice(itertools.chain(itertools.islice(first, DRIFT_AT), second), ROWS)


def learner_alerts(seed: int, drift: bool) -> list[Alert]:
    models: dict[str, Any] = {
        "logreg": preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "hat": tree.HoeffdingAdaptiveTreeClassifier(seed=42),
    }
    monitor = Monitor("binary", timedelta(hours=1))
    alerts: list[Alert] = []
    for i, (x, y) in enumerate(agrawal(seed, drift)):
        when = T0 + timedelta(seconds=i)
        for name, model in models.items():
            proba = model.predict_proba_one(x)
            prediction = Prediction(
                prediction_id=f"{name}-{i}",
                event_id=f"e{i}",
                model=name,
                model_version="1",
                y_pred=model.predict_one(x),
                probabilities={str(k): v for k, v in proba.items()} or None,
                source="learner",
                event_time=when,
                time=when,
            )
            monitor.add_prediction(prediction)
            model.learn_one(x, y)
        monitor.add_label(Label(event_id=f"e{i}", label=y, label_time=when))
        alerts += monitor.advance(when)
    assert sum(row["n"] for row in monitor.summary()["models"]) >= 2 * ROWS - 2
    return alerts


def row_of(alert: Alert) -> int:
    return int(str(alert.details["event_id"]).removeprefix("e"))


SEEDS = [7, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]


@pytest.mark.parametrize("seed", SEEDS)
def test_an_abrupt_drift_raises_an_alert_soon_after_it(seed: int) -> None:
    alerts = learner_alerts(seed, drift=True)
    assert alerts, "no alert on a drifting stream"
    first = min(row_of(a) for a in alerts)
    assert DRIFT_AT <= first < DRIFT_AT + 1500
    assert all(row_of(a) >= DRIFT_AT for a in alerts), "an alert before the drift"
    alert = alerts[0]
    assert (alert.kind, alert.detector, alert.subject.endswith(":learner")) == (
        "concept_drift",
        "ADWIN",
        True,
    )
    details = alert.details
    assert float(details["error_after"]) > float(details["error_before"])  # type: ignore[arg-type]
    assert {"index", "model_version", "event_id", "event_time"} <= set(details)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_stationary_stream_raises_no_alert(seed: int) -> None:
    assert learner_alerts(seed, drift=False) == []


def test_a_falling_error_is_not_drift() -> None:
    detector = ErrorDrift(warmup=0)
    errors = [1.0] * 300 + [0.0] * 3000
    assert [detector.update(e) for e in errors] == [None] * len(errors)
    assert detector.detections >= 1  # ADWIN did see the change


def test_no_alert_during_the_warm_up() -> None:
    errors = [0.0] * 400 + [1.0] * 400
    early = ErrorDrift(warmup=1000)
    assert all(early.update(e) is None for e in errors)
    late = ErrorDrift(warmup=100)
    assert any(late.update(e) is not None for e in errors)
