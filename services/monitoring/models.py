"""The models published: monitoring follows the `models` topic for the dashboard.

`ModelsFollower` reads `models` (compacted, a message per version) from its beginning
with a group-less consumer and keeps the newest version of each model (by version
number): its metrics and what it relies on (`ModelPublished.influence`, see
`shared.explain.influence`). Memory: one message per model. It also follows the
champion's changes (`champions`, folded by `shared.champions.ChampionView`) and the
concept drifts training acted on (its alerts on `alerts`), the last `HISTORY` of
each. Not essential: a failure is logged and retried, and the dashboard shows what
it last had.

>>> from datetime import UTC, datetime
>>> from shared.messages import Lineage, ModelPublished
>>> follower = ModelsFollower(None, "models")
>>> def published(version, influence):
...     return ModelPublished(name="lr", version=version, lineage=Lineage(offsets=[]),
...         metrics={"accuracy": 0.8}, artifact_key="k", influence=influence,
...         published_at=datetime(2024, 1, 1, tzinfo=UTC))
>>> for message in (published("10", {"x": 0.7, "y": 0.3}), published("9", {"y": 1.0})):
...     follower.add(message)
>>> [(m["name"], m["version"], m["influence"][0]) for m in follower.report()["models"]]
[('lr', '10', {'feature': 'x', 'share': 0.7})]
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from shared.champions import HISTORY, ChampionView, decode_change
from shared.messages import Alert, ModelPublished
from shared.registry import version_order
from shared.topics import partitions_of

__all__ = ["ModelsFollower"]

log = logging.getLogger(__name__)

RETRY_S = 5.0


class ModelsFollower:
    """The newest `ModelPublished` of each model on `topic`."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer | None,
        topic: str,
        bootstrap_servers: str = "",
        auth: dict[str, Any] | None = None,
        *,
        champions: str | None = None,
        alerts: str | None = None,
        initial: str = "",
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.auth = auth
        self.latest: dict[str, ModelPublished] = {}
        self.champions, self.alerts, self.initial = champions, alerts, initial
        self.view = ChampionView(initial)
        self.actions: deque[Alert] = deque(maxlen=HISTORY)  # training's drift alerts

    def add(self, message: ModelPublished) -> None:
        known = self.latest.get(message.name)
        if known is None or version_order(message.version) >= version_order(known.version):
            self.latest[message.name] = message

    def report(self) -> dict[str, Any]:
        """The /api/models document: per model, its newest version and what it relies on."""
        return {
            "models": [
                {
                    "name": m.name,
                    "version": m.version,
                    "published_at": m.published_at.isoformat(),
                    "metrics": m.metrics,
                    "influence": [
                        {"feature": f, "share": share} for f, share in (m.influence or {}).items()
                    ],
                }
                for m in sorted(self.latest.values(), key=lambda m: m.name)
            ],
            "champion": self._champion(),
            "changes": [c.model_dump(mode="json") for c in reversed(self.view.history)],
            "actions": [a.model_dump(mode="json") for a in reversed(self.actions)],
        }

    def _champion(self) -> dict[str, Any]:
        why = self.view.last
        return {
            "model": self.view.model,
            "pinned": self.view.version,
            "policy_model": self.view.policy_model,
            "since": why.changed_at.isoformat() if why else None,
            "action": why.action if why else None,
            "by": why.by if why else None,
            "reason": why.reason if why else "the pipeline's initial champion",
            "evidence": why.evidence if why else None,
        }

    async def run(self) -> None:
        """Follow the topic from its beginning, for as long as the service runs."""
        assert self.consumer is not None
        while True:
            try:
                await self._follow(self.consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following %s failed; retrying in %.0f s", self.topic, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        assigned = []
        for topic in filter(None, (self.topic, self.champions, self.alerts)):
            partitions = await partitions_of(self.bootstrap_servers, topic, self.auth)
            assigned += [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        self.view, self.actions = ChampionView(self.initial), deque(maxlen=HISTORY)
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    if record.value is not None:
                        self._take(record)

    def _take(self, record: ConsumerRecord) -> None:
        if record.topic == self.champions:
            change = decode_change(record)
            if change is not None:
                self.view.apply(change)
            return
        try:
            if record.topic == self.alerts:
                alert = Alert.model_validate_json(record.value)
                if alert.detector.startswith("training"):
                    self.actions.append(alert)
            else:
                self.add(ModelPublished.model_validate_json(record.value))
        except ValidationError as error:
            log.warning("invalid message on %s: %s", record.topic, error)
