"""End to end: kcat (a client we did not write) publishes good and broken events;
the running ingestion service accounts for every one of them on the real broker."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from tests.support import ServiceProcess, kcat_produce, wait_for_count

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_VALID = 1000
N_PER_KIND = 60
MAX_BYTES = 64 * 1024


def _event(i: int) -> dict[str, object]:
    return {
        "event_id": f"ev-{i}",
        "event_time": f"2024-05-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "entity_id": f"user-{i % 17}",
        "features": {"amount": i * 1.5, "country": "NL" if i % 2 else "DE", "vip": i % 3 == 0},
    }


def _broken(kind: str, i: int) -> bytes | None:
    """One broken message of a kind; the expected dead-letter code is the kind."""
    good = _event(100_000 + i)
    if kind == "invalid_json":
        return [b'{"event_id": "x"', b"not json", b'{"a": NaN}', b'{"a":1,"a":2}'][i % 4]
    if kind == "wrong_type":
        return json.dumps(
            {**good, "features": {"amount": [1, 2]}} if i % 2 else {**good, "event_id": i}
        ).encode()
    if kind == "missing_field":
        return json.dumps(
            {k: v for k, v in good.items() if k != ["event_time", "features", "event_id"][i % 3]}
        ).encode()
    if kind == "unknown_field":
        return json.dumps({**good, "colour": "blue"}).encode()
    if kind == "too_large":
        return json.dumps({**good, "features": {"blob": "x" * (MAX_BYTES + 100 * i)}}).encode()
    if kind == "invalid_utf8":
        return b'{"event_id": "\xff\xfe' + str(i).encode() + b'"}'
    if kind == "not_an_object":
        return [b"[1, 2, 3]", b'"just a string"', b"42", b"null"][i % 4]
    if kind == "invalid_value":
        return json.dumps(
            {
                **good,
                "event_time": ["yesterday", "2024-02-30T00:00:00Z", "2024-05-01T00:00:00"][i % 3],
            }
        ).encode()
    if kind == "empty":
        return None  # a null value (tombstone)
    if kind == "duplicate":
        return json.dumps(_event(i)).encode()  # same event_id as a valid one
    raise ValueError(kind)


KINDS = [
    "invalid_json",
    "wrong_type",
    "missing_field",
    "unknown_field",
    "too_large",
    "invalid_utf8",
    "not_an_object",
    "invalid_value",
    "empty",
    "duplicate",
]


def test_every_raw_event_is_accounted_for(
    service_factory: Callable[..., ServiceProcess], prefix: str
) -> None:
    service = service_factory("ingestion", MAX_MESSAGE_BYTES=str(MAX_BYTES)).start()
    valid = [(f"user-{i % 17}".encode(), json.dumps(_event(i)).encode()) for i in range(N_VALID)]
    broken = [
        (f"bad-{kind}-{i}".encode(), _broken(kind, i)) for kind in KINDS for i in range(N_PER_KIND)
    ]
    # valid ones first and ingested, so each "duplicate" comes after the event it repeats
    kcat_produce(f"{prefix}events.raw", valid)
    assert len(wait_for_count([f"{prefix}events"], N_VALID)[f"{prefix}events"]) == N_VALID
    kcat_produce(f"{prefix}events.raw", broken)

    n_raw = len(valid) + len(broken)
    found = wait_for_count([f"{prefix}events", f"{prefix}ingest.dlq"], n_raw, timeout=180)
    events, letters = found[f"{prefix}events"], found[f"{prefix}ingest.dlq"]

    # every valid event exactly once, unchanged, keyed by its entity
    ids = Counter(json.loads(m["payload"])["event_id"] for m in events)
    assert ids == Counter(f"ev-{i}" for i in range(N_VALID))
    for message in events:
        event = json.loads(message["payload"])
        i = int(event["event_id"].split("-")[1])
        assert message["key"] == f"user-{i % 17}"
        assert event["features"] == _event(i)["features"]

    # every broken one dead-lettered once, with the right code and its original bytes
    assert len(letters) == len(broken)
    sent = {key.decode(): value for key, value in broken}
    codes: Counter[str] = Counter()
    for message in letters:
        letter = json.loads(message["payload"])
        key = base64.b64decode(letter["source"]["key_b64"]).decode()
        kind = key.split("-")[1]
        assert letter["error"]["code"] == kind, (key, letter["error"])
        original = sent.pop(key)
        assert letter["value_b64"] == (
            None if original is None else base64.b64encode(original).decode()
        )
        assert letter["source"]["topic"] == f"{prefix}events.raw"
        codes[kind] += 1
    assert sent == {}
    assert codes == Counter({kind: N_PER_KIND for kind in KINDS})

    # raw count = valid + dead-lettered, and the service is still healthy
    assert len(events) + len(letters) == n_raw
    assert service.healthy()
    metrics = httpx.get(f"{service.url}/metrics").text
    assert f'driftline_ingestion_accepted_total{{kind="event"}} {float(N_VALID)}' in metrics
    assert f'driftline_ingestion_duplicates_total{{kind="event"}} {float(N_PER_KIND)}' in metrics
