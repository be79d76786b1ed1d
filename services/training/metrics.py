"""Prometheus metrics of the training service (names prefixed `driftline_training_`, and
`driftline_registry_rejected_total`: checkpoints refused, `shared.signing`).

Counts kept by the learner itself (learned, scored, correct, expired, duplicates,
late) live in its checkpoint, so they are read from it at scrape time by
`LearnerCollector` and continue across restarts; the others count this process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.training.learner import OnlineLearner
from shared.signing import REJECTED as REGISTRY_REJECTED

__all__ = [
    "BAD_MESSAGES",
    "BATCH_SECONDS",
    "CHECKPOINTS",
    "CHECKPOINT_BYTES",
    "CONSUMED",
    "CONSUMER_LAG",
    "HELD_JUMPS",
    "LATENCY",
    "LEARNER",
    "PREDICTIONS",
    "REGISTRY_REJECTED",
    "VERSIONS_RETIRED",
    "LearnerCollector",
]

CONSUMED = Counter(
    "driftline_training_consumed_total", "Valid records consumed", ["kind"]
)  # kind: features | labels
BAD_MESSAGES = Counter(
    "driftline_training_bad_messages_total", "Invalid records skipped", ["topic", "code"]
)
PREDICTIONS = Counter(
    "driftline_training_predictions_published_total", "Learner predictions published", ["model"]
)
CHECKPOINTS = Counter("driftline_training_checkpoints_total", "Checkpoints written")
CHECKPOINT_BYTES = Gauge(
    "driftline_training_checkpoint_bytes",
    "The last checkpoint written: state (models, buffers), records (the per-event records"
    " it added), held (every entry of its records hash)",
    ["part"],
)
VERSIONS_RETIRED = Counter(
    "driftline_training_versions_retired_total",
    "Registry versions deleted by retention (the newest REGISTRY_KEEP and pinned ones stay)",
    ["model"],
)
HELD_JUMPS = Gauge(
    "driftline_training_held_jumps",
    "Lone items dated more than MAX_JUMP_S ahead of their partition, held without"
    " moving the clock (since the state began)",
)
CONSUMER_LAG = Gauge(
    "driftline_training_consumer_lag", "Messages not yet consumed", ["topic", "partition"]
)
LATENCY = Histogram(
    "driftline_training_latency_seconds",
    "From a record's broker timestamp to the end of the batch that consumed it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SECONDS = Histogram(
    "driftline_training_batch_seconds", "Time to add, advance and publish one consumed batch"
)


class LearnerCollector(Collector):
    """The learner's own counters and buffers, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.source: Callable[[], OnlineLearner | None] = lambda: None

    def collect(self) -> Iterator[Metric]:
        learner = self.source()
        if learner is None:
            return
        per_model = {
            "learned": "Events learned (test-then-train)",
            "scored": "Predictions scored against their label",
            "correct": "Scored predictions that were right",
        }
        for what, doc in per_model.items():
            family = CounterMetricFamily(f"driftline_training_{what}", doc, labels=["model"])
            for name, score in learner.scores.items():
                family.add_metric([name], getattr(score, f"n_{what}"))
            yield family
        accuracy = GaugeMetricFamily(
            "driftline_training_accuracy", "Progressive accuracy", labels=["model"]
        )
        for name, score in learner.scores.items():
            accuracy.add_metric([name], score.accuracy)
        yield accuracy
        expired = CounterMetricFamily(
            "driftline_training_expired",
            "Items dropped after waiting longer than the label TTL (event time)",
            labels=["kind"],
        )
        expired.add_metric(["features"], learner.expired_features)
        expired.add_metric(["labels"], learner.expired_labels)
        yield expired
        pending = GaugeMetricFamily(
            "driftline_training_pending", "Items waiting for their other half", labels=["kind"]
        )
        pending.add_metric(["features"], learner.awaiting_labels)
        pending.add_metric(["labels"], learner.awaiting_features)
        yield pending
        remembered = GaugeMetricFamily(
            "driftline_training_remembered",
            "Event ids remembered for de-duplication (while they wait and a label TTL after)",
            labels=["kind"],
        )
        remembered.add_metric(["features"], learner.remembered[0])
        remembered.add_metric(["labels"], learner.remembered[1])
        yield remembered
        yield GaugeMetricFamily(
            "driftline_training_buffered",
            "Items consumed but beyond the watermark",
            value=learner.buffered,
        )
        yield CounterMetricFamily(
            "driftline_training_duplicates",
            "Features or labels seen twice",
            value=learner.duplicates,
        )
        yield CounterMetricFamily(
            "driftline_training_late", "Items that arrived behind the watermark", value=learner.late
        )
        yield CounterMetricFamily(
            "driftline_training_model_errors",
            "Predictions or learning steps a model raised on (skipped)",
            value=learner.model_errors,
        )


LEARNER = LearnerCollector()
REGISTRY.register(LEARNER)
