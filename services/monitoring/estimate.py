"""Accuracy without labels: what a classifier's own probabilities say it gets right.

For a calibrated classifier the chance that a prediction is right is the probability
it gave the class it predicted, so the mean of those over recent predictions estimates
their accuracy before any label has come (confidence-based performance estimation, as
NannyML's CBPE). `Confidence` keeps that mean over the latest `size` predictions, as
they arrive: a drop shows while their labels are still on their way. The same mean over
the predictions that have been scored, beside their realised accuracy, tells how far to
trust it (`calibration_gap`: realised minus estimated).

Where it misleads: a model that is not calibrated (trees and forests vote, naive Bayes
is overconfident, a model early in its learning is anything), and concept drift itself,
which changes what the right answer is without making the model less sure: the
estimate catches drift in the inputs (covariate shift) that pushes predictions
toward the decision boundary, not a changed relation between inputs and label. Sums are
kept in integer millionths, so adding and removing leave no rounding behind.

>>> c = Confidence(size=3)
>>> for p in (0.9, 0.8, 0.7, 0.6):
...     c.add(p)
>>> round(c.value(), 6), c.n
(0.7, 3)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["Confidence", "confidence_of"]

_SCALE = 1_000_000


class Confidence:
    """The mean confidence of the latest `size` predictions."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._ring: deque[int] = deque()
        self._sum = 0

    @property
    def n(self) -> int:
        return len(self._ring)

    def add(self, confidence: float) -> None:
        units = round(min(max(confidence, 0.0), 1.0) * _SCALE)
        self._ring.append(units)
        self._sum += units
        if len(self._ring) > self.size:
            self._sum -= self._ring.popleft()

    def value(self) -> float | None:
        return self._sum / (_SCALE * len(self._ring)) if self._ring else None


def confidence_of(y_pred: Any, proba: Mapping[Any, float] | None) -> float | None:
    """The probability the model gave the class it predicted (its canonical form is a
    key of `proba`), else the largest; None without probabilities or a prediction.

    >>> confidence_of(True, {True: 0.8, False: 0.2}), confidence_of("b", {"a": 0.3, "b": 0.7})
    (0.8, 0.7)
    """
    if not proba or y_pred is None:
        return None
    p = proba.get(y_pred)
    return float(p) if p is not None else float(max(proba.values()))
