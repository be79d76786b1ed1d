"""Prometheus metrics of the features service (names prefixed `driftline_features_`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "DUPLICATES",
    "EVENTS_PROCESSED",
    "GAP_RECORDS",
    "HELD_JUMPS",
    "INVALID",
    "LATENCY",
    "REDELIVERED",
    "REDIS_ERRORS",
    "REDIS_WRITES",
    "STALE_WRITES",
    "VECTORS_PUBLISHED",
]

EVENTS_PROCESSED = Counter(
    "driftline_features_events_processed_total", "Valid events turned into feature vectors"
)
DUPLICATES = Counter(
    "driftline_features_duplicate_events_total",
    "Events whose event_id was already in their entity's state (redeliveries)",
)
INVALID = Counter(
    "driftline_features_invalid_events_total",
    "Messages on `events` that are not an Event",
    ["code"],
)
VECTORS_PUBLISHED = Counter(
    "driftline_features_vectors_published_total", "FeatureVector messages sent to `features`"
)
GAP_RECORDS = Counter(
    "driftline_features_gap_records_total",
    "Records faust's fetcher skipped that the agent read back directly",
)
HELD_JUMPS = Gauge(
    "driftline_features_held_jumps",
    "Events far ahead of their partition kept out of their entity's state and row (since start)",
)
REDELIVERED = Counter(
    "driftline_features_redelivered_records_total",
    "Records faust delivered again (after a restart, or twice in a batch), so skipped",
)
ENTITIES = Gauge("driftline_features_entities", "Entities whose window state this worker keeps")
ENTITIES_FORGOTTEN = Counter(
    "driftline_features_entities_forgotten_total",
    "Entity states deleted once their newest entry left every window (plus lateness)",
)
REDIS_WRITES = Counter("driftline_features_redis_writes_total", "Entity rows written to Redis")
STALE_WRITES = Counter(
    "driftline_features_stale_writes_skipped_total",
    "Entity rows not written because Redis holds a newer event",
)
REDIS_ERRORS = Counter(
    "driftline_features_redis_errors_total", "Failed Redis batch writes (each is retried)"
)
LATENCY = Histogram(
    "driftline_features_latency_seconds",
    "From an event's Kafka timestamp to its vector acknowledged by the broker",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
