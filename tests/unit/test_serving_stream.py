"""Scoring `features` messages: one stream prediction each, skips counted with a reason."""

from __future__ import annotations

from datetime import UTC, datetime

from river import linear_model

from services.serving.models import LoadedModel, model_input
from services.serving.stream import score_message
from shared.messages import FeatureVector

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def _vector(event_id: str = "e1", **features: float | None) -> bytes:
    return FeatureVector(
        event_id=event_id,
        entity_id="c7",
        event_time=T0,
        features=features,
        feature_set_version="abc",
    ).to_json()


def _model() -> LoadedModel:
    model = linear_model.LogisticRegression()
    model.learn_one({"x": 1.0}, True)
    model.learn_one({"x": -1.0}, False)
    return LoadedModel("logreg", "4", model)


def test_a_vector_becomes_a_stream_prediction() -> None:
    loaded = _model()
    prediction, reason, _ = score_message(_vector(x=2.0, y=None), loaded)
    assert reason is None and prediction is not None
    assert prediction.prediction_id == "e1:logreg:stream:4"
    assert (prediction.source, prediction.entity_id, prediction.event_time) == ("stream", "c7", T0)
    assert prediction.y_pred == loaded.model.predict_one(model_input({"x": 2.0}))
    assert prediction.probabilities is not None
    assert set(prediction.probabilities) == {"True", "False"}


def test_no_model_yet_is_a_counted_skip() -> None:
    assert score_message(_vector(x=1.0), None)[:2] == (None, "no_model")


def test_invalid_messages_are_skipped_with_the_reason() -> None:
    for value in (None, b"{oops", b'{"event_id": "e1"}', b"[]"):
        prediction, reason, why = score_message(value, _model())
        assert (prediction, reason) == (None, "invalid") and why


def test_a_model_that_raises_is_a_skip_not_a_crash() -> None:
    class Broken(linear_model.LogisticRegression):
        def predict_one(self, x: dict[str, float]) -> bool:  # type: ignore[override]
            raise RuntimeError("boom")

    prediction, reason, why = score_message(_vector(x=1.0), LoadedModel("logreg", "1", Broken()))
    assert (prediction, reason) == (None, "predict_failed") and "boom" in why
