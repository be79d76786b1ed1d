"""Serving's one error hierarchy: each error knows its HTTP status and a JSON-able detail.

`install_error_handlers` maps them (and FastAPI's request validation errors) to
responses, so routes just raise.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

__all__ = [
    "FeatureStoreUnavailable",
    "InvalidFeatures",
    "ModelLoadError",
    "ModelNotReady",
    "PredictionFailed",
    "ServingError",
    "install_error_handlers",
]


class ServingError(Exception):
    """Base of serving's errors; `detail` is what the client reads."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ModelNotReady(ServingError):
    """No version of the champion is loaded yet (none published, or none loadable)."""

    status_code = 503


class ModelLoadError(ServingError):
    """A published version's artifact is missing or cannot be unpickled."""

    status_code = 503


class FeatureStoreUnavailable(ServingError):
    """The online feature store (Redis) did not answer."""

    status_code = 503


class InvalidFeatures(ServingError):
    """The merged features do not make a valid event (e.g. too many of them)."""

    status_code = 422


class PredictionFailed(ServingError):
    """The model raised on this input."""

    status_code = 500


def _field(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(part) for part in loc if part != ""]  # an empty key shows as `[key]` alone
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or None


async def _serving_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServingError)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [
        {
            "field": _field(item["loc"]),
            "type": item["type"],
            "msg": item["msg"],
            "loc": list(item["loc"]),
        }
        for item in error.errors()
    ]
    return JSONResponse({"detail": problems}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every `ServingError` with its status, and validation errors with 422 + field."""
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
