"""The signed registry against the real Redis and broker: a crafted pickle never runs.

An attacker who can write to Redis stores a pickle whose loading would run a shell
command (`tests.support.RunsCode`: it creates a marker file) as a registry artifact, a
live slot and a checkpoint. Serving and training refuse each before unpickling: the
marker never appears, `driftline_registry_rejected_total` counts the refusal, serving
keeps answering /predict with the version it had, and training starts as if it had no
checkpoint, the refused one set aside.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis
from river import linear_model

from services.serving.models import published
from services.training.checkpoint import checkpoint_key
from shared.clock import utcnow
from shared.messages import FeatureVector, Label
from shared.signing import SigningKey, dumps_signed, sign, verify
from tests.support import (
    READER,
    REDIS_URL,
    SIGNING_KEY,
    ServiceProcess,
    crafted_pickle,
    kcat_produce,
    metric_value,
    provision,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., ServiceProcess]

PIPELINE = """\
name: signed-itest
task: binary
features:
  numeric: [x1, x2]
models:
  - name: logreg
"""

OTHER_KEY = SigningKey(b"a key that is not the services' key")


@pytest.fixture
def setup(prefix: str, tmp_path: Path) -> Iterator[tuple[str, Path, SyncRedis]]:
    """Topics under the test's prefix, its pipeline file, a Redis client; every key
    with the prefix is deleted at the end."""
    provision(prefix)  # topics and ACLs, as admin
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    client = SyncRedis.from_url(REDIS_URL)
    yield prefix, path, client
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def wait_until(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def announce(prefix: str, client: SyncRedis, version: str, blob: bytes) -> None:
    """`blob` as logreg's artifact `version`, announced on `models`."""
    key = f"driftline:{prefix}registry:logreg:{version}:artifact"
    client.set(key, blob)
    message = published("logreg", version, key)
    kcat_produce(f"{prefix}models", [(b"logreg", message.to_json())])


def trained(positive: bool) -> linear_model.LogisticRegression:
    model = linear_model.LogisticRegression()
    for i in range(40):
        x1 = float(i % 10 - 5)
        model.learn_one({"x1": x1, "x2": 1.0}, (x1 > 0) == positive)
    return model


def predicted_version(service: ServiceProcess) -> tuple[int, str | None]:
    response = httpx.post(
        f"{service.url}/predict",
        headers=READER,
        json={"entity_id": "c1", "features": {"x1": 2.0, "x2": 1.0}},
    )
    return response.status_code, response.json().get("model_version")


def rejected(service: ServiceProcess, what: str, reason: str) -> float:
    return metric_value(service, "driftline_registry_rejected_total", what=what, reason=reason)


def test_serving_refuses_a_crafted_artifact_live_slot_and_checkpoint_and_keeps_serving(
    service_factory: Factory, setup: tuple[str, Path, SyncRedis], tmp_path: Path
) -> None:
    prefix, pipeline, client = setup
    marker = tmp_path / "ran"
    crafted = crafted_pickle(marker)
    # the checkpoint the stream scorer's replica of the learner restores from
    client.hset(checkpoint_key(prefix), mapping={"state": crafted, "summary": "{}"})
    announce(prefix, client, "1", dumps_signed(SIGNING_KEY, trained(positive=True)))
    service = service_factory("serving", PIPELINE_CONFIG=str(pipeline)).start()
    assert predicted_version(service) == (200, "1")
    assert wait_until(lambda: rejected(service, "checkpoint", "missing") >= 1)

    announce(prefix, client, "2", crafted)  # unsigned
    assert wait_until(lambda: rejected(service, "artifact", "missing") >= 1)
    other = sign(OTHER_KEY, crafted)  # signed, with another key
    live = f"driftline:{prefix}registry:logreg:live"
    client.hset(live, mapping={"version": "3", "n_learned": "100", "artifact": other})
    assert wait_until(lambda: rejected(service, "live", "wrong") >= 1)

    assert predicted_version(service) == (200, "1"), "the version served stays"
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    assert httpx.get(f"{service.url}/models").json()["champion"]["version"] == "1"
    log = service.log_path.read_text()
    assert "REFUSED artifact" in log and "REFUSED logreg's live slot" in log
    assert "REFUSED the checkpoint" in log

    announce(prefix, client, "4", dumps_signed(SIGNING_KEY, trained(positive=False)))
    assert wait_until(lambda: predicted_version(service) == (200, "4")), "signed: taken"
    assert not marker.exists(), "the crafted pickle ran"
    assert SIGNING_KEY.secret.decode() not in log


def test_training_refuses_a_crafted_checkpoint_sets_it_aside_and_starts_afresh(
    service_factory: Factory, setup: tuple[str, Path, SyncRedis], tmp_path: Path
) -> None:
    prefix, pipeline, client = setup
    marker = tmp_path / "ran"
    key = checkpoint_key(prefix)
    crafted = sign(OTHER_KEY, crafted_pickle(marker))
    client.hset(key, mapping={"state": crafted, "summary": "{}"})
    service = service_factory("training", PIPELINE_CONFIG=str(pipeline)).start()
    assert rejected(service, "checkpoint", "wrong") == 1
    assert client.hget(f"{key}:refused", "state") == crafted, "kept aside, not overwritten"
    log = service.log_path.read_text()
    assert "REFUSED the checkpoint" in log and f"kept at {key}:refused" in log
    assert "learning from the beginning of the topics" in log

    at = utcnow()  # a few records consumed, then a last checkpoint at the stop
    vectors = [
        FeatureVector(
            event_id=f"e{i}",
            entity_id=None,
            event_time=at,
            features={"x1": float(i), "x2": 1.0},
            feature_set_version="v",
        )
        for i in range(5)
    ]
    labels = [
        Label(event_id=v.event_id, label=i % 2 == 0, label_time=at) for i, v in enumerate(vectors)
    ]
    kcat_produce(f"{prefix}features", [(b"global", v.to_json()) for v in vectors])
    kcat_produce(f"{prefix}labels", [(b"global", label.to_json()) for label in labels])
    consumed = "driftline_training_consumed_total"
    assert wait_until(lambda: metric_value(service, consumed, 0, kind="labels") >= 5)
    service.stop()
    state = client.hget(key, "state")  # written with the services' key
    assert isinstance(state, bytes) and verify(SIGNING_KEY, state)
    assert not marker.exists(), "the crafted pickle ran"
    assert SIGNING_KEY.secret.decode() not in service.log_path.read_text()
