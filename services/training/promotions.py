"""The champion policy's decisions on the `champions` topic (`shared.champions`).

Each promotion is sent with its evidence, in the same batch as the predictions that
led to it, so its acknowledgement is awaited before the next checkpoint: a crash
before it makes the restart decide and send it again, with the same `change_id`
(serving applies it once). At start, training reads the topic and, if it names
another champion than the policy's (a fresh start, or a checkpoint from before the
last change sent), says the policy's own.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from services.training.champion import ChampionPolicy, Drift, Promotion
from shared.champions import ChampionView, read_changes
from shared.clock import utcnow
from shared.kafka import make_consumer
from shared.messages import Alert, ChampionChanged
from shared.topics import partitions_of

__all__ = ["BY", "KEY", "announce_champion", "drift_record", "promotion_record"]

log = logging.getLogger(__name__)

KEY = b"champion"  # one key: every change on one partition, in order
BY = "training (policy auto)"


def drift_record(found: Drift, event_time: datetime | None) -> tuple[bytes, bytes]:
    """The (key, value) of the `Alert` training raises when its champion's errors rose."""
    alert = Alert(
        alert_id=found.alert_id,
        kind="concept_drift",
        subject=found.model,
        detector="training: ADWIN on the champion's errors",
        severity="warning",
        details={
            "action": found.action,
            "error_before": found.error_before,
            "error_after": found.error_after,
            "events": found.events,
            "event_time": event_time.isoformat() if event_time else None,
        },
        raised_at=utcnow(),
    )
    log.warning(
        "concept drift of the champion %s (error %.3f -> %.3f): %s",
        found.model,
        found.error_before,
        found.error_after,
        found.action,
    )
    return found.model.encode(), alert.to_json()


def promotion_record(promotion: Promotion, event_time: datetime | None) -> tuple[bytes, bytes]:
    """The (key, value) of a promotion's `ChampionChanged`."""
    evidence = promotion.evidence
    test = "McNemar" if evidence["test"] == "mcnemar" else "sequential test"
    span = "the last" if evidence["test"] == "mcnemar" else "the"
    reason = (
        f"{promotion.model} beat {promotion.previous} over {span} {evidence['window']} events"
        f" (accuracy {evidence['challenger']['accuracy']:.3f} against"
        f" {evidence['champion']['accuracy']:.3f}; {test} p={evidence['p_value']:.2g})"
    )
    message = ChampionChanged(
        change_id=promotion.change_id,
        model=promotion.model,
        previous=promotion.previous,
        action="promote",
        by=BY,
        reason=reason,
        evidence=evidence,
        event_time=event_time,
        changed_at=utcnow(),
    )
    log.info("promoted %s: %s", promotion.model, reason)
    return KEY, message.to_json()


async def announce_champion(
    bootstrap: str,
    topic: str,
    producer: AIOKafkaProducer,
    policy: ChampionPolicy,
    initial: str,
    client_id: str,
    auth: dict[str, Any],
) -> None:
    """Send the policy's champion on `topic` if the topic names another one."""
    consumer = make_consumer(
        bootstrap_servers=bootstrap, group_id=None, client_id=client_id, **auth
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic, auth)]
        view = ChampionView(initial)
        for change in await read_changes(consumer, partitions):
            view.apply(change)
    finally:
        await consumer.stop()
    if view.policy_model == policy.champion:
        return
    message = ChampionChanged(
        change_id=f"{policy.epoch}:{policy.changes}:start",
        model=policy.champion,
        previous=view.policy_model,
        action="promote",
        by=BY,
        reason=f"training started with {policy.champion} as its champion"
        " (from its checkpoint, or a fresh start)",
        evidence=policy.last,
        changed_at=utcnow(),
    )
    await producer.send_and_wait(topic, message.to_json(), key=KEY)
    log.info("announced the champion %s (the topic said %s)", policy.champion, view.policy_model)
