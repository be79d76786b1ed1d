"""`shared.tasks`: a stop lets the batch in hand finish; a failure still surfaces; a failed
essential task stops its process (so that its supervisor restarts it)."""

from __future__ import annotations

import asyncio

import pytest

from shared import tasks


async def _batch(steps: list[str]) -> str:
    steps.append("sent")
    await asyncio.sleep(0.05)
    steps.append("committed")
    return "done"


def test_a_cancelled_caller_waits_for_the_batch_then_stops() -> None:
    async def main() -> list[str]:
        steps: list[str] = []
        caller = asyncio.create_task(tasks.finish(_batch(steps)))
        await asyncio.sleep(0.01)
        await tasks.cancel(caller)
        assert caller.cancelled()
        return steps

    assert asyncio.run(main()) == ["sent", "committed"]


def test_finish_returns_the_result_or_raises_the_error() -> None:
    async def fails() -> None:
        raise ValueError("broker refused")

    assert asyncio.run(tasks.finish(_batch([]))) == "done"
    with pytest.raises(ValueError, match="broker refused"):
        asyncio.run(tasks.finish(fails()))


@pytest.fixture
def stops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(tasks, "_stop_process", lambda: calls.append(1))
    monkeypatch.setattr(tasks, "_failed", [])
    return calls


async def _fail() -> None:
    await asyncio.sleep(0)
    raise ConnectionError("the broker went away")


async def test_a_failed_essential_task_stops_the_process(stops: list[int]) -> None:
    task = tasks.start(_fail(), name="loop", essential=True)
    with pytest.raises(ConnectionError):
        await task
    await asyncio.sleep(0)  # done callbacks run
    assert stops == [1]
    assert tasks.exit_status() == 1


async def test_other_tasks_only_log_and_a_cancelled_essential_one_is_a_stop(
    stops: list[int],
) -> None:
    plain = tasks.start(_fail(), name="helper")
    with pytest.raises(ConnectionError):
        await plain
    essential = tasks.start(asyncio.sleep(60), name="loop", essential=True)
    await tasks.cancel(essential)
    await asyncio.sleep(0)
    assert stops == []
    assert tasks.exit_status() == 0
