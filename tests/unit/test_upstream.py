"""Which partitions a learner may stop waiting for: asked of the groups upstream."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata

from shared.upstream import Hop, Upstream

CHAINS = {
    "features": [Hop("ingestion", "events.raw"), Hop("features", "events")],
    "labels": [Hop("ingestion", "labels.raw")],
}


class FakeAdmin:
    """Committed offsets per group, partition counts per topic."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.committed: dict[tuple[str, TopicPartition], int] = {}
        self.members: dict[str, int] = {}  # group -> consumers joined
        self.down = False

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [
            {"topic": t, "error_code": 0, "partitions": [{}] * self.counts[t]}
            if t in self.counts
            else {"topic": t, "error_code": 3, "partitions": []}
            for t in topics
        ]

    async def find_coordinator(self, group: str) -> int:
        if self.down:
            raise KafkaConnectionError("broker away")
        return 1

    async def list_consumer_group_offsets(
        self, group: str, coordinator: int, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return {  # as the broker answers: -1 where the group has no offset
            tp: OffsetAndMetadata(self.committed.get((group, tp), -1), "") for tp in partitions
        }

    async def describe_consumer_groups(self, groups: list[str], coordinator: int) -> list[Any]:
        described = [
            (0, g, "Stable" if self.members.get(g) else "Empty", "consumer", "", [()] * n)
            for g in groups
            for n in [self.members.get(g, 0)]
        ]
        return [SimpleNamespace(groups=described)]


class FakeOffsets:
    def __init__(self, ends: dict[TopicPartition, int]) -> None:
        self.ends = ends

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends.get(tp, 0) for tp in tps}


def tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


MINE = [tp("features", p) for p in range(3)] + [tp("labels", p) for p in range(3)]


async def drained(admin: FakeAdmin, ends: dict[TopicPartition, int]) -> dict[str, bool]:
    admin.counts = {"features": 3, "labels": 3} | admin.counts  # the reader's own topics
    upstream = Upstream(admin, FakeOffsets(ends), CHAINS)
    found = await upstream.drained(MINE)
    return {f"{t.topic}/{t.partition}": done for t, done in found.items()}


def three(*topics: str) -> dict[str, int]:
    return dict.fromkeys(topics, 3)


async def test_a_partition_waits_while_a_service_before_it_lags_on_its_partition() -> None:
    admin = FakeAdmin(three("events.raw", "events", "labels.raw"))
    ends = {tp("events.raw", 1): 10, tp("events", 1): 10, tp("labels.raw", 2): 4}
    admin.committed = {
        ("ingestion", tp("events.raw", 1)): 10,
        ("features", tp("events", 1)): 7,  # features has three events of partition 1 to go
        ("ingestion", tp("labels.raw", 2)): 4,
    }
    assert await drained(admin, ends) == {
        "features/0": True,
        "features/1": False,
        "features/2": True,
        "labels/0": True,
        "labels/1": True,
        "labels/2": True,
    }
    admin.committed[("features", tp("events", 1))] = 10
    assert all((await drained(admin, ends)).values())


async def test_a_group_that_committed_somewhere_holds_what_it_has_yet_to_read() -> None:
    admin = FakeAdmin(three("events.raw", "events", "labels.raw"))
    admin.committed = {("ingestion", tp("labels.raw", 1)): 3}
    found = await drained(admin, {tp("labels.raw", 0): 5, tp("labels.raw", 1): 3})
    assert [k for k, done in found.items() if not done] == ["labels/0"]


async def test_a_group_that_never_committed_is_taken_as_not_running() -> None:
    """Not deployed, or under another name: the reader's wall-time rules apply."""
    admin = FakeAdmin(three("events.raw", "events", "labels.raw"))
    assert all((await drained(admin, {tp("labels.raw", 0): 5})).values())


async def test_missing_topics_hold_nothing_back() -> None:
    assert all((await drained(FakeAdmin({}), {})).values())


async def test_with_another_partition_count_any_lag_holds_every_partition() -> None:
    admin = FakeAdmin({"events.raw": 3, "events": 6, "labels.raw": 3})
    admin.committed = {("features", tp("events", 5)): 0}
    found = await drained(admin, {tp("events", 5): 2})
    assert [found[f"features/{p}"] for p in range(3)] == [False, False, False]
    assert all(found[f"labels/{p}"] for p in range(3))


async def test_when_the_groups_cannot_be_asked_the_reader_waits() -> None:
    admin = FakeAdmin(three("events.raw", "events", "labels.raw"))
    admin.down = True
    found = await drained(admin, {})
    assert not any(found.values())


async def test_a_group_seen_committing_that_shows_nothing_is_still_owed() -> None:
    """After a broker restart the coordinator reloads offsets and answers none a while."""
    admin = FakeAdmin(three("events.raw", "events", "labels.raw"))
    admin.counts |= {"features": 3, "labels": 3}
    admin.committed = {("ingestion", tp("labels.raw", 0)): 5}
    upstream = Upstream(admin, FakeOffsets({tp("labels.raw", 0): 5}), CHAINS)
    assert all((await upstream.drained(MINE)).values())
    admin.committed = {}
    found = await upstream.drained(MINE)
    assert [f"{t.topic}/{t.partition}" for t, done in found.items() if not done] == ["labels/0"]


async def test_a_group_with_members_that_committed_nothing_yet_is_waited_for() -> None:
    """Features joined but stalled before its first commit (its Redis down): the labels'
    clock must not run ahead of it, then or after it leaves (killed, restarting)."""
    admin = FakeAdmin(three("events.raw", "events", "labels.raw"))
    admin.counts |= {"features": 3, "labels": 3}
    admin.committed = {("ingestion", tp("events.raw", p)): 4 for p in range(3)}
    admin.members = {"features": 1}
    ends = {tp("events.raw", p): 4 for p in range(3)} | {tp("events", 2): 4}
    upstream = Upstream(admin, FakeOffsets(ends), CHAINS)
    found = await upstream.drained(MINE)
    assert [f"{t.topic}/{t.partition}" for t, done in found.items() if not done] == ["features/2"]
    admin.members = {}
    found = await upstream.drained(MINE)
    assert [f"{t.topic}/{t.partition}" for t, done in found.items() if not done] == ["features/2"]
