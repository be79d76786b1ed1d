"""What both kinds of serving process wire the same way: the model watcher and live follower.

Every HTTP worker and the stream scorer keep their own `ModelHolder`, fed by their
own groupless `models` reader (`watched_models`), so each hot-swaps on its own, and
by their own `LiveFollower` of the champion's live slot (the learner's model between
versions).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from services.serving.config import ServingSettings
from services.serving.following import LiveFollower
from services.serving.models import ModelHolder, RedisArtifactLoader
from services.serving.watcher import ModelWatcher
from shared import tasks
from shared.kafka import make_consumer
from shared.registry import ModelRegistry
from shared.topics import Topics, partitions_of

__all__ = ["watched_models"]


@contextlib.asynccontextmanager
async def watched_models(
    settings: ServingSettings, holder: ModelHolder, *, client_id: str
) -> AsyncIterator[ModelWatcher]:
    """A `models` reader caught up (the champion's newest version loaded) and running."""
    topics = Topics(settings.topic_prefix)
    topic = topics.models
    bootstrap = settings.kafka_bootstrap_servers
    registry = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.artifact_timeout_s,
        socket_connect_timeout=settings.artifact_timeout_s,
    )
    # no group: every process reads the whole `models` topic itself
    auth = settings.kafka()
    consumer = make_consumer(
        bootstrap_servers=bootstrap, group_id=None, client_id=client_id, **auth
    )
    await consumer.start()
    try:
        watcher = ModelWatcher(
            consumer,
            topic,
            await partitions_of(bootstrap, topic, auth),
            holder,
            RedisArtifactLoader(registry, settings.signing_key()),
            champions=(topics.champions, await partitions_of(bootstrap, topics.champions, auth)),
        )
        await watcher.catch_up(settings.models_catch_up_timeout_s)
        running = [tasks.start(watcher.run(), name="serving-models-watcher", essential=True)]
        watcher.task = running[0]
        if settings.live_follow_s > 0:
            namespace = f"driftline:{settings.topic_prefix}registry"
            follower = LiveFollower(
                ModelRegistry(registry, namespace, signing_key=settings.signing_key()),
                holder,
                every_s=settings.live_follow_s,
            )
            await follower.poll()
            running.append(tasks.start(follower.run(), name="serving-live-follower"))
        try:
            yield watcher
        finally:
            await tasks.cancel(*running)
    finally:
        await consumer.stop()
        await registry.aclose()
