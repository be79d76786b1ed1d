"""observe_all: a batch observed at once reads exactly as the same amounts one by one."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from services.ingestion.metrics import LATENCY
from shared.prometheus import observe_all


def _samples(histogram: Histogram) -> tuple[dict[str, float], float]:
    """(every bucket and the count, the sum)."""
    samples = {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }
    (total,) = [samples.pop(name) for name in list(samples) if "_sum" in name]
    return samples, total


def _assert_same(histogram: Histogram, expected: Histogram) -> None:
    counts, total = _samples(histogram)
    expected_counts, expected_total = _samples(expected)
    assert counts == expected_counts
    assert total == pytest.approx(expected_total, rel=1e-12)  # added in another order


def _pair(**labels: str) -> tuple[Histogram, Histogram]:
    made = []
    for _ in range(2):
        histogram = Histogram(
            "t_seconds",
            "t",
            list(labels),
            buckets=LATENCY._upper_bounds[:-1],
            registry=CollectorRegistry(),
        )
        made.append(histogram.labels(**labels) if labels else histogram)
    return made[0], made[1]


@pytest.mark.parametrize("labels", [{}, {"kind": "event"}])
def test_observe_all_matches_observing_one_at_a_time(labels: dict[str, str]) -> None:
    rng = random.Random(3)
    one_by_one, at_once = _pair(**labels)
    bounds = LATENCY._upper_bounds[:-1]
    for _ in range(5):
        amounts = [rng.choice([rng.uniform(0, 40), rng.choice(bounds), 0.0]) for _ in range(500)]
        for amount in amounts:
            one_by_one.observe(amount)
        observe_all(at_once, amounts)
        _assert_same(at_once, one_by_one)
    observe_all(at_once, [])
    _assert_same(at_once, one_by_one)


def test_observe_all_on_a_histogram_still_waiting_for_labels_fails_like_observe() -> None:
    histogram = Histogram("t_seconds", "t", ["kind"], registry=CollectorRegistry())
    with pytest.raises(ValueError):
        histogram.observe(1.0)
    with pytest.raises(ValueError):
        observe_all(histogram, [1.0])
