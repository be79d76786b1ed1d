"""The Kafka side of ingestion: consume raw topics, produce the plan, then commit.

Order per batch: produce every output, wait for all acks (acks=all, idempotent
producer), remember the forwarded ids, commit the offsets. A crash at any point
re-delivers the batch; ids already remembered are skipped. Delivery from raw to
`events`/`labels`/`ingest.dlq` is therefore at-least-once, and effectively once
per event_id except for a crash between the acks and the `remember` write.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from services.ingestion import metrics
from services.ingestion.handlers import BatchPlan, RawRecord, plan_batch
from services.ingestion.seen import SeenStore
from shared.topics import Topics

__all__ = ["IngestionWorker"]

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


class IngestionWorker:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        seen: SeenStore,
        topics: Topics,
        *,
        max_bytes: int,
        dedup_window_s: int,
        batch_size: int,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.seen = seen
        self.topics = topics
        self.max_bytes = max_bytes
        self.dedup_window_s = dedup_window_s
        self.batch_size = batch_size
        self.last_poll = time.monotonic()

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self.last_poll

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.batch_size)
            self.last_poll = time.monotonic()
            if not batch:
                await self._update_lag()
                continue
            try:
                await self._process(batch)
            except Exception:
                log.exception("batch failed; it will be retried from its first offsets")
                for tp, messages in batch.items():
                    self.consumer.seek(tp, messages[0].offset)
                await asyncio.sleep(RETRY_SECONDS)

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        records = [
            RawRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
            for messages in batch.values()
            for m in messages
        ]
        plan = await plan_batch(
            records, topics=self.topics, seen=self.seen, max_bytes=self.max_bytes
        )
        sent = [await self.producer.send(o.topic, o.value, key=o.key) for o in plan.outputs]
        await asyncio.gather(*sent)
        await self.seen.remember(plan.remember, self.dedup_window_s)
        self._count(plan)
        offsets = {tp: messages[-1].offset + 1 for tp, messages in batch.items()}
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError:
            # A rebalance moved these partitions; their new owner skips what we forwarded.
            log.warning("offset commit failed after a rebalance: %s", offsets)

    def _count(self, plan: BatchPlan) -> None:
        now_ms = time.time() * 1000
        for out in plan.outputs:
            if out.outcome == "accepted":
                metrics.ACCEPTED.labels(out.kind).inc()
            else:
                metrics.DEAD_LETTERED.labels(out.kind, out.code or "unknown").inc()
                if out.outcome == "duplicate":
                    metrics.DUPLICATES.labels(out.kind).inc()
            if out.timestamp_ms is not None:
                metrics.LATENCY.observe(max(0.0, (now_ms - out.timestamp_ms) / 1000))

    async def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                position = await self.consumer.position(tp)
                metrics.CONSUMER_LAG.labels(tp.topic, tp.partition).set(max(0, high - position))
