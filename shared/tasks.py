"""Background tasks of a service: started with their crash logged, stopped cleanly.

A task started as `essential` (a service's consumer loop) that fails stops its process:
the process sends itself SIGTERM (uvicorn then shuts down as on any stop) and
`exit_status()` says 1, which the service's `__main__` exits with. Its supervisor
(`make up`'s `scripts/stack.sh supervise`, compose's restart policy, serving's own)
then starts it again, and it resumes from its committed offsets or checkpoint. So a
loop that gave up (a broker away longer than its retries) never leaves a process that
is up but does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["cancel", "exit_status", "finish", "start"]

T = TypeVar("T")

log = logging.getLogger(__name__)


_failed: list[str] = []  # essential tasks that failed in this process


def exit_status() -> int:
    """1 once an essential task has failed (the process is stopping because of it), else 0."""
    return 1 if _failed else 0


def _stop_process() -> None:
    signal.raise_signal(signal.SIGTERM)


def _log_crash(task: asyncio.Task[Any], essential: bool) -> None:
    if task.cancelled() or task.exception() is None:
        return
    log.error("%s stopped", task.get_name(), exc_info=task.exception())
    if essential:
        log.error(
            "%s is essential: stopping the process (its supervisor restarts it)", task.get_name()
        )
        _failed.append(task.get_name())
        _stop_process()


def start(
    coroutine: Coroutine[Any, Any, Any], name: str, *, essential: bool = False
) -> asyncio.Task[Any]:
    """Run `coroutine` in the background; if it ever fails, the error is logged (and, if
    `essential`, the process stops: see the module doc)."""
    task = asyncio.create_task(coroutine, name=name)
    task.add_done_callback(functools.partial(_log_crash, essential=essential))
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
