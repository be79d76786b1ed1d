"""Helpers for integration and end-to-end tests: service subprocesses, kcat.

Tests are Kafka's `admin` (they publish to any topic, and create topics and ACLs);
the services they start are each its own principal, granted its ACLs for the test's
prefix by `provision`.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.acls import Groups, run_provision
from shared.http_keys import bearer
from shared.kafka_auth import KafkaAuth
from shared.settings import local_redis_url
from shared.signing import SigningKey, local_signing_key

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL") or local_redis_url()
WRITER = bearer("writer")  # headers for POST /events and /labels
READER = bearer("reader")  # headers for POST /predict
API = bearer("api")  # headers for serving's /admin endpoints (the API key)


def _signing_key() -> SigningKey:
    """The key the services started here sign and verify with: the environment's or
    `.secrets/signing_key`; with neither (no `make secrets` yet), one made for this run
    and put into the environment that services started here inherit."""
    key = local_signing_key()
    if key is None:
        os.environ["DRIFTLINE_SIGNING_KEY"] = secrets.token_urlsafe(32)
        key = local_signing_key()
        assert key is not None
    return key


SIGNING_KEY = _signing_key()  # what tests sign the artifacts they write with


class RunsCode:
    """Unpickled, this runs a shell command that creates `marker`: what an attacker who
    can write to Redis would store in place of a model or a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def crafted_pickle(marker: Path) -> bytes:
    """A pickle whose loading creates the file `marker` (see `RunsCode`)."""
    return pickle.dumps(RunsCode(marker))


ADMIN = KafkaAuth.local("admin")
ADMIN_KAFKA = ADMIN.aiokafka()  # aiokafka options of the tests' own clients


def kcat_config(principal: str) -> str:
    """A kcat `-F` file (mode 600, this process's) with `principal`'s credentials
    ("anonymous": none)."""
    auth = KafkaAuth(principal, None) if principal == "anonymous" else KafkaAuth.local(principal)
    path = _KCAT_CONFIGS.get(principal)
    if path is None:
        fd, path = tempfile.mkstemp(prefix=f"kcat-{principal}-", suffix=".conf")
        with open(fd, "w") as f:
            f.write(auth.kcat_config())
        atexit.register(os.unlink, path)  # it holds a password: gone with the process
        _KCAT_CONFIGS[principal] = path
    return path


_KCAT_CONFIGS: dict[str, str] = {}


def kcat(principal: str = "admin") -> list[str]:
    """The start of a kcat command line, as `principal`, on the tests' broker."""
    return ["kcat", "-F", kcat_config(principal), "-b", BOOTSTRAP]


def service_groups(prefix: str) -> Groups:
    """The consumer groups `service_factory` gives the services of a test."""
    return Groups(
        ingestion=f"{prefix}ingestion",
        features=f"{prefix}features",
        training=f"{prefix}training",
        serving=f"{prefix}serving",
        monitoring=f"{prefix}monitoring",
    )


def provision(prefix: str, groups: Groups | None = None, partitions: int = 3) -> None:
    """As admin: the topics of `prefix`, and each service's ACLs on them and its group."""
    run_provision(BOOTSTRAP, ADMIN_KAFKA, prefix, groups or service_groups(prefix), partitions)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """`python -m services.<name>` as a real subprocess, log in a file."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServiceProcess:
        env = {**os.environ, **self.env, "PORT": str(self.port)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            if self.healthy():
                return self
            time.sleep(0.3)
        raise TimeoutError(
            f"{self.name} not healthy in {timeout}s: {self.log_path.read_text()[-3000:]}"
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def kcat_produce(
    topic: str, messages: Sequence[tuple[bytes | None, bytes | None]], principal: str = "admin"
) -> None:
    """Publish (key, value) pairs with kcat, as `principal`; a None value is a null
    (tombstone)."""
    payload = b"".join((k or b"") + b"\t" + (v or b"") + b"\x1e" for k, v in messages)
    subprocess.run(
        [*kcat(principal), "-P", "-t", topic, "-K", "\t", "-D", "\\x1e", "-Z"],
        input=payload,
        check=True,
    )


def kcat_read(topic: str) -> list[dict[str, Any]]:
    """Every message on a topic so far, as kcat's JSON envelopes."""
    result = subprocess.run(
        [*kcat(), "-C", "-t", topic, "-e", "-q", "-J", "-Z"],
        capture_output=True,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def wait_for_count(
    topics: list[str], expected: int, timeout: float = 90
) -> dict[str, list[dict[str, Any]]]:
    """Read the topics until together they hold `expected` messages (or time out)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {t: kcat_read(t) for t in topics}
        total = sum(len(v) for v in found.values())
        if total >= expected or time.monotonic() > deadline:
            return found
        time.sleep(1)


def metric_value(
    service: ServiceProcess, name: str, default: float | None = None, **labels: str
) -> float:
    """The sample of `name` on the service's /metrics whose labels include `labels`."""
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if match and labels.items() <= dict(re.findall(r'(\w+)="([^"]*)"', match[1] or "")).items():
            return float(match[2])
    if default is not None:
        return default
    raise AssertionError(f"{name} {labels} not in /metrics")


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that keeps each POSTed body (a thread serves it).

    The first `fail_first` requests get 503, as a receiver that is briefly away.
    """

    def __init__(self, fail_first: int = 0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        self.bodies: list[bytes] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests += 1
                if receiver.requests <= fail_first:
                    self.send_response(503)
                else:
                    receiver.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return [json.loads(body) for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
