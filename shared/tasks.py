"""Background tasks of a service: started with their crash logged, stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["cancel", "finish", "start"]

T = TypeVar("T")

log = logging.getLogger(__name__)


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


def start(coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Run `coroutine` in the background; if it ever fails, the error is logged."""
    task = asyncio.create_task(coroutine, name=name)
    task.add_done_callback(_log_crash)
    return task


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel `tasks` and wait until each has finished."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def finish(coroutine: Coroutine[Any, Any, T]) -> T:
    """Await `coroutine`; if the caller is cancelled meanwhile, let it finish first.

    For a batch that must not stop half-way (output sent, offsets not yet kept).
    """
    work = asyncio.ensure_future(coroutine)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        log.info("stopping: finishing the batch in hand first")
        await work
        raise
