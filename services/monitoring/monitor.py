"""The monitoring handler: predictions and labels in, quality, history and alerts out.

No Kafka and no HTTP here. `Monitor` joins (see `joiner`), then scores each joined
prediction once the watermark passes its due time (its label's time, or its event's),
in event-time order whatever order the partitions were read in: so the error stream
the drift detector sees, the history and the alerts are the same on every replay.
It scores per (model, source) and per (model, source, version) (see `quality`),
runs an `ErrorDrift` detector per (model, source) and turns its detections into
`Alert`s. Alert ids are deterministic (subject and ordinal), so rebuilding the
state from the topics re-derives the same alerts and none is published twice.
Feature vectors wait likewise for the watermark of the `features` topic and go to
the `DataDrift` detector (`data_drift`) in (event time, event_id) order; each drift
it finds is a `data_drift` alert on the feature.

>>> from datetime import UTC, datetime, timedelta
>>> from shared.messages import Label, Prediction
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> monitor = Monitor("binary", ttl=timedelta(hours=1))
>>> p = Prediction(prediction_id="p1", event_id="e1", model="lr", model_version="3",
...                y_pred=1, probabilities=None, source="stream", time=t0)
>>> monitor.add_prediction(p), monitor.add_label(Label(event_id="e1", label=True))
(None, None)
>>> monitor.advance(t0)
[]
>>> row = monitor.summary()["models"][0]
>>> row["model"], row["source"], row["n"], row["metrics"]["accuracy"], row["versions"][0]["n"]
('lr', 'stream', 1, 1.0, 1)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.monitoring.data_drift import DataDrift, FeatureDrift
from services.monitoring.drift import DriftDetected, ErrorDrift
from services.monitoring.estimate import Confidence, confidence_of
from services.monitoring.history import Promotion, VersionMark
from services.monitoring.joiner import Joined, Joiner, Predicted, prediction_time
from services.monitoring.quality import Quality, error_of, log_loss_term
from shared.catalogue import Task
from shared.clock import utcnow
from shared.labels import canonical, target
from shared.messages import Alert, FeatureVector, Label, Prediction
from shared.registry import version_order

__all__ = ["HistoryPoint", "Monitor", "Series", "alert_id", "data_drift_alert_id"]

SeriesKey = tuple[str, str]  # (model, source)


_UNKNOWN = object()
_CLASSES_MAX = 10_000  # probability keys remembered (classes: a handful, in practice)
MARKS_MAX = 100  # version marks per (model, source), promotions per served source: the newest
# A served source's model counts as changed (a promotion) once this many of its scored
# predictions in a row came from the new one: serving's processes swap a few ms apart.
PROMOTION_CONFIRM = 10


def _scoring_order(item: Joined) -> tuple[datetime, str, str]:
    prediction = item.prediction
    return (prediction_time(prediction), prediction.event_id or "", prediction.prediction_id)


def alert_id(subject: str, ordinal: int) -> str:
    """The id of the `ordinal`-th concept drift alert on `subject` (stable across replays)."""
    return f"monitoring.concept_drift.{subject}.{ordinal}"


def data_drift_alert_id(feature: str, ordinal: int) -> str:
    """The id of the `ordinal`-th data drift alert on `feature` (stable across replays)."""
    return f"monitoring.data_drift.{feature}.{ordinal}"


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """The recent-window value of the primary metric after `n` scored predictions, and
    the latest event time scored by then (so points only move forward in time, also
    when a partition read late has older predictions scored after newer ones)."""

    n: int
    value: float
    event_time: str | None


@dataclass
class Series:
    """Everything measured for one (model, source)."""

    model: str
    source: str
    cumulative: Quality
    window: Quality
    drift: ErrorDrift
    # label-free: mean confidence of the latest predictions as they arrive, and of the
    # latest scored ones (beside the realised window accuracy: how far to trust it)
    estimated: Confidence = field(default_factory=Confidence)
    scored_confidence: Confidence = field(default_factory=Confidence)
    versions: dict[str, Quality] = field(default_factory=dict)
    history: list[HistoryPoint] = field(default_factory=list)
    history_every: int = 100  # scored predictions per point; doubles as history fills
    # each version when first scored here, the newest `MARKS_MAX` (the dashboard's marks)
    marks: list[VersionMark] = field(default_factory=list)
    latest: datetime | None = None  # the latest event time scored
    unscored: int = 0  # joined, but y_pred was null (or not a number, for regression)
    expired: int = 0  # no label within ttl
    alerts: int = 0

    @property
    def subject(self) -> str:
        return f"{self.model}:{self.source}"

    def window_n(self, size: int) -> int:
        """How many scored predictions the recent window holds."""
        return min(self.cumulative.n, size)


class Monitor:
    """Joins, scores, detects drift; holds the state behind /api/summary and /api/alerts."""

    def __init__(
        self,
        task: Task,
        ttl: timedelta | None,
        *,
        window_size: int = 1000,
        drift_delta: float = 0.002,
        drift_warmup: int = 500,
        drift_margin: float = 0.01,
        history_every: int = 100,
        keep_versions: int = 20,
        history_points: int = 1000,
        data_drift: DataDrift | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.task = task
        self._binary = task == "binary"
        self.joiner = Joiner(ttl)
        self.window_size = window_size
        self.drift_params = {"delta": drift_delta, "warmup": drift_warmup, "margin": drift_margin}
        self.history_every = history_every
        self.keep_versions = keep_versions  # per (model, source): the newest
        self.history_points = max(2, history_points)  # per (model, source)
        self.clock = clock
        self.series: dict[SeriesKey, Series] = {}
        self.alerts: dict[str, Alert] = {}  # by alert_id, in the order raised
        self._published: dict[str, Alert] = {}  # alerts already on the topic
        # joins waiting to be scored: a bucket per due time, and a heap of those times
        self._due: dict[datetime, list[Joined]] = {}
        self._due_times: list[datetime] = []
        self._unreleased = 0
        self._classes: dict[str, Any] = {}  # canonical class of each probability key seen
        # feature vectors waiting for the watermark: by (event_time, event_id), and a heap
        self.data_drift = data_drift
        self._vectors: dict[tuple[datetime, str], dict[str, float | None]] = {}
        self._vector_order: list[tuple[datetime, str]] = []
        self.data_drift_alerts: dict[str, int] = {}  # per feature: alerts raised so far
        # served sources: the model each predicts with (and its latest event time), a
        # candidate for the next one (model, version, event time, predictions in a
        # row), and the changes seen (see `_served_by`)
        self.served: dict[str, str] = {}
        self._served_at: dict[str, datetime] = {}
        self._candidates: dict[str, tuple[str, str, datetime, int]] = {}
        self.promotions: list[Promotion] = []

    # ---- input

    def restore_alerts(self, alerts: Iterable[Alert]) -> None:
        """Alerts found on the topic at start: re-detecting one will not publish it again."""
        for alert in alerts:
            if alert.alert_id.startswith(("monitoring.concept_drift.", "monitoring.data_drift.")):
                self._published[alert.alert_id] = alert
                self.alerts.setdefault(alert.alert_id, alert)

    def add_prediction(self, prediction: Prediction) -> None:
        """Handle one prediction (scored by `advance` once joined and due); a classifier's
        confidence goes to its series' label-free estimate at once."""
        if prediction.probabilities and self.task != "regression":
            y_pred = canonical(prediction.y_pred, self.task)
            confidence = confidence_of(y_pred, self._proba(prediction.probabilities))
            if confidence is not None:
                self._series(prediction.model, prediction.source).estimated.add(confidence)
        self._queue(self.joiner.add_prediction(prediction))

    def add_label(self, label: Label) -> None:
        """Handle one label (its joins are scored by `advance` once due)."""
        self._queue(self.joiner.add_label(label))

    def add_features(self, vector: FeatureVector) -> None:
        """Hold one feature vector for the data drift detector (`advance_features`)."""
        if self.data_drift is None:
            return
        key = (vector.event_time, vector.event_id)
        if key not in self._vectors:  # (one delivered twice while waiting counts once)
            self._vectors[key] = vector.features
            heapq.heappush(self._vector_order, key)

    def advance_features(self, watermark: datetime) -> list[Alert]:
        """Give the data drift detector the vectors up to `watermark`, in order of
        (event_time, event_id); return the alerts raised."""
        alerts: list[Alert] = []
        order, detector = self._vector_order, self.data_drift
        if detector is None:
            return alerts
        while order and order[0][0] <= watermark:
            key = heapq.heappop(order)
            for found in detector.update(self._vectors.pop(key)):
                alert = self._data_drift_alert(found, *key)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    def advance(
        self,
        watermark: datetime,
        *,
        labels_at: datetime | None = None,
        predictions_at: datetime | None = None,
    ) -> list[Alert]:
        """Move event time to `watermark`: score the joins due, count expiries
        (each input stream's own progress, if given, drives the other's expiry).

        Returns the new alerts to publish.
        """
        expired = self.joiner.advance(watermark, labels_at=labels_at, predictions_at=predictions_at)
        for prediction in expired:
            self._series(prediction.model, prediction.source).expired += 1
        return self._release(watermark)

    def flush(self) -> list[Alert]:
        """Score every join made so far, as at the end of a stream."""
        return self._release(None)

    @property
    def unreleased(self) -> int:
        """Joins made but not scored yet (their time is beyond the watermark)."""
        return self._unreleased

    # ---- scoring order

    def _queue(self, joined: list[Joined]) -> None:
        due_at = self._due
        for item in joined:
            prediction = item.prediction
            due = prediction.event_time or prediction.time
            if item.label_time is not None and item.label_time > due:
                due = item.label_time
            bucket = due_at.get(due)
            if bucket is None:
                due_at[due] = [item]
                heapq.heappush(self._due_times, due)
            else:
                bucket.append(item)
            self._unreleased += 1

    def _release(self, watermark: datetime | None) -> list[Alert]:
        """Score the joins due by `watermark` (all if None), in the order of
        (due, prediction time, event_id, prediction_id)."""
        alerts = []
        times = self._due_times
        while times and (watermark is None or times[0] <= watermark):
            bucket = self._due.pop(heapq.heappop(times))
            if len(bucket) > 1:
                bucket.sort(key=_scoring_order)
            self._unreleased -= len(bucket)
            for item in bucket:
                alert = self._score_one(item)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    # ---- scoring

    def _series(self, model: str, source: str) -> Series:
        key = (model, source)
        series = self.series.get(key)
        if series is None:
            series = Series(
                model,
                source,
                Quality(self.task),
                Quality(self.task, window=self.window_size),
                ErrorDrift(**self.drift_params),  # type: ignore[arg-type]
                Confidence(self.window_size),
                Confidence(self.window_size),
                history_every=self.history_every,
            )
            self.series[key] = series
        return series

    def _score_one(self, item: Joined) -> Alert | None:
        prediction = item.prediction
        series = self._series(prediction.model, prediction.source)
        label, y_pred = item.label, prediction.y_pred
        if self._binary and label.__class__ is bool and y_pred.__class__ is bool:
            y_true = label  # a bool is its own target and canonical form, for binary
        else:
            y_true = target(label, self.task)  # None: no target of this task (unscored)
            y_pred = canonical(y_pred, self.task)
        if y_pred is None or y_true is None:
            series.unscored += 1
            return None
        proba = self._proba(prediction.probabilities)
        loss = log_loss_term(y_true, proba, self.task)
        confidence = confidence_of(y_pred, proba)
        if confidence is not None:
            series.scored_confidence.add(confidence)
        series.cumulative.update_scored(y_true, y_pred, loss)
        series.window.update_scored(y_true, y_pred, loss)
        n = series.cumulative.n
        version = series.versions.get(prediction.model_version)
        if version is None:
            version = series.versions[prediction.model_version] = Quality(self.task)
            if len(series.versions) > self.keep_versions:  # the oldest goes
                del series.versions[min(series.versions, key=version_order)]
            series.marks.append(
                VersionMark(prediction.model_version, n, prediction_time(prediction).isoformat())
            )
            del series.marks[:-MARKS_MAX]
        version.update_scored(y_true, y_pred, loss)
        if prediction.source != "learner":  # served: which model does it predict with?
            self._served_by(prediction)
        at = prediction.event_time or prediction.time
        if series.latest is None or at > series.latest:
            series.latest = at
        if n % series.history_every == 0:
            value = series.window.get()[series.window.primary]
            event_time = series.latest.isoformat()
            series.history.append(HistoryPoint(n, float(value or 0.0), event_time))
            if len(series.history) >= self.history_points:
                # full: keep every second point and take points half as often, so the
                # chart spans the whole stream in at most `history_points` points
                series.history_every *= 2
                series.history = [p for p in series.history if p.n % series.history_every == 0]
        found = series.drift.update(error_of(y_true, y_pred, self.task))
        return None if found is None else self._alert(series, prediction, found)

    def _served_by(self, prediction: Predicted) -> None:
        """Follow the model a served source predicts with: another model is a
        promotion once `PROMOTION_CONFIRM` of its predictions in a row (in scoring
        order) came at or after the latest event time of the current one; older ones
        are late deliveries (partitions read unevenly), not a change."""
        source, model = prediction.source, prediction.model
        at = prediction_time(prediction)
        current = self.served.get(source)
        if current is None:  # the first model seen on this source: no change
            self.served[source], self._served_at[source] = model, at
            return
        candidate = self._candidates.get(source)
        if model == current:
            if at > self._served_at[source]:
                self._served_at[source] = at
            if candidate is not None and at >= candidate[2]:  # the old one again
                del self._candidates[source]
            return
        if at < self._served_at[source]:
            return
        if candidate is None or candidate[0] != model:
            candidate = (model, prediction.model_version, at, 0)
        candidate = (*candidate[:3], candidate[3] + 1)
        if candidate[3] < PROMOTION_CONFIRM:
            self._candidates[source] = candidate
            return
        self._candidates.pop(source, None)
        self.served[source], self._served_at[source] = model, at
        self.promotions.append(
            Promotion(source, current, model, candidate[1], candidate[2].isoformat())
        )
        del self.promotions[:-MARKS_MAX]

    def _proba(self, probabilities: dict[str, float] | None) -> dict[Any, float] | None:
        """`canonical_proba`, with each key's canonical class looked up once."""
        if not probabilities or self.task == "regression":
            return None
        classes = self._classes
        proba = {}
        for key, p in probabilities.items():
            cls = classes.get(key, _UNKNOWN)
            if cls is _UNKNOWN:
                if len(classes) >= _CLASSES_MAX:
                    classes.clear()
                cls = classes[key] = canonical(key, self.task)
            proba[cls] = float(p)
        return proba

    def _raise(self, ident: str, build: Callable[[], Alert]) -> Alert | None:
        """The new alert `ident` (built now), or None if it was published before a restart
        (kept, not published again)."""
        published = self._published.get(ident)
        if published is not None:
            self.alerts[ident] = published
            return None
        alert = self.alerts[ident] = build()
        return alert

    def _alert(self, series: Series, prediction: Predicted, found: DriftDetected) -> Alert | None:
        series.alerts += 1
        ident = alert_id(series.subject, series.alerts)
        return self._raise(
            ident,
            lambda: Alert(
                alert_id=ident,
                kind="concept_drift",
                subject=series.subject,
                detector="ADWIN",
                severity="warning",
                details={
                    "model": series.model,
                    "source": series.source,
                    "index": found.index,
                    "error_before": round(found.error_before, 6),
                    "error_after": round(found.error_after, 6),
                    "window": found.width,
                    "delta": self.drift_params["delta"],
                    "model_version": prediction.model_version,
                    "event_id": prediction.event_id,
                    "event_time": prediction.event_time.isoformat()
                    if prediction.event_time
                    else None,
                },
                raised_at=self.clock(),
            ),
        )

    def _data_drift_alert(
        self, found: FeatureDrift, event_time: datetime, event_id: str
    ) -> Alert | None:
        ordinal = self.data_drift_alerts[found.feature] = (
            self.data_drift_alerts.get(found.feature, 0) + 1
        )
        ident = data_drift_alert_id(found.feature, ordinal)
        return self._raise(
            ident,
            lambda: Alert(
                alert_id=ident,
                kind="data_drift",
                subject=found.feature,
                detector=found.statistic.upper(),
                severity="warning",
                details={
                    "feature": found.feature,
                    "statistic": found.statistic,
                    "value": round(found.value, 6),
                    "threshold": found.threshold,
                    "reference_n": found.reference_n,
                    "current_n": found.current_n,
                    "event_id": event_id,
                    "event_time": event_time.isoformat(),
                },
                raised_at=self.clock(),
            ),
        )

    # ---- views

    def drift_report(self) -> dict[str, Any]:
        """The /api/drift document (see DESIGN.md, Operations contract)."""
        rows = self.data_drift.report() if self.data_drift is not None else []
        return {"features": [asdict(row) for row in rows]}

    def _estimated(self, series: Series) -> dict[str, Any] | None:
        """The label-free accuracy estimate of `series` (`estimate`), None without
        probabilities to go on."""
        estimate = series.estimated.value()
        if estimate is None:
            return None
        realised = series.window.get().get("accuracy") if series.window.n else None
        scored = series.scored_confidence.value()
        gap = realised - scored if realised is not None and scored is not None else None
        return {"accuracy": estimate, "n": series.estimated.n, "calibration_gap": gap}

    def summary(self) -> dict[str, Any]:
        """The /api/summary document (see DESIGN.md, HTTP)."""
        models = []
        for series in sorted(self.series.values(), key=lambda s: (s.model, s.source)):
            models.append(
                {
                    "model": series.model,
                    "source": series.source,
                    "n": series.cumulative.n,
                    "metrics": series.cumulative.get(),
                    "window": {"n": series.window_n(self.window_size), **series.window.get()},
                    "versions": [
                        {"version": version, "n": quality.n, "metrics": quality.get()}
                        for version, quality in sorted(
                            series.versions.items(), key=lambda item: version_order(item[0])
                        )
                    ],
                    "unscored": series.unscored,
                    "expired": series.expired,
                    "alerts": series.alerts,
                    "drift": {
                        "error": series.drift.estimation,
                        "detections": series.drift.detections,
                    },
                    "estimated": self._estimated(series),
                }
            )
        joiner = self.joiner
        return {
            "task": self.task,
            "models": models,
            "alerts": len(self.alerts),
            "unscored": sum(s.unscored for s in self.series.values()),
            "expired": sum(s.expired for s in self.series.values()),
            "expired_labels": joiner.expired_labels,
            "duplicates": {
                "predictions": joiner.duplicate_predictions,
                "labels": joiner.duplicate_labels,
            },
            "without_event_id": joiner.without_event,
            "waiting": {
                "predictions": joiner.waiting_predictions,
                "labels": joiner.waiting_labels,
                "scoring": self.unreleased,
                "features": len(self._vectors),
            },
            "clock": joiner.clock.isoformat() if joiner.clock else None,
        }

    def recent_alerts(self) -> list[Alert]:
        """Every alert, newest first."""
        return list(reversed(self.alerts.values()))
