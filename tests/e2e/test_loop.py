"""The whole loop, five real services on the real broker and Redis.

Events go in through `events.raw`/`labels.raw` (published with kcat, a client we
did not write); features, learning, serving and monitoring come out. The learner's
accuracy reported by monitoring must equal River's own progressive validation on
the same rows, to the last correct prediction.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from river import evaluate, linear_model, metrics, preprocessing, tree

from shared.feature_store import RedisOnlineStore
from shared.replay import ReplayPlan, plan_messages, rows_from_source
from tests.support import READER, REDIS_URL, ROOT, ServiceProcess, kcat_produce, kcat_read

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

WEATHER = ROOT.parent / "shared" / "datasets" / "weather.csv"
SERVICES = ("ingestion", "features", "training", "serving", "monitoring")

Factory = Callable[..., ServiceProcess]


@dataclass
class Loop:
    prefix: str
    services: dict[str, ServiceProcess]

    def url(self, name: str) -> str:
        return self.services[name].url

    def publish(self, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Events to events.raw and labels to labels.raw, with kcat as the outside producer
        (the one principal besides ingestion that may write them), in plan order."""
        for kind, topic in (("event", "events.raw"), ("label", "labels.raw")):
            batch = [(k.encode(), json.dumps(m).encode()) for kd, k, m in messages if kd == kind]
            kcat_produce(f"{self.prefix}{topic}", batch, principal="producer")

    def summary(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url('monitoring')}/api/summary", timeout=10).json())

    def learner_rows(self) -> dict[str, dict[str, Any]]:
        return {r["model"]: r for r in self.summary()["models"] if r["source"] == "learner"}

    def wait_for_learner(
        self, expected: dict[str, int], timeout: float = 400
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            rows = self.learner_rows()
            if all(rows.get(m, {}).get("n", 0) >= n for m, n in expected.items()):
                time.sleep(3)  # nothing more may arrive: no double counting
                return self.learner_rows()
            time.sleep(2)
        raise AssertionError(f"learner never scored {expected}: {rows}; {self.census()}")

    def census(self) -> dict[str, int]:
        """Distinct event_ids per topic and learner predictions per model, to say where
        a missing item was lost."""
        counts: dict[str, int] = {}
        for topic in ("events", "labels", "features"):
            ids = {json.loads(m["payload"])["event_id"] for m in kcat_read(self.prefix + topic)}
            counts[topic] = len(ids)
        predictions: dict[str, set[str]] = {}
        for m in kcat_read(f"{self.prefix}predictions"):
            p = json.loads(m["payload"])
            key = f"predictions.{p['source']}.{p['model']}"
            predictions.setdefault(key, set()).add(p["prediction_id"])
        return counts | {key: len(ids) for key, ids in predictions.items()}


def _pipeline(tmp_path: Path, name: str, numeric: list[str], models: list[str]) -> Path:
    path = tmp_path / f"{name}.yaml"
    lines = [
        f"name: {name}",
        "task: binary",
        "features:",
        f"  numeric: [{', '.join(numeric)}]",
        "models:",
    ]
    lines += [f"  - name: {m}" for m in models] + ["labels:", "  ttl: 30d"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def start_loop(service_factory: Factory, prefix: str) -> Iterator[Callable[[Path], Loop]]:
    def start(pipeline: Path) -> Loop:
        env = {"PIPELINE_CONFIG": str(pipeline), "CHECKPOINT_EVERY": "2000"}
        services = {name: service_factory(name, **env) for name in SERVICES}
        for service in services.values():
            service.start(timeout=120)
        return Loop(prefix, services)

    yield start


def _weather(n: int | None = None) -> list[tuple[dict[str, Any], Any]]:
    assert WEATHER.exists(), f"{WEATHER} missing: the team kit must sit beside the repo"
    with WEATHER.open() as handle:
        count = sum(1 for _ in csv.DictReader(handle))
    return list(rows_from_source(str(WEATHER), n=n or count))


def _river_counts(
    rows: list[tuple[dict[str, Any], Any]], delay: int | None
) -> dict[str, tuple[int, int]]:
    """Per model: (predictions scored, correct) from River's progressive validation."""
    models = {
        "logreg": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "hoeffding_tree": lambda: tree.HoeffdingTreeClassifier(),
    }
    counts = {}
    for name, make in models.items():
        accuracy = metrics.Accuracy()
        dataset: list[Any] = rows  # River types x as dict[Hashable, Any]
        evaluate.progressive_val_score(dataset, make(), accuracy, delay=delay)
        counts[name] = (int(accuracy.cm.total_weight), int(accuracy.cm.total_true_positives))
    return counts


def _assert_learner_equals_river(loop: Loop, reference: dict[str, tuple[int, int]]) -> None:
    rows = loop.wait_for_learner({m: n for m, (n, _) in reference.items()})
    for model, (n, correct) in reference.items():
        got = rows[model]
        assert got["n"] == n, (model, got)
        assert round(got["metrics"]["accuracy"] * got["n"]) == correct, (model, got, correct)


@pytest.mark.parametrize("delay", [0, 10], ids=["label-next", "label-10-rows-later"])
def test_learner_accuracy_equals_river_on_weather(
    start_loop: Callable[[Path], Loop], tmp_path: Path, delay: int
) -> None:
    features = [f"feat_{i}" for i in range(1, 9)]
    loop = start_loop(_pipeline(tmp_path, "weather", features, ["logreg", "hoeffding_tree"]))
    rows = _weather()
    loop.publish(list(plan_messages(rows, ReplayPlan("w", label_delay=str(delay)))))
    _assert_learner_equals_river(loop, _river_counts(rows, delay or None))


def _agrawal_loop(start_loop: Callable[[Path], Loop], tmp_path: Path, source: str, n: int) -> Loop:
    features = [
        "salary",
        "commission",
        "age",
        "elevel",
        "car",
        "zipcode",
        "hvalue",
        "hyears",
        "loan",
    ]
    loop = start_loop(_pipeline(tmp_path, "agrawal", features, ["logreg", "hat"]))
    rows = list(rows_from_source(source, n=n))
    loop.publish(list(plan_messages(rows, ReplayPlan("a"))))
    loop.wait_for_learner({"logreg": n})
    return loop


def test_the_whole_loop_with_an_abrupt_drift(
    start_loop: Callable[[Path], Loop], tmp_path: Path
) -> None:
    n = 6000
    loop = _agrawal_loop(start_loop, tmp_path, "synth:agrawal-drift", n)
    prefix = loop.prefix

    # features: one vector per event, the entity's live row in Redis
    vectors = kcat_read(f"{prefix}features")
    assert len({json.loads(m["payload"])["event_id"] for m in vectors}) == n

    async def live_row() -> Any:
        redis = Redis.from_url(REDIS_URL)
        try:
            return await RedisOnlineStore(
                redis, namespace=f"driftline:{prefix}features", ttl_s=3600
            ).read("global")
        finally:
            await redis.aclose()

    row = asyncio.run(live_row())
    assert row is not None and row.event_id == f"a-{n - 1}"

    # versions published, served over HTTP with a version
    # (at the checkpoint after the models learned: it may come just after the counts)
    deadline = time.monotonic() + 60
    while True:
        published = [json.loads(m["payload"]) for m in kcat_read(f"{prefix}models")]
        if {p["name"] for p in published} == {"logreg", "hat"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {p["name"] for p in published} == {"logreg", "hat"}
    # the champion: logreg is listed first, hat is the better learner on this stream
    # (River: about 0.85 against 0.6), and training's policy promoted it with evidence
    policy = httpx.get(f"{loop.url('training')}/api/models").json()["champion"]
    assert policy["champion"] == "hat", policy
    changes = [json.loads(m["payload"]) for m in kcat_read(f"{prefix}champions")]
    promoted = [c for c in changes if c["action"] == "promote" and c["model"] == "hat"]
    assert promoted and promoted[0]["evidence"]["c"] > promoted[0]["evidence"]["b"]
    deadline = time.monotonic() + 30
    while httpx.get(f"{loop.url('serving')}/models").json()["champion"]["name"] != "hat":
        assert time.monotonic() < deadline, "serving never took the new champion"
        time.sleep(0.5)
    answer = httpx.post(
        f"{loop.url('serving')}/predict",
        headers=READER,
        json={"entity_id": "global", "features": {}},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "hat"
    assert body["model_version"] in {p["version"] for p in published if p["name"] == "hat"}
    # what is served follows the learner (its live slot), not only the versions
    trained = httpx.get(f"{loop.url('training')}/api/models").json()["models"]
    learned = next(m["n_learned"] for m in trained if m["name"] == "hat")
    deadline = time.monotonic() + 5
    while (champion := httpx.get(f"{loop.url('serving')}/models").json()["champion"])[
        "n_learned"
    ] != learned and time.monotonic() < deadline:
        time.sleep(0.2)
    assert champion["n_learned"] == learned, (champion, learned)

    # monitoring's counts match what was sent
    predictions = [json.loads(m["payload"]) for m in kcat_read(f"{prefix}predictions")]
    learner = [p for p in predictions if p["source"] == "learner" and p["y_pred"] is not None]
    stream = [p for p in predictions if p["source"] == "stream" and p["y_pred"] is not None]
    summary = {(r["model"], r["source"]): r for r in loop.summary()["models"]}
    for model in ("logreg", "hat"):
        assert summary[(model, "learner")]["n"] == sum(p["model"] == model for p in learner)
    assert len(stream) > 0
    served = {(p["model"], p["prediction_id"]) for p in stream}
    for model in {m for m, _ in served}:
        assert summary[(model, "stream")]["n"] == sum(m == model for m, _ in served)

    # a concept drift alert, after the drift point
    alerts = httpx.get(f"{loop.url('monitoring')}/api/alerts").json()["alerts"]
    drift = [a for a in alerts if a["kind"] == "concept_drift"]
    assert drift, "the abrupt drift at event 3000 must raise an alert"
    assert all(int(str(a["details"]["event_id"]).rsplit("-", 1)[1]) >= n // 2 for a in drift)
    assert any(
        json.loads(m["payload"])["kind"] == "concept_drift" for m in kcat_read(f"{prefix}alerts")
    )


def test_no_drift_alert_on_a_stationary_stream(
    start_loop: Callable[[Path], Loop], tmp_path: Path
) -> None:
    loop = _agrawal_loop(start_loop, tmp_path, "synth:agrawal", 6000)
    alerts = httpx.get(f"{loop.url('monitoring')}/api/alerts").json()["alerts"]
    assert [a for a in alerts if a["kind"] == "concept_drift"] == []


def test_restarting_features_and_training_mid_stream(
    start_loop: Callable[[Path], Loop], tmp_path: Path
) -> None:
    features = [f"feat_{i}" for i in range(1, 9)]
    loop = start_loop(_pipeline(tmp_path, "weather", features, ["logreg", "hoeffding_tree"]))
    rows = _weather(6000)
    messages = list(plan_messages(rows, ReplayPlan("r", label_delay="10")))
    half = len(messages) // 2
    loop.publish(messages[:half])
    loop.wait_for_learner({"logreg": 1000})
    for name in ("features", "training"):
        loop.services[name].stop()
    loop.publish(messages[half:])
    for name in ("features", "training"):
        loop.services[name].start(timeout=120)
    _assert_learner_equals_river(loop, _river_counts(rows, 10))
    vectors = [json.loads(m["payload"]) for m in kcat_read(f"{loop.prefix}features")]
    by_id: dict[str, dict[str, Any]] = {}
    for vector in vectors:
        assert by_id.setdefault(vector["event_id"], vector) == vector, (
            "a repeated vector must be identical"
        )
    assert len(by_id) == len(rows)
