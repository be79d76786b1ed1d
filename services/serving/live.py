"""Live-feature reads for `/predict`: one pipelined Redis connection per HTTP worker.

`/predict` reads one entity row per request, and redis-py's client costs about
three times the round trip's own CPU per command (measured: ~150 against ~55 us
here), which a busy machine pays in latency. `LiveRows` speaks just what the read
needs (RESP through hiredis's parser) on one connection it owns:

- every `read` made before the event loop next runs its callbacks joins one write
  (`HMGET` of the row's fields per entity); replies come back in order, so several
  turns may be in flight at once;
- each read waits at most `timeout_s`; a read that times out, or a connection that
  drops, closes the connection and fails every read waiting on it (their requests
  answer 503); the next read opens a new one, so a stalled Redis costs one timeout
  per request, never a hung worker;
- an error reply (say, the key holds another type) fails that read only.

It reads the layout `shared.feature_store.RedisOnlineStore` writes (and is checked
against it in `tests/integration/test_live_rows.py`). URLs: `redis://`, `rediss://`
and `unix://`, with the user, password and database they carry.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

from shared.feature_store import EntityRow, row_from_hash

__all__ = ["LiveRows", "RedisReplyError"]

_FIELDS = (b"event_time", b"event_id", b"features", b"raw", b"state")


class RedisReplyError(Exception):
    """Redis answered a command with an error."""


def _pack(*parts: bytes) -> bytes:
    return hiredis.pack_command(parts)  # type: ignore[arg-type]  # (its stub allows one part)


class _Connection(asyncio.Protocol):
    """Replies parsed as they arrive and handed to the waiting futures, in order."""

    def __init__(self) -> None:
        self.parser = hiredis.Reader(replyError=RedisReplyError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():  # its read timed out: the connection is closing anyway
                continue
            if isinstance(reply, RedisReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = ConnectionError(f"the connection to Redis was lost ({exc!r})")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, payload: bytes, futures: list[asyncio.Future[Any]]) -> None:
        assert self.transport is not None
        self.waiting.extend(futures)
        self.transport.write(payload)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _send_pending(
    connection: _Connection, pending: list[tuple[bytes, asyncio.Future[Any]]]
) -> None:
    """One write for a turn's commands; their futures wait in the same order."""
    connection.send(b"".join(command for command, _ in pending), [f for _, f in pending])


class LiveRows:
    """`read(entity_id)` as `RedisOnlineStore.read`, on one pipelined connection (module doc)."""

    def __init__(self, url: str, namespace: str, timeout_s: float) -> None:
        self.options: dict[str, Any] = dict(parse_url(url))
        self.namespace = namespace
        self.timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._pending: list[tuple[bytes, asyncio.Future[Any]]] = []

    def key(self, entity_id: str) -> bytes:
        return f"{self.namespace}:{entity_id}".encode()

    async def read(self, entity_id: str) -> EntityRow | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((_pack(b"HMGET", self.key(entity_id), *_FIELDS), future))
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await future
        except TimeoutError:
            self._drop()  # later replies would go to the wrong reads
            raise
        if reply[0] is None:  # no such key (or a row without its time: treat as none)
            return None
        return row_from_hash(entity_id, dict(zip(_FIELDS, reply, strict=True)))

    async def aclose(self) -> None:
        self._drop()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        connection = self._connection
        if connection is not None and not connection.lost:
            _send_pending(connection, pending)
            return
        asyncio.get_running_loop().create_task(self._connect_then_send(pending))

    async def _connect_then_send(self, pending: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        try:
            connection = await self._connect()
        except Exception as error:
            for _, future in pending:
                if not future.done():
                    future.set_exception(error)
            return
        _send_pending(connection, pending)

    async def _connect(self) -> _Connection:
        """The open connection, or a new one (reads arriving meanwhile share its opening)."""
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            connection = await asyncio.wait_for(self._open(), self.timeout_s)
        except BaseException as error:
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: no "never retrieved" warning
            raise
        else:
            self._connection = connection
            self._connecting.set_result(connection)
            return connection
        finally:
            self._connecting = None

    async def _open(self) -> _Connection:
        options = self.options
        loop = asyncio.get_running_loop()
        connection = _Connection()
        if "path" in options:
            await loop.create_unix_connection(lambda: connection, options["path"])
        else:
            tls = (
                ssl.create_default_context()
                if options.get("connection_class") is SSLConnection
                else None
            )
            await loop.create_connection(
                lambda: connection,
                options.get("host", "localhost"),
                options.get("port", 6379),
                ssl=tls,
            )
        setup: list[bytes] = []
        if options.get("password"):  # an empty one (`redis://:@host`) is none
            user = options.get("username")
            secret = str(options["password"]).encode()
            setup.append(
                _pack(b"AUTH", str(user).encode(), secret) if user else _pack(b"AUTH", secret)
            )
        if options.get("db"):
            setup.append(_pack(b"SELECT", str(options["db"]).encode()))
        if setup:
            futures = [loop.create_future() for _ in setup]
            connection.send(b"".join(setup), futures)
            try:
                await asyncio.gather(*futures)
            except BaseException:
                connection.close()
                raise
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            connection.connection_lost(None)  # fail its waiting reads now, not at the close
