"""Live-feature reads for `/predict`: the reads of one event-loop turn go to Redis together.

`CoalescingReader` wraps a `RedisOnlineStore`: every `read` made before the loop
next runs its callbacks joins one pipeline of `HGETALL`s (one round trip, one
parse pass), so under load a worker pays the client's per-command overhead once
per turn instead of once per request; alone, a read costs what it did. The client
is opened with `socket_timeout` (see `bootstrap.features_redis`), so a stalled
Redis fails every waiting read with a timeout, which `/predict` answers with 503.
"""

from __future__ import annotations

import asyncio

from shared import tasks
from shared.feature_store import EntityRow, RedisOnlineStore, row_from_hash

__all__ = ["CoalescingReader"]


class CoalescingReader:
    """`read` as `RedisOnlineStore.read`, batched per event-loop turn; writes pass through."""

    def __init__(self, store: RedisOnlineStore) -> None:
        self.store = store
        self._pending: list[tuple[str, asyncio.Future[EntityRow | None]]] = []

    async def write_batch(self, rows: list[EntityRow]) -> int:
        return await self.store.write_batch(rows)

    async def read(self, entity_id: str) -> EntityRow | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EntityRow | None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._send)
        self._pending.append((entity_id, future))
        return await future

    def _send(self) -> None:
        pending, self._pending = self._pending, []
        tasks.start(self._read_all(pending), name="serving-live-read")

    async def _read_all(self, pending: list[tuple[str, asyncio.Future[EntityRow | None]]]) -> None:
        try:
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for entity_id, _ in pending:
                    pipe.hgetall(self.store.key(entity_id))
                results = await pipe.execute()
        except Exception as error:
            for _, future in pending:
                if not future.done():
                    future.set_exception(error)
            return
        for (entity_id, future), stored in zip(pending, results, strict=True):
            if future.done():  # its request was cancelled
                continue
            try:
                future.set_result(row_from_hash(entity_id, stored))
            except Exception as error:  # a malformed row fails its own request only
                future.set_exception(error)
