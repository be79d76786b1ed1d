"""Faults in the middle of a replay: the loop recovers with no operator, loses nothing
and learns nothing twice (`make faults`; after `make test`, since it kills the broker).

Each test runs the five services on the real broker and Redis under a small supervisor
(as `make up` does: a service that exits is started again), replays weather.csv through
`events.raw` and `labels.raw` with kcat, and strikes while the second half flows:

- kill -9 of every service in turn (training twice);
- kill -9 of the broker, then start it again;
- kill -9 of Redis, then start it again (it reloads its append-only file);
- the broker paused for 30 s (SIGSTOP, then SIGCONT);
- with two replicas each of ingestion, features and serving, one of each killed.

Then, with no operator action: every event has its vector on `features` (repeats
identical), the learner's counts in training and in monitoring equal River's own
progressive validation on the same rows, and `/predict` answers within 10 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.replay import ReplayPlan, plan_messages
from tests.e2e.test_loop import (
    SERVICES,
    Loop,
    _assert_learner_equals_river,
    _pipeline,
    _river_counts,
    _weather,
)
from tests.support import READER, ROOT, ServiceProcess, kcat_read

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(900)]

Factory = Callable[..., ServiceProcess]
RUN = Path(os.environ.get("RUN_DIR") or ROOT / ".run")  # where `make infra` keeps its pids
N_ROWS = 6000
DELAY = 10  # each label comes ten rows after its event


def _infra_pid(name: str) -> int:
    """The pid `make infra` recorded for the broker or Redis (skip if it did not start it)."""
    path = RUN / f"{name}.pid"
    if not path.exists():
        pytest.skip(f"{name} was not started by `make infra` here: cannot fault it")
    pid = int(path.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pytest.skip(f"{name} (pid {pid}) is not running")
    return pid


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _start_infra() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "stack.sh"), "infra"], check=True)


class Supervisor:
    """Starts a service again whenever it exits (what `make up` and compose do)."""

    def __init__(self, services: dict[str, ServiceProcess]) -> None:
        self.services = services
        self.restarts: dict[str, int] = dict.fromkeys(services, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for name, service in list(self.services.items()):
                process = service.process
                if process is not None and process.poll() is not None:
                    self.restarts[name] += 1
                    try:
                        service.start(timeout=180)
                    except Exception:  # exited again (say, the broker still away): retry
                        time.sleep(1)

    def kill(self, name: str, *, restart: bool = True) -> None:
        """kill -9 one service; the watcher starts it again, unless not `restart` (then
        it is gone for good, as a lost machine)."""
        service = self.services[name] if restart else self.services.pop(name)
        process = service.process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.fixture
def loop(service_factory: Factory, prefix: str, tmp_path: Path) -> Iterator[Loop]:
    pipeline = _pipeline(tmp_path, "weather", [f"feat_{i}" for i in range(1, 9)], ["logreg"])
    env = {"PIPELINE_CONFIG": str(pipeline), "CHECKPOINT_EVERY": "2000"}
    services = {name: service_factory(name, **env) for name in SERVICES}
    for service in services.values():
        service.start(timeout=120)
    yield Loop(prefix, services)
    _start_infra()  # whatever a test did, the broker and Redis answer for the next


def _replay_with(loop: Loop, fault: Callable[[Supervisor], None]) -> Supervisor:
    """Publish the first half, wait until the learner is well into it, then publish the
    second half while `fault` strikes; return the supervisor (its restart counts)."""
    rows = _weather(N_ROWS)
    messages = list(plan_messages(rows, ReplayPlan("f", label_delay=str(DELAY))))
    half = len(messages) // 2
    with Supervisor(loop.services) as supervisor:
        loop.publish(messages[:half])
        loop.wait_for_learner({"logreg": 1000})
        publisher = threading.Thread(target=_publish_slowly, args=(loop, messages[half:]))
        publisher.start()
        fault(supervisor)
        publisher.join()
        reference = {"logreg": _river_counts(rows, DELAY)["logreg"]}
        _wait_answering(loop, timeout=300)  # a restarted monitoring replays first
        _assert_learner_equals_river(loop, reference)
        _assert_training_equals(loop, reference)
        _assert_every_event_has_its_vector(loop, N_ROWS)
        _assert_predict_answers(loop)
    return supervisor


def _publish_slowly(loop: Loop, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
    """The second half in ten slices, a second apart: the fault strikes mid-stream.
    A slice the broker refuses (it is away) is sent again until it goes."""
    step = max(1, len(messages) // 10)
    for i in range(0, len(messages), step):
        deadline = time.monotonic() + 180
        while True:
            try:
                loop.publish(messages[i : i + step])
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        time.sleep(1)


def _wait_answering(loop: Loop, timeout: float) -> None:
    """Until every service answers /healthz (the supervisor may be restarting one)."""
    deadline = time.monotonic() + timeout
    while not all(service.healthy() for service in loop.services.values()):
        assert time.monotonic() < deadline, "a service did not come back"
        time.sleep(1)


def _assert_training_equals(loop: Loop, reference: dict[str, tuple[int, int]]) -> None:
    body = httpx.get(f"{loop.url('training')}/api/models", timeout=10).json()
    counts = {m["name"]: (m["n_scored"], m["n_correct"]) for m in body["models"]}
    assert counts == reference, body


def _assert_every_event_has_its_vector(loop: Loop, n: int) -> None:
    by_id: dict[str, Any] = {}
    for message in kcat_read(f"{loop.prefix}features"):
        vector = json.loads(message["payload"])
        assert by_id.setdefault(vector["event_id"], vector) == vector, "repeats are identical"
    assert len(by_id) == n


def _assert_predict_answers(loop: Loop) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = httpx.post(
                f"{loop.url('serving')}/predict",
                headers=READER,
                json={"entity_id": "global"},
                timeout=2,
            )
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "/predict did not answer within 10 s"
        time.sleep(0.2)


def test_kill_9_of_every_service_in_turn(loop: Loop) -> None:
    def fault(supervisor: Supervisor) -> None:
        for name in ("training", "ingestion", "features", "serving", "monitoring", "training"):
            time.sleep(1.5)
            supervisor.kill(name)

    restarts = _replay_with(loop, fault).restarts
    assert restarts["training"] >= 2 and all(restarts[name] >= 1 for name in SERVICES)


def test_one_of_two_replicas_of_ingestion_features_and_serving_killed(
    loop: Loop, service_factory: Factory
) -> None:
    """Two replicas each of ingestion, features and serving in their consumer groups
    (as scaling out runs them); one of each is killed mid-stream for good, and the other
    takes its partitions over."""
    env = loop.services["training"].env
    for name in ("ingestion", "features", "serving"):
        second = service_factory(name, PIPELINE_CONFIG=env["PIPELINE_CONFIG"])
        second.log_path = second.log_path.with_name(f"{name}-2.log")
        loop.services[f"{name}-2"] = second.start(timeout=120)

    def fault(supervisor: Supervisor) -> None:
        for name in ("features-2", "ingestion", "serving-2"):
            time.sleep(1.5)
            supervisor.kill(name, restart=False)

    _replay_with(loop, fault)


def _killed_and_started_again(name: str) -> Callable[[Supervisor], None]:
    """kill -9 of the broker or Redis a moment into the second half, started again 3 s later."""

    def fault(supervisor: Supervisor) -> None:
        time.sleep(2)
        _kill(_infra_pid(name))
        time.sleep(3)
        _start_infra()

    return fault


def test_kill_9_of_the_broker(loop: Loop) -> None:
    _replay_with(loop, _killed_and_started_again("kafka"))


def test_kill_9_of_redis(loop: Loop) -> None:
    _replay_with(loop, _killed_and_started_again("redis"))


def test_the_broker_paused_for_30_seconds(loop: Loop) -> None:
    def fault(supervisor: Supervisor) -> None:
        time.sleep(2)
        pid = _infra_pid("kafka")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(30)
        finally:
            os.kill(pid, signal.SIGCONT)

    _replay_with(loop, fault)
