"""Every way a raw message can be bad gets its own code and field path."""

from __future__ import annotations

import random

import pytest

from shared import validation
from shared.messages import DeadLetter, Event, Label, Message
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


# The fast path: the usual message is parsed once, by the model, with cheap checks that
# the strict decoder would accept it. It must never accept what the strict path
# refuses, nor answer differently.
def _strict_path(message_type: type[Message], raw: bytes) -> object:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "_fast_message", lambda message_type, raw: None)
        return validate_raw(message_type, raw)


TIME = b'"event_time": "2024-05-01T12:00:00Z"'


@pytest.mark.parametrize(
    "raw",
    [
        GOOD,
        b'{"event_id": "e1", ' + TIME + b', "features": {"url": "http://x:80/a", "k:v": 1}}',
        b'{"event_id": "e1", ' + TIME + b', "features": {"x": 1e308, "y": -0, "z": 5e-324}}',
    ],
)
def test_the_usual_valid_message_takes_the_fast_path(raw: bytes) -> None:
    assert validation._fast_message(Event, raw) is not None
    assert validation._plainly_strict(raw)  # as other types check it
    result = validate_raw(Event, raw)
    assert result.ok and result == _strict_path(Event, raw)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        # duplicate keys: orjson and the model keep the last one silently
        (b'{"event_id": "e1", "event_id": "e2", ' + TIME + b', "features": {}}', "invalid_json"),
        (b'{"event_id": "e1", ' + TIME + b', "features": {"x": 1, "x": 2}}', "invalid_json"),
        (b'{"event_id": "e1", ' + TIME + b', "features": {"x": "a:b", "x": "c"}}', "invalid_json"),
        (b'{"event_id": "e1", ' + TIME + b', "features": {"x": 1, "x": "\\""}}', "invalid_json"),
        (
            b'{"event_id": "e1", ' + TIME + b', "features": {"x": 1, "x": "\\u003a"}}',
            "invalid_json",
        ),
        # numbers that are not finite floats
        (b'{"event_id": "e1", ' + TIME + b', "features": {"x": NaN}}', "invalid_json"),
        (b'{"event_id": "e1", ' + TIME + b', "features": {"x": -Infinity}}', "invalid_json"),
        (b'{"event_id": "e1", ' + TIME + b', "features": {"x": 1e999}}', "invalid_json"),
        (
            b'{"event_id": "e1", ' + TIME + b', "features": {"x": 1' + b"0" * 400 + b"}}",
            "invalid_json",
        ),
        (
            b'{"event_id": "e1", ' + TIME + b', "features": {"x": 1.7976931348623159e308}}',
            "invalid_json",
        ),
        # text the strict decoder refuses
        (b'\xef\xbb\xbf{"event_id": "e1", ' + TIME + b', "features": {}}', "invalid_json"),
        (b'{"event_id": "e\xc0\xaf", ' + TIME + b', "features": {}}', "invalid_utf8"),
        (b'{"event_id": "e\x01", ' + TIME + b', "features": {}}', "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
    ],
)
def test_the_fast_path_refuses_what_the_strict_decoder_refuses(raw: bytes, code: str) -> None:
    assert validation._fast_message(Event, raw) is None
    assert not validation._plainly_strict(raw)
    result = validate_raw(Event, raw)
    assert [e.code for e in result.errors] == [code]
    assert result == _strict_path(Event, raw)


def test_the_fast_path_leaves_escapes_and_deep_nesting_to_the_strict_decoder() -> None:
    escaped = b'{"event_id": "e\\u0031", ' + TIME + b', "features": {}}'
    assert validation._fast_message(Event, escaped) is None
    assert not validation._plainly_strict(escaped)
    assert validate_raw(Event, escaped).message is not None
    deep = b'{"a": ' * 17 + b"1" + b"}" * 17
    assert not validation._plainly_strict(deep)
    assert validation._plainly_strict(b'{"a": ' * 16 + b"1" + b"}" * 16)


def _mutants(seed: int, count: int) -> list[bytes]:
    """Valid messages with random edits: dropped bytes, duplicated keys, stray tokens."""
    rng = random.Random(seed)
    bases = [GOOD, b'{"event_id": "e1", "label": 1, "label_time": "2024-05-01T12:00:00Z"}']
    tokens = [b'"x"', b', "x": 2', b', "event_id": "e9"', b"NaN", b"1e999", b"1" + b"0" * 320]
    tokens += [b"{", b"}", b"[", b"]", b",", b":", b'"\\u003a"', b"\\", b"\xff", b" ", b"1.5"]
    tokens += [b"\x0c", b"\xc2\xa0", b"\t", b"01", b"1.", b"+1", b"9" * 30, b"true", b"null"]
    tokens += [b', "label": 1', b', "entity_id": null', b', "label_time": null']
    out = []
    for _ in range(count):
        raw = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(raw))
            if rng.random() < 0.3:
                del raw[at : at + rng.randint(1, 3)]
            else:
                raw[at:at] = rng.choice(tokens)
        out.append(bytes(raw))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fast_and_strict_paths_agree_on_mangled_messages(seed: int) -> None:
    for raw in _mutants(seed, 1500):
        for message_type in (Event, Label):
            assert validate_raw(message_type, raw) == _strict_path(message_type, raw), raw


@pytest.mark.parametrize("digits", [20, 309])
def test_a_huge_integer_a_float_can_hold_takes_the_strict_path_and_passes(digits: int) -> None:
    raw = b'{"event_id": "e1", ' + TIME + b', "features": {"x": 1' + b"0" * (digits - 1) + b"}}"
    assert validation._fast_message(Event, raw) is None
    result = validate_raw(Event, raw)
    assert result.message is not None and result.message.features["x"] == 10 ** (digits - 1)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_id": "e1", "event_id": "e1", "label": 1}',
        b'{"event_id": "e1", "label": 1, "label": "a"}',
        b'{"event_id": "e1", "label": "a", "entity_id": null, "entity_id": "u"}',
        b'{"event_id": "e1", "label": 123456789012345678901234567890}',
        b'{"event_id": "e1", "label": NaN}',
    ],
)
def test_labels_take_the_same_checks(raw: bytes) -> None:
    assert validation._fast_message(Label, raw) is None
    assert validate_raw(Label, raw) == _strict_path(Label, raw)


def test_other_types_take_the_generic_check() -> None:
    error = b'{"code": "empty", "message": "m", "field": null}'
    letter = (
        b'{"source": {"topic": "t", "partition": 0, "offset": 1}, "value_b64": null, '
        b'"value_size": 0, "error": ' + error + b', "errors": [' + error + b"], "
        b'"failed_at": "2024-05-01T12:00:00Z"}'
    )
    assert validation._fast_message(DeadLetter, letter) is not None
    twice = letter.replace(b'"offset": 1', b'"offset": 1, "offset": 2')
    assert validation._fast_message(DeadLetter, twice) is None
    assert [e.code for e in validate_raw(DeadLetter, twice).errors] == ["invalid_json"]
