"""Our adapters against the real services: topic creation and the Redis seen-store."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from services.ingestion.seen import RedisSeenStore, SeenRecord, pack_with_hiredis
from shared.topics import TOPICS, ensure_topics
from tests.support import BOOTSTRAP, REDIS_URL

pytestmark = pytest.mark.integration


async def test_ensure_topics_creates_each_once_with_partitions_and_compaction(prefix: str) -> None:
    created = await ensure_topics(BOOTSTRAP, prefix, partitions=4)
    assert sorted(created) == sorted(prefix + spec.name for spec in TOPICS)
    assert await ensure_topics(BOOTSTRAP, prefix, partitions=4) == []

    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        described = await admin.describe_topics([f"{prefix}events", f"{prefix}models"])
        assert [len(t["partitions"]) for t in described] == [4, 4]
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}models")]
        )
        configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
        assert configs["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_redis_seen_store_remembers_with_a_ttl(prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    store = RedisSeenStore(redis, namespace=f"test:{prefix}")
    try:
        assert await store.lookup(["event:a", "event:b"]) == [None, None]
        await store.remember({"event:a": SeenRecord("events.raw/0/1", "u1")}, ttl_s=1)
        assert await store.lookup(["event:a", "event:b"]) == [
            SeenRecord("events.raw/0/1", "u1"),
            None,
        ]
        assert 0 < await redis.pttl(f"test:{prefix}:event:a") <= 1000
        await asyncio.sleep(1.2)
        assert await store.lookup(["event:a"]) == [None]
    finally:
        await redis.aclose()


async def test_redis_seen_store_with_hiredis_packing_round_trips_a_batch(prefix: str) -> None:
    redis = pack_with_hiredis(Redis.from_url(REDIS_URL))
    store = RedisSeenStore(redis, namespace=f"test:{prefix}")
    records = {
        f"event:é{i}": SeenRecord(f"events.raw/0/{i}", None if i % 3 else f"u{i}")
        for i in range(3000)
    }
    try:
        await store.remember(records, ttl_s=60)
        assert await store.lookup([*records, "event:other"]) == [*records.values(), None]
        assert 59_000 < await redis.pttl(f"test:{prefix}:event:é7") <= 60_000
    finally:
        await redis.aclose()
