"""The `features` scorer: every feature vector scored by the champion, as a `stream` prediction.

Per batch: score every message with the model served when the batch started (the
pure `handlers.score_records`, run in a thread so the process's event loop keeps
fetching meanwhile), produce all predictions with `produce_all` (one wait for every
ack), then commit the offsets. A crash re-delivers the batch; the prediction ids
(event, model, version) are deterministic, so downstream de-duplicates. A vector
that arrives while no model exists yet, that is not a valid `FeatureVector`, or
that the model raises on, is logged, counted and skipped, never fatal.

The scorer runs in a process of its own (`stream_process`), so scoring never
competes with HTTP requests for an event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.serving import metrics
from services.serving.handlers import score_records
from services.serving.models import ModelHolder
from shared.batch_loop import Batch, BatchLoop
from shared.clock import utcnow
from shared.kafka import produce_all

__all__ = ["FeatureScorer"]

log = logging.getLogger(__name__)


class FeatureScorer(BatchLoop):
    """Consumes `features` in its own group and produces `stream` predictions."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        holder: ModelHolder,
        predictions_topic: str,
        *,
        batch_size: int = 2000,
    ) -> None:
        super().__init__(consumer, batch_size=batch_size, lag=metrics.STREAM_LAG)
        self.producer = producer
        self.holder = holder
        self.predictions_topic = predictions_topic

    async def process(self, batch: Batch) -> None:
        model = self.holder.current  # one model for the whole batch
        records = [record for records in batch.values() for record in records]
        scored = await asyncio.to_thread(
            score_records, [record.value for record in records], model, utcnow()
        )
        await produce_all(self.producer, self.predictions_topic, scored.records)
        if scored.records:
            assert model is not None
            metrics.PREDICTIONS.labels("stream", model.name).inc(len(scored.records))
        reasons = Counter(reason for _, reason, _ in scored.skipped)
        for reason, count in reasons.items():
            metrics.STREAM_SKIPPED.labels(reason).inc(count)
        if reasons["no_model"]:
            log.info("skipped %d feature vectors: no model loaded yet", reasons["no_model"])
        for index, reason, why in scored.skipped:
            if reason == "no_model":
                continue
            record = records[index]
            if reason == "invalid":
                metrics.INVALID_MESSAGES.labels(record.topic).inc()
            else:
                assert model is not None
                metrics.PREDICT_ERRORS.labels("stream", model.name).inc()
            log.warning(
                "skipped %s topic=%s partition=%d offset=%d: %s",
                reason,
                record.topic,
                record.partition,
                record.offset,
                why,
            )
        await self.commit(batch)
