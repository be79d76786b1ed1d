"""Consumer lag and throughput of every service, from its consumer group's offsets.

Every `LAG_EVERY_S` (5 s), off the monitoring loop, `LagWatch` asks the broker for
the end offsets of each service's input topics and the offsets its consumer group
has committed on them:

- **lag** = the sum over the partitions of end - committed (what it has yet to handle);
- **throughput** = how much the committed offsets moved since the last sample, per
  second (what it handled), beside how much the end offsets moved (what arrived).

A group that has committed nothing is shown as not running (lag unknown). The last
`LAG_POINTS` (60) samples per service are kept for the dashboard's sparklines: five
minutes at the default, whatever the rate.

>>> watch = LagWatch(None, None, [Watched("training", "g", ("features",))])
>>> watch.record("training", at=10.0, ends=100, committed=40)
>>> watch.record("training", at=15.0, ends=150, committed=140)
>>> row = watch.report()["services"][0]
>>> row["lag"], row["consumed_per_s"], row["produced_per_s"], row["points"][-1]
(10, 20.0, 10.0, [15.0, 10, 20.0])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.settings import CommonSettings
from shared.topics import Topics
from shared.upstream import open_offset_clients

__all__ = ["LAG_POINTS", "LagWatch", "Watched", "open_lag_watch", "watched_groups"]

log = logging.getLogger(__name__)

LAG_POINTS = 60  # samples kept per service: ~140 B each


@dataclass(frozen=True)
class Watched:
    """A service's consumer group and the topics it reads."""

    service: str
    group: str
    topics: tuple[str, ...]


def watched_groups(
    settings: CommonSettings, topics: Topics, monitoring_group: str, training: str, serving: str
) -> list[Watched]:
    """The five services' groups (each service's GROUP_ID as configured here)."""
    features = settings.features_group_id or f"{settings.topic_prefix}driftline-features"
    return [
        Watched("ingestion", settings.ingestion_group_id, (topics.events_raw, topics.labels_raw)),
        Watched("features", features, (topics.events,)),
        Watched("training", training, (topics.features, topics.labels)),
        Watched("serving", serving, (topics.features,)),
        Watched(
            "monitoring", monitoring_group, (topics.predictions, topics.labels, topics.features)
        ),
    ]


@dataclass
class _State:
    lag: int | None = None
    consumed_per_s: float | None = None
    produced_per_s: float | None = None
    last: tuple[float, int, int] | None = None  # (wall time, ends, committed)
    points: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=LAG_POINTS))


class LagWatch:
    """Samples each watched group's lag and throughput (see the module doc)."""

    def __init__(
        self,
        admin: AIOKafkaAdminClient | None,
        offsets: AIOKafkaConsumer | None,
        watched: Sequence[Watched],
        every_s: float = 5.0,
    ) -> None:
        self.admin = admin
        self.offsets = offsets
        self.watched = list(watched)
        self.every_s = every_s
        self.states = {w.service: _State() for w in self.watched}
        self._coordinators: dict[str, int] = {}

    def record(self, service: str, at: float, ends: int, committed: int | None) -> None:
        """One sample: the summed end offsets and committed offsets (None: none)."""
        state = self.states[service]
        if committed is None:
            state.lag = state.consumed_per_s = state.produced_per_s = None
            state.last = None
            return
        state.lag = max(0, ends - committed)
        if state.last is not None and at > state.last[0]:
            dt = at - state.last[0]
            state.consumed_per_s = round(max(0, committed - state.last[2]) / dt, 3)
            state.produced_per_s = round(max(0, ends - state.last[1]) / dt, 3)
        state.last = (at, ends, committed)
        state.points.append([round(at, 3), state.lag, state.consumed_per_s])

    def report(self) -> dict[str, Any]:
        """The /api/lag document."""
        return {
            "every_s": self.every_s,
            "services": [
                {
                    "service": w.service,
                    "group": w.group,
                    "topics": list(w.topics),
                    "running": self.states[w.service].last is not None,
                    "lag": self.states[w.service].lag,
                    "consumed_per_s": self.states[w.service].consumed_per_s,
                    "produced_per_s": self.states[w.service].produced_per_s,
                    "points": list(self.states[w.service].points),
                }
                for w in self.watched
            ],
        }

    async def sample(self) -> None:
        """Ask the broker once for every watched group."""
        assert self.admin is not None and self.offsets is not None
        topics = sorted({t for w in self.watched for t in w.topics})
        counts = {}
        for described in await self.admin.describe_topics(topics):
            if described.get("error_code", 0) == 0 and described.get("partitions"):
                counts[described["topic"]] = len(described["partitions"])
        for w in self.watched:
            tps = [TopicPartition(t, p) for t in w.topics for p in range(counts.get(t, 0))]
            if not tps:
                self.record(w.service, time.time(), 0, None)
                continue
            ends = await self.offsets.end_offsets(tps)
            committed = await self._committed(w.group, tps)
            at = time.time()
            total = sum(committed.get(tp, 0) for tp in tps) if committed else None
            self.record(w.service, at, sum(ends.values()), total)

    async def _committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self.admin is not None
        coordinator = self._coordinators.get(group)
        if coordinator is None:
            coordinator = self._coordinators[group] = await self.admin.find_coordinator(group)
        found = await self.admin.list_consumer_group_offsets(group, coordinator, tps)
        return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}

    async def run(self) -> None:
        """Sample every `every_s` until cancelled; a failed sample is logged and retried."""
        while True:
            try:
                await asyncio.wait_for(self.sample(), timeout=max(self.every_s, 5.0))
            except Exception as error:  # the broker away: the next sample tries again
                self._coordinators.clear()
                log.warning("consumer lag sample failed: %r", error)
            await asyncio.sleep(self.every_s)


@contextlib.asynccontextmanager
async def open_lag_watch(
    bootstrap: str,
    watched: Sequence[Watched],
    client_id: str,
    every_s: float,
    auth: Mapping[str, Any],
) -> AsyncIterator[LagWatch]:
    """A `LagWatch` with its own admin client and offsets reader open while in use."""
    async with open_offset_clients(bootstrap, client_id, auth) as (admin, offsets):
        yield LagWatch(admin, offsets, watched, every_s)
