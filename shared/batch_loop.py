"""The consume, process, commit loop that ingestion and serving's stream scorer share.

`BatchLoop.run` polls a batch and hands it to `process`, which produces its output,
waits for the broker's acks and then calls `commit`. A batch that fails is retried
from its first offsets after `RETRY_SECONDS`, so nothing is skipped; a stop waits for
the batch in hand, so nothing is repeated either. An empty poll updates the consumer
lag gauge.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import Gauge

from shared import tasks

__all__ = ["RETRY_SECONDS", "Batch", "BatchLoop"]

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0

Batch = dict[TopicPartition, list[ConsumerRecord]]


class BatchLoop:
    """Polls `consumer` in batches of `batch_size`; subclasses implement `process`."""

    def __init__(self, consumer: AIOKafkaConsumer, *, batch_size: int, lag: Gauge) -> None:
        self.consumer = consumer
        self.batch_size = batch_size
        self.lag = lag
        self.last_poll = time.monotonic()

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self.last_poll

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.batch_size)
            self.last_poll = time.monotonic()
            if not batch:
                await self.update_lag()
                continue
            try:
                await tasks.finish(self.process(batch))  # a stop waits for its commit
            except Exception:
                log.exception(
                    "%s: batch failed; retrying from its first offsets", type(self).__name__
                )
                for tp, records in batch.items():
                    self.consumer.seek(tp, records[0].offset)
                await asyncio.sleep(RETRY_SECONDS)

    async def process(self, batch: Batch) -> None:
        raise NotImplementedError

    async def commit(self, batch: Batch) -> None:
        """Commit the offsets just past `batch` (its output is acknowledged)."""
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError:
            # A rebalance moved these partitions; their new owner re-reads the batch.
            log.warning("offset commit failed after a rebalance: %s", offsets)

    async def update_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                position = await self.consumer.position(tp)
                self.lag.labels(tp.topic, tp.partition).set(max(0, high - position))
