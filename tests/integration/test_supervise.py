"""`make up`'s supervisor (`scripts/stack.sh supervise`): a service that dies is started
again with no operator, and `down` stops the supervisor and the service it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support import BOOTSTRAP, REDIS_URL, ROOT, free_port, provision


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_service_is_restarted_and_down_stops_everything(
    prefix: str, tmp_path: Path
) -> None:
    port, run = free_port(), tmp_path / "run"
    provision(prefix)  # ingestion's topics and ACLs: it runs as its own principal
    env = {
        **os.environ,
        "RUN_DIR": str(run),
        "PORT": str(port),
        "TOPIC_PREFIX": prefix,
        "GROUP_ID": f"{prefix}ingestion",
        "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "REDIS_URL": REDIS_URL,
    }

    def stack(*args: str) -> None:
        subprocess.run(
            ["bash", "scripts/stack.sh", *args], cwd=ROOT, env=env, check=True, timeout=120
        )

    stack("service", "ingestion", str(port))
    supervisor = int((run / "ingestion.pid").read_text())
    first = int((run / "ingestion.child").read_text())
    try:
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        second = first
        while time.monotonic() < deadline:
            second = int((run / "ingestion.child").read_text())
            if second != first and _healthy(port):
                break
            time.sleep(0.3)
        assert second != first, "the supervisor did not start the service again"
        assert _healthy(port)
        log = (run / "ingestion.log").read_text()
        assert "[supervise] ingestion exited with 137; starting it again in 1s" in log
    finally:
        stack("down")
    assert not _alive(supervisor) and not _alive(second)
    assert not (run / "ingestion.pid").exists() and not (run / "ingestion.child").exists()
