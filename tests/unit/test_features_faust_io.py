"""The features service's eager record delivery (services.features.faust_io)."""

from __future__ import annotations

import asyncio

import pytest

from services.features.faust_io import _finish


async def _waits_then_returns(log: list[str]) -> int:
    task = asyncio.ensure_future(asyncio.sleep(0.01, result=5))
    await asyncio.wait([task])  # yields a future that is not done yet
    await asyncio.sleep(0)  # a bare yield
    failing = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(failing.set_exception, ValueError("boom"))
    try:
        await failing
    except ValueError:
        log.append("failure seen")
    return task.result()


def test_a_delivery_that_had_to_wait_is_driven_to_its_end() -> None:
    async def main() -> list[str]:
        log: list[str] = []
        coro = _waits_then_returns(log)
        pending = coro.send(None)  # what EagerConsumer tries first
        await _finish(coro, pending)
        assert coro.cr_frame is None  # type: ignore[attr-defined]  # finished
        return log

    assert asyncio.run(main()) == ["failure seen"]


def test_cancelling_the_rest_of_a_delivery_cancels_the_delivery() -> None:
    async def main() -> None:
        coro = asyncio.sleep(10)
        pending = coro.send(None)
        rest = asyncio.ensure_future(_finish(coro, pending))
        await asyncio.sleep(0.01)
        rest.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rest
        assert coro.cr_frame is None  # type: ignore[attr-defined]

    asyncio.run(main())
