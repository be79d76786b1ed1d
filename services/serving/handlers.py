"""Serving's handlers: plain functions of (input, dependencies), no Kafka and no HTTP.

`predict_request` answers one HTTP request: the entity's live row from the online
store, the request's features merged over the row's raw event values, the vector
computed by the same `FeatureComputer` the features service uses (train/serve
parity), and the champion's prediction. `score_records` scores a batch of raw
`features` messages for the stream scorer: each parsed once into a `FeatureVector`,
each prediction encoded once.

Predictions are built as the JSON objects of `Prediction` messages and encoded with
orjson (`encode_prediction`): the same document `Prediction.to_json` writes, in a
fraction of the time; `tests/unit/test_serving_handlers.py` checks the two agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from services.serving.errors import FeatureStoreUnavailable, InvalidFeatures, PredictionFailed
from services.serving.models import LoadedModel, ModelHolder
from shared.clock import utcnow
from shared.feature_store import RowReader
from shared.features import FeatureComputer
from shared.messages import GLOBAL_KEY, Event, FeatureVector

__all__ = [
    "MAX_FEATURES",
    "ScoredBatch",
    "Served",
    "SkipReason",
    "encode_prediction",
    "predict_request",
    "prediction_record",
    "score_records",
    "score_vector",
    "stream_prediction_id",
]

MAX_FEATURES = 1000  # an Event's most features; the merged request must fit too

SkipReason = Literal["invalid", "no_model", "predict_failed"]


def encode_prediction(record: Mapping[str, Any]) -> bytes:
    """A prediction's JSON object as message bytes (times in RFC 3339, UTC as `Z`)."""
    return orjson.dumps(record, option=orjson.OPT_UTC_Z)


@dataclass(frozen=True, slots=True)
class Served:
    """An HTTP prediction: the message to publish and the vector the model saw."""

    prediction: dict[str, Any]  # a `Prediction` message, as its JSON object
    features_used: dict[str, float | None]
    explanation: dict[str, Any] | None = None  # when asked for (`shared.explain`)

    def key(self) -> bytes:
        entity_id = self.prediction["entity_id"]
        return (entity_id if entity_id is not None else GLOBAL_KEY).encode()

    def response(self) -> dict[str, Any]:
        """The body of the HTTP answer (`api.PredictResponse`)."""
        p = self.prediction
        return {
            "prediction": p["y_pred"],
            "probabilities": p["probabilities"],
            "model": p["model"],
            "model_version": p["model_version"],
            "prediction_id": p["prediction_id"],
            "event_id": p["event_id"],
            "features_used": self.features_used,
            **({"explanation": self.explanation} if self.explanation is not None else {}),
        }


def stream_prediction_id(event_id: str, model: str, version: str) -> str:
    """The id of a stream prediction: the same event, model and version give the same id."""
    return f"{event_id}:{model}:stream:{version}"


async def predict_request(
    *,
    entity_id: str,
    event_id: str | None,
    features: Mapping[str, Any],
    holder: ModelHolder,
    store: RowReader,
    computer: FeatureComputer,
    now: datetime | None = None,
    explain: bool = False,
) -> Served:
    """Predict for `entity_id` as of now, the request's `features` over its live values;
    with `explain`, each feature's part in the answer too.

    `features` must already be valid Event feature values (the API's `PredictRequest`
    checks them); the row's raw values were checked when their event was ingested.
    """
    model = holder.require()  # read once: a swap during this request does not affect it
    try:
        row = await store.read(entity_id)
    except Exception as error:
        raise FeatureStoreUnavailable(
            f"the online feature store did not answer ({type(error).__name__})",
            cause=repr(error),
        ) from error
    merged = {**row.raw, **features} if row is not None else dict(features)
    if len(merged) > MAX_FEATURES:
        raise InvalidFeatures(
            f"the request and the entity's live features: features: at most {MAX_FEATURES} "
            f"features are allowed, not {len(merged)}"
        )
    event = Event.model_construct(
        event_id=event_id or os.urandom(16).hex(),
        event_time=now or utcnow(),
        entity_id=entity_id,
        features=merged,
    )
    vector, _ = computer.compute(event, row.state if row is not None else None)
    record = prediction_record(
        model,
        vector,
        prediction_id=os.urandom(16).hex(),  # random, as uuid4 (and faster)
        event_id=event.event_id,
        entity_id=entity_id,
        event_time=event.event_time,
        source="http",
        now=event.event_time,
    )
    return Served(record, vector, model.explain(vector) if explain else None)


def score_vector(vector: FeatureVector, model: LoadedModel, now: datetime) -> dict[str, Any]:
    """The `stream` prediction of `model` for one feature vector, as its JSON object."""
    return prediction_record(
        model,
        vector.features,
        prediction_id=stream_prediction_id(vector.event_id, model.name, model.version),
        event_id=vector.event_id,
        entity_id=vector.entity_id,
        event_time=vector.event_time,
        source="stream",
        now=now,
    )


def prediction_record(
    model: LoadedModel,
    vector: Mapping[str, float | None],
    *,
    prediction_id: str,
    event_id: str,
    entity_id: str | None,
    event_time: datetime,
    source: Literal["stream", "http"],
    now: datetime,
) -> dict[str, Any]:
    """`model`'s prediction for `vector` as a `Prediction` message's JSON object."""
    scored = model.predict(vector)
    return {
        "prediction_id": prediction_id,
        "event_id": event_id,
        "entity_id": entity_id,
        "model": model.name,
        "model_version": model.version,
        "y_pred": scored.y_pred,
        "probabilities": scored.probabilities,
        "source": source,
        "event_time": event_time,
        "time": now,
    }


@dataclass
class ScoredBatch:
    """A batch of `features` messages scored: records to produce, and what was skipped."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, Prediction JSON)
    skipped: list[tuple[int, SkipReason, str]] = field(default_factory=list)  # (index, why)


def score_records(
    values: Iterable[bytes | None], model: LoadedModel | None, now: datetime
) -> ScoredBatch:
    """Score raw `features` messages with one model: a prediction each, or a skip with its reason.

    Each value is parsed once, by `FeatureVector`; an invalid one, one that comes while
    no model is loaded, or one the model raises on is skipped (never fatal).
    """
    out = ScoredBatch()
    for index, value in enumerate(values):
        try:
            if value is None:
                raise ValueError("null value")
            vector = FeatureVector.model_validate_json(value)
        except (ValidationError, ValueError) as error:
            out.skipped.append((index, "invalid", str(error).splitlines()[0]))
            continue
        if model is None:
            out.skipped.append((index, "no_model", "no model loaded yet"))
            continue
        try:
            record = score_vector(vector, model, now)
        except PredictionFailed as error:
            out.skipped.append((index, "predict_failed", f"{error.detail}: {error.cause}"))
            continue
        entity_id = vector.entity_id
        key = (entity_id if entity_id is not None else GLOBAL_KEY).encode()
        out.records.append((key, encode_prediction(record)))
    return out
