"""Serving's pure pieces: prediction encoding, one-call prediction, a stalled Redis, the tally."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry, Histogram

from services.serving import metrics
from services.serving.config import ServingSettings
from services.serving.errors import FeatureStoreUnavailable
from services.serving.handlers import encode_prediction, predict_request, prediction_record
from services.serving.live import LiveRows
from services.serving.models import LoadedModel, ModelHolder, model_input
from shared.catalogue import CATALOGUE, build_model
from shared.features import FeatureComputer
from shared.messages import Prediction
from shared.pipeline import PipelineConfig

T0 = datetime(2024, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC)


def _trained(name: str) -> LoadedModel:
    model = build_model(name)
    for i in range(60):
        x = {"a": float(i % 7 - 3), "b": float(i % 5)}
        model.learn_one(x, i % 7 > 3)
    return LoadedModel(name, "1", model)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_one_call_predicts_exactly_what_predict_one_and_predict_proba_one_do(name: str) -> None:
    loaded = _trained(name)
    for i in range(30):
        x = {"a": float(i % 9 - 4) / 2, "b": float(i % 4), "c": None}
        scored = loaded.predict(x)
        y_pred = loaded.model.predict_one(model_input(x))
        assert scored.y_pred == (y_pred.item() if hasattr(y_pred, "item") else y_pred)
        if loaded.is_classifier:
            proba = loaded.model.predict_proba_one(model_input(x))
            assert scored.probabilities == {str(k): float(v) for k, v in proba.items()}


@pytest.mark.parametrize(
    "event_time",
    [T0, T0.replace(microsecond=0), T0.astimezone(timezone(timedelta(hours=2)))],
    ids=["micros", "whole-second", "offset"],
)
def test_the_encoded_prediction_is_what_the_message_model_writes(event_time: datetime) -> None:
    record = prediction_record(
        _trained("logreg"),
        {"a": 1.0, "b": None},
        prediction_id="p1",
        event_id="e1",
        entity_id=None,
        event_time=event_time,
        source="http",
        now=T0,
    )
    encoded = encode_prediction(record)
    parsed = Prediction.model_validate_json(encoded)
    assert parsed == Prediction.model_validate_json(Prediction.model_validate(record).to_json())
    assert parsed.event_time == event_time


def test_the_request_tally_adds_what_observe_would() -> None:
    registry = CollectorRegistry()
    reference = Histogram("ref_seconds", "", buckets=metrics.REQUEST_LATENCY._upper_bounds)
    registry.register(reference)
    before = {
        s.labels.get("le"): s.value
        for s in next(iter(metrics.REQUEST_LATENCY.collect())).samples
        if s.name.endswith("_bucket")
    }
    tally = metrics.RequestTally()
    for seconds in (0.0001, 0.0007, 0.003, 0.003, 9.0):
        tally.request(200, seconds)
        reference.observe(seconds)
    tally.flush()
    after = {
        s.labels.get("le"): s.value
        for s in next(iter(metrics.REQUEST_LATENCY.collect())).samples
        if s.name.endswith("_bucket")
    }
    expected = {
        s.labels.get("le"): s.value
        for s in next(iter(reference.collect())).samples
        if s.name.endswith("_bucket")
    }
    assert {le: after[le] - before[le] for le in after} == expected


@pytest.fixture
async def stalled_redis() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()


async def test_a_stalled_redis_is_a_quick_clear_503(stalled_redis: str) -> None:
    settings = ServingSettings(redis_url=stalled_redis, redis_timeout_s=0.2)
    store = LiveRows(settings.redis_url, "driftline:features", settings.redis_timeout_s)
    holder = ModelHolder("logreg")
    holder.swap(_trained("logreg"))
    pipeline = PipelineConfig.model_validate(
        {
            "name": "p",
            "task": "binary",
            "features": {"numeric": ["a"]},
            "models": [{"name": "logreg"}],
        }
    )
    started = time.monotonic()
    with pytest.raises(FeatureStoreUnavailable) as caught:
        await predict_request(
            entity_id="c1",
            event_id=None,
            features={},
            holder=holder,
            store=store,
            computer=FeatureComputer(pipeline),
        )
    assert time.monotonic() - started < 1.0
    assert caught.value.status_code == 503
    assert caught.value.detail == "the online feature store did not answer (TimeoutError)"
    await store.aclose()
