"""The features worker stops (to be restarted) when a table recovery reads nothing."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from services.features.app import recovery_watch


async def test_a_recovery_that_reads_nothing_past_the_bound_stops_the_worker() -> None:
    stuck = SimpleNamespace(
        in_recovery=True,
        _recovery_started_at=time.monotonic() - 10,
        _last_active_event_processed_at=None,
    )
    with pytest.raises(RuntimeError, match="read nothing for 10 s"):
        await asyncio.wait_for(recovery_watch(stuck, stall_s=5, every_s=0.01), 1)


async def test_a_recovery_that_reads_or_none_at_all_is_left_alone() -> None:
    now = time.monotonic()
    reading = SimpleNamespace(
        in_recovery=True, _recovery_started_at=now - 60, _last_active_event_processed_at=now
    )
    done = SimpleNamespace(in_recovery=False, _recovery_started_at=now - 60)
    for recovery in (reading, done):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(recovery_watch(recovery, stall_s=5, every_s=0.01), 0.1)
