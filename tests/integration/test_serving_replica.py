"""Serving's replica of the learner against the real broker and Redis, beside real training.

Training learns the weather stream (3 partitions, labels 10 rows late, as a live
stream brings them) and checkpoints every second; serving starts mid-stream, so its
replica restores training's checkpoint and reads on from its offsets; its stream
scorer is killed with SIGKILL once on the way. Every `stream` prediction must then
equal the learner's prediction of the same event by the champion, under one id.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.integration.test_training_service import (
    N_ROWS,
    Row,
    create_topics,
    produce_chunk,
    wait_learned,
    weather,
    write_pipeline,
)
from tests.support import API, REDIS_URL, ServiceProcess, kcat_read, metric_value

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["weather"]  # the rows fixture, shared with the training tests

Factory = Callable[..., ServiceProcess]
DELAY = 10


def predictions(prefix: str) -> list[dict[str, Any]]:
    return [json.loads(m["payload"]) for m in kcat_read(f"{prefix}predictions")]


def wait_until(check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return result


def test_stream_predictions_equal_the_learners_across_a_restore_and_a_kill(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row]
) -> None:
    create_topics(prefix)
    pipeline = write_pipeline(tmp_path)  # logreg (the champion) and hoeffding_tree
    training = service_factory(
        "training", PIPELINE_CONFIG=pipeline, IDLE_MS="500", CHECKPOINT_SECONDS="1"
    )
    produce_chunk(prefix, weather, 0, 1000, DELAY)
    training.start()
    wait_learned(training, 1000 - DELAY)
    checkpoint = f"driftline:{prefix}training:checkpoint"
    client = redis.Redis.from_url(REDIS_URL)
    assert wait_until(lambda: client.hget(checkpoint, "summary"), timeout=30)
    restored_at = json.loads(client.hget(checkpoint, "summary") or b"{}")["records"]
    client.close()

    serving = service_factory("serving", PIPELINE_CONFIG=pipeline, IDLE_MS="500").start()
    produce_chunk(prefix, weather, 1000, 2000, DELAY)
    scored = {"source": "stream", "model": "logreg"}
    assert wait_until(
        lambda: metric_value(serving, "driftline_serving_predictions_total", 0, **scored) > 500
    )
    pid = httpx.get(f"{serving.url}/healthz").json()["stream_pid"]
    os.kill(pid, signal.SIGKILL)
    produce_chunk(prefix, weather, 2000, N_ROWS, DELAY)
    wait_learned(training, N_ROWS)

    def stream_events() -> set[str]:
        return {p["event_id"] for p in predictions(prefix) if p["source"] == "stream"}

    wanted = {f"w{i}" for i in range(1000, N_ROWS)}  # at least all after the restore
    assert wait_until(lambda: wanted <= stream_events(), timeout=120), "a vector never scored"
    found = predictions(prefix)
    learner = {
        p["event_id"]: p for p in found if p["source"] == "learner" and p["model"] == "logreg"
    }
    assert len(learner) == N_ROWS
    copies: dict[str, set[str]] = defaultdict(set)
    for p in found:
        if p["source"] != "stream":
            continue
        assert p["model"] == "logreg" and p["prediction_id"] == f"{p['event_id']}:logreg:stream"
        same = {k: p[k] for k in ("y_pred", "probabilities", "entity_id", "event_time")}
        mine = learner[p["event_id"]]
        assert same == {k: mine[k] for k in same}, p["event_id"]
        copies[p["event_id"]].add(json.dumps(same, sort_keys=True))
    assert all(len(c) == 1 for c in copies.values()), "a replay predicted differently"
    assert restored_at < 2 * 1000, "the replica started from a mid-stream checkpoint"
    assert len(copies) < N_ROWS, "it did not relearn from the beginning"
    health = httpx.get(f"{serving.url}/healthz").json()
    assert health["stream_restarts"] == 1 and health["status"] == "ok"


def test_a_new_champion_is_learned_by_the_replica_and_scores_as_training(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row]
) -> None:
    """The replica scorer learns only the champion: pinned to another model, it starts
    again from training's checkpoint (which holds every model) and its stream
    predictions are the learner's of the new champion."""
    create_topics(prefix)
    pipeline = tmp_path / "manual.yaml"
    pipeline.write_text(Path(write_pipeline(tmp_path)).read_text() + "champion: {policy: manual}\n")
    training = service_factory(
        "training", PIPELINE_CONFIG=str(pipeline), IDLE_MS="500", CHECKPOINT_SECONDS="1"
    )
    produce_chunk(prefix, weather, 0, 1000, DELAY)
    training.start()
    wait_learned(training, 1000 - DELAY)
    serving = service_factory("serving", PIPELINE_CONFIG=str(pipeline), IDLE_MS="500").start()
    produce_chunk(prefix, weather, 1000, 2000, DELAY)
    scored = {"source": "stream", "model": "logreg"}
    assert wait_until(
        lambda: metric_value(serving, "driftline_serving_predictions_total", 0, **scored) > 300
    )
    pinned = httpx.post(
        f"{serving.url}/admin/champion", json={"model": "hoeffding_tree"}, headers=API, timeout=30
    )
    assert pinned.status_code in (200, 202), pinned.text
    assert wait_until(lambda: httpx.get(f"{serving.url}/healthz").json()["stream_restarts"] >= 1)
    time.sleep(3)  # the new scorer restores training's checkpoint (it lags a live stream)
    produce_chunk(prefix, weather, 2000, N_ROWS, DELAY)
    wait_learned(training, N_ROWS)

    def tree_events() -> set[str]:
        return {
            p["event_id"]
            for p in predictions(prefix)
            if p["source"] == "stream" and p["model"] == "hoeffding_tree"
        }

    wanted = {f"w{i}" for i in range(2000, N_ROWS)}
    assert wait_until(lambda: wanted <= tree_events(), timeout=120), "the new champion never scored"
    found = predictions(prefix)
    learner = {
        p["event_id"]: p
        for p in found
        if p["source"] == "learner" and p["model"] == "hoeffding_tree"
    }
    for p in found:
        if p["source"] == "stream" and p["model"] == "hoeffding_tree":
            same = {k: p[k] for k in ("y_pred", "probabilities", "entity_id", "event_time")}
            assert same == {k: learner[p["event_id"]][k] for k in same}, p["event_id"]
    health = httpx.get(f"{serving.url}/healthz").json()
    assert health["stream_restarts"] >= 1 and health["status"] == "ok"
