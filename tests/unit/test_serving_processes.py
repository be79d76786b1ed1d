"""Serving's supervisor: children restarted when they exit, all stopped on SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from services.serving.processes import ChildSpec, StreamStatus, Supervisor


def _exit_at_once(marker: str) -> None:
    with open(marker, "a") as out:
        out.write(f"{os.getpid()}\n")
    os._exit(3)


def _run_until_terminated(marker: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with open(marker, "a") as out:
        out.write(f"{os.getpid()}\n")
    while True:
        time.sleep(0.05)


def test_a_child_that_exits_is_restarted_and_a_stop_ends_them_all(tmp_path: Path) -> None:
    crashing, steady = tmp_path / "crashing", tmp_path / "steady"
    status = StreamStatus(enabled=True)
    supervisor = Supervisor(
        [
            ChildSpec("crashing", _exit_at_once, (str(crashing),), status.count_restart),
            ChildSpec("steady", _run_until_terminated, (str(steady),)),
        ]
    )
    stopper = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGTERM))
    stopper.start()
    try:
        assert supervisor.run() == 0
    finally:
        stopper.cancel()
    starts = crashing.read_text().split()
    assert len(starts) >= 2 and len(set(starts)) == len(starts)  # a new process each time
    assert status.restarts == len(starts) - 1
    assert len(steady.read_text().split()) == 1  # never restarted
    assert all(c.process is None or not c.process.is_alive() for c in supervisor.children)
