"""The live slot: training writes each model as it learns, serving follows it (real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from river import linear_model

from services.serving.following import LiveFollower
from services.serving.models import InMemoryArtifactLoader, ModelHolder, published
from services.training.learner import OnlineLearner
from services.training.live import LiveModels
from shared.messages import ModelPublished
from shared.registry import ModelRegistry
from shared.signing import REJECTED, SigningKey, sign
from tests.support import REDIS_URL, SIGNING_KEY, crafted_pickle

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
async def registry(stack: None) -> AsyncIterator[ModelRegistry]:
    redis = Redis.from_url(REDIS_URL)
    namespace = f"driftline:t{uuid.uuid4().hex[:10]}.registry"
    yield ModelRegistry(redis, namespace=namespace, signing_key=SIGNING_KEY)
    keys = [k async for k in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def with_count(message: ModelPublished, n_learned: int) -> ModelPublished:
    lineage = message.lineage.model_copy(update={"n_learned": n_learned})
    return message.model_copy(update={"lineage": lineage})


def learner_after(n: int) -> OnlineLearner:
    learner = OnlineLearner({"lr": linear_model.LogisticRegression()}, ttl=timedelta(hours=1))
    for i in range(n):
        t = T0 + timedelta(seconds=i)
        learner.add_features(f"e{i}", t, {"x": float(i % 3)})
        learner.add_label(f"e{i}", i % 3 == 0, t)
    learner.advance(None)
    return learner


async def test_an_empty_slot_reads_as_none(registry: ModelRegistry) -> None:
    assert await registry.live_stamp("lr") is None
    assert await registry.load_live("lr") is None


async def test_training_writes_what_learned_and_paces_itself(registry: ModelRegistry) -> None:
    learner = learner_after(30)
    live = LiveModels(registry, every_s=0.5)
    assert live.due(0.0)
    await live.publish(learner, {"lr": "3"}, now=10.0)
    stamp = await registry.live_stamp("lr")
    assert stamp is not None and (stamp.version, stamp.n_learned) == ("3", 30)
    assert not live.due(10.4) and live.due(10.5)
    loaded = await registry.load_live("lr")
    assert loaded is not None
    x = {"x": 1.0}
    assert loaded.model.predict_proba_one(x) == learner.models["lr"].predict_proba_one(x)
    assert not LiveModels(registry, every_s=0).due(99.0), "0 turns the slot off"


async def test_a_slow_write_spaces_out_the_next(registry: ModelRegistry) -> None:
    live = LiveModels(registry, every_s=0.5, budget=1e-9)
    await live.publish(learner_after(5), {}, now=0.0)
    assert live.next_at > 1.0
    assert (await registry.live_stamp("lr")).version == "0"  # type: ignore[union-attr]


async def test_serving_swaps_to_a_slot_ahead_and_never_back(registry: ModelRegistry) -> None:
    holder = ModelHolder("lr")
    old = learner_after(10).models["lr"]
    loader = InMemoryArtifactLoader({"k2": old})
    message = with_count(published("lr", "2", "k2"), 10)
    await holder.offer(message, loader)
    follower = LiveFollower(registry, holder)
    assert not await follower.poll(), "an empty slot changes nothing"

    await registry.put_live("lr", "2", 40, learner_after(40).models["lr"])
    assert await follower.poll()
    served = holder.require()
    assert (served.version, served.n_learned) == ("2", 40)
    assert not await follower.poll(), "the same slot again: nothing to do"

    await registry.put_live("lr", "1", 90, old)  # an older version, however many events
    assert not await follower.poll()
    assert holder.require().n_learned == 40

    newer = with_count(published("lr", "3", "k3"), 50)
    loader.artifacts["k3"] = learner_after(50).models["lr"]
    assert await holder.offer(newer, loader), "a new version is ahead of the slot"
    assert (holder.require().version, holder.require().n_learned) == ("3", 50)


async def test_a_broken_slot_keeps_the_model_served(registry: ModelRegistry) -> None:
    holder = ModelHolder("lr")
    await holder.offer(published("lr", "1", "k"), InMemoryArtifactLoader({"k": "a model"}))
    key = registry.live_key("lr")
    await registry.redis.hset(key, mapping={"version": "1", "n_learned": "5", "artifact": b"junk"})
    assert not await LiveFollower(registry, holder).poll()
    assert holder.require().version == "1" and holder.require().n_learned is None


async def test_a_slot_not_signed_with_the_key_is_refused_unread_once(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    holder = ModelHolder("lr")
    await holder.offer(published("lr", "1", "k"), InMemoryArtifactLoader({"k": "a model"}))
    marker, key = tmp_path / "ran", registry.live_key("lr")
    follower = LiveFollower(registry, holder)

    def refused(reason: str) -> float:
        return float(REJECTED.labels("live", reason)._value.get())

    before = refused("missing"), refused("wrong")
    crafted = crafted_pickle(marker)
    await registry.redis.hset(key, mapping={"version": "2", "n_learned": "5", "artifact": crafted})
    assert not await follower.poll()
    assert not await follower.poll(), "the same slot is not read again"
    other = sign(SigningKey(b"somebody else's key"), crafted)
    await registry.redis.hset(key, mapping={"version": "2", "n_learned": "6", "artifact": other})
    assert not await follower.poll()
    assert not marker.exists()
    assert (refused("missing"), refused("wrong")) == (before[0] + 1, before[1] + 1)
    assert holder.require().version == "1"

    await registry.put_live("lr", "2", 7, learner_after(7).models["lr"])  # signed: taken
    assert await follower.poll()
    assert (holder.require().version, holder.require().n_learned) == ("2", 7)
