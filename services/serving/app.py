"""Bootstrap: wires Kafka, Redis, the pipeline and the handlers into the serving service."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis

from services.serving.api import observe_predict_requests, router
from services.serving.config import ServingSettings
from services.serving.context import ServingContext
from services.serving.errors import install_error_handlers
from services.serving.models import ModelHolder, RedisArtifactLoader
from services.serving.publisher import PredictionPublisher
from services.serving.stream import FeatureScorer
from services.serving.watcher import ModelWatcher
from shared import tasks
from shared.feature_store import RedisOnlineStore
from shared.features import FeatureComputer
from shared.kafka import make_consumer, make_producer
from shared.pipeline import load_pipeline
from shared.topics import Topics, ensure_topics, partitions_of

__all__ = ["build_app", "create_app"]

log = logging.getLogger(__name__)

CLIENT_ID = "driftline-serving"
MAX_IDLE_S = 30.0  # a consumer that has not polled for this long is considered stuck

Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


def build_app(lifespan: Lifespan) -> FastAPI:
    """The FastAPI app around a lifespan that sets `app.state.context` (tests pass fakes)."""
    app = FastAPI(title="Driftline serving", lifespan=lifespan)
    app.include_router(router)
    app.middleware("http")(observe_predict_requests)
    install_error_handlers(app)
    return app


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    topics = Topics(settings.topic_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pipeline = load_pipeline(settings.pipeline_config)  # fail fast on a bad config
        holder = ModelHolder(champion=pipeline.models[0].name)
        bootstrap = settings.kafka_bootstrap_servers
        await ensure_topics(bootstrap, settings.topic_prefix, settings.topic_partitions)
        redis = Redis.from_url(settings.redis_url)
        producer = make_producer(bootstrap, client_id=CLIENT_ID)
        # no group: every replica reads the whole `models` topic itself
        models_consumer = make_consumer(
            bootstrap_servers=bootstrap, group_id=None, client_id=CLIENT_ID
        )
        features_consumer = make_consumer(
            topics.features,
            bootstrap_servers=bootstrap,
            group_id=settings.group_id,
            client_id=CLIENT_ID,
        )
        await producer.start()
        await producer.partitions_for(topics.predictions)  # the first send then never waits
        await models_consumer.start()
        await features_consumer.start()
        watcher = ModelWatcher(
            models_consumer,
            topics.models,
            await partitions_of(bootstrap, topics.models),
            holder,
            RedisArtifactLoader(redis),
        )
        await watcher.catch_up(settings.models_catch_up_timeout_s)
        scorer = FeatureScorer(
            features_consumer, producer, holder, topics.predictions, batch_size=settings.batch_size
        )
        running = [
            tasks.start(watcher.run(), name="serving-models-watcher"),
            tasks.start(scorer.run(), name="serving-features-scorer"),
        ]
        publisher = PredictionPublisher(
            producer, topics.predictions, max_pending=settings.max_pending_publishes
        )

        def liveness() -> tuple[bool, dict[str, Any]]:
            idle = {
                "models_idle_s": round(watcher.seconds_since_poll(), 3),
                "features_idle_s": round(scorer.seconds_since_poll(), 3),
            }
            alive = all(not t.done() for t in running) and max(idle.values()) < MAX_IDLE_S
            return alive, idle

        app.state.context = ServingContext(
            holder=holder,
            store=RedisOnlineStore(
                redis,
                namespace=f"driftline:{settings.topic_prefix}features",
                ttl_s=settings.feature_ttl_s,
            ),
            computer=FeatureComputer(pipeline),
            sink=publisher,
            liveness=liveness,
        )
        log.info(
            "serving %s (champion %s) from %s; scoring %s",
            pipeline.name,
            holder.champion,
            topics.models,
            topics.features,
        )
        try:
            yield
        finally:
            await tasks.cancel(*running)
            await publisher.close()
            await features_consumer.stop()
            await models_consumer.stop()
            await producer.stop()
            await redis.aclose()

    return build_app(lifespan)
