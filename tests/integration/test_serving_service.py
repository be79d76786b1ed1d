"""Serving against the real broker and Redis: start-up load, /predict, hot swap, stream scoring.

The stream tests here score with published models (`STREAM_MODEL=follow`); the
default, the replica of the learner, is tested in `test_serving_replica.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from services.serving.models import model_input, published
from shared.catalogue import RiverModel, build_model
from shared.clock import utcnow
from shared.feature_store import EntityRow, RedisOnlineStore
from shared.features import FeatureComputer
from shared.messages import ChampionChanged, Event, FeatureVector, Label, Prediction
from shared.pipeline import PipelineConfig
from shared.signing import dumps_signed
from shared.topics import ensure_topics
from tests.support import (
    ADMIN_KAFKA,
    API,
    BOOTSTRAP,
    READER,
    REDIS_URL,
    SIGNING_KEY,
    ServiceProcess,
    kcat_produce,
    kcat_read,
    metric_value,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., ServiceProcess]

PIPELINE = """\
name: serving-itest
task: binary
features:
  numeric: [x1, x2]
  aggregates:
    - {field: x1, how: sum, window: 1h}
models:
  - name: logreg
  - name: hat
"""


CONFIG = PipelineConfig.model_validate(yaml.safe_load(PIPELINE))


@pytest.fixture
def pipeline_path(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


@pytest.fixture
def topics(prefix: str) -> str:
    asyncio.run(ensure_topics(BOOTSTRAP, prefix, 3, ADMIN_KAFKA))
    return prefix


@pytest.fixture
def redis_keys(prefix: str) -> Iterator[None]:
    """Deletes every Redis key this test wrote (they all carry the prefix)."""
    yield
    client = SyncRedis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def trained(flip: bool) -> RiverModel:
    """A logreg that learned x1 > 0 means True (or False, when flipped)."""
    model = build_model("logreg")
    for i in range(40):
        x1 = float(i % 10 - 5)
        model.learn_one({"x1": x1, "x2": 1.0, "x1_sum_1h": x1}, (x1 > 0) != flip)
    return model


def publish_model(prefix: str, name: str, version: str, model: RiverModel) -> None:
    """Store the artifact in Redis, then announce the version on `models`."""
    key = f"test:{prefix}registry:{name}:{version}"
    client = SyncRedis.from_url(REDIS_URL)
    client.set(key, dumps_signed(SIGNING_KEY, model))
    client.close()
    message = published(name, version, key)
    kcat_produce(f"{prefix}models", [(name.encode(), message.to_json())])


def write_row(prefix: str, event: Event) -> EntityRow:
    """What the features service would write for `event` (computed the same way)."""
    computer = FeatureComputer(CONFIG)
    vector, state = computer.compute(event, None)
    assert event.entity_id is not None
    row = EntityRow(
        event.entity_id, event.event_time, event.event_id, vector, dict(event.features), state
    )

    async def write() -> None:
        redis = Redis.from_url(REDIS_URL)
        await RedisOnlineStore(redis, namespace=f"driftline:{prefix}features").write_batch([row])
        await redis.aclose()

    asyncio.run(write())
    return row


def predictions(prefix: str) -> list[Prediction]:
    return [Prediction.model_validate_json(m["payload"]) for m in kcat_read(f"{prefix}predictions")]


class Hammer:
    """Two clients calling `POST /predict` in a loop until `stop`, which checks that
    every call was answered 200 and returns the answers in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.done = threading.Event()
        self.clients = [threading.Thread(target=self._call) for _ in range(2)]
        for client in self.clients:
            client.start()

    def _call(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.done.is_set():
                r = client.post(
                    "/predict", headers=READER, json={"entity_id": "c7", "features": {"x1": 2}}
                )
                self.answers.append((r.status_code, r.json()))

    def last(self, n: int) -> list[dict[str, Any]]:
        return [answer for _, answer in self.answers[-n:]]

    def stop(self) -> list[dict[str, Any]]:
        self.done.set()
        for client in self.clients:
            client.join()
        assert self.answers and all(s == 200 for s, _ in self.answers), self.answers[:5]
        return [answer for _, answer in self.answers]


def wait_until(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def test_without_a_model_it_is_alive_not_ready_and_skips_vectors_until_one_comes(
    service_factory: Factory, topics: str, pipeline_path: Path, redis_keys: None
) -> None:
    prefix = topics
    service = service_factory(
        "serving", PIPELINE_CONFIG=str(pipeline_path), STREAM_MODEL="follow"
    ).start()
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    assert httpx.get(f"{service.url}/readyz").status_code == 503
    response = httpx.post(f"{service.url}/predict", headers=READER, json={"entity_id": "c1"})
    assert response.status_code == 503
    assert response.json() == {"detail": "no model version of 'logreg' has been published yet"}

    early = FeatureVector(
        event_id="early",
        entity_id="c1",
        event_time=utcnow(),
        features={"x1": 1.0},
        feature_set_version="v",
    )
    kcat_produce(f"{prefix}features", [(b"c1", early.to_json())])
    skipped = 'driftline_serving_stream_skipped_total{reason="no_model"} 1.0'
    assert wait_until(lambda: skipped in httpx.get(f"{service.url}/metrics").text)

    publish_model(prefix, "logreg", "1", trained(flip=False))
    assert wait_until(lambda: httpx.get(f"{service.url}/readyz").status_code == 200)
    answer = httpx.post(
        f"{service.url}/predict", headers=READER, json={"entity_id": "c1", "features": {"x1": 2}}
    )
    assert (answer.status_code, answer.json()["model_version"]) == (200, "1")
    assert [p.source for p in wait_until(lambda: predictions(prefix))] == ["http"]


def test_predict_uses_live_features_and_hot_swaps_without_failing(
    service_factory: Factory, topics: str, pipeline_path: Path, redis_keys: None
) -> None:
    prefix = topics
    first, second = trained(flip=False), trained(flip=True)
    publish_model(prefix, "logreg", "1", first)
    publish_model(prefix, "hat", "1", build_model("hat"))  # not the champion: listed only
    stored = Event(
        event_id="e-stored",
        event_time=utcnow() - timedelta(minutes=1),
        entity_id="c7",
        features={"x1": 3.0, "x2": -1.0},
    )
    row = write_row(prefix, stored)
    service = service_factory(
        "serving", PIPELINE_CONFIG=str(pipeline_path), STREAM_MODEL="follow"
    ).start()
    assert httpx.get(f"{service.url}/readyz").status_code == 200

    response = httpx.post(
        f"{service.url}/predict",
        headers=READER,
        json={"entity_id": "c7", "event_id": "req-1", "features": {"x1": 2}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    request_event = Event(
        event_id="req-1", event_time=utcnow(), entity_id="c7", features={**row.raw, "x1": 2}
    )
    expected, _ = FeatureComputer(CONFIG).compute(request_event, row.state)
    assert body["features_used"] == expected == {"x1": 2.0, "x2": -1.0, "x1_sum_1h": 5.0}
    assert body["prediction"] == first.predict_one(model_input(expected))
    assert (body["model"], body["model_version"], body["event_id"]) == ("logreg", "1", "req-1")
    logged = wait_until(
        lambda: [p for p in predictions(prefix) if p.prediction_id == body["prediction_id"]]
    )
    assert [(p.source, p.model_version, p.entity_id) for p in logged] == [("http", "1", "c7")]

    hammer = Hammer(service.url)
    time.sleep(0.5)
    publish_model(prefix, "logreg", "2", second)
    assert wait_until(lambda: any(a["model_version"] == "2" for a in hammer.last(5)), timeout=30)
    publish_model(prefix, "logreg", "1", first)  # an older version again: ignored
    time.sleep(1.0)
    results = hammer.stop()
    versions = [a["model_version"] for a in results]
    assert len(versions) >= 20 and versions[-1] == "2" and "1" in versions
    by_version = {
        v: {a["prediction"] for a in results if a["model_version"] == v} for v in ("1", "2")
    }
    assert by_version == {
        "1": {first.predict_one(model_input(expected))},
        "2": {second.predict_one(model_input(expected))},
    }
    models = httpx.get(f"{service.url}/models").json()
    assert models["champion"]["version"] == "2"
    assert {n: [v["version"] for v in vs] for n, vs in models["models"].items()} == {
        "hat": ["1"],
        "logreg": ["1", "2"],
    }
    # every serving process (HTTP workers and the stream scorer) swapped on its own
    metrics = httpx.get(f"{service.url}/metrics").text
    workers = httpx.get(f"{service.url}/healthz").json()["workers"]
    processes = {f"http-{i}" for i in range(workers)} | {"stream"}
    for name, value in [("model_version", "2.0"), ("model_swaps_total", "2.0")]:
        found = re.findall(
            rf'^driftline_serving_{name}{{model="logreg",process="([^"]+)"}} (\S+)$', metrics, re.M
        )
        assert dict(found) == dict.fromkeys(processes, value), (name, found)


def test_every_feature_vector_gets_one_stream_prediction_from_the_newest_version(
    service_factory: Factory, topics: str, pipeline_path: Path, redis_keys: None
) -> None:
    prefix = topics
    old, newest = trained(flip=True), trained(flip=False)
    publish_model(prefix, "logreg", "1", old)
    publish_model(prefix, "logreg", "2", newest)  # at start, the newest version is loaded
    service = service_factory(
        "serving", PIPELINE_CONFIG=str(pipeline_path), STREAM_MODEL="follow"
    ).start()
    assert httpx.get(f"{service.url}/readyz").json()["model_version"] == "2"

    vectors = [
        FeatureVector(
            event_id=f"e{i}",
            entity_id=f"c{i % 3}",
            event_time=utcnow(),
            features={"x1": float(i - 5), "x2": 1.0, "x1_sum_1h": None if i == 0 else float(i)},
            feature_set_version="v",
        )
        for i in range(10)
    ]
    messages: list[tuple[bytes | None, bytes | None]] = [
        (v.key().encode(), v.to_json()) for v in vectors
    ]
    kcat_produce(f"{prefix}features", [*messages, (b"c1", b'{"not": "a vector"}')])
    found = wait_until(lambda: len(predictions(prefix)) >= len(vectors) and predictions(prefix))
    by_event = {p.event_id: p for p in found}
    assert len(found) == len(vectors) == len(by_event)
    for vector in vectors:
        p = by_event[vector.event_id]
        assert p.prediction_id == f"{vector.event_id}:logreg:stream:2"
        assert (p.source, p.model, p.model_version) == ("stream", "logreg", "2")
        assert (p.entity_id, p.event_time) == (vector.entity_id, vector.event_time)
        assert p.y_pred == newest.predict_one(model_input(vector.features))
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'driftline_serving_stream_skipped_total{reason="invalid"} 1.0' in metrics
    assert all(p.probabilities is not None for p in found)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_mid_stream_scores_every_vector_under_one_prediction_id(
    service_factory: Factory,
    topics: str,
    pipeline_path: Path,
    redis_keys: None,
    sig: signal.Signals,
) -> None:
    prefix = topics
    model = trained(flip=False)
    publish_model(prefix, "logreg", "1", model)
    vectors = [
        FeatureVector(
            event_id=f"e{i}",
            entity_id=f"c{i % 7}",
            event_time=utcnow(),
            features={"x1": float(i % 11 - 5), "x2": 1.0, "x1_sum_1h": float(i % 5)},
            feature_set_version="v",
        )
        for i in range(9000)
    ]
    messages = [(v.key().encode(), v.to_json()) for v in vectors]
    service = service_factory(
        "serving", PIPELINE_CONFIG=str(pipeline_path), BATCH_SIZE="20", STREAM_MODEL="follow"
    )
    service.start()
    kcat_produce(f"{prefix}features", messages[:8000])
    scored = {"source": "stream", "model": "logreg"}
    while metric_value(service, "driftline_serving_predictions_total", 0, **scored) < 100:
        time.sleep(0.02)
    service.stop(sig)
    assert len(predictions(prefix)) < 8000, "the signal came mid-stream"

    kcat_produce(f"{prefix}features", messages[8000:])
    service.start()
    found = wait_until(
        lambda: (
            len({p.event_id for p in predictions(prefix)}) == len(vectors) and predictions(prefix)
        ),
        timeout=120,
    )
    copies: dict[str, set[tuple[str, bool | float | str | None]]] = defaultdict(set)
    for p in found:
        copies[p.event_id].add((p.prediction_id, p.y_pred))
    assert copies.keys() == {v.event_id for v in vectors}, "no vector left unscored"
    for vector in vectors:
        expected = model.predict_one(model_input(vector.features))
        assert copies[vector.event_id] == {(f"{vector.event_id}:logreg:stream:1", expected)}
    if sig == signal.SIGTERM:
        assert len(found) == len(vectors), "a graceful stop commits what it published"


def test_a_killed_stream_scorer_is_restarted_and_scores_on(
    service_factory: Factory, topics: str, pipeline_path: Path, redis_keys: None
) -> None:
    prefix = topics
    publish_model(prefix, "logreg", "1", trained(flip=False))
    service = service_factory("serving", PIPELINE_CONFIG=str(pipeline_path)).start()
    health = wait_until(lambda: httpx.get(f"{service.url}/healthz").json().get("stream_pid"))
    assert health
    os.kill(health, signal.SIGKILL)
    restarted = wait_until(
        lambda: (
            (h := httpx.get(f"{service.url}/healthz").json())["stream_pid"] not in (0, health) and h
        )
    )
    assert restarted["stream_restarts"] == 1 and restarted["status"] == "ok"
    vector = FeatureVector(
        event_id="after",
        entity_id="c1",
        event_time=utcnow(),
        features={"x1": 1.0, "x2": 1.0, "x1_sum_1h": 1.0},
        feature_set_version="v",
    )
    kcat_produce(f"{prefix}features", [(b"c1", vector.to_json())])
    # the replica (the default scorer) predicts once the labels' clock has moved too
    kcat_produce(f"{prefix}labels", [(b"c1", Label(event_id="after", label=True).to_json())])
    found = wait_until(lambda: [p for p in predictions(prefix) if p.source == "stream"])
    assert [p.event_id for p in found] == ["after"]


def champion_change(prefix: str, model: str, change_id: str, action: str = "promote") -> None:
    message = ChampionChanged(
        change_id=change_id,
        model=model,
        previous=None,
        action=action,  # type: ignore[arg-type]
        by="test",
        reason=f"{model} is better (a test says so)",
        evidence={"b": 1, "c": 40},
        changed_at=utcnow(),
    )
    kcat_produce(f"{prefix}champions", [(b"champion", message.to_json())])


def test_a_new_champion_is_served_without_failing_a_request(
    service_factory: Factory, topics: str, pipeline_path: Path, redis_keys: None
) -> None:
    prefix = topics
    first, second = trained(flip=False), trained(flip=True)
    publish_model(prefix, "logreg", "1", first)
    publish_model(prefix, "hat", "3", second)  # stands in for a hat: any River model loads
    write_row(
        prefix,
        Event(event_id="e", event_time=utcnow(), entity_id="c7", features={"x1": 3.0, "x2": 1.0}),
    )
    service = service_factory(
        "serving", PIPELINE_CONFIG=str(pipeline_path), STREAM_MODEL="follow"
    ).start()
    assert httpx.get(f"{service.url}/models").json()["champion"]["name"] == "logreg"
    hammer = Hammer(service.url)
    time.sleep(0.5)
    champion_change(prefix, "hat", "t:1")
    assert wait_until(lambda: any(a["model"] == "hat" for a in hammer.last(5)), timeout=30)
    champion_change(prefix, "hat", "t:1")  # the same change again (a restart re-sends it)
    time.sleep(1.0)
    models = [a["model"] for a in hammer.stop()]
    assert models[0] == "logreg" and models[-1] == "hat"
    assert models == sorted(models, key=lambda m: m == "hat"), "never back to logreg"
    champion = httpx.get(f"{service.url}/models").json()["champion"]
    assert (champion["name"], champion["version"], champion["action"]) == ("hat", "3", "promote")
    assert champion["reason"] == "hat is better (a test says so)" and champion["since"]

    # a restarted serving reads the topic from its beginning: the champion stays hat
    service.stop()
    service.start()
    assert httpx.get(f"{service.url}/models").json()["champion"]["name"] == "hat"


def cli(service: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "models", *args],
        env={**os.environ, "SERVING_URL": service.url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_operators_pin_unpin_and_roll_back_the_champion_with_the_api_key(
    service_factory: Factory, topics: str, pipeline_path: Path, redis_keys: None
) -> None:
    prefix = topics
    publish_model(prefix, "logreg", "1", trained(flip=False))
    publish_model(prefix, "hat", "2", trained(flip=True))
    publish_model(prefix, "hat", "3", trained(flip=False))
    service = service_factory(
        "serving", PIPELINE_CONFIG=str(pipeline_path), STREAM_MODEL="follow"
    ).start()
    url = f"{service.url}/admin/champion"
    assert httpx.post(url, json={"model": "hat"}).status_code == 401
    wrong = httpx.post(url, json={"model": "hat"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "not the API key" in wrong.json()["detail"]
    assert httpx.delete(url).status_code == 401
    assert httpx.post(f"{url}/rollback", headers=READER).status_code == 403  # another key
    unknown = httpx.post(url, json={"model": "arf"}, headers=API)
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "model"]
    missing = httpx.post(url, json={"model": "hat", "version": "9"}, headers=API)
    assert missing.status_code == 422 and "no version '9'" in missing.json()["detail"][0]["msg"]
    assert httpx.get(f"{service.url}/models").json()["champion"]["name"] == "logreg"

    pinned = httpx.post(url, json={"model": "hat", "version": "2", "reason": "a test"}, headers=API)
    assert pinned.status_code == 200, pinned.text
    champion = pinned.json()["champion"]
    assert (champion["name"], champion["version"], champion["pinned"]) == ("hat", "2", "2")
    assert champion["action"] == "pin" and champion["by"].startswith("admin")
    listed = cli(service, "list")
    assert listed.returncode == 0 and "champion hat version 2, pinned at 2" in listed.stdout
    answer = httpx.post(
        f"{service.url}/predict", headers=READER, json={"entity_id": "new", "features": {"x1": 2}}
    ).json()
    assert (answer["model"], answer["model_version"]) == ("hat", "2")

    unpinned = cli(service, "unpin")
    assert unpinned.returncode == 0 and "champion logreg version 1" in unpinned.stdout
    back = cli(service, "rollback")
    assert back.returncode == 0 and "champion hat version 2" in back.stdout, back.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "shared.cli", "models", "promote", "hat"],
        env={**os.environ, "SERVING_URL": service.url, "DRIFTLINE_API_KEY": "wrong"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "driftline models promote: refused (403): the key sent is not the API key"
    )
    audit = [json.loads(m["payload"]) for m in kcat_read(f"{prefix}champions")]
    assert [(c["action"], c["model"], c["version"]) for c in audit] == [
        ("pin", "hat", "2"),
        ("unpin", "logreg", None),
        ("rollback", "hat", "2"),
    ]
    assert all(c["by"].startswith("admin (API key, from ") for c in audit)
