"""Serving's live-row reader against the real Redis: what the store writes, it reads back;
an error reply, a killed connection, a password and a database number."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis

from services.serving.live import LiveRows, RedisReplyError
from shared.feature_store import EntityRow, RedisOnlineStore
from tests.support import REDIS_URL

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _row(entity_id: str, i: int) -> EntityRow:
    return EntityRow(
        entity_id,
        T0 + timedelta(seconds=i),
        f"e{i}",
        {"x": float(i), "y": None},
        {"x": i, "city": "Oslo é"},
        {"n": i, "window": [[1, 2.5]]},
    )


def _with(url: str, *, user: str | None = None, password: str | None = None, db: int) -> str:
    """`url` at database `db`, with `user`/`password` instead of its own if given."""
    parts = urlsplit(url)
    auth, _, host = parts.netloc.rpartition("@")
    if password is not None:
        auth = f"{user or ''}:{password}"
    return urlunsplit((parts.scheme, f"{auth}@{host}" if auth else host, f"/{db}", "", ""))


@pytest.fixture
def namespace() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:features"


async def test_reads_back_what_the_store_wrote_many_at_once(redis: Redis, namespace: str) -> None:
    written = [_row(f"u{i}", i) for i in range(50)]
    await RedisOnlineStore(redis, namespace=namespace, ttl_s=60).write_batch(written)
    rows = LiveRows(REDIS_URL, namespace, timeout_s=2)
    try:
        # all 51 reads are made in one turn of the loop: one write, 51 replies in order
        got = await asyncio.gather(*(rows.read(f"u{i}") for i in range(50)), rows.read("never"))
        assert got == [*written, None]
        assert await rows.read("u7") == written[7]  # the connection is kept
    finally:
        await rows.aclose()
        await redis.delete(*[f"{namespace}:u{i}" for i in range(50)])


async def test_an_error_reply_fails_its_read_only(redis: Redis, namespace: str) -> None:
    await RedisOnlineStore(redis, namespace=namespace, ttl_s=60).write_batch([_row("ok", 1)])
    await redis.set(f"{namespace}:bad", "a string, not a hash")
    rows = LiveRows(REDIS_URL, namespace, timeout_s=2)
    try:
        bad, ok = await asyncio.gather(rows.read("bad"), rows.read("ok"), return_exceptions=True)
        assert isinstance(bad, RedisReplyError) and "WRONGTYPE" in str(bad)
        assert ok == _row("ok", 1)
    finally:
        await rows.aclose()
        await redis.delete(f"{namespace}:bad", f"{namespace}:ok")


async def test_a_killed_connection_is_opened_again(redis: Redis, namespace: str) -> None:
    await RedisOnlineStore(redis, namespace=namespace, ttl_s=60).write_batch([_row("a", 1)])
    rows = LiveRows(REDIS_URL, namespace, timeout_s=2)
    try:
        assert await rows.read("a") == _row("a", 1)
        ours = [c for c in await redis.client_list() if c["cmd"] == "hmget"]
        assert ours, "the reader's connection is not in CLIENT LIST"
        for client in ours:
            await redis.client_kill_filter(_id=client["id"])
        await asyncio.sleep(0.2)  # the loop sees the connection close
        assert await rows.read("a") == _row("a", 1)
    finally:
        await rows.aclose()
        await redis.delete(f"{namespace}:a")


async def test_a_password_and_a_database_from_the_url(redis: Redis, namespace: str) -> None:
    user, secret = f"live{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    await redis.acl_setuser(
        user, enabled=True, passwords=[f"+{secret}"], keys=["*"], commands=["+@all"]
    )
    other_db = Redis.from_url(_with(REDIS_URL, db=3))
    await RedisOnlineStore(other_db, namespace=namespace, ttl_s=60).write_batch([_row("a", 2)])
    good = LiveRows(_with(REDIS_URL, user=user, password=secret, db=3), namespace, timeout_s=2)
    wrong = LiveRows(_with(REDIS_URL, user=user, password="not-it", db=3), namespace, timeout_s=2)
    try:
        assert await good.read("a") == _row("a", 2)
        with pytest.raises(RedisReplyError, match="WRONGPASS"):
            await wrong.read("a")
    finally:
        await good.aclose()
        await wrong.aclose()
        await redis.acl_deluser(user)
        await other_db.delete(f"{namespace}:a")
        await other_db.aclose()
