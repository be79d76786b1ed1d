"""HTTP entry points of serving: predict, the models served, health and metrics.

Routes only decode, call a handler and encode: errors are `ServingError`s raised by
the handlers and mapped to responses by `errors.install_error_handlers`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from services.serving import metrics
from services.serving.context import Context
from services.serving.errors import ModelNotReady
from services.serving.handlers import predict_request
from shared.features import to_float

__all__ = [
    "ChampionInfo",
    "ModelsResponse",
    "PredictRequest",
    "PredictResponse",
    "VersionInfo",
    "observe_predict_requests",
    "router",
]

router = APIRouter()

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


class PredictResponse(BaseModel):
    """The champion's answer, and the vector it was computed from."""

    prediction: bool | int | float | str | None
    probabilities: dict[str, float] | None
    model: str
    model_version: str
    prediction_id: str
    event_id: str
    features_used: dict[str, float | None]


class VersionInfo(BaseModel):
    version: str
    published_at: datetime
    artifact_key: str
    metrics: dict[str, float]


class ChampionInfo(BaseModel):
    name: str
    version: str | None  # None until a version is loaded
    loaded_at: datetime | None
    load_error: str | None


class ModelsResponse(BaseModel):
    champion: ChampionInfo
    models: dict[str, list[VersionInfo]]  # every version seen, per model name, oldest first


@router.post("/predict")
async def predict(body: PredictRequest, context: Context) -> PredictResponse:
    """Predict with the current champion from the live features plus the request's."""
    served = await predict_request(
        entity_id=body.entity_id,
        event_id=body.event_id,
        features=body.features,
        holder=context.holder,
        store=context.store,
        computer=context.computer,
    )
    prediction = served.prediction
    context.sink.publish_nowait(prediction)
    metrics.PREDICTIONS.labels("http", prediction.model).inc()
    assert prediction.event_id is not None
    return PredictResponse(
        prediction=prediction.y_pred,
        probabilities=prediction.probabilities,
        model=prediction.model,
        model_version=prediction.model_version,
        prediction_id=prediction.prediction_id,
        event_id=prediction.event_id,
        features_used=served.features_used,
    )


@router.get("/models")
async def models(context: Context) -> ModelsResponse:
    """The champion being served, and every version seen of every model."""
    holder = context.holder
    current = holder.current
    return ModelsResponse(
        champion=ChampionInfo(
            name=holder.champion,
            version=current.version if current else None,
            loaded_at=current.loaded_at if current else None,
            load_error=holder.load_error,
        ),
        models={
            name: [
                VersionInfo(
                    version=v,
                    published_at=holder.seen[name][v].published_at,
                    artifact_key=holder.seen[name][v].artifact_key,
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
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def observe_predict_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """HTTP middleware: count `/predict` requests by status and time them."""
    if request.url.path != "/predict":
        return await call_next(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        metrics.REQUESTS.labels(str(status)).inc()
        metrics.REQUEST_LATENCY.observe(time.perf_counter() - started)
