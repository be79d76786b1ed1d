"""The ingestion demo: a handful of good and bad events, and where each one lands.

Sends events over HTTP (`POST /events`) and straight to `events.raw` with a Kafka
producer, then reads `events` and `ingest.dlq` and prints each outcome.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.http_keys import bearer
from shared.settings import CommonSettings
from shared.topics import Topics, partitions_of

__all__ = ["run_ingestion_demo"]


def _event(event_id: str, entity: str, amount: float) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "event_id": event_id,
        "event_time": now,
        "entity_id": entity,
        "features": {"amount": amount},
    }


async def _end_offsets(
    consumer: AIOKafkaConsumer, bootstrap: str, topic: str, auth: dict[str, Any]
) -> dict[TopicPartition, int]:
    partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic, auth)]
    return dict(await consumer.end_offsets(partitions))


async def _read_from(
    consumer: AIOKafkaConsumer, start: dict[TopicPartition, int], want: int, timeout: float
) -> list[bytes]:
    consumer.assign(list(start))
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(values) < want and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500)
        values += [m.value for messages in batch.values() for m in messages if m.value]
    return values


async def run_ingestion_demo(ingestion_url: str = "http://127.0.0.1:8001") -> None:
    settings = CommonSettings()
    topics = Topics(settings.topic_prefix)
    run = uuid.uuid4().hex[:6]
    # read as the operator, write as the outside producer
    reader = settings.kafka("operator")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, **reader)
    await consumer.start()
    bootstrap = settings.kafka_bootstrap_servers
    starts = {
        t: await _end_offsets(consumer, bootstrap, t, reader) for t in (topics.events, topics.dlq)
    }

    good = [_event(f"demo-{run}-{i}", f"customer-{i % 2}", 10.0 * i) for i in range(4)]
    print(f"POST /events with {len(good)} good events ...")
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{ingestion_url}/events", json=good, headers=bearer("writer"))
        print(f"  -> {answer.status_code} {answer.json()}")
        broken = {"event_id": f"demo-{run}-bad", "features": {"amount": "ten", "tags": [1]}}
        print("POST /events with a broken event ...")
        answer = await http.post(f"{ingestion_url}/events", json=broken, headers=bearer("writer"))
        print(f"  -> {answer.status_code} {json.dumps(answer.json())}")

    raw_bad = [b'{"event_id": "oops"', b"\xff\xfe not utf-8", json.dumps(good[0]).encode()]
    print(
        f"Producing {len(raw_bad)} bad messages straight to {topics.events_raw} (one is a duplicate) ..."
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, **settings.kafka("producer")
    )
    await producer.start()
    for value in raw_bad:
        await producer.send_and_wait(topics.events_raw, value, key=b"demo")
    await producer.stop()

    accepted = await _read_from(consumer, starts[topics.events], len(good), 30)
    letters = await _read_from(consumer, starts[topics.dlq], len(raw_bad), 30)
    await consumer.stop()
    print(f"\n{topics.events}: {len(accepted)} events")
    for value in accepted:
        event = json.loads(value)
        print(f"  {event['event_id']}  entity={event['entity_id']}  features={event['features']}")
    print(f"{topics.dlq}: {len(letters)} dead letters")
    for value in letters:
        letter = json.loads(value)
        original = base64.b64decode(letter["value_b64"] or "")[:40]
        error = letter["error"]
        print(
            f"  {error['code']:<12} field={error['field']}  {error['message'][:60]}  original={original!r}"
        )


if __name__ == "__main__":
    asyncio.run(run_ingestion_demo())
