"""`driftline resign`: a key rotation re-signs what Redis holds, unpickling nothing (real Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from river import linear_model

from shared import cli
from shared.registry import ModelRegistry
from shared.resign import resign
from shared.signing import SignatureError, SigningKey, sign, verify
from tests.support import REDIS_URL

pytestmark = pytest.mark.integration

OLD = SigningKey(b"the-key-being-rotated-out")
NEW = SigningKey(b"the-key-rotated-in-instead")
STRANGER = SigningKey(b"a-key-nobody-here-uses")


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    keys = [k async for k in redis.scan_iter(match=f"driftline:{prefix}*")]
    if keys:
        await redis.delete(*keys)


async def _fill(redis: Redis, prefix: str) -> ModelRegistry:
    """An artifact, a live slot and training's checkpoint under OLD, monitoring's snapshot
    under NEW already, serving's replica checkpoint under neither."""
    registry = ModelRegistry(redis, f"driftline:{prefix}registry", signing_key=OLD)
    await registry.save("lr", linear_model.LogisticRegression(), {}, [])
    await registry.put_live("lr", "1", 3, linear_model.LogisticRegression())
    await redis.hset(f"driftline:{prefix}training:checkpoint", "state", sign(OLD, b"state"))
    await redis.set(f"driftline:{prefix}monitoring:snapshot", sign(NEW, b"snapshot"))
    await redis.hset(f"driftline:{prefix}serving:replica", "state", sign(STRANGER, b"?"))
    return registry


async def test_values_under_the_old_key_move_to_the_new_one(redis: Redis, prefix: str) -> None:
    old = await _fill(redis, prefix)
    done = await resign(redis, prefix, OLD, NEW)
    assert dict(done.counts) == {"resigned": 3, "current": 1, "unverified": 1}
    assert done.unverified == [f"driftline:{prefix}serving:replica state"]
    new = ModelRegistry(redis, old.namespace, signing_key=NEW)
    assert isinstance(await new.load(old.artifact_key("lr", "1")), linear_model.LogisticRegression)
    live = await new.load_live("lr")
    assert live is not None and live.n_learned == 3
    state = await redis.hget(f"driftline:{prefix}training:checkpoint", "state")
    assert isinstance(state, bytes) and verify(NEW, state) == b"state"
    with pytest.raises(SignatureError):
        await old.load(old.artifact_key("lr", "1"))
    again = await resign(redis, prefix, OLD, NEW)
    assert dict(again.counts) == {"current": 4, "unverified": 1}, "a second run changes nothing"


def test_the_command_takes_the_new_key_from_the_settings(
    stack: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."

    async def fill() -> None:
        client = Redis.from_url(REDIS_URL)
        await _fill(client, prefix)
        await client.aclose()

    async def clean() -> None:
        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"driftline:{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    asyncio.run(fill())
    old_file = tmp_path / "old_key"
    old_file.write_text(OLD.secret.decode() + "\n")
    monkeypatch.setenv("TOPIC_PREFIX", prefix)
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("DRIFTLINE_SIGNING_KEY", NEW.secret.decode())
    assert cli.main(["resign", "--old-key-file", str(old_file)]) == 1  # one left unverified
    assert cli.main(["resign", "--old-key-file", str(tmp_path / "missing")]) == 2
    monkeypatch.setenv("DRIFTLINE_SIGNING_KEY", OLD.secret.decode())
    assert cli.main(["resign", "--old-key-file", str(old_file)]) == 2  # the same key
    asyncio.run(clean())
