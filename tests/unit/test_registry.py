"""ModelRegistry against the real Redis: versions, artifacts, metadata, transactions."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from river import linear_model

from shared.messages import ModelPublished, PartitionOffset
from shared.registry import ModelRegistry, RegistryError
from shared.signing import MAGIC, REJECTED, SignatureError, verify
from tests.support import REDIS_URL, SIGNING_KEY, crafted_pickle

pytestmark = pytest.mark.integration

OFFSETS = [PartitionOffset(topic="features", partition=0, offset=12)]


@pytest.fixture
async def registry(redis: Redis) -> AsyncIterator[ModelRegistry]:
    namespace = f"driftline:t{uuid.uuid4().hex[:10]}.registry"
    yield ModelRegistry(redis, namespace=namespace, signing_key=SIGNING_KEY)
    keys = [k async for k in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)


def trained(n: int) -> linear_model.LogisticRegression:
    model = linear_model.LogisticRegression()
    for i in range(n):
        model.learn_one({"x": float(i % 3)}, i % 3 == 0)
    return model


async def test_versions_count_up_per_model_and_keep_their_metadata(
    registry: ModelRegistry,
) -> None:
    first = await registry.save("lr", trained(5), {"accuracy": 0.5}, OFFSETS, "abc", 5)
    second = await registry.save("lr", trained(9), {"accuracy": 0.75}, OFFSETS, "abc", 9)
    other = await registry.save("tree", trained(1), {}, [], None, None)
    assert (first.version, second.version, other.version) == ("1", "2", "1")
    assert second.artifact_key == f"{registry.namespace}:lr:2:artifact"
    assert second.lineage.offsets == OFFSETS
    assert (second.lineage.config_hash, second.lineage.n_learned) == ("abc", 9)
    assert second.metrics == {"accuracy": 0.75}
    assert [v.version for v in await registry.versions("lr")] == ["1", "2"]
    assert await registry.versions("lr", limit=1) == [second]
    assert await registry.latest("lr") == second
    assert await registry.latest("nothing") is None
    assert await registry.get("lr", "1") == first
    assert await registry.next_version("lr") == "3"


async def test_the_artifact_is_a_plain_key_holding_the_pickled_model_signed(
    registry: ModelRegistry, redis: Redis
) -> None:
    model = trained(20)
    published = await registry.save("lr", model, {}, OFFSETS)
    raw = await redis.get(published.artifact_key)
    assert isinstance(raw, bytes)
    x = {"x": 2.0}
    assert raw.startswith(MAGIC)
    assert pickle.loads(verify(SIGNING_KEY, raw)).predict_proba_one(x) == model.predict_proba_one(x)
    assert (await registry.load(published)).weights == model.weights
    assert (await registry.load(published.artifact_key)).weights == model.weights
    meta = await redis.get(registry.meta_key("lr", "1"))
    assert meta is not None
    assert ModelPublished.model_validate_json(meta) == published


async def test_an_artifact_not_signed_with_the_key_is_refused_unread(
    registry: ModelRegistry, redis: Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    published = await registry.save("lr", trained(3), {}, OFFSETS)
    await redis.set(published.artifact_key, crafted_pickle(marker))  # overwritten in Redis
    before = REJECTED.labels("artifact", "missing")._value.get()
    with pytest.raises(SignatureError, match="no signature"):
        await registry.load(published)
    assert not marker.exists()
    assert REJECTED.labels("artifact", "missing")._value.get() == before + 1


async def test_stage_joins_a_callers_transaction(registry: ModelRegistry, redis: Redis) -> None:
    other_key = f"{registry.namespace}:checkpoint"
    pipe = redis.pipeline(transaction=True)
    published = registry.stage(pipe, "lr", "1", trained(3), {"n": 3}, OFFSETS)
    pipe.set(other_key, b"state")
    assert await registry.latest("lr") is None, "nothing visible before EXEC"
    await pipe.execute()
    assert await registry.latest("lr") == published
    assert await redis.get(other_key) == b"state"


async def test_missing_versions_and_artifacts_are_registry_errors(
    registry: ModelRegistry,
) -> None:
    with pytest.raises(RegistryError, match="no version '7'"):
        await registry.get("lr", "7")
    with pytest.raises(RegistryError, match="not in Redis"):
        await registry.load(f"{registry.namespace}:lr:7:artifact")


async def test_retention_keeps_the_newest_and_the_pinned_versions(redis: Redis) -> None:
    namespace = f"driftline:t{uuid.uuid4().hex[:10]}.registry"
    registry = ModelRegistry(redis, namespace=namespace, keep=3, signing_key=SIGNING_KEY)
    try:
        for n in (1, 2):
            await registry.save("lr", trained(n), {}, OFFSETS)
        await registry.pin("lr", "2")
        assert await registry.retiring("lr") == []  # 1, 2 and the next fit in 3
        for n in (3, 4, 5):
            await registry.save("lr", trained(n), {}, OFFSETS)
        assert await registry.retiring("lr") == ["3"]  # 2 is pinned
        await registry.save("lr", trained(6), {}, OFFSETS)
        assert [v.version for v in await registry.versions("lr")] == ["2", "4", "5", "6"]
        for gone in ("1", "3"):
            assert not await redis.exists(registry.artifact_key("lr", gone))
            assert not await redis.exists(registry.meta_key("lr", gone))
            with pytest.raises(RegistryError):
                await registry.get("lr", gone)
        with pytest.raises(RegistryError):
            await registry.pin("lr", "1")  # retired: nothing left to pin
        await registry.unpin("lr", "2")
        await registry.save("lr", trained(7), {}, OFFSETS)
        assert [v.version for v in await registry.versions("lr")] == ["5", "6", "7"]
        assert await registry.next_version("lr") == "8"  # numbers never come back
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{namespace}:*")]
        if keys:
            await redis.delete(*keys)


def test_retention_keeps_at_least_one_version() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ModelRegistry(Redis.from_url(REDIS_URL), keep=0, signing_key=SIGNING_KEY)


async def test_a_batch_challengers_version_carries_its_fit(registry: ModelRegistry) -> None:
    from shared.catalogue import build_model

    model = build_model(
        "sk_logreg",
        {"window": 300, "min_train": 200, "swap_after": 20, "n_candidates": 3, "background": False},
    )
    before = await registry.save("sk_logreg", model, {}, OFFSETS)
    assert before.batch is None, "no fit has taken over yet"
    for i in range(230):
        model.learn_one({"x": float(i % 5), "y": float(i % 3)}, i % 5 > 1)
    published = await registry.save("sk_logreg", model, {}, OFFSETS, "abc", 230)
    batch = published.batch
    assert batch is not None and batch.cv is not None
    assert (batch.cv.scheme, batch.cv.n_splits, len(batch.cv.splits)) == ("TimeSeriesSplit", 3, 3)
    assert set(batch.params) == {"C"}
    assert (batch.window.first, batch.window.last, batch.serving_from) == (1, 200, 220)
    assert published.lineage.offsets == OFFSETS  # the input offsets of the checkpoint
    assert await registry.get("sk_logreg", published.version) == published
    loaded = await registry.load(published)
    x = {"x": 4.0, "y": 1.0}
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)
    assert published.influence is not None and set(published.influence) == {"x", "y"}
