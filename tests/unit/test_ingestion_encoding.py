"""Ingestion writes accepted messages with orjson: the same bytes as the model's own JSON."""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

import pytest

from services.ingestion.encoding import message_json
from shared.messages import Event, Label, Message

TIMES = [
    "2024-05-01T12:00:00Z",
    "2024-05-01t12:00:00z",
    "2024-05-01 12:00:00+00:00",
    "2024-05-01T12:00:00-00:00",
    "2024-05-01T12:00:00.5+02:00",
    "2024-05-01T12:00:00.123456789-05:30",
    "0001-01-01T00:00:00.000001+14:00",
    "9999-12-31T23:59:59.999999Z",
]


def _float(rng: random.Random) -> float:
    while True:
        value: float = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        value *= rng.choice([1.0, 1.0, 1e-300, 1e300])
        if math.isfinite(value):
            return value


def _text(rng: random.Random, least: int = 0) -> str:
    chars = [rng.randint(0, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]
    return "".join(chr(rng.choice(chars)) for _ in range(rng.randint(least, 6))) or "x"


def _value(rng: random.Random) -> Any:
    return rng.choice(
        [
            _float(rng),
            rng.choice([0.0, -0.0, 0.1, 1e15, 1e16, 9999999999999998.0, 1e-5, 1e-7, 5e-324]),
            rng.randint(-(2**63), 2**64 - 1),
            rng.randint(-(2**70), 2**70),
            rng.randint(-5, 5),
            rng.choice([True, False, None]),
            _text(rng),
        ]
    )


def _messages(count: int) -> list[Event | Label]:
    rng = random.Random(7)
    out: list[Event | Label] = []
    for i in range(count):
        features = {_text(rng, 1): _value(rng) for _ in range(rng.randint(0, 8))}
        event = {
            "event_id": _text(rng, 1),
            "event_time": rng.choice(TIMES),
            "features": features,
        } | ({"entity_id": rng.choice([None, _text(rng, 1)])} if i % 2 else {})
        out.append(Event.model_validate_json(json.dumps(event)))
        label = rng.choice([_value(rng), _text(rng, 1)])
        label = "spam" if label is None else label
        optional = {"label_time": rng.choice([None, *TIMES]), "entity_id": "u1"}
        out.append(
            Label.model_validate_json(
                json.dumps({"event_id": f"e{i}", "label": label} | (optional if i % 3 else {}))
            )
        )
    return out


def test_message_json_is_the_models_own_json() -> None:
    for message in _messages(1500):
        written = message_json(message)
        assert written == message.to_json(), message
        assert type(message).model_validate_json(written) == message
        assert json.loads(written) == json.loads(message.to_json())


def test_the_usual_message_is_written_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    event = Event(event_id="e1", event_time="2024-05-01T12:00:00Z", features={"x": 1.5, "c": "a"})  # type: ignore[arg-type]
    expected = event.to_json()
    monkeypatch.setattr(Message, "to_json", lambda self: b"the model's serializer")
    assert message_json(event) == expected


@pytest.mark.parametrize(
    "features",
    [{"x": 1e16}, {"x": -2.5e300}, {"x": 2**64}, {"x": -(2**63) - 1}, {"x": 10**200}],
)
def test_numbers_orjson_writes_otherwise_fall_back_to_the_model(features: dict[str, Any]) -> None:
    event = Event(event_id="e1", event_time="2024-05-01T12:00:00Z", features=features)  # type: ignore[arg-type]
    assert message_json(event) == event.to_json()
