"""One spelling per label: how training learns a label and monitoring compares it.

`True`, `1`, `1.0`, `"1"`, `"true"` are one class; `target` is the form the models
of a task learn, or None when a label cannot be one (`"cat"` for a binary pipeline).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from shared.catalogue import Task

__all__ = ["canonical", "target"]

_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}


def _as_class(value: Any) -> Hashable:
    """One spelling per class: bools, integral floats and numeric strings become ints."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 0
        try:
            number = float(text)
        except ValueError:
            return value
        if math.isfinite(number) and number.is_integer():
            return int(number)
        return number
    return value


def canonical(value: Any, task: Task) -> Any:
    """A label or prediction in its comparable form for `task` (None stays None).

    Binary: the positive class (True, 1, "1", "true") is `True`, its negative `False`,
    anything else is kept as its canonical class. Regression: a float (or None if the
    value is not a finite number).

    >>> canonical("1", "binary"), canonical(0.0, "binary"), canonical(True, "multiclass")
    (True, False, 1)
    >>> canonical("2.5", "regression"), canonical("x", "regression")
    (2.5, None)
    """
    if value is None:
        return None
    if task == "regression":
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return number if math.isfinite(number) else None
    cls = _as_class(value)
    if task == "binary" and not isinstance(cls, bool) and cls in (0, 1):
        return cls == 1
    return cls


def target(value: Any, task: Task) -> Any:
    """The label as `task`'s models learn it: binary a bool, multiclass its canonical
    class, regression a finite float; None if it is none of these.

    >>> target(1, "binary"), target("false", "binary"), target("cat", "binary")
    (True, False, None)
    >>> target("2", "multiclass"), target("7.5", "regression"), target("n/a", "regression")
    (2, 7.5, None)
    """
    y = canonical(value, task)
    if task == "binary" and not isinstance(y, bool):
        return None
    return y
