"""Prometheus helpers every service may use."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import Histogram

__all__ = ["observe_all"]


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe(a)` for every amount, as one increment per bucket and one of
    the sum instead of one of each per amount (a batch holds thousands).

    prometheus_client has no bulk observe, so this reaches its histogram's buckets; a
    histogram without them (another version, labels not yet chosen) is observed one
    amount at a time. tests/unit/test_prometheus.py checks the two agree.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    if not amounts:
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        if amount == amount:  # observe counts a NaN in no bucket
            counts[bisect_left(bounds, amount)] += 1  # the first with amount <= bound
    total.inc(sum(amounts))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
