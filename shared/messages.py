"""Typed, immutable records for every message on Driftline's topics.

Each model mirrors a JSON Schema in `schemas/` (`SCHEMA_FILES` maps one to the
other); `tests/unit/test_messages_schemas.py` checks that both accept and refuse
the same documents. Models are strict: build them from JSON text with
`Model.model_validate_json`, and write them with `to_json`.

>>> e = Event.model_validate_json(
...     b'{"event_id": "e1", "event_time": "2024-01-01T00:00:00Z", "features": {"x": 1.5}}'
... )
>>> e.entity_id is None, e.key()
(True, 'global')
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

__all__ = [
    "GLOBAL_KEY",
    "RFC3339",
    "SCHEMA_FILES",
    "Alert",
    "BatchFit",
    "ChampionChanged",
    "CrossValidation",
    "DeadLetter",
    "DeadLetterSource",
    "ErrorDetail",
    "Event",
    "FeatureVector",
    "Label",
    "LabelWindow",
    "Lineage",
    "Message",
    "ModelPublished",
    "PartitionOffset",
    "Prediction",
]

GLOBAL_KEY = "global"

# RFC 3339 date-time, as JSON Schema's "date-time" format means it (offset required).
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: object) -> object:
    return _parse_rfc3339(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=4096)
def _parse_rfc3339(value: str) -> datetime:
    """Cached: the messages of a batch share times (one `time` per batch, one
    `event_time` per event for each model's prediction). A datetime is immutable."""
    if not RFC3339.match(value):
        raise ValueError("not an RFC 3339 date-time with an offset")
    return datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))


Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FeatureValue = bool | int | float | Annotated[str, StringConstraints(max_length=4096)] | None
LabelValue = bool | int | float | Annotated[str, StringConstraints(min_length=1, max_length=256)]
ErrorCode = Literal[
    "empty",
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "unknown_field",
    "wrong_type",
    "invalid_value",
    "duplicate",
]


class Message(BaseModel):
    """Base of every message: strict, frozen, no unknown fields."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def _key(entity_id: str | None) -> str:
    return entity_id if entity_id is not None else GLOBAL_KEY


class Event(Message):
    """Something observed about an entity at `event_time`."""

    event_id: Id
    event_time: Time
    entity_id: Id | None = None
    features: Annotated[
        dict[Annotated[str, StringConstraints(min_length=1, max_length=256)], FeatureValue],
        Field(max_length=1000),
    ]

    def key(self) -> str:
        return _key(self.entity_id)


class Label(Message):
    """The ground truth for an event; `label_time` defaults to the event's time."""

    event_id: Id
    label: LabelValue
    label_time: Time | None = None
    entity_id: Id | None = None


class ErrorDetail(Message):
    """One problem with a message: machine-readable code, human message, field path."""

    code: ErrorCode
    message: str
    field: str | None


class DeadLetterSource(Message):
    topic: Annotated[str, StringConstraints(min_length=1)]
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    timestamp_ms: int | None = None
    key_b64: str | None = None


class DeadLetter(Message):
    """A refused raw message: its original bytes (base64), where it came from, why."""

    source: DeadLetterSource
    value_b64: str | None
    value_size: Annotated[int, Field(ge=0)]
    error: ErrorDetail
    errors: Annotated[list[ErrorDetail], Field(min_length=1)]
    failed_at: Time


class FeatureVector(Message):
    """The model-ready features of one event, as of that event."""

    event_id: Id
    entity_id: Id | None
    event_time: Time
    features: dict[Annotated[str, StringConstraints(min_length=1)], float | None]
    feature_set_version: Annotated[str, StringConstraints(min_length=1)]

    def key(self) -> str:
        return _key(self.entity_id)


class Prediction(Message):
    """One model's answer for one event or request."""

    prediction_id: Annotated[str, StringConstraints(min_length=1)]
    event_id: Annotated[str, StringConstraints(min_length=1)] | None
    entity_id: str | None = None
    model: Annotated[str, StringConstraints(min_length=1)]
    model_version: Annotated[str, StringConstraints(min_length=1)]
    y_pred: bool | int | float | str | None
    probabilities: dict[str, Annotated[float, Field(ge=0, le=1)]] | None
    source: Literal["learner", "stream", "http"]
    event_time: Time | None = None
    time: Time

    def key(self) -> str:
        return _key(self.entity_id)


class PartitionOffset(Message):
    topic: Annotated[str, StringConstraints(min_length=1)]
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]


class Lineage(Message):
    """What a model version reflects: the next offsets to read on each input."""

    offsets: list[PartitionOffset]
    config_hash: str | None = None
    n_learned: Annotated[int, Field(ge=0)] | None = None
    # SHA-256 of the model's pickle: a rebuild from the topics is identical if it matches
    content_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None


class CrossValidation(Message):
    """A batch fit's cross-validation of its chosen candidate: `scheme` (TimeSeriesSplit:
    each split trains on the past, is scored on what follows), per split and overall."""

    scheme: Annotated[str, StringConstraints(min_length=1)]
    n_splits: Annotated[int, Field(ge=2)]
    scoring: Annotated[str, StringConstraints(min_length=1)]
    mean: float | None
    std: float | None
    splits: list[float | None]
    n_resources: Annotated[int, Field(ge=0)]  # rows the candidate was scored with


class LabelWindow(Message):
    """A batch fit's training window: `rows` labelled events, the `first`-th to the
    `last`-th the model learned (counted from 1)."""

    rows: Annotated[int, Field(ge=0)]
    first: Annotated[int, Field(ge=0)]
    last: Annotated[int, Field(ge=0)]


class BatchFit(Message):
    """How a batch challenger's serving model was fitted (`shared.batch_models`): the
    search, the parameters it chose, the cross-validation, the window, and the label
    count from which it serves."""

    search: str | None = None
    params: dict[str, bool | int | float | str | None]
    cv: CrossValidation | None = None
    candidates: Annotated[int, Field(ge=0)] | None = None
    iterations: Annotated[int, Field(ge=0)] | None = None
    window: LabelWindow
    serving_from: Annotated[int, Field(ge=0)]
    fit_seconds: Annotated[float, Field(ge=0)] | None = None
    note: str | None = None


class ModelPublished(Message):
    """A model version was checkpointed to the registry."""

    name: Annotated[str, StringConstraints(min_length=1)]
    version: Annotated[str, StringConstraints(min_length=1)]
    lineage: Lineage
    metrics: dict[str, float]
    artifact_key: Annotated[str, StringConstraints(min_length=1)]
    published_at: Time
    # What the version relies on: each feature's share (`shared.explain.influence`)
    influence: dict[str, Annotated[float, Field(ge=0, le=1)]] | None = None
    # A batch challenger's fit (`shared.batch_models`); None for an online model
    batch: BatchFit | None = None


class Alert(Message):
    """Something an operator should know about (drift, quality, expiries)."""

    alert_id: Annotated[str, StringConstraints(min_length=1)]
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
    subject: Annotated[str, StringConstraints(min_length=1)]
    detector: Annotated[str, StringConstraints(min_length=1)]
    severity: Literal["info", "warning", "critical"] | None = None
    details: dict[str, object]
    raised_at: Time


class ChampionChanged(Message):
    """The model serving answers with changed: which, by whom, why, on what evidence.

    `action`: `promote` (the champion policy, with its `evidence`), `pin` (an operator
    chose `model`, `version` if given), `unpin` (back to the policy's champion),
    `rollback` (back to the previous champion). Training re-sends a promotion it
    made again after a restart with the same `change_id`.
    """

    change_id: Annotated[str, StringConstraints(min_length=1)]
    model: Annotated[str, StringConstraints(min_length=1)]
    version: Annotated[str, StringConstraints(min_length=1)] | None = None
    previous: str | None = None
    action: Literal["promote", "pin", "unpin", "rollback"]
    by: Annotated[str, StringConstraints(min_length=1)]
    reason: Annotated[str, StringConstraints(min_length=1)]
    evidence: dict[str, object] | None = None
    event_time: Time | None = None
    changed_at: Time


SCHEMA_FILES: dict[type[Message], str] = {
    Event: "event.v1.json",
    Label: "label.v1.json",
    DeadLetter: "dead_letter.v1.json",
    FeatureVector: "feature_vector.v1.json",
    Prediction: "prediction.v1.json",
    ModelPublished: "model_published.v1.json",
    Alert: "alert.v1.json",
    ChampionChanged: "champion_changed.v1.json",
}
