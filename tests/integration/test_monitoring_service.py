"""Monitoring against the real broker: exact counts, drift alerts, restarts, dashboard.

Predictions, labels and feature vectors are published with kcat straight to
`{prefix}predictions`, `{prefix}labels` and `{prefix}features`; the expected numbers
are computed here from the same rows.
"""

from __future__ import annotations

import json
import random
import re
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    ServiceProcess,
    WebhookReceiver,
    kcat_produce,
    kcat_read,
    metric_value,
    wait_for_count,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., ServiceProcess]
T0 = datetime(2024, 5, 1, tzinfo=UTC)
PIPELINE = """\
name: monitored
task: binary
features:
  numeric: [x]
models:
  - name: logreg
  - name: hat
labels:
  ttl: 1h
"""


def pipeline(tmp_path: Path) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    return str(path)


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def prediction(
    i: int, model: str, source: str, version: str, y_pred: Any, seconds: float | None = None
) -> dict[str, Any]:
    when = iso(i if seconds is None else seconds)
    return {
        "prediction_id": f"{model}-{source}-{i}",
        "event_id": f"e{i}",
        "entity_id": f"u{i % 7}",
        "model": model,
        "model_version": version,
        "y_pred": y_pred,
        "probabilities": None
        if y_pred is None
        else {"True": 0.7 if y_pred else 0.3, "False": 0.3 if y_pred else 0.7},
        "source": source,
        "event_time": when,
        "time": when,
    }


def label(i: int, value: Any, seconds: float | None = None) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "label": value,
        "label_time": iso((i if seconds is None else seconds) + 5),
        "entity_id": f"u{i % 7}",
    }


def produce(topic: str, items: list[dict[str, Any]]) -> None:
    kcat_produce(topic, [(str(m["entity_id"]).encode(), json.dumps(m).encode()) for m in items])


def summary_when(
    service: ServiceProcess, done: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{service.url}/api/summary", timeout=5).json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def rows(body: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["model"], r["source"]): r for r in body["models"]}


class Expected:
    """What the monitor must report, computed from the rows sent."""

    def __init__(self) -> None:
        self.n: dict[tuple[str, str], int] = defaultdict(int)
        self.correct: dict[tuple[str, str], int] = defaultdict(int)
        self.versions: dict[tuple[str, str, str], int] = defaultdict(int)
        self.unscored = 0

    def add(self, p: dict[str, Any], y: bool) -> None:
        if p["y_pred"] is None:
            self.unscored += 1
            return
        key = (p["model"], p["source"])
        self.n[key] += 1
        self.correct[key] += p["y_pred"] == y
        self.versions[(*key, p["model_version"])] += 1

    def accuracy(self, key: tuple[str, str]) -> float:
        return self.correct[key] / self.n[key]


def workload(
    n_events: int, seed: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Expected]:
    """Several models, sources and versions; some null predictions; mixed label spellings."""
    rng = random.Random(seed)
    predictions, labels, expected = [], [], Expected()
    for i in range(n_events):
        y = rng.random() < 0.5
        labels.append(label(i, [y, int(y), "1" if y else "0"][i % 3]))
        for model, source, skill in (
            ("logreg", "learner", 0.8),
            ("hat", "learner", 0.7),
            ("logreg", "stream", 0.75),
        ):
            y_pred = None if (model == "hat" and i < 4) else (y if rng.random() < skill else not y)
            version = "1" if i < n_events // 2 else "2"
            p = prediction(i, model, source, version, y_pred)
            predictions.append(p)
            expected.add(p, y)
        if i % 10 == 0:  # an http prediction for some events
            p = prediction(i, "logreg", "http", "2", int(y) if i % 20 else int(not y))
            predictions.append(p)
            expected.add(p, y)
    return predictions, labels, expected


def check(body: dict[str, Any], expected: Expected) -> None:
    got = rows(body)
    assert set(got) == set(expected.n)
    for key, row in got.items():
        assert row["n"] == expected.n[key], key
        assert row["metrics"]["accuracy"] == expected.accuracy(key), key
        versions = {v["version"]: v["n"] for v in row["versions"]}
        assert versions == {v: n for (m, s, v), n in expected.versions.items() if (m, s) == key}
    assert body["unscored"] == expected.unscored


def test_summary_counts_accuracies_duplicates_expiry_and_dashboard(
    service_factory: Factory, prefix: str, tmp_path: Path
) -> None:
    predictions, labels, expected = workload(300)
    unlabelled = [
        prediction(1000 + i, "logreg", "stream", "2", True, seconds=400) for i in range(6)
    ]
    # later traffic on every key moves event time past the ttl: the unlabelled expire
    later = [
        prediction(2000 + i, "logreg", "stream", "2", True, seconds=3 * 3600) for i in range(14)
    ]
    later_labels = [label(2000 + i, True, seconds=3 * 3600) for i in range(14)]
    for p in later:
        expected.add(p, True)
    # labels first for some, predictions first for others; replays of both
    produce(f"{prefix}labels", labels[:150])
    produce(f"{prefix}predictions", predictions + unlabelled + predictions[::5])
    produce(f"{prefix}labels", labels[150:] + labels[::4])
    kcat_produce(f"{prefix}predictions", [(b"u1", b"not json"), (b"u2", b'{"event_id": "e1"}')])
    service = service_factory(
        "monitoring", PIPELINE_CONFIG=pipeline(tmp_path), HISTORY_EVERY="20"
    ).start()
    produce(f"{prefix}predictions", later)
    produce(f"{prefix}labels", later_labels)

    body = summary_when(
        service,
        lambda b: (
            b["expired"] == 6 and sum(r["n"] for r in b["models"]) == sum(expected.n.values())
        ),
    )
    check(body, expected)
    assert body["expired"] == 6
    assert rows(body)[("logreg", "stream")]["expired"] == 6
    assert body["duplicates"] == {"predictions": len(predictions[::5]), "labels": len(labels[::4])}
    assert body["alerts"] == 0
    stream = rows(body)[("logreg", "stream")]
    assert set(stream["metrics"]) >= {"accuracy", "precision", "recall", "f1", "log_loss"}
    assert stream["window"]["accuracy"] is not None

    page = httpx.get(service.url)
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/dashboard.js">' in page.text
    assert httpx.get(f"{service.url}/static/dashboard.js").status_code == 200
    timeline = httpx.get(f"{service.url}/api/timeline").json()
    charted = {s["subject"]: s for s in timeline["series"]}
    assert sorted(charted) == sorted(f"{m}:{s}" for m, s in expected.n)
    learner = charted["logreg:learner"]
    assert len(learner["points"]) == 300 // 20  # HISTORY_EVERY: a point per 20 scored
    assert [m["version"] for m in learner["marks"]] == ["1", "2"] == learner["versions"]
    assert learner["marks"][1]["n"] == 151  # version 2 from row 150 on
    gap = {g["model"]: g for g in timeline["gap"]}["logreg"]
    assert [s["source"] for s in gap["served"]] == ["stream", "http"]
    stream = gap["served"][0]
    assert stream["gap_cumulative"] == pytest.approx(
        stream["cumulative"] - gap["learner"]["cumulative"], abs=1e-6
    )

    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'driftline_monitoring_scored_total{model="logreg",source="learner"} 300.0' in metrics
    assert "driftline_monitoring_expired_total" in metrics
    assert f'driftline_monitoring_invalid_total{{topic="{prefix}predictions"}} 2.0' in metrics
    assert "driftline_monitoring_consumer_lag" in metrics
    assert "driftline_monitoring_processing_seconds_bucket" in metrics


def drifting(n: int, at: int, seed: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A model right 90% of the time, then 50% from row `at` on."""
    rng = random.Random(seed)
    predictions, labels = [], []
    for i in range(n):
        y = rng.random() < 0.5
        skill = 0.9 if i < at else 0.5
        predictions.append(
            prediction(i, "logreg", "stream", "1", y if rng.random() < skill else not y)
        )
        labels.append(label(i, y))
    return predictions, labels


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_drift_alert_is_published_once_and_survives_restarts(
    service_factory: Factory, prefix: str, tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    predictions, labels = drifting(2400, at=1200)
    first, second = predictions[:1000], predictions[1000:]
    produce(f"{prefix}predictions", first)
    produce(f"{prefix}labels", labels[:1000])
    receiver = webhook_receiver  # each alert is POSTed there too, once
    service = service_factory(
        "monitoring", PIPELINE_CONFIG=pipeline(tmp_path), ALERT_WEBHOOK_URLS=receiver.url
    ).start()
    body = summary_when(service, lambda b: sum(r["n"] for r in b["models"]) == 1000)
    assert (rows(body)[("logreg", "stream")]["n"], body["alerts"]) == (1000, 0)

    service.stop(signal.SIGKILL)  # mid-stream: the rest arrives while it is down
    produce(f"{prefix}predictions", second + first[:200])
    produce(f"{prefix}labels", labels[1000:])
    service.start()
    body = summary_when(
        service, lambda b: sum(r["n"] for r in b["models"]) == 2400 and b["alerts"] > 0
    )
    assert rows(body)[("logreg", "stream")]["n"] == 2400
    assert body["duplicates"]["predictions"] == 200

    alerts = wait_for_count([f"{prefix}alerts"], 1, timeout=30)[f"{prefix}alerts"]
    assert len(alerts) >= 1
    alert = json.loads(alerts[0]["payload"])
    assert alerts[0]["key"] == "logreg:stream"
    assert (alert["kind"], alert["detector"], alert["subject"]) == (
        "concept_drift",
        "ADWIN",
        "logreg:stream",
    )
    row = int(alert["details"]["event_id"].removeprefix("e"))
    assert 1200 <= row < 1700
    assert alert["details"]["index"] == row + 1, "scored in event-time order"
    assert alert["details"]["error_after"] > alert["details"]["error_before"]
    listed = httpx.get(f"{service.url}/api/alerts").json()
    assert listed["alerts"][-1]["alert_id"] == alert["alert_id"]
    assert receiver.wait_for(len(alerts)) == [json.loads(m["payload"]) for m in alerts]
    delivered = metric_value(
        service, "driftline_monitoring_webhook_deliveries_total", outcome="delivered"
    )
    assert delivered == len(alerts)

    service.stop()
    service.start()  # the replay re-derives the same alerts and publishes none again
    body = summary_when(
        service, lambda b: not b["replaying"] and sum(r["n"] for r in b["models"]) == 2400
    )
    assert body["alerts"] == len(alerts)
    listed = httpx.get(f"{service.url}/api/alerts").json()
    on_topic = [json.loads(m["payload"])["alert_id"] for m in alerts]
    assert [a["alert_id"] for a in listed["alerts"]] == on_topic[::-1], "newest first"
    time.sleep(2)
    assert len(wait_for_count([f"{prefix}alerts"], 0)[f"{prefix}alerts"]) == len(alerts)
    assert len(receiver.bodies) == len(alerts), "nothing POSTed twice"
    marked = httpx.get(f"{service.url}/api/timeline").json()["alerts"]
    assert [(a["kind"], a["subject"]) for a in marked] == [
        ("concept_drift", "logreg:stream")
    ] * len(alerts)


def _metric(service: ServiceProcess, name: str) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=5).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_restart_reads_on_from_the_snapshot_not_from_the_beginning(
    service_factory: Factory, prefix: str, tmp_path: Path
) -> None:
    predictions, labels, expected = workload(600, seed=5)
    cut = len(predictions) // 2
    produce(f"{prefix}predictions", predictions[:cut])
    produce(f"{prefix}labels", labels[:300])
    env = {"PIPELINE_CONFIG": pipeline(tmp_path), "SNAPSHOT_SECONDS": "0.5"}
    service = service_factory("monitoring", **env).start()
    summary_when(service, lambda b: b["consumed"] >= cut + 300 and not b["replaying"])
    time.sleep(2)  # a snapshot of all of it is written
    assert _metric(service, "driftline_monitoring_snapshot_bytes") > 0

    service.stop(signal.SIGKILL)
    later = predictions[cut:] + predictions[:40]  # the rest, and 40 repeats
    produce(f"{prefix}predictions", later)
    produce(f"{prefix}labels", labels[300:])
    service.start()
    body = summary_when(
        service, lambda b: not b["replaying"] and sum(r["n"] for r in b["models"]) >= 1856
    )
    check(body, expected)
    assert body["duplicates"]["predictions"] == 40
    log = service.log_path.read_text()
    assert "monitoring reads on from its snapshot" in log
    replayed = [int(n) for n in re.findall(r"monitoring replays (\d+) messages", log)]
    assert replayed[0] == len(predictions[:cut]) + 300  # the first start: everything
    assert replayed[-1] <= len(later) + 300, "the restart read only what came after"


DRIFT_PIPELINE = """\
name: watched
task: binary
features:
  numeric: [x, y]
  categorical: [kind]
models:
  - name: logreg
labels:
  ttl: 1h
data_drift:
  reference_size: 400
  window_size: 400
  every: 100
"""


def feature_vectors(n: int, shift_at: int, seed: int = 11) -> list[dict[str, Any]]:
    """FeatureVector messages as the features service writes them; `x` moves by two
    standard deviations from row `shift_at` on, `y` and `kind` stay as they were."""
    rng = random.Random(seed)
    return [
        {
            "event_id": f"v{i}",
            "entity_id": f"u{i % 7}",
            "event_time": iso(i),
            "features": {
                "x": rng.gauss(2.0 if i >= shift_at else 0.0, 1),
                "y": rng.gauss(0, 1) if i % 50 else None,
                f"kind={rng.choice('abc')}": 1.0,
            },
            "feature_set_version": "test",
        }
        for i in range(n)
    ]


def drift_when(
    service: ServiceProcess, done: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, dict[str, Any]]:
    """/api/drift's rows by feature, once `done(rows)`."""
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{service.url}/api/drift", timeout=5).json()
        rows = {row["feature"]: row for row in body["features"]}
        if done(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_a_shifted_feature_raises_one_data_drift_alert_and_no_restart_repeats_it(
    service_factory: Factory, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "drift.yaml"
    path.write_text(DRIFT_PIPELINE)
    vectors = feature_vectors(2000, shift_at=1200)
    produce(f"{prefix}features", vectors[:800])  # the reference and one window, stationary
    env = {"PIPELINE_CONFIG": str(path), "SNAPSHOT_SECONDS": "0.5", "IDLE_PARTITION_S": "1"}
    service = service_factory("monitoring", **env).start()
    rows = drift_when(service, lambda r: r["x"]["current_n"] == 400)
    assert [(f, r["statistic"], r["drift"], r["reference_n"]) for f, r in rows.items()] == [
        ("x", "psi", False, 400),
        ("y", "psi", False, 400),
        ("kind", "js", False, 400),
    ]
    time.sleep(2)  # a snapshot of it is written

    service.stop(signal.SIGKILL)  # the shift arrives while it is down
    produce(f"{prefix}features", vectors[800:])
    service.start()
    rows = drift_when(service, lambda r: r["x"]["drift"])
    assert {f: r["drift"] for f, r in rows.items()} == {"x": True, "y": False, "kind": False}
    assert rows["x"]["value"] > rows["x"]["threshold"] == 0.2
    assert set(rows["x"]) == {
        "feature",
        "statistic",
        "value",
        "threshold",
        "drift",
        "reference_n",
        "current_n",
    }
    assert "monitoring reads on from its snapshot" in service.log_path.read_text()
    alerts = wait_for_count([f"{prefix}alerts"], 1, timeout=30)[f"{prefix}alerts"]
    assert len(alerts) == 1 and alerts[0]["key"] == "x"
    alert = json.loads(alerts[0]["payload"])
    assert (alert["alert_id"], alert["kind"], alert["subject"], alert["detector"]) == (
        "monitoring.data_drift.x.1",
        "data_drift",
        "x",
        "PSI",
    )
    assert alert["details"]["statistic"] == "psi"
    assert alert["details"]["value"] > alert["details"]["threshold"] == 0.2
    assert (alert["details"]["reference_n"], alert["details"]["current_n"]) == (400, 400)
    assert 1200 <= int(alert["details"]["event_id"].removeprefix("v")) < 1600
    summary_when(service, lambda b: not b["replaying"] and b["waiting"]["features"] == 0)
    final = drift_when(service, lambda r: True)["x"]["value"]  # every vector is in
    gauge = metric_value(service, "driftline_monitoring_data_drift", feature="x", statistic="psi")
    assert gauge == pytest.approx(final)

    service.stop()  # and a replay from the beginning, no snapshot: the same alert, not again
    service.env["SNAPSHOT_SECONDS"] = "0"
    service.start()
    summary_when(service, lambda b: not b["replaying"])
    rows = drift_when(service, lambda r: r["x"]["drift"] and r["x"]["current_n"] == 400)
    assert {f: r["drift"] for f, r in rows.items()} == {"x": True, "y": False, "kind": False}
    listed = httpx.get(f"{service.url}/api/alerts").json()["alerts"]
    assert [a["alert_id"] for a in listed] == ["monitoring.data_drift.x.1"]
    replayed = re.findall(r"monitoring replays (\d+) messages", service.log_path.read_text())
    assert int(replayed[-1]) == len(vectors), "from the beginning"
    time.sleep(2)
    assert len(kcat_read(f"{prefix}alerts")) == 1, "nothing published twice"
