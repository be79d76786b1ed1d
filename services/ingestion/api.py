"""HTTP entry points of ingestion: POST events or labels, one or a batch.

Both need the writer key (`Authorization: Bearer <key>`, `shared.http_keys`): 401
without it, 403 with another. A request is all or nothing: if any item is invalid the answer is 422 listing each
problem (`index`, `field`, `code`, `message`) and nothing is published; otherwise
every item goes to the raw topic (202) and follows the same path as a Kafka client's.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingestion import metrics
from services.ingestion.config import IngestionSettings
from services.ingestion.handlers import check_time
from shared.clock import utcnow
from shared.http_keys import KeyCheck
from shared.messages import GLOBAL_KEY, Event, Label, Message
from shared.topics import Topics
from shared.validation import decode_json, validate_document

__all__ = ["refused", "router", "too_large"]

router = APIRouter()


def _problem(
    index: int | None, code: str, message: str, field: str | None = None
) -> dict[str, Any]:
    return {"index": index, "field": field, "code": code, "message": message}


def too_large(message: str) -> dict[str, Any]:
    """The problem `shared.body_limit.BodyLimit` answers 413 with, in this API's shape."""
    return _problem(None, "too_large", message)


def _check_items(
    body: bytes, message_type: type[Message], settings: IngestionSettings
) -> tuple[list[Message], list[dict[str, Any]]]:
    document, errors = decode_json(body, settings.max_request_bytes)
    if errors:
        return [], [_problem(None, e.code, e.message, e.field) for e in errors]
    items = document if isinstance(document, list) else [document]
    if not items:
        return [], [_problem(None, "empty", "the batch has no items")]
    if len(items) > settings.max_batch_items:
        limit = settings.max_batch_items
        return [], [_problem(None, "too_large", f"{len(items)} items exceeds the limit of {limit}")]
    messages: list[Message] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(_problem(index, "not_an_object", "each item must be a JSON object"))
            continue
        result = validate_document(message_type, item)
        errors = result.errors
        if isinstance(result.message, Event | Label):
            errors = check_time(result.message, utcnow(), settings.max_future_s)
        problems += [_problem(index, e.code, e.message, e.field) for e in errors]
        if result.message is not None and not errors:
            size = len(result.message.to_json())
            if size > settings.max_message_bytes:
                limit = settings.max_message_bytes
                problems.append(
                    _problem(index, "too_large", f"{size} bytes exceeds the limit of {limit}")
                )
            messages.append(result.message)
    return messages, problems


def _key(message: Message) -> bytes:
    if isinstance(message, Event):
        return message.key().encode()
    assert isinstance(message, Label)
    return (message.entity_id or GLOBAL_KEY).encode()


def refused(check: KeyCheck, request: Request) -> JSONResponse | None:
    """The 401 or 403 answer when the request lacks `check`'s key, else None."""
    refusal = check.refusal(request.headers.get("authorization"))
    if refusal is None:
        return None
    status, detail = refusal
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _accept(request: Request, message_type: type[Message], topic: str) -> JSONResponse:
    started = time.perf_counter()
    refusal = refused(request.app.state.writer, request)
    if refusal is not None:
        return refusal
    settings: IngestionSettings = request.app.state.settings
    producer: AIOKafkaProducer = request.app.state.producer
    body = await request.body()  # at most max_request_bytes: BodyLimit answered 413 past it
    messages, problems = _check_items(body, message_type, settings)
    if problems:
        return JSONResponse({"detail": problems}, status_code=422)
    sent = [await producer.send(topic, m.to_json(), key=_key(m)) for m in messages]
    for future in sent:
        await future
    metrics.HTTP_LATENCY.labels(request.url.path).observe(time.perf_counter() - started)
    event_ids = [getattr(m, "event_id", None) for m in messages]
    return JSONResponse(
        {"accepted": len(messages), "topic": topic, "event_ids": event_ids}, status_code=202
    )


@router.post("/events", status_code=202)
async def post_events(request: Request) -> JSONResponse:
    """Publish one `Event` or a JSON array of them to `events.raw`."""
    topics: Topics = request.app.state.topics
    return await _accept(request, Event, topics.events_raw)


@router.post("/labels", status_code=202)
async def post_labels(request: Request) -> JSONResponse:
    """Publish one `Label` or a JSON array of them to `labels.raw`."""
    topics: Topics = request.app.state.topics
    return await _accept(request, Label, topics.labels_raw)
