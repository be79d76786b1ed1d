"""Publishing HTTP predictions without making the client wait for Kafka.

`publish_nowait` appends the encoded prediction to a buffer and returns; one
background task sends whatever has gathered within `linger_s` (50 ms) with
`produce_all` (one wait for every ack per send). At 250 requests/s per worker a
5 ms linger sent one or two predictions per produce request, a CPU cost each request
paid; monitoring joins them with labels that come much later, so 50 ms costs nothing. A failed send is logged and counted, never raised into a
request. Past `max_pending` buffered or in-flight predictions a new one is dropped
and counted (Kafka down must not grow memory without bound). `close` sends what is
left, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer

from services.serving import metrics
from shared import tasks
from shared.kafka import produce_all

__all__ = ["PredictionPublisher"]

log = logging.getLogger(__name__)


class PredictionPublisher:
    """Fire-and-forget, batched producer of predictions to one topic (keyed by entity)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        max_pending: int = 10_000,
        source: str = "http",
        linger_s: float = 0.05,
    ) -> None:
        self.producer = producer
        self.linger_s = linger_s
        self.topic = topic
        self.max_pending = max_pending
        self.source = source
        self._buffer: list[tuple[bytes, bytes]] = []
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._buffer) + self._in_flight

    def start(self) -> None:
        self._task = tasks.start(self._run(), name="serving-prediction-publisher")

    def publish_nowait(self, key: bytes, value: bytes) -> None:
        """Queue one prediction (key and JSON value) and return at once."""
        if self.pending >= self.max_pending:
            metrics.PUBLISH_ERRORS.labels(self.source, "backlog_full").inc()
            log.error("a prediction was not published: %d already pending", self.pending)
            return
        self._buffer.append((key, value))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._closing:
                await asyncio.sleep(self.linger_s)  # let a few more requests join this send
            self._wake.clear()
            await self._send_buffer()
            if self._closing and not self._buffer:
                return

    async def _send_buffer(self) -> None:
        items, self._buffer = self._buffer, []
        if not items:
            return
        self._in_flight = len(items)
        try:
            await produce_all(self.producer, self.topic, items)
        except Exception as error:
            metrics.PUBLISH_ERRORS.labels(self.source, type(error).__name__).inc(len(items))
            log.error("%d predictions not published to %s: %r", len(items), self.topic, error)
        finally:
            self._in_flight = 0

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is buffered and wait for its acks, for at most `timeout` seconds."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout)
        if not task.done():
            log.warning("%d predictions still unsent at shutdown", self.pending)
            await tasks.cancel(task)
