"""Bounded histories for the dashboard: a series that spans the whole stream in at
most `size` points, and the marks on it (version changes, promotions).

`Thinned` keeps every `every`-th value added; when it holds `size` points it drops
every second one and keeps values half as often from then on, so the points stay
evenly spread from the first value to the latest, and memory stays at `size` points
whatever the stream's length (the accuracy history of `Monitor` does the same).

>>> h = Thinned(size=4)
>>> for i in range(10):
...     h.add((i, float(i)))
>>> h.points, h.every
([(3, 3.0), (7, 7.0)], 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Promotion", "Thinned", "VersionMark"]


@dataclass
class Thinned:
    """At most `size` points spread evenly over everything added (see module doc)."""

    size: int
    every: int = 1
    seen: int = 0  # values added so far
    points: list[Any] = field(default_factory=list)
    _kept: list[int] = field(default_factory=list, repr=False)  # each point's ordinal

    def add(self, point: Any) -> None:
        self.seen += 1
        if self.seen % self.every:
            return
        self.points.append(point)
        self._kept.append(self.seen)
        if len(self.points) >= self.size:  # full: every second point goes
            self.every *= 2
            kept = [(o, p) for o, p in zip(self._kept, self.points, strict=True)]
            kept = [(o, p) for o, p in kept if o % self.every == 0]
            self._kept = [o for o, _ in kept]
            self.points = [p for _, p in kept]


@dataclass(frozen=True, slots=True)
class VersionMark:
    """A version first scored in a (model, source) series: after `n` scored, at
    `event_time` (ISO 8601)."""

    version: str
    n: int
    event_time: str


@dataclass(frozen=True, slots=True)
class Promotion:
    """The model a served source (`stream`, `http`) predicts with changed: from
    `from_model` to `to_model` (at `version`), from `event_time` on."""

    source: str
    from_model: str
    to_model: str
    version: str
    event_time: str
