"""The dashboard's data: version marks, promotions, the served-learner gap, the drift
histories, consumer lag, and the page's files."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.monitoring.dashboard import ASSETS, asset
from services.monitoring.data_drift import HISTORY_POINTS, DataDrift
from services.monitoring.history import Thinned
from services.monitoring.lag import LAG_POINTS, LagWatch, Watched
from services.monitoring.monitor import MARKS_MAX, PROMOTION_CONFIRM, Monitor
from services.monitoring.timeline import timeline
from shared.messages import Label, Prediction
from shared.pipeline import DataDriftSettings, Features

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def feed(monitor: Monitor, rows: list[tuple[str, str, str, bool]], start: int = 0) -> None:
    """(model, source, version, right?) per event, in event time; every label True."""
    for i, (model, source, version, right) in enumerate(rows, start):
        at = T0 + timedelta(seconds=i)
        monitor.add_prediction(
            Prediction(
                prediction_id=f"{model}-{source}-{i}",
                event_id=f"e{i}",
                model=model,
                model_version=version,
                y_pred=right,
                probabilities=None,
                source=source,  # type: ignore[arg-type]
                time=at,
                event_time=at,
            )
        )
        monitor.add_label(Label(event_id=f"e{i}", label=True))
    monitor.flush()


def test_versions_are_marked_once_each_and_listed_in_numeric_order() -> None:
    monitor = Monitor("binary", ttl=timedelta(hours=1), history_every=5)
    versions = ["2"] * 10 + ["10"] * 10 + ["9"] * 3 + ["10"] * 7
    feed(monitor, [("lr", "learner", v, True) for v in versions])
    series = timeline(monitor)["series"][0]
    assert series["versions"] == ["2", "9", "10"]
    assert [(m["version"], m["n"]) for m in series["marks"]] == [("2", 1), ("10", 11), ("9", 21)]
    assert series["marks"][1]["event_time"] == (T0 + timedelta(seconds=10)).isoformat()
    assert [p[1] for p in series["points"]] == [5, 10, 15, 20, 25, 30]
    summary_versions = [v["version"] for v in monitor.summary()["models"][0]["versions"]]
    assert summary_versions == ["2", "9", "10"]


def test_version_marks_are_bounded() -> None:
    monitor = Monitor("binary", ttl=timedelta(hours=1), keep_versions=1000)
    feed(monitor, [("lr", "learner", str(i), True) for i in range(MARKS_MAX + 30)])
    marks = timeline(monitor)["series"][0]["marks"]
    assert len(marks) == MARKS_MAX and marks[-1]["version"] == str(MARKS_MAX + 29)


def test_a_promotion_is_a_served_source_changing_model_for_good() -> None:
    monitor = Monitor("binary", ttl=timedelta(hours=1))
    flap = [("lr", "stream", "3", True)] * 20
    # a few predictions of the new model while processes swap: not a promotion yet
    flap += [("hat", "stream", "1", True)] * (PROMOTION_CONFIRM - 1) + [("lr", "stream", "3", True)]
    flap += [("hat", "stream", "2", True)] * 30  # now it holds
    flap += [("hat", "learner", "2", True)] * 5  # the learner never promotes
    feed(monitor, flap)
    promotions = timeline(monitor)["promotions"]
    first_for_good = 20 + PROMOTION_CONFIRM
    assert promotions == [
        {
            "source": "stream",
            "from_model": "lr",
            "to_model": "hat",
            "version": "2",
            "event_time": (T0 + timedelta(seconds=first_for_good)).isoformat(),
        }
    ]
    assert monitor.served == {"stream": "hat"}


def test_the_gap_is_each_served_source_minus_the_learner() -> None:
    monitor = Monitor("binary", ttl=timedelta(hours=1))
    rows = [("lr", "learner", "1", True)] * 10
    rows += [("lr", "stream", "1", i % 4 != 0) for i in range(8)]  # 6 of 8 right
    rows += [("lr", "http", "1", i % 2 == 0) for i in range(4)]  # 2 of 4
    rows += [("hat", "stream", "1", True)] * 3  # no learner for hat: no row
    feed(monitor, rows)
    (gap,) = timeline(monitor)["gap"]
    assert gap["model"] == "lr" and gap["learner"] == {"cumulative": 1.0, "window": 1.0}
    assert [(s["source"], s["gap_cumulative"], s["gap_window"]) for s in gap["served"]] == [
        ("stream", -0.25, -0.25),
        ("http", -0.5, -0.5),
    ]


def test_the_alerts_on_the_timeline_carry_their_event_time() -> None:
    monitor = Monitor("binary", ttl=timedelta(hours=1), drift_warmup=50, drift_margin=0.0)
    rng = random.Random(2)
    rows = [("lr", "stream", "1", rng.random() < (0.95 if i < 400 else 0.3)) for i in range(800)]
    feed(monitor, rows)
    alerts = timeline(monitor)["alerts"]
    assert alerts and alerts[0]["kind"] == "concept_drift" and alerts[0]["subject"] == "lr:stream"
    at = datetime.fromisoformat(alerts[0]["event_time"])
    assert T0 + timedelta(seconds=400) <= at < T0 + timedelta(seconds=800)


def test_each_feature_keeps_a_bounded_history_of_its_statistic() -> None:
    settings = DataDriftSettings(reference_size=1000, window_size=1000, every=20)
    detector = DataDrift(Features(numeric=("x", "y")), settings)
    rng = random.Random(4)
    n = 2000 + 20 * HISTORY_POINTS * 3
    for i in range(n):
        detector.update({"x": rng.gauss(3.0 if i > n // 2 else 0.0, 1), "y": rng.gauss(0, 1)})
    monitor = Monitor("binary", ttl=None, data_drift=detector)
    x, y = timeline(monitor)["features"]
    assert (x["feature"], x["drift"], y["drift"]) == ("x", True, False)
    assert 0 < len(x["points"]) < HISTORY_POINTS
    first, last = x["points"][0][0], x["points"][-1][0]
    assert 2000 <= first < n // 4 and last > 3 * n // 4, "from the first evaluations to now"
    before = [v for at, v in x["points"] if at < n // 2]
    after = [v for at, v in x["points"] if at > n // 2 + 1000]
    assert max(before) < x["threshold"] < min(after)


def test_thinned_spans_everything_in_bounded_points() -> None:
    h = Thinned(size=10)
    for i in range(1000):
        h.add(i)
    assert len(h.points) < 10
    assert h.points == sorted(h.points) and h.points[0] < 200 and h.points[-1] > 800


def test_lag_and_throughput_from_offsets() -> None:
    watch = LagWatch(None, None, [Watched("serving", "g", ("features",)), Watched("x", "h", ())])
    watch.record("serving", at=0.0, ends=10, committed=10)
    watch.record("serving", at=2.0, ends=50, committed=30)
    watch.record("x", at=2.0, ends=5, committed=None)  # the group committed nothing
    serving, x = watch.report()["services"]
    assert (serving["lag"], serving["consumed_per_s"], serving["produced_per_s"]) == (
        20,
        10.0,
        20.0,
    )
    assert serving["running"] and not x["running"] and x["lag"] is None
    for i in range(LAG_POINTS * 2):
        watch.record("serving", at=3.0 + i, ends=50, committed=50)
    assert len(watch.report()["services"][0]["points"]) == LAG_POINTS


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_the_page_files_ship_with_the_package(name: str) -> None:
    assert asset(name).body.strip()
    assert asset(name).media_type == ASSETS[name]


def test_late_predictions_of_the_old_model_are_no_promotion_back() -> None:
    """Partitions read unevenly: the old model's predictions of earlier events are
    scored after the new model's (each `feed` is scored before the next)."""
    monitor = Monitor("binary", ttl=timedelta(hours=1))
    feed(monitor, [("lr", "stream", "3", True)] * 10)  # events 0-9
    feed(monitor, [("hat", "stream", "1", True)] * 30, start=20)  # events 20-49
    feed(monitor, [("lr", "stream", "3", True)] * 10, start=10)  # events 10-19, late
    promotions = timeline(monitor)["promotions"]
    assert [(p["from_model"], p["to_model"], p["event_time"]) for p in promotions] == [
        ("lr", "hat", (T0 + timedelta(seconds=20)).isoformat())
    ]


def test_history_points_move_forward_in_event_time_when_late_ones_are_scored() -> None:
    monitor = Monitor("binary", ttl=timedelta(hours=1), history_every=5)
    feed(monitor, [("lr", "learner", "1", True)] * 10, start=20)  # events 20-29
    feed(monitor, [("lr", "learner", "1", True)] * 10)  # events 0-9, scored late
    times = [p[0] for p in timeline(monitor)["series"][0]["points"]]
    latest = (T0 + timedelta(seconds=29)).isoformat()
    assert times == [(T0 + timedelta(seconds=24)).isoformat(), latest, latest, latest]


def test_the_timeline_thins_each_series_to_the_points_asked() -> None:
    monitor = Monitor("binary", ttl=timedelta(hours=1), history_every=1)
    feed(monitor, [("lr", "learner", "1", True)] * 100)
    assert len(timeline(monitor)["series"][0]["points"]) == 100
    points = timeline(monitor, points=10)["series"][0]["points"]
    assert [p[1] for p in points] == list(range(10, 101, 10))  # evenly, the last kept
