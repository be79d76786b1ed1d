"""Which event_ids ingestion has already forwarded, within the dedup window.

Each record remembers the raw message (topic/partition/offset) that was forwarded
and, for events, the entity, so labels can be keyed like their event. A record is
written only after the forwarded copy is acknowledged by the broker: a redelivered
raw message whose own coordinates are on record is known to be done already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson
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


# KEYS: the ids' keys; ARGV[1]: ttl in seconds, ARGV[2..]: the records, in KEYS' order.
_REMEMBER = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


class RedisSeenStore:
    """One string key per id with a TTL; a batch is one MGET and one script call."""

    def __init__(self, redis: Redis, namespace: str = "driftline:ingest:seen") -> None:
        self.redis = redis
        self.namespace = namespace
        self._remember = redis.register_script(_REMEMBER)

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    async def lookup(self, keys: list[str]) -> list[SeenRecord | None]:
        if not keys:
            return []
        values = await self.redis.mget([self._key(k) for k in keys])
        return [None if v is None else SeenRecord(**orjson.loads(v)) for v in values]

    async def remember(self, records: dict[str, SeenRecord], ttl_s: int) -> None:
        if not records:
            return
        keys = [self._key(key) for key in records]
        values = [
            orjson.dumps({"source": r.source, "entity_id": r.entity_id}) for r in records.values()
        ]
        await self._remember(keys=keys, args=[ttl_s, *values])
