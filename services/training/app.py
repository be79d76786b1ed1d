"""Bootstrap: restores the training state and wires Kafka, Redis and the learner."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.training import metrics
from services.training.api import router
from services.training.checkpoint import (
    CheckpointStore,
    checkpoint_key,
    restore_state,
    wire_champion,
)
from services.training.config import TrainingSettings
from services.training.promotions import announce_champion
from services.training.worker import TrainingWorker
from shared import health, tasks
from shared.kafka import make_consumer, make_producer
from shared.pipeline import load_pipeline
from shared.registry import ModelRegistry
from shared.topics import Topics, ensure_topics
from shared.upstream import learner_upstream

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 20.0


def create_app(settings: TrainingSettings | None = None) -> FastAPI:
    settings = settings or TrainingSettings()
    topics = Topics(settings.topic_prefix)
    pipeline = load_pipeline(settings.pipeline_config)  # fail fast on a bad pipeline file

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.kafka_bootstrap_servers
        prefix = settings.topic_prefix
        exits = contextlib.AsyncExitStack()
        auth = settings.kafka()
        await ensure_topics(bootstrap, prefix, settings.topic_partitions, auth)
        redis = settings.redis()
        registry = ModelRegistry(
            redis,
            namespace=f"driftline:{prefix}registry",
            keep=settings.registry_keep,
            signing_key=settings.signing_key(),
        )
        store = CheckpointStore(redis, registry, key=checkpoint_key(prefix), keep_refused=True)
        producer = make_producer(bootstrap, client_id="driftline-training", **auth)
        consumer = make_consumer(
            bootstrap_servers=bootstrap,
            group_id=settings.group_id,
            client_id="driftline-training",
            **auth,
        )
        worker_clock = asyncio.get_running_loop().time
        state = await restore_state(store, pipeline, settings, worker_clock())
        wire_champion(state, pipeline)
        await producer.start()
        await consumer.start()
        if state.champion is not None:
            await announce_champion(
                bootstrap,
                topics.champions,
                producer,
                state.champion,
                pipeline.initial_champion(),
                client_id="driftline-training",
                auth=auth,
            )
        upstream = await exits.enter_async_context(
            learner_upstream(settings, client_id="driftline-training")
        )
        worker = TrainingWorker(
            consumer,
            producer,
            store,
            registry,
            topics,
            state,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_seconds=settings.checkpoint_seconds,
            batch_size=settings.batch_size,
            poll_ms=settings.poll_ms,
            task=pipeline.task,
            clock=worker_clock,
            live_seconds=settings.live_seconds,
            version_seconds=settings.version_seconds,
            upstream=upstream,
        )
        consumer.subscribe([topics.features, topics.labels], listener=worker.listener)
        metrics.LEARNER.source = lambda: worker.state.learner
        # what start-up built (the restored state, the models) lives as long as the
        # process: keep it out of the collector's full passes
        gc.collect()
        gc.freeze()
        task = tasks.start(worker.run(), name="training-loop", essential=True)
        app.state.settings = settings
        app.state.registry = registry
        app.state.worker = worker
        app.state.worker_task = task
        names = [m.name for m in pipeline.models]
        log.info("training %s on %s and %s", names, topics.features, topics.labels)
        try:
            yield
        finally:
            worker.stop()
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
            except Exception:
                log.exception(
                    "no clean last checkpoint; the next start resumes from the one before"
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            metrics.LEARNER.source = lambda: None
            await exits.aclose()
            await consumer.stop()
            await producer.stop()
            await redis.aclose()

    app = FastAPI(title="Driftline training", lifespan=lifespan)
    app.include_router(router)
    app.include_router(health.router)
    return app
