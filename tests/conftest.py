"""Fixtures on the real stack: Kafka and Redis started through the Makefile (or reused),
unique topic prefixes per test, and services run as real subprocesses.

Factories in the style of Quix Streams' tests: `prefix` gives each test its own
topics and consumer groups on the one shared broker; `service_factory` starts
`python -m services.<name>` on a free port with that prefix.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support import BOOTSTRAP, REDIS_URL, ROOT, ServiceProcess, kcat, provision


def _kafka_answers() -> bool:
    probe = subprocess.run([*kcat(), "-L", "-m", "2"], capture_output=True)
    return probe.returncode == 0


def _redis_answers() -> bool:
    probe = subprocess.run(["redis-cli", "-u", REDIS_URL, "ping"], capture_output=True, text=True)
    return probe.stdout.strip() == "PONG"


@pytest.fixture(scope="session")
def stack() -> None:
    """Kafka and Redis answering: reuse running ones, else `make infra`."""
    if not (_kafka_answers() and _redis_answers()):
        subprocess.run(["make", "-s", "infra"], cwd=ROOT, check=True)
    assert _kafka_answers(), f"no Kafka broker answers on {BOOTSTRAP}"
    assert _redis_answers(), f"no Redis answers on {REDIS_URL}"


@pytest.fixture
async def redis(stack: None) -> AsyncIterator[Redis]:
    """A client of the stack's Redis (bytes in, bytes out)."""
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def prefix(stack: None) -> str:
    """A topic prefix (and consumer group suffix) no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


LOG_TAIL_LINES = 40
_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def service_factory(
    prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServiceProcess]]:
    """Starts services, each as its own Kafka principal with its ACLs for this test's
    topics (made first, as admin); on a failed test, the tail of each one's log joins
    the report (CI keeps nothing else of them)."""
    provision(prefix)
    started: list[ServiceProcess] = []

    def make(name: str, **env: str) -> ServiceProcess:
        base = {
            "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
            "REDIS_URL": REDIS_URL,
            "TOPIC_PREFIX": prefix,
            "GROUP_ID": f"{prefix}{name}",
            # the groups a learner asks how far ingestion and features are
            "INGESTION_GROUP_ID": f"{prefix}ingestion",
            "FEATURES_GROUP_ID": f"{prefix}features",
            "TRAINING_GROUP_ID": f"{prefix}training",
            "SERVING_GROUP_ID": f"{prefix}serving",
            "LOG_LEVEL": "INFO",
        }
        service = ServiceProcess(name, {**base, **env}, tmp_path / f"{name}.log")
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()
    if request.node.stash.get(_FAILED, False):
        for service in started:
            if service.log_path.exists():
                lines = service.log_path.read_text(errors="replace").splitlines()
                tail = "\n".join(lines[-LOG_TAIL_LINES:])
                request.node.add_report_section("teardown", f"{service.name} log", tail)
