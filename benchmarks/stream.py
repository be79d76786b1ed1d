"""A steady stream for benchmarks that measure something else while events flow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.stack import ADMIN_KAFKA, BOOTSTRAP
from shared.kafka import make_producer, send_all
from shared.topics import Topics

__all__ = ["flowing"]


async def _paced(
    topics: Topics, events: list, labels: list, rate: int, stop: threading.Event
) -> int:
    """Publish events (and each one's label) at `rate` per second until `stop` or the end."""
    producer = make_producer(BOOTSTRAP, client_id="driftline-bench-stream", **ADMIN_KAFKA)
    await producer.start()
    sent = 0
    started = time.monotonic()
    pending: list[Any] = []
    try:
        step = max(1, rate // 50)  # 50 small batches a second
        while sent < len(events) and not stop.is_set():
            chunk = slice(sent, sent + step)
            pending += await send_all(producer, topics.events_raw, events[chunk])
            pending += await send_all(producer, topics.labels_raw, labels[chunk])
            sent += len(events[chunk])
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            if len(pending) > 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


@contextmanager
def flowing(topics: Topics, events: list, labels: list, rate: int) -> Iterator[None]:
    """Events and labels flow into `events.raw`/`labels.raw` at `rate`/s while inside."""
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(_paced(topics, events, labels, rate, stop)), daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
