"""aiokafka clients configured the Driftline way.

Producers are idempotent with `acks=all`; consumers never auto-commit, so a
service commits an offset only after the output it caused is acknowledged.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.topics import DLQ_MAX_BYTES

__all__ = ["make_consumer", "make_producer"]


def make_producer(bootstrap_servers: str, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=DLQ_MAX_BYTES + 64 * 1024,
    )


def make_consumer(
    *topics: str, bootstrap_servers: str, group_id: str | None, client_id: str
) -> AIOKafkaConsumer:
    """A consumer of `topics` in `group_id` (None: no group, partitions assigned by hand)."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
