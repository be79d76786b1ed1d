"""FeatureComputer: pass-through, one-hot, every aggregate against a brute-force reference."""

from __future__ import annotations

import copy
import json
import math
import random
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from services.features.handlers import (
    DictStateStore,
    IdleEntities,
    JumpGuard,
    RawEvent,
    plan_batch,
)
from shared.features import (
    EntityState,
    FeatureComputer,
    Record,
    Window,
    category_key,
    empty_state,
    time_us,
    to_float,
)
from shared.messages import Event, FeatureVector
from shared.pipeline import PipelineConfig
from shared.windows import Running

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HOWS = ("count", "sum", "mean", "min", "max", "std")


def _pipeline(
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    aggregates: Sequence[dict[str, str]] = (),
) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "t",
            "task": "binary",
            "models": [{"name": "logreg"}],
            "features": {
                "numeric": list(numeric),
                "categorical": list(categorical),
                "aggregates": list(aggregates),
            },
        }
    )


def _event(
    event_id: str,
    at: datetime,
    features: dict[str, Any],
    entity: str | None = "u1",
) -> Event:
    return Event(event_id=event_id, event_time=at, entity_id=entity, features=features)


def _run(computer: FeatureComputer, events: Sequence[Event]) -> list[dict[str, float | None]]:
    """Every event in order through the computer, states kept per entity."""
    states: dict[str, EntityState] = {}
    vectors = []
    for event in events:
        key = computer.entity_of(event)
        vector, states[key] = computer.compute(event, states.get(key))
        vectors.append(vector)
    return vectors


def test_only_numeric_features_pass_through_unchanged() -> None:
    computer = FeatureComputer(_pipeline(numeric=["a", "b", "c"]))
    rng = random.Random(1)
    events = [
        _event(f"e{i}", T0 + timedelta(seconds=i), {n: rng.uniform(-1e6, 1e6) for n in "abc"})
        for i in range(200)
    ]
    vectors = _run(computer, events)
    assert vectors == [dict(e.features) for e in events]
    assert computer.names() == ["a", "b", "c"]


def test_numeric_values_are_floats_or_none() -> None:
    computer = FeatureComputer(
        _pipeline(numeric=["t", "f", "i", "s", "bad", "none", "inf", "gone"])
    )
    event = _event(
        "e1",
        T0,
        {"t": True, "f": False, "i": 3, "s": "2.5", "bad": "abc", "none": None, "inf": "inf"},
    )
    vector, _ = computer.compute(event, None)
    assert vector == {
        "t": 1.0,
        "f": 0.0,
        "i": 3.0,
        "s": 2.5,
        "bad": None,
        "none": None,
        "inf": None,
        "gone": None,
    }
    assert all(type(v) is float for v in vector.values() if v is not None)
    assert to_float(float("nan")) is None


def test_categorical_features_are_one_hot_and_sparse() -> None:
    computer = FeatureComputer(_pipeline(numeric=["x"], categorical=["country", "vip", "tier"]))
    vector, _ = computer.compute(
        _event("e1", T0, {"x": 1, "country": "NL", "vip": True, "tier": None}), None
    )
    assert vector == {"x": 1.0, "country=NL": 1.0, "vip=true": 1.0}
    other, _ = computer.compute(_event("e2", T0, {"x": 2, "country": "DE", "tier": 3}), None)
    assert other == {"x": 2.0, "country=DE": 1.0, "tier=3": 1.0}
    assert category_key("vip", False) == "vip=false"


def _reference(
    events: Sequence[Event], field: str, how: str, window: timedelta
) -> list[float | None]:
    """Brute force: for each arriving event, the first copies of the entity's events that
    arrived up to its first copy, within (t - window, t]."""
    first_seen: dict[str, int] = {}
    answers: list[float | None] = []
    for position, event in enumerate(events):
        upto = first_seen.setdefault(event.event_id, position)
        me = events[upto]
        values = [
            float(cast(float, other.features[field]))
            for index, other in enumerate(events[: upto + 1])
            if first_seen.get(other.event_id) == index
            and other.key() == me.key()
            and me.event_time - window < other.event_time <= me.event_time
            and other.features.get(field) is not None
        ]
        answers.append(_reduce(how, values))
    return answers


def _reduce(how: str, values: list[float]) -> float | None:
    if how == "count":
        return float(len(values))
    if how == "sum":
        return float(sum(values))
    if not values:
        return None
    if how == "mean":
        return statistics.fmean(values)
    if how == "min":
        return min(values)
    if how == "max":
        return max(values)
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _random_stream(
    seed: int, n: int = 400, late_by: timedelta = timedelta(minutes=20)
) -> list[Event]:
    """Several entities (and the global stream), out-of-order times, missing values, duplicates."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(n):
        at = T0 + timedelta(seconds=20 * i + rng.randint(0, 19))
        if rng.random() < 0.2:
            at -= timedelta(seconds=rng.randint(0, int(late_by.total_seconds())))
        amount: float | None = round(rng.uniform(-100, 100), 3)
        if rng.random() < 0.1:
            amount = None
        entity = rng.choice(["a", "b", "c", None])
        events.append(_event(f"e{i}", at, {"amount": amount}, entity))
        if rng.random() < 0.08:  # a redelivery of an earlier event
            events.append(rng.choice(events[-30:]))
    return events


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_aggregate_equals_a_brute_force_reference(how: str, seed: int) -> None:
    windows = [timedelta(minutes=5), timedelta(hours=1)]
    aggregates = [
        {"field": "amount", "how": how, "window": f"{int(w.total_seconds())}s"} for w in windows
    ]
    computer = FeatureComputer(
        _pipeline(aggregates=aggregates), allowed_lateness=timedelta(minutes=30)
    )
    events = _random_stream(seed)
    vectors = _run(computer, events)
    for aggregate, window in zip(computer.aggregates, windows, strict=True):
        expected = _reference(events, "amount", how, window)
        got = [v[aggregate.name] for v in vectors]
        for event, want, have in zip(events, expected, got, strict=True):
            if want is None:
                assert have is None, (event.event_id, have)
            else:
                assert have == pytest.approx(want, rel=1e-9, abs=1e-9), (event.event_id, want, have)
    assert len({v["amount_" + how + "_1h"] for v in vectors}) > 10, "the stream is not trivial"


def test_window_is_open_at_the_start_and_closed_at_the_end() -> None:
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "x", "how": "sum", "window": "10m"}])
    )
    edge = T0 - timedelta(minutes=10)
    events = [
        _event("old", edge, {"x": 1}),
        _event("inside", edge + timedelta(microseconds=1), {"x": 10}),
        _event("same-time", T0, {"x": 100}),
        _event("now", T0, {"x": 1000}),
    ]
    assert [v["x_sum_10m"] for v in _run(computer, events)] == [1.0, 11.0, 110.0, 1110.0]


def test_aggregates_over_no_values() -> None:
    aggregates = [{"field": "x", "how": how, "window": "1h"} for how in HOWS]
    computer = FeatureComputer(_pipeline(aggregates=aggregates))
    vector, _ = computer.compute(_event("e1", T0, {"x": "n/a"}), None)
    assert vector == {
        "x_count_1h": 0.0,
        "x_sum_1h": 0.0,
        "x_mean_1h": None,
        "x_min_1h": None,
        "x_max_1h": None,
        "x_std_1h": None,
    }
    one, _ = computer.compute(_event("e2", T0, {"x": 4}), None)
    assert (one["x_std_1h"], one["x_mean_1h"], one["x_count_1h"]) == (0.0, 4.0, 1.0)


def test_compute_is_pure_and_state_is_json() -> None:
    computer = FeatureComputer(
        _pipeline(numeric=["x"], aggregates=[{"field": "x", "how": "mean", "window": "1h"}])
    )
    _, state = computer.compute(_event("e1", T0, {"x": 1}), None)
    frozen = copy.deepcopy(state)
    event = _event("e2", T0 + timedelta(minutes=1), {"x": 3})
    first = computer.compute(event, state)
    second = computer.compute(event, json.loads(json.dumps(state)))
    assert state == frozen, "compute must not mutate its input state"
    assert first == second == ({"x": 3.0, "x_mean_1h": 2.0}, first[1])
    new = first[1]
    assert (new["t"][-1], new["id"][-1], new["x"]["x"][-1]) == (
        int((event.event_time - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6),
        "e2",
        3.0,
    )


def test_a_redelivered_event_gets_its_first_vector_and_changes_nothing() -> None:
    """What restarts and serving rely on: the final state reproduces every earlier vector."""
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "amount", "how": h, "window": "1h"} for h in HOWS]),
        allowed_lateness=timedelta(hours=1),
    )
    events = [e for e in _random_stream(7, n=150) if e.entity_id == "a"]
    states: list[EntityState] = [empty_state()]
    vectors = []
    for event in events:
        vector, state = computer.compute(event, states[-1])
        vectors.append(vector)
        states.append(state)
    final = states[-1]
    for event, vector in zip(events, vectors, strict=True):
        again, same = computer.compute(event, final)
        assert again == vector
        assert same is final


def test_a_version_1_state_reads_as_the_same_entries() -> None:
    """A state kept by an earlier release (entries in arrival order) goes on exactly."""
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "amount", "how": h, "window": "1h"} for h in HOWS]),
        allowed_lateness=timedelta(hours=1),
    )
    events = [e for e in _random_stream(3, n=120) if e.entity_id == "a"]
    half = len(events) // 2
    state = _run_state(computer, events[:half])
    order = sorted(range(len(state["id"])), key=lambda i: state["n"][i])
    entries: list[list[Any]] = [
        [state["t"][i], state["id"][i], {"amount": state["x"]["amount"][i]}] for i in order
    ]
    for entry in entries:
        if entry[2]["amount"] is None:
            entry[2].clear()
    new, old = state, {"v": 1, "entries": entries}
    for event in events[half:]:
        expected, new = computer.compute(event, new)
        got, old = computer.compute(event, old)
        assert got == expected
    assert old == new


def test_global_state_for_events_without_entity_and_entities_apart() -> None:
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "x", "how": "count", "window": "1h"}])
    )
    events = [
        _event("e1", T0, {"x": 1}, None),
        _event("e2", T0, {"x": 1}, "a"),
        _event("e3", T0, {"x": 1}, None),
    ]
    assert [v["x_count_1h"] for v in _run(computer, events)] == [1.0, 1.0, 2.0]
    assert computer.entity_of(events[0]) == "global"


def test_state_is_pruned_to_the_window_plus_lateness_and_bounded() -> None:
    pipeline = _pipeline(aggregates=[{"field": "x", "how": "sum", "window": "10m"}])
    computer = FeatureComputer(pipeline, allowed_lateness=timedelta(minutes=5))
    events = [_event(f"e{i}", T0 + timedelta(minutes=i), {"x": 1}) for i in range(60)]
    state: EntityState | None = None
    for event in events:
        _, state = computer.compute(event, state)
    assert state is not None
    assert state["id"] == [f"e{i}" for i in range(45, 60)]
    too_late = _event("late", T0, {"x": 1})
    vector, after = computer.compute(too_late, state)
    assert (vector["x_sum_10m"], after) == (1.0, state), "too late: answered, not stored"
    bounded = FeatureComputer(pipeline, max_entries=3)
    assert _run_state(bounded, events)["id"] == ["e57", "e58", "e59"]


def _run_state(computer: FeatureComputer, events: Sequence[Event]) -> EntityState:
    state: EntityState | None = None
    for event in events:
        _, state = computer.compute(event, state)
    assert state is not None
    return state


def test_names_and_version_come_from_the_pipeline() -> None:
    pipeline = _pipeline(
        numeric=["x"],
        categorical=["c"],
        aggregates=[{"field": "x", "how": "max", "window": "1d"}],
    )
    computer = FeatureComputer(pipeline)
    assert computer.names() == ["x", "x_max_1d"]
    assert computer.version == pipeline.feature_set_version()
    vector, _ = computer.compute(_event("e1", T0, {"x": 2, "c": "k"}), None)
    assert list(vector) == ["x", "c=k", "x_max_1d"]


def test_plan_batch_skips_invalid_records_and_keeps_state_per_entity() -> None:
    computer = FeatureComputer(_pipeline(aggregates=[{"field": "x", "how": "sum", "window": "1h"}]))
    good = [
        _event("e1", T0, {"x": 1}, "a").to_json(),
        b'{"event_id": "e2"}',
        None,
        _event("e3", T0, {"x": 2}, "a").to_json(),
        _event("e1", T0, {"x": 1}, "a").to_json(),
    ]
    states = DictStateStore()
    plan = plan_batch([RawEvent(1, i, v, 1000) for i, v in enumerate(good)], states, computer)
    assert [c.vector.features["x_sum_1h"] for c in plan.computed] == [1.0, 3.0, 1.0]
    assert [c.duplicate for c in plan.computed] == [False, False, True]
    assert [(i.record.offset, i.errors[0].code) for i in plan.invalid] == [
        (1, "missing_field"),
        (2, "empty"),
    ]
    assert plan.computed[1].row.state == cast(Window, states.data["a"]).state()
    assert plan.computed[0].vector.feature_set_version == computer.version
    assert math.isclose(plan.computed[1].row.features["x_sum_1h"] or 0, 3.0)


def _minutes(*steps: tuple[str, float]) -> list[RawEvent]:
    """Events of entity "a" on one partition, each (event_id, minutes after T0)."""
    return [
        RawEvent(0, i, _event(e, T0 + timedelta(minutes=m), {"x": 1}, "a").to_json(), None)
        for i, (e, m) in enumerate(steps)
    ]


def test_an_event_dated_hours_ahead_gets_its_vector_but_no_state_or_row() -> None:
    """A mistyped date mid-stream: its vector is published, but the entity's window and
    Redis row go on from the real events (the row would refuse them all otherwise)."""
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "x", "how": "count", "window": "1d"}])
    )
    states, jumps = DictStateStore(), JumpGuard(timedelta(minutes=10))
    first = plan_batch(_minutes(("e1", 0), ("e2", 1), ("ahead", 180)), states, computer, jumps)
    assert [c.features["x_count_1d"] for c in first.computed] == [1.0, 2.0, 3.0]
    assert [c.held for c in first.computed] == [False, False, True]
    assert [r.event_id for r in first.rows()] == ["e2"]  # not the one three hours ahead
    second = plan_batch(_minutes(("e3", 2), ("e4", 3)), states, computer, jumps)
    assert [c.features["x_count_1d"] for c in second.computed] == [3.0, 4.0]  # "ahead" left out
    assert [r.event_id for r in second.rows()] == ["e4"]
    assert jumps.held == 1 and not second.confirmed


def test_a_stream_resuming_after_a_pause_confirms_the_held_event() -> None:
    """Two events far ahead in a row: the stream resumed after a pause, so the first,
    held, joins its entity's state and row when the second confirms the jump."""
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "x", "how": "count", "window": "1d"}])
    )
    states, jumps = DictStateStore(), JumpGuard(timedelta(minutes=10))
    plan = plan_batch(
        _minutes(("e1", 0), ("e2", 1), ("r1", 180), ("r2", 181)), states, computer, jumps
    )
    assert [c.held for c in plan.computed] == [False, False, True, False]
    assert [c.features["x_count_1d"] for c in plan.computed] == [1.0, 2.0, 3.0, 4.0]
    assert [c.event.event_id for c in plan.confirmed] == ["r1"]
    assert [r.event_id for r in plan.rows()] == ["r2"]
    assert len(cast(Window, states.data["a"])) == 4


def test_the_vector_json_is_the_typed_message() -> None:
    """`vector_json` (orjson from plain values) validates as the `FeatureVector` the typed
    model builds, and says the same as the model's own JSON."""
    computer = FeatureComputer(
        _pipeline(
            numeric=["x", "s"],
            categorical=["c"],
            aggregates=[{"field": "x", "how": h, "window": "1h"} for h in HOWS],
        )
    )
    plus2 = timezone(timedelta(hours=2))
    raws = [
        b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00Z", "entity_id": "a",'
        b' "features": {"x": 1.5, "s": "2.5", "c": "NL"}}',
        b'{"event_id": "e2", "event_time": "2024-05-01T12:00:00.000123+02:00",'
        b' "features": {"x": 10, "c": true}}',
        b'{"event_id": "e3", "event_time": "2024-05-01t12:30:00.5z", "entity_id": "a",'
        b' "features": {"x": null, "s": "n/a"}}',
        _event("e4", T0.astimezone(plus2), {"x": 1e150, "c": 7}, "b").to_json(),
        _event("e5", T0 + timedelta(microseconds=1), {"x": -0.0}, "b").to_json(),
        _event("e1", T0, {"x": 1.5}, "a").to_json(),  # a redelivery
    ]
    plan = plan_batch(
        [RawEvent(0, i, v, None) for i, v in enumerate(raws)], DictStateStore(), computer
    )
    assert len(plan.computed) == len(raws)
    for computed in plan.computed:
        encoded = computed.vector_json()
        assert FeatureVector.model_validate_json(encoded) == computed.vector
        assert json.loads(encoded) == json.loads(computed.vector.to_json())
        assert computed.key() == computed.vector.key().encode()


def test_without_aggregates_no_state_is_kept() -> None:
    computer = FeatureComputer(_pipeline(numeric=["x"]))
    states = DictStateStore()
    plan = plan_batch(_minutes(("e1", 0), ("e2", 1)), states, computer, JumpGuard(None))
    assert [c.features["x"] for c in plan.computed] == [1.0, 1.0]
    assert states.data == {}


def test_idle_entities_are_forgotten_and_no_vector_changes() -> None:
    """Entities come and go over a day; each is forgotten once its newest entry is a
    window plus the lateness behind its partition. The vectors equal those of a run
    that keeps every state, and the states kept stay few."""
    lateness = timedelta(minutes=5)
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "x", "how": "sum", "window": "30m"}]),
        allowed_lateness=lateness,
    )
    rng = random.Random(3)
    records = []
    for i in range(3000):  # 30 s apart over 25 h; each entity lives for about an hour
        at = T0 + timedelta(seconds=30 * i) - timedelta(seconds=rng.uniform(0, 200))
        entity = f"u{i // 120}-{rng.randrange(4)}"
        event = _event(f"e{i}", at, {"x": rng.randint(0, 9)}, entity)
        partition = sum(map(ord, entity)) % 2  # an entity's events share a partition
        records.append(RawEvent(partition, i, event.to_json(), None))
    kept_all = DictStateStore()
    expected = [c.features for r in records for c in plan_batch([r], kept_all, computer).computed]
    idle = IdleEntities(computer.retention // timedelta(microseconds=1))
    states, jumps, got, most = DictStateStore(idle), JumpGuard(None), [], 0
    for start in range(0, len(records), 50):
        plan = plan_batch(records[start : start + 50], states, computer, jumps)
        got += [c.features for c in plan.computed]
        clocks = {p: time_us(t) for (_, p), t in jumps.clock.last_times().items()}
        for entity_id, partition in idle.sweep(clocks):
            states.delete(entity_id, partition)
        most = max(most, len(states.data))
    assert got == expected
    assert len(kept_all.data) == 100 and most <= 16


def _both_ways(
    computer: FeatureComputer, events: Sequence[Event], restart_at: int | None = None
) -> None:
    """`update` on Windows gives exactly `compute`'s vectors and states, event by event;
    at `restart_at` the windows are rebuilt from what they wrote out (`drain`, every few
    events, as a changelog would keep it), as after a recovery."""
    states: dict[str, EntityState] = {}
    windows: dict[str, Window] = {}
    changelog: dict[str, dict[int, Record]] = {}

    def write_out() -> None:
        for key, window in windows.items():
            added, dropped = window.drain()
            kept = changelog.setdefault(key, {})
            kept.update((record[2], record) for record in added)
            for number in dropped:
                del kept[number]
            assert sorted(kept) == sorted(window.written()) == sorted(window.n[window.head :])

    for position, event in enumerate(events):
        key = computer.entity_of(event)
        if position % 7 == 0:
            write_out()
        if position == restart_at:
            write_out()
            windows = {
                k: Window.from_records(computer, list(changelog[k].values()), w.next)
                for k, w in windows.items()
            }
        expected, states[key] = computer.compute(event, states.get(key))
        window = windows.setdefault(key, computer.window(None))
        duplicate = computer.seen(window, event.event_id)
        got, stored = computer.update(event, window)
        assert got == expected, (position, event.event_id)
        assert window.state() == states[key], (position, event.event_id)
        assert not (duplicate and stored)
    write_out()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_updating_a_window_equals_computing_a_state(seed: int) -> None:
    aggregates = [
        {"field": "amount", "how": how, "window": w} for how in HOWS for w in ("5m", "1h")
    ]
    computer = FeatureComputer(
        _pipeline(aggregates=aggregates), allowed_lateness=timedelta(minutes=30)
    )
    _both_ways(computer, _random_stream(seed, n=500), restart_at=250)
    tight = FeatureComputer(
        _pipeline(aggregates=aggregates), allowed_lateness=timedelta(minutes=2), max_entries=7
    )
    _both_ways(tight, _random_stream(seed, n=500, late_by=timedelta(hours=2)))


def test_running_sums_are_exact_whatever_the_order() -> None:
    """Values of very different sizes: the running sums leave no rounding behind."""
    rng = random.Random(5)
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "x", "how": h, "window": "10s"} for h in HOWS]),
        allowed_lateness=timedelta(seconds=30),
    )
    values = [rng.choice([1e16, -1e16, 1.0, 0.1, 3e-5, -7.25]) * rng.random() for _ in range(400)]
    events = [
        _event(f"e{i}", T0 + timedelta(seconds=i + rng.choice([0, 0, 0, -3, -20])), {"x": v})
        for i, v in enumerate(values)
    ]
    _both_ways(computer, events)
    window = computer.window(None)
    sums = []
    for i, x in enumerate([1e16, 1.0, -1e16, 0.1]):  # a float running sum would say 0.0, 0.1
        vector, _ = computer.update(_event(f"s{i}", T0 + timedelta(seconds=i), {"x": x}), window)
        sums.append(vector["x_sum_10s"])
    assert sums == [1e16, 1e16 + 1.0, 1.0, 1.1]


def test_a_hot_entity_costs_what_leaves_its_window_not_what_it_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """10,000 entries in one window: an event in order touches a handful of them."""
    computer = FeatureComputer(
        _pipeline(aggregates=[{"field": "x", "how": h, "window": "1h"} for h in HOWS]),
        max_entries=10_000,
    )
    window = computer.window(None)
    for i in range(12_000):
        computer.update(_event(f"e{i}", T0 + timedelta(seconds=0.1 * i), {"x": i % 97}), window)
    assert len(window) == 10_000
    calls: list[float | None] = []
    original = Running.add

    def counting(self: Running, value: float | None, time: int = 0, number: int = 0) -> None:
        calls.append(value)
        original(self, value, time, number)

    monkeypatch.setattr(Running, "add", counting)
    vector, stored = computer.update(
        _event("next", T0 + timedelta(seconds=1200.1), {"x": 5}), window
    )
    assert stored and calls == [5.0] * len(HOWS)
    assert vector["x_count_1h"] == 10_001.0  # the window before the bound drops the oldest
    assert len(window) == 10_000
