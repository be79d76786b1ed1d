"""The Kafka side of ingestion: consume raw topics, produce the plan, then commit.

Order per batch: produce every output, wait for all acks (acks=all, idempotent
producer), remember the forwarded ids, commit the offsets. A crash at any point
re-delivers the batch; ids already remembered are skipped. Delivery from raw to
`events`/`labels`/`ingest.dlq` is therefore at-least-once, and effectively once
per event_id except for a crash between the acks and the `remember` write.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.ingestion import metrics
from services.ingestion.handlers import RawRecord, plan_batch
from services.ingestion.seen import SeenStore
from shared.batch_loop import Batch, BatchLoop
from shared.kafka import send_all
from shared.topics import Topics

__all__ = ["IngestionWorker"]


class IngestionWorker(BatchLoop):
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        seen: SeenStore,
        topics: Topics,
        *,
        max_bytes: int,
        max_future_s: float,
        batch_size: int,
    ) -> None:
        super().__init__(consumer, batch_size=batch_size, lag=metrics.CONSUMER_LAG)
        self.producer = producer
        self.seen = seen
        self.topics = topics
        self.max_bytes = max_bytes
        self.max_future_s = max_future_s

    async def process(self, batch: Batch) -> None:
        records = [
            RawRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
            for messages in batch.values()
            for m in messages
        ]
        plan = await plan_batch(
            records,
            topics=self.topics,
            seen=self.seen,
            max_bytes=self.max_bytes,
            max_future_s=self.max_future_s,
        )
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for o in plan.outputs:
            by_topic.setdefault(o.topic, []).append((o.key, o.value))
        sent = [f for t, items in by_topic.items() for f in await send_all(self.producer, t, items)]
        await asyncio.gather(*sent)  # every output acknowledged before it is remembered
        await self.seen.remember(plan.remember)
        metrics.DEDUP_RECORDS.set(self.seen.records)
        metrics.count_outputs(plan.outputs)
        await self.commit(batch)
