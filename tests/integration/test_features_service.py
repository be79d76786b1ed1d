"""The features service against the real broker and Redis: vectors, Redis rows, restarts.

Events are produced with kcat straight to `{prefix}events`; every vector on
`{prefix}features` must equal `FeatureComputer` run in-process on the same events.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from redis.asyncio import Redis

from services.features.handlers import DictStateStore, RawEvent, plan_batch
from shared.feature_store import EntityRow, InMemoryOnlineStore, RedisOnlineStore
from shared.features import FeatureComputer
from shared.kafka import make_consumer
from shared.messages import Event
from shared.pipeline import load_pipeline
from tests.support import (
    ADMIN_KAFKA,
    BOOTSTRAP,
    REDIS_URL,
    ServiceProcess,
    kcat,
    kcat_produce,
    kcat_read,
    metric_value,
    wait_for_count,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., ServiceProcess]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATENESS = timedelta(hours=1)
ENTITIES = ["alice", "bob", "carol", "dave", None]

PIPELINE = """\
name: shop
task: binary
features:
  numeric: [amount, age]
  categorical: [country]
  aggregates:
    - {field: amount, how: count, window: 30m}
    - {field: amount, how: sum, window: 1h}
    - {field: amount, how: mean, window: 10m}
    - {field: amount, how: min, window: 1h}
    - {field: amount, how: max, window: 1h}
    - {field: amount, how: std, window: 1h}
models:
  - name: logreg
"""


@pytest.fixture
def pipeline_path(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


def _events(seed: int, start: int, n: int, step_s: int = 10) -> list[Event]:
    """Entities and a global stream; some events late (within LATENESS), some redelivered."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(start, start + n):
        at = T0 + timedelta(seconds=step_s * i)
        if rng.random() < 0.15:
            at -= timedelta(seconds=rng.randint(1, 20 * 60))
        amount: float | str | None = round(rng.uniform(0, 500), 2)
        if rng.random() < 0.1:
            amount = rng.choice([None, "n/a", "12.5"])
        features = {
            "amount": amount,
            "age": rng.randint(18, 90),
            "country": rng.choice(["NL", "DE", "FR", None]),
        }
        entity = rng.choice(ENTITIES)
        events.append(Event(event_id=f"e{i}", event_time=at, entity_id=entity, features=features))
        if rng.random() < 0.03:  # a redelivered copy of a recent event
            events.append(rng.choice(events[-10:]))
    return events


def _messages(events: list[Event]) -> list[tuple[bytes | None, bytes | None]]:
    return [(e.key().encode(), e.to_json()) for e in events]


def _reference(
    computer: FeatureComputer, events: list[Event]
) -> tuple[dict[str, Any], dict[str, EntityRow | None]]:
    """In-process run: the vector of each event_id (duplicates must agree), and the rows
    an online store holds after the same writes (late events' rows are stale: skipped)."""
    records = [RawEvent(0, i, e.to_json(), None) for i, e in enumerate(events)]
    plan = plan_batch(records, DictStateStore(), computer)
    vectors: dict[str, dict[str, Any]] = {}
    for computed in plan.computed:
        vector = json.loads(computed.vector.to_json())
        assert vectors.setdefault(vector["event_id"], vector) == vector
    store = InMemoryOnlineStore()
    asyncio.run(store.write_batch([c.row for c in plan.computed]))
    keys = sorted({e.key() for e in events})
    return vectors, {key: asyncio.run(store.read(key)) for key in keys}


def _published(prefix: str) -> list[dict[str, Any]]:
    return [{**json.loads(m["payload"]), "_key": m["key"]} for m in kcat_read(f"{prefix}features")]


def _wait_for_ids(prefix: str, ids: set[str], timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = _published(prefix)
        if {v["event_id"] for v in found} >= ids or time.monotonic() > deadline:
            return found
        time.sleep(1)


def _strip(vector: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in vector.items() if k != "_key"}


async def _rows(prefix: str, entities: list[str]) -> dict[str, EntityRow | None]:
    redis = Redis.from_url(REDIS_URL)
    try:
        store = RedisOnlineStore(redis, namespace=f"driftline:{prefix}features")
        return {entity: await store.read(entity) for entity in entities}
    finally:
        await redis.aclose()


def _start(factory: Factory, pipeline: Path, tmp_path: Path, **env: str) -> ServiceProcess:
    service = factory(
        "features",
        PIPELINE_CONFIG=str(pipeline),
        ALLOWED_LATENESS_S=str(LATENESS.total_seconds()),
        DATA_DIR=str(tmp_path / "faust"),
        **env,
    )
    return service.start(timeout=120)


def test_every_event_yields_its_point_in_time_vector_and_redis_the_latest(
    service_factory: Factory, prefix: str, pipeline_path: Path, tmp_path: Path
) -> None:
    computer = FeatureComputer(load_pipeline(pipeline_path), allowed_lateness=LATENESS)
    events = _events(seed=11, start=0, n=300)
    expected, expected_rows = _reference(computer, events)
    service = _start(service_factory, pipeline_path, tmp_path)
    kcat_produce(
        f"{prefix}events",
        [*_messages(events), (b"alice", b"{oops"), (b"bob", b'{"event_id": "x"}')],
    )

    found = wait_for_count([f"{prefix}features"], len(events))[f"{prefix}features"]
    published = [{**json.loads(m["payload"]), "_key": m["key"]} for m in found]
    assert len(published) == len(events), "exactly one vector per event message"
    assert Counter(v["event_id"] for v in published) == Counter(e.event_id for e in events)
    for vector in published:
        assert _strip(vector) == expected[vector["event_id"]]
        assert vector["_key"] == (vector["entity_id"] or "global")
        assert vector["feature_set_version"] == computer.version
    assert {k for v in published for k in v["features"]} >= {"country=NL", "amount_std_1h"}

    rows = asyncio.run(_rows(prefix, list(expected_rows)))
    assert rows == expected_rows
    in_state = 0
    for key, row in rows.items():
        assert row is not None
        mine = [e for e in events if e.key() == key]
        assert row.event_time == max(e.event_time for e in mine)
        assert row.features == expected[row.event_id]["features"]
        # Parity: what serving does (an event + the state read back) gives the published
        # vector, for every event that state holds (late ones reach Redis with the next).
        stored = set(row.state["id"])
        for event in mine:
            if event.event_id in stored:
                vector, _ = computer.compute(event, row.state)
                assert vector == expected[event.event_id]["features"]
                in_state += 1
    assert in_state > 0.8 * len(events)

    metrics = httpx.get(f"{service.url}/metrics").text
    assert f"driftline_features_events_processed_total {float(len(events))}" in metrics
    assert 'driftline_features_invalid_events_total{code="invalid_json"} 1.0' in metrics
    assert 'driftline_features_invalid_events_total{code="missing_field"} 1.0' in metrics
    duplicates = len(events) - len({e.event_id for e in events})
    assert f"driftline_features_duplicate_events_total {float(duplicates)}" in metrics
    health = httpx.get(f"{service.url}/healthz")
    assert (health.status_code, health.json()["assigned_partitions"]) == (200, [0, 1, 2])


def test_an_event_dated_hours_ahead_does_not_freeze_its_entitys_row(
    service_factory: Factory, prefix: str, pipeline_path: Path, tmp_path: Path
) -> None:
    """A mistyped date mid-stream: its vector goes out, but the entity's Redis row and
    window go on with the real events (the row would have refused every one after it)."""
    events = [
        Event(
            event_id=f"z{i}",
            event_time=T0 + (timedelta(hours=3) if i == 30 else timedelta(seconds=10 * i)),
            entity_id="zed",
            features={"amount": 1.0, "age": 40, "country": "NL"},
        )
        for i in range(60)
    ]
    service = _start(service_factory, pipeline_path, tmp_path)
    kcat_produce(f"{prefix}events", _messages(events))
    found = _wait_for_ids(prefix, {e.event_id for e in events})
    vectors = {v["event_id"]: v["features"] for v in found}
    assert len(vectors) == len(events)
    assert vectors["z30"]["amount_count_30m"] == 1.0  # its own vector, as of its time
    assert vectors["z59"]["amount_count_30m"] == 59.0  # the window left it out
    row = asyncio.run(_rows(prefix, ["zed"]))["zed"]
    assert row is not None and row.event_id == "z59"
    assert row.event_time == T0 + timedelta(seconds=590)
    assert "driftline_features_held_jumps 1.0" in httpx.get(f"{service.url}/metrics").text


def test_an_entity_gone_quiet_is_forgotten_and_stays_forgotten_after_a_restart(
    service_factory: Factory, prefix: str, pipeline_path: Path, tmp_path: Path
) -> None:
    """Its newest entry is 2 h (the largest window, 1 h, plus the lateness, 1 h) behind
    its partition: the state is deleted, with a tombstone on the changelog, so a
    restarted worker does not recover it; its next event starts a fresh window."""
    computer = FeatureComputer(load_pipeline(pipeline_path), allowed_lateness=LATENESS)

    def event(event_id: str, entity: str, minutes: float) -> Event:
        at = T0 + timedelta(minutes=minutes)
        return Event(event_id=event_id, event_time=at, entity_id=entity, features={"amount": 1})

    # "old" twice, then 20 others (on every partition) for three hours, one a minute
    events = [event("o1", "old", 0), event("o2", "old", 1)]
    events += [event(f"n{i}", f"n{i % 20}", 2 + i) for i in range(180)]
    service = _start(service_factory, pipeline_path, tmp_path)
    kcat_produce(f"{prefix}events", _messages(events))
    _wait_for_ids(prefix, {e.event_id for e in events})
    deadline = time.monotonic() + 30
    while metric_value(service, "driftline_features_entities_forgotten_total") < 1:
        assert time.monotonic() < deadline, "old was never forgotten"
        time.sleep(0.5)
    assert metric_value(service, "driftline_features_entities") == 20.0

    service.stop(signal.SIGKILL)
    service = _start(service_factory, pipeline_path, tmp_path)
    back = [event("o3", "old", 182), event("n180", "n0", 182)]
    kcat_produce(f"{prefix}events", _messages(back))
    found = {v["event_id"]: v for v in _wait_for_ids(prefix, {"o3", "n180"})}
    assert found["o3"]["features"]["amount_count_30m"] == 1.0
    expected, _ = _reference(computer, events + back)  # a run that forgets nothing
    assert _strip(found["o3"]) == expected["o3"]
    assert metric_value(service, "driftline_features_entities") == 21.0  # the 20, and old anew


def test_a_hot_entity_writes_what_changed_and_recovers_its_whole_window(
    service_factory: Factory, prefix: str, pipeline_path: Path, tmp_path: Path
) -> None:
    """1,500 events of one entity, 2 s apart (all in its 1 h windows), in batches of 20:
    the changelogs hold one record per entry stored (and a tombstone per entry dropped)
    plus a small head per batch, not the whole window per batch (about 75 batches of up
    to 1,500 entries). After a SIGKILL the window is rebuilt from those records: the next
    event's vector equals an uninterrupted run's."""
    computer = FeatureComputer(load_pipeline(pipeline_path), allowed_lateness=LATENESS)
    rng = random.Random(3)

    def event(i: int) -> Event:
        at = T0 + timedelta(seconds=2 * i - rng.choice([0, 0, 0, 7]))
        amount = round(rng.uniform(0, 500), 2)
        return Event(event_id=f"h{i}", event_time=at, entity_id="hot", features={"amount": amount})

    events = [event(i) for i in range(1500)]
    service = _start(service_factory, pipeline_path, tmp_path, BATCH_SIZE="20")
    kcat_produce(f"{prefix}events", _messages(events))
    _wait_for_ids(prefix, {e.event_id for e in events})
    app = f"{prefix}features"  # the group id tests give the service
    entries = kcat_read(f"{app}-entity_entries-changelog")
    heads = kcat_read(f"{app}-entity_state-changelog")
    entry_bytes = sum(len(m["payload"] or "") for m in entries)
    head_bytes = sum(len(m["payload"] or "") for m in heads)
    assert len([m for m in entries if m["payload"] is not None]) == 1500
    assert entry_bytes < 1500 * 120, entry_bytes  # one record per entry, about 60 bytes
    assert head_bytes < len(heads) * 40 and len(heads) <= 1500 / 20 + 5, (head_bytes, len(heads))

    service.stop(signal.SIGKILL)
    _start(service_factory, pipeline_path, tmp_path)
    after = Event(
        event_id="after",
        event_time=T0 + timedelta(seconds=3000),
        entity_id="hot",
        features={"amount": 1.5},
    )
    kcat_produce(f"{prefix}events", _messages([after]))
    found = {v["event_id"]: v for v in _wait_for_ids(prefix, {"after"})}
    expected, _ = _reference(computer, [*events, after])
    assert _strip(found["after"]) == expected["after"]
    assert found["after"]["features"]["amount_count_30m"] > 850  # about 1,800 s / 2 s


def test_records_faust_never_delivers_at_the_end_of_a_stream_are_read(
    service_factory: Factory, prefix: str, pipeline_path: Path, tmp_path: Path
) -> None:
    """The group's committed offset is moved past the last 30 events while the service
    is down (what faust's fetcher dropping a stream's last records around a recovery
    leaves): no later record shows the gap, so the quiet service reads them itself."""
    computer = FeatureComputer(load_pipeline(pipeline_path), allowed_lateness=LATENESS)
    events = _events(seed=11, start=0, n=80)
    first, rest = events[:50], events[50:]
    service = _start(service_factory, pipeline_path, tmp_path)
    kcat_produce(f"{prefix}events", _messages(first))
    _wait_for_ids(prefix, {e.event_id for e in first})
    service.stop(signal.SIGTERM)
    kcat_produce(f"{prefix}events", _messages(rest))
    asyncio.run(_commit_ends(f"{prefix}events", group=f"{prefix}features"))

    _start(service_factory, pipeline_path, tmp_path)
    published = _wait_for_ids(prefix, {e.event_id for e in events}, timeout=60)
    assert {v["event_id"] for v in published} == {e.event_id for e in events}
    expected, _ = _reference(computer, events)
    assert all(_strip(v) == expected[v["event_id"]] for v in published)


async def _commit_ends(topic: str, group: str) -> None:
    """Commit `group`'s offsets on every partition of `topic` at its end."""
    consumer = make_consumer(
        bootstrap_servers=BOOTSTRAP, group_id=group, client_id="test-commit-ends", **ADMIN_KAFKA
    )
    await consumer.start()
    try:
        listed = subprocess.run([*kcat(), "-L", "-t", topic, "-J"], capture_output=True, check=True)
        [meta] = json.loads(listed.stdout)["topics"]
        partitions = [TopicPartition(topic, p["partition"]) for p in meta["partitions"]]
        assert partitions, f"no partitions of {topic}"
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit({tp: end for tp, end in ends.items()})
    finally:
        await consumer.stop()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_mid_stream_loses_nothing_and_counts_nothing_twice(
    service_factory: Factory,
    prefix: str,
    pipeline_path: Path,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    computer = FeatureComputer(load_pipeline(pipeline_path), allowed_lateness=LATENESS)
    first, middle, last = (
        _events(seed=5, start=0, n=200, step_s=2),
        _events(seed=6, start=200, n=2000, step_s=2),
        _events(seed=7, start=2200, n=200, step_s=2),
    )
    events = [*first, *middle, *last]
    expected, expected_rows = _reference(computer, events)
    topic = f"{prefix}events"

    service = _start(service_factory, pipeline_path, tmp_path, BATCH_SIZE="20")
    kcat_produce(topic, _messages(first))
    _wait_for_ids(prefix, {e.event_id for e in first})
    kcat_produce(topic, _messages(middle))
    while (at_signal := len(_published(prefix))) <= len(first):
        time.sleep(0.05)
    service.stop(sig)
    assert at_signal < len(first) + len(middle), "the signal came mid-stream"

    _start(service_factory, pipeline_path, tmp_path, BATCH_SIZE="20")
    kcat_produce(topic, _messages(last))
    published = _wait_for_ids(prefix, {e.event_id for e in events})

    assert {v["event_id"] for v in published} == {e.event_id for e in events}, "nothing lost"
    copies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for vector in published:
        copies[vector["event_id"]].append(_strip(vector))
    for event_id, vectors in copies.items():
        assert all(v == expected[event_id] for v in vectors), f"{event_id}: {vectors}"
    sent = Counter(e.event_id for e in events)
    got = Counter(v["event_id"] for v in published)
    if sig == signal.SIGTERM:
        assert got == sent, "a graceful stop commits what it published"
    else:
        assert all(got[i] >= n for i, n in sent.items()), "redelivered, never skipped"

    assert asyncio.run(_rows(prefix, list(expected_rows))) == expected_rows


def test_healthz_turns_503_while_redis_is_down_and_nothing_is_published(
    service_factory: Factory, prefix: str, pipeline_path: Path, tmp_path: Path
) -> None:
    service = _start(service_factory, pipeline_path, tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    assert httpx.get(f"{service.url}/healthz").json()["redis_failing"] is False
    kcat_produce(f"{prefix}events", _messages(_events(seed=1, start=0, n=3)))
    deadline = time.monotonic() + 30
    while service.healthy() and time.monotonic() < deadline:
        time.sleep(0.2)
    health = httpx.get(f"{service.url}/healthz")
    assert (health.status_code, health.json()["redis_failing"]) == (503, True)
    assert kcat_read(f"{prefix}features") == [], "no vector before its row is stored"
    assert (
        "driftline_features_redis_errors_total 0.0" not in httpx.get(f"{service.url}/metrics").text
    )
    service.stop(signal.SIGKILL)  # a graceful stop would wait for Redis: nothing is acked
