"""Our adapters against the real services: topic creation and the Redis seen-store."""

from __future__ import annotations

import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from services.ingestion.seen import RedisSeenStore, SeenRecord, pack_with_hiredis
from shared.topics import TOPICS, ensure_topics
from tests.support import ADMIN_KAFKA, BOOTSTRAP, REDIS_URL

pytestmark = pytest.mark.integration


async def test_ensure_topics_creates_each_once_with_partitions_compaction_and_retention(
    prefix: str,
) -> None:
    created = await ensure_topics(BOOTSTRAP, prefix, partitions=4, auth=ADMIN_KAFKA)
    assert sorted(created) == sorted(prefix + spec.name for spec in TOPICS)
    assert await ensure_topics(BOOTSTRAP, prefix, partitions=4, auth=ADMIN_KAFKA) == []

    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA)
    await admin.start()
    try:
        described = await admin.describe_topics([f"{prefix}events", f"{prefix}models"])
        assert [len(t["partitions"]) for t in described] == [4, 4]
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}models")]
        )
        configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
        assert configs["cleanup.policy"] == "compact"
        kept = {}
        for name in ("events", "predictions", "ingest.dlq", "alerts"):
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}{name}")]
            )
            configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
            kept[name] = (int(configs["retention.ms"]) // 3_600_000, configs["retention.bytes"])
        assert kept == {
            "events": (72, "-1"),
            "predictions": (72, "-1"),
            "ingest.dlq": (720, "-1"),
            "alerts": (720, "-1"),
        }
    finally:
        await admin.close()


TOPIC_OF = {"event": "events.raw", "label": "labels.raw"}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def seen_store(redis: Redis, prefix: str, clock: Clock, window_s: int = 400) -> RedisSeenStore:
    return RedisSeenStore(
        redis, f"test:{prefix}seen", topics=TOPIC_OF, window_s=window_s, clock=clock
    )


async def test_redis_seen_store_remembers_for_one_to_one_and_a_quarter_windows(
    prefix: str,
) -> None:
    redis = Redis.from_url(REDIS_URL)
    bucket = int(time.time()) // 100  # buckets of 100 s, from now (keys expire in real time)
    clock = Clock(bucket * 100.0)
    store = seen_store(redis, prefix, clock)
    try:
        assert await store.lookup(["event:a", "label:a"]) == [None, None]
        await store.remember({"event:a": SeenRecord("events.raw/0/1", "u1")})
        await store.remember({"label:a": SeenRecord("labels.raw/2/9")})
        assert await store.lookup(["event:a", "label:a", "event:b"]) == [
            SeenRecord("events.raw/0/1", "u1"),
            SeenRecord("labels.raw/2/9", None),
            None,
        ]
        clock.now += 399  # still in the window, from a later bucket and another process
        assert (await seen_store(redis, prefix, clock).lookup(["event:a"]))[0] is not None
        keys = [k async for k in redis.scan_iter(match=f"test:{prefix}seen:{bucket}:*")]
        assert keys, "the bucket's shards"
        for key in keys:  # they expire one window after their bucket ends
            assert await redis.expiretime(key) == (bucket + 1) * 100 + 400
        clock.now += 101  # past the bucket's end plus the window: no longer looked at
        assert await seen_store(redis, prefix, clock).lookup(["event:a"]) == [None]
    finally:
        await redis.aclose()


async def test_redis_seen_store_with_hiredis_packing_round_trips_a_batch(prefix: str) -> None:
    redis = pack_with_hiredis(Redis.from_url(REDIS_URL))
    store = seen_store(redis, prefix, Clock(time.time()))
    records = {
        f"event:é{i}": SeenRecord(f"events.raw/0/{i}", None if i % 3 else f"u{i}")
        for i in range(3000)
    }
    try:
        await store.remember(records)
        assert await store.lookup([*records, "event:other"]) == [*records.values(), None]
    finally:
        await redis.aclose()


async def test_redis_seen_store_costs_under_64_bytes_per_event_as_buckets_grow(
    prefix: str,
) -> None:
    """An event and its label, 100,000 of them: Redis's own memory count of the store's
    keys stays under 64 bytes per event once a bucket's shard count follows the rate."""
    redis = pack_with_hiredis(Redis.from_url(REDIS_URL))
    first = int(time.time()) // 1000  # buckets of 1,000 s
    clock = Clock(first * 1000.0)
    store = seen_store(redis, prefix, clock, window_s=4000)
    n = 100_000
    try:
        for bucket in range(2):  # the second bucket opens with shards for the first's count
            clock.now = (first + bucket) * 1000.0
            for start in range(0, n, 5000):
                await store.remember(
                    {
                        f"event:{bucket}-{i}": SeenRecord(
                            f"events.raw/1/{i}", f"customer-{i % 500}"
                        )
                        for i in range(start, start + 5000)
                    }
                    | {
                        f"label:{bucket}-{i}": SeenRecord(f"labels.raw/1/{i}")
                        for i in range(start, start + 5000)
                    }
                )
        second = f"test:{prefix}seen:{first + 1}:*"
        keys = [k async for k in redis.scan_iter(match=second, count=10_000)]
        used = sum([await redis.memory_usage(k, samples=0) or 0 for k in keys])
        assert used / n < 64, (used / n, len(keys))
        found = await store.lookup(["event:0-7", "label:1-99999", "event:2-0"])
        assert found == [
            SeenRecord("events.raw/1/7", "customer-7"),
            SeenRecord("labels.raw/1/99999"),
            None,
        ]
        assert await store.entries() == {first: 2 * n, first + 1: 2 * n}
    finally:
        await redis.aclose()
