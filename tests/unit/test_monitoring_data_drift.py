"""Data drift per feature: the detector on synthetic streams, and its place in the monitor."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.monitoring.data_drift import DataDrift, FeatureDrift, js_distance, psi
from services.monitoring.monitor import Monitor
from shared.messages import FeatureVector
from shared.pipeline import DataDriftSettings, Features

FEATURES = Features.model_validate(
    {
        "numeric": ["amount", "age"],
        "categorical": ["country"],
        "aggregates": [{"field": "amount", "how": "mean", "window": "1h"}],
    }
)
SETTINGS = DataDriftSettings(reference_size=1000, window_size=1000, every=250)
COUNTRIES = ["NL", "DE", "FR", "BE"]
RARE = [f"R{i}" for i in range(40)]  # a long tail: more categories than are tracked
T0 = datetime(2024, 5, 1, tzinfo=UTC)

Vector = dict[str, float | None]


def vector(
    rng: random.Random,
    *,
    amount_mu: float = 3.0,
    countries: tuple[float, ...] = (0.4, 0.3, 0.15, 0.1),
    age_missing: float = 0.02,
) -> Vector:
    """One vector as the features service writes it: numeric floats or null, one
    one-hot key for the categorical, the aggregate as a float."""
    age = None if rng.random() < age_missing else rng.gauss(40, 10)
    v: Vector = {
        "amount": rng.lognormvariate(amount_mu, 1),
        "age": age,
        "amount_mean_1h": rng.gauss(20, 5),
    }
    if rng.random() < 0.97:  # else: no country (no key at all)
        country = rng.choices([*COUNTRIES, "rare"], [*countries, 0.05])[0]
        v[f"country={rng.choice(RARE) if country == 'rare' else country}"] = 1.0
    return v


def run(detector: DataDrift, vectors: Iterator[Vector]) -> list[FeatureDrift]:
    found: list[FeatureDrift] = []
    for v in vectors:
        found += detector.update(v)
    return found


def stationary(seed: int, n: int) -> Iterator[Vector]:
    rng = random.Random(seed)
    return (vector(rng) for _ in range(n))


def shifted(seed: int, n: int, at: int, **change: Any) -> Iterator[Vector]:
    rng = random.Random(seed)
    return (vector(rng, **change) if i >= at else vector(rng) for i in range(n))


def test_a_numeric_shift_halfway_flags_that_feature_and_no_other() -> None:
    detector = DataDrift(FEATURES, SETTINGS)
    found = run(detector, shifted(1, 6000, at=3000, amount_mu=3.8))
    assert [(d.feature, d.statistic) for d in found] == [("amount", "psi")]
    assert found[0].value > SETTINGS.psi_threshold
    drifting = {row.feature: row.drift for row in detector.report()}
    assert drifting == {"amount": True, "age": False, "amount_mean_1h": False, "country": False}


def test_a_categorical_shift_is_flagged() -> None:
    detector = DataDrift(FEATURES, SETTINGS)
    found = run(detector, shifted(2, 6000, at=3000, countries=(0.1, 0.3, 0.15, 0.4)))
    assert [(d.feature, d.statistic) for d in found] == [("country", "js")]
    assert found[0].value > SETTINGS.js_threshold


def test_a_new_category_lands_in_other_and_is_flagged() -> None:
    detector = DataDrift(Features(categorical=("country",)), SETTINGS)
    rng = random.Random(3)
    run(detector, ({f"country={rng.choice(COUNTRIES)}": 1.0} for _ in range(2000)))
    found = run(detector, ({"country=XX" if i % 3 else "country=NL": 1.0} for i in range(1000)))
    assert [d.feature for d in found] == ["country"]


def test_a_surge_of_missing_values_is_flagged() -> None:
    detector = DataDrift(FEATURES, SETTINGS)
    found = run(detector, shifted(4, 6000, at=3000, age_missing=0.5))
    assert [d.feature for d in found] == ["age"]


def test_a_feature_missing_throughout_the_reference_is_one_bin_and_flagged_when_it_comes() -> None:
    """A feature the vectors never carried (another pipeline's topic): no crash; when
    it starts to come, it drifts."""
    absent = (v | {"age": None} for v in stationary(7, 2000))
    detector = DataDrift(FEATURES, SETTINGS)
    assert run(detector, absent) == []
    assert [d.feature for d in run(detector, stationary(8, 2000))] == ["age"]


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_a_stationary_stream_raises_nothing(seed: int) -> None:
    detector = DataDrift(FEATURES, SETTINGS)
    assert run(detector, stationary(seed, 6000)) == []
    for row in detector.report():  # and far from it, not just below
        assert row.value < row.threshold / 2, row


def test_one_alert_per_episode_and_again_after_it_ended() -> None:
    detector = DataDrift(FEATURES, SETTINGS)
    rng = random.Random(5)
    phases = [(2000, 3.0), (2000, 3.8), (2000, 3.0), (2000, 3.8)]
    found = []
    for n, mu in phases:
        found += run(detector, (vector(rng, amount_mu=mu) for _ in range(n)))
    assert [d.feature for d in found] == ["amount", "amount"]


def test_nothing_is_compared_before_both_windows_are_full() -> None:
    detector = DataDrift(FEATURES, SETTINGS)
    rng = random.Random(6)
    assert run(detector, (vector(rng) for _ in range(1000))) == []
    assert run(detector, (vector(rng, amount_mu=9.0) for _ in range(999))) == []
    row = detector.report()[0]
    assert (row.reference_n, row.current_n, row.value, row.drift) == (1000, 999, 0.0, False)
    assert [d.feature for d in detector.update(vector(rng, amount_mu=9.0))] == ["amount"]


def test_reset_reference_takes_the_next_vectors_as_the_reference() -> None:
    detector = DataDrift(FEATURES, SETTINGS)
    rng = random.Random(7)
    run(detector, (vector(rng) for _ in range(2000)))
    assert [d.feature for d in run(detector, (vector(rng, amount_mu=3.8) for _ in range(1000)))]
    detector.reset_reference()  # e.g. a model trained on the new data was promoted
    assert {(r.reference_n, r.current_n, r.drift) for r in detector.report()} == {(0, 0, False)}
    assert run(detector, (vector(rng, amount_mu=3.8) for _ in range(4000))) == []
    assert all(r.value < r.threshold for r in detector.report())


def test_the_report_has_the_shape_of_the_api() -> None:
    detector = DataDrift(FEATURES, SETTINGS)
    run(detector, stationary(8, 2500))
    rows = [asdict(row) for row in detector.report()]
    assert [r["feature"] for r in rows] == ["amount", "age", "amount_mean_1h", "country"]
    types = {
        "feature": str,
        "statistic": str,
        "value": float,
        "threshold": float,
        "drift": bool,
        "reference_n": int,
        "current_n": int,
    }
    for row in rows:
        assert {key: type(value) for key, value in row.items()} == types


def test_the_statistics() -> None:
    assert psi([10, 10], [10, 10]) == 0.0
    assert psi([100, 0], [50, 50]) > 1  # an empty reference bin is floored, not infinite
    assert js_distance([3, 1], [1, 3]) == pytest.approx(js_distance([1, 3], [3, 1]))
    assert 0 < js_distance([1, 2, 3], [3, 2, 1]) < js_distance([1, 0, 0], [0, 0, 1])


# ---- in the monitor: event-time order, alerts, replays


def feature_vectors(seed: int = 9, n: int = 6000, at: int = 3000) -> list[FeatureVector]:
    return [
        FeatureVector(
            event_id=f"e{i}",
            entity_id=None,
            event_time=T0 + timedelta(seconds=i // 2),  # two events per second
            features=v,
            feature_set_version="v1",
        )
        for i, v in enumerate(shifted(seed, n, at=at, amount_mu=3.8))
    ]


def monitor() -> Monitor:
    return Monitor("binary", timedelta(hours=1), data_drift=DataDrift(FEATURES, SETTINGS))


def test_the_monitor_takes_vectors_in_event_time_order_and_alerts_once() -> None:
    vectors = feature_vectors()
    in_order, shuffled = monitor(), monitor()
    for v in vectors:
        in_order.add_features(v)
    alerts = in_order.advance_features(vectors[-1].event_time)
    # as two partitions would deliver them, one far behind the other, some twice
    halves = vectors[::2], vectors[1::2]
    for v in [*halves[1][:2000], *halves[0], *vectors[100:150], *halves[1][2000:]]:
        shuffled.add_features(v)
    again = shuffled.advance_features(vectors[-1].event_time)
    assert [a.alert_id for a in alerts] == ["monitoring.data_drift.amount.1"]
    assert [a.model_dump(exclude={"raised_at"}) for a in again] == [
        a.model_dump(exclude={"raised_at"}) for a in alerts
    ]
    alert = alerts[0]
    assert (alert.kind, alert.subject, alert.detector) == ("data_drift", "amount", "PSI")
    assert set(alert.details) >= {"statistic", "value", "threshold", "reference_n", "current_n"}
    assert in_order.drift_report() == shuffled.drift_report()
    assert in_order.recent_alerts() == alerts


def test_vectors_wait_for_the_watermark() -> None:
    m = monitor()
    for v in feature_vectors(n=10):
        m.add_features(v)
    m.advance_features(T0 + timedelta(seconds=2))
    assert m.summary()["waiting"]["features"] == 10 - 6
    assert m.drift_report()["features"][0]["reference_n"] == 6


def test_a_replay_publishes_no_alert_again() -> None:
    vectors = feature_vectors()
    first = monitor()
    for v in vectors:
        first.add_features(v)
    published = first.advance_features(vectors[-1].event_time)
    replay = monitor()
    replay.restore_alerts(published)  # read from the alerts topic at start
    for v in vectors:
        replay.add_features(v)
    assert replay.advance_features(vectors[-1].event_time) == []
    assert replay.recent_alerts() == published
