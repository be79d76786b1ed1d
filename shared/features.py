"""Feature computation from the pipeline config: one pure function, used by features AND serving.

`FeatureComputer.compute(event, state)` returns the feature vector *as of* `event`
(the event itself included in its windows) and the entity's new window state. It
never mutates `state` and reads no clock, so the features service and serving get
the same vector from the same event and state (train/serve parity).

The vector has, in pipeline-file order:

- each `numeric` feature as a float: a bool is 1.0/0.0, a number is itself, a string
  that parses as a finite number is that number; missing, null or anything else is
  `None`. With only numeric features the vector equals the event's values.
- each `categorical` feature one-hot and sparse: only the present value's key
  `f"{name}={value}"` -> 1.0 (bools written `true`/`false`); nothing when missing.
- each aggregate over the entity's events in the event-time window
  `(event_time - window, event_time]`, over the events whose `field` is numeric
  (same parsing as above; others are ignored, like SQL's `count(field)`):
  `count` and `sum` (0.0 on no values), `mean`, `min`, `max` (`None` on no values)
  and `std`, the *sample* standard deviation (ddof=1, as `river.stats.Var()`;
  0.0 for one value, `None` for none). Sums are exact (`math.fsum`), so a result
  does not depend on the order events arrived in.

State (`EntityState`, JSON-able) is columnar and sorted by event time: `{"v": 2,
"t": [time_us, ...], "id": [event_id, ...], "n": [arrival number, ...], "next": int,
"x": {field: [value or None, ...]}}`, so a window is two binary searches and a slice,
and adding an event copies lists (no per-entry Python work). Entries are kept while
`time > latest - largest_window - allowed_lateness` (and at most `max_entries`, the
oldest in event time going first). An event whose `event_id` is already in the state
leaves it unchanged, and its vector is recomputed from the entries that had arrived up
to it (by arrival number), so a redelivered event yields exactly the vector it first
did. An out-of-order event uses the entries with `time <= its time`; that is exact
when it is at most `allowed_lateness` behind the entity's latest event (older events
are still answered, from the entries kept, but not stored). A version-1 state (a list
of entries in arrival order) is read as the same entries.
Events without `entity_id` share the `"global"` state (the caller
keys states by `Event.key()`).

>>> from datetime import datetime, timezone
>>> from shared.messages import Event
>>> from shared.pipeline import PipelineConfig
>>> pipeline = PipelineConfig.model_validate({
...     "name": "shop", "task": "binary", "models": [{"name": "logreg"}],
...     "features": {"numeric": ["amount"], "categorical": ["country"],
...                  "aggregates": [{"field": "amount", "how": "sum", "window": "1h"}]},
... })
>>> computer = FeatureComputer(pipeline)
>>> def event(i, minute, amount):
...     time = datetime(2024, 5, 1, 12, minute, tzinfo=timezone.utc)
...     return Event(event_id=f"e{i}", event_time=time, entity_id="c7",
...                  features={"amount": amount, "country": "NL"})
>>> vector, state = computer.compute(event(1, 0, 40), None)
>>> vector
{'amount': 40.0, 'country=NL': 1.0, 'amount_sum_1h': 40.0}
>>> vector, state = computer.compute(event(2, 30, 2.5), state)
>>> vector["amount_sum_1h"], computer.compute(event(2, 30, 2.5), state)[1] is state
(42.5, True)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from math import isfinite
from typing import Any

from shared.messages import GLOBAL_KEY, Event
from shared.pipeline import Aggregate, PipelineConfig

__all__ = [
    "STATE_VERSION",
    "EntityState",
    "FeatureComputer",
    "category_key",
    "empty_state",
    "time_us",
    "to_float",
]

EntityState = dict[str, Any]
"""JSON-able per-entity window state, in columns sorted by event time (see the module doc)."""

STATE_VERSION = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def empty_state() -> EntityState:
    """The state of an entity never seen."""
    return {"v": STATE_VERSION, "t": [], "id": [], "n": [], "next": 0, "x": {}}


def to_float(value: object) -> float | None:
    """An event value as a model-ready float, or None (missing, non-numeric, not finite).

    >>> to_float(True), to_float(3), to_float(" 2.5 "), to_float("abc"), to_float(None)
    (1.0, 3.0, 2.5, None, None)
    >>> to_float(10**400), to_float(float("nan"))
    (None, None)
    """
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # not a number; an int past float's range
        return None
    return number if math.isfinite(number) else None


def _to_float(value: object) -> float | None:
    """`to_float`, a float (the usual value) first."""
    if type(value) is float:
        return value if isfinite(value) else None
    return to_float(value)


def category_key(name: str, value: object) -> str | None:
    """The one-hot key of a categorical value, or None when there is no value.

    >>> category_key("country", "NL"), category_key("vip", True), category_key("x", None)
    ('country=NL', 'vip=true', None)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return f"{name}={'true' if value else 'false'}"
    return f"{name}={value}"


def time_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch (exact, JSON-able)."""
    return (moment - _EPOCH) // _MICROSECOND


def _std(values: Sequence[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return 0.0
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


_REDUCERS: dict[str, Callable[[Sequence[float]], float | None]] = {
    "count": lambda values: float(len(values)),
    "sum": lambda values: math.fsum(values),
    "mean": lambda values: math.fsum(values) / len(values) if values else None,
    "min": lambda values: min(values) if values else None,
    "max": lambda values: max(values) if values else None,
    "std": _std,
}


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _sum_over_gaps(values: list[float | None]) -> float:
    try:
        return math.fsum(values)  # type: ignore[arg-type]  # a None raises TypeError
    except TypeError:
        return math.fsum(_present(values))


def _mean_over_gaps(values: list[float | None]) -> float | None:
    if not values:
        return None
    try:
        return math.fsum(values) / len(values)  # type: ignore[arg-type]
    except TypeError:
        present = _present(values)
        return math.fsum(present) / len(present) if present else None


def _extreme_over_gaps(
    pick: Callable[[list[float | None]], float | None],
) -> Callable[[list[float | None]], float | None]:
    def reduce(values: list[float | None]) -> float | None:
        try:  # a lone None is its own answer; a None beside anything raises TypeError
            return pick(values) if values else None
        except TypeError:
            present = _present(values)
            return pick(present) if present else None  # type: ignore[arg-type]

    return reduce


# `_REDUCERS[how]` of the values that are not None, taking a list that may hold None
# (a missing value) without looking for one first when it can tell otherwise.
_OVER_GAPS: dict[str, Callable[[list[float | None]], float | None]] = {
    "count": lambda values: float(len(values) - values.count(None)),
    "sum": _sum_over_gaps,
    "mean": _mean_over_gaps,
    "min": _extreme_over_gaps(min),  # type: ignore[arg-type]
    "max": _extreme_over_gaps(max),  # type: ignore[arg-type]
    "std": lambda values: _std(_present(values) if None in values else values),  # type: ignore[arg-type]
}


class FeatureComputer:
    """Computes point-in-time feature vectors and per-entity window state.

    `allowed_lateness` keeps entries that long past the largest window, so events
    up to that much behind their entity's latest one still get exact windows;
    `max_entries` bounds one entity's state (the oldest entries go first).
    """

    def __init__(
        self,
        pipeline: PipelineConfig,
        *,
        allowed_lateness: timedelta = timedelta(0),
        max_entries: int = 10_000,
    ) -> None:
        if allowed_lateness < timedelta(0):
            raise ValueError("allowed_lateness must not be negative")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        features = pipeline.features
        self.version: str = pipeline.feature_set_version()
        self.numeric: tuple[str, ...] = features.numeric
        self.categorical: tuple[str, ...] = features.categorical
        self.aggregates: tuple[Aggregate, ...] = features.aggregates
        self.aggregate_names: tuple[str, ...] = tuple(a.name for a in self.aggregates)
        self._fields = sorted({a.field for a in self.aggregates})
        self._windows_us = [a.window // _MICROSECOND for a in self.aggregates]
        # Per aggregate: (feature name, field, window in microseconds, reducer).
        self._plan = [
            (a.name, a.field, w, _OVER_GAPS[a.how])
            for a, w in zip(self.aggregates, self._windows_us, strict=True)
        ]
        largest = max(self._windows_us, default=0)
        self._retention_us = largest + allowed_lateness // _MICROSECOND
        self._max_entries = max_entries

    @property
    def retention(self) -> timedelta:
        """How far behind the latest event an entry still counts: the largest window
        plus the allowed lateness (zero without aggregates: no state is kept then)."""
        return timedelta(microseconds=self._retention_us)

    @staticmethod
    def newest(state: EntityState) -> int | None:
        """The event time (microseconds) of the newest entry `state` holds, None if none."""
        times = _columns(state)["t"]
        return times[-1] if times else None

    def names(self) -> list[str]:
        """The features present in every vector, in order: numeric, then aggregates.

        Categorical features add one sparse key `f"{name}={value}"` each (when the
        event has a value), between the two groups.
        """
        return [*self.numeric, *(a.name for a in self.aggregates)]

    @staticmethod
    def entity_of(event: Event) -> str:
        """The key an event's state is kept under: its entity id, or `"global"`."""
        return event.entity_id if event.entity_id is not None else GLOBAL_KEY

    def compute(
        self, event: Event, state: EntityState | None
    ) -> tuple[dict[str, float | None], EntityState]:
        """The vector as of `event` (included in its windows) and the entity's new state."""
        features = event.features
        vector: dict[str, float | None] = {}
        for name in self.numeric:
            vector[name] = _to_float(features.get(name))
        for name in self.categorical:
            key = category_key(name, features.get(name))
            if key is not None:
                vector[key] = 1.0
        if not self.aggregates:
            return vector, state if state is not None else empty_state()

        state = state if state is not None else empty_state()
        columns = _columns(state)
        now = time_us(event.event_time)
        if event.event_id in columns["id"]:  # a redelivery: same vector, same state
            return self._windows(vector, _arrived_by(columns, event.event_id), now), state
        return vector, self._add(vector, columns, now, event, state)

    def seen(self, state: EntityState | None, event_id: str) -> bool:
        """Whether `state` holds `event_id` (its event was handled before)."""
        return state is not None and event_id in _columns(state)["id"]

    def _windows(
        self, vector: dict[str, float | None], columns: EntityState, now: int
    ) -> dict[str, float | None]:
        times = columns["t"]
        hi = bisect_right(times, now)
        for name, field, window, reduce in self._plan:
            lo = bisect_right(times, now - window, 0, hi)
            column = columns["x"].get(field)
            vector[name] = reduce(column[lo:hi] if column is not None else [])
        return vector

    def _add(
        self,
        vector: dict[str, float | None],
        columns: EntityState,
        now: int,
        event: Event,
        before: EntityState,
    ) -> EntityState:
        """Put the windows of `event` into `vector`; the state with `event` inserted in time
        order (after equal times) and the entries past retention or the bound dropped, or
        `before` if the new event itself is not kept (too late: answered, not stored).

        The windows are over the entries with the new one in, before any are dropped, as
        if the new columns were built first; only the columns that are kept are copied.
        """
        times = columns["t"]
        size = len(times)
        at = bisect_right(times, now)
        features = event.features
        x = columns["x"]
        news = {field: _to_float(features.get(field)) for field in self._fields}
        for name, field, window, reduce in self._plan:
            start = now - window
            if start >= now:
                values: list[Any] = []
            else:
                lo = bisect_right(times, start, 0, at)
                column = x.get(field) or [None] * size
                values = column[lo:at]
                values.append(news[field])
            vector[name] = reduce(values)

        # Entries (the new one in) at or before the horizon go, then the oldest past the bound.
        latest = now if at == size else times[-1]
        horizon = latest - self._retention_us
        expired = bisect_right(times, horizon) + (1 if now <= horizon else 0)
        drop = max(expired, size + 1 - self._max_entries)
        number = columns["next"]
        if drop > 0:
            last_dropped = drop - 1
            time_dropped = (
                times[last_dropped]
                if last_dropped < at
                else (now if last_dropped == at else times[last_dropped - 1])
            )
            if time_dropped >= now and number in _put(columns["n"], at, number, 0)[:drop]:
                return before
        return {
            "v": STATE_VERSION,
            "t": _put(times, at, now, drop),
            "id": _put(columns["id"], at, event.event_id, drop),
            "n": _put(columns["n"], at, number, drop),
            "next": number + 1,
            "x": {
                field: _put(x.get(field) or [None] * size, at, news[field], drop)
                for field in self._fields
            },
        }


def _put(column: list[Any], at: int, value: Any, drop: int) -> list[Any]:
    """`column` with `value` inserted at `at`, then without its first `drop` entries."""
    if drop > at:
        return column[drop - 1 :]
    if at == len(column):  # the usual case: the newest event so far
        new = column[drop:]
        new.append(value)
        return new
    return [*column[drop:at], value, *column[at:]]


def _columns(state: EntityState) -> EntityState:
    """`state` in columns: a version-1 state's entries, sorted by time, numbered by arrival."""
    if state.get("v") == STATE_VERSION:
        return state
    entries = sorted(
        ((int(t), n, str(i), v) for n, (t, i, v) in enumerate(state.get("entries", []))),
        key=lambda e: (e[0], e[1]),
    )
    fields = sorted({f for e in entries for f in e[3]})
    return {
        "v": STATE_VERSION,
        "t": [e[0] for e in entries],
        "id": [e[2] for e in entries],
        "n": [e[1] for e in entries],
        "next": len(entries),
        "x": {f: [e[3].get(f) for e in entries] for f in fields},
    }


def _arrived_by(columns: EntityState, event_id: str) -> EntityState:
    """The entries that had arrived when `event_id` first did (it included)."""
    last = columns["n"][columns["id"].index(event_id)]
    keep = [i for i, n in enumerate(columns["n"]) if n <= last]
    return {
        "t": [columns["t"][i] for i in keep],
        "x": {f: [column[i] for i in keep] for f, column in columns["x"].items()},
    }
