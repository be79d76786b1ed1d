"""Serving's handlers: plain functions of (input, dependencies), no Kafka and no HTTP.

`predict_request` answers one HTTP request: the entity's live row from the online
store, the request's features merged over the row's raw event values, the vector
computed by the same `FeatureComputer` the features service uses (train/serve
parity), and the champion's prediction. `score_vector` scores one `FeatureVector`
from the `features` topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.serving.errors import FeatureStoreUnavailable, InvalidFeatures
from services.serving.models import LoadedModel, ModelHolder
from shared.clock import utcnow
from shared.feature_store import OnlineStore
from shared.features import FeatureComputer
from shared.messages import Event, FeatureVector, Prediction

__all__ = ["Served", "predict_request", "score_vector", "stream_prediction_id"]


@dataclass(frozen=True, slots=True)
class Served:
    """An HTTP prediction: the message to publish and the vector the model saw."""

    prediction: Prediction
    features_used: dict[str, float | None]


def stream_prediction_id(event_id: str, model: str, version: str) -> str:
    """The id of a stream prediction: the same event, model and version give the same id."""
    return f"{event_id}:{model}:stream:{version}"


async def predict_request(
    *,
    entity_id: str,
    event_id: str | None,
    features: Mapping[str, Any],
    holder: ModelHolder,
    store: OnlineStore,
    computer: FeatureComputer,
    now: datetime | None = None,
) -> Served:
    """Predict for `entity_id` as of now, the request's `features` over its live values."""
    model = holder.require()  # read once: a swap during this request does not affect it
    try:
        row = await store.read(entity_id)
    except Exception as error:
        raise FeatureStoreUnavailable(
            f"the online feature store is unavailable: {error!r}"
        ) from error
    merged = {**(row.raw if row is not None else {}), **features}
    try:
        event = Event(
            event_id=event_id or uuid.uuid4().hex,
            event_time=now or utcnow(),
            entity_id=entity_id,
            features=merged,
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InvalidFeatures(f"the request and the entity's live features: {problems}") from error
    vector, _ = computer.compute(event, row.state if row is not None else None)
    prediction = _prediction(
        model,
        vector,
        prediction_id=uuid.uuid4().hex,
        event_id=event.event_id,
        entity_id=entity_id,
        event_time=event.event_time,
        source="http",
    )
    return Served(prediction, vector)


def score_vector(vector: FeatureVector, model: LoadedModel) -> Prediction:
    """The `stream` prediction of `model` for one feature vector."""
    return _prediction(
        model,
        vector.features,
        prediction_id=stream_prediction_id(vector.event_id, model.name, model.version),
        event_id=vector.event_id,
        entity_id=vector.entity_id,
        event_time=vector.event_time,
        source="stream",
    )


def _prediction(
    model: LoadedModel,
    vector: Mapping[str, float | None],
    *,
    prediction_id: str,
    event_id: str,
    entity_id: str | None,
    event_time: datetime,
    source: str,
) -> Prediction:
    scored = model.predict(vector)
    return Prediction.model_validate(
        {
            "prediction_id": prediction_id,
            "event_id": event_id,
            "entity_id": entity_id,
            "model": model.name,
            "model_version": model.version,
            "y_pred": scored.y_pred,
            "probabilities": scored.probabilities,
            "source": source,
            "event_time": event_time,
            "time": utcnow(),
        }
    )
