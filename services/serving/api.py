"""HTTP entry points of serving: predict, the models served, health and metrics.

Routes only decode, call a handler and encode. `/predict` is the hot path and does
all three itself: the body is parsed and validated in one pass
(`PredictRequest.model_validate_json`), the answer is encoded with orjson, errors
become their responses right there (the same bodies `errors.install_error_handlers`
gives every other route), and its request count and latency are recorded inline,
with no middleware around every route.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from services.serving import metrics
from services.serving.context import Context, ServingContext
from services.serving.errors import (
    INTERNAL_ERROR,
    ModelNotReady,
    PredictionFailed,
    ServingError,
    error_response,
    validation_response,
)
from services.serving.handlers import encode_prediction, predict_request
from services.serving.models import ModelHolder
from shared.features import to_float
from shared.messages import ModelPublished

__all__ = [
    "ChampionInfo",
    "ModelsResponse",
    "PredictRequest",
    "PredictResponse",
    "VersionInfo",
    "champion_info",
    "router",
]

log = logging.getLogger(__name__)

router = APIRouter()

HISTORY_SHOWN = 20

MAX_TEXT = 4096  # the longest string feature value an Event accepts
_JSON_TYPES: dict[type, str] = {list: "an array", dict: "an object"}


def _feature_value(value: Any) -> Any:
    """Accept exactly the JSON scalars an Event's features may hold, with one clear error."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if to_float(value) is None:  # NaN, infinity, an int past float's range
            raise ValueError("must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"must be at most {MAX_TEXT} characters")
        return value
    got = _JSON_TYPES.get(type(value), type(value).__name__)
    raise ValueError(f"must be a number, string, boolean or null, not {got}")


Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FeatureValue = Annotated[
    Any,
    AfterValidator(_feature_value),
    WithJsonSchema({"type": ["number", "string", "boolean", "null"]}),
]


class PredictRequest(BaseModel):
    """Predict for an entity now: `features` override the entity's live raw values."""

    model_config = ConfigDict(extra="forbid")

    entity_id: Id
    event_id: Id | None = None
    features: Annotated[dict[FeatureName, FeatureValue], Field(max_length=1000)] = {}
    explain: StrictBool = False  # answer each feature's part in the prediction too


class FeaturePart(BaseModel):
    """One feature's part in a prediction (which fields are set depends on the method)."""

    feature: str
    value: float | None
    contribution: float | None = None  # linear: weight x standardised value
    test: str | None = None  # decision_path: the branch taken, e.g. "amount > 120.5"
    trees: int | None = None  # forest: trees whose path tests the feature


class Explanation(BaseModel):
    """Why the champion answered as it did (`shared.explain`)."""

    method: Literal["linear", "decision_path", "forest", "none"]
    features: list[FeaturePart]
    intercept: float | None = None  # linear: the raw score is intercept + contributions
    trees: int | None = None  # forest: how many trees
    note: str | None = None  # none: why not


class PredictResponse(BaseModel):
    """The champion's answer, and the vector it was computed from."""

    prediction: bool | int | float | str | None
    probabilities: dict[str, float] | None
    model: str
    model_version: str
    prediction_id: str
    event_id: str
    features_used: dict[str, float | None]
    explanation: Explanation | None = None  # only when the request asks for it


class VersionInfo(BaseModel):
    version: str
    published_at: datetime
    artifact_key: str
    metrics: dict[str, float]
    n_learned: int | None = None
    # a batch challenger's fit: search, chosen params, cross-validation, window
    batch: dict[str, Any] | None = None


class ChampionInfo(BaseModel):
    name: str
    version: str | None  # None until a version is loaded
    loaded_at: datetime | None
    load_error: str | None
    # Events the served model has learned: past its version's count once this
    # process follows the learner's live slot (None when unknown).
    n_learned: int | None = None
    # Why it is the champion: the change that made it so (None: the initial one,
    # the pipeline's `champion.initial` or first model), as sent on `champions`
    pinned: str | None = None  # the version an operator pinned, if any
    since: datetime | None = None
    action: str | None = None  # promote, pin, unpin, rollback
    by: str | None = None
    reason: str | None = None
    evidence: dict[str, Any] | None = None


def _batch(published: ModelPublished) -> dict[str, Any] | None:
    return None if published.batch is None else published.batch.model_dump(mode="json")


def champion_info(holder: ModelHolder) -> ChampionInfo:
    """The champion this process serves, and why it is the champion."""
    current = holder.current
    why = holder.view.last
    return ChampionInfo(
        name=holder.champion,
        version=current.version if current else None,
        loaded_at=current.loaded_at if current else None,
        load_error=holder.load_error,
        n_learned=current.n_learned if current else None,
        pinned=holder.pinned,
        since=why.changed_at if why else None,
        action=why.action if why else None,
        by=why.by if why else None,
        reason=why.reason if why else None,
        evidence=why.evidence if why else None,
    )


class ModelsResponse(BaseModel):
    champion: ChampionInfo
    # the latest changes of champion (`champions` topic), oldest first
    history: list[dict[str, Any]] = []
    models: dict[str, list[VersionInfo]]  # every version seen, per model name, oldest first


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}
_JSON = "application/json"


async def _answer(body: bytes, context: ServingContext) -> Response:
    try:
        request = PredictRequest.model_validate_json(body)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_context=False, include_input=False)
        return validation_response([{**p, "loc": ("body", *p["loc"])} for p in problems])
    try:
        served = await predict_request(
            entity_id=request.entity_id,
            event_id=request.event_id,
            features=request.features,
            holder=context.holder,
            store=context.store,
            computer=context.computer,
            explain=request.explain,
        )
    except ServingError as error:
        if error.cause is not None:
            log.error("predict for entity %s: %s: %s", request.entity_id, error.detail, error.cause)
        if isinstance(error, PredictionFailed):
            metrics.PREDICT_ERRORS.labels("http", context.holder.champion).inc()
        return error_response(error)
    prediction = served.prediction
    context.sink.publish_nowait(served.key(), encode_prediction(prediction))
    metrics.TALLY.prediction(prediction["model"])
    return Response(orjson.dumps(served.response()), media_type=_JSON)


@router.post("/predict", response_model=PredictResponse, openapi_extra=_PREDICT_BODY)
async def predict(request: Request) -> Response:
    """Predict with the current champion from the live features plus the request's.

    The body is a `PredictRequest`; the answer a `PredictResponse`, 401 without the
    reader key (`Authorization: Bearer <key>`), 403 with another, 422 naming the
    field for a bad request, 503 while no model is loaded or the feature store does
    not answer, 500 (saying nothing of the error) when the model raises.
    """
    started = time.perf_counter()
    context: ServingContext = request.app.state.context
    refusal = context.reader.refusal(request.headers.get("authorization"))
    try:
        if refusal is not None:
            status, detail = refusal
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            response = Response(orjson.dumps({"detail": detail}), status, headers, _JSON)
        else:
            response = await _answer(await request.body(), context)
    except Exception:
        log.exception("predict failed")
        response = Response(orjson.dumps({"detail": INTERNAL_ERROR}), 500, media_type=_JSON)
    metrics.TALLY.request(response.status_code, time.perf_counter() - started)
    return response


@router.get("/models")
async def models(context: Context) -> ModelsResponse:
    """The champion being served, and every version seen of every model."""
    holder = context.holder
    return ModelsResponse(
        champion=champion_info(holder),
        history=[c.model_dump(mode="json") for c in list(holder.view.history)[-HISTORY_SHOWN:]],
        models={
            name: [
                VersionInfo(
                    version=v,
                    published_at=holder.seen[name][v].published_at,
                    artifact_key=holder.seen[name][v].artifact_key,
                    n_learned=holder.seen[name][v].lineage.n_learned,
                    batch=_batch(holder.seen[name][v]),
                    metrics=holder.seen[name][v].metrics,
                )
                for v in holder.versions(name)
            ]
            for name in sorted(holder.seen)
        },
    )


@router.get("/healthz")
async def healthz(context: Context) -> JSONResponse:
    """200 while the process and its consumers are alive."""
    alive, details = context.liveness()
    body = {"status": "ok" if alive else "unhealthy", **details}
    return JSONResponse(body, status_code=200 if alive else 503)


@router.get("/readyz")
async def readyz(context: Context) -> JSONResponse:
    """200 once a champion version is loaded; 503 with the reason before."""
    try:
        model = context.holder.require()
    except ModelNotReady as error:
        return JSONResponse({"status": "not ready", "detail": error.detail}, status_code=503)
    return JSONResponse({"status": "ready", "model": model.name, "model_version": model.version})


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    """Every serving process's metrics (merged when serving runs as several processes)."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
