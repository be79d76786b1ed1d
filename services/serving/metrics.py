"""Prometheus metrics of the serving service (names prefixed `driftline_serving_`, and
`driftline_registry_rejected_total`: artifacts and live slots refused, `shared.signing`).

Serving runs as several processes (HTTP workers and the stream scorer, see
`processes`); under `python -m services.serving` their metrics are file-backed
(prometheus_client's multiprocess mode) and `/metrics` on any worker shows them all
merged: counters summed, gauges as each says. Metrics kept per process carry a
`process` label (`http-0`, `http-1`, ..., `stream`), set once by `set_process`.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from shared.signing import REJECTED as REGISTRY_REJECTED

__all__ = [
    "CONTENT_TYPE_LATEST",
    "INVALID_MESSAGES",
    "LIVE_LOAD_ERRORS",
    "MODEL_LEARNED",
    "MODEL_LOAD_ERRORS",
    "MODEL_SWAPS",
    "MODEL_VERSION",
    "PREDICTIONS",
    "PREDICT_ERRORS",
    "PUBLISH_ERRORS",
    "REGISTRY_REJECTED",
    "REQUESTS",
    "REQUEST_LATENCY",
    "STREAM_LAG",
    "STREAM_SKIPPED",
    "TALLY",
    "RequestTally",
    "exposition",
    "process_name",
    "set_process",
]

_process = "main"


def set_process(name: str) -> None:
    """Name this process in the per-process metrics (`http-0`, `stream`, ...)."""
    global _process
    _process = name


def process_name() -> str:
    return _process


def exposition() -> bytes:
    """The metrics text: every process's, merged, when they are file-backed."""
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


REQUESTS = Counter(
    "driftline_serving_requests_total", "POST /predict requests by HTTP status", ["status"]
)
REQUEST_LATENCY = Histogram(
    "driftline_serving_request_latency_seconds",
    "POST /predict handling time (from the body read to the response built)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PREDICTIONS = Counter(
    "driftline_serving_predictions_total",
    "Predictions made, by source (http, stream) and model",
    ["source", "model"],
)
PREDICT_ERRORS = Counter(
    "driftline_serving_predict_errors_total",
    "Predictions that failed because the model raised, by source and model",
    ["source", "model"],
)
PUBLISH_ERRORS = Counter(
    "driftline_serving_publish_errors_total",
    "Predictions that could not be published to the predictions topic",
    ["source", "reason"],
)
MODEL_SWAPS = Counter(
    "driftline_serving_model_swaps_total",
    "Model versions swapped in (first load included), per serving process",
    ["model", "process"],
)
MODEL_LOAD_ERRORS = Counter(
    "driftline_serving_model_load_errors_total", "Model versions that failed to load", ["model"]
)
MODEL_VERSION = Gauge(
    "driftline_serving_model_version",
    "The version being served (numeric versions), per serving process",
    ["model", "process"],
    multiprocess_mode="livemax",
)
MODEL_LEARNED = Gauge(
    "driftline_serving_model_learned",
    "Events the served model has learned (it follows the learner's live slot), per process",
    ["model", "process"],
    multiprocess_mode="livemin",
)
LIVE_LOAD_ERRORS = Counter(
    "driftline_serving_live_load_errors_total",
    "Reads of a model's live slot that failed (the model served stays)",
    ["model"],
)
STREAM_SKIPPED = Counter(
    "driftline_serving_stream_skipped_total",
    "Messages on the features topic that were not scored, by reason",
    ["reason"],
)
STREAM_LAG = Gauge(
    "driftline_serving_stream_lag",
    "Feature vectors not yet scored",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
INVALID_MESSAGES = Counter(
    "driftline_serving_invalid_messages_total",
    "Messages consumed that were not valid (logged and skipped)",
    ["topic"],
)


class RequestTally:
    """`/predict` counts kept in plain ints and added to the metrics in one go by `flush`.

    With file-backed (multiprocess) metrics every `inc` takes a lock and writes a
    memory-mapped file; four of them per request cost more than the rest of the
    metrics work together. A worker flushes its tally every second and before
    answering `/metrics`, so the merged figures lag by at most that.

    >>> tally = RequestTally()
    >>> tally.request(200, 0.0007); tally.prediction("logreg"); tally.flush()
    >>> REQUESTS.labels("200")._value.get() >= 1
    True
    """

    def __init__(self) -> None:
        self.bounds = REQUEST_LATENCY._upper_bounds
        self._statuses: dict[int, int] = {}
        self._predictions: dict[str, int] = {}
        self._buckets = [0] * len(self.bounds)
        self._latency_sum = 0.0

    def request(self, status: int, seconds: float) -> None:
        self._statuses[status] = self._statuses.get(status, 0) + 1
        self._latency_sum += seconds
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self._buckets[i] += 1
                break

    def prediction(self, model: str) -> None:
        self._predictions[model] = self._predictions.get(model, 0) + 1

    def flush(self) -> None:
        """Add what was counted since the last flush to the prometheus metrics."""
        statuses, self._statuses = self._statuses, {}
        predictions, self._predictions = self._predictions, {}
        buckets, self._buckets = self._buckets, [0] * len(self.bounds)
        latency_sum, self._latency_sum = self._latency_sum, 0.0
        for status, count in statuses.items():
            REQUESTS.labels(str(status)).inc(count)
        for model, count in predictions.items():
            PREDICTIONS.labels("http", model).inc(count)
        if any(buckets):
            # the histogram's own per-bucket values, as `observe` updates them
            # (tests/unit/test_serving_metrics.py checks the two agree)
            for value, count in zip(REQUEST_LATENCY._buckets, buckets, strict=True):
                if count:
                    value.inc(count)
            REQUEST_LATENCY._sum.inc(latency_sum)


TALLY = RequestTally()
