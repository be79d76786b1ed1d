"""Prometheus metrics of the ingestion service (names prefixed `driftline_`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ACCEPTED", "CONSUMER_LAG", "DEAD_LETTERED", "DUPLICATES", "HTTP_LATENCY", "LATENCY"]

ACCEPTED = Counter("driftline_ingestion_accepted_total", "Valid messages forwarded", ["kind"])
DEAD_LETTERED = Counter(
    "driftline_ingestion_dead_lettered_total",
    "Messages sent to the dead-letter topic (duplicates included)",
    ["kind", "code"],
)
DUPLICATES = Counter(
    "driftline_ingestion_duplicates_total", "Messages whose event_id was already ingested", ["kind"]
)
LATENCY = Histogram(
    "driftline_ingestion_latency_seconds",
    "From a raw message's broker timestamp to its output being acknowledged",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_LATENCY = Histogram("driftline_ingestion_http_latency_seconds", "POST handling time", ["path"])
CONSUMER_LAG = Gauge(
    "driftline_ingestion_consumer_lag", "Messages not yet consumed", ["topic", "partition"]
)
