"""A batch challenger in the real training service: `sk_hgb` beside `logreg` on the
weather stream through Kafka, fitted with time-ordered cross-validation in its worker
process, scored test-then-train exactly as the same model run in place, registered with
its fit in the version's metadata, and unchanged by a kill -9 mid-stream."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from river import linear_model, preprocessing

from shared.batch_models import PARENT_POLL_S
from shared.catalogue import build_model
from shared.messages import ModelPublished
from tests.integration.test_training_service import (
    N_ROWS,
    Row,
    checkpoint_items,
    create_topics,
    feature_records,
    label_records,
    models_of,
    wait_learned,
    weather,
)
from tests.support import ServiceProcess, kcat_produce, kcat_read

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["weather"]  # the module's fixture, shared

Factory = Callable[..., ServiceProcess]
SK_HGB = {"window": 1000, "min_train": 500, "retrain_every": 1000, "swap_after": 200}
PIPELINE = f"""\
name: weather-batch
task: binary
features:
  numeric: [feat_1, feat_2, feat_3, feat_4, feat_5, feat_6, feat_7, feat_8]
models:
  - name: logreg
  - name: sk_hgb
    params: {json.dumps({**SK_HGB, "n_candidates": 4})}
labels:
  ttl: 1d
"""


def reference(rows: list[Row]) -> dict[str, tuple[int, int]]:
    """(scored, correct) per model, test-then-train in row order, in this process."""
    models: dict[str, Any] = {
        "logreg": preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "sk_hgb": build_model("sk_hgb", {**SK_HGB, "n_candidates": 4, "background": False}),
    }
    counts = {}
    for name, model in models.items():
        scored = correct = 0
        for x, y in rows:
            y_pred = model.predict_one(x)
            if y_pred is not None:
                scored += 1
                correct += y_pred == y
            model.learn_one(x, y)
        counts[name] = (scored, correct)
    return counts


def start_training(service_factory: Factory, tmp_path: Path, **env: str) -> ServiceProcess:
    path = tmp_path / "weather-batch.yaml"
    path.write_text(PIPELINE)
    return service_factory("training", PIPELINE_CONFIG=str(path), IDLE_MS="1000", **env)


def produce(prefix: str, rows: list[Row]) -> None:
    kcat_produce(f"{prefix}features", feature_records(rows, 0, N_ROWS))
    kcat_produce(f"{prefix}labels", label_records(rows, 0, N_ROWS, None))


def orphans(service: ServiceProcess) -> list[int]:
    """Processes a killed service left behind: multiprocessing children re-parented to
    init that carry the service's pipeline file in their environment."""
    mark = f"PIPELINE_CONFIG={service.env['PIPELINE_CONFIG']}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if "\nPPid:\t1\n" in status and b"multiprocessing" in cmdline and mark in environ:
            found.append(int(proc.name))
    return found


def counts(body: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {m["name"]: (m["n_scored"], m["n_correct"]) for m in body["models"]}


def batch_versions(prefix: str, timeout: float = 60) -> list[ModelPublished]:
    """The `models` topic's sk_hgb versions, once one says what its fit found."""
    deadline = time.monotonic() + timeout
    while True:
        announced = [
            ModelPublished.model_validate_json(m["payload"]) for m in kcat_read(f"{prefix}models")
        ]
        mine = [p for p in announced if p.name == "sk_hgb"]
        if any(p.batch is not None for p in mine) or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


def test_a_batch_challenger_is_cross_validated_scored_and_registered_with_its_fit(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row]
) -> None:
    create_topics(prefix)
    produce(prefix, weather)
    service = start_training(
        service_factory, tmp_path, VERSION_SECONDS="0", CHECKPOINT_SECONDS="2"
    ).start()
    expected = reference(weather)
    body = wait_learned(service, N_ROWS)
    assert counts(body) == expected
    assert {m["name"]: m["n_learned"] for m in body["models"]} == {
        "logreg": N_ROWS,
        "sk_hgb": N_ROWS,
    }
    # no prediction before its first fit took over (at 500 + 200 labels), then all of them
    assert expected["sk_hgb"][0] == N_ROWS - 700
    scored, correct = expected["sk_hgb"]
    assert correct / scored > 0.6

    versions = batch_versions(prefix)
    fitted = [p for p in versions if p.batch is not None]
    assert fitted, [p.model_dump() for p in versions]
    latest = fitted[-1]
    batch = latest.batch
    assert batch is not None and batch.cv is not None
    assert (batch.search, batch.cv.scheme, batch.cv.n_splits) == (
        "HalvingRandomSearchCV",
        "TimeSeriesSplit",
        3,
    )
    assert len(batch.cv.splits) == 3 and batch.cv.mean is not None and batch.cv.mean > 0.5
    assert {"learning_rate", "max_leaf_nodes", "min_samples_leaf"} <= set(batch.params)
    assert batch.window.rows == batch.window.last - batch.window.first + 1 <= 1000
    n_learned = latest.lineage.n_learned
    assert n_learned is not None and batch.window.last < batch.serving_from <= n_learned
    assert latest.lineage.offsets, "the checkpoint's input offsets"
    if n_learned == N_ROWS:  # the fits at 500, 1500, 2500: the last took over at 2700
        assert (batch.window.first, batch.window.last, batch.serving_from) == (1501, 2500, 2700)


def test_a_kill_mid_stream_swaps_in_the_same_fits_at_the_same_counts(
    service_factory: Factory, prefix: str, tmp_path: Path, weather: list[Row]
) -> None:
    create_topics(prefix)
    produce(prefix, weather)
    service = start_training(
        service_factory, tmp_path, CHECKPOINT_EVERY="700", CHECKPOINT_SECONDS="3600"
    )
    service.start()
    deadline = time.monotonic() + 60
    while checkpoint_items(prefix)[0].get("records", 0) < 2000:  # past the first swap
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    service.stop(signal.SIGKILL)
    time.sleep(2 * PARENT_POLL_S)
    assert not orphans(service), "the fitting worker ends with its parent"
    service.start()
    restored = models_of(service)["restored"]
    assert 2000 <= restored["records"] < 2 * N_ROWS
    body = wait_learned(service, N_ROWS)
    assert counts(body) == reference(weather)
