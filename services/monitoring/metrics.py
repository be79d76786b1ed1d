"""Prometheus metrics of the monitoring service (names prefixed `driftline_monitoring_`).

Counts derived from the monitor's state (joined, scored, expired, duplicates, alerts,
accuracy) are read at scrape time by `MonitorCollector`, so they always agree with
/api/summary; lag and latency are ordinary gauges and histograms. Each app gets its
own registry (tests start several apps in one process).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from services.monitoring.monitor import Monitor
from shared.signing import REJECTED as REGISTRY_REJECTED

__all__ = ["REGISTRY_REJECTED", "BatchHistogram", "MonitorCollector", "MonitoringMetrics"]

P = "driftline_monitoring_"


class MonitorCollector(Collector):
    """Reads the monitor's counters and gauges at each scrape."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.invalid: dict[str, int] = {}  # by topic, filled by the worker

    def collect(self) -> Iterator[Metric]:
        series = list(self.monitor.series.values())
        joiner = self.monitor.joiner
        labels = ["model", "source"]
        joined = CounterMetricFamily(
            f"{P}joined", "Predictions joined with their label", labels=labels
        )
        scored = CounterMetricFamily(f"{P}scored", "Joined predictions scored", labels=labels)
        unscored = CounterMetricFamily(
            f"{P}unscored", "Joined predictions not scored (y_pred null)", labels=labels
        )
        expired = CounterMetricFamily(
            f"{P}expired", "Predictions whose label did not come within the TTL", labels=labels
        )
        alerts = CounterMetricFamily(f"{P}alerts", "Concept drift alerts raised", labels=labels)
        accuracy = GaugeMetricFamily(f"{P}accuracy", "Cumulative accuracy", labels=labels)
        window = GaugeMetricFamily(
            f"{P}window_accuracy", "Accuracy over the recent window", labels=labels
        )
        estimated = GaugeMetricFamily(
            f"{P}estimated_accuracy",
            "Label-free estimate: mean confidence of the latest predictions (calibrated models)",
            labels=labels,
        )
        for s in series:
            key = [s.model, s.source]
            joined.add_metric(key, s.cumulative.n + s.unscored)
            scored.add_metric(key, s.cumulative.n)
            unscored.add_metric(key, s.unscored)
            expired.add_metric(key, s.expired)
            alerts.add_metric(key, s.alerts)
            if s.cumulative.n and s.cumulative.primary == "accuracy":
                accuracy.add_metric(key, s.cumulative.get()["accuracy"] or 0.0)
                window.add_metric(key, s.window.get()["accuracy"] or 0.0)
            confidence = s.estimated.value()
            if confidence is not None:
                estimated.add_metric(key, confidence)
        duplicates = CounterMetricFamily(
            f"{P}duplicates", "Re-delivered predictions and labels ignored", labels=["kind"]
        )
        duplicates.add_metric(["prediction"], joiner.duplicate_predictions)
        duplicates.add_metric(["label"], joiner.duplicate_labels)
        expired_labels = CounterMetricFamily(
            f"{P}expired_labels", "Labels no prediction joined within the TTL"
        )
        expired_labels.add_metric([], joiner.expired_labels)
        invalid = CounterMetricFamily(f"{P}invalid", "Undecodable input messages", labels=["topic"])
        for topic, count in self.invalid.items():
            invalid.add_metric([topic], count)
        waiting = GaugeMetricFamily(f"{P}waiting", "Items waiting to be joined", labels=["kind"])
        waiting.add_metric(["prediction"], joiner.waiting_predictions)
        waiting.add_metric(["label"], joiner.waiting_labels)
        data_drift = GaugeMetricFamily(
            f"{P}data_drift",
            "Per feature: the last value of its data drift statistic (reference vs current)",
            labels=["feature", "statistic"],
        )
        threshold = GaugeMetricFamily(
            f"{P}data_drift_threshold",
            "Per feature: the threshold its data drift statistic is compared with",
            labels=["feature", "statistic"],
        )
        if self.monitor.data_drift is not None:  # one series per feature of the pipeline
            for row in self.monitor.data_drift.report():
                data_drift.add_metric([row.feature, row.statistic], row.value)
                threshold.add_metric([row.feature, row.statistic], row.threshold)
        yield from (joined, scored, unscored, expired, alerts, accuracy, window, estimated)
        yield duplicates
        yield from (expired_labels, invalid, waiting, data_drift, threshold)


class BatchHistogram(Collector):
    """A histogram fed a whole batch of observations at once, exposed as
    `prometheus_client.Histogram` exposes one (`_bucket`, `_count`, `_sum`).

    For one observation per message: `Histogram.observe` takes two locks per call,
    a cost per message that the service's event loop (its only writer) does not need.

    >>> h = BatchHistogram("x_seconds", "X", (0.1, 1.0))
    >>> h.observe_many([0.05, 0.1, 0.5, 7.0])
    >>> [(s.name, s.labels.get("le"), s.value) for s in next(h.collect()).samples][:3]
    [('x_seconds_bucket', '0.1', 2.0), ('x_seconds_bucket', '1.0', 3.0), ('x_seconds_bucket', '+Inf', 4.0)]
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe_many(self, values: Iterable[float]) -> None:
        counts, bounds, total = self.counts, self.bounds, 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # le: the first bound >= value
            total += value
        self.sum += total

    def collect(self) -> Iterator[Metric]:
        cumulative, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            cumulative.append((floatToGoString(bound), float(running)))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.sum
        )


class MonitoringMetrics:
    """The registry of one monitoring app, with its lag gauge and latency histogram."""

    def __init__(self, monitor: Monitor) -> None:
        self.registry = CollectorRegistry()
        self.collector = MonitorCollector(monitor)
        self.registry.register(self.collector)
        self.consumer_lag = Gauge(
            f"{P}consumer_lag",
            "Messages not yet consumed",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{P}processing_seconds",
            "Time to handle one polled batch of predictions and labels",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.record_latency = BatchHistogram(
            f"{P}latency_seconds",
            "From a message's broker timestamp to its handling (live messages only)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.registry.register(self.record_latency)
        # the process-wide count of refused snapshots (`shared.signing`), shown here too
        self.registry.register(REGISTRY_REJECTED)
        self.snapshot_bytes = Gauge(
            f"{P}snapshot_bytes",
            "Size of the last state snapshot written (what a restart reads on from)",
            registry=self.registry,
        )
