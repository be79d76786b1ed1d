"""Prometheus metrics of the serving service (names prefixed `driftline_serving_`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "INVALID_MESSAGES",
    "MODEL_LOAD_ERRORS",
    "MODEL_SWAPS",
    "MODEL_VERSION",
    "PREDICTIONS",
    "PUBLISH_ERRORS",
    "REQUESTS",
    "REQUEST_LATENCY",
    "STREAM_LAG",
    "STREAM_SKIPPED",
]

REQUESTS = Counter(
    "driftline_serving_requests_total", "POST /predict requests by HTTP status", ["status"]
)
REQUEST_LATENCY = Histogram(
    "driftline_serving_request_latency_seconds",
    "POST /predict handling time",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PREDICTIONS = Counter(
    "driftline_serving_predictions_total",
    "Predictions made, by source (http, stream) and model",
    ["source", "model"],
)
PUBLISH_ERRORS = Counter(
    "driftline_serving_publish_errors_total",
    "Predictions that could not be published to the predictions topic",
    ["source", "reason"],
)
MODEL_SWAPS = Counter(
    "driftline_serving_model_swaps_total",
    "Model versions swapped in (first load included)",
    ["model"],
)
MODEL_LOAD_ERRORS = Counter(
    "driftline_serving_model_load_errors_total", "Model versions that failed to load", ["model"]
)
MODEL_VERSION = Gauge(
    "driftline_serving_model_version", "The version being served (numeric versions)", ["model"]
)
STREAM_SKIPPED = Counter(
    "driftline_serving_stream_skipped_total",
    "Messages on the features topic that were not scored, by reason",
    ["reason"],
)
STREAM_LAG = Gauge(
    "driftline_serving_stream_lag", "Feature vectors not yet scored", ["topic", "partition"]
)
INVALID_MESSAGES = Counter(
    "driftline_serving_invalid_messages_total",
    "Messages consumed that were not valid (logged and skipped)",
    ["topic"],
)
