"""Turn raw bytes into a typed message, or into the reasons they are not one.

`validate_raw` is the one gate every untrusted message passes (Kafka consumer and
HTTP alike). It checks, in order: present, size, UTF-8, strict JSON (no NaN, no
duplicate keys), a JSON object, then the message's JSON Schema. Each problem is an
`ErrorDetail` with a machine-readable code, a message and the dotted field path.

>>> from shared.messages import Event
>>> result = validate_raw(Event, b'{"event_id": "e1", "features": {}}')
>>> [(e.code, e.field) for e in result.errors]
[('missing_field', 'event_time')]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from pydantic import ValidationError as PydanticValidationError

from shared.messages import RFC3339, SCHEMA_FILES, ErrorDetail, Event, Label, Message

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SCHEMA_DIR",
    "ValidationResult",
    "check_document",
    "decode_json",
    "load_schema",
    "parse_message",
    "schema_validator",
    "validate_document",
    "validate_raw",
]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DEFAULT_MAX_BYTES = 256 * 1024

M = TypeVar("M", bound=Message)

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not RFC3339.match(value):
        return False
    datetime.fromisoformat(value.replace("z", "Z"))  # raises on impossible dates
    return True


@dataclass(frozen=True)
class ValidationResult(Generic[M]):
    """Either `message` is set, or `errors` says why not (first error first)."""

    message: M | None = None
    errors: list[ErrorDetail] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.message is not None


def load_schema(message_type: type[Message]) -> dict[str, Any]:
    text = (SCHEMA_DIR / SCHEMA_FILES[message_type]).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def schema_validator(message_type: type[Message]) -> Draft202012Validator:
    schema = load_schema(message_type)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=_formats)


def _error(code: str, message: str, path: str | None = None) -> ErrorDetail:
    return ErrorDetail.model_validate({"code": code, "message": message, "field": path})


def _dotted(parts: list[Any]) -> str | None:
    return ".".join(str(p) for p in parts) if parts else None


def _join(base: str | None, name: str) -> str:
    return f"{base}.{name}" if base else name


def _explain(err: ValidationError) -> list[ErrorDetail]:
    """Map one JSON Schema error to our codes; one detail per offending field."""
    path = _dotted(list(err.absolute_path))
    instance: Any = err.instance
    value: Any = err.validator_value
    schema: Any = err.schema
    if err.validator == "required" and isinstance(instance, dict):
        return [
            _error("missing_field", f"'{name}' is required", _join(path, name))
            for name in value
            if name not in instance
        ]
    if err.validator == "additionalProperties" and value is False:
        allowed = set(schema.get("properties", {}))
        return [
            _error("unknown_field", f"'{name}' is not a field of this message", _join(path, name))
            for name in instance
            if name not in allowed
        ]
    if err.validator == "type" or (err.validator == "anyOf" and all("type" in s for s in value)):
        expected = value
        if err.validator == "anyOf":
            expected = [s["type"] for s in value]
        return [
            _error(
                "wrong_type",
                f"expected {_type_words(expected)}, got {_json_type(instance)}",
                path,
            )
        ]
    if err.validator == "anyOf":  # right type somewhere, wrong value: say what failed
        best = [_explain(sub) for sub in err.context if sub.validator != "type"]
        if best:
            return best[0]
    return [_error("invalid_value", err.message[:300], path)]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _type_words(expected: object) -> str:
    if isinstance(expected, list):
        flat = [t for e in expected for t in (e if isinstance(e, list) else [e])]
        return " or ".join(str(t) for t in flat)
    return str(expected)


def check_document(message_type: type[Message], document: object) -> list[ErrorDetail]:
    """Every schema problem of an already-parsed JSON document, ordered by field."""
    errors = sorted(
        schema_validator(message_type).iter_errors(document),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    return [detail for err in errors for detail in _explain(err)]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"number {literal[:40]} is out of range")
    return value


def _finite_int(literal: str) -> int:
    value = int(literal)
    try:
        float(value)  # every number must fit a float downstream
    except OverflowError:
        raise ValueError(f"number {literal[:40]}... is out of range") from None
    return value


_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_float=_finite_float,
    parse_int=_finite_int,
    object_pairs_hook=_no_duplicate_keys,
)


def _parse(text: str) -> Any:
    return _DECODER.decode(text)


def decode_json(
    raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[Any, list[ErrorDetail]]:
    """Strictly parse raw bytes as JSON: (document, []) or (None, [why not])."""
    if raw is None or not raw.strip():
        return None, [_error("empty", "the message has no value")]
    if len(raw) > max_bytes:
        return None, [_error("too_large", f"{len(raw)} bytes exceeds the limit of {max_bytes}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [_error("invalid_utf8", f"not UTF-8: {exc.reason} at byte {exc.start}")]
    try:
        return _parse(text), []
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return None, [_error("invalid_json", f"not valid JSON: {reason}"[:300])]


# Deepest nesting `_plainly_strict` vouches for (events and labels nest 2 deep); far
# below the recursion limit at which the strict decoder gives up.
_MAX_PLAIN_DEPTH = 16
# Larger floats take the strict decoder: near the overflow the parsers might round apart.
_MAX_PLAIN_FLOAT = 1e308


def _string_tokens(container: dict[str, Any] | list[Any], depth: int) -> int:
    """The JSON strings (keys included) that make up an orjson-parsed `container`,
    or -1 if it holds something `_plainly_strict` does not vouch for."""
    if depth > _MAX_PLAIN_DEPTH:
        return -1
    if type(container) is dict:
        count = len(container)
        values: Any = container.values()
    else:
        count = 0
        values = container
    for value in values:
        kind = type(value)
        if kind is str:
            count += 1
        elif kind is float:
            if not -_MAX_PLAIN_FLOAT <= value <= _MAX_PLAIN_FLOAT:
                return -1
        elif kind is dict or kind is list:
            inner = _string_tokens(value, depth + 1)
            if inner < 0:
                return -1
            count += inner
    return count


def _plainly_strict(raw: bytes) -> bool:
    """True only if `decode_json` surely accepts `raw` as a JSON object: a test done
    in C for the most part (orjson, a count), a third of the strict decoder's cost.

    orjson refuses NaN, Infinity and numbers past a double's range, as the strict
    decoder does, and accepts no more than it save for three things ruled out here.
    A duplicate key (orjson keeps the last one): without a backslash every `"` in the
    text delimits a string, so the text holds exactly twice as many quotes as the
    parsed document holds strings, keys included, unless a pair was dropped. An
    integer past 64 bits (orjson reads it as a float): floats beyond 1e308 are left
    to the strict decoder rather than trust two parsers to round alike at the edge.
    Nesting deeper than the strict decoder's recursion allows. UTF-8 is checked by
    the same `bytes.decode` as in `decode_json`. False says nothing about `raw`.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if "\\" in text:
        return False
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    if type(document) is not dict:
        return False
    strings = _string_tokens(document, 1)
    return strings >= 0 and text.count('"') == 2 * strings


# An integer past 64 bits takes the strict decoder, which refuses one past a float's range.
_MAX_PLAIN_INT = 2**63


def _plain_values(values: Iterable[Any], strings: int) -> int:
    """`strings` plus the strings among `values`, or -1 for a number left to the
    strict decoder (the model reads any integer, and floats near the overflow)."""
    for value in values:
        kind = type(value)
        if kind is str:
            strings += 1
        elif kind is int:
            if not -_MAX_PLAIN_INT <= value < _MAX_PLAIN_INT:
                return -1
        elif kind is float and not -_MAX_PLAIN_FLOAT <= value <= _MAX_PLAIN_FLOAT:
            return -1
    return strings


def _event_strings(event: Event) -> int:
    keys = len(event.model_fields_set) + len(event.features)
    # event_id and event_time are JSON strings (a strict model takes no other)
    fixed = keys + 2 + (type(event.entity_id) is str)
    return _plain_values(event.features.values(), fixed)


def _label_strings(label: Label) -> int:
    fixed = len(label.model_fields_set) + 1 + (label.label_time is not None)
    return _plain_values((label.label, label.entity_id), fixed)


# The JSON strings a valid message's text held, keys included, counted from the message
# (or -1): never more than the text held, so a count that matches the text's quotes
# proves no pair was dropped. For the ingested types; others use `_plainly_strict`.
_STRINGS_IN: dict[type[Message], Callable[[Any], int]] = {
    Event: _event_strings,
    Label: _label_strings,
}


def _fast_message(message_type: type[M], raw: bytes) -> M | None:
    """The typed model over `raw` when the strict path would give the same, or None.

    The model's JSON parser accepts no more than the strict decoder does, save for
    duplicate keys (it keeps the last one), integers past a float's range, and floats
    two parsers might round apart near the overflow; for an ingested type these are
    ruled out from the message itself. Without a backslash every `"` in the text
    delimits a string, so the text holds exactly twice as many quotes as the message
    counts strings unless a pair was dropped. UTF-8 is checked by the same
    `bytes.decode` as in `decode_json`. Any other type takes `_plainly_strict` first.
    """
    strings_in = _STRINGS_IN.get(message_type)
    if strings_in is None:
        if not _plainly_strict(raw):
            return None
        text = ""
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "\\" in text:
            return None
    try:
        message = message_type.model_validate_json(raw)
    except (PydanticValidationError, ValueError):
        return None  # the strict path says why
    if strings_in is None:
        return message
    strings = strings_in(message)
    return message if strings >= 0 and text.count('"') == 2 * strings else None


def validate_raw(
    message_type: type[M], raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> ValidationResult[M]:
    """Validate one raw message; never raises on bad input.

    The usual valid message is parsed once, by the typed model, with cheap checks that
    the strict decoder would accept it (`_fast_message`); anything else, and anything
    the model refuses, takes the strict decoder, then the model, and on refusal the
    JSON Schema for the reasons. Both paths give the same result.
    """
    if raw is not None and len(raw) <= max_bytes:
        message = _fast_message(message_type, raw)
        if message is not None:
            return ValidationResult(message=message)
    document, errors = decode_json(raw, max_bytes)
    if errors:
        return ValidationResult(errors=errors)
    if not isinstance(document, dict):
        return ValidationResult(
            errors=[_error("not_an_object", f"expected a JSON object, got {_json_type(document)}")]
        )
    assert raw is not None  # decode_json refuses None
    return _validate(message_type, raw, document)


def validate_document(message_type: type[M], document: object) -> ValidationResult[M]:
    """Validate a parsed JSON document: the typed model decides (fast), and when it
    refuses, the JSON Schema explains why with our codes. The two agree on what they
    accept (tests/unit/test_messages_schemas.py); if only the model objects, its
    reason is reported as `invalid_value`."""
    return _validate(message_type, json.dumps(document).encode(), document)


def _validate(message_type: type[M], text: bytes, document: object) -> ValidationResult[M]:
    """The typed model over `text`, the JSON text of the strictly parsed `document`."""
    try:
        return ValidationResult(message=message_type.model_validate_json(text))
    except (PydanticValidationError, ValueError) as exc:
        errors = check_document(message_type, document)
        if errors or not isinstance(exc, PydanticValidationError):
            return ValidationResult(errors=errors or [_error("invalid_value", str(exc)[:300])])
        return ValidationResult(
            errors=[
                _error("invalid_value", e["msg"], _dotted(list(e["loc"]))) for e in exc.errors()
            ]
        )


def parse_message(
    message_type: type[M], raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> ValidationResult[M]:
    """Parse one message of an internal topic: one pass of the typed model.

    Internal topics are written by our own services, so the usual message costs one
    parse. Only a message the model refuses goes through `validate_raw`, to say why
    with the same codes ingestion uses (one the model alone refuses is `invalid_value`).
    """
    if raw is not None and len(raw) <= max_bytes:
        try:
            return ValidationResult(message=message_type.model_validate_json(raw))
        except (PydanticValidationError, ValueError):
            pass
    return validate_raw(message_type, raw, max_bytes)
