"""Every way a raw message can be bad gets its own code and field path."""

from __future__ import annotations

import pytest

from shared.messages import Event, Label
from shared.validation import validate_raw

GOOD = b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00Z", "entity_id": "u1", "features": {"x": 1.5, "c": "red", "b": true, "n": null}}'


def test_a_valid_event_becomes_a_typed_message() -> None:
    result = validate_raw(Event, GOOD)
    assert result.ok and result.message is not None
    assert result.message.event_id == "e1"
    assert result.message.features == {"x": 1.5, "c": "red", "b": True, "n": None}
    assert result.message.key() == "u1"


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (None, "empty", None),
        (b"", "empty", None),
        (b"   \n", "empty", None),
        (b"\xff\xfe{}", "invalid_utf8", None),
        (b'{"event_id": "e1",', "invalid_json", None),
        (b'{"a": NaN}', "invalid_json", None),
        (b'{"a": Infinity}', "invalid_json", None),
        (b'{"a": 1e999}', "invalid_json", None),
        (b'{"a": 1' + b"0" * 400 + b"}", "invalid_json", None),
        (b'{"a": 1, "a": 2}', "invalid_json", None),
        (b"[" * 50_000 + b"]" * 50_000, "invalid_json", None),
        (b"[1, 2]", "not_an_object", None),
        (b'"text"', "not_an_object", None),
        (b"null", "not_an_object", None),
        (b'{"event_time": "2024-05-01T12:00:00Z", "features": {}}', "missing_field", "event_id"),
        (b'{"event_id": "e1", "features": {}}', "missing_field", "event_time"),
        (b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00Z"}', "missing_field", "features"),
        (
            b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00Z", "features": {}, "x": 1}',
            "unknown_field",
            "x",
        ),
        (
            b'{"event_id": 7, "event_time": "2024-05-01T12:00:00Z", "features": {}}',
            "wrong_type",
            "event_id",
        ),
        (
            b'{"event_id": "e1", "event_time": 1714564800, "features": {}}',
            "wrong_type",
            "event_time",
        ),
        (
            b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00Z", "features": []}',
            "wrong_type",
            "features",
        ),
        (
            b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00Z", "features": {"x": [1]}}',
            "wrong_type",
            "features.x",
        ),
        (
            b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00Z", "features": {"x": {"y": 1}}}',
            "wrong_type",
            "features.x",
        ),
        (
            b'{"event_id": "", "event_time": "2024-05-01T12:00:00Z", "features": {}}',
            "invalid_value",
            "event_id",
        ),
        (
            b'{"event_id": "e1", "event_time": "yesterday", "features": {}}',
            "invalid_value",
            "event_time",
        ),
        (
            b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00", "features": {}}',
            "invalid_value",
            "event_time",
        ),
        (
            b'{"event_id": "e1", "event_time": "2024-02-30T12:00:00Z", "features": {}}',
            "invalid_value",
            "event_time",
        ),
        (
            b'{"event_id": "e1", "event_time": "2024-05-01T12:00:00Z", "entity_id": "", "features": {}}',
            "invalid_value",
            "entity_id",
        ),
    ],
)
def test_each_bad_event_gets_its_code_and_field(
    raw: bytes | None, code: str, field: str | None
) -> None:
    result = validate_raw(Event, raw)
    assert not result.ok
    assert (code, field) in {(e.code, e.field) for e in result.errors}


def test_too_large_is_refused_before_parsing() -> None:
    raw = b'{"event_id": "e1", "pad": "' + b"x" * 2000 + b'"}'
    result = validate_raw(Event, raw, max_bytes=1024)
    assert [e.code for e in result.errors] == ["too_large"]


def test_every_problem_is_reported_not_just_the_first() -> None:
    raw = b'{"event_id": 1, "event_time": "nope", "features": {"a": [1]}, "zz": 0}'
    codes = {(e.code, e.field) for e in validate_raw(Event, raw).errors}
    assert codes == {
        ("wrong_type", "event_id"),
        ("invalid_value", "event_time"),
        ("wrong_type", "features.a"),
        ("unknown_field", "zz"),
    }


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b'{"event_id": "e1"}', "missing_field", "label"),
        (b'{"label": 1}', "missing_field", "event_id"),
        (b'{"event_id": "e1", "label": null}', "wrong_type", "label"),
        (b'{"event_id": "e1", "label": [1]}', "wrong_type", "label"),
        (b'{"event_id": "e1", "label": 1, "label_time": "soon"}', "invalid_value", "label_time"),
        (b'{"event_id": "e1", "label": 1, "score": 0.3}', "unknown_field", "score"),
    ],
)
def test_each_bad_label_gets_its_code_and_field(raw: bytes, code: str, field: str) -> None:
    errors = validate_raw(Label, raw).errors
    assert (code, field) in {(e.code, e.field) for e in errors}


@pytest.mark.parametrize("label", [b"1", b"0", b"2.5", b'"spam"', b"true"])
def test_labels_keep_their_json_type(label: bytes) -> None:
    result = validate_raw(Label, b'{"event_id": "e1", "label": ' + label + b"}")
    assert result.message is not None
    assert (
        result.message.to_json()
        == b'{"event_id":"e1","label":' + label + b',"label_time":null,"entity_id":null}'
    )
