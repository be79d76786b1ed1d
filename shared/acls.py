"""Who may do what on Kafka: the ACLs of each principal, least privilege.

The broker allows nothing without an ACL (`allow.everyone.if.no.acl.found=false`);
`admin` is its one super user. Each service reads and writes only the topics and
consumer groups DESIGN.md's flow gives it, and may describe (see offsets of, not read)
the topics and groups it watches for lag. The outside `producer` may only write
`events.raw` and `labels.raw`; the `operator` may read every topic and group.

Topic grants are for one topic prefix (`TOPIC_PREFIX`: tests and tenants share a
broker), each a LITERAL name, except the features service's own faust topics
(changelogs, assignor), PREFIXED by its app id. `python -m shared.acls` (run by
`scripts/stack.sh infra`, as `admin`) grants them; granting twice is harmless.

>>> [g.describe() for g in grants("", Groups()) if g.principal == "producer"]
['producer: write topic events.raw', 'producer: write topic labels.raw']
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest, CreateAclsRequest_v1

from shared.settings import CommonSettings
from shared.topics import TOPICS, ensure_topics

__all__ = [
    "AclSettings",
    "Grant",
    "Groups",
    "ensure_acls",
    "grants",
    "provision",
    "run_provision",
]

log = logging.getLogger(__name__)

# Kafka's wire codes (org.apache.kafka.common.acl / resource)
_RESOURCE = {"topic": 2, "group": 3, "cluster": 4}
_OPERATION = {"all": 2, "read": 3, "write": 4, "describe": 8, "describe_configs": 10}
_LITERAL, _PREFIXED, _ALLOW = 3, 4, 3

ALL_TOPICS = tuple(spec.name for spec in TOPICS)


@dataclass(frozen=True)
class Grant:
    """`principal` may `operation` on the `resource` named `name` (or every name that
    starts with it, when `prefixed`). READ and WRITE imply DESCRIBE."""

    principal: str
    operation: str
    resource: str
    name: str
    prefixed: bool = False

    def describe(self) -> str:
        name = f"{self.name}*" if self.prefixed else self.name
        return f"{self.principal}: {self.operation} {self.resource} {name}"


@dataclass(frozen=True)
class Groups:
    """The consumer group of each service (their GROUP_IDs; features: its app id)."""

    ingestion: str = "driftline-ingestion"
    features: str = "driftline-features"
    training: str = "driftline-training"
    serving: str = "driftline-serving"
    monitoring: str = "driftline-monitoring"


def grants(prefix: str, groups: Groups) -> list[Grant]:
    """Every ACL of the stack whose topics carry `prefix`."""
    out: list[Grant] = []

    def allow(principal: str, operation: str, resource: str, *names: str) -> None:
        out.extend(Grant(principal, operation, resource, name) for name in names)

    def topics(*names: str) -> tuple[str, ...]:
        return tuple(f"{prefix}{name}" for name in names)

    upstream = topics("events.raw", "labels.raw", "events")  # the learner's lag check
    allow("ingestion", "read", "topic", *topics("events.raw", "labels.raw"))
    allow(  # POST /events and /labels publish the raw topics too
        "ingestion", "write", "topic", *topics("events.raw", "labels.raw", "events", "labels")
    )
    allow("ingestion", "write", "topic", *topics("ingest.dlq"))
    allow("ingestion", "read", "group", groups.ingestion)

    allow("features", "read", "topic", *topics("events"))
    allow("features", "write", "topic", *topics("features"))
    allow("features", "read", "group", groups.features)
    out.append(Grant("features", "all", "topic", f"{groups.features}-", prefixed=True))

    for learner, group in (("training", groups.training), ("serving", groups.serving)):
        allow(learner, "read", "topic", *topics("features", "labels"))
        allow(learner, "read", "group", group)
        allow(learner, "describe", "topic", *upstream)
        allow(learner, "describe", "group", groups.ingestion, groups.features)
    allow("training", "write", "topic", *topics("predictions", "models", "alerts", "champions"))
    allow("training", "read", "topic", *topics("champions"))  # its champion, at start
    allow("serving", "read", "topic", *topics("models", "champions"))
    allow("serving", "write", "topic", *topics("predictions"))
    allow("serving", "write", "topic", *topics("champions"))  # operators' pins, audited

    allow(
        "monitoring",
        "read",
        "topic",
        *topics("predictions", "labels", "features", "models", "champions"),
    )
    allow("monitoring", "read", "topic", *topics("alerts"))  # restored at start
    allow("monitoring", "write", "topic", *topics("alerts"))
    allow("monitoring", "describe", "topic", *topics(*ALL_TOPICS))  # the lag watch
    allow("monitoring", "read", "group", groups.monitoring)
    allow(
        "monitoring",
        "describe",
        "group",
        groups.ingestion,
        groups.features,
        groups.training,
        groups.serving,
    )

    allow("producer", "write", "topic", *topics("events.raw", "labels.raw"))

    allow("operator", "read", "topic", "*")
    allow("operator", "describe_configs", "topic", "*")
    allow("operator", "read", "group", "*")
    allow("operator", "describe", "cluster", "kafka-cluster")
    return out


class _CreateAcls(CreateAclsRequest):
    """One CreateAcls request carrying many bindings (aiokafka's carries one)."""

    def __init__(self, grants: Iterable[Grant]) -> None:
        self.rows = [
            (
                _RESOURCE[g.resource],
                g.name,
                _PREFIXED if g.prefixed else _LITERAL,
                f"User:{g.principal}",
                "*",
                _OPERATION[g.operation],
                _ALLOW,
            )
            for g in grants
        ]

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class.API_VERSION < 1:
            request_struct_class = CreateAclsRequest_v1  # brokers since 2.0 take v1
        return request_struct_class(self.rows)


async def ensure_acls(bootstrap: str, auth: Mapping[str, Any], wanted: list[Grant]) -> None:
    """Create the bindings of `wanted` (as `admin`); raise if the broker refuses one."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="driftline-acls", **auth)
    await admin.start()
    try:
        response = await admin._send_request(_CreateAcls(wanted))
        failed = [
            f"{grant.describe()}: {message or code}"
            for grant, (code, message) in zip(wanted, response.creation_responses, strict=True)
            if code
        ]
        if failed:
            raise RuntimeError("the broker refused ACLs: " + "; ".join(failed))
    finally:
        await admin.close()


async def provision(
    bootstrap: str, auth: Mapping[str, Any], prefix: str, groups: Groups, partitions: int = 3
) -> None:
    """As `admin`: the topics of `prefix`, and every principal's ACLs on them (tests and
    benchmarks, each on its own prefix, before they start services)."""
    await ensure_topics(bootstrap, prefix, partitions, auth)
    await ensure_acls(bootstrap, auth, grants(prefix, groups))


def run_provision(
    bootstrap: str, auth: Mapping[str, Any], prefix: str, groups: Groups, partitions: int = 3
) -> None:
    """`provision` from synchronous code, inside a running event loop or not."""
    job = provision(bootstrap, auth, prefix, groups, partitions)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(job)
        return
    worker = threading.Thread(target=asyncio.run, args=(job,))
    worker.start()
    worker.join()


class AclSettings(CommonSettings):
    """`python -m shared.acls`: as `admin`, for the groups the services are given."""

    kafka_username: str = "admin"
    group_id: str = ""  # unused here; services' GROUP_ID
    training_group_id: str = "driftline-training"
    serving_group_id: str = "driftline-serving"
    monitoring_group_id: str = "driftline-monitoring"

    def groups(self) -> Groups:
        return Groups(
            ingestion=self.ingestion_group_id,
            features=self.features_group_id or f"{self.topic_prefix}driftline-features",
            training=self.training_group_id,
            serving=self.serving_group_id,
            monitoring=self.monitoring_group_id,
        )


def main() -> None:
    settings = AclSettings()
    logging.basicConfig(level="INFO", format="%(message)s")
    wanted = grants(settings.topic_prefix, settings.groups())
    asyncio.run(ensure_acls(settings.kafka_bootstrap_servers, settings.kafka(), wanted))
    log.info("acls: %d bindings for %d principals", len(wanted), len({g.principal for g in wanted}))


if __name__ == "__main__":
    main()
