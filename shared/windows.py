"""Exact rolling aggregates: the arithmetic `shared.features` computes windows with.

Two ways to the same numbers. `reduce(how, values)` reduces one window's values
(a slice of a column: C-level for everything but `std`). A `Running` aggregate keeps a
window's sums as it slides: an entry joins or leaves in constant work, and its
`value()` equals `reduce` over the same values, bit for bit, whatever the order they
came in. Both rest on exact sums: every finite double is a whole multiple of 2**-1074,
so sums kept as ints in such units add and subtract without rounding.

- `sum` is the exact sum rounded once (what `math.fsum` returns); `mean` is that sum
  divided by the count (what `fsum(values) / n` returns);
- `std` is the sample standard deviation (ddof=1, as `river.stats.Var`) from the exact
  variance `(n * sum(x**2) - sum(x)**2) / (n * (n - 1))`, rounded once, then `sqrt`;
- `min` and `max` keep a monotonic deque of `(time, number, value)`: an entry no later
  entry dominates (a later one stays in the window at least as long).

`None` (a missing value) counts for nothing, as SQL's `count(field)`. A sum, mean or
`std` past float's range is `None` too (a feature the model goes without).

>>> run = Running("mean")
>>> for value in (0.1, 0.2, 0.3):
...     run.add(value)
>>> run.remove(0.1)
>>> run.value() == reduce("mean", [0.2, 0.3]) == 0.25
True
>>> top = Running("max")
>>> for t, value in enumerate([3.0, 1.0, 2.0]):
...     top.add(value, t, t)
>>> top.value(), list(top.extremes)
(3.0, [(0, 0, 3.0), (2, 2, 2.0)])
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["Running", "Sums", "reduce"]


def _ratio(numerator: int, denominator: int) -> float | None:
    """`numerator / denominator` rounded once; None past float's range."""
    try:
        return numerator / denominator + 0.0  # + 0.0: no negative zero
    except OverflowError:
        return None


class Sums:
    """Exact count, sum and sum of squares of the values added and not removed.

    The sums are kept in units of `2**-shift`, `shift` the largest any value needed so
    far (2**-1074 at most), so the ints stay as small as the data allows.
    """

    __slots__ = ("count", "shift", "squares", "total")

    def __init__(self) -> None:
        self.count = 0
        self.shift = 0
        self.total = 0  # sum of the values in units of 2**-shift
        self.squares = 0  # sum of their squares in units of 2**(-2 * shift)

    def copy(self) -> Sums:
        other = Sums()
        other.count, other.shift = self.count, self.shift
        other.total, other.squares = self.total, self.squares
        return other

    def _units(self, value: float) -> int:
        numerator, denominator = value.as_integer_ratio()  # the denominator is a power of two
        bits = denominator.bit_length() - 1
        if bits > self.shift:  # finer units: rescale what is summed so far
            more = bits - self.shift
            self.total <<= more
            self.squares <<= 2 * more
            self.shift = bits
        return numerator << (self.shift - bits)

    def add(self, value: float) -> None:
        a = self._units(value)
        self.count += 1
        self.total += a
        self.squares += a * a

    def remove(self, value: float) -> None:
        a = self._units(value)
        self.count -= 1
        self.total -= a
        self.squares -= a * a

    def value(self, how: str) -> float | None:
        """The aggregate `how` (count, sum, mean or std) of these values."""
        n = self.count
        if how == "count":
            return float(n)
        if how == "sum":
            return _ratio(self.total, 1 << self.shift) if n else 0.0
        if n == 0:
            return None
        if how == "mean":
            total = _ratio(self.total, 1 << self.shift)
            return total / n if total is not None else None
        if n == 1:
            return 0.0
        spread = n * self.squares - self.total * self.total  # >= 0, exactly
        variance = _ratio(spread, n * (n - 1) << (2 * self.shift))
        return math.sqrt(variance) if variance is not None else None


class Running:
    """One aggregate over a sliding window: `add` and `remove` values as they enter and
    leave it, `value()` for the aggregate now.

    `min` and `max` also need each entry's `(time, number)` (its place in the window's
    order): `add` must come in that order (`insert` places a late one), and `expire`
    drops what is at or before a time. The sums take values in any order.
    """

    __slots__ = ("extremes", "how", "sums")

    def __init__(self, how: str) -> None:
        self.how = how
        self.sums = Sums()
        self.extremes: deque[tuple[int, int, float]] = deque()

    def add(self, value: float | None, time: int = 0, number: int = 0) -> None:
        """A value joins at the window's end."""
        if value is None:
            return
        if self.how == "max":
            extremes = self.extremes
            while extremes and extremes[-1][2] <= value:
                extremes.pop()
            extremes.append((time, number, value))
        elif self.how == "min":
            extremes = self.extremes
            while extremes and extremes[-1][2] >= value:
                extremes.pop()
            extremes.append((time, number, value))
        else:
            self.sums.add(value)

    def insert(self, value: float | None, time: int, number: int) -> None:
        """A value joins inside the window: after every entry at or before `time`."""
        if value is None:
            return
        if self.how not in ("min", "max"):
            self.sums.add(value)
            return
        wins = _beats(self.how)
        extremes = self.extremes
        at = len(extremes)
        while at and extremes[at - 1][0] > time:
            at -= 1
        if at < len(extremes) and not wins(value, extremes[at][2]):
            return  # a later entry is at least as extreme and stays at least as long
        while at and not wins(extremes[at - 1][2], value):
            del extremes[at - 1]
            at -= 1
        extremes.insert(at, (time, number, value))

    def remove(self, value: float | None, number: int = 0) -> None:
        """A value leaves the window (the oldest entry: its `number` for min and max)."""
        if value is None:
            return
        if self.how in ("min", "max"):
            if self.extremes and self.extremes[0][1] == number:
                self.extremes.popleft()
        else:
            self.sums.remove(value)

    def value(self) -> float | None:
        if self.how in ("min", "max"):
            return self.extremes[0][2] if self.extremes else None
        return self.sums.value(self.how)


def _beats(how: str) -> Callable[[float, float], bool]:
    """Whether a value strictly beats another for `how` (min or max)."""
    return operator.gt if how == "max" else operator.lt


def reduce(how: str, values: Sequence[float | None]) -> float | None:
    """The aggregate `how` of `values` (None ignored): what `Running` gives for them."""
    if how == "count":
        return float(len(values) - values.count(None))
    present = [v for v in values if v is not None] if None in values else values
    if how in ("sum", "mean"):
        if not present:
            return 0.0 if how == "sum" else None
        try:
            total: float | None = math.fsum(present) + 0.0  # type: ignore[arg-type]
        except OverflowError:  # past float's range midway: the exact sum decides
            sums = Sums()
            for value in present:
                sums.add(value)  # type: ignore[arg-type]
            total = sums.value("sum")
        if how == "sum" or total is None:
            return total
        return total / len(present)
    if how in ("min", "max"):
        if not present:
            return None
        return min(present) if how == "min" else max(present)  # type: ignore[type-var]
    sums = Sums()
    for value in present:
        sums.add(value)  # type: ignore[arg-type]
    return sums.value(how)
