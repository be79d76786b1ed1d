"""Who may do what on the real broker, tried with kcat (a client we did not write).

The expected rights are written out here from DESIGN.md's flow, not read from
`shared.acls`: a grant too many or too few there fails this test.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import GroupAuthorizationFailedError

from shared.kafka_auth import KafkaAuth
from shared.topics import TOPICS
from tests.support import BOOTSTRAP, kcat, provision

pytestmark = pytest.mark.integration

ALL = tuple(spec.name for spec in TOPICS)
WRITES = {
    "ingestion": {"events.raw", "labels.raw", "events", "labels", "ingest.dlq"},
    "features": {"features"},
    "training": {"predictions", "models", "alerts", "champions"},
    "serving": {"predictions", "champions"},
    "monitoring": {"alerts"},
    "producer": {"events.raw", "labels.raw"},
    "operator": set(),
}
READS = {
    "ingestion": {"events.raw", "labels.raw"},
    "features": {"events"},
    "training": {"features", "labels", "champions"},
    "serving": {"features", "labels", "models", "champions"},
    "monitoring": {"predictions", "labels", "features", "models", "alerts", "champions"},
    "producer": set(),
    "operator": set(ALL),
}


def _produce(principal: str, topic: str) -> bool:
    """Whether kcat as `principal` could write one message to `topic`."""
    done = subprocess.run(
        [*kcat(principal), "-P", "-t", topic, "-K", "\t", "-X", "message.timeout.ms=8000"],
        input=b'intruder\t{"event_id": "intruder"}\n',  # keyed: `models` is compacted
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0


def _consume(principal: str, topic: str) -> bool:
    """Whether kcat as `principal` could read `topic` to its end."""
    done = subprocess.run(
        [*kcat(principal), "-C", "-t", topic, "-e", "-q", "-m", "10"],
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0


def _rights(principal: str, prefix: str) -> tuple[set[str], set[str]]:
    """The topics `principal` could write, and those it could read."""
    with ThreadPoolExecutor(4) as pool:
        wrote = dict(
            zip(ALL, pool.map(lambda t: _produce(principal, prefix + t), ALL), strict=True)
        )
        read = dict(zip(ALL, pool.map(lambda t: _consume(principal, prefix + t), ALL), strict=True))
    return {t for t, ok in wrote.items() if ok}, {t for t, ok in read.items() if ok}


@pytest.fixture
def granted(prefix: str) -> str:
    """The topics of `prefix`, with every principal's ACLs on them."""
    provision(prefix)
    return prefix


def test_a_client_without_credentials_reaches_no_topic(granted: str) -> None:
    assert _rights("anonymous", granted) == (set(), set())


def test_a_wrong_password_is_refused(granted: str, tmp_path: Path) -> None:
    conf = tmp_path / "wrong.conf"
    conf.write_text(KafkaAuth("producer", "not-the-password").kcat_config())
    done = subprocess.run(
        ["kcat", "-F", str(conf), "-b", BOOTSTRAP, "-P", "-t", f"{granted}events.raw"],
        input=b"{}\n",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"Authentication failed" in done.stderr


def test_the_outside_producer_may_only_write_the_raw_topics(granted: str) -> None:
    wrote, read = _rights("producer", granted)
    assert wrote == {"events.raw", "labels.raw"}
    assert read == set(), "the outside producer reads nothing"


@pytest.mark.parametrize(
    "principal", ["ingestion", "features", "training", "serving", "monitoring"]
)
def test_each_service_is_refused_outside_its_topics(granted: str, principal: str) -> None:
    assert _rights(principal, granted) == (WRITES[principal], READS[principal])


def test_the_operator_reads_everything_and_writes_nothing(granted: str) -> None:
    assert _rights("operator", granted) == (set(), set(ALL))


async def test_a_service_may_not_use_another_services_group(granted: str) -> None:
    """Training's principal reading `features` in serving's group: refused."""
    consumer = AIOKafkaConsumer(
        f"{granted}features",
        bootstrap_servers=BOOTSTRAP,
        group_id=f"{granted}serving",
        **KafkaAuth.local("training").aiokafka(),
    )
    with pytest.raises(GroupAuthorizationFailedError):
        await consumer.start()
        await consumer.getmany(timeout_ms=5000)
        await consumer.commit()
    await consumer.stop()
