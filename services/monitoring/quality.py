"""Live quality of predictions against labels, with River's own metrics.

`shared.labels.canonical` makes labels and predictions comparable however they were
written (`True`, `1`, `1.0`, `"1"`, `"true"` are one class); `Quality` keeps one set of
metrics, cumulative or over a recent window (`river.utils.Rolling`). Metrics are
River's, so they equal what River computes on the same pairs.

>>> q = Quality("binary")
>>> q.update(True, "1", {"True": 0.8, "False": 0.2})
>>> q.update(0, 1, None)
>>> q.n, q.get()["accuracy"], round(q.get()["log_loss"], 4)
(2, 0.5, 0.2231)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from river import metrics, stats, utils

from shared.catalogue import Task
from shared.labels import canonical

__all__ = ["Quality", "canonical_proba", "error_of", "log_loss_term"]

_EPS = 1e-15  # River clamps probabilities into [1e-15, 1 - 1e-15] before the log


def canonical_proba(proba: Mapping[str, float] | None, task: Task) -> dict[Any, float] | None:
    """Class probabilities keyed by canonical class, or None if there are none."""
    if not proba or task == "regression":
        return None
    return {canonical(key, task): float(p) for key, p in proba.items()}


def error_of(y_true: Any, y_pred: Any, task: Task) -> float:
    """The drift detectors' input: 0/1 error, or the absolute error for regression."""
    if task == "regression":
        return abs(float(y_true) - float(y_pred))
    return float(y_true != y_pred)


def log_loss_term(y_true: Any, proba: dict[Any, float] | None, task: Task) -> float | None:
    """One pair's term of River's `LogLoss` (binary) or `CrossEntropy` (multiclass),
    computed as their `_eval` computes it; None if there is no probability to score.

    >>> round(log_loss_term(True, {True: 0.8, False: 0.2}, "binary"), 6)
    0.223144
    >>> log_loss_term(True, {"cat": 1.0}, "binary") is None
    True
    """
    if not proba or task == "regression":
        return None
    if task == "binary":
        if True in proba:
            p_true = proba[True]
        elif False in proba:
            p_true = 1.0 - proba[False]
        else:
            return None
        p_true = max(min(p_true, 1 - _EPS), _EPS)
        return -math.log(p_true) if y_true is True else -math.log(1 - p_true)
    total = 0.0
    for label, p in proba.items():
        if y_true == label:
            total += math.log(max(min(p, 1 - _EPS), _EPS))
    return -total


def _classification(task: Task, cm: metrics.ConfusionMatrix) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 read from one shared confusion matrix.

    River's metrics are views of their confusion matrix (`cm=`): sharing one is
    exact, and a pair is counted once instead of once per metric. For binary, the
    matrix holds the canonical classes as they are, not `== True` as a
    `BinaryMetric` would store them: precision, recall and F1 only read the
    positive class's row, column and cell, which are the same either way.
    """
    if task == "binary":
        return {
            "accuracy": metrics.Accuracy(cm=cm),
            "precision": metrics.Precision(cm=cm),
            "recall": metrics.Recall(cm=cm),
            "f1": metrics.F1(cm=cm),
        }
    return {
        "accuracy": metrics.Accuracy(cm=cm),
        "precision": metrics.MacroPrecision(cm=cm),
        "recall": metrics.MacroRecall(cm=cm),
        "f1": metrics.MacroF1(cm=cm),
    }


def _make(cls: type, window: int | None) -> Any:
    return cls() if window is None else utils.Rolling(cls, window_size=window)


class Quality:
    """River metrics over (label, prediction) pairs, cumulative or over the last `window`.

    Classification: accuracy, precision, recall, F1 (binary with positive class True,
    macro-averaged for multiclass), and log loss over the pairs that came with
    probabilities (`log_loss` is None until one did). Regression: MAE and RMSE.
    A window is kept as `river.utils.Rolling` keeps one: the oldest pair is reverted
    when a new one would overflow it.
    """

    def __init__(self, task: Task, window: int | None = None) -> None:
        self.task = task
        self.n = 0  # pairs scored
        self.n_proba = 0  # of which with probabilities (log loss)
        self._cm: metrics.ConfusionMatrix | None = None
        self._window: deque[tuple[Any, Any]] | None = None
        self._loss_window: deque[float] | None = None
        if window is not None:
            self._window = deque(maxlen=window)
            self._loss_window = deque(maxlen=window)
        # log loss: the mean of the terms, as River's LogLoss/CrossEntropy keep it
        self._log_loss: stats.Mean | None = None
        if task == "regression":
            self._metrics: dict[str, Any] = {
                "mae": _make(metrics.MAE, window),
                "rmse": _make(metrics.RMSE, window),
            }
        else:
            self._cm = metrics.ConfusionMatrix()
            self._metrics = _classification(task, self._cm)
            self._log_loss = stats.Mean()

    def update(self, y_true: Any, y_pred: Any, proba: Mapping[str, float] | None = None) -> None:
        """Score one pair, given raw (as sent) or canonical values; y_pred must not be None."""
        y_true, y_pred = canonical(y_true, self.task), canonical(y_pred, self.task)
        self.update_canonical(y_true, y_pred, canonical_proba(proba, self.task))

    def update_canonical(self, y_true: Any, y_pred: Any, proba: dict[Any, float] | None) -> None:
        """Score one pair already in canonical form (see `canonical`)."""
        self.update_scored(y_true, y_pred, log_loss_term(y_true, proba, self.task))

    def update_scored(self, y_true: Any, y_pred: Any, loss: float | None) -> None:
        """Score one canonical pair whose log loss term (`log_loss_term`) is known:
        several `Quality`s of one prediction share the work."""
        self.n += 1
        cm = self._cm
        if cm is None:  # regression
            for metric in self._metrics.values():
                metric.update(y_true, y_pred)
            return
        window = self._window
        if window is not None:
            if len(window) == window.maxlen:
                cm.revert(*window[0])
            window.append((y_true, y_pred))
        cm.update(y_true, y_pred)
        if loss is None or self._log_loss is None:
            return
        losses = self._loss_window
        if losses is not None:
            if len(losses) == losses.maxlen:
                self._log_loss.revert(losses[0])
            losses.append(loss)
        self._log_loss.update(loss)
        self.n_proba += 1

    def get(self) -> dict[str, float | None]:
        """Every metric's current value (None where nothing was scored yet)."""
        if self.n == 0:
            values: dict[str, float | None] = dict.fromkeys(self._metrics)
        else:
            values = {name: float(metric.get()) for name, metric in self._metrics.items()}
        if self._log_loss is not None:
            values["log_loss"] = float(self._log_loss.get()) if self.n_proba else None
        return values

    @property
    def primary(self) -> str:
        """The metric the dashboard plots: accuracy, or MAE for regression."""
        return "mae" if self.task == "regression" else "accuracy"
