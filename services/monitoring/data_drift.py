"""Data drift per feature: a frozen reference window against a sliding current one.

`DataDrift` takes the pipeline's feature vectors one by one (the monitor hands them
over in event-time order) and keeps, for every feature of the pipeline:

- a **reference**: the first `reference_size` vectors. Once it is complete it is
  frozen into bins: a numeric feature (or aggregate) gets up to `bins` bins cut at
  the reference's quantiles, plus one for missing values; a categorical feature
  (its one-hot keys `name=value` grouped by `name`) its `max_categories` most
  frequent values (those with at least `MIN_CATEGORY_SHARE` of the reference), one
  "other" bucket for the rest and one for missing. The raw values are kept only
  until then.
- a **current window**: the latest `window_size` vectors after the reference, as a
  ring of bin codes (one byte per vector) and counts per bin, updated as vectors
  come and go: constant work per vector and feature.
- every `every` vectors, once the current window is full, a **statistic** from
  the two histograms: the population stability index (PSI) for numeric features,
  the Jensen-Shannon distance (natural log) for categorical ones. A feature above
  its threshold is drifting; `update` reports it once per episode, which ends when
  the statistic falls below `rearm` x threshold.

Each evaluation's statistic also goes to the feature's `history` (`Thinned`: at most
`HISTORY_POINTS` points spread over every evaluation so far, each (vectors seen,
value)), which the dashboard draws as a sparkline against the threshold.

`reset_reference()` starts over: the next `reference_size` vectors become the
reference (after a promotion, say). No Kafka, no clock: the same vectors in the
same order give the same results.

>>> import random
>>> from shared.pipeline import DataDriftSettings, Features
>>> settings = DataDriftSettings(reference_size=500, window_size=500, every=100)
>>> detector = DataDrift(Features(numeric=("x", "y"), categorical=("kind",)), settings)
>>> rng = random.Random(7)
>>> found = []
>>> for i in range(3000):
...     vector = {"x": rng.gauss(1.0 if i >= 2000 else 0.0, 1), "y": rng.gauss(0, 1)}
...     vector[f"kind={rng.choice('abc')}"] = 1.0
...     found += detector.update(vector)
>>> [(d.feature, d.statistic, d.drift, d.value > d.threshold) for d in found]
[('x', 'psi', True, True)]
>>> [(row.feature, row.drift, row.reference_n, row.current_n) for row in detector.report()]
[('x', True, 500, 500), ('y', False, 500, 500), ('kind', False, 500, 500)]
>>> x = detector.features[0]
>>> len(x.history.points), x.history.points[0][0]  # evaluations every 100 vectors from 1000
(21, 1000)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.monitoring.history import Thinned
from shared.pipeline import DataDriftSettings, Features

__all__ = ["HISTORY_POINTS", "DataDrift", "FeatureDrift", "js_distance", "psi"]

HISTORY_POINTS = 120  # per feature: its statistic over time, for the dashboard (~130 B each)

PSI_FLOOR = 1e-4  # a bin's share in PSI is at least this: an empty bin would make it infinite
# A category gets a bin of its own only with at least this share of the reference;
# rarer ones go to "other": a long tail of near-empty bins is mostly sampling noise.
MIN_CATEGORY_SHARE = 0.01

Value = float | str | None  # a numeric feature's value, or a categorical one's category


def psi(reference: Sequence[int], current: Sequence[int]) -> float:
    """Population stability index of two histograms over the same bins (counts):
    the sum over bins of (q - p) ln(q / p), each share at least `PSI_FLOOR`.

    >>> round(psi([50, 50], [50, 50]), 6), round(psi([50, 50], [80, 20]), 4)
    (0.0, 0.4159)
    """
    n, m = sum(reference), sum(current)
    total = 0.0
    for r, c in zip(reference, current, strict=True):
        p, q = max(r / n, PSI_FLOOR), max(c / m, PSI_FLOOR)
        total += (q - p) * math.log(q / p)
    return total


def js_distance(reference: Sequence[int], current: Sequence[int]) -> float:
    """Jensen-Shannon distance (the square root of the divergence, natural log) of two
    histograms over the same bins (counts); 0 for equal shares, at most sqrt(ln 2).

    >>> round(js_distance([5, 5], [5, 5]), 6), round(js_distance([1, 0], [0, 1]), 4)
    (0.0, 0.8326)
    """
    n, m = sum(reference), sum(current)
    total = 0.0
    for r, c in zip(reference, current, strict=True):
        p, q = r / n, c / m
        mid = (p + q) / 2
        if p:
            total += p * math.log(p / mid)
        if q:
            total += q * math.log(q / mid)
    return math.sqrt(max(0.0, total / 2))


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature's last comparison: a row of `GET /api/drift`."""

    feature: str
    statistic: str  # "psi" or "js"
    value: float  # at the last evaluation (0.0 before the first)
    threshold: float
    drift: bool
    reference_n: int
    current_n: int


class _Feature:
    """One feature's reference sample (until frozen), bin counts and ring of bin codes."""

    statistic = ""

    def __init__(self, name: str, window_size: int, threshold: float) -> None:
        self.name = name
        self.threshold = threshold
        self.ring = bytearray(window_size)  # the current window's bin codes
        self.history = Thinned(HISTORY_POINTS)  # (vectors seen, value) per evaluation
        self.reset()

    def reset(self) -> None:
        self.sample: list[Value] | None = []  # the reference's values, until frozen
        self.reference: list[int] = []  # counts per bin
        self.current: list[int] = []
        self.value = 0.0
        self.drift = False

    def freeze(self) -> None:
        """Fix the bins from the reference sample, count it, and drop it."""
        sample = self.sample or []
        size = self._fit(sample)
        self.reference, self.current = [0] * size, [0] * size
        for value in sample:
            self.reference[self.code(value)] += 1
        self.sample = None

    def measure(self) -> float:
        return psi(self.reference, self.current)

    def _fit(self, sample: list[Value]) -> int:
        raise NotImplementedError

    def code(self, value: Value) -> int:
        raise NotImplementedError


class _Numeric(_Feature):
    """Bins cut at the reference's quantiles (ties merged), and one for missing."""

    statistic = "psi"

    def __init__(self, name: str, window_size: int, threshold: float, bins: int) -> None:
        super().__init__(name, window_size, threshold)
        self.bins = bins
        self.cuts: list[float] = []

    def _fit(self, sample: list[Value]) -> int:
        values = sorted(v for v in sample if v is not None and not isinstance(v, str))
        if not values:  # missing throughout the reference: one bin, and missing
            self.cuts = []
            return 2
        quantiles = {values[len(values) * i // self.bins] for i in range(1, self.bins)}
        self.cuts = sorted(quantiles)
        return len(self.cuts) + 2

    def code(self, value: Value) -> int:
        if value is None or isinstance(value, str):
            return len(self.cuts) + 1
        return bisect_right(self.cuts, value)


class _Categorical(_Feature):
    """The reference's most frequent categories, "other", and missing."""

    statistic = "js"

    def __init__(self, name: str, window_size: int, threshold: float, keep: int) -> None:
        super().__init__(name, window_size, threshold)
        self.keep = keep
        self.codes: dict[str, int] = {}

    def _fit(self, sample: list[Value]) -> int:
        counts = Counter(v for v in sample if isinstance(v, str))
        enough = MIN_CATEGORY_SHARE * len(sample)
        common = [v for v in counts if counts[v] >= enough]
        kept = sorted(common, key=lambda v: (-counts[v], v))[: self.keep]
        self.codes = {category: code for code, category in enumerate(kept)}
        return len(kept) + 2

    def code(self, value: Value) -> int:
        if not isinstance(value, str):
            return len(self.codes) + 1
        return self.codes.get(value, len(self.codes))

    def measure(self) -> float:
        return js_distance(self.reference, self.current)


class DataDrift:
    """Reference against current window, per feature of a pipeline (see module doc)."""

    def __init__(self, features: Features, settings: DataDriftSettings | None = None) -> None:
        self.settings = s = settings or DataDriftSettings()
        numeric = [*features.numeric, *(a.name for a in features.aggregates)]
        self._numeric: list[_Feature] = [
            _Numeric(name, s.window_size, s.psi_threshold, s.bins) for name in numeric
        ]
        self._categorical: list[_Feature] = [
            _Categorical(name, s.window_size, s.js_threshold, s.max_categories)
            for name in features.categorical
        ]
        self.features = [*self._numeric, *self._categorical]
        self._numeric_names = frozenset(numeric)
        self.reference_n = 0  # vectors in the reference so far
        self.current_n = 0  # vectors in the current window
        self.n = 0  # vectors since the reference was complete
        self.vectors = 0  # vectors given in all (the x of each feature's history)

    def reset_reference(self) -> None:
        """Take the next `reference_size` vectors as the new reference; the current
        window starts over after them and every feature is re-armed."""
        for feature in self.features:
            feature.reset()
        self.reference_n = self.current_n = self.n = 0

    def update(self, vector: Mapping[str, float | None]) -> list[FeatureDrift]:
        """Add the next feature vector; return the features found drifting by it
        (only at an evaluation, and once per episode)."""
        values = self._values(vector)
        settings = self.settings
        self.vectors += 1
        if self.reference_n < settings.reference_size:
            for feature, value in zip(self.features, values, strict=True):
                assert feature.sample is not None
                feature.sample.append(value)
            self.reference_n += 1
            if self.reference_n == settings.reference_size:
                for feature in self.features:
                    feature.freeze()
            return []
        size = settings.window_size
        at, full = self.n % size, self.current_n == size
        for feature, value in zip(self.features, values, strict=True):
            code, current = feature.code(value), feature.current
            if full:
                current[feature.ring[at]] -= 1  # the oldest vector leaves the window
            feature.ring[at] = code
            current[code] += 1
        self.n += 1
        if not full:
            self.current_n += 1
        if self.current_n == size and (self.n - size) % settings.every == 0:
            return self._evaluate()
        return []

    def report(self) -> list[FeatureDrift]:
        """Every feature's last comparison, in pipeline order (numeric, aggregates,
        categorical)."""
        return [self._row(feature) for feature in self.features]

    def _values(self, vector: Mapping[str, float | None]) -> list[Value]:
        values: list[Value] = [vector.get(feature.name) for feature in self._numeric]
        if self._categorical:
            found: dict[str, Value] = {feature.name: None for feature in self._categorical}
            for key in vector:
                name, one_hot, category = key.partition("=")
                if one_hot and name in found and key not in self._numeric_names:
                    found[name] = category
            values += found.values()
        return values

    def _evaluate(self) -> list[FeatureDrift]:
        drifting = []
        rearm = self.settings.rearm
        for feature in self.features:
            feature.value = value = feature.measure()
            feature.history.add((self.vectors, round(value, 6)))
            if not feature.drift and value > feature.threshold:
                feature.drift = True
                drifting.append(self._row(feature))
            elif feature.drift and value < rearm * feature.threshold:
                feature.drift = False
        return drifting

    def _row(self, feature: _Feature) -> FeatureDrift:
        return FeatureDrift(
            feature.name,
            feature.statistic,
            feature.value,
            feature.threshold,
            feature.drift,
            self.reference_n,
            self.current_n,
        )
