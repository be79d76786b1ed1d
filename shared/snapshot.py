"""Pickling a service's state without pausing its loop: a forked child does it.

`pickle_later(obj, key)` forks: the child pickles `obj` as it was at that instant (the
kernel's copy-on-write pages are the snapshot, as in Redis's BGSAVE) and writes the
bytes to a pipe; the parent goes on at once and gets the bytes from the returned
future. Pickling a learner that remembers a few hundred thousand finished events
takes a few hundred milliseconds, which stalled training's loop on every checkpoint
(monitoring's snapshots use it too). Where `os.fork` does not exist the bytes are
made in place.

The bytes are signed with `key` (`shared.signing`: the envelope every pickle kept in
Redis carries): the child computes the HMAC and writes the envelope's head, then the
pickle, so neither process copies the payload into a second buffer, and the parent's
loop spends nothing on the MAC.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import signal
import struct
import traceback
from collections.abc import Callable

from shared.signing import SigningKey, header, sign

__all__ = ["parts_later", "pickle_later"]


def pickle_later(obj: object, key: SigningKey) -> asyncio.Future[bytes]:
    """Start pickling `obj` as it is now; the future resolves to its bytes, signed with
    `key` (`shared.signing.loads_signed` reads them)."""
    done = parts_later(lambda: [pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)], key)
    return asyncio.ensure_future(_first(done))


async def _first(parts: asyncio.Future[list[bytes]]) -> bytes:
    return (await parts)[0]


def parts_later(make: Callable[[], list[bytes]], key: SigningKey) -> asyncio.Future[list[bytes]]:
    """Run `make` on the memory as it is now (in a forked child); the future resolves
    to the byte strings it returns, each signed with `key`."""
    loop = asyncio.get_running_loop()
    if not hasattr(os, "fork"):
        done: asyncio.Future[list[bytes]] = loop.create_future()
        done.set_result([sign(key, part) for part in make()])
        return done
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: make, write, exit without running any parent cleanup
        _child(make, key, read_fd, write_fd)
    os.close(write_fd)
    return loop.run_in_executor(None, _collect, pid, read_fd)


def _child(make: Callable[[], list[bytes]], key: SigningKey, read_fd: int, write_fd: int) -> None:
    code = 1
    try:
        os.close(read_fd)
        signal.set_wakeup_fd(-1)  # the parent's loop must not see the child's signals
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        gc.disable()  # a collection would touch (and copy) every page of the snapshot
        parts = make()
        with os.fdopen(write_fd, "wb") as out:
            for part in parts:  # the envelope's head, then the payload: no second copy
                head = header(key, part)
                out.write(struct.pack("<Q", len(head) + len(part)))
                out.write(head)
                out.write(part)
        code = 0
    except BaseException:
        traceback.print_exc()  # the parent only sees the exit code
    finally:
        os._exit(code)


def _collect(pid: int, read_fd: int) -> list[bytes]:
    """The child's parts (read in a thread: the reads release the GIL)."""
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"the checkpoint's pickling child exited with {code}")
    parts, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from("<Q", data, at)
        parts.append(data[at + 8 : at + 8 + size])
        at += 8 + size
    return parts
