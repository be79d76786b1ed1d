"""The features handler: raw `events` records in, vectors, entity rows and new states out.

No Kafka, no Redis here. `plan_batch` validates each record, computes its vector with
the `FeatureComputer` from the entity's state (read through `StateStore`, and written
back there before the next record of the batch is handled), and returns what to write
to Redis and publish on `features`. The faust agent does the I/O.

>>> from datetime import timedelta
>>> from shared.pipeline import PipelineConfig
>>> pipeline = PipelineConfig.model_validate({"name": "p", "task": "binary",
...     "models": [{"name": "logreg"}], "features": {"numeric": ["x"],
...     "aggregates": [{"field": "x", "how": "count", "window": "1h"}]}})
>>> raw = b'{"event_id": "e1", "event_time": "2024-05-01T00:00:00Z", "features": {"x": 2}}'
>>> states = DictStateStore()
>>> plan = plan_batch([RawEvent(0, 5, raw, None), RawEvent(0, 6, b"{", None)],
...                   states, FeatureComputer(pipeline))
>>> plan.computed[0].vector.features, plan.invalid[0].errors[0].code
({'x': 2.0, 'x_count_1h': 1.0}, 'invalid_json')
>>> list(states.data)
['global']
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from math import isfinite
from typing import Any, Protocol

import orjson

from shared.feature_store import EntityRow
from shared.features import EntityState, FeatureComputer, Window
from shared.messages import ErrorDetail, Event, FeatureVector
from shared.validation import parse_message
from shared.watermark import CONFIRMED, HELD, Watermark

__all__ = [
    "BatchPlan",
    "DictStateStore",
    "FeaturesComputed",
    "IdleEntities",
    "InvalidEvent",
    "JumpGuard",
    "RawEvent",
    "StateStore",
    "compute_features",
    "find_gaps",
    "newest",
    "newest_rows",
    "plan_batch",
    "tail_gaps",
    "unhandled",
    "update_features",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawEvent:
    """One record of the `events` topic, as consumed."""

    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None


@dataclass(frozen=True)
class FeaturesComputed:
    """The outcome of one valid event: its vector's values and the entity's state after it.

    The `features` message is encoded straight from these values (`vector_json`); the
    typed `vector` and the entity's `row` are built when asked for.
    """

    event: Event
    entity_id: str  # the key of its state and row: the event's entity, or "global"
    features: dict[str, float | None]
    state: EntityState | Window  # a Window changes in place: the row takes it as it is then
    feature_set_version: str
    duplicate: bool  # its event_id was already in the entity's state
    timestamp_ms: int | None = None
    held: bool = False  # far ahead of its partition: published, but no state or row (JumpGuard)

    @property
    def vector(self) -> FeatureVector:
        """The `features` message as the typed model (what `vector_json` encodes)."""
        return FeatureVector(**_vector_fields(self.event, self.features, self.feature_set_version))

    def vector_json(self) -> bytes:
        """The `features` message, encoded without building the model.

        Its values are finite floats or None (`compute_features` refuses any other) and
        its ids and time come from a valid `Event`, so it is a valid `FeatureVector`.
        """
        fields = _vector_fields(self.event, self.features, self.feature_set_version)
        return orjson.dumps(fields, option=orjson.OPT_UTC_Z)

    def key(self) -> bytes:
        """The `features` message's key: the entity id, or "global"."""
        return self.entity_id.encode()

    @property
    def row(self) -> EntityRow:
        """The entity's row in the online store as of this event."""
        event = self.event
        return EntityRow(
            entity_id=self.entity_id,
            event_time=event.event_time,
            event_id=event.event_id,
            features=self.features,
            raw=dict(event.features),
            state=self.state.state() if isinstance(self.state, Window) else self.state,
        )


def _vector_fields(event: Event, features: dict[str, float | None], version: str) -> dict[str, Any]:
    """The fields of the `features` message, in its order."""
    return {
        "event_id": event.event_id,
        "entity_id": event.entity_id,
        "event_time": event.event_time,
        "features": features,
        "feature_set_version": version,
    }


@dataclass(frozen=True)
class InvalidEvent:
    record: RawEvent
    errors: list[ErrorDetail]


@dataclass
class BatchPlan:
    computed: list[FeaturesComputed] = field(default_factory=list)  # every vector to publish
    invalid: list[InvalidEvent] = field(default_factory=list)
    confirmed: list[FeaturesComputed] = field(default_factory=list)  # held ones whose jump stood

    def rows(self) -> list[EntityRow]:
        """What to write to the online store: each entity's newest row (none for held events)."""
        kept = [c for c in self.computed if not c.held] + self.confirmed
        return [c.row for c in newest(kept)]


class JumpGuard:
    """Keeps an event dated far ahead of its partition out of its entity's state and row.

    One event dated hours ahead (a clock set wrong, a mistyped date) would otherwise
    become its entity's latest: the Redis row would refuse every real event after it
    (they are older) and the window would drop what it holds. The rule is the
    watermark's (`Watermark.observe`): a lone event more than `max_jump`, or 100
    typical steps, ahead of its partition's time is held. Its vector is computed and
    published as usual (training holds it in turn), but its entity's state and row stay
    as they were. If the partition's next event is far ahead too, the jump stands (a
    stream resuming after a pause) and the held event's state and row are applied then.
    """

    def __init__(self, max_jump: timedelta | None) -> None:
        self.clock = Watermark(max_jump=max_jump)
        self.pending: dict[int, FeaturesComputed] = {}  # per partition: the event held

    @property
    def held(self) -> int:
        return self.clock.held_jumps


class StateStore(Protocol):
    """Per-entity window state (a `Window`, or the `EntityState` it was kept as);
    `partition` is the source record's (for changelogs)."""

    def get(self, entity_id: str) -> EntityState | Window | None: ...

    def set(self, entity_id: str, state: EntityState | Window, partition: int) -> None: ...

    def delete(self, entity_id: str, partition: int) -> None: ...


class DictStateStore:
    """A `StateStore` in a dict (unit tests, and the reference in integration tests);
    with `idle`, every write is followed there, as the service's store does."""

    def __init__(self, idle: IdleEntities | None = None) -> None:
        self.data: dict[str, EntityState | Window] = {}
        self.idle = idle

    def get(self, entity_id: str) -> EntityState | Window | None:
        return self.data.get(entity_id)

    def set(self, entity_id: str, state: EntityState | Window, partition: int) -> None:
        self.data[entity_id] = state
        if self.idle is not None:
            self.idle.touched(entity_id, partition, FeatureComputer.newest(state))

    def delete(self, entity_id: str, partition: int) -> None:
        self.data.pop(entity_id, None)


class IdleEntities:
    """Which entities' states no window can need any more, so they can be forgotten.

    An entity is idle once its newest entry is at least `retention` (the largest window
    plus the allowed lateness) behind its partition's time: an event that is at most
    the allowed lateness behind its partition finds none of those entries in any of
    its windows, so its vector is the same with the state gone. (An event later than
    that, which the state could still have answered, then counts only what came after.)

    Per partition, entities are kept in the order they were last updated, so a sweep
    looks only at the oldest few: its work is the number it forgets, not the number
    kept. An entity updated out of time order may wait behind a later one.

    >>> idle = IdleEntities(retention_us=10)
    >>> idle.touched("a", 0, 100); idle.touched("b", 0, 105); idle.touched("c", 1, 100)
    >>> idle.sweep({0: 112}), idle.sweep({0: 200}), len(idle)
    ([('a', 0)], [('b', 0)], 1)
    """

    def __init__(self, retention_us: int) -> None:
        self.retention_us = retention_us
        self._order: dict[int, OrderedDict[str, int | None]] = {}

    def __len__(self) -> int:
        return sum(len(entities) for entities in self._order.values())

    def touched(self, entity_id: str, partition: int, newest_us: int | None) -> None:
        """`entity_id`'s state (on `partition`) now has its newest entry at `newest_us`."""
        entities = self._order.setdefault(partition, OrderedDict())
        entities[entity_id] = newest_us
        entities.move_to_end(entity_id)

    def clear(self) -> None:
        self._order.clear()

    def sweep(self, clocks: Mapping[int, int]) -> list[tuple[str, int]]:
        """The idle `(entity, partition)` pairs, given each partition's time (us); they are
        no longer tracked. A partition with no time yet keeps all of its entities."""
        idle = []
        for partition, entities in self._order.items():
            clock = clocks.get(partition)
            if clock is None:
                continue
            horizon = clock - self.retention_us
            while entities:
                entity_id, newest = next(iter(entities.items()))
                if newest is not None and newest > horizon:
                    break
                entities.popitem(last=False)
                idle.append((entity_id, partition))
        return idle


def unhandled(records: Sequence[RawEvent], next_offsets: Mapping[int, int]) -> list[RawEvent]:
    """The records at or past their partition's next offset, each offset once.

    Faust redelivers what it had not committed when it stopped, and its fetcher can
    hand over a record twice around a seek; those were (or are being) published and
    are dropped here.

    >>> rec = lambda p, o: RawEvent(p, o, None, None)
    >>> [r.offset for r in unhandled([rec(0, 8), rec(0, 9), rec(1, 2), rec(0, 9)], {0: 9})]
    [9, 2]
    """
    seen: set[tuple[int, int]] = set()
    fresh = []
    for record in records:
        where = (record.partition, record.offset)
        if record.offset >= next_offsets.get(record.partition, 0) and where not in seen:
            seen.add(where)
            fresh.append(record)
    return fresh


def find_gaps(
    records: Sequence[RawEvent], next_offsets: Mapping[int, int]
) -> list[tuple[int, int, int]]:
    """The offsets a batch skipped: `(partition, first, end)` ranges, end exclusive.

    `next_offsets` holds, per partition, the offset after the last one handled.
    Faust's fetcher can drop records around a rebalance or a state recovery; the
    agent reads these ranges back itself. Older offsets (redeliveries) are no gap.

    >>> rec = lambda p, o: RawEvent(p, o, None, None)
    >>> find_gaps([rec(0, 12), rec(0, 13), rec(0, 20), rec(1, 3)], {0: 10, 1: 0})
    [(0, 10, 12), (0, 14, 20), (1, 0, 3)]
    >>> find_gaps([rec(0, 7), rec(0, 8)], {0: 9})  # redelivered: no gap
    []
    """
    cursor = dict(next_offsets)
    gaps = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        expected = cursor.get(record.partition)
        if expected is not None and record.offset > expected:
            gaps.append((record.partition, expected, record.offset))
        cursor[record.partition] = max(expected or 0, record.offset + 1)
    return gaps


def tail_gaps(
    next_offsets: Mapping[int, int], ends: Mapping[int, int]
) -> list[tuple[int, int, int]]:
    """The `(partition, first, end)` ranges between the offset after the last record
    handled and the partition's end, for partitions handled before (`next_offsets`).

    >>> tail_gaps({0: 10, 1: 5, 2: 7}, {0: 10, 1: 9, 3: 4})
    [(1, 5, 9)]
    """
    return [
        (partition, next_offsets[partition], end)
        for partition, end in sorted(ends.items())
        if partition in next_offsets and next_offsets[partition] < end
    ]


def compute_features(
    event: Event,
    state: EntityState | None,
    computer: FeatureComputer,
    timestamp_ms: int | None = None,
) -> tuple[FeaturesComputed, EntityState]:
    """One event's vector values, and the entity's new state (`state` left as it is)."""
    values, new_state = computer.compute(event, state)
    # `compute` returns the state it was given only for a redelivery or a too-late event.
    duplicate = (
        new_state is state and bool(computer.aggregates) and computer.seen(state, event.event_id)
    )
    return _computed(event, values, new_state, computer, duplicate, timestamp_ms), new_state


def update_features(
    event: Event,
    window: Window | None,
    computer: FeatureComputer,
    timestamp_ms: int | None = None,
) -> tuple[FeaturesComputed, bool]:
    """One event's vector values, `window` updated in place; whether it now holds the event."""
    duplicate = window is not None and computer.seen(window, event.event_id)
    values, stored = computer.update(event, window)
    state: EntityState | Window = window if window is not None else {}
    return _computed(event, values, state, computer, duplicate, timestamp_ms), stored


def _computed(
    event: Event,
    values: dict[str, float | None],
    state: EntityState | Window,
    computer: FeatureComputer,
    duplicate: bool,
    timestamp_ms: int | None,
) -> FeaturesComputed:
    for name in computer.aggregate_names:
        value = values[name]
        if value is not None and not isfinite(value):  # never: past float's range is None
            FeatureVector(**_vector_fields(event, values, computer.version))  # raises
    return FeaturesComputed(
        event,
        computer.entity_of(event),
        values,
        state,
        computer.version,
        duplicate,
        timestamp_ms,
    )


def plan_batch(
    records: Sequence[RawEvent],
    states: StateStore,
    computer: FeatureComputer,
    jumps: JumpGuard | None = None,
) -> BatchPlan:
    """Handle records in order; each entity's `Window` is updated in place as it goes (a
    stored state is made one on first use). With `jumps`, a lone event far ahead of its
    partition is held (see there): its vector comes from `compute`, leaving the window."""
    plan = BatchPlan()
    computed_add = plan.computed.append
    for record in records:
        result = parse_message(Event, record.value)
        event = result.message
        if event is None:
            first = result.errors[0]
            log.warning(
                "invalid event skipped partition=%s offset=%s code=%s field=%s: %s",
                record.partition,
                record.offset,
                first.code,
                first.field,
                first.message,
            )
            plan.invalid.append(InvalidEvent(record, result.errors))
            continue
        entity = computer.entity_of(event)
        verdict = None
        if jumps is not None:
            verdict = jumps.clock.observe(("events", record.partition), event.event_time, 0.0)
            held = jumps.pending.pop(record.partition, None)
            if held is not None and verdict == CONFIRMED:  # stored now, as it would have been
                confirmed, _ = _store(
                    held.event, states, computer, record.partition, held.timestamp_ms
                )
                plan.confirmed.append(confirmed)
        state = states.get(entity)
        if verdict == HELD:
            assert jumps is not None
            log.warning(
                "event %s at %s is far ahead of events/%s: held out of its entity's state",
                event.event_id,
                event.event_time.isoformat(),
                record.partition,
            )
            before = state.state() if isinstance(state, Window) else state
            computed, _ = compute_features(event, before, computer, record.timestamp_ms)
            jumps.pending[record.partition] = computed
            computed_add(replace(computed, held=True))
            continue
        computed_add(_store(event, states, computer, record.partition, record.timestamp_ms)[0])
    return plan


def _store(
    event: Event,
    states: StateStore,
    computer: FeatureComputer,
    partition: int,
    timestamp_ms: int | None,
) -> tuple[FeaturesComputed, bool]:
    """`event` through its entity's window (none without aggregates), kept in `states`."""
    entity = computer.entity_of(event)
    window = computer.window(states.get(entity)) if computer.aggregates else None
    computed, stored = update_features(event, window, computer, timestamp_ms)
    if stored:
        assert window is not None
        states.set(entity, window, partition)
    return computed, stored


def newest(computed: Sequence[FeaturesComputed]) -> list[FeaturesComputed]:
    """Each entity's newest outcome of a batch, as `newest_rows` picks rows."""
    kept: dict[str, FeaturesComputed] = {}
    for one in computed:
        other = kept.get(one.entity_id)
        if other is None or one.event.event_time >= other.event.event_time:
            kept[one.entity_id] = one
    return list(kept.values())


def newest_rows(rows: Sequence[EntityRow]) -> list[EntityRow]:
    """Each entity's newest row of a batch: what writing them all in order would leave.

    The store keeps a row unless a newer one comes (an equal time replaces it), so the
    last row with the latest time per entity is the only write that counts.

    >>> from datetime import UTC, datetime
    >>> at = lambda d: datetime(2024, 1, d, tzinfo=UTC)
    >>> rows = [EntityRow("a", at(2), "e1", {}, {}, {}), EntityRow("a", at(1), "e2", {}, {}, {}),
    ...         EntityRow("b", at(1), "e3", {}, {}, {}), EntityRow("a", at(2), "e4", {}, {}, {})]
    >>> [r.event_id for r in newest_rows(rows)]
    ['e4', 'e3']
    """
    newest: dict[str, EntityRow] = {}
    for row in rows:
        kept = newest.get(row.entity_id)
        if kept is None or row.event_time >= kept.event_time:
            newest[row.entity_id] = row
    return list(newest.values())
