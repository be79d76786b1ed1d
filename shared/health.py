"""`/healthz` and `/metrics` for a service whose work is one background consumer loop.

The app's state holds `worker` (with `seconds_since_poll()`) and `worker_task`: the
service is healthy while the task runs and the worker polled Kafka recently.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["MAX_IDLE_S", "router"]

MAX_IDLE_S = 30.0  # a consumer that has not polled for this long is stuck

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    idle = request.app.state.worker.seconds_since_poll()
    healthy = not request.app.state.worker_task.done() and idle < MAX_IDLE_S
    body = {"status": "ok" if healthy else "unhealthy", "consumer_idle_s": round(idle, 3)}
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
