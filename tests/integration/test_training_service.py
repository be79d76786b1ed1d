"""Training against the real broker and Redis: River fidelity through Kafka, restarts.

The weather stream (first 3,000 rows of weather.csv) goes to `features` and `labels`
over 3 partitions; the service's learner counts must equal River's own
`evaluate.progressive_val_score` on the same rows exactly, also across a SIGTERM or a
SIGKILL mid-stream.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiokafka import AIOKafkaProducer
from river import evaluate, linear_model, metrics, preprocessing, tree

from services.training.learner import OnlineLearner
from shared.topics import ensure_topics
from tests.support import (
    ADMIN_KAFKA,
    BOOTSTRAP,
    REDIS_URL,
    ServiceProcess,
    kcat_produce,
    kcat_read,
    metric_value,
    wait_for_count,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Factory = Callable[..., ServiceProcess]
Row = tuple[dict[str, float], int]

WEATHER = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "weather.csv"
N_ROWS = 3000
T0 = datetime(2020, 1, 1, tzinfo=UTC)
MODELS = {
    "logreg": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    "hoeffding_tree": lambda: tree.HoeffdingTreeClassifier(),
}
PIPELINE = """\
name: weather
task: binary
features:
  numeric: [feat_1, feat_2, feat_3, feat_4, feat_5, feat_6, feat_7, feat_8]
models:
  - name: logreg
  - name: hoeffding_tree
labels:
  ttl: 1d
"""


@pytest.fixture(scope="module")
def weather() -> list[Row]:
    if not WEATHER.exists():
        pytest.fail(f"weather.csv not found at {WEATHER} (the team kit beside the repo)")
    rows: list[Row] = []
    with WEATHER.open(newline="") as f:
        for record in csv.DictReader(f):
            y = int(record.pop("target"))
            rows.append(({k: float(v) for k, v in record.items()}, y))
            if len(rows) == N_ROWS:
                break
    assert len(rows) == N_ROWS
    return rows


def river_counts(rows: list[Row], delay: int | None) -> dict[str, tuple[int, int]]:
    """Per model: (scored, correct) from River's progressive validation."""
    counts = {}
    for name, make in MODELS.items():
        accuracy = metrics.Accuracy()
        dataset: list[Any] = rows  # River types x as dict[Hashable, Any]
        evaluate.progressive_val_score(dataset, make(), accuracy, delay=delay)
        counts[name] = (int(accuracy.cm.total_weight), int(accuracy.cm.total_true_positives))
    return counts


def at(i: int) -> str:
    return (T0 + timedelta(seconds=i)).isoformat()


def feature_records(rows: list[Row], start: int, stop: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, stop):
        vector = {
            "event_id": f"w{i}",
            "entity_id": f"k{i % 5}",
            "event_time": at(i),
            "features": rows[i][0],
            "feature_set_version": "weather-v1",
        }
        out.append((f"k{i % 5}".encode(), json.dumps(vector).encode()))
    return out


def label_records(
    rows: list[Row], start: int, stop: int, delay: int | None
) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, min(stop, len(rows))):
        label = {"event_id": f"w{i}", "label": rows[i][1], "label_time": at(i + (delay or 0))}
        out.append((f"k{i % 5}".encode(), json.dumps(label).encode()))
    return out


def write_pipeline(tmp_path: Path) -> str:
    path = tmp_path / "weather.yaml"
    path.write_text(PIPELINE)
    return str(path)


def create_topics(prefix: str) -> None:
    asyncio.run(ensure_topics(BOOTSTRAP, prefix, 3, ADMIN_KAFKA))


def models_of(service: ServiceProcess) -> dict[str, Any]:
    response = httpx.get(f"{service.url}/api/models", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def wait_learned(
    service: ServiceProcess, n: int, timeout: float = 120, models: set[str] | None = None
) -> dict[str, Any]:
    """/api/models once every model (of `models`) has learned `n` events and nothing
    is buffered."""
    deadline = time.monotonic() + timeout
    while True:
        body = models_of(service)
        counted = [m for m in body["models"] if models is None or m["name"] in models]
        done = all(m["n_learned"] >= n for m in counted) and body["buffered"] == 0
        if done or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def assert_counts_match_river(body: dict[str, Any], reference: dict[str, tuple[int, int]]) -> None:
    got = {m["name"]: (m["n_scored"], m["n_correct"]) for m in body["models"]}
    assert got == reference
    assert {m["name"]: m["n_learned"] for m in body["models"]} == dict.fromkeys(MODELS, N_ROWS)


def learner_predictions(prefix: str, expected: int) -> list[dict[str, Any]]:
    found = wait_for_count([f"{prefix}predictions"], expected, timeout=60)
    return [json.loads(m["payload"]) for m in found[f"{prefix}predictions"]]


def assert_predictions_match(
    predictions: list[dict[str, Any]], rows: list[Row], reference: dict[str, tuple[int, int]]
) -> None:
    """One prediction per event and model (after de-duplication), scoring as River."""
    unique = {p["prediction_id"]: p for p in predictions}
    assert len(unique) == N_ROWS * len(MODELS)
    assert {p["source"] for p in unique.values()} == {"learner"}
    for name, (scored, correct) in reference.items():
        mine = [p for p in unique.values() if p["model"] == name]
        made = [p for p in mine if p["y_pred"] is not None]
        right = [p for p in made if p["y_pred"] == rows[int(p["event_id"][1:])][1]]
        assert (len(made), len(right)) == (scored, correct), name
        assert all(p["prediction_id"] == f"{p['event_id']}:{name}:learner" for p in mine)


@pytest.mark.parametrize("delay", [None, 10], ids=["labels-at-event-time", "labels-10-rows-later"])
def test_learner_counts_equal_rivers_through_kafka(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row], delay: int | None
) -> None:
    create_topics(prefix)
    bad = [
        (b"k0", b"{not json"),
        (b"k1", b'{"event_id": "x"}'),
        (b"k2", b'{"event_id": "w7", "label": "cat"}'),  # no binary target: skipped
    ]
    kcat_produce(f"{prefix}features", bad[:1] + feature_records(weather, 0, N_ROWS))
    kcat_produce(f"{prefix}labels", bad[1:] + label_records(weather, 0, N_ROWS, delay))
    used = {
        topic: {m["partition"] for m in kcat_read(f"{prefix}{topic}")}
        for topic in ("features", "labels")
    }
    assert all(len(partitions) > 1 for partitions in used.values()), used

    service = service_factory(
        "training",
        PIPELINE_CONFIG=write_pipeline(tmp_path),
        IDLE_MS="1000",
        CHECKPOINT_EVERY="500",  # several checkpoints, versions only every VERSION_SECONDS
    ).start()
    reference = river_counts(weather, delay)
    body = wait_learned(service, N_ROWS)
    assert_counts_match_river(body, reference)
    assert metric_value(service, "driftline_training_checkpoints_total") > 1
    held = metric_value(service, "driftline_training_checkpoint_bytes", part="held")
    assert held >= metric_value(service, "driftline_training_checkpoint_bytes", part="records") > 0
    assert metric_value(service, "driftline_training_remembered", kind="features") > 0
    assert versions(body) == {name: 1 for name in MODELS}, "a model's first version, no more"
    deadline = time.monotonic() + 5  # the live slot follows the learner within a second
    while live_counts(prefix) != {name: N_ROWS for name in MODELS}:
        assert time.monotonic() < deadline, live_counts(prefix)
        time.sleep(0.1)
    assert (body["late"], body["duplicates"], body["expired"]) == (
        0,
        0,
        {"features": 0, "labels": 0},
    )
    assert body["pending"] == {"features": 0, "labels": 0}
    assert_predictions_match(learner_predictions(prefix, N_ROWS * 2), weather, reference)
    topic = f"{prefix}features"
    assert (
        metric_value(
            service, "driftline_training_bad_messages_total", topic=topic, code="invalid_json"
        )
        == 1
    )
    assert (
        metric_value(
            service,
            "driftline_training_bad_messages_total",
            topic=f"{prefix}labels",
            code="missing_field",
        )
        == 1
    )
    assert (
        metric_value(
            service,
            "driftline_training_bad_messages_total",
            topic=f"{prefix}labels",
            code="invalid_value",
        )
        == 1
    )
    for name, (_, correct) in reference.items():
        assert metric_value(service, "driftline_training_correct_total", model=name) == correct
        assert metric_value(service, "driftline_training_learned_total", model=name) == N_ROWS


def produce_chunk(prefix: str, rows: list[Row], start: int, stop: int, delay: int) -> None:
    """Rows [start, stop) as a live stream brings them, one producer, in time order: at
    each row's time, the label due then (row - delay), then the row's features."""
    features = feature_records(rows, start, stop)
    labels = label_records(rows, 0, N_ROWS, delay)
    order: list[tuple[str, tuple[bytes, bytes]]] = []
    for i in range(start, stop):
        if i - delay >= 0:
            order.append(("labels", labels[i - delay]))
        order.append(("features", features[i - start]))
    if stop >= N_ROWS:  # the end of the stream: the labels still owed
        order += [("labels", labels[j]) for j in range(N_ROWS - delay, N_ROWS)]

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", **ADMIN_KAFKA)
        await producer.start()
        try:
            for topic, (key, value) in order:
                await producer.send(f"{prefix}{topic}", value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def checkpoint_items(prefix: str) -> tuple[dict[str, Any], int]:
    """The checkpoint's summary, and how many entries its items hash holds."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        key = f"driftline:{prefix}training:checkpoint"
        summary = json.loads(client.hget(key, "summary") or b"{}")
        return summary, int(client.hlen(f"{key}:items"))
    finally:
        client.close()


def live_counts(prefix: str) -> dict[str, int]:
    """Events learned per model, as its live slot in the registry says."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        found = {
            name: client.hget(f"driftline:{prefix}registry:{name}:live", "n_learned")
            for name in MODELS
        }
    finally:
        client.close()
    return {name: int(n) for name, n in found.items() if isinstance(n, bytes)}


def versions(body: dict[str, Any]) -> dict[str, int]:
    return {m["name"]: int(m["version"]) for m in body["models"]}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_mid_stream_neither_skips_nor_relearns(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row], sig: int
) -> None:
    delay = 10
    create_topics(prefix)
    service = service_factory(
        "training",
        PIPELINE_CONFIG=write_pipeline(tmp_path),
        IDLE_MS="1000",
        CHECKPOINT_EVERY="700",
        CHECKPOINT_SECONDS="3600",
        VERSION_SECONDS="0",  # a version at every checkpoint
    )
    produce_chunk(prefix, weather, 0, 1000, delay)
    service.start()
    before = wait_learned(service, 1000 - delay)
    assert all(m["n_learned"] == 1000 - delay for m in before["models"])
    produce_chunk(prefix, weather, 1000, 2000, delay)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # stop it while it works on the second chunk,
        if models_of(service)["records"] > 2000 and checkpoint_items(prefix)[1] >= 2:
            break  # once a checkpoint saved changes after a whole write
        time.sleep(0.05)
    live = models_of(service)
    service.stop(sig)
    first_log = service.log_path.read_text()
    summary, entries = checkpoint_items(prefix)
    assert summary["items"] == entries >= 2, "records saved as changes after a whole write"

    produce_chunk(prefix, weather, 2000, N_ROWS, delay)
    service.start()
    restored = models_of(service)["restored"]
    assert restored["saved_at"] is not None
    assert all(int(restored["versions"][name]) >= versions(before)[name] for name in MODELS)
    if sig == signal.SIGTERM:  # a last checkpoint at shutdown: resumes where it stopped
        last = re.findall(
            r"training stopped; its state is checkpointed at records=(\d+)", first_log
        )
        assert [int(n) for n in last] == [restored["records"]]
        assert restored["records"] >= live["records"] > 2000
    body = wait_learned(service, N_ROWS)
    assert_counts_match_river(body, river_counts(weather, delay))
    assert body["records"] == 2 * N_ROWS, "every record consumed exactly once by the learner"
    consumed_now = sum(
        metric_value(service, "driftline_training_consumed_total", kind=kind)
        for kind in ("features", "labels")
    )
    assert consumed_now == 2 * N_ROWS - restored["records"], "resumed at the checkpoint's offsets"
    assert body["late"] == 0
    assert all(versions(body)[name] > versions(before)[name] for name in MODELS)

    for model in body["models"]:
        numbers = [int(v["version"]) for v in model["versions"]]
        assert numbers == list(range(1, len(numbers) + 1)), numbers
        assert numbers[-1] == int(model["version"])
        learned = [v["n_learned"] for v in model["versions"]]
        assert learned == sorted(learned) and len(set(learned)) == len(learned)

    predictions = learner_predictions(prefix, N_ROWS * 2)
    assert_predictions_match(predictions, weather, river_counts(weather, delay))
    announced = [json.loads(m["payload"]) for m in kcat_read(f"{prefix}models")]
    by_model = Counter(a["name"] for a in announced)
    assert set(by_model) == set(MODELS)
    for name in MODELS:
        numbers = sorted({int(a["version"]) for a in announced if a["name"] == name})
        assert numbers == list(range(1, versions(body)[name] + 1))


def test_items_that_wait_longer_than_the_label_ttl_expire_visibly(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row]
) -> None:
    """Labels 10 s after their event with a 5 s TTL: every prediction expires unlearned."""
    n, delay = 50, 10
    rows = weather[:n]
    create_topics(prefix)
    kcat_produce(f"{prefix}features", feature_records(rows, 0, n))
    kcat_produce(f"{prefix}labels", label_records(rows, 0, n, delay))
    reference = OnlineLearner({"lr": MODELS["logreg"]()}, ttl=timedelta(seconds=5))
    for i, (x, y) in enumerate(rows):
        reference.add_features(f"w{i}", T0 + timedelta(seconds=i), x)
        reference.add_label(f"w{i}", y, T0 + timedelta(seconds=i + delay))
    reference.advance(None)
    assert reference.expired_features == n and reference.expired_labels > 0

    path = tmp_path / "short-ttl.yaml"
    path.write_text(PIPELINE.replace("ttl: 1d", "ttl: 5s"))
    service = service_factory("training", PIPELINE_CONFIG=str(path), IDLE_MS="500").start()
    deadline = time.monotonic() + 60
    while models_of(service)["records"] < 2 * n and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(1.5)  # caught up and idle: the last flush
    body = models_of(service)
    expired = {"features": reference.expired_features, "labels": reference.expired_labels}
    assert body["expired"] == expired
    assert body["pending"] == {"features": 0, "labels": reference.awaiting_features}
    assert all(m["n_learned"] == 0 for m in body["models"])
    for kind, count in expired.items():
        assert metric_value(service, "driftline_training_expired_total", kind=kind) == count
    pending = metric_value(service, "driftline_training_pending", kind="labels")
    assert pending == reference.awaiting_features


def test_labels_that_come_before_slow_features_wait_for_them(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row]
) -> None:
    """The features service lags: every label is consumed seconds before its features."""
    n = 1000
    rows = weather[:n]
    create_topics(prefix)
    service = service_factory(
        "training", PIPELINE_CONFIG=write_pipeline(tmp_path), IDLE_MS="500"
    ).start()
    kcat_produce(f"{prefix}labels", label_records(rows, 0, n, None))
    deadline = time.monotonic() + 30
    while models_of(service)["records"] < n and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # every partition caught up and quiet for longer than IDLE_MS
    waiting = models_of(service)
    assert (waiting["buffered"], waiting["pending"]["labels"]) == (n, 0), "none processed yet"
    kcat_produce(f"{prefix}features", feature_records(rows, 0, n))
    body = wait_learned(service, n)
    assert body["late"] == 0
    for model in body["models"]:
        assert model["n_learned"] == n
    got = {m["name"]: (m["n_scored"], m["n_correct"]) for m in body["models"]}
    assert got == river_counts(rows, None)


def test_the_better_model_is_promoted_on_champions_with_its_evidence(
    service_factory: Factory, prefix: str, tmp_path: Path
) -> None:
    """Inside a circle or not: the logistic regression listed first cannot draw it
    (67% right), the tree can (83%). Training promotes the tree once, with its
    evidence, and says so on `champions`."""
    service = train_on_circle(service_factory, prefix, tmp_path, circle(N_ROWS), "")
    body = wait_learned(service, N_ROWS)
    champion = body["champion"]
    assert champion["champion"] == "hoeffding_tree" and champion["policy"] == "auto"
    changes = [json.loads(m["payload"]) for m in kcat_read(f"{prefix}champions")]
    promoted = {c["change_id"]: c for c in changes}
    assert len(promoted) == 1, changes
    (change,) = promoted.values()
    assert (change["model"], change["previous"], change["action"]) == (
        "hoeffding_tree",
        "logreg",
        "promote",
    )
    evidence = change["evidence"]
    assert evidence["test"] in {"mcnemar", "sequential"} and evidence["window"] < N_ROWS
    assert evidence["c"] > evidence["b"] and evidence["p_value"] < 1e-4
    assert evidence["challenger"]["accuracy"] > evidence["champion"]["accuracy"] + 0.05
    assert change["by"] == "training (policy auto)" and change["event_time"] is not None


def circle(n: int, flip_at: int | None = None) -> list[Row]:
    """Inside a circle or not (the label inverted from row `flip_at` on)."""
    rng = random.Random(4)
    rows: list[Row] = []
    for i in range(n):
        a, b = rng.random(), rng.random()
        inside = (a - 0.5) ** 2 + (b - 0.5) ** 2 < 0.1
        rows.append(
            ({"feat_1": a, "feat_2": b}, int(inside != (flip_at is not None and i >= flip_at)))
        )
    return rows


def train_on_circle(
    service_factory: Factory, prefix: str, tmp_path: Path, rows: list[Row], champion: str
) -> ServiceProcess:
    """Training started on `rows` (labels 5 rows late), its champion window 300 and
    the `champion` settings' other lines."""
    create_topics(prefix)
    pipeline = tmp_path / "circle.yaml"
    pipeline.write_text(PIPELINE + "champion:\n  window: 300\n" + champion)
    service = service_factory("training", PIPELINE_CONFIG=str(pipeline), IDLE_MS="1000")
    produce_chunk(prefix, rows, 0, N_ROWS, 5)
    return service.start()


def test_on_the_champions_drift_reset_starts_a_fresh_copy_that_learns_after_it(
    service_factory: Factory, prefix: str, tmp_path: Path
) -> None:
    """`on_drift: reset`: the circle's label flips half way; the tree, champion by then,
    errs; training raises the drift with its action and a fresh tree starts learning
    from there as a challenger, beside the models it does not replace."""
    flip = N_ROWS // 2
    rows = circle(N_ROWS, flip_at=flip)
    service = train_on_circle(service_factory, prefix, tmp_path, rows, "  on_drift: reset\n")
    body = wait_learned(service, N_ROWS, models={"logreg", "hoeffding_tree"})
    learned = {m["name"]: m["n_learned"] for m in body["models"]}
    assert learned["logreg"] == learned["hoeffding_tree"] == N_ROWS
    fresh = learned["hoeffding_tree.fresh"]
    assert 0 < fresh < N_ROWS - flip, learned  # from the drift on, found after the flip
    alerts = [json.loads(m["payload"]) for m in kcat_read(f"{prefix}alerts")]
    drifts = [a for a in alerts if a["kind"] == "concept_drift"]
    assert drifts and drifts[0]["subject"] == "hoeffding_tree", alerts
    assert drifts[0]["details"]["action"] == "reset"
    assert drifts[0]["details"]["events"] >= flip - 5  # ADWIN needs errors after the flip
    assert body["champion"]["champion"] != "logreg"  # the tree, or its fresh copy


def test_a_version_is_rebuilt_from_the_topics_identical(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row]
) -> None:
    """`driftline models reproduce` re-learns a version from the topics up to its
    lineage's offsets: the same bytes as the stored artifact."""
    create_topics(prefix)
    pipeline = write_pipeline(tmp_path)
    service = service_factory(
        "training",
        PIPELINE_CONFIG=pipeline,
        IDLE_MS="1000",
        CHECKPOINT_EVERY="1000",
        CHECKPOINT_SECONDS="3600",
        VERSION_SECONDS="0",
    )
    produce_chunk(prefix, weather, 0, 1000, 10)  # a version of each model, mid-stream
    service.start()
    wait_learned(service, 1000 - 10)
    deadline = time.monotonic() + 60
    while not all((body := models_of(service))["models"][i]["versions"] for i in range(2)):
        assert time.monotonic() < deadline, body
        time.sleep(0.5)
    produce_chunk(prefix, weather, 1000, N_ROWS, 10)
    wait_learned(service, N_ROWS)
    env = {**os.environ, "TOPIC_PREFIX": prefix, "PIPELINE_CONFIG": pipeline}
    verdicts = {
        "logreg": "identical (the same bytes: the content hash matches)",
        # a tree's Gaussian estimators hold unseeded random generators: bytes cannot match
        "hoeffding_tree": "identical predictions on the last 1000 vectors (bytes differ)",
    }
    for model in body["models"]:
        middle = model["versions"][0]  # learned part of the stream: the rest came later
        assert 0 < middle["n_learned"] < N_ROWS, model["versions"]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.cli",
                "models",
                "reproduce",
                model["name"],
                middle["version"],
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert verdicts[model["name"]] in done.stdout, done.stdout
        assert f"{middle['n_learned']} events learned" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "shared.cli", "models", "reproduce", "hoeffding_tree", "999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "driftline models reproduce: hoeffding_tree version 999 is not in the registry"
    )
