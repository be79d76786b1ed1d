"""Concept drift on a model's error stream: River's ADWIN, alerting on increases only.

ADWIN keeps a window of recent errors and drops its older part when the two parts'
means differ significantly. A model that is still learning has a *falling* error,
which ADWIN also reports; only a change to a *higher* error is concept drift worth
an alert. So `ErrorDrift` raises when, past a warm-up, ADWIN detects a change and
the mean error after it exceeds the mean of the dropped part by at least `margin`.

>>> detector = ErrorDrift(warmup=100, margin=0.01)
>>> found = [detector.update(float(i >= 1000 and i % 2 == 0)) for i in range(2000)]
>>> [(d.index, d.error_before, d.error_after) for d in found if d is not None]
[(1024, 0.0, 0.046875)]
"""

from __future__ import annotations

from dataclasses import dataclass

from river import drift

__all__ = ["DriftDetected", "ErrorDrift"]


@dataclass(frozen=True, slots=True)
class DriftDetected:
    """An increase of the error: at the `index`-th scored prediction, from before to after."""

    index: int
    error_before: float
    error_after: float
    width: int  # ADWIN's window after the change: how many recent errors it keeps


class ErrorDrift:
    """ADWIN on a stream of errors (0/1 for classification, absolute for regression).

    Detections in the first `warmup` updates, or where the error did not rise by at
    least `margin`, are not reported (ADWIN still adapts its window to them).
    """

    def __init__(self, delta: float = 0.002, warmup: int = 500, margin: float = 0.01) -> None:
        self.adwin = drift.ADWIN(delta=delta)
        self.warmup = warmup
        self.margin = margin
        self.n = 0
        self.detections = 0  # every change ADWIN saw, increases or not

    def update(self, error: float) -> DriftDetected | None:
        """Add one error; return the drift if this error revealed an increase."""
        self.n += 1
        width_before, mean_before = self.adwin.width, self.adwin.estimation
        self.adwin.update(error)
        if not self.adwin.drift_detected:
            return None
        self.detections += 1
        width_after, mean_after = self.adwin.width, self.adwin.estimation
        dropped = width_before + 1 - width_after
        total_before = mean_before * width_before + error
        before = (total_before - mean_after * width_after) / dropped if dropped > 0 else mean_before
        if self.n <= self.warmup or mean_after - before < self.margin:
            return None
        return DriftDetected(self.n, before, mean_after, int(width_after))

    @property
    def estimation(self) -> float:
        """ADWIN's current mean error over its window."""
        return float(self.adwin.estimation)
