"""Serving's HTTP API on in-memory fakes, run with its lifespan: validation, 503, predictions."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from river import linear_model

from services.serving.app import build_app
from services.serving.context import ServingContext
from services.serving.models import LoadedModel, ModelHolder, model_input, published
from services.serving.processes import StreamStatus
from shared.catalogue import RiverModel, build_model
from shared.clock import utcnow
from shared.feature_store import EntityRow, InMemoryOnlineStore
from shared.features import FeatureComputer
from shared.http_keys import KeyCheck
from shared.messages import BatchFit, Event, LabelWindow, Prediction
from shared.pipeline import PipelineConfig

PIPELINE = PipelineConfig.model_validate(
    {
        "name": "shop",
        "task": "binary",
        "features": {
            "numeric": ["amount"],
            "categorical": ["country"],
            "aggregates": [{"field": "amount", "how": "sum", "window": "1h"}],
        },
        "models": [{"name": "logreg"}, {"name": "hat"}],
    }
)


class ListSink:
    """Collects what the API publishes (decoded with the strict message model)."""

    def __init__(self) -> None:
        self.predictions: list[Prediction] = []
        self.keys: list[bytes] = []

    def publish_nowait(self, key: bytes, value: bytes) -> None:
        self.keys.append(key)
        self.predictions.append(Prediction.model_validate_json(value))


@pytest.fixture
def context() -> ServingContext:
    computer = FeatureComputer(PIPELINE)
    store = InMemoryOnlineStore()
    stored = Event(
        event_id="e1",
        event_time=utcnow() - timedelta(minutes=5),
        entity_id="c7",
        features={"amount": 40, "country": "NL"},
    )
    vector, state = computer.compute(stored, None)
    row = EntityRow("c7", stored.event_time, "e1", vector, dict(stored.features), state)
    asyncio.run(store.write_batch([row]))
    return ServingContext(ModelHolder("logreg"), store, computer, ListSink())


@pytest.fixture
def client(context: ServingContext) -> Iterator[TestClient]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.context = context
        yield

    with TestClient(build_app(lifespan)) as client:
        yield client


def trained_logreg() -> RiverModel:
    model = build_model("logreg")
    for amount, sum_1h, label in [(1.0, 1.0, False), (90.0, 200.0, True), (5.0, 8.0, False)]:
        model.learn_one({"amount": amount, "country=NL": 1.0, "amount_sum_1h": sum_1h}, label)
    return model


def test_before_any_model_predict_and_readyz_are_503(client: TestClient) -> None:
    response = client.post("/predict", json={"entity_id": "c7"})
    assert response.status_code == 503
    assert response.json() == {"detail": "no model version of 'logreg' has been published yet"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "published yet" in ready.json()["detail"]
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "error_type"),
    [
        ({"features": {"amount": 1}}, "entity_id", "missing"),
        ({"entity_id": "c7", "features": {"amount": [1]}}, "features.amount", "value_error"),
        ({"entity_id": "c7", "features": {"amount": {"a": 1}}}, "features.amount", "value_error"),
        ({"entity_id": "c7", "extra": 1}, "extra", "extra_forbidden"),
        ({"entity_id": ""}, "entity_id", "string_too_short"),
        ({"entity_id": 7}, "entity_id", "string_type"),
        ({"entity_id": "c7", "features": {"": 1}}, "features.[key]", "string_too_short"),
        ({"entity_id": "c7", "features": []}, "features", "dict_type"),
    ],
)
def test_bad_requests_are_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str, error_type: str
) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    problems = {(p["field"], p["type"]) for p in response.json()["detail"]}
    assert problems == {(field, error_type)}


@pytest.mark.parametrize("number", [b"NaN", b"1" + b"0" * 400], ids=["nan", "past-float"])
def test_non_finite_numbers_are_refused(client: TestClient, number: bytes) -> None:
    response = client.post(
        "/predict",
        content=b'{"entity_id": "c7", "features": {"amount": ' + number + b"}}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "features.amount"
    assert "finite" in response.json()["detail"][0]["msg"]


def test_predict_merges_the_request_over_the_live_row(
    client: TestClient, context: ServingContext
) -> None:
    model = trained_logreg()
    context.holder.record(published("logreg", "3", "k3"))
    context.holder.swap(LoadedModel("logreg", "3", model))
    assert client.get("/readyz").status_code == 200

    response = client.post(
        "/predict", json={"entity_id": "c7", "event_id": "req-1", "features": {"amount": 10}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    used = {"amount": 10.0, "country=NL": 1.0, "amount_sum_1h": 50.0}
    assert body["features_used"] == used
    assert body["prediction"] == model.predict_one(model_input(used))
    expected = {str(k): v for k, v in model.predict_proba_one(model_input(used)).items()}
    assert body["probabilities"] == pytest.approx(expected)
    assert (body["model"], body["model_version"], body["event_id"]) == ("logreg", "3", "req-1")

    (logged,) = context.sink.predictions  # type: ignore[attr-defined]
    assert context.sink.keys == [b"c7"]  # type: ignore[attr-defined]
    assert logged.source == "http" and logged.prediction_id == body["prediction_id"]
    assert (logged.event_id, logged.entity_id, logged.model_version) == ("req-1", "c7", "3")


def test_an_unknown_entity_is_predicted_from_the_request_alone(
    client: TestClient, context: ServingContext
) -> None:
    context.holder.swap(LoadedModel("logreg", "1", trained_logreg()))
    response = client.post("/predict", json={"entity_id": "new", "features": {"amount": 2.5}})
    assert response.status_code == 200
    body = response.json()
    assert body["features_used"] == {"amount": 2.5, "amount_sum_1h": 2.5}
    assert body["event_id"]  # generated when not given


def test_explain_answers_each_features_part_only_when_asked(
    client: TestClient, context: ServingContext
) -> None:
    model = trained_logreg()
    context.holder.swap(LoadedModel("logreg", "4", model))
    plain = client.post("/predict", json={"entity_id": "c7", "features": {"amount": 60}})
    assert plain.status_code == 200 and "explanation" not in plain.json()
    asked = client.post(
        "/predict", json={"entity_id": "c7", "features": {"amount": 60}, "explain": True}
    )
    assert asked.status_code == 200
    body = asked.json()
    why = body["explanation"]
    assert why["method"] == "linear"
    assert {f["feature"] for f in why["features"]} == set(body["features_used"])
    score = why["intercept"] + sum(f["contribution"] for f in why["features"])
    assert 1 / (1 + math.exp(-score)) == pytest.approx(body["probabilities"]["True"], abs=1e-9)
    assert client.post("/predict", json={"entity_id": "c7", "explain": "yes"}).status_code == 422


def test_predict_needs_the_reader_key_when_one_is_set(
    client: TestClient, context: ServingContext
) -> None:
    context.holder.swap(LoadedModel("logreg", "1", trained_logreg()))
    context.reader = KeyCheck("r3ader", "reader")
    body = {"entity_id": "c7"}
    missing = client.post("/predict", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "reader key" in missing.json()["detail"]
    assert (
        client.post("/predict", json=body, headers={"Authorization": "Bearer x"}).status_code == 403
    )
    ok = client.post("/predict", json=body, headers={"Authorization": "Bearer r3ader"})
    assert ok.status_code == 200
    assert client.get("/healthz").status_code == 200, "health stays open"
    assert client.get("/metrics").status_code == 200


def test_models_lists_the_champion_and_every_version(
    client: TestClient, context: ServingContext
) -> None:
    for name, version in [("logreg", "1"), ("logreg", "2"), ("hat", "1")]:
        context.holder.record(published(name, version, f"{name}:{version}"))
    context.holder.swap(LoadedModel("logreg", "2", trained_logreg()))
    body = client.get("/models").json()
    assert body["champion"]["name"] == "logreg" and body["champion"]["version"] == "2"
    assert {n: [v["version"] for v in vs] for n, vs in body["models"].items()} == {
        "hat": ["1"],
        "logreg": ["1", "2"],
    }
    assert body["models"]["hat"][0]["batch"] is None


def test_models_shows_a_batch_challengers_fit(client: TestClient, context: ServingContext) -> None:
    fit = BatchFit(
        search="HalvingRandomSearchCV",
        params={"max_depth": 3},
        cv=None,
        window=LabelWindow(rows=500, first=1, last=500),
        serving_from=750,
    )
    context.holder.record(published("sk_hgb", "1", "k").model_copy(update={"batch": fit}))
    body = client.get("/models").json()
    batch = body["models"]["sk_hgb"][0]["batch"]
    assert batch["params"] == {"max_depth": 3} and batch["serving_from"] == 750


def test_metrics_count_requests_by_status(client: TestClient) -> None:
    client.post("/predict", json={})
    text = client.get("/metrics").text
    assert 'driftline_serving_requests_total{status="422"}' in text
    assert "driftline_serving_request_latency_seconds_bucket" in text


def test_a_model_that_raises_is_a_500_that_leaks_nothing(
    client: TestClient, context: ServingContext
) -> None:
    class Broken(linear_model.LogisticRegression):
        def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:  # type: ignore[override]
            raise RuntimeError("secret internals at /srv/models/x.pkl")

    context.holder.swap(LoadedModel("logreg", "7", Broken()))
    response = client.post("/predict", json={"entity_id": "c7"})
    assert response.status_code == 500
    assert response.json() == {"detail": "model 'logreg' version '7' failed to predict"}
    assert context.sink.predictions == []  # type: ignore[attr-defined]


def test_too_many_merged_features_are_422(client: TestClient, context: ServingContext) -> None:
    context.holder.swap(LoadedModel("logreg", "1", trained_logreg()))
    features = {f"f{i}": 1 for i in range(1000)}  # 1000 allowed, plus the row's two
    response = client.post("/predict", json={"entity_id": "c7", "features": features})
    assert response.status_code == 422
    assert "at most 1000 features" in response.json()["detail"]


def test_healthz_is_503_once_the_stream_scorer_misses_its_deadline(context: ServingContext) -> None:
    status = StreamStatus(enabled=True)
    status.extend(30)

    def liveness() -> tuple[bool, dict[str, object]]:
        return status.alive(), status.details()

    context.liveness = liveness

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.context = context
        yield

    with TestClient(build_app(lifespan)) as client:
        assert client.get("/healthz").status_code == 200
        status.deadline = 0.0
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
