"""Which event_ids ingestion has already forwarded, within the dedup window.

Each record remembers the raw message (topic/partition/offset) that was forwarded
and, for events, the entity, so labels can be keyed like their event. A record is
written only after the forwarded copy is acknowledged by the broker: a redelivered
raw message whose own coordinates are on record is known to be done already.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import hiredis
import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.typing import EncodableT

__all__ = [
    "HiredisPackingConnection",
    "InMemorySeenStore",
    "RedisSeenStore",
    "SeenRecord",
    "SeenStore",
    "pack_with_hiredis",
]


class SeenRecord(NamedTuple):
    """What is remembered of a forwarded id (a named tuple: one per forwarded message)."""

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


class HiredisPackingConnection(Connection):
    """A TCP connection that packs commands with hiredis, as redis-py's sync client
    does; its asyncio client packs them in Python (redis/redis-py#4176), about 1 us an
    argument, and a batch's MGET and remember script carry thousands of arguments.
    The bytes are the same; whatever hiredis refuses is packed (or refused) as before.
    """

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        encoder = self.encoder
        if encoder.encoding != "utf-8" or encoder.encoding_errors != "strict":
            return super().pack_command(*args)
        first = args[0]
        words: tuple[Any, ...]
        if isinstance(first, str):  # e.g. "SCRIPT LOAD": one word per argument
            words = tuple(first.encode().split())
        elif isinstance(first, bytes) and b" " in first:
            words = tuple(first.split())
        else:
            words = (first,)
        try:
            return [hiredis.pack_command((*words, *args[1:]))]
        except TypeError:  # a bool, None, a bytearray: the Python packer decides
            return super().pack_command(*args)


def pack_with_hiredis(redis: Redis) -> Redis:
    """`redis`, its plain TCP connections made `HiredisPackingConnection`s (TLS and
    Unix-socket connections are left as they are)."""
    pool = redis.connection_pool
    if pool.connection_class is Connection:
        pool.connection_class = HiredisPackingConnection
    return redis
