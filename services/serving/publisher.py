"""Publishing HTTP predictions without making the client wait for Kafka.

`publish_nowait` starts a task that produces the prediction and awaits the broker's
acknowledgement; a failure is logged and counted, never raised into the request.
`close` waits (bounded) for what is still in flight at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer

from services.serving import metrics
from shared.messages import Prediction

__all__ = ["PredictionPublisher"]

log = logging.getLogger(__name__)


class PredictionPublisher:
    """Fire-and-forget producer of predictions to one topic (keyed by entity)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, max_pending: int = 10_000) -> None:
        self.producer = producer
        self.topic = topic
        self.max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def publish_nowait(self, prediction: Prediction) -> None:
        """Schedule the send and return at once."""
        if len(self._pending) >= self.max_pending:
            metrics.PUBLISH_ERRORS.labels(prediction.source, "backlog_full").inc()
            log.error(
                "prediction %s not published: %d sends already pending",
                prediction.prediction_id,
                len(self._pending),
            )
            return
        task = asyncio.create_task(self._send(prediction))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, prediction: Prediction) -> None:
        try:
            delivery = await self.producer.send(
                self.topic, prediction.to_json(), key=prediction.key().encode()
            )
            await delivery
        except Exception as error:
            metrics.PUBLISH_ERRORS.labels(prediction.source, type(error).__name__).inc()
            log.error(
                "prediction %s not published to %s: %r",
                prediction.prediction_id,
                self.topic,
                error,
            )

    async def close(self, timeout: float = 10.0) -> None:
        """Wait up to `timeout` seconds for the sends in flight, then cancel the rest."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=timeout)
        for task in late:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
