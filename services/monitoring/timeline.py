"""The `/api/timeline` document: what the dashboard draws over time.

- `series`: per (model, source), the recent-window value of the primary metric
  (accuracy, MAE for regression) over event time, as `[event_time, n, value]` points
  (the monitor's bounded history: `HISTORY_POINTS` per series), the versions in
  numeric order, and a mark where each version was first scored;
- `promotions`: each change of the model a served source predicts with;
- `alerts`: every alert with the event time it was raised at (concept drift on its
  series, data drift on a feature);
- `gap`: per model, each served source's metric minus the learner's, cumulative and
  over the recent window (negative accuracy: serving a stale model costs that much);
- `features`: per feature, its data drift statistic over the stream
  (`[vectors seen, value]`, `data_drift.HISTORY_POINTS` at most) and its threshold.

>>> from datetime import UTC, datetime, timedelta
>>> from services.monitoring.monitor import Monitor
>>> from shared.messages import Label, Prediction
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> monitor = Monitor("binary", ttl=timedelta(hours=1), history_every=1)
>>> for i, (source, version, y_pred) in enumerate(
...     [("learner", "10", True), ("stream", "2", True), ("stream", "10", False)]
... ):
...     at = t0 + timedelta(seconds=i)
...     monitor.add_prediction(Prediction(prediction_id=f"p{i}", event_id=f"e{i}",
...         model="lr", model_version=version, y_pred=y_pred, probabilities=None,
...         source=source, time=at, event_time=at))
...     monitor.add_label(Label(event_id=f"e{i}", label=True))
>>> _ = monitor.flush()
>>> doc = timeline(monitor)
>>> stream = doc["series"][1]
>>> stream["source"], stream["versions"], [m["version"] for m in stream["marks"]]
('stream', ['2', '10'], ['2', '10'])
>>> stream["points"][-1]
['2024-01-01T00:00:02+00:00', 2, 0.5]
>>> doc["gap"]
[{'model': 'lr', 'learner': {'cumulative': 1.0, 'window': 1.0}, 'served': [{'source': 'stream', 'cumulative': 0.5, 'window': 0.5, 'gap_cumulative': -0.5, 'gap_window': -0.5}]}]
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from services.monitoring.monitor import Monitor, Series
from shared.registry import version_order

__all__ = ["thin", "timeline"]

SERVED = ("stream", "http")


def thin(points: list[Any], at_most: int | None) -> list[Any]:
    """Every k-th of `points`, counted back from the last (which stays), so that at most
    `at_most` remain (all of them for None).

    >>> thin(list(range(10)), 4), thin(list(range(3)), 4), thin(list(range(3)), None)
    ([0, 3, 6, 9], [0, 1, 2], [0, 1, 2])
    """
    if at_most is None or len(points) <= at_most:
        return points
    stride = -(-len(points) // at_most)
    return points[::-1][::stride][::-1]


def _series(series: Series, at_most: int | None) -> dict[str, Any]:
    return {
        "model": series.model,
        "source": series.source,
        "subject": series.subject,
        "n": series.cumulative.n,
        "points": [[p.event_time, p.n, p.value] for p in thin(series.history, at_most)],
        "versions": sorted(series.versions, key=version_order),
        "marks": [asdict(m) for m in series.marks],
    }


def _gap(monitor: Monitor) -> list[dict[str, Any]]:
    by_model: dict[str, dict[str, Series]] = {}
    for series in monitor.series.values():
        by_model.setdefault(series.model, {})[series.source] = series
    rows = []
    for model, sources in sorted(by_model.items()):
        learner = sources.get("learner")
        if learner is None or not learner.cumulative.n:
            continue
        primary = learner.cumulative.primary
        base = {
            "cumulative": learner.cumulative.get()[primary],
            "window": learner.window.get()[primary],
        }
        served = []
        for source in SERVED:
            other = sources.get(source)
            if other is None or not other.cumulative.n:
                continue
            cumulative = other.cumulative.get()[primary]
            window = other.window.get()[primary]
            served.append(
                {
                    "source": source,
                    "cumulative": cumulative,
                    "window": window,
                    "gap_cumulative": _minus(cumulative, base["cumulative"]),
                    "gap_window": _minus(window, base["window"]),
                }
            )
        rows.append({"model": model, "learner": base, "served": served})
    return rows


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 6)


def _features(monitor: Monitor) -> list[dict[str, Any]]:
    detector = monitor.data_drift
    if detector is None:
        return []
    return [
        {
            "feature": feature.name,
            "statistic": feature.statistic,
            "threshold": feature.threshold,
            "value": feature.value,
            "drift": feature.drift,
            "points": [list(p) for p in feature.history.points],
        }
        for feature in detector.features
    ]


def timeline(monitor: Monitor, points: int | None = None) -> dict[str, Any]:
    """The /api/timeline document (see the module doc); `points`: at most this many
    points per series (evenly thinned), else all the history has."""
    ordered = sorted(monitor.series.values(), key=lambda s: (s.model, s.source))
    primary = "mae" if monitor.task == "regression" else "accuracy"
    return {
        "task": monitor.task,
        "metric": primary,
        "series": [_series(s, points) for s in ordered],
        "promotions": [asdict(p) for p in monitor.promotions],
        "alerts": [
            {
                "alert_id": a.alert_id,
                "kind": a.kind,
                "subject": a.subject,
                "event_time": a.details.get("event_time"),
                "index": a.details.get("index"),
            }
            for a in monitor.alerts.values()
        ],
        "gap": _gap(monitor),
        "features": _features(monitor),
    }
