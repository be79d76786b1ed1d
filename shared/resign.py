"""Re-signing what Redis holds under a new signing key (`driftline resign`), for a key rotation.

Every signed value of one topic prefix (registry artifacts and live slots, training's
checkpoint, serving's replica checkpoint, monitoring's snapshot) is checked against
the old key and, if it verifies, rewritten with the same payload under the new one.
Nothing is unpickled: a value the old key did not sign is left as it is and reported
(the services will refuse it). A value already under the new key is left too, so a
second run changes nothing. Stop training, serving and monitoring first: a value a
service writes meanwhile with the old key would be refused once they restart.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis

from shared.signing import SignatureError, SigningKey, sign, verify

__all__ = ["Resigned", "resign"]


@dataclass
class Resigned:
    """What one run did, per outcome: `resigned`, `current` (already under the new
    key), `unverified` (signed by neither key: left for the services to refuse)."""

    counts: Counter[str] = field(default_factory=Counter)
    unverified: list[str] = field(default_factory=list)  # their Redis keys


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _signed_values(redis: Redis, prefix: str) -> list[tuple[str, str | None]]:
    """(Redis key, hash field or None for a plain string) of every signed value."""
    registry = f"driftline:{prefix}registry"
    found: list[tuple[str, str | None]] = []
    async for key in redis.scan_iter(match=f"{registry}:*:artifact", count=1000):
        found.append((_text(key), None))
    async for key in redis.scan_iter(match=f"{registry}:*:live", count=1000):
        found.append((_text(key), "artifact"))
    for key in (f"driftline:{prefix}training:checkpoint", f"driftline:{prefix}serving:replica"):
        found.append((key, "state"))
    found.append((f"driftline:{prefix}monitoring:snapshot", None))
    return found


async def resign(redis: Redis, prefix: str, old: SigningKey, new: SigningKey) -> Resigned:
    """Re-sign every signed value of topic prefix `prefix` from `old` to `new`."""
    done = Resigned()
    for key, hash_field in await _signed_values(redis, prefix):
        blob = await (redis.get(key) if hash_field is None else redis.hget(key, hash_field))
        if not isinstance(blob, bytes):
            continue  # absent
        name = key if hash_field is None else f"{key} {hash_field}"
        try:
            payload = bytes(verify(old, blob))
        except SignatureError:
            try:
                verify(new, blob)
            except SignatureError:
                done.counts["unverified"] += 1
                done.unverified.append(name)
            else:
                done.counts["current"] += 1
            continue
        signed = sign(new, payload)
        if hash_field is None:
            await redis.set(key, signed)
        else:
            await redis.hset(key, hash_field, signed)
        done.counts["resigned"] += 1
    return done
