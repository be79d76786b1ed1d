"""compose.yaml for real (`make compose-test`): the stack built and started by Docker
compose, driven from the host as a user drives it.

`scripts/compose.sh test` provides the engine, compose v2 and the base images (the
official ones where they can be pulled, stand-ins built from Debian packages where
not) and runs this module. It brings the stack up with `docker compose up -d --build
--wait`, publishes a live-time Agrawal stream (the default pipeline's data) to Kafka on
127.0.0.1:9092 with kcat, and checks the loop closed: training learned every event once
(each model's counts equal River's own progressive validation), monitoring scored them,
`/predict` answers. Then it kills training's process from the host (`kill -9`, not
`docker kill`, which compose counts as a manual stop) and checks that compose brings it
back healthy and that the loop goes on with nothing lost or learned twice. Last,
Prometheus (profile `observability`) must then scrape all five and load the rules.
`docker compose down -v` must leave no container, network or volume of the project.

The local stack must be down: compose publishes the same host ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from river import evaluate, metrics

from shared.catalogue import build_model
from shared.replay import ReplayPlan, plan_messages, rows_from_source
from tests.support import READER, ROOT, kcat_config

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(1200)]

PROJECT = "driftline"  # compose.yaml's `name`
BOOTSTRAP = "127.0.0.1:9092"
# kcat as the outside producer (compose's broker has the same principals as .secrets/)
PRODUCER = ["kcat", "-F", kcat_config("producer"), "-P", "-b", BOOTSTRAP]
TRAINING = "http://127.0.0.1:8003"
SERVING = "http://127.0.0.1:8000"
MONITORING = "http://127.0.0.1:8002"
PROMETHEUS = "http://127.0.0.1:9090"
FIRST, SECOND = 3000, 2000  # events before and after the kill
STEP = timedelta(milliseconds=50)


def _compose(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose.yaml"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ,
    )


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _project_objects() -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={PROJECT}"
    return {
        "containers": _docker("ps", "-a", "-q", "--filter", label).split(),
        "networks": _docker("network", "ls", "-q", "--filter", label).split(),
        "volumes": _docker("volume", "ls", "-q", "--filter", label).split(),
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[None]:
    _compose(
        "--profile", "observability", "down", "-v", "--remove-orphans"
    )  # what an interrupted run left
    up = _compose("up", "-d", "--build", "--wait", "--wait-timeout", "300")
    if up.returncode != 0:
        logs = _compose("logs", "--no-color", "--tail", "40").stdout
        _compose("--profile", "observability", "down", "-v", "--remove-orphans")
        pytest.fail(f"docker compose up failed:\n{up.stderr[-4000:]}\n{logs[-8000:]}")
    yield
    _compose("--profile", "observability", "down", "-v", "--remove-orphans")


def _rows(n: int, first: int) -> list[tuple[dict[str, Any], Any]]:
    rows = list(rows_from_source("synth:agrawal-drift", n=first + n))
    return rows[first:]


def _publish(rows: list[tuple[dict[str, Any], Any]], run: str, start: datetime) -> None:
    """Events to events.raw, labels to labels.raw (each right after its event), with kcat."""
    messages = list(plan_messages(rows, ReplayPlan(run, start=start, step=STEP)))
    for kind, topic in (("event", "events.raw"), ("label", "labels.raw")):
        lines = "".join(
            f"{key}\t{json.dumps(message)}\n" for k, key, message in messages if k == kind
        )
        subprocess.run(
            [*PRODUCER, "-t", topic, "-K", "\t", "-z", "none"],
            input=lines.encode(),
            check=True,
            timeout=120,
        )


def _river(model: str, rows: list[tuple[dict[str, Any], Any]]) -> tuple[int, int]:
    """(scored, correct) of River's own progressive validation, label right after event.

    A model that cannot answer yet (a tree before its first label) is not scored.
    """
    accuracy = metrics.Accuracy()
    dataset: list[Any] = rows
    evaluate.progressive_val_score(dataset, build_model(model), accuracy)
    return int(accuracy.cm.total_weight), int(accuracy.cm.total_true_positives)


def _training_models() -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{TRAINING}/api/models", timeout=10).json()
    return {m["name"]: m for m in body["models"]}


def _learner_rows() -> dict[str, dict[str, Any]]:
    summary = httpx.get(f"{MONITORING}/api/summary", timeout=10).json()
    return {r["model"]: r for r in summary["models"] if r["source"] == "learner"}


def _wait_learned(n: int, timeout: float = 300) -> None:
    """Until training has scored `n` events per model and monitoring counted them."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        try:
            models, learner = _training_models(), _learner_rows()
            learned = {m: r["n_learned"] for m, r in models.items()}
            scored = {m: r["n_scored"] for m, r in models.items()}
            seen = (learned, {m: r["n"] for m, r in learner.items()})
            if (
                models
                and all(v >= n for v in learned.values())
                and all(learner.get(m, {}).get("n", 0) >= scored[m] for m in models)
            ):
                time.sleep(3)  # anything more would be a repeat: let it show
                return
        except httpx.HTTPError as error:
            seen = repr(error)
        time.sleep(2)
    raise AssertionError(f"never learned {n} events per model: {seen}")


def _assert_learned_exactly(rows: list[tuple[dict[str, Any], Any]]) -> None:
    models = _training_models()
    assert set(models) == {"logreg", "hat"}, models  # pipelines/default.yaml
    for name, row in models.items():
        assert row["n_learned"] == len(rows), row
        assert (row["n_scored"], row["n_correct"]) == _river(name, rows), row
    learner = _learner_rows()
    assert {m: r["n"] for m, r in learner.items()} == {
        m: r["n_scored"] for m, r in models.items()
    }, learner


def _assert_predict_answers() -> None:
    deadline = time.monotonic() + 30
    answer = None
    while time.monotonic() < deadline:
        answer = httpx.post(
            f"{SERVING}/predict", headers=READER, json={"entity_id": "global"}, timeout=5
        )
        if answer.status_code == 200:
            body = answer.json()
            assert body["model"] in {"logreg", "hat"}, body
            return
        time.sleep(1)
    raise AssertionError(f"/predict never answered 200: {answer and answer.text}")


def _state(service: str) -> dict[str, Any]:
    container = f"{PROJECT}-{service}-1"
    return dict(json.loads(_docker("inspect", container))[0])


def _wait_healthy(service: str, restarts: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = _state(service)
        health = state["State"].get("Health", {}).get("Status")
        if state["RestartCount"] >= restarts and health == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"{service} not back and healthy: {state.get('State')}")


def test_the_loop_closes_and_survives_a_killed_service(stack: None) -> None:
    start = datetime.now(UTC) - (FIRST + SECOND) * STEP  # live time, ending about now
    first = _rows(FIRST, 0)
    _publish(first, "c1", start)
    _wait_learned(FIRST)
    _assert_learned_exactly(first)
    _assert_predict_answers()

    restarts = _state("training")["RestartCount"]
    pid = _state("training")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)  # the process dies; compose's restart policy applies
    _wait_healthy("training", restarts + 1)

    second = _rows(SECOND, FIRST)
    _publish(second, "c2", start + FIRST * STEP)
    _wait_learned(FIRST + SECOND)
    _assert_learned_exactly(first + second)
    _assert_predict_answers()


def test_prometheus_scrapes_every_service_and_loads_the_rules(stack: None) -> None:
    """The `observability` profile's Prometheus (Grafana's image may not be had here:
    its files are checked statically in tests/unit/test_observability.py)."""
    up = _compose("--profile", "observability", "up", "-d", "--wait", "prometheus", timeout=600)
    assert up.returncode == 0, up.stderr[-4000:]
    deadline = time.monotonic() + 90
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()
        health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
        if len(health) == 5 and set(health.values()) == {"up"}:
            break
        time.sleep(2)
    assert health == dict.fromkeys(
        ["ingestion", "features", "training", "serving", "monitoring"], "up"
    ), health
    groups = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {g["name"] for g in groups} == {"driftline-quality", "driftline-pipeline"}
    assert {r["health"] for g in groups for r in g["rules"]} <= {"ok", "unknown"}
    query = {"query": 'driftline_monitoring_scored_total{source="learner"}'}
    result = httpx.get(f"{PROMETHEUS}/api/v1/query", params=query, timeout=10).json()
    assert {r["metric"]["model"] for r in result["data"]["result"]} >= {"logreg"}


def test_down_leaves_nothing_of_the_project(stack: None) -> None:
    down = _compose("--profile", "observability", "down", "-v", "--remove-orphans")
    assert down.returncode == 0, down.stderr
    assert _project_objects() == {"containers": [], "networks": [], "volumes": []}
