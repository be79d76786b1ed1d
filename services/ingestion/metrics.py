"""Prometheus metrics of the ingestion service (names prefixed `driftline_`)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from services.ingestion.handlers import Output
from shared.prometheus import observe_all

__all__ = [
    "ACCEPTED",
    "CONSUMER_LAG",
    "DEAD_LETTERED",
    "DEDUP_RECORDS",
    "DUPLICATES",
    "HTTP_LATENCY",
    "LATENCY",
    "count_outputs",
]

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
DEDUP_RECORDS = Gauge(
    "driftline_ingestion_dedup_records",
    "Ids the duplicate window holds (events and labels; about 40 bytes each plus the entity)",
)
CONSUMER_LAG = Gauge(
    "driftline_ingestion_consumer_lag", "Messages not yet consumed", ["topic", "partition"]
)


def count_outputs(outputs: Sequence[Output]) -> None:
    """A batch's acknowledged outputs on the counters, one increment per label set,
    and each one's latency from its raw record's broker timestamp."""
    accepted: Tally[str] = Tally()
    dead_lettered: Tally[tuple[str, str]] = Tally()
    duplicates: Tally[str] = Tally()
    latencies: list[float] = []
    now_ms = time.time() * 1000
    for out in outputs:
        if out.outcome == "accepted":
            accepted[out.kind] += 1
        else:
            dead_lettered[out.kind, out.code or "unknown"] += 1
            if out.outcome == "duplicate":
                duplicates[out.kind] += 1
        if out.timestamp_ms is not None:
            latencies.append(max(0.0, (now_ms - out.timestamp_ms) / 1000))
    for kind, n in accepted.items():
        ACCEPTED.labels(kind).inc(n)
    for (kind, code), n in dead_lettered.items():
        DEAD_LETTERED.labels(kind, code).inc(n)
    for kind, n in duplicates.items():
        DUPLICATES.labels(kind).inc(n)
    observe_all(LATENCY, latencies)
