"""aiokafka clients configured the Driftline way.

Producers are idempotent with `acks=all`; consumers never auto-commit, so a
service commits an offset only after the output it caused is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from shared.topics import DLQ_MAX_BYTES

__all__ = [
    "make_consumer",
    "make_producer",
    "partition_for",
    "produce_all",
    "reached",
    "read_from_start",
    "send_all",
    "send_to_partitions",
]

log = logging.getLogger(__name__)


def make_producer(bootstrap_servers: str, client_id: str, **auth: Any) -> AIOKafkaProducer:
    """An idempotent producer with no linger: every service sends a whole batch, then
    waits for its acks once, so a linger would only add its time to each batch's wait
    (the records sent before that wait already share one request per partition).
    `auth`: the principal's options (`CommonSettings.kafka()`)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=256 * 1024,
        max_request_size=DLQ_MAX_BYTES + 64 * 1024,
        **auth,
    )


def make_consumer(
    *topics: str, bootstrap_servers: str, group_id: str | None, client_id: str, **options: Any
) -> AIOKafkaConsumer:
    """A consumer of `topics` in `group_id` (None: no group, partitions assigned by hand);
    `options` go to `AIOKafkaConsumer` as they are (fetch sizes and waits, say, and the
    principal's `CommonSettings.kafka()`)."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **options,
    )


_PARTITION_CACHE_MAX = 100_000  # keys remembered per producer process (entities repeat)
_partition_cache: dict[tuple[bytes, int], int] = {}


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` (murmur2, as Java's).

    >>> partition_for(b"global", 3), partition_for(b"u1", 3)
    (2, 1)
    """
    cached = _partition_cache.get((key, partitions))
    if cached is None:
        if len(_partition_cache) >= _PARTITION_CACHE_MAX:
            _partition_cache.clear()
        cached = (murmur2(key) & 0x7FFFFFFF) % partitions
        _partition_cache[(key, partitions)] = cached
    return cached


async def send_all(
    producer: AIOKafkaProducer, topic: str, items: Sequence[tuple[bytes | None, bytes]]
) -> list[asyncio.Future[Any]]:
    """Queue `(key, value)` pairs for `topic`; return the futures of their acks.

    Records are grouped by the partition their key picks and appended to producer
    batches directly, so a batch of thousands costs a few awaits, not one per record.
    Order per key is kept (one partition, append order); keyless records all go to
    the partition of the empty key.
    """
    if not items:
        return []
    partitions = producer.client.cluster.partitions_for_topic(topic)
    if not partitions:
        await producer.client._wait_on_metadata(topic)
        partitions = producer.client.cluster.partitions_for_topic(topic)
    count = len(partitions)
    return await send_to_partitions(
        producer, topic, [(partition_for(key or b"", count), key, value) for key, value in items]
    )


async def send_to_partitions(
    producer: AIOKafkaProducer,
    topic: str,
    items: Sequence[tuple[int, bytes | None, bytes | None]],
) -> list[asyncio.Future[Any]]:
    """Queue `(partition, key, value)` records for `topic` (a None value is a tombstone),
    a few producer batches per partition; return the futures of their acks."""
    by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for partition, key, value in items:
        by_partition.setdefault(partition, []).append((key, value))
    sent: list[asyncio.Future[Any]] = []
    for partition, records in by_partition.items():
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    size = len(value or b"")
                    raise ValueError(f"a record of {size} bytes fits no batch of {topic}")
        sent.append(await producer.send_batch(batch, topic, partition=partition))
    return sent


async def produce_all(
    producer: AIOKafkaProducer, topic: str, items: Sequence[tuple[bytes | None, bytes]]
) -> None:
    """`send_all`, then wait once for every ack. Raises if any send failed."""
    await asyncio.gather(*await send_all(producer, topic, items))


async def read_from_start(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], timeout_s: float | None = None
) -> list[ConsumerRecord[Any, Any]]:
    """Every record on `partitions` up to their end offsets now (the consumer is
    assigned them and stays at their end); with `timeout_s`, what came in that time
    (logged)."""
    consumer.assign(list(partitions))
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(list(partitions))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    records: list[ConsumerRecord[Any, Any]] = []
    while not await reached(consumer, ends):
        if deadline is not None and time.monotonic() > deadline:
            log.warning("%s not read to their end in %.0f s; going on", partitions, timeout_s)
            break
        batch = await consumer.getmany(*partitions, timeout_ms=500, max_records=5000)
        records += [r for rs in batch.values() for r in rs]
    return records


async def reached(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    """Whether `consumer` has read every partition of `ends` up to its end offset."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True
