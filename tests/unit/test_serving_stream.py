"""Scoring `features` messages: one stream prediction each, skips counted with a reason."""

from __future__ import annotations

from datetime import UTC, datetime

from river import linear_model

from services.serving.handlers import score_records
from services.serving.models import LoadedModel, model_input
from shared.messages import FeatureVector, Prediction

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
NOW = datetime(2024, 5, 1, 12, 0, 1, 250_000, tzinfo=UTC)


def _vector(event_id: str = "e1", entity_id: str | None = "c7", **features: float | None) -> bytes:
    return FeatureVector(
        event_id=event_id,
        entity_id=entity_id,
        event_time=T0,
        features=features,
        feature_set_version="abc",
    ).to_json()


def _model() -> LoadedModel:
    model = linear_model.LogisticRegression()
    model.learn_one({"x": 1.0}, True)
    model.learn_one({"x": -1.0}, False)
    return LoadedModel("logreg", "4", model)


def test_a_vector_becomes_a_stream_prediction_keyed_by_its_entity() -> None:
    loaded = _model()
    scored = score_records([_vector(x=2.0, y=None)], loaded, NOW)
    assert scored.skipped == []
    ((key, value),) = scored.records
    prediction = Prediction.model_validate_json(value)  # strict: the schema's own model
    assert key == b"c7"
    assert prediction.prediction_id == "e1:logreg:stream:4"
    assert (prediction.source, prediction.entity_id, prediction.event_time) == ("stream", "c7", T0)
    assert (prediction.model, prediction.model_version, prediction.time) == ("logreg", "4", NOW)
    assert prediction.y_pred == loaded.model.predict_one(model_input({"x": 2.0}))
    assert prediction.probabilities is not None
    assert set(prediction.probabilities) == {"True", "False"}


def test_a_vector_without_entity_is_keyed_global() -> None:
    scored = score_records([_vector(entity_id=None, x=1.0)], _model(), NOW)
    assert [key for key, _ in scored.records] == [b"global"]


def test_no_model_yet_is_a_counted_skip() -> None:
    scored = score_records([_vector(x=1.0)], None, NOW)
    assert (scored.records, [reason for _, reason, _ in scored.skipped]) == ([], ["no_model"])


def test_invalid_messages_are_skipped_with_the_reason_and_the_rest_scored() -> None:
    values = [None, b"{oops", _vector("ok", x=1.0), b'{"event_id": "e1"}', b"[]"]
    scored = score_records(values, _model(), NOW)
    assert [(i, reason) for i, reason, _ in scored.skipped] == [
        (0, "invalid"),
        (1, "invalid"),
        (3, "invalid"),
        (4, "invalid"),
    ]
    assert all(why for _, _, why in scored.skipped)
    assert [Prediction.model_validate_json(v).event_id for _, v in scored.records] == ["ok"]


def test_a_model_that_raises_is_a_skip_not_a_crash() -> None:
    class Broken(linear_model.LogisticRegression):
        def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:  # type: ignore[override]
            raise RuntimeError("boom")

    scored = score_records([_vector(x=1.0)], LoadedModel("logreg", "1", Broken()), NOW)
    ((_, reason, why),) = scored.skipped
    assert reason == "predict_failed" and "boom" in why  # the log says why
