"""Serving's processes: HTTP workers and the stream scorer, started and kept running by one parent.

`python -m services.serving` is a small supervisor. It binds the HTTP socket once,
then starts (with the `spawn` method, so each child is a fresh interpreter):

- `workers` HTTP worker processes, each a uvicorn server on the shared socket (the
  kernel hands each connection to one of them), each with its own groupless
  `models` reader that hot-swaps the champion;
- one stream scorer process, consuming `features` in the `driftline-serving` group.

Scoring the stream thus never competes with HTTP for an event loop (nor, beyond
the machine's cores, for CPU). The supervisor restarts any child that exits
(after 1 s, doubling up to 30 s while it keeps failing within a minute of its
start) and stops them all on SIGTERM or SIGINT: SIGTERM to each child, which
finishes what it has in hand (a scorer batch, open requests), then SIGKILL for
any still running after `STOP_TIMEOUT_S`. Each child asks the kernel to kill it
when its parent dies, so a `kill -9` of the service takes every process with it,
as it did when serving was one process.

Children share a `StreamStatus` (shared memory): the scorer writes the deadline by
which it must poll again, the supervisor counts its restarts, and every HTTP
worker's `/healthz` answers 503 once the deadline has passed (a scorer that is
stuck, or crashes again on every restart). Metrics of all children are merged by
prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, a fresh
temporary directory unless set).

`ChildSpec` and `Supervisor` know nothing of serving: `benchmarks.http` runs its bare
FastAPI baseline with the same `run_http_worker` and `Supervisor`, so both are
measured under the same server and number of workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import RawArray
from types import FrameType
from typing import Any

from shared import tasks

__all__ = [
    "METRICS_DIR_ENV",
    "ChildSpec",
    "ServerOptions",
    "StreamStatus",
    "Supervisor",
    "bind_socket",
    "die_with_parent",
    "metrics_dir",
    "run_http_worker",
]

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
STOP_TIMEOUT_S = 30.0  # how long a stop waits for children before killing them
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long restarts after FIRST_BACKOFF_S again

_spawn = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request above
        os._exit(1)


class StreamStatus:
    """What the scorer, the supervisor and the HTTP workers share, in shared memory.

    `deadline`: monotonic time by which the scorer must have polled again (the
    clock is system-wide on Linux, so every process reads the same one);
    `restarts`: how often the supervisor restarted the scorer; `enabled`: whether
    a scorer runs at all (`STREAM_SCORING=false` leaves it out); `pid`: the scorer's.

    >>> status = StreamStatus(enabled=True)
    >>> status.extend(30.0); status.alive(), status.restarts
    (True, 0)
    >>> status.deadline = 0.0; status.alive()
    False
    """

    def __init__(self, enabled: bool = True) -> None:
        self._values: Any = RawArray("d", 4)  # deadline, restarts, enabled, pid
        self._values[2] = 1.0 if enabled else 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._values[2])

    @property
    def deadline(self) -> float:
        return float(self._values[0])

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._values[0] = value

    @property
    def restarts(self) -> int:
        return int(self._values[1])

    @property
    def pid(self) -> int:
        """The running scorer's process id (0 before it starts)."""
        return int(self._values[3])

    @pid.setter
    def pid(self, value: int) -> None:
        self._values[3] = value

    def count_restart(self) -> None:
        self._values[1] += 1

    def extend(self, seconds: float) -> None:
        """The scorer must poll again within `seconds` from now."""
        self._values[0] = time.monotonic() + seconds

    def alive(self) -> bool:
        return not self.enabled or time.monotonic() < self.deadline

    def details(self) -> dict[str, Any]:
        if not self.enabled:
            return {"stream": "disabled"}
        return {
            "stream_deadline_in_s": round(self.deadline - time.monotonic(), 3),
            "stream_restarts": self.restarts,
            "stream_pid": self.pid,
        }


@dataclass(frozen=True)
class ServerOptions:
    """How each HTTP worker runs uvicorn (the same for serving and its bench baseline)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    backlog: int = 2048
    timeout_keep_alive_s: int = 5
    log_level: str = "warning"


def bind_socket(options: ServerOptions) -> socket.socket:
    """The listening socket every HTTP worker accepts on (bound once, by the parent)."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    # proto given: asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP, and
    # without it small responses on kept-alive connections wait for delayed ACKs (40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.host, options.port))
    sock.listen(options.backlog)
    sock.set_inheritable(True)
    return sock


def run_http_worker(
    app_factory: Callable[[], Any],
    options: ServerOptions,
    sock: socket.socket,
    parent_pid: int,
    log_level: str = "INFO",
) -> None:
    """One HTTP worker process: uvicorn serving `app_factory()` on the shared `sock`."""
    import uvicorn

    from shared.logs import configure_logging

    die_with_parent(parent_pid)
    configure_logging(log_level)
    config = uvicorn.Config(
        app_factory(),
        log_level=options.log_level,
        access_log=False,
        timeout_keep_alive=options.timeout_keep_alive_s,
        backlog=options.backlog,
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])
    sys.exit(tasks.exit_status())  # 1: an essential task failed; the supervisor restarts it


@dataclass
class ChildSpec:
    """A child process to keep running: `target(*args)` in a fresh (spawned) interpreter."""

    name: str
    target: Callable[..., None]
    args: tuple[Any, ...] = ()
    on_restart: Callable[[], None] | None = None  # called before each restart
    process: BaseProcess | None = field(default=None, repr=False)
    started_at: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None


class Supervisor:
    """Starts the children, restarts any that exits, stops them all on SIGTERM or SIGINT."""

    def __init__(self, children: list[ChildSpec]) -> None:
        self.children = children
        self.stopping = False

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("stopping on %s", signal.Signals(signum).name)
        self.stopping = True

    def _start(self, child: ChildSpec) -> None:
        process = _spawn.Process(target=child.target, args=child.args, name=child.name)
        process.start()
        child.process = process
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started %s (pid %s)", child.name, process.pid)

    def run(self) -> int:
        """Supervise until stopped; 0 after a requested stop."""
        previous = {
            sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for child in self.children:
                self._start(child)
            while not self.stopping:
                self._tick()
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _tick(self) -> None:
        running = [c.process.sentinel for c in self.children if c.process is not None]
        multiprocessing.connection.wait(running, timeout=0.25)
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is not None and not process.is_alive() and not self.stopping:
                process.join()
                _forget_metrics(process.pid)
                if now - child.started_at >= STABLE_AFTER_S:
                    child.backoff_s = FIRST_BACKOFF_S
                log.error(
                    "%s (pid %s) exited with code %s; restarting in %.0f s",
                    child.name,
                    process.pid,
                    process.exitcode,
                    child.backoff_s,
                )
                child.process = None
                child.restart_at = now + child.backoff_s
                child.backoff_s = min(MAX_BACKOFF_S, child.backoff_s * 2)
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                if child.on_restart is not None:
                    child.on_restart()
                self._start(child)

    def stop(self) -> None:
        """SIGTERM every child, wait up to STOP_TIMEOUT_S, then SIGKILL the rest."""
        alive = [c.process for c in self.children if c.process is not None and c.process.is_alive()]
        for process in alive:
            with contextlib.suppress(OSError):
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("%s did not stop in %.0f s; killing it", process.name, STOP_TIMEOUT_S)
                process.kill()
                process.join()


def _forget_metrics(pid: int | None) -> None:
    """Drop a dead child's live gauges from the merged metrics (counters stay)."""
    if pid is None or not os.environ.get(METRICS_DIR_ENV):
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)


@contextlib.contextmanager
def metrics_dir() -> Iterator[str]:
    """A clean `PROMETHEUS_MULTIPROC_DIR` for this run's children, set in the environment.

    An operator's own directory (the variable already set) is emptied of old files
    and kept; otherwise a temporary one is made and removed at the end. Children
    inherit the variable, so their metrics are file-backed and `/metrics` merges them.
    """
    given = os.environ.get(METRICS_DIR_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        yield given
        return
    made = tempfile.mkdtemp(prefix="driftline-serving-metrics-")
    os.environ[METRICS_DIR_ENV] = made
    try:
        yield made
    finally:
        os.environ.pop(METRICS_DIR_ENV, None)
        shutil.rmtree(made, ignore_errors=True)
