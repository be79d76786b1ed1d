"""What is still on its way to a topic: asked of the consumer groups upstream.

A quiet `features` partition is either done, or waiting for the features service
(stopped, rejoining its group after a broker restart, far behind). Wall time cannot
tell the two apart; the consumer groups before it can. A partition is *drained* when
each hop before it (a service reading one topic, in one consumer group) has committed
the end of its input: ingestion the end of `events.raw`, then features the end of
`events`. Both commit only after what they derived is acknowledged, so everything
that will come of what had arrived upstream is then on the partition.

Hops are asked in stream order, each topic's end offsets before its group's offsets,
and the reader compares its own position with the partition's end only after that
(`LearnerFeed.refresh`): what the last hop had handled when asked is there by then.

Each hop keeps the key, and the topics share one partition count, so partition p of
a hop's input feeds partition p of the next topic; where the counts differ, lag on
any partition of the input holds every partition after it. A topic that does not
exist holds nothing back (nothing can come from it). A group that has committed
nothing at all on a topic with records, and has no members, is taken as not running
(not deployed, or configured under another name: logged) and holds nothing back, so
the reader falls back on its wall-time rules. A group once seen with members or
offsets is waited for however long it is away: stalled before its first commit (its
store down), restarting, or a broker back from a restart that still reloads its
offsets and shows none.

>>> Upstream.owed({"events.raw": (3, {1}), "events": (3, set())}, ["events.raw", "events"])
(3, {1})
>>> Upstream.owed({"events.raw": (3, set()), "events": (2, {0})}, ["events.raw", "events"])
(3, {0, 1, 2})
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.settings import CommonSettings
from shared.topics import Topics

__all__ = ["Hop", "Upstream", "learner_chains", "learner_upstream"]

log = logging.getLogger(__name__)

TOPICS_EVERY_S = 60.0  # how often partition counts are asked again
WARN_EVERY_S = 60.0
SILENT_WARN_S = 300.0
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")  # others are views of a topic (monitoring's)


@dataclass(frozen=True)
class Hop:
    """A service before the reader: its consumer group, and the topic it reads."""

    group: str
    source: str


def learner_chains(settings: CommonSettings) -> dict[str, list[Hop]]:
    """The services before `features` and `labels` (what a learner reads), in order."""
    topics = Topics(settings.topic_prefix)
    features = settings.features_group_id or f"{settings.topic_prefix}driftline-features"
    ingestion = settings.ingestion_group_id
    return {
        topics.features: [Hop(ingestion, topics.events_raw), Hop(features, topics.events)],
        topics.labels: [Hop(ingestion, topics.labels_raw)],
    }


@contextlib.asynccontextmanager
async def learner_upstream(settings: CommonSettings, client_id: str) -> AsyncIterator[Upstream]:
    """An `Upstream` of the learner's topics, its Kafka clients open while in use."""
    async with open_upstream(settings, learner_chains(settings), client_id) as upstream:
        yield upstream


@contextlib.asynccontextmanager
async def open_upstream(
    settings: CommonSettings, chains: Mapping[str, Sequence[Hop]], client_id: str
) -> AsyncIterator[Upstream]:
    """An `Upstream` of `chains`, with its admin client and offsets reader open."""
    async with open_offset_clients(
        settings.kafka_bootstrap_servers, client_id, settings.kafka()
    ) as clients:
        yield Upstream(*clients, chains)


@contextlib.asynccontextmanager
async def open_offset_clients(
    bootstrap: str, client_id: str, auth: Mapping[str, Any]
) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    """An admin client (groups' committed offsets) and an offsets reader, open while in use.

    The reader asks end offsets only: no group, nothing assigned, so it never fetches
    records (a subscribed consumer's metadata drops other topics: each ask would wait).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id, **auth)
    offsets = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, client_id=client_id, **auth
    )
    await admin.start()
    try:
        await offsets.start()
        try:
            yield admin, offsets
        finally:
            await offsets.stop()
    finally:
        await admin.close()


class Upstream:
    """Which partitions of the reader's topics are drained (see the module doc).

    `chains` gives, per topic the reader reads, the hops before it in stream order.
    """

    def __init__(
        self,
        admin: AIOKafkaAdminClient,
        offsets: AIOKafkaConsumer,
        chains: Mapping[str, Sequence[Hop]],
        timeout_s: float = 5.0,
    ) -> None:
        self.admin = admin
        self.offsets = offsets
        self.chains = {topic: list(hops) for topic, hops in chains.items()}
        self.timeout_s = timeout_s
        self._counts: dict[str, int] = {}  # topic -> partitions (absent: no such topic)
        self._counted_at = -TOPICS_EVERY_S
        self._coordinators: dict[str, int] = {}  # group -> its coordinator's node id
        self._warned_at = -WARN_EVERY_S
        self._silent: dict[Hop, float] = {}  # hops whose group never committed: when said
        self._known: set[Hop] = set()  # hops whose group has been seen with offsets

    async def drained(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, bool]:
        """Per partition: whether nothing for it is still upstream. When the groups
        cannot be asked, nothing is (the reader waits rather than guess)."""
        try:
            lag = await asyncio.wait_for(self._lag(), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as error:
            self._coordinators.clear()
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("cannot ask the consumer groups upstream (%r); waiting", error)
            return {tp: not self.chains.get(tp.topic) for tp in partitions}
        out: dict[TopicPartition, bool] = {}
        for tp in partitions:
            hops = self.chains.get(tp.topic)
            if not hops:
                out[tp] = True
                continue
            count, lagging = self.owed(lag, [hop.source for hop in hops])
            if not lagging:
                out[tp] = True
            elif count != self._counts.get(tp.topic):  # not p to p: any lag holds all
                out[tp] = False
            else:
                out[tp] = tp.partition not in lagging
        return out

    @staticmethod
    def owed(
        lag: Mapping[str, tuple[int, set[int]]], sources: Sequence[str]
    ) -> tuple[int, set[int]]:
        """The partitions still owed something by the chain through `sources`, as
        (partition count, lagging partitions); with mixed counts any lag holds all."""
        count, lagging = 0, set[int]()
        for source in sources:
            if source not in lag:
                continue
            n, behind = lag[source]
            if count and n != count:
                count = max(n, count)
                lagging = set(range(count)) if lagging or behind else lagging
                continue
            count = n
            lagging |= behind
        return count, lagging

    async def _lag(self) -> dict[str, tuple[int, set[int]]]:
        """Per source topic: (its partition count, the partitions its group lags on)."""
        await self._count_partitions()
        lag: dict[str, tuple[int, set[int]]] = {}
        hops = {hop: None for chain in self.chains.values() for hop in chain}  # ordered
        for hop in hops:
            count = self._counts.get(hop.source)
            if count is None:
                continue
            tps = [TopicPartition(hop.source, p) for p in range(count)]
            ends = await self.offsets.end_offsets(tps)
            committed = await self._committed(hop.group, tps)
            if not committed and hop not in self._known and not await self._members(hop.group):
                if any(ends.values()):  # not running: no wait here
                    self._never_committed(hop)
                continue
            # (a group with members that has committed nothing yet, or seen before and
            # showing nothing now: all its partitions with records are owed)
            self._known.add(hop)
            behind = {tp.partition for tp in tps if ends.get(tp, 0) > committed.get(tp, 0)}
            _, before = lag.get(hop.source, (count, set()))
            lag[hop.source] = (count, before | behind)
        return lag

    async def _committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offsets `group` has committed on `tps` (those it has)."""
        found = await self.admin.list_consumer_group_offsets(
            group, await self._coordinator(group), tps
        )
        return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}

    async def _members(self, group: str) -> int:
        """How many consumers are in `group` now (joined, or joining)."""
        responses = await self.admin.describe_consumer_groups(
            [group], await self._coordinator(group)
        )
        for response in responses:
            for error_code, name, _state, _ptype, _protocol, members, *_ in response.groups:
                if name != group:
                    continue
                if error_code:
                    raise KafkaError(f"describe group {group}: error {error_code}")
                return len(members)
        return 0

    async def _coordinator(self, group: str) -> int:
        coordinator = self._coordinators.get(group)
        if coordinator is None:
            coordinator = self._coordinators[group] = await self.admin.find_coordinator(group)
        return coordinator

    def _never_committed(self, hop: Hop) -> None:
        """Say so when a group with no members has committed nothing on a topic with
        records: the service is not deployed, or runs under another group than configured."""
        now = time.monotonic()
        if now - self._silent.get(hop, -SILENT_WARN_S) < SILENT_WARN_S:
            return
        self._silent[hop] = now
        log.warning(
            "consumer group %s has committed nothing on %s, which has records: taken as"
            " not running, so quiet partitions are skipped on wall time (IDLE_MS,"
            " LABEL_WAIT_MS); if that service runs under another group, set its *_GROUP_ID",
            hop.group,
            hop.source,
        )

    async def _count_partitions(self) -> None:
        now = time.monotonic()
        if now - self._counted_at < TOPICS_EVERY_S and self._counts:
            return
        topics = {hop.source for chain in self.chains.values() for hop in chain}
        named = {t for t in topics | set(self.chains) if _TOPIC_NAME.fullmatch(t)}
        counts = {}
        for described in await self.admin.describe_topics(sorted(named)):
            if described.get("error_code", 0) == 0 and described.get("partitions"):
                counts[described["topic"]] = len(described["partitions"])
        self._counts = counts
        self._counted_at = now
