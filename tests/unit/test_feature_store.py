"""Online store conformance: every backend passes the same checks.

The in-memory backend runs everywhere; the Redis one runs against the real Redis
(marked `integration`), each test in its own namespace.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from shared.feature_store import EntityRow, InMemoryOnlineStore, OnlineStore, RedisOnlineStore
from tests.support import REDIS_URL

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

StoreFactory = Callable[..., OnlineStore]


def _row(entity: str, minutes: int, event_id: str, x: float | None = 1.0) -> EntityRow:
    at = T0 + timedelta(minutes=minutes)
    return EntityRow(
        entity_id=entity,
        event_time=at,
        event_id=event_id,
        features={"x": x, "country=NL": 1.0},
        raw={"x": x, "country": "NL", "vip": True},
        state={"v": 1, "entries": [[1, event_id, {"x": x}]]},
    )


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """A factory of stores of one backend: `make_store(ttl_s=...)`."""
    if request.param == "memory":
        yield lambda ttl_s=0: InMemoryOnlineStore(ttl_s=ttl_s)
        return
    request.getfixturevalue("stack")
    redis = Redis.from_url(REDIS_URL)
    namespace = f"driftline:test-{uuid.uuid4().hex[:10]}.features"
    yield lambda ttl_s=60: RedisOnlineStore(redis, namespace=namespace, ttl_s=ttl_s)
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_a_row_reads_back_as_written(make_store: StoreFactory) -> None:
    store = make_store()
    row = _row("c1", 0, "e1", x=2.5)
    assert await store.write_batch([row]) == 1
    assert await store.read("c1") == row
    assert await store.read("nobody") is None
    assert await store.write_batch([]) == 0


async def test_an_older_event_never_overwrites_a_newer_one(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.write_batch([_row("c1", 10, "new"), _row("c1", 5, "old")]) == 1
    assert (await store.read("c1")).event_id == "new"  # type: ignore[union-attr]
    assert await store.write_batch([_row("c1", 9, "older")]) == 0
    assert (await store.read("c1")).event_id == "new"  # type: ignore[union-attr]
    assert await store.write_batch([_row("c1", 10, "same-time")]) == 1, "equal time: later wins"
    assert await store.write_batch([_row("c1", 11, "newer", x=None)]) == 1
    newest = await store.read("c1")
    assert newest == _row("c1", 11, "newer", x=None)


async def test_a_batch_holds_many_entities_in_order(make_store: StoreFactory) -> None:
    store = make_store()
    rows = [_row(f"c{i % 5}", i, f"e{i}", x=float(i)) for i in range(50)]
    assert await store.write_batch(rows) == 50
    for entity in range(5):
        last = 45 + entity
        assert await store.read(f"c{entity}") == _row(f"c{entity}", last, f"e{last}", float(last))


async def test_rows_read_are_copies(make_store: StoreFactory) -> None:
    store = make_store()
    await store.write_batch([_row("c1", 0, "e1")])
    first = await store.read("c1")
    assert first is not None
    first.state["entries"].clear()
    first.features["x"] = 99.0
    assert await store.read("c1") == _row("c1", 0, "e1")


async def test_rows_expire_unless_written_again(make_store: StoreFactory) -> None:
    store = make_store(ttl_s=0.6)
    await store.write_batch([_row("kept", 0, "e1"), _row("gone", 0, "e2")])
    await asyncio.sleep(0.4)
    await store.write_batch([_row("kept", 1, "e3")])  # refreshes its TTL
    await asyncio.sleep(0.4)
    assert (await store.read("kept")) == _row("kept", 1, "e3")
    assert await store.read("gone") is None


@pytest.mark.integration
async def test_redis_keeps_one_hash_per_entity_with_a_ttl(stack: None) -> None:
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    namespace = f"driftline:test-{uuid.uuid4().hex[:10]}.features"
    store = RedisOnlineStore(redis, namespace=namespace, ttl_s=30)
    try:
        await store.write_batch([_row("c1", 0, "e1")])
        stored = await redis.hgetall(f"{namespace}:c1")
        assert stored["event_id"] == "e1"
        assert stored["event_time"] == "2024-05-01T12:00:00+00:00"
        assert stored["event_time_us"] == str(int(T0.timestamp() * 1_000_000))
        assert stored["raw"] == '{"country":"NL","vip":true,"x":1.0}'
        assert 25_000 < await redis.pttl(f"{namespace}:c1") <= 30_000
    finally:
        await redis.delete(f"{namespace}:c1")
        await redis.aclose()
