"""The `models` reader: the registry's announcements, from the beginning, then live.

The reader uses no consumer group: it assigns every partition of the compacted
`models` topic (and of `champions`) and seeks to the beginning, so each replica sees
every version and every change of champion. At start, `catch_up` reads to the end
offsets, keeps the newest version per model, folds the champion changes
(`shared.champions`) and loads the champion's version; `run` then hot-swaps each
newer champion version, and each new champion, as it comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from services.serving import metrics
from services.serving.models import ArtifactLoader, ModelHolder
from shared.champions import decode_change
from shared.kafka import read_from_start
from shared.messages import ModelPublished

__all__ = ["ModelWatcher", "decode_published"]

log = logging.getLogger(__name__)


def decode_published(record: ConsumerRecord) -> ModelPublished | None:
    """The announcement in `record`, or None (tombstone, or invalid: logged and counted)."""
    if record.value is None:
        return None
    try:
        return ModelPublished.model_validate_json(record.value)
    except ValidationError as error:
        metrics.INVALID_MESSAGES.labels(record.topic).inc()
        log.warning(
            "invalid model announcement topic=%s partition=%d offset=%d: %s",
            record.topic,
            record.partition,
            record.offset,
            str(error).splitlines()[0],
        )
        return None


class ModelWatcher:
    """Keeps `holder` on the champion's newest loadable version."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        partitions: list[int],
        holder: ModelHolder,
        loader: ArtifactLoader,
        champions: tuple[str, list[int]] | None = None,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.partitions = [TopicPartition(topic, p) for p in partitions]
        # the `champions` topic and its partitions (None: the champion never changes)
        self.champions = (
            [] if champions is None else [TopicPartition(champions[0], p) for p in champions[1]]
        )
        self.holder = holder
        self.loader = loader
        self.last_poll = time.monotonic()
        self.task: asyncio.Task[Any] | None = None  # `run`, once started

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self.last_poll

    def alive(self, max_idle_s: float) -> bool:
        """Whether `run` is running and polled within `max_idle_s`."""
        running = self.task is not None and not self.task.done()
        return running and self.seconds_since_poll() < max_idle_s

    async def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read every announcement and change so far, then load the champion's version."""
        changes = []
        for record in await read_from_start(
            self.consumer, self.partitions + self.champions, timeout_s
        ):
            if record.topic != self.topic:
                changes.append(record)
                continue
            message = decode_published(record)
            if message is not None:
                self.holder.record(message)
        changes.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        for change in filter(None, map(decode_change, changes)):
            self.holder.view.apply(change)
        seen = {name: self.holder.versions(name) for name in self.holder.seen}
        log.info("models seen at start: %s; champion %s", seen, self.holder.view.model)
        await self.holder.follow_view(self.loader)

    async def run(self) -> None:
        """Apply every new announcement: record it, hot-swap a newer champion version."""
        while True:
            batch = await self.consumer.getmany(timeout_ms=500)
            self.last_poll = time.monotonic()
            for record in (r for records in batch.values() for r in records):
                if record.topic != self.topic:
                    await self._champion_change(record)
                    continue
                message = decode_published(record)
                if message is None:
                    continue
                try:
                    await self.holder.offer(message, self.loader)
                except Exception:  # never let one announcement stop the hot swaps
                    metrics.MODEL_LOAD_ERRORS.labels(message.name).inc()
                    log.exception("cannot apply %s version %s", message.name, message.version)

    async def _champion_change(self, record: ConsumerRecord) -> None:
        change = decode_change(record)
        if change is None or not self.holder.view.apply(change):
            return
        log.info("champion %s: %s (%s)", change.action, change.model, change.reason)
        try:
            await self.holder.follow_view(self.loader)
        except Exception:  # never let one change stop the hot swaps
            log.exception("cannot serve the new champion %s", change.model)
