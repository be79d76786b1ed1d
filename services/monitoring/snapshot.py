"""Monitoring's snapshots: a restart reads on from the last one, not from the beginning.

Without them a restart re-reads `predictions` and `labels` from their beginning, and a
week of retention at 1,000 events/s is hours of replay. Every `SNAPSHOT_SECONDS`, after
a batch is handled and its alerts are published, the worker pickles the monitor (joins
waiting for their label, every series, the drift detectors, the feature vectors
waiting for the watermark and the data drift windows, the alerts), its watermark
and the next offset of each partition it reads, in a forked child (`shared.snapshot`:
the loop does not pause), and writes the bytes to one Redis key (no TTL, so never
evicted). At start, a snapshot taken with the same pipeline and scoring settings is
loaded and the worker seeks to its offsets: what came after is read as before, so the
counts are those a replay from the beginning gives. No snapshot, one taken with other
settings, or bytes that do not load: the replay from the beginning (logged). The bytes
are signed with the signing key (`shared.signing`) and verified before unpickling: a
snapshot without a signature or with a wrong one is refused, counted in
`driftline_registry_rejected_total{what="snapshot"}`, and replayed past in the same way
(the next snapshot overwrites it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from services.monitoring.config import MonitoringSettings
from services.monitoring.monitor import Monitor
from shared.pipeline import PipelineConfig
from shared.signing import SignatureError, SigningKey, loads_signed
from shared.snapshot import pickle_later
from shared.watermark import Partition, Watermark

__all__ = ["SNAPSHOT_VERSION", "Snapshot", "SnapshotStore", "identity", "snapshot_key"]

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = (
    4  # 2: data drift, features offsets; 3: marks, promotions, drift histories; 4: estimates
)


@dataclass
class Snapshot:
    """The monitor and its clocks as of `offsets` (the next offset of each partition)."""

    identity: str
    monitor: Monitor
    watermark: Watermark
    offsets: dict[Partition, int]
    version: int = SNAPSHOT_VERSION


def snapshot_key(topic_prefix: str) -> str:
    return f"driftline:{topic_prefix}monitoring:snapshot"


def identity(pipeline: PipelineConfig, settings: MonitoringSettings) -> str:
    """What a snapshot must have been taken with to be read on from: the pipeline and
    every setting that changes what is scored or kept (the pipeline's `data_drift`
    section is not in its `config_hash`)."""
    fields = (
        pipeline.config_hash(),
        pipeline.data_drift.model_dump(mode="json"),
        settings.window_size,
        settings.drift_delta,
        settings.drift_warmup,
        settings.drift_margin,
        settings.history_every,
        settings.history_points,
        settings.registry_keep,
    )
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:16]


class SnapshotStore:
    """One snapshot per topic prefix, in Redis."""

    def __init__(self, redis: Redis, key: str, identity: str, *, signing_key: SigningKey) -> None:
        self.redis = redis
        self.key = key
        self.identity = identity
        self.signing_key = signing_key

    async def load(self) -> Snapshot | None:
        data = await self.redis.get(self.key)
        if data is None:
            log.info("no monitoring snapshot at %s: replaying from the beginning", self.key)
            return None
        try:
            snapshot = loads_signed(self.signing_key, cast(bytes, data), "snapshot")
        except SignatureError as error:
            log.error(
                "REFUSED the monitoring snapshot at %s (not unpickled): %s;"
                " replaying from the beginning",
                self.key,
                error,
            )
            return None
        except Exception:
            log.exception("the monitoring snapshot does not load: replaying from the beginning")
            return None
        if not isinstance(snapshot, Snapshot) or snapshot.version != SNAPSHOT_VERSION:
            log.warning("the monitoring snapshot is of another version: replaying")
            return None
        if snapshot.identity != self.identity:
            log.warning("the monitoring snapshot was taken with other settings: replaying")
            return None
        return snapshot

    def save(
        self, monitor: Monitor, watermark: Watermark, offsets: dict[Partition, int]
    ) -> asyncio.Future[int]:
        """Pickle the state as it is now (a forked child); the future resolves to the
        bytes written once they are in Redis."""
        pickled = pickle_later(
            Snapshot(self.identity, monitor, watermark, offsets), self.signing_key
        )

        async def write() -> int:
            data = await pickled
            await self.redis.set(self.key, data)
            return len(data)

        return asyncio.ensure_future(write())
