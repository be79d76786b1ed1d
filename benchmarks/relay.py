"""The baseline for every Kafka hop: a bare aiokafka consume, parse, produce relay."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson

from benchmarks.stack import ADMIN_KAFKA, BOOTSTRAP
from shared.kafka import make_consumer, make_producer, produce_all

__all__ = ["relay_rate"]


async def _relay(topic: str, n: int) -> float:
    consumer = make_consumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        **ADMIN_KAFKA,
        group_id=f"relay-{uuid.uuid4().hex[:6]}",
        client_id="relay",
    )
    producer = make_producer(BOOTSTRAP, client_id="relay", **ADMIN_KAFKA)
    await consumer.start()
    await producer.start()
    out = f"{topic}.relay"
    seen = 0
    started: float | None = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batch:
                started = time.perf_counter()
            items = []
            for records in batch.values():
                for record in records:
                    message = orjson.loads(record.value)
                    items.append((record.key or b"", orjson.dumps(message)))
            await produce_all(producer, out, items)
            await consumer.commit()
            seen += len(items)
    finally:
        await consumer.stop()
        await producer.stop()
    assert started is not None
    return n / (time.perf_counter() - started)


def relay_rate(topic: str, n: int) -> float:
    """Messages per second a bare relay moves from `topic` (filled with `n`) to another."""
    return asyncio.run(_relay(topic, n))
