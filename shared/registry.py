"""The model registry: every checkpointed version of every model, in Redis.

A version is three Redis keys under the registry's namespace: the artifact (the
pickled River model, signed: a plain string key that serving reads with `GET` and
`shared.signing.loads_signed`), its `ModelPublished` metadata as JSON next to it (for a batch
challenger with its fit: `batch`, see `shared.batch_models`), and the model's
sorted set of versions (score = version number). Versions are consecutive integers
per model, written as strings ("1", "2", ...). `stage` queues one version's writes
on a caller's MULTI/EXEC pipeline, so a service can make the versions and its own
checkpoint visible together; `save` does the same for one model on its own.

Retention: a model keeps its newest `keep` versions (20 by default) and any version
pinned (`pin`); staging a version also queues, in the same transaction, the removal of
what it pushes out (`retiring` says which), so the registry's size is bounded by the
model's, not by how long training has run.

Between versions, `put_live` keeps one more key per model, its live slot: the model
as it stands now (pickled), the version it builds on and how many events it has
learned. Training rewrites it about every half second and serving swaps to it, so
what is served follows the learner within a second; the slot is never a version
(nothing to roll back to) and is overwritten in place, so it does not grow.

Every artifact and live slot is signed (`shared.signing`: an HMAC-SHA256 envelope
made with the signing key) and verified before it is unpickled: bytes that Redis
holds but no holder of the key wrote (an unsigned or tampered pickle, a model from
before signing) raise `SignatureError` and are counted, never unpickled. A signature
says who made the bytes, not that they are the newest: anyone who can write to the
registry's Redis can still put back an older signed artifact.

    registry = ModelRegistry(redis, namespace="driftline:registry", signing_key=key)
    published = await registry.save("logreg", model, {"accuracy": 0.8}, offsets)
    model = await registry.load(published)            # or registry.load(artifact_key)
    [v.version for v in await registry.versions("logreg")]   # ["1", ..., published.version]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.batch_models import batch_info
from shared.clock import utcnow
from shared.explain import influence
from shared.messages import BatchFit, Lineage, ModelPublished, PartitionOffset
from shared.signing import SigningKey, dumps_signed, loads_signed, sign

__all__ = ["LiveModel", "ModelRegistry", "RegistryError", "version_order"]


def version_order(version: str) -> tuple[int, int, str]:
    """Sort key of versions: integers numerically, anything else after them, by text."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class RegistryError(LookupError):
    """A version or artifact that is not in the registry."""


@dataclass(frozen=True)
class LiveModel:
    """A model as it learns: built on registry `version`, after `n_learned` events."""

    name: str
    version: str
    n_learned: int
    model: Any = None  # None when only the stamp (version, n_learned) was read


class ModelRegistry:
    """Versions of named models: pickled artifact + `ModelPublished` metadata per version."""

    def __init__(
        self,
        redis: Redis,
        namespace: str = "driftline:registry",
        keep: int = 20,
        *,
        signing_key: SigningKey,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.redis = redis
        self.namespace = namespace
        self.keep = keep
        self.signing_key = signing_key

    # ---- keys

    def versions_key(self, name: str) -> str:
        return f"{self.namespace}:{name}:versions"

    def artifact_key(self, name: str, version: str) -> str:
        return f"{self.namespace}:{name}:{version}:artifact"

    def meta_key(self, name: str, version: str) -> str:
        return f"{self.namespace}:{name}:{version}:meta"

    def live_key(self, name: str) -> str:
        return f"{self.namespace}:{name}:live"

    def pinned_key(self, name: str) -> str:
        return f"{self.namespace}:{name}:pinned"

    # ---- writing

    async def next_version(self, name: str) -> str:
        """The version number the next `save` of `name` will get ("1" for a new model)."""
        top = await self.redis.zrevrange(self.versions_key(name), 0, 0, withscores=True)
        return str(int(top[0][1]) + 1 if top else 1)

    async def retiring(self, name: str) -> list[str]:
        """The versions of `name` its next version pushes out of retention (oldest first)."""
        versions = await self.redis.zrange(self.versions_key(name), 0, -1)
        pinned = {_text(v) for v in await self.redis.smembers(self.pinned_key(name))}
        numbers = [_text(v) for v in versions if isinstance(v, bytes | str)]
        older = numbers[: max(0, len(numbers) + 1 - self.keep)]
        return [v for v in older if v not in pinned]

    async def pin(self, name: str, version: str) -> None:
        """Keep `version` of `name` whatever retention says (`RegistryError` if it is gone)."""
        await self.get(name, version)
        await self.redis.sadd(self.pinned_key(name), version)

    async def unpin(self, name: str, version: str) -> None:
        await self.redis.srem(self.pinned_key(name), version)

    def stage(
        self,
        pipe: Pipeline,
        name: str,
        version: str,
        model: Any,
        metrics: Mapping[str, float],
        offsets: Sequence[PartitionOffset],
        config_hash: str | None = None,
        n_learned: int | None = None,
        published_at: datetime | None = None,
        retire: Sequence[str] = (),
    ) -> ModelPublished:
        """Queue the writes of one version on `pipe` (executed by the caller), and the
        removal of the versions in `retire` (from `retiring`, read just before)."""
        pickled = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        published = ModelPublished(
            name=name,
            version=version,
            lineage=Lineage(
                offsets=list(offsets),
                config_hash=config_hash,
                n_learned=n_learned,
                content_sha256=hashlib.sha256(pickled).hexdigest(),
            ),
            metrics={k: float(v) for k, v in metrics.items()},
            artifact_key=self.artifact_key(name, version),
            published_at=published_at or utcnow(),
            influence=influence(model) or None,
            batch=_batch(model),
        )
        pipe.set(published.artifact_key, sign(self.signing_key, pickled))
        pipe.set(self.meta_key(name, version), published.to_json())
        pipe.zadd(self.versions_key(name), {version: int(version)})
        if retire:
            pipe.zrem(self.versions_key(name), *retire)
            for old in retire:
                pipe.delete(self.artifact_key(name, old), self.meta_key(name, old))
        return published

    async def save(
        self,
        name: str,
        model: Any,
        metrics: Mapping[str, float],
        offsets: Sequence[PartitionOffset],
        config_hash: str | None = None,
        n_learned: int | None = None,
    ) -> ModelPublished:
        """Store `model` as the next version of `name`, atomically, retiring what falls out
        of retention; return its metadata.

        One writer per model is assumed (the training service): two concurrent
        writers could pick the same version number.
        """
        version = await self.next_version(name)
        retire = await self.retiring(name)
        pipe = self.redis.pipeline(transaction=True)
        published = self.stage(
            pipe, name, version, model, metrics, offsets, config_hash, n_learned, retire=retire
        )
        await pipe.execute()
        return published

    async def put_live(self, name: str, version: str, n_learned: int, model: Any) -> None:
        """Overwrite `name`'s live slot with `model` (not a version: see the module doc)."""
        blob = dumps_signed(self.signing_key, model)
        mapping = {"version": version, "n_learned": str(n_learned), "artifact": blob}
        await self.redis.hset(self.live_key(name), mapping=mapping)  # type: ignore[arg-type]

    # ---- reading

    async def live_stamp(self, name: str) -> LiveModel | None:
        """The live slot's version and count (no model), or None if it is empty."""
        version, n = await self.redis.hmget(self.live_key(name), ["version", "n_learned"])
        if version is None or n is None:
            return None
        return LiveModel(name, _text(version), int(n))

    async def load_live(self, name: str) -> LiveModel | None:
        """The live slot with its model unpickled, or None if it is empty; a slot not
        signed with the key raises `SignatureError` (counted; nothing unpickled)."""
        fields = ["version", "n_learned", "artifact"]
        version, n, blob = await self.redis.hmget(self.live_key(name), fields)
        if version is None or n is None or not isinstance(blob, bytes):
            return None
        model = await asyncio.to_thread(loads_signed, self.signing_key, blob, "live")
        return LiveModel(name, _text(version), int(n), model)

    async def versions(self, name: str, limit: int | None = None) -> list[ModelPublished]:
        """Every version of `name` (or the newest `limit`), oldest first."""
        start = 0 if limit is None else -limit
        numbers = await self.redis.zrange(self.versions_key(name), start, -1)
        if not numbers:
            return []
        keys = [self.meta_key(name, _text(n)) for n in numbers if isinstance(n, bytes | str)]
        metas = await self.redis.mget(keys)
        return [ModelPublished.model_validate_json(m) for m in metas if m is not None]

    async def latest(self, name: str) -> ModelPublished | None:
        """The newest version of `name`, or None if it has none."""
        newest = await self.versions(name, limit=1)
        return newest[0] if newest else None

    async def get(self, name: str, version: str) -> ModelPublished:
        """The metadata of one version, or `RegistryError`."""
        meta = await self.redis.get(self.meta_key(name, version))
        if meta is None:
            raise RegistryError(f"model {name!r} has no version {version!r}")
        return ModelPublished.model_validate_json(meta)

    async def load(self, ref: ModelPublished | str) -> Any:
        """The model a version's metadata (or a plain artifact key) points to, unpickled;
        an artifact not signed with the key raises `SignatureError` (counted)."""
        key = ref.artifact_key if isinstance(ref, ModelPublished) else ref
        data = await self.redis.get(key)
        if data is None:
            raise RegistryError(f"artifact {key!r} is not in Redis")
        if not isinstance(data, bytes):
            raise RegistryError(f"artifact {key!r} was read as text (use decode_responses=False)")
        return await asyncio.to_thread(loads_signed, self.signing_key, data, "artifact")


def _batch(model: Any) -> BatchFit | None:
    """A batch challenger's fit, as the version's metadata says it (None: another model,
    or one whose first fit has not taken over yet)."""
    info = batch_info(model)
    return None if info is None else BatchFit.model_validate_json(json.dumps(info))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
