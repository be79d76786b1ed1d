"""Ingestion against the real broker and Redis: HTTP, labels, duplicates, restarts."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from tests.support import WRITER, ServiceProcess, kcat_produce, kcat_read, wait_for_count

pytestmark = pytest.mark.integration

Factory = Callable[..., ServiceProcess]


def _event(i: int, entity: str | None = "u1") -> dict[str, object]:
    return {
        "event_id": f"e{i}",
        "event_time": "2024-05-01T00:00:00Z",
        "entity_id": entity,
        "features": {"x": float(i)},
    }


def test_post_events_accepts_one_or_a_batch(service_factory: Factory, prefix: str) -> None:
    service = service_factory("ingestion").start()
    one = httpx.post(f"{service.url}/events", headers=WRITER, json=_event(1))
    batch = httpx.post(
        f"{service.url}/events", headers=WRITER, json=[_event(2, "u2"), _event(3, None)]
    )
    assert (one.status_code, one.json()["accepted"]) == (202, 1)
    assert (batch.status_code, batch.json()["event_ids"]) == (202, ["e2", "e3"])

    found = wait_for_count([f"{prefix}events"], 3)[f"{prefix}events"]
    keyed = {json.loads(m["payload"])["event_id"]: m["key"] for m in found}
    assert keyed == {"e1": "u1", "e2": "u2", "e3": "global"}


def test_post_needs_the_writer_key(service_factory: Factory, prefix: str) -> None:
    service = service_factory("ingestion").start()
    for path in ("/events", "/labels"):
        missing = httpx.post(f"{service.url}{path}", json=_event(1))
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(
            f"{service.url}{path}", json=_event(1), headers={"Authorization": "Bearer no"}
        )
        assert wrong.status_code == 403, path
    assert httpx.get(f"{service.url}/healthz").status_code == 200, "health stays open"
    assert kcat_read(f"{prefix}events.raw") == [], "a refused request publishes nothing"
    assert httpx.post(f"{service.url}/events", json=_event(1), headers=WRITER).status_code == 202


def test_post_refuses_the_whole_batch_naming_each_bad_field(
    service_factory: Factory, prefix: str
) -> None:
    service = service_factory("ingestion").start()
    bad = [
        _event(1),
        {"event_id": "e2", "features": {"x": [1]}},
        {**_event(3), "extra": 1},
        7,
        {**_event(5), "event_time": "2999-01-01T00:00:00Z"},
    ]
    response = httpx.post(f"{service.url}/events", headers=WRITER, json=bad)
    assert response.status_code == 422
    problems = {(p["index"], p["field"], p["code"]) for p in response.json()["detail"]}
    assert problems == {
        (1, "event_time", "missing_field"),
        (1, "features.x", "wrong_type"),
        (2, "extra", "unknown_field"),
        (3, None, "not_an_object"),
        (4, "event_time", "invalid_value"),
    }
    not_json = httpx.post(f"{service.url}/events", headers=WRITER, content=b"{oops")
    assert (not_json.status_code, not_json.json()["detail"][0]["code"]) == (422, "invalid_json")
    label = httpx.post(f"{service.url}/labels", headers=WRITER, json={"event_id": "e1"})
    assert label.json()["detail"] == [
        {"index": 0, "field": "label", "code": "missing_field", "message": "'label' is required"}
    ]
    assert kcat_read(f"{prefix}events.raw") == [], "a refused request publishes nothing"


def test_labels_are_validated_and_keyed_by_their_events_entity(
    service_factory: Factory, prefix: str
) -> None:
    service = service_factory("ingestion").start()
    httpx.post(
        f"{service.url}/events", headers=WRITER, json=[_event(1, "alice"), _event(2, "bob")]
    ).raise_for_status()
    wait_for_count([f"{prefix}events"], 2)
    kcat_produce(
        f"{prefix}labels.raw",
        [
            (None, b'{"event_id": "e1", "label": 1}'),
            (None, b'{"event_id": "e2", "label": 0, "label_time": "2024-05-01T00:05:00Z"}'),
            (None, b'{"event_id": "e3", "label": "maybe", "oops": 1}'),
        ],
    )
    found = wait_for_count([f"{prefix}labels", f"{prefix}ingest.dlq"], 3)
    labels = {json.loads(m["payload"])["event_id"]: m["key"] for m in found[f"{prefix}labels"]}
    assert labels == {"e1": "alice", "e2": "bob"}
    (letter,) = [json.loads(m["payload"]) for m in found[f"{prefix}ingest.dlq"]]
    assert (letter["error"]["code"], letter["error"]["field"]) == ("unknown_field", "oops")
    assert letter["source"]["topic"] == f"{prefix}labels.raw"


def test_a_duplicate_event_id_has_effect_once_even_across_restarts(
    service_factory: Factory, prefix: str
) -> None:
    service = service_factory("ingestion").start()
    kcat_produce(f"{prefix}events.raw", [(b"u1", json.dumps(_event(1)).encode())] * 3)
    wait_for_count([f"{prefix}events", f"{prefix}ingest.dlq"], 3)
    service.stop()
    service.start()
    kcat_produce(f"{prefix}events.raw", [(b"u1", json.dumps(_event(1)).encode())])
    found = wait_for_count([f"{prefix}events", f"{prefix}ingest.dlq"], 4)
    assert len(found[f"{prefix}events"]) == 1
    letters = [json.loads(m["payload"]) for m in found[f"{prefix}ingest.dlq"]]
    assert [d["error"]["code"] for d in letters] == ["duplicate"] * 3


@pytest.mark.slow
def test_delivery_is_at_least_once_through_a_crash(service_factory: Factory, prefix: str) -> None:
    """SIGKILL mid-stream, restart: nothing lost; redeliveries are recognised and skipped."""
    n = 3000
    kcat_produce(f"{prefix}events.raw", [(b"u1", json.dumps(_event(i)).encode()) for i in range(n)])
    service = service_factory("ingestion", BATCH_SIZE="50").start()
    wait_for_count([f"{prefix}events"], n // 4, timeout=60)
    service.stop(signal.SIGKILL)
    service.start()
    found = wait_for_count([f"{prefix}events", f"{prefix}ingest.dlq"], n, timeout=120)
    ids = Counter(json.loads(m["payload"])["event_id"] for m in found[f"{prefix}events"])
    assert set(ids) == {f"e{i}" for i in range(n)}, "no event may be lost"
    # a crash can only repeat what was acknowledged but not yet remembered: one batch at most
    assert sum(ids.values()) - n <= 50
    assert found[f"{prefix}ingest.dlq"] == []


def test_graceful_restart_neither_loses_nor_repeats(service_factory: Factory, prefix: str) -> None:
    service = service_factory("ingestion").start()
    kcat_produce(
        f"{prefix}events.raw", [(b"u1", json.dumps(_event(i)).encode()) for i in range(200)]
    )
    wait_for_count([f"{prefix}events"], 200)
    service.stop()
    kcat_produce(
        f"{prefix}events.raw", [(b"u1", json.dumps(_event(i)).encode()) for i in range(200, 400)]
    )
    service.start()
    found = wait_for_count([f"{prefix}events"], 400)[f"{prefix}events"]
    ids = Counter(json.loads(m["payload"])["event_id"] for m in found)
    assert ids == Counter(f"e{i}" for i in range(400))


def test_health_and_metrics(service_factory: Factory) -> None:
    service = service_factory("ingestion").start()
    httpx.post(f"{service.url}/events", headers=WRITER, json=_event(1)).raise_for_status()
    health = httpx.get(f"{service.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    text = ""
    for _ in range(50):
        text = httpx.get(f"{service.url}/metrics").text
        if 'driftline_ingestion_accepted_total{kind="event"} 1.0' in text:
            break
        time.sleep(0.2)
    assert 'driftline_ingestion_accepted_total{kind="event"} 1.0' in text
    assert "driftline_ingestion_latency_seconds_count 1.0" in text
    assert "driftline_ingestion_http_latency_seconds_count" in text
