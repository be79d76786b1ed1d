"""Serving's one error hierarchy: each error knows its HTTP status and a JSON-able detail.

`install_error_handlers` maps them (and FastAPI's request validation errors, and
any other exception) to JSON responses, so routes just raise. `error_response` and
`validation_response` build the same bodies for the `/predict` fast path, which
answers its own errors. A client never reads internals: an unexpected error is a
500 with a fixed detail, and the exception goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.responses import Response

__all__ = [
    "INTERNAL_ERROR",
    "FeatureStoreUnavailable",
    "InvalidFeatures",
    "ModelLoadError",
    "ModelNotReady",
    "PredictionFailed",
    "ServingError",
    "error_response",
    "install_error_handlers",
    "validation_problems",
    "validation_response",
]

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error; see the serving log"


class ServingError(Exception):
    """Base of serving's errors; `detail` is what the client reads, `cause` only the log."""

    status_code = 500

    def __init__(self, detail: str, *, cause: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.cause = cause


class ModelNotReady(ServingError):
    """No version of the champion is loaded yet (none published, or none loadable)."""

    status_code = 503


class ModelLoadError(ServingError):
    """A published version's artifact is missing or cannot be unpickled."""

    status_code = 503


class FeatureStoreUnavailable(ServingError):
    """The online feature store (Redis) did not answer in time."""

    status_code = 503


class InvalidFeatures(ServingError):
    """The merged features do not make a valid event (e.g. too many of them)."""

    status_code = 422


class PredictionFailed(ServingError):
    """The model raised on this input (the detail names the model, not the error)."""

    status_code = 500


def _field(loc: Sequence[Any]) -> str | None:
    parts = [str(part) for part in loc if part != ""]  # an empty key shows as `[key]` alone
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or None


def validation_problems(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as `{"field", "type", "msg", "loc"}` items (field: dotted, no `body`)."""
    return [
        {
            "field": _field(item["loc"]),
            "type": item["type"],
            "msg": item["msg"],
            "loc": list(item["loc"]),
        }
        for item in errors
    ]


def _json(body: Any, status_code: int) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def error_response(error: ServingError) -> Response:
    return _json({"detail": error.detail}, error.status_code)


def validation_response(errors: Sequence[Any]) -> Response:
    return _json({"detail": validation_problems(errors)}, 422)


async def _serving_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ServingError)
    return error_response(error)


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    return validation_response(error.errors())


async def _unexpected_error(request: Request, error: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every `ServingError` with its status, validation errors with 422 + field,
    anything else with a 500 that says nothing of the error."""
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
