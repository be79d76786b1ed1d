"""The seen store's Redis connections pack commands with hiredis: the same bytes."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from services.ingestion.seen import HiredisPackingConnection, pack_with_hiredis

COMMANDS: list[tuple[Any, ...]] = [
    ("MGET", *[f"driftline:ingest:seen:event:b{i}" for i in range(3000)]),
    ("EVALSHA", "f" * 40, 2, "k:é1", "k:2", 604800, b'{"source":"a/0/1"}', b"\x00\xff"),
    ("SCRIPT LOAD", "return 1"),
    (b"SCRIPT LOAD", "return 1"),
    ("SET", "k", 1.5, "EX", 60),
    ("SET", "k", 2**70),
    ("SET", "k", -0.0),
    ("SET", "k", b""),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_hiredis_packs_the_bytes_the_python_packer_does(command: tuple[Any, ...]) -> None:
    packed = b"".join(HiredisPackingConnection().pack_command(*command))
    assert packed == b"".join(bytes(p) for p in Connection().pack_command(*command))


def test_what_the_python_packer_refuses_is_still_refused() -> None:
    with pytest.raises(DataError):
        HiredisPackingConnection().pack_command("SET", "k", True)


@pytest.mark.parametrize(
    ("url", "connection_class"),
    [
        ("redis://127.0.0.1:6379/0", HiredisPackingConnection),
        ("rediss://127.0.0.1:6379/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_only_plain_tcp_connections_are_switched(url: str, connection_class: type) -> None:
    assert pack_with_hiredis(Redis.from_url(url)).connection_pool.connection_class is (
        connection_class
    )
