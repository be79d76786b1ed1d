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
  0.0 for one value, `None` for none). Sums are exact (`shared.windows`), so a result
  does not depend on the order events arrived in.

State (`EntityState`, JSON-able) is columnar and sorted by event time: `{"v": 2,
"t": [time_us, ...], "id": [event_id, ...], "n": [arrival number, ...], "next": int,
"x": {field: [value or None, ...]}}`. Entries are kept while
`time > latest - largest_window - allowed_lateness` (and at most `max_entries`, the
oldest in event time going first). An event whose `event_id` is already in the state
leaves it unchanged, and its vector is recomputed from the entries that had arrived up
to it (by arrival number), so a redelivered event yields exactly the vector it first
did. An out-of-order event uses the entries with `time <= its time`; that is exact
when it is at most `allowed_lateness` behind the entity's latest event (older events
are still answered, from the entries kept, but not stored). A version-1 state (a list
of entries in arrival order) is read as the same entries.

Two ways to the same vectors and states: `compute(event, state)` is pure (serving
uses it once per request); its work is linear in the entity's window. The features
service keeps a `Window` per entity and calls `update(event, window)`, which changes
it in place with running aggregates: an event in time order costs constant work
(plus the entries leaving its windows), however many entries the window holds.
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
from datetime import UTC, datetime, timedelta
from math import isfinite
from typing import Any

from shared.messages import GLOBAL_KEY, Event
from shared.pipeline import Aggregate, PipelineConfig
from shared.windows import Running, reduce

__all__ = [
    "STATE_VERSION",
    "EntityState",
    "FeatureComputer",
    "Record",
    "Window",
    "category_key",
    "empty_state",
    "time_us",
    "to_float",
]

EntityState = dict[str, Any]
"""JSON-able per-entity window state, in columns sorted by event time (see the module doc)."""

Record = list[Any]
"""One entry of a `Window` as JSON: `[time_us, event_id, arrival number, {field: value}]`."""

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


class FeatureComputer:
    """Computes point-in-time feature vectors and per-entity window state.

    `allowed_lateness` keeps entries that long past the largest window, so events
    up to that much behind their entity's latest one still get exact windows;
    `max_entries` bounds one entity's state (the oldest entries go first).

    Two ways to the same vectors: `compute` is pure (a state in, a new state out: its
    work is linear in the entity's window), `update` changes a `Window` in place
    (constant work per in-order event; see `Window`).
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
        self.fields = sorted({a.field for a in self.aggregates})
        windows_us = [a.window // _MICROSECOND for a in self.aggregates]
        # Per aggregate: (feature name, field, window in microseconds, how).
        self.plan = [
            (a.name, a.field, w, a.how) for a, w in zip(self.aggregates, windows_us, strict=True)
        ]
        largest = max(windows_us, default=0)
        self.retention_us = largest + allowed_lateness // _MICROSECOND
        self.max_entries = max_entries

    @property
    def retention(self) -> timedelta:
        """How far behind the latest event an entry still counts: the largest window
        plus the allowed lateness (zero without aggregates: no state is kept then)."""
        return timedelta(microseconds=self.retention_us)

    @staticmethod
    def newest(state: EntityState | Window) -> int | None:
        """The event time (microseconds) of the newest entry `state` holds, None if none."""
        if isinstance(state, Window):
            return state.newest
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

    def _scalars(self, event: Event) -> dict[str, float | None]:
        """The vector's numeric and categorical part."""
        features = event.features
        vector: dict[str, float | None] = {}
        for name in self.numeric:
            vector[name] = _to_float(features.get(name))
        for name in self.categorical:
            key = category_key(name, features.get(name))
            if key is not None:
                vector[key] = 1.0
        return vector

    def compute(
        self, event: Event, state: EntityState | None
    ) -> tuple[dict[str, float | None], EntityState]:
        """The vector as of `event` (included in its windows) and the entity's new state."""
        vector = self._scalars(event)
        if not self.aggregates:
            return vector, state if state is not None else empty_state()

        state = state if state is not None else empty_state()
        columns = _columns(state)
        now = time_us(event.event_time)
        if event.event_id in columns["id"]:  # a redelivery: same vector, same state
            return self._windows(vector, _arrived_by(columns, event.event_id), now), state
        return vector, self._add(vector, columns, now, event, state)

    def window(self, state: EntityState | Window | None) -> Window:
        """A `Window` holding `state` (a new one when None; `state` itself if a Window)."""
        if isinstance(state, Window):
            return state
        return Window(self, state)

    def update(self, event: Event, window: Window | None) -> tuple[dict[str, float | None], bool]:
        """The vector as of `event`, as `compute` gives it, and whether `window` (changed
        in place) now holds the event. `window` may be None only without aggregates."""
        vector = self._scalars(event)
        if not self.aggregates:
            return vector, False
        assert window is not None, "aggregates need a window"
        features = event.features
        news = {field: _to_float(features.get(field)) for field in self.fields}
        stored = window.add(time_us(event.event_time), event.event_id, news, vector)
        return vector, stored

    def seen(self, state: EntityState | Window | None, event_id: str) -> bool:
        """Whether `state` holds `event_id` (its event was handled before)."""
        if isinstance(state, Window):
            return event_id in state.index
        return state is not None and event_id in _columns(state)["id"]

    def _windows(
        self, vector: dict[str, float | None], columns: EntityState, now: int
    ) -> dict[str, float | None]:
        times = columns["t"]
        hi = bisect_right(times, now)
        for name, field, window, how in self.plan:
            lo = bisect_right(times, now - window, 0, hi)
            column = columns["x"].get(field)
            vector[name] = reduce(how, column[lo:hi] if column is not None else [])
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
        news = {field: _to_float(features.get(field)) for field in self.fields}
        for name, field, window, how in self.plan:
            start = now - window
            if start >= now:
                values: list[Any] = []
            else:
                lo = bisect_right(times, start, 0, at)
                column = x.get(field) or [None] * size
                values = column[lo:at]
                values.append(news[field])
            vector[name] = reduce(how, values)

        # Entries (the new one in) at or before the horizon go, then the oldest past the bound.
        latest = now if at == size else times[-1]
        horizon = latest - self.retention_us
        expired = bisect_right(times, horizon) + (1 if now <= horizon else 0)
        drop = max(expired, size + 1 - self.max_entries)
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
                for field in self.fields
            },
        }


class Window:
    """One entity's entries and running aggregates, changed in place by `add`.

    What the features service keeps per entity. The entries are the columns of an
    `EntityState` (`state()` gives it, for changelogs and the online store), with the
    oldest dropped by moving `head` (the lists are compacted now and then), and an
    index from event_id to arrival number. Each aggregate keeps a `Running` over its
    window as of the newest entry. So an event at or after the newest costs the entries
    that leave its windows (one, usually) plus constant work. A late event (within the
    retention) is answered from the running sums less the entries after it and plus the
    older ones its window reaches, or from a slice, whichever is shorter (min and max
    from a slice); a redelivery or a too-late event from the entries, as `compute`.
    Every answer equals `compute`'s for the same arrivals.
    """

    def __init__(
        self, computer: FeatureComputer, state: EntityState | None = None, *, written: bool = False
    ) -> None:
        columns = _columns(state) if state is not None else empty_state()
        size = len(columns["t"])
        self.plan = computer.plan
        self.fields = computer.fields
        self.retention_us = computer.retention_us
        self.max_entries = computer.max_entries
        self.t: list[int] = list(columns["t"])
        self.id: list[str] = list(columns["id"])
        self.n: list[int] = list(columns["n"])
        self.x: dict[str, list[float | None]] = {
            f: list(columns["x"].get(f) or [None] * size) for f in self.fields
        }
        self.next: int = columns["next"]
        self.head = 0
        self.index = dict(zip(self.id, self.n, strict=True))
        self.runs = [Running(how) for _, _, _, how in self.plan]
        # Changes not yet written out (`drain`): entries stored, by arrival number, as
        # records; the numbers of entries dropped. A state not `written` is all new.
        self._added: dict[int, Record] = {}
        self._dropped: list[int] = []
        if not written:
            for i in range(size):
                self._added[self.n[i]] = self._record(i)
        if size:
            latest = self.t[-1]
            for run, (_, field, window, _) in zip(self.runs, self.plan, strict=True):
                column = self.x[field]
                for i in range(bisect_right(self.t, latest - window), size):
                    run.add(column[i], self.t[i], self.n[i])

    def __len__(self) -> int:
        return len(self.t) - self.head

    @classmethod
    def from_records(cls, computer: FeatureComputer, records: list[Record], next: int) -> Window:
        """The window kept as `records` (what `drain` gave out, in any order) and the next
        arrival number: the entries a window holds (the newest in event time within the
        retention and the bound); the numbers of any others are left to `drain`."""
        records = sorted(records, key=lambda r: (r[0], r[2]))
        live = records
        if records:
            horizon = records[-1][0] - computer.retention_us
            first = bisect_right([r[0] for r in records], horizon)
            live = records[max(first, len(records) - computer.max_entries) :]
        state: EntityState = {
            "v": STATE_VERSION,
            "t": [r[0] for r in live],
            "id": [r[1] for r in live],
            "n": [r[2] for r in live],
            "next": next,
            "x": {f: [r[3].get(f) for r in live] for f in computer.fields},
        }
        window = cls(computer, state, written=True)
        window._dropped = [r[2] for r in records[: len(records) - len(live)]]
        return window

    def drain(self) -> tuple[list[Record], list[int]]:
        """The entries stored since the last call, as records, and the arrival numbers of
        those dropped (an entry stored and dropped in between is in neither)."""
        added, dropped = list(self._added.values()), self._dropped
        self._added, self._dropped = {}, []
        return added, dropped

    @property
    def pending(self) -> bool:
        """Whether there are changes `drain` has not given out yet."""
        return bool(self._added or self._dropped)

    def written(self) -> list[int]:
        """The arrival numbers of the entries written out and not dropped since (what a
        changelog holds for this window)."""
        return [n for n in self.n[self.head :] if n not in self._added] + self._dropped

    def _record(self, i: int) -> Record:
        """Entry `i` as a JSON-able record: `[time_us, event_id, number, {field: value}]`."""
        values = {f: column[i] for f, column in self.x.items() if column[i] is not None}
        return [self.t[i], self.id[i], self.n[i], values]

    @property
    def newest(self) -> int | None:
        """The event time (microseconds) of the newest entry, None if none."""
        return self.t[-1] if len(self.t) > self.head else None

    def state(self) -> EntityState:
        """The entries as a JSON-able `EntityState`."""
        head = self.head
        return {
            "v": STATE_VERSION,
            "t": self.t[head:],
            "id": self.id[head:],
            "n": self.n[head:],
            "next": self.next,
            "x": {f: column[head:] for f, column in self.x.items()},
        }

    def add(
        self, now: int, event_id: str, news: dict[str, float | None], vector: dict[str, Any]
    ) -> bool:
        """Put the windows of the event (`now`, `event_id`, its `news` values) into `vector`;
        whether it was stored (not: a redelivery, or too late to keep)."""
        number = self.index.get(event_id)
        if number is not None:  # a redelivery: the entries that had arrived by its first time
            columns = _arrived_by(self.state(), event_id)
            self._answer(vector, columns["t"], columns["x"], now, None)
            return False
        latest = self.newest
        if latest is None or now >= latest:
            self._append(now, event_id, news, vector, latest)
            return True
        return self._insert(now, event_id, news, vector, latest)

    def _append(
        self,
        now: int,
        event_id: str,
        news: dict[str, float | None],
        vector: dict[str, Any],
        latest: int | None,
    ) -> None:
        t, n, x = self.t, self.n, self.x
        if latest is not None and now > latest:  # entries leave the windows
            for run, (_, field, window, _) in zip(self.runs, self.plan, strict=True):
                lo = bisect_right(t, latest - window, self.head)
                hi = bisect_right(t, now - window, lo)
                column = x[field]
                for i in range(lo, hi):
                    run.remove(column[i], n[i])
        number = self.next
        self._put(len(t), now, event_id, number, news)
        for run, (name, field, window, how) in zip(self.runs, self.plan, strict=True):
            if window > 0:
                run.add(news[field], now, number)
                vector[name] = run.value()
            else:
                vector[name] = reduce(how, [])
        self._prune(now)

    def _insert(
        self,
        now: int,
        event_id: str,
        news: dict[str, float | None],
        vector: dict[str, Any],
        latest: int,
    ) -> bool:
        t, head = self.t, self.head
        at = bisect_right(t, now, head)
        too_late = now <= latest - self.retention_us
        if too_late or (at == head and len(self) >= self.max_entries):  # it would go first
            self._answer(vector, t[head:at], {f: c[head:at] for f, c in self.x.items()}, now, news)
            return False
        size = len(t)
        for run, (name, field, window, how) in zip(self.runs, self.plan, strict=True):
            column = self.x[field]
            lo = bisect_right(t, now - window, head, at)  # this event's window: [lo, at) + it
            start = bisect_right(t, latest - window, head)  # the running window: [start, size)
            if how in ("min", "max") or start > at or at - lo <= size - at + start - lo:
                values = column[lo:at]
                values.append(news[field])
                vector[name] = reduce(how, values) if window > 0 else reduce(how, [])
                continue
            sums = run.sums.copy()
            for value in column[at:size]:
                if value is not None:
                    sums.remove(value)
            for value in column[lo:start]:
                if value is not None:
                    sums.add(value)
            if news[field] is not None:
                sums.add(news[field])  # type: ignore[arg-type]
            vector[name] = sums.value(how)
        number = self.next
        self._put(at, now, event_id, number, news)
        for run, (_, field, window, _) in zip(self.runs, self.plan, strict=True):
            if now > latest - window:
                run.insert(news[field], now, number)
        self._prune(latest)
        return True

    def _put(
        self, at: int, now: int, event_id: str, number: int, news: dict[str, float | None]
    ) -> None:
        """Insert one entry at position `at` of the columns."""
        self.t.insert(at, now)
        self.id.insert(at, event_id)
        self.n.insert(at, number)
        for field, column in self.x.items():
            column.insert(at, news[field])
        self.index[event_id] = number
        self.next = number + 1
        self._added[number] = self._record(at)

    def _prune(self, latest: int) -> None:
        """Drop the entries at or before `latest - retention`, then the oldest past the bound
        (leaving the running windows they are still in)."""
        t, n, x, head = self.t, self.n, self.x, self.head
        end = max(bisect_right(t, latest - self.retention_us, head), len(t) - self.max_entries)
        if end <= head:
            return
        for i in range(head, end):
            for run, (_, field, window, _) in zip(self.runs, self.plan, strict=True):
                if t[i] > latest - window:
                    run.remove(x[field][i], n[i])
            del self.index[self.id[i]]
            if self._added.pop(n[i], None) is None:
                self._dropped.append(n[i])
        self.head = end
        if end > 64 and 2 * end > len(t):  # compact: each entry is moved O(1) times
            del t[:end], self.id[:end], n[:end]
            for column in x.values():
                del column[:end]
            self.head = 0

    def _answer(
        self,
        vector: dict[str, Any],
        times: list[int],
        x: dict[str, list[float | None]],
        now: int,
        news: dict[str, float | None] | None,
    ) -> None:
        """The windows at `now` over the entries given (times <= now), plus `news` if any."""
        hi = bisect_right(times, now)
        for name, field, window, how in self.plan:
            if window <= 0:
                vector[name] = reduce(how, [])
                continue
            values = x[field][bisect_right(times, now - window, 0, hi) : hi]
            if news is not None:
                values.append(news[field])
            vector[name] = reduce(how, values)


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
