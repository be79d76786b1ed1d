"""The SASL_SSL listener for clients off the host (KAFKA_TLS_BOOTSTRAP, 127.0.0.1:9094
by default): as the README tells such a client to connect, with kcat and with Python."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka_auth import SECRETS_DIR, KafkaAuth
from tests.support import provision

pytestmark = pytest.mark.integration

TLS_BOOTSTRAP = os.environ.get("KAFKA_TLS_BOOTSTRAP", "127.0.0.1:9094")
CA = str(SECRETS_DIR / "kafka_ca.crt")


def _tls(principal: str, ca: str = CA) -> KafkaAuth:
    return KafkaAuth(principal, KafkaAuth.local(principal).password, ca)


def _kcat(conf: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["kcat", "-F", str(conf), "-b", TLS_BOOTSTRAP, *args],
        input=data,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def granted(prefix: str) -> str:
    provision(prefix)
    return prefix


def test_kcat_writes_over_tls_with_the_local_ca(granted: str, tmp_path: Path) -> None:
    conf = tmp_path / "producer.conf"
    conf.write_text(_tls("producer").kcat_config())
    assert "security.protocol=sasl_ssl" in conf.read_text()
    wrote = _kcat(conf, "-P", "-t", f"{granted}events.raw", "-K", "\t", data=b"u1\t{}\n")
    assert wrote.returncode == 0, wrote.stderr
    refused = _kcat(conf, "-P", "-t", f"{granted}events", "-K", "\t", data=b"u1\t{}\n")
    assert refused.returncode != 0, "the same ACLs over TLS"


def test_a_client_that_does_not_trust_the_ca_is_refused(granted: str, tmp_path: Path) -> None:
    stranger = tmp_path / "other-ca.crt"  # a CA of its own: not the one that signed the broker
    key = str(tmp_path / "other-ca.key")
    request = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=other",
    ]
    subprocess.run(
        [*request, "-keyout", key, "-out", str(stranger)],
        check=True,
        capture_output=True,
    )
    conf = tmp_path / "producer.conf"
    conf.write_text(_tls("producer", str(stranger)).kcat_config())
    done = _kcat(conf, "-L", "-m", "10")
    assert done.returncode != 0
    assert b"certificate verify failed" in done.stderr


def test_plaintext_sasl_is_refused_on_the_tls_port(granted: str, tmp_path: Path) -> None:
    conf = tmp_path / "plain.conf"
    conf.write_text(KafkaAuth.local("producer").kcat_config())  # SASL without TLS
    done = _kcat(conf, "-L", "-m", "10")
    assert done.returncode != 0


async def test_python_produces_and_reads_over_tls(granted: str) -> None:
    """aiokafka with `KafkaAuth.aiokafka()`, as the README's Python example."""
    topic = f"{granted}events.raw"
    producer = AIOKafkaProducer(bootstrap_servers=TLS_BOOTSTRAP, **_tls("producer").aiokafka())
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b'{"event_id": "tls"}', key=b"u1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=TLS_BOOTSTRAP, **_tls("operator").aiokafka())
    await consumer.start()
    try:
        tp = TopicPartition(topic, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        assert [r.value for r in batch[tp]][:1] == [b'{"event_id": "tls"}']
    finally:
        await consumer.stop()
