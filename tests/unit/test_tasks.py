"""`shared.tasks`: a stop lets the batch in hand finish; a failure still surfaces."""

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
