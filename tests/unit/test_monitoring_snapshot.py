"""Monitoring's snapshots: what a restart reads on from (a dict stands in for Redis)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

from services.monitoring.config import MonitoringSettings
from services.monitoring.data_drift import DataDrift
from services.monitoring.monitor import Monitor
from services.monitoring.snapshot import SnapshotStore, identity
from shared.messages import FeatureVector, Label, Prediction
from shared.pipeline import DataDriftSettings, Features, load_pipeline
from shared.signing import REJECTED, SigningKey, sign
from shared.watermark import Watermark
from tests.support import crafted_pickle

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, tzinfo=UTC)
KEY = SigningKey(b"monitoring-snapshot-test-key")


class DictRedis:
    """The two calls the store makes, on a dict."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self.data[key] = value


def _monitor() -> Monitor:
    monitor = Monitor("binary", ttl=timedelta(hours=1))
    for i in range(50):
        at = T0 + timedelta(seconds=i)
        monitor.add_prediction(
            Prediction(
                prediction_id=f"p{i}",
                event_id=f"e{i}",
                model="logreg",
                model_version="1",
                y_pred=i % 3 == 0,
                probabilities=None,
                source="learner",
                event_time=at,
                time=at,
            )
        )
        if i < 40:  # ten still wait for their label
            monitor.add_label(Label(event_id=f"e{i}", label=i % 2 == 0, label_time=at))
    monitor.advance(T0 + timedelta(seconds=60))
    return monitor


def _store(redis: DictRedis, identity: str = "same") -> SnapshotStore:
    return SnapshotStore(
        cast(Redis, redis), "driftline:monitoring:snapshot", identity, signing_key=KEY
    )


def test_a_snapshot_loads_as_the_state_it_was_taken_from() -> None:
    redis, monitor, watermark = DictRedis(), _monitor(), Watermark(max_jump=timedelta(minutes=10))
    watermark.observe(("labels", 0), T0, now=0)

    async def roundtrip() -> Any:
        written = await _store(redis).save(monitor, watermark, {("labels", 0): 40})
        assert written == len(redis.data["driftline:monitoring:snapshot"]) > 0
        return await _store(redis).load()

    loaded = asyncio.run(roundtrip())
    assert loaded is not None and loaded.offsets == {("labels", 0): 40}
    assert loaded.monitor.summary() == monitor.summary()
    assert loaded.monitor.joiner.waiting_predictions == 10
    assert loaded.watermark.last_times() == {("labels", 0): T0}


def test_no_snapshot_another_identity_or_garbage_means_a_replay() -> None:
    redis = DictRedis()
    assert asyncio.run(_store(redis).load()) is None

    async def save() -> int:
        return await _store(redis, "before").save(_monitor(), Watermark(), {})

    asyncio.run(save())
    assert asyncio.run(_store(redis, "after").load()) is None  # other settings
    redis.data["driftline:monitoring:snapshot"] = b"not a pickle"
    assert asyncio.run(_store(redis).load()) is None


def test_a_snapshot_not_signed_with_the_key_is_refused_unread_and_replayed(
    tmp_path: Path,
) -> None:
    redis, marker = DictRedis(), tmp_path / "ran"
    key = "driftline:monitoring:snapshot"

    def refused(reason: str) -> float:
        return float(REJECTED.labels("snapshot", reason)._value.get())

    before = refused("missing"), refused("wrong")
    redis.data[key] = crafted_pickle(marker)  # unsigned, as written before signing
    assert asyncio.run(_store(redis).load()) is None
    redis.data[key] = sign(SigningKey(b"not the monitoring key"), crafted_pickle(marker))
    assert asyncio.run(_store(redis).load()) is None
    assert not marker.exists()
    assert (refused("missing"), refused("wrong")) == (before[0] + 1, before[1] + 1)


def test_a_snapshot_keeps_the_data_drift_windows_and_the_vectors_waiting() -> None:
    monitor = Monitor(
        "binary",
        ttl=timedelta(hours=1),
        data_drift=DataDrift(Features(numeric=("x",)), DataDriftSettings(reference_size=10)),
    )
    for i in range(30):
        monitor.add_features(
            FeatureVector(
                event_id=f"e{i}",
                entity_id=None,
                event_time=T0 + timedelta(seconds=i),
                features={"x": float(i % 7)},
                feature_set_version="v1",
            )
        )
    monitor.advance_features(T0 + timedelta(seconds=19))
    redis = DictRedis()

    async def roundtrip() -> Any:
        await _store(redis).save(monitor, Watermark(), {("features", 0): 30})
        return await _store(redis).load()

    loaded = asyncio.run(roundtrip())
    assert loaded is not None and loaded.offsets == {("features", 0): 30}
    assert loaded.monitor.drift_report() == monitor.drift_report()
    assert loaded.monitor.summary()["waiting"]["features"] == 10


def test_the_identity_follows_the_data_drift_settings_the_model_hash_does_not() -> None:
    pipeline = load_pipeline(ROOT / "pipelines" / "default.yaml")
    tuned = pipeline.model_copy(update={"data_drift": DataDriftSettings(psi_threshold=0.25)})
    settings = MonitoringSettings()
    assert tuned.config_hash() == pipeline.config_hash()
    assert identity(tuned, settings) != identity(pipeline, settings)
