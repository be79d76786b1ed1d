"""Conformance: each message's JSON Schema and typed model agree, document by document."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.messages import (
    SCHEMA_FILES,
    Alert,
    ChampionChanged,
    DeadLetter,
    Event,
    FeatureVector,
    Label,
    Message,
    ModelPublished,
    Prediction,
)
from shared.validation import SCHEMA_DIR, load_schema, schema_validator

T = "2024-05-01T12:00:00Z"
ERR = {"code": "invalid_json", "message": "bad", "field": None}
CV: dict[str, Any] = {
    "scheme": "TimeSeriesSplit",
    "n_splits": 3,
    "scoring": "accuracy",
    "mean": 0.81,
    "std": 0.02,
    "splits": [0.8, 0.79, None],
    "n_resources": 4998,
}
BATCH: dict[str, Any] = {
    "search": "HalvingRandomSearchCV",
    "params": {"learning_rate": 0.1, "max_leaf_nodes": 15, "early": False, "x": None},
    "cv": CV,
    "candidates": 16,
    "iterations": 3,
    "window": {"rows": 5000, "first": 1001, "last": 6000},
    "serving_from": 6500,
    "fit_seconds": 2.5,
}

VALID: dict[type[Message], list[dict[str, Any]]] = {
    Event: [
        {"event_id": "e1", "event_time": T, "features": {}},
        {
            "event_id": "e1",
            "event_time": "2024-05-01T12:00:00.123+02:00",
            "entity_id": None,
            "features": {"x": 1, "y": -2.5, "c": "a", "b": False, "n": None},
        },
    ],
    Label: [
        {"event_id": "e1", "label": 1},
        {"event_id": "e1", "label": "spam", "label_time": T, "entity_id": "u1"},
        {"event_id": "e1", "label": True, "label_time": None},
    ],
    DeadLetter: [
        {
            "source": {"topic": "events.raw", "partition": 0, "offset": 5},
            "value_b64": "e30=",
            "value_size": 2,
            "error": ERR,
            "errors": [ERR],
            "failed_at": T,
        },
        {
            "source": {
                "topic": "labels.raw",
                "partition": 2,
                "offset": 0,
                "timestamp_ms": 1,
                "key_b64": None,
            },
            "value_b64": None,
            "value_size": 0,
            "error": {**ERR, "code": "empty"},
            "errors": [{**ERR, "code": "empty"}],
            "failed_at": T,
        },
    ],
    FeatureVector: [
        {
            "event_id": "e1",
            "entity_id": None,
            "event_time": T,
            "features": {"x": 1.0, "y": None},
            "feature_set_version": "abc",
        },
    ],
    Prediction: [
        {
            "prediction_id": "p1",
            "event_id": "e1",
            "model": "logreg",
            "model_version": "3",
            "y_pred": 1,
            "probabilities": {"0": 0.2, "1": 0.8},
            "source": "learner",
            "time": T,
        },
        {
            "prediction_id": "p2",
            "event_id": None,
            "entity_id": "u1",
            "model": "hat",
            "model_version": "1",
            "y_pred": None,
            "probabilities": None,
            "source": "http",
            "event_time": None,
            "time": T,
        },
    ],
    ModelPublished: [
        {
            "name": "logreg",
            "version": "4",
            "lineage": {
                "offsets": [{"topic": "features", "partition": 0, "offset": 10}],
                "config_hash": "ab",
                "n_learned": 10,
            },
            "metrics": {"accuracy": 0.7},
            "artifact_key": "k",
            "published_at": T,
        },
        {
            "name": "sk_hgb",
            "version": "2",
            "lineage": {"offsets": []},
            "metrics": {},
            "artifact_key": "k",
            "published_at": T,
            "influence": None,
            "batch": BATCH,
        },
        {
            "name": "sk_logreg",
            "version": "1",
            "lineage": {"offsets": []},
            "metrics": {},
            "artifact_key": "k",
            "published_at": T,
            "batch": {
                "params": {},
                "window": {"rows": 900, "first": 1, "last": 900},
                "serving_from": 1000,
                "note": "the window holds one class",
            },
        },
    ],
    Alert: [
        {
            "alert_id": "a1",
            "kind": "concept_drift",
            "subject": "logreg:4",
            "detector": "ADWIN",
            "details": {"index": 1000},
            "raised_at": T,
        },
        {
            "alert_id": "a1",
            "kind": "data_drift",
            "subject": "x",
            "detector": "ks",
            "severity": "warning",
            "details": {},
            "raised_at": T,
        },
    ],
    ChampionChanged: [
        {
            "change_id": "weather:auto:1",
            "model": "hat",
            "previous": "logreg",
            "action": "promote",
            "by": "training (policy auto)",
            "reason": "hat beat logreg over the last 1000 events",
            "evidence": {"b": 40, "c": 90, "statistic": 18.5, "p_value": 0.00002},
            "event_time": T,
            "changed_at": T,
        },
        {
            "change_id": "c2",
            "model": "logreg",
            "version": "7",
            "previous": None,
            "action": "pin",
            "by": "admin",
            "reason": "pinned",
            "evidence": None,
            "event_time": None,
            "changed_at": T,
        },
    ],
}

# (document, why it is invalid): both the schema and the model must refuse each.
INVALID: dict[type[Message], list[dict[str, Any]]] = {
    Event: [
        {"event_time": T, "features": {}},
        {"event_id": "", "event_time": T, "features": {}},
        {"event_id": "e1", "event_time": "2024-05-01 12:00", "features": {}},
        {"event_id": "e1", "event_time": T, "features": {"x": [1]}},
        {"event_id": "e1", "event_time": T, "features": {}, "extra": 1},
        {"event_id": 1, "event_time": T, "features": {}},
        {"event_id": "e1", "event_time": T, "entity_id": 3, "features": {}},
    ],
    Label: [
        {"event_id": "e1"},
        {"event_id": "e1", "label": None},
        {"event_id": "e1", "label": {"a": 1}},
        {"event_id": "e1", "label": 1, "label_time": "tomorrow"},
        {"event_id": "e1", "label": 1, "other": 1},
    ],
    DeadLetter: [
        {
            "source": {"topic": "t", "partition": -1, "offset": 0},
            "value_b64": None,
            "value_size": 0,
            "error": ERR,
            "errors": [ERR],
            "failed_at": T,
        },
        {
            "source": {"topic": "t", "partition": 0, "offset": 0},
            "value_b64": None,
            "value_size": 0,
            "error": {**ERR, "code": "oops"},
            "errors": [ERR],
            "failed_at": T,
        },
        {
            "source": {"topic": "t", "partition": 0, "offset": 0},
            "value_b64": None,
            "value_size": 0,
            "error": ERR,
            "errors": [],
            "failed_at": T,
        },
    ],
    FeatureVector: [
        {"event_id": "e1", "event_time": T, "features": {}, "feature_set_version": "v"},
        {
            "event_id": "e1",
            "entity_id": None,
            "event_time": T,
            "features": {"c": "red"},
            "feature_set_version": "v",
        },
    ],
    Prediction: [
        {
            "prediction_id": "p1",
            "event_id": "e1",
            "model": "m",
            "model_version": "1",
            "y_pred": 1,
            "probabilities": None,
            "source": "batch",
            "time": T,
        },
        {
            "prediction_id": "p1",
            "event_id": "e1",
            "model": "m",
            "model_version": "1",
            "y_pred": 1,
            "probabilities": {"1": 1.5},
            "source": "http",
            "time": T,
        },
    ],
    ModelPublished: [
        {
            "name": "m",
            "version": "1",
            "lineage": {},
            "metrics": {},
            "artifact_key": "k",
            "published_at": T,
        },
        {
            "name": "m",
            "version": "1",
            "lineage": {"offsets": []},
            "metrics": {"acc": "high"},
            "artifact_key": "k",
            "published_at": T,
        },
        {
            "name": "m",
            "version": "1",
            "lineage": {"offsets": []},
            "metrics": {},
            "artifact_key": "k",
            "published_at": T,
            "batch": {**BATCH, "window": {"rows": 5000, "first": 1}},
        },
        {
            "name": "m",
            "version": "1",
            "lineage": {"offsets": []},
            "metrics": {},
            "artifact_key": "k",
            "published_at": T,
            "batch": {**BATCH, "cv": {**CV, "n_splits": 1}},
        },
        {
            "name": "m",
            "version": "1",
            "lineage": {"offsets": []},
            "metrics": {},
            "artifact_key": "k",
            "published_at": T,
            "batch": {**BATCH, "params": {"grid": [1, 2]}, "extra": 1},
        },
    ],
    Alert: [
        {
            "alert_id": "a1",
            "kind": "Concept Drift",
            "subject": "s",
            "detector": "d",
            "details": {},
            "raised_at": T,
        },
        {
            "alert_id": "a1",
            "kind": "x",
            "subject": "s",
            "detector": "d",
            "details": {},
            "severity": "urgent",
            "raised_at": T,
        },
    ],
    ChampionChanged: [
        {"change_id": "c", "model": "hat", "action": "promote", "by": "t", "reason": "r"},
        {
            "change_id": "c",
            "model": "hat",
            "action": "crown",
            "by": "t",
            "reason": "r",
            "changed_at": T,
        },
        {
            "change_id": "c",
            "model": "",
            "action": "pin",
            "by": "t",
            "reason": "r",
            "changed_at": T,
        },
    ],
}


def _model_accepts(model: type[Message], document: dict[str, Any]) -> bool:
    try:
        model.model_validate_json(json.dumps(document))
    except ValidationError:
        return False
    return True


def test_every_message_has_a_schema_file_and_every_schema_a_message() -> None:
    files = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert files == set(SCHEMA_FILES.values())
    assert set(VALID) == set(INVALID) == set(SCHEMA_FILES)


@pytest.mark.parametrize("model", list(SCHEMA_FILES), ids=lambda m: m.__name__)
def test_schema_is_draft_2020_12_and_versioned(model: type[Message]) -> None:
    schema = load_schema(model)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(SCHEMA_FILES[model])
    assert ".v" in SCHEMA_FILES[model]
    schema_validator(model)  # raises if the schema itself is invalid


@pytest.mark.parametrize("model", list(SCHEMA_FILES), ids=lambda m: m.__name__)
def test_fields_and_required_fields_match(model: type[Message]) -> None:
    schema = load_schema(model)
    assert set(schema["properties"]) == set(model.model_fields)
    required = {name for name, f in model.model_fields.items() if f.is_required()}
    assert set(schema["required"]) == required


@pytest.mark.parametrize(
    ("model", "document"),
    [(m, d) for m, docs in VALID.items() for d in docs],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_valid_documents_pass_both_and_round_trip(
    model: type[Message], document: dict[str, Any]
) -> None:
    validator = schema_validator(model)
    assert list(validator.iter_errors(document)) == []
    assert _model_accepts(model, document)
    written = json.loads(model.model_validate_json(json.dumps(document)).to_json())
    assert list(validator.iter_errors(written)) == [], "what the model writes must fit the schema"


@pytest.mark.parametrize(
    ("model", "document"),
    [(m, d) for m, docs in INVALID.items() for d in docs],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_invalid_documents_fail_both(model: type[Message], document: dict[str, Any]) -> None:
    assert list(schema_validator(model).iter_errors(document)) != []
    assert not _model_accepts(model, document)
