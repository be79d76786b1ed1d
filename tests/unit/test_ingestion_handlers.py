"""plan_batch with an in-memory seen store: routing, dead letters, duplicates, keys."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from services.ingestion.handlers import Output, RawRecord, plan_batch
from services.ingestion.metrics import count_outputs
from services.ingestion.seen import InMemorySeenStore, SeenRecord
from shared.messages import DeadLetter, Event
from shared.topics import Topics

TOPICS = Topics()
NOW = datetime(2024, 5, 1, tzinfo=UTC)


def event(event_id: str, entity: str | None = "u1", offset: int = 0) -> RawRecord:
    body = {
        "event_id": event_id,
        "event_time": "2024-05-01T00:00:00Z",
        "entity_id": entity,
        "features": {"x": 1},
    }
    return RawRecord("events.raw", 0, offset, None, json.dumps(body).encode(), 1)


def label(event_id: str, offset: int = 0, key: bytes | None = None) -> RawRecord:
    body = {"event_id": event_id, "label": 1}
    return RawRecord("labels.raw", 1, offset, key, json.dumps(body).encode(), 1)


async def test_valid_events_go_to_events_keyed_by_entity() -> None:
    plan = await plan_batch(
        [event("e1"), event("e2", None, 1)], topics=TOPICS, seen=InMemorySeenStore()
    )
    assert [(o.topic, o.key, o.outcome) for o in plan.outputs] == [
        ("events", b"u1", "accepted"),
        ("events", b"global", "accepted"),
    ]
    assert set(plan.remember) == {"event:e1", "event:e2"}
    assert plan.remember["event:e1"] == SeenRecord("events.raw/0/0", "u1")


async def test_invalid_message_becomes_a_dead_letter_keeping_its_bytes() -> None:
    raw = RawRecord("events.raw", 2, 41, b"k", b"\xff not utf8", 123)
    plan = await plan_batch([raw], topics=TOPICS, seen=InMemorySeenStore(), now=NOW)
    (out,) = plan.outputs
    assert (out.topic, out.key, out.outcome, out.code) == (
        "ingest.dlq",
        b"k",
        "dead_lettered",
        "invalid_utf8",
    )
    letter = DeadLetter.model_validate_json(out.value)
    assert base64.b64decode(letter.value_b64 or "") == b"\xff not utf8"
    assert (letter.source.topic, letter.source.partition, letter.source.offset) == (
        "events.raw",
        2,
        41,
    )
    assert letter.source.key_b64 == base64.b64encode(b"k").decode()
    assert letter.failed_at == NOW
    assert plan.remember == {}


async def test_duplicate_in_the_same_batch_and_across_batches_is_dead_lettered() -> None:
    seen = InMemorySeenStore()
    plan = await plan_batch([event("e1"), event("e1", offset=1)], topics=TOPICS, seen=seen)
    assert [o.outcome for o in plan.outputs] == ["accepted", "duplicate"]
    await seen.remember(plan.remember)
    later = await plan_batch([event("e1", offset=9)], topics=TOPICS, seen=seen)
    (out,) = later.outputs
    assert (out.outcome, out.code) == ("duplicate", "duplicate")
    assert "events.raw/0/0" in DeadLetter.model_validate_json(out.value).error.message


async def test_a_redelivered_record_that_was_already_forwarded_is_skipped() -> None:
    seen = InMemorySeenStore()
    plan = await plan_batch([event("e1")], topics=TOPICS, seen=seen)
    await seen.remember(plan.remember)
    again = await plan_batch([event("e1")], topics=TOPICS, seen=seen)  # same offset
    assert again.outputs == [] and again.redelivered == 1


async def test_event_and_label_ids_are_separate() -> None:
    plan = await plan_batch([event("e1"), label("e1")], topics=TOPICS, seen=InMemorySeenStore())
    assert [o.outcome for o in plan.outputs] == ["accepted", "accepted"]


async def test_label_is_keyed_like_its_event() -> None:
    seen = InMemorySeenStore()
    same_batch = await plan_batch([event("e1", "u7"), label("e1")], topics=TOPICS, seen=seen)
    assert same_batch.outputs[1].key == b"u7"
    await seen.remember(same_batch.remember)
    other = await plan_batch([event("e2", "u8", 1)], topics=TOPICS, seen=seen)
    await seen.remember(other.remember)
    later = await plan_batch([label("e2", 3)], topics=TOPICS, seen=seen)
    assert later.outputs[0].key == b"u8"
    unknown = await plan_batch(
        [label("zz", 4, key=b"u9"), label("yy", 5)], topics=TOPICS, seen=seen
    )
    assert [o.key for o in unknown.outputs] == [b"u9", b"global"]


async def test_every_record_has_exactly_one_fate() -> None:
    records = [event(f"e{i}", offset=i) for i in range(20)] + [
        RawRecord("events.raw", 0, 100 + i, None, bad, None)
        for i, bad in enumerate([b"", b"{", b"[]", b'{"event_id": 1}', b"\xc3\x28"])
    ]
    plan = await plan_batch(records, topics=TOPICS, seen=InMemorySeenStore())
    assert len(plan.outputs) == len(records)
    assert sum(o.topic == "events" for o in plan.outputs) == 20
    assert sum(o.topic == "ingest.dlq" for o in plan.outputs) == 5


async def test_a_time_the_loop_cannot_order_by_is_dead_lettered() -> None:
    def timed(kind: str, body: dict[str, object], offset: int) -> RawRecord:
        return RawRecord(f"{kind}.raw", 0, offset, None, json.dumps(body).encode(), 1)

    records = [
        timed("events", {"event_id": "a", "event_time": "2024-05-01T23:00:00Z", "features": {}}, 0),
        timed("events", {"event_id": "b", "event_time": "2024-05-02T01:00:00Z", "features": {}}, 1),
        timed("events", {"event_id": "c", "event_time": "1899-12-31T23:00:00Z", "features": {}}, 2),
        timed("labels", {"event_id": "a", "label": 1, "label_time": "9999-01-01T00:00:00Z"}, 3),
    ]
    plan = await plan_batch(
        records, topics=TOPICS, seen=InMemorySeenStore(), max_future_s=86_400, now=NOW
    )
    fates = [(o.topic, o.code) for o in plan.outputs]
    assert fates == [
        ("events", None),
        ("ingest.dlq", "invalid_value"),
        ("ingest.dlq", "invalid_value"),
        ("ingest.dlq", "invalid_value"),
    ]
    letters = [DeadLetter.model_validate_json(o.value).error for o in plan.outputs[1:]]
    assert [e.field for e in letters] == ["event_time", "event_time", "label_time"]
    assert "more than 86400 s ahead" in letters[0].message
    assert "before 1900-01-01" in letters[1].message


async def test_an_accepted_message_is_written_as_the_model_writes_it() -> None:
    raw = event("e1")
    plan = await plan_batch([raw, label("e1")], topics=TOPICS, seen=InMemorySeenStore())
    assert raw.value is not None
    assert plan.outputs[0].value == Event.model_validate_json(raw.value).to_json()
    assert (
        plan.outputs[1].value == b'{"event_id":"e1","label":1,"label_time":null,"entity_id":null}'
    )


def test_the_batch_is_counted_once_per_label_set() -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    outputs = [
        Output("events", b"u1", b"{}", "event", "accepted", None, 1),
        Output("events", b"u1", b"{}", "event", "accepted", None, None),
        Output("labels", b"u1", b"{}", "label", "accepted", None, 1),
        Output("ingest.dlq", None, b"{}", "event", "duplicate", "duplicate", 1),
        Output("ingest.dlq", None, b"{}", "event", "dead_lettered", "invalid_json", 1),
    ]
    names = [
        ("driftline_ingestion_accepted_total", {"kind": "event"}, 2),
        ("driftline_ingestion_accepted_total", {"kind": "label"}, 1),
        ("driftline_ingestion_dead_lettered_total", {"kind": "event", "code": "duplicate"}, 1),
        ("driftline_ingestion_dead_lettered_total", {"kind": "event", "code": "invalid_json"}, 1),
        ("driftline_ingestion_duplicates_total", {"kind": "event"}, 1),
        ("driftline_ingestion_latency_seconds_count", {}, 4),
    ]
    before = [value(name, **labels) for name, labels, _ in names]
    count_outputs(outputs)
    after = [value(name, **labels) for name, labels, _ in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [n for _, _, n in names]
