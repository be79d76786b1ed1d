"""Which event_ids ingestion has already forwarded, within the dedup window.

Each record remembers the raw message (topic/partition/offset) that was forwarded
and, for events, the entity, so labels can be keyed like their event. A record is
written only after the forwarded copy is acknowledged by the broker: a redelivered
raw message whose own coordinates are on record is known to be done already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

__all__ = ["InMemorySeenStore", "RedisSeenStore", "SeenRecord", "SeenStore"]


@dataclass(frozen=True)
class SeenRecord:
    source: str  # "topic/partition/offset" of the raw message that was forwarded
    entity_id: str | None = None


class SeenStore(Protocol):
    async def lookup(self, keys: list[str]) -> list[SeenRecord | None]: ...

    async def remember(self, records: dict[str, SeenRecord], ttl_s: int) -> None: ...


class InMemorySeenStore:
    """For unit tests: a dict, no expiry."""

    def __init__(self) -> None:
        self.records: dict[str, SeenRecord] = {}

    async def lookup(self, keys: list[str]) -> list[SeenRecord | None]:
        return [self.records.get(k) for k in keys]

    async def remember(self, records: dict[str, SeenRecord], ttl_s: int) -> None:
        self.records.update(records)


class RedisSeenStore:
    """One string key per id with a TTL; lookups and writes pipelined."""

    def __init__(self, redis: Redis, namespace: str = "driftline:ingest:seen") -> None:
        self.redis = redis
        self.namespace = namespace

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    async def lookup(self, keys: list[str]) -> list[SeenRecord | None]:
        if not keys:
            return []
        values = await self.redis.mget([self._key(k) for k in keys])
        return [None if v is None else SeenRecord(**json.loads(v)) for v in values]

    async def remember(self, records: dict[str, SeenRecord], ttl_s: int) -> None:
        if not records:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, record in records.items():
            value = json.dumps({"source": record.source, "entity_id": record.entity_id})
            pipe.set(self._key(key), value, ex=ttl_s)
        await pipe.execute()
