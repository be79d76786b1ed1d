"""Operators' endpoints: choose the champion by hand, return to the policy, roll back.

Every call needs the API key (`Authorization: Bearer <DRIFTLINE_API_KEY>`: 401
without, 403 with another, compared in constant time). A change is not applied
here: it is sent on the `champions` topic (the audit trail: who, why, when), which
every serving process, this one included, reads and applies; the call answers once
this process serves it (or 202 if that takes longer than `ADMIN_WAIT_S`).

- `POST /admin/champion {"model": str, "version": str | null, "reason": str?}` pins
  the model (that version, or its newest as it comes); the policy's promotions are
  recorded meanwhile but not served;
- `DELETE /admin/champion` returns to the policy's champion;
- `POST /admin/champion/rollback` returns to the champion served before this one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StringConstraints

from services.serving.api import champion_info
from services.serving.context import Context, ServingContext
from shared.clock import utcnow
from shared.messages import ChampionChanged

__all__ = ["PinRequest", "router"]

router = APIRouter(prefix="/admin")

Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text
    version: Text | None = None
    reason: Text | None = None


def _refused(context: ServingContext, request: Request) -> JSONResponse | None:
    if context.admin is None or context.send_change is None:
        return JSONResponse({"detail": "the admin endpoints are off here"}, 403)
    refusal = context.admin.refusal(request.headers.get("authorization"))
    if refusal is None:
        return None
    status, detail = refusal
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status, headers)


def _problem(field: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]}, 422
    )


async def _apply(
    context: ServingContext,
    request: Request,
    action: str,
    model: str,
    version: str | None,
    reason: str,
) -> JSONResponse:
    """Send the change, then wait (bounded) until this process serves it."""
    holder = context.holder
    host = request.client.host if request.client else "unknown"
    change = ChampionChanged(
        change_id=f"admin:{uuid.uuid4().hex}",
        model=model,
        version=version,
        previous=holder.champion,
        action=action,  # type: ignore[arg-type]
        by=f"admin (API key, from {host})",
        reason=reason,
        changed_at=utcnow(),
    )
    assert context.send_change is not None
    await context.send_change(change)
    deadline = time.monotonic() + context.admin_wait_s
    while time.monotonic() < deadline:
        current = holder.current
        applied = any(c.change_id == change.change_id for c in holder.view.history)
        if applied and current is not None and current.name == holder.champion:
            body: dict[str, Any] = {"change": change.model_dump(mode="json")}
            body["champion"] = champion_info(holder).model_dump(mode="json")
            return JSONResponse(body, 200)
        await asyncio.sleep(0.05)
    return JSONResponse({"change": change.model_dump(mode="json"), "status": "sent"}, 202)


@router.post("/champion")
async def pin(request: Request, body: PinRequest, context: Context) -> JSONResponse:
    """Pin `model` (at `version`, or its newest) as the champion."""
    if (refused := _refused(context, request)) is not None:
        return refused
    known = [*context.models, *(m for m in context.holder.seen if m not in context.models)]
    if body.model not in known:  # the pipeline's, and fresh copies that published a version
        return _problem("model", f"not a model of the pipeline (one of {', '.join(known)})")
    seen = context.holder.versions(body.model)
    if body.version is not None and body.version not in seen:
        return _problem(
            "version",
            f"{body.model} has no version {body.version!r} (seen: {', '.join(seen) or 'none'})",
        )
    reason = body.reason or "pinned by an operator"
    return await _apply(context, request, "pin", body.model, body.version, reason)


@router.delete("/champion")
async def unpin(request: Request, context: Context) -> JSONResponse:
    """Return to the champion policy's choice."""
    if (refused := _refused(context, request)) is not None:
        return refused
    view = context.holder.view
    if view.pinned is None:
        return JSONResponse({"detail": "no champion is pinned: the policy already chooses"}, 409)
    return await _apply(
        context, request, "unpin", view.policy_model, None, "back to the champion policy"
    )


@router.post("/champion/rollback")
async def rollback(request: Request, context: Context) -> JSONResponse:
    """Serve the champion served before this one (pinned, so the policy waits)."""
    if (refused := _refused(context, request)) is not None:
        return refused
    previous = context.holder.view.previous
    if previous is None:
        return JSONResponse({"detail": "no previous champion to return to"}, 409)
    model, version = previous
    return await _apply(context, request, "rollback", model, version, f"rolled back to {model}")
