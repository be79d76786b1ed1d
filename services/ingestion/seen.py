"""Which event_ids ingestion has already forwarded, within the dedup window.

Each record remembers the raw message (topic/partition/offset) that was forwarded
and, for events, the entity, so labels can be keyed like their event. A record is
written only after the forwarded copy is acknowledged by the broker: a redelivered
raw message whose own coordinates are on record is known to be done already.

`RedisSeenStore` keeps it in bounded memory, about 40 bytes per id plus the entity:

- an id is an 8-byte digest (blake2b of `kind:event_id`); two ids share one with
  probability about n / 2**64 per lookup (n ids in the window: 1e9 gives 5e-11), and
  the later is then dead-lettered as a duplicate;
- a record is its source's partition and offset (8 bytes; the topic follows from
  the kind) and the event's entity (up to `MAX_ENTITY_BYTES`; a longer one is not
  kept, and a label whose event had one is keyed by its own key);
- records go into time buckets a quarter of the window long, each a set of small
  hashes (shards, `ENTRIES_PER_SHARD` records each) that Redis stores as listpacks,
  with no per-record key, pointer or expiry: the bucket's keys expire as a whole,
  one window after the bucket ends. So a record lives between one and 1.25 windows,
  and memory is the rate times 1.25 windows times the bytes per record;
- a bucket's shard count is fixed when it opens, from the previous bucket's count of
  records (kept in the store's `meta` hash), so the shards stay small as the rate
  changes; a lookup checks the five buckets the window spans, in one script call.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.typing import EncodableT

__all__ = [
    "ENTRIES_PER_SHARD",
    "MAX_ENTITY_BYTES",
    "HiredisPackingConnection",
    "InMemorySeenStore",
    "RedisSeenStore",
    "SeenRecord",
    "SeenStore",
    "decode_record",
    "digest",
    "encode_record",
    "pack_with_hiredis",
]

MAX_ENTITY_BYTES = 48  # longer entities are not kept (a listpack value stays <= 64 bytes)
ENTRIES_PER_SHARD = 100  # Redis keeps a hash of <= 128 entries as a compact listpack
MIN_SHARDS = 4096  # a first bucket holds ~400,000 ids compactly; later ones size themselves
BUCKETS_PER_WINDOW = 4


class SeenRecord(NamedTuple):
    """What is remembered of a forwarded id (a named tuple: one per forwarded message)."""

    source: str  # "topic/partition/offset" of the raw message that was forwarded
    entity_id: str | None = None


class SeenStore(Protocol):
    @property
    def records(self) -> int:
        """How many the store holds (the window's), as of the last `remember`."""

    async def lookup(self, keys: list[str]) -> list[SeenRecord | None]: ...

    async def remember(self, records: dict[str, SeenRecord]) -> None: ...


class InMemorySeenStore:
    """For unit tests: a dict, no expiry."""

    def __init__(self) -> None:
        self.seen: dict[str, SeenRecord] = {}

    @property
    def records(self) -> int:
        return len(self.seen)

    async def lookup(self, keys: list[str]) -> list[SeenRecord | None]:
        return [self.seen.get(k) for k in keys]

    async def remember(self, records: dict[str, SeenRecord]) -> None:
        self.seen.update(records)


# ARGV: namespace, n buckets, then (bucket, shards) n times, newest first, then the
# digests. Returns each digest's record, or false. (Keys are made here, from the
# digest: a standalone Redis, not a cluster.)
_LOOKUP = """
local ns, n = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 3 + 2 * n, #ARGV do
  local digest = ARGV[i]
  local hi = struct.unpack('>I4', digest)
  local found = false
  for b = 0, n - 1 do
    local key = ns .. ':' .. ARGV[3 + 2 * b] .. ':' .. (hi % tonumber(ARGV[4 + 2 * b]))
    local value = redis.call('HGET', key, digest)
    if value then found = value break end
  end
  out[#out + 1] = found
end
return out
"""

# ARGV: namespace, bucket, shards, expire-at (unix seconds), then digest, record pairs.
# Returns the records in the buckets still listed in `meta` (the window's).
_REMEMBER = """
local ns, bucket, shards, at = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local touched, added = {}, 0
for i = 5, #ARGV, 2 do
  local key = ns .. ':' .. bucket .. ':' .. (struct.unpack('>I4', ARGV[i]) % shards)
  added = added + redis.call('HSETNX', key, ARGV[i], ARGV[i + 1])
  touched[key] = true
end
for key in pairs(touched) do redis.call('EXPIREAT', key, at) end
redis.call('HINCRBY', ns .. ':meta', 'entries:' .. bucket, added)
local total, meta = 0, redis.call('HGETALL', ns .. ':meta')
for i = 1, #meta, 2 do
  if string.sub(meta[i], 1, 8) == 'entries:' then total = total + tonumber(meta[i + 1]) end
end
return total
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def digest(key: str) -> bytes:
    """The 8-byte digest an id is kept as."""
    return hashlib.blake2b(key.encode(), digest_size=8).digest()


def encode_record(record: SeenRecord) -> bytes:
    """Partition (2 bytes), offset (6) and the entity, if short enough.

    >>> encode_record(SeenRecord("events.raw/2/300", "u1")).hex()
    '000200000000012c7531'
    """
    _, partition, offset = record.source.rsplit("/", 2)
    head = int(partition).to_bytes(2, "big") + int(offset).to_bytes(6, "big")
    entity = (record.entity_id or "").encode()
    return head + entity if len(entity) <= MAX_ENTITY_BYTES else head


def decode_record(topic: str, value: bytes) -> SeenRecord:
    """The record `encode_record` made, for an id of `topic`'s kind.

    >>> decode_record("events.raw", encode_record(SeenRecord("events.raw/2/300", "u1")))
    SeenRecord(source='events.raw/2/300', entity_id='u1')
    """
    partition, offset = int.from_bytes(value[:2], "big"), int.from_bytes(value[2:8], "big")
    entity = value[8:].decode() if len(value) > 8 else None
    return SeenRecord(f"{topic}/{partition}/{offset}", entity)


class RedisSeenStore:
    """Records in time buckets of small hashes (see the module doc); a batch is one
    script call to look up and one to remember."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        topics: Mapping[str, str],
        window_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.topics = dict(topics)  # kind ("event", "label") -> its raw topic
        self.bucket_s = max(1, -(-window_s // BUCKETS_PER_WINDOW))
        self.window_s = window_s
        self.clock = clock
        self._lookup = redis.register_script(_LOOKUP)
        self._remember = redis.register_script(_REMEMBER)
        self._shards: dict[int, int] = {}  # bucket -> shards, once known
        self.records = 0

    @property
    def meta_key(self) -> str:
        return f"{self.namespace}:meta"

    def bucket(self) -> int:
        return int(self.clock() // self.bucket_s)

    async def lookup(self, keys: list[str]) -> list[SeenRecord | None]:
        if not keys:
            return []
        now = self.bucket()
        live = list(range(now, now - BUCKETS_PER_WINDOW - 1, -1))
        shards = await self._known_shards(live)
        buckets: list[Any] = []
        for b in live:
            if b in shards:
                buckets += [b, shards[b]]
        if not buckets:
            return [None] * len(keys)
        args = [self.namespace, len(buckets) // 2, *buckets, *(digest(k) for k in keys)]
        values = await self._lookup(args=args)
        return [
            None if v is None else decode_record(self.topics[k.partition(":")[0]], v)
            for k, v in zip(keys, values, strict=True)
        ]

    async def remember(self, records: dict[str, SeenRecord]) -> None:
        if not records:
            return
        bucket = self.bucket()
        shards = await self._open(bucket)
        expire_at = (bucket + 1) * self.bucket_s + self.window_s
        pairs: list[Any] = []
        for key, record in records.items():
            pairs += [digest(key), encode_record(record)]
        self.records = int(
            await self._remember(args=[self.namespace, bucket, shards, expire_at, *pairs])
        )

    async def entries(self) -> dict[int, int]:
        """Records per live bucket (for the metrics)."""
        meta = await self.redis.hgetall(self.meta_key)
        out = {}
        for field, value in meta.items():
            kind, _, bucket = _text(field).partition(":")
            if kind == "entries":
                out[int(bucket)] = int(value)
        return out

    async def _known_shards(self, buckets: list[int]) -> dict[int, int]:
        missing = [b for b in buckets if b not in self._shards]
        if missing:
            found = await self.redis.hmget(self.meta_key, [f"shards:{b}" for b in missing])
            for b, value in zip(missing, found, strict=True):
                if value is not None:
                    self._shards[b] = int(value)
        return {b: self._shards[b] for b in buckets if b in self._shards}

    async def _open(self, bucket: int) -> int:
        """The bucket's shard count, chosen by whoever writes to it first."""
        known = (await self._known_shards([bucket])).get(bucket)
        if known is not None:
            return known
        before = await self.redis.hget(self.meta_key, f"entries:{bucket - 1}")
        expected = int(before or 0)
        shards = MIN_SHARDS
        while shards * ENTRIES_PER_SHARD < expected:
            shards *= 2
        await self.redis.hsetnx(self.meta_key, f"shards:{bucket}", shards)
        chosen = (await self._known_shards([bucket]))[bucket]
        # the meta fields of buckets past the window go (a few fields per bucket)
        fields = [_text(f) for f in await self.redis.hkeys(self.meta_key)]
        stale = [f for f in fields if int(f.partition(":")[2]) < bucket - BUCKETS_PER_WINDOW]
        if stale:
            await self.redis.hdel(self.meta_key, *stale)
        for b in [b for b in self._shards if b < bucket - BUCKETS_PER_WINDOW]:
            del self._shards[b]
        return chosen


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
