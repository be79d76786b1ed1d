"""The learner's upstream check against a real broker: a consumer group that has
joined but committed nothing yet holds the partitions it owes."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka_auth import KafkaAuth
from shared.upstream import Hop, Upstream, open_offset_clients
from tests.support import ADMIN_KAFKA, BOOTSTRAP, provision, service_groups

pytestmark = pytest.mark.integration


async def test_a_joined_group_that_never_committed_holds_until_it_commits(prefix: str) -> None:
    provision(prefix)
    groups = service_groups(prefix)
    events, features = f"{prefix}events", f"{prefix}features"
    chains = {features: [Hop(groups.features, events)]}
    mine = [TopicPartition(features, p) for p in range(3)]
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA)
    await producer.start()
    try:
        await producer.send_and_wait(events, b"{}", key=b"a", partition=1)
    finally:
        await producer.stop()
    auth = KafkaAuth.local("training").aiokafka()  # as the learner asks, with its ACLs
    async with open_offset_clients(BOOTSTRAP, "upstream-test", auth) as (admin, offsets):
        upstream = Upstream(admin, offsets, chains)
        assert all((await upstream.drained(mine)).values())  # nobody in the group yet

        stalled = AIOKafkaConsumer(  # the features service, stuck before its first commit
            events,
            bootstrap_servers=BOOTSTRAP,
            group_id=groups.features,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **KafkaAuth.local("features").aiokafka(),
        )
        await stalled.start()
        try:
            await stalled.getmany(timeout_ms=5000)  # joined, assigned, has read
            found = await upstream.drained(mine)
            assert [tp.partition for tp, done in found.items() if not done] == [1]
        finally:
            await stalled.stop()  # leaves the group having committed nothing
        found = await upstream.drained(mine)
        assert [tp.partition for tp, done in found.items() if not done] == [1]

        done = AIOKafkaConsumer(
            bootstrap_servers=BOOTSTRAP,
            group_id=groups.features,
            enable_auto_commit=False,
            **KafkaAuth.local("features").aiokafka(),
        )
        await done.start()
        try:
            done.assign([TopicPartition(events, 1)])
            await done.commit({TopicPartition(events, 1): 1})
        finally:
            await done.stop()
        assert all((await upstream.drained(mine)).values())
