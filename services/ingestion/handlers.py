"""Ingestion's handler: a batch of raw records in, the messages to produce out.

No Kafka here: `plan_batch` decides, for each raw record, whether it is forwarded
(valid, first time), dead-lettered (invalid, or a duplicate event_id) or skipped
(a redelivery of a record already forwarded). The consumer produces the plan, waits
for the broker's acks, then `remember`s the forwarded ids and commits offsets.

>>> import asyncio
>>> from services.ingestion.seen import InMemorySeenStore
>>> raw = RawRecord("events.raw", 0, 7, None, b'{"event_id": "e1"}', None)
>>> plan = asyncio.run(plan_batch([raw], topics=Topics(), seen=InMemorySeenStore()))
>>> plan.outputs[0].topic, plan.outputs[0].code
('ingest.dlq', 'missing_field')
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

from services.ingestion.encoding import message_json
from services.ingestion.seen import SeenRecord, SeenStore
from shared.clock import utcnow
from shared.messages import GLOBAL_KEY, DeadLetter, ErrorDetail, Event, Label
from shared.topics import Topics
from shared.validation import DEFAULT_MAX_BYTES, ValidationResult, validate_raw

__all__ = [
    "DEFAULT_MAX_FUTURE_S",
    "BatchPlan",
    "Output",
    "RawRecord",
    "check_time",
    "dead_letter",
    "plan_batch",
]

Kind = Literal["event", "label"]
Outcome = Literal["accepted", "dead_lettered", "duplicate"]
MAX_ERRORS_KEPT = 50


class RawRecord(NamedTuple):
    """One raw Kafka record (a named tuple: thousands are made per batch)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class Output(NamedTuple):
    """One message to produce, and what it means for the metrics (a named tuple)."""

    topic: str
    key: bytes | None
    value: bytes
    kind: Kind
    outcome: Outcome
    code: str | None = None
    timestamp_ms: int | None = None


@dataclass
class BatchPlan:
    outputs: list[Output] = field(default_factory=list)
    remember: dict[str, SeenRecord] = field(default_factory=dict)
    redelivered: int = 0  # records already forwarded before a restart


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def dead_letter(record: RawRecord, errors: Sequence[ErrorDetail], now: datetime) -> DeadLetter:
    kept = list(errors[:MAX_ERRORS_KEPT])
    return DeadLetter.model_validate(
        {
            "source": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
                "key_b64": _b64(record.key),
            },
            "value_b64": _b64(record.value),
            "value_size": len(record.value or b""),
            "error": kept[0],
            "errors": kept,
            "failed_at": now,
        }
    )


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
DEFAULT_MAX_FUTURE_S = 24 * 3600.0


def check_time(
    message: Event | Label, now: datetime, max_future_s: float = DEFAULT_MAX_FUTURE_S
) -> list[ErrorDetail]:
    """Refuse a time the loop cannot order by: before 1900, or more than `max_future_s`
    ahead of the ingestion clock (a skewed clock, milliseconds read as seconds).
    Event-time clocks downstream only move forward: one such time would drag them.

    >>> now = datetime(2024, 5, 1, tzinfo=UTC)
    >>> event = lambda t: Event(event_id="e1", event_time=t, features={})
    >>> check_time(event(now + timedelta(hours=1)), now)
    []
    >>> [(e.code, e.field) for e in check_time(event(datetime(9999, 1, 1, tzinfo=UTC)), now)]
    [('invalid_value', 'event_time')]
    """
    field, at = (
        ("event_time", message.event_time)
        if isinstance(message, Event)
        else ("label_time", message.label_time)
    )
    if at is None or EARLIEST <= at <= now + timedelta(seconds=max_future_s):
        return []
    reason = (
        f"{at.isoformat()} is before {EARLIEST.date().isoformat()}"
        if at < EARLIEST
        else f"{at.isoformat()} is more than {max_future_s:g} s ahead of {now.isoformat()}"
    )
    return [ErrorDetail(code="invalid_value", message=reason, field=field)]


def _seen_key(kind: Kind, event_id: str) -> str:
    return f"{kind}:{event_id}"


async def plan_batch(
    records: Sequence[RawRecord],
    *,
    topics: Topics,
    seen: SeenStore,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
    now: datetime | None = None,
) -> BatchPlan:
    now = now or utcnow()
    latest = now + timedelta(seconds=max_future_s)
    plan = BatchPlan()
    checked: list[tuple[RawRecord, Kind, ValidationResult[Event] | ValidationResult[Label]]] = []
    for record in records:
        kind: Kind = "event" if record.topic == topics.events_raw else "label"
        result = (
            validate_raw(Event, record.value, max_bytes)
            if kind == "event"
            else validate_raw(Label, record.value, max_bytes)
        )
        checked.append((record, kind, result))

    # One lookup for every id in the batch, plus each label's event (for its key).
    wanted = sorted(
        {_seen_key(kind, r.message.event_id) for _, kind, r in checked if r.message}
        | {
            _seen_key("event", r.message.event_id)
            for _, kind, r in checked
            if kind == "label" and r.message
        }
    )
    stored = dict(zip(wanted, await seen.lookup(wanted), strict=True))

    def dlq(record: RawRecord, kind: Kind, errors: Sequence[ErrorDetail], outcome: Outcome) -> None:
        letter = dead_letter(record, errors, now)
        plan.outputs.append(
            Output(
                topics.dlq,
                record.key,
                letter.to_json(),
                kind,
                outcome,
                errors[0].code,
                record.timestamp_ms,
            )
        )

    for record, kind, result in checked:
        message: Event | Label | None = result.message
        if message is None:
            dlq(record, kind, result.errors, "dead_lettered")
            continue
        at = message.event_time if isinstance(message, Event) else message.label_time
        if at is not None and not EARLIEST <= at <= latest:  # check_time's test, hoisted
            dlq(record, kind, check_time(message, now, max_future_s), "dead_lettered")
            continue
        key = _seen_key(kind, message.event_id)
        previous = plan.remember.get(key) or stored.get(key)
        if previous is not None and previous.source == record.source:
            plan.redelivered += 1
            continue
        if previous is not None:
            error = ErrorDetail(
                code="duplicate",
                message=f"{kind} {message.event_id!r} was already ingested from {previous.source}",
                field="event_id",
            )
            dlq(record, kind, [error], "duplicate")
            continue
        if isinstance(message, Event):
            entity = message.entity_id
            out_topic, out_key = topics.events, message.key()
        else:
            event = plan.remember.get(_seen_key("event", message.event_id)) or stored.get(
                _seen_key("event", message.event_id)
            )
            entity = message.entity_id or (event.entity_id if event else None)
            out_topic = topics.labels
            out_key = entity or (record.key.decode(errors="replace") if record.key else GLOBAL_KEY)
        plan.remember[key] = SeenRecord(record.source, entity)
        plan.outputs.append(
            Output(
                out_topic,
                out_key.encode(),
                message_json(message),
                kind,
                "accepted",
                None,
                record.timestamp_ms,
            )
        )
    return plan
