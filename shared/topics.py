"""The topics of DESIGN.md, and the code that creates them with the admin client.

`python -m shared.topics` (as `admin`: `make topics` sets KAFKA_USERNAME; the services may
not create topics) creates every missing topic (partition counts from
`TOPIC_PARTITIONS`, names prefixed by `TOPIC_PREFIX`), each with its retention: 72 h
for the streams, 30 days for dead letters and alerts, `models` compacted (the README
gives the disk each needs per day). Existing topics are left as they are, so running
it twice is safe; change a retention with `kafka-configs.sh --alter`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError

from shared.settings import CommonSettings

__all__ = ["TOPICS", "TopicSpec", "Topics", "ensure_topics", "partitions_of"]

log = logging.getLogger(__name__)

Auth = Mapping[str, Any]  # a principal's client options (`CommonSettings.kafka()`)

DLQ_MAX_BYTES = 8 * 1024 * 1024  # a 4 MiB refused message, base64-encoded, fits
HOUR_MS = 3600 * 1000
# How long the streams are kept: a consumer away over a long weekend still finds what
# it missed, and 72 h covers any label TTL up to it (training re-reads the vectors of
# waiting predictions after a restore). Operators read dead letters and alerts later.
STREAM_RETENTION_MS = 72 * HOUR_MS
KEEP_LONGER_MS = 30 * 24 * HOUR_MS


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its base name, and whether it keeps state (compacted)."""

    name: str
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)


def _kept(ms: int, **configs: str) -> dict[str, str]:
    return {"retention.ms": str(ms), "retention.bytes": "-1", **configs}


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("events.raw", configs=_kept(STREAM_RETENTION_MS)),
    TopicSpec("labels.raw", configs=_kept(STREAM_RETENTION_MS)),
    TopicSpec("events", configs=_kept(STREAM_RETENTION_MS)),
    TopicSpec("labels", configs=_kept(STREAM_RETENTION_MS)),
    TopicSpec(
        "ingest.dlq", configs=_kept(KEEP_LONGER_MS, **{"max.message.bytes": str(DLQ_MAX_BYTES)})
    ),
    TopicSpec("features", configs=_kept(STREAM_RETENTION_MS)),
    TopicSpec("predictions", configs=_kept(STREAM_RETENTION_MS)),
    TopicSpec("models", compacted=True),  # latest version per model name is state
    TopicSpec("alerts", configs=_kept(KEEP_LONGER_MS)),
    # every change of champion, kept for good: the audit trail (a few per day)
    TopicSpec("champions", configs=_kept(-1)),
)


@dataclass(frozen=True)
class Topics:
    """Topic names as a service sees them (with the configured prefix)."""

    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def events_raw(self) -> str:
        return self.name("events.raw")

    @property
    def labels_raw(self) -> str:
        return self.name("labels.raw")

    @property
    def events(self) -> str:
        return self.name("events")

    @property
    def labels(self) -> str:
        return self.name("labels")

    @property
    def dlq(self) -> str:
        return self.name("ingest.dlq")

    @property
    def features(self) -> str:
        return self.name("features")

    @property
    def predictions(self) -> str:
        return self.name("predictions")

    @property
    def models(self) -> str:
        return self.name("models")

    @property
    def alerts(self) -> str:
        return self.name("alerts")

    @property
    def champions(self) -> str:
        return self.name("champions")


def _new_topic(spec: TopicSpec, prefix: str, partitions: int) -> NewTopic:
    configs = dict(spec.configs)
    if spec.compacted:
        configs["cleanup.policy"] = "compact"
    return NewTopic(
        name=f"{prefix}{spec.name}",
        num_partitions=partitions,
        replication_factor=1,
        topic_configs=configs,
    )


async def ensure_topics(
    bootstrap_servers: str, prefix: str = "", partitions: int = 3, auth: Auth | None = None
) -> list[str]:
    """Create every missing topic of `TOPICS`; return the names it created.

    A principal sees and may create only some (a service: none; `admin`: all): the
    topics it may not create are left to `make topics` (as admin), and logged."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(auth or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            _new_topic(spec, prefix, partitions)
            for spec in TOPICS
            if f"{prefix}{spec.name}" not in existing
        ]
        created, denied = [], []
        for topic in wanted:  # one by one: a concurrent creator only costs a retry
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
            except TopicAuthorizationFailedError:
                denied.append(topic.name)
        if denied:
            # Metadata lists only the topics a principal may describe: these may exist.
            log.info("topics not ours to create (make topics creates them): %s", denied)
        return created
    finally:
        await admin.close()


async def partitions_of(bootstrap_servers: str, topic: str, auth: Auth | None = None) -> list[int]:
    """The partition numbers of an existing topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(auth or {}))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


def main() -> None:
    settings = CommonSettings()
    logging.basicConfig(level="INFO", format="%(message)s")
    created = asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap_servers,
            settings.topic_prefix,
            settings.topic_partitions,
            settings.kafka(),
        )
    )
    log.info("topics: created %s", ", ".join(created) if created else "none (all exist)")


if __name__ == "__main__":
    main()
