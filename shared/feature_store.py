"""The online feature store: each entity's live features and window state.

`OnlineStore` is the interface (`write_batch`, `read`); `RedisOnlineStore` keeps one
Redis hash per entity, `InMemoryOnlineStore` is the fake for unit tests. Both obey
the same rules, checked by one conformance suite:

- writes are ordered by event time: a row whose `event_time` is older than the
  stored one is skipped (a row with an equal time replaces it: the later write of
  one instant wins, and a redelivered row rewrites identical data);
- `write_batch` returns how many rows were written (the rest were stale);
- every write refreshes the entity's TTL; an entity not written for `ttl_s` is gone.

Redis layout: key `f"{namespace}:{entity_id}"`, fields `event_time` (RFC 3339),
`event_time_us` (the compared number), `event_id`, and JSON `features`, `raw`, `state`.
The compare-and-set runs as one Lua script per row, all rows of a batch in one
pipeline (one round trip).

>>> import asyncio
>>> from datetime import datetime, timezone
>>> store = InMemoryOnlineStore()
>>> row = EntityRow("c7", datetime(2024, 5, 1, tzinfo=timezone.utc), "e1", {"x": 1.0}, {"x": 1}, {})
>>> older = EntityRow("c7", datetime(2024, 4, 1, tzinfo=timezone.utc), "e0", {"x": 0.0}, {"x": 0}, {})
>>> asyncio.run(store.write_batch([row, older])), asyncio.run(store.read("c7")).event_id
(1, 'e1')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from shared.features import EntityState, time_us

__all__ = [
    "EntityRow",
    "InMemoryOnlineStore",
    "OnlineStore",
    "RedisOnlineStore",
    "RowReader",
    "row_from_hash",
]


@dataclass(frozen=True)
class EntityRow:
    """One entity's live features as of its latest event, and its window state."""

    entity_id: str
    event_time: datetime
    event_id: str
    features: dict[str, float | None]
    raw: dict[str, Any]  # the event's own feature values, as received
    state: EntityState


class RowReader(Protocol):
    """What serving needs of the store: an entity's row."""

    async def read(self, entity_id: str) -> EntityRow | None:
        """The entity's stored row, or None if it has none (never seen, or expired)."""
        ...


class OnlineStore(RowReader, Protocol):
    """Where live features are kept for serving."""

    async def write_batch(self, rows: list[EntityRow]) -> int:
        """Write rows in order, skipping any older than the stored one; return rows written."""
        ...


# KEYS[1] the entity's hash; ARGV: event_time_us, event_time, event_id, features,
# raw, state, ttl_ms. Returns 1 if written, 0 if the stored row is newer.
_COMPARE_AND_SET = """
local stored = redis.call('HGET', KEYS[1], 'event_time_us')
if stored and tonumber(stored) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'event_time_us', ARGV[1], 'event_time', ARGV[2],
  'event_id', ARGV[3], 'features', ARGV[4], 'raw', ARGV[5], 'state', ARGV[6])
if tonumber(ARGV[7]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
return 1
"""


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


class RedisOnlineStore:
    """One Redis hash per entity under `namespace`; `ttl_s <= 0` means no expiry."""

    def __init__(
        self, redis: Redis, namespace: str = "driftline:features", ttl_s: float = 7 * 24 * 3600
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_ms = int(ttl_s * 1000)
        self._script = redis.register_script(_COMPARE_AND_SET)

    def key(self, entity_id: str) -> str:
        return f"{self.namespace}:{entity_id}"

    async def write_batch(self, rows: list[EntityRow]) -> int:
        if not rows:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                await self._script(
                    keys=[self.key(row.entity_id)],
                    args=[
                        time_us(row.event_time),
                        row.event_time.isoformat(),
                        row.event_id,
                        _dumps(row.features),
                        _dumps(row.raw),
                        _dumps(row.state),
                        self.ttl_ms,
                    ],
                    client=pipe,
                )
            results = await pipe.execute()
        return sum(int(result) for result in results)

    async def read(self, entity_id: str) -> EntityRow | None:
        return row_from_hash(entity_id, await self.redis.hgetall(self.key(entity_id)))


def row_from_hash(entity_id: str, stored: Mapping[bytes | str, bytes | str]) -> EntityRow | None:
    """An entity's stored hash (`HGETALL`) as an `EntityRow`; None for an empty hash."""
    if not stored:
        return None
    fields = {_text(k): _text(v) for k, v in stored.items()}
    return EntityRow(
        entity_id=entity_id,
        event_time=datetime.fromisoformat(fields["event_time"]),
        event_id=fields["event_id"],
        features=orjson.loads(fields["features"]),
        raw=orjson.loads(fields["raw"]),
        state=orjson.loads(fields["state"]),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class InMemoryOnlineStore:
    """The same rules in a dict, for unit tests; `clock` gives seconds (monotonic)."""

    def __init__(self, ttl_s: float = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._rows: dict[str, tuple[EntityRow, float]] = {}

    async def write_batch(self, rows: list[EntityRow]) -> int:
        written = 0
        for row in rows:
            current = await self.read(row.entity_id)
            if current is not None and current.event_time > row.event_time:
                continue
            expires = self.clock() + self.ttl_s if self.ttl_s > 0 else float("inf")
            self._rows[row.entity_id] = (_copy(row), expires)
            written += 1
        return written

    async def read(self, entity_id: str) -> EntityRow | None:
        found = self._rows.get(entity_id)
        if found is None:
            return None
        row, expires = found
        if self.clock() >= expires:
            del self._rows[entity_id]
            return None
        return _copy(row)


def _copy(row: EntityRow) -> EntityRow:
    """A deep copy through JSON, so callers never share mutable state with the store."""
    return EntityRow(
        row.entity_id,
        row.event_time,
        row.event_id,
        orjson.loads(_dumps(row.features)),
        orjson.loads(_dumps(row.raw)),
        orjson.loads(_dumps(row.state)),
    )
