"""The forked pickling of a checkpoint: the bytes are of the state at the call."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

from shared.signing import SigningKey, verify
from shared.snapshot import pickle_later

KEY = SigningKey(b"0123456789abcdef")


def test_the_bytes_are_of_the_object_as_it_was_when_called() -> None:
    async def scenario() -> tuple[object, dict[str, list[int]]]:
        state = {"seen": list(range(100_000))}
        pending = pickle_later(state, KEY)
        state["seen"].append(-1)  # the loop goes on changing it meanwhile
        state["later"] = [1]
        return pickle.loads(verify(KEY, await pending)), state

    snapshot, state = asyncio.run(scenario())
    assert snapshot == {"seen": list(range(100_000))}
    assert state["seen"][-1] == -1


def test_an_object_that_cannot_be_pickled_fails_the_future() -> None:
    async def scenario() -> None:
        await pickle_later({"lock": threading.Lock()}, KEY)

    with pytest.raises(RuntimeError, match="exited with 1"):
        asyncio.run(scenario())
