"""The `features` scorer: every feature vector scored by the champion, as a `stream` prediction.

Per batch: decode each vector, score it with the model served when the batch
started, produce the predictions, wait for the broker's acks, then commit the
offsets. A crash re-delivers the batch; the prediction ids (event, model, version)
are deterministic, so downstream de-duplicates. A vector that arrives while no
model exists yet, or that is not a valid `FeatureVector`, is logged, counted and
skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from services.serving import metrics
from services.serving.errors import PredictionFailed
from services.serving.handlers import score_vector
from services.serving.models import LoadedModel, ModelHolder
from shared.batch_loop import Batch, BatchLoop
from shared.messages import FeatureVector, Prediction

__all__ = ["FeatureScorer", "SkipReason", "score_message"]

log = logging.getLogger(__name__)

SkipReason = Literal["invalid", "no_model", "predict_failed"]


def score_message(
    value: bytes | None, model: LoadedModel | None
) -> tuple[Prediction | None, SkipReason | None, str]:
    """Score one raw `features` message: (prediction, None, "") or (None, reason, why)."""
    try:
        if value is None:
            raise ValueError("null value")
        vector = FeatureVector.model_validate_json(value)
    except (ValidationError, ValueError) as error:
        return None, "invalid", str(error).splitlines()[0]
    if model is None:
        return None, "no_model", "no model loaded yet"
    try:
        return score_vector(vector, model), None, ""
    except PredictionFailed as error:
        return None, "predict_failed", error.detail


class FeatureScorer(BatchLoop):
    """Consumes `features` in its own group and produces `stream` predictions."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        holder: ModelHolder,
        predictions_topic: str,
        *,
        batch_size: int = 500,
    ) -> None:
        super().__init__(consumer, batch_size=batch_size, lag=metrics.STREAM_LAG)
        self.producer = producer
        self.holder = holder
        self.predictions_topic = predictions_topic

    async def process(self, batch: Batch) -> None:
        model = self.holder.current  # one model for the whole batch
        predictions: list[Prediction] = []
        no_model = 0
        for records in batch.values():
            for record in records:
                prediction, reason, why = score_message(record.value, model)
                if prediction is not None:
                    predictions.append(prediction)
                    continue
                assert reason is not None
                metrics.STREAM_SKIPPED.labels(reason).inc()
                if reason == "no_model":
                    no_model += 1
                    continue
                if reason == "invalid":
                    metrics.INVALID_MESSAGES.labels(record.topic).inc()
                log.warning(
                    "skipped %s topic=%s partition=%d offset=%d: %s",
                    reason,
                    record.topic,
                    record.partition,
                    record.offset,
                    why,
                )
        if no_model:
            log.info("skipped %d feature vectors: %s", no_model, "no model loaded yet")
        sent = [
            await self.producer.send(self.predictions_topic, p.to_json(), key=p.key().encode())
            for p in predictions
        ]
        await asyncio.gather(*sent)
        for prediction in predictions:
            metrics.PREDICTIONS.labels("stream", prediction.model).inc()
        await self.commit(batch)
