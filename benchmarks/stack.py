"""The bench's own slice of the stack: topics under a fresh prefix, services as child processes.

Kafka and Redis are the local ones (`make infra`); every run gets a unique topic
prefix, consumer groups and Redis namespace, so a bench never disturbs `make up`'s
stack or an earlier run. Services are started with `python -m services.<name>` on
ports away from the fixed ones and stopped (SIGTERM, then SIGKILL) at the end.
A run's topics and keys stay until the next `make bench` starts: `clear_earlier_runs`
deletes them (thousands of leftover partitions slow the broker down).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from shared.acls import Groups, run_provision
from shared.kafka_auth import KafkaAuth
from shared.settings import local_redis_url

__all__ = [
    "ADMIN_KAFKA",
    "BenchStack",
    "Service",
    "clear_earlier_runs",
    "process_cpu_seconds",
    "read_metrics",
]

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL") or local_redis_url()
# The bench's own clients are Kafka's admin; each service it starts is its own principal.
ADMIN_KAFKA = KafkaAuth.local("admin").aiokafka()
PORTS = {
    "ingestion": 18101,
    "features": 18166,
    "training": 18103,
    "serving": 18100,
    "monitoring": 18102,
}

# The prefixes bench runs use (BenchStack's and benchmarks.http's seeded serving).
_RUN_PREFIX = re.compile(r"^(bench|httpbench)[0-9a-f]{6}\.")


def clear_earlier_runs() -> tuple[int, int]:
    """Delete the Kafka topics and Redis keys of earlier bench runs; how many of each.

    Every run's, so also those of a bench still running beside this one.
    """
    return asyncio.run(_clear())


async def _clear() -> tuple[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if _RUN_PREFIX.match(t)]
        for i in range(0, len(topics), 200):
            await admin.delete_topics(topics[i : i + 200], timeout_ms=60_000)
    finally:
        await admin.close()
    redis = Redis.from_url(REDIS_URL)
    deleted, batch = 0, []
    try:
        async for key in redis.scan_iter(match="driftline:*bench*", count=10_000):
            if _RUN_PREFIX.match(key.decode(errors="replace").removeprefix("driftline:")):
                batch.append(key)
            if len(batch) >= 10_000:
                deleted += await redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await redis.unlink(*batch)
    finally:
        await redis.aclose()
    return len(topics), deleted


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def read_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {"name{labels}": value} (labels exactly as printed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_children(int(child))]
    return found


def _peak_rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def process_cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Service:
    """One running `python -m services.<name>` child process."""

    def __init__(self, name: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.port = port
        self.process = process
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def metrics(self) -> dict[str, float]:
        return read_metrics(httpx.get(f"{self.url}/metrics", timeout=5).text)

    def metric(self, name: str) -> float:
        """The sum of every sample of `name` (all label sets)."""
        total = 0.0
        for key, value in self.metrics().items():
            if key == name or key.startswith(name + "{"):
                total += value
        return total

    def peak_rss(self) -> int:
        """Peak resident memory (VmHWM) of the process plus that of its children, bytes."""
        return sum(_peak_rss(pid) for pid in [self.process.pid, *_children(self.process.pid)])

    def cpu_seconds(self) -> float:
        """CPU time used so far by the process and its live children."""
        return sum(
            process_cpu_seconds(pid) for pid in [self.process.pid, *_children(self.process.pid)]
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class BenchStack:
    """Services of one bench run, isolated by `prefix`."""

    work = ROOT / ".bench"

    def __init__(self, pipeline: Path, tag: str = "bench") -> None:
        self.prefix = f"{tag}{uuid.uuid4().hex[:6]}."
        self.pipeline = pipeline
        self.ports = dict(PORTS)  # another set lets two benches run side by side
        self.services: dict[str, Service] = {}
        self.logs = ROOT / ".bench" / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def provision(self, partitions: int = 3) -> None:
        """The run's topics, and each service's ACLs on them and on its group."""
        groups = Groups(*(f"{self.prefix}driftline-{name}" for name in Groups.__dataclass_fields__))
        run_provision(BOOTSTRAP, ADMIN_KAFKA, self.prefix, groups, partitions)

    def env(self, name: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=BOOTSTRAP,
            REDIS_URL=REDIS_URL,
            PIPELINE_CONFIG=str(self.pipeline),
            TOPIC_PREFIX=self.prefix,
            PORT=str(self.ports[name]),
            GROUP_ID=f"{self.prefix}driftline-{name}",
            INGESTION_GROUP_ID=f"{self.prefix}driftline-ingestion",
            FEATURES_GROUP_ID=f"{self.prefix}driftline-features",
            TRAINING_GROUP_ID=f"{self.prefix}driftline-training",
            SERVING_GROUP_ID=f"{self.prefix}driftline-serving",
            LOG_LEVEL="WARNING",
            **extra,
        )
        if name == "features":
            env["DATA_DIR"] = str(ROOT / ".bench" / "data" / self.prefix)
        return env

    def start(self, name: str, **extra: str) -> Service:
        log = self.logs / f"{self.prefix}{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=self.env(name, **extra),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        service = Service(name, self.ports[name], process, log)
        self.services[name] = service
        self._wait_healthy(service)
        if name in os.environ.get("BENCH_PROFILE", "").split(","):  # stacks, for a flame graph
            out = self.logs / f"{self.prefix}{name}.profile.txt"
            profile = [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(process.pid),
                "--format",
                "raw",
            ]
            subprocess.Popen(
                [*profile, "--duration", "30", "-o", str(out)], stdout=subprocess.DEVNULL
            )
        return service

    def _wait_healthy(self, service: Service, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited; see {service.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"{service.name} not healthy in {timeout_s:.0f} s; see {service.log}")

    def wait_ready(self, service: Service, timeout_s: float = 90) -> None:
        """Until `service` answers `/readyz` 200 (serving: a champion is loaded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{service.name} not ready in {timeout_s:.0f} s; see {service.log}")

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[BenchStack]:
        try:
            yield self
        finally:
            self.stop()
