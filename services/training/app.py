"""Bootstrap: restores the training state and wires Kafka, Redis and the learner."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from redis.asyncio import Redis

from services.training import metrics
from services.training.api import router
from services.training.checkpoint import CheckpointStore, TrainingState
from services.training.config import TrainingSettings
from services.training.learner import OnlineLearner
from services.training.worker import TrainingWorker
from shared import health, tasks
from shared.catalogue import build_model
from shared.kafka import make_consumer, make_producer
from shared.pipeline import PipelineConfig, load_pipeline
from shared.registry import ModelRegistry
from shared.topics import Topics, ensure_topics
from shared.watermark import LearnerWatermark

__all__ = ["create_app", "fresh_state", "restore_state"]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 20.0


def fresh_state(pipeline: PipelineConfig, settings: TrainingSettings) -> TrainingState:
    """Untrained models of the pipeline, side by side in one learner; nothing read yet."""
    models = {m.name: build_model(m.name, m.params, pipeline.task) for m in pipeline.models}
    return TrainingState(
        learner=OnlineLearner(models, ttl=pipeline.labels.ttl),
        watermark=LearnerWatermark(settings.idle_ms / 1000, settings.label_wait_ms / 1000),
        config_hash=pipeline.config_hash(),
    )


async def restore_state(
    store: CheckpointStore, pipeline: PipelineConfig, settings: TrainingSettings, now: float
) -> TrainingState:
    """The checkpointed state, or a fresh one if there is none or the pipeline changed."""
    state = await store.load()
    if state is None:
        log.info("no checkpoint at %s: training from the beginning of the topics", store.key)
        return fresh_state(pipeline, settings)
    if state.config_hash != pipeline.config_hash():
        log.warning(
            "the checkpoint was made with pipeline %s, not %s: retraining from the beginning",
            state.config_hash,
            pipeline.config_hash(),
        )
        return fresh_state(pipeline, settings)
    state.watermark.idle_s = settings.idle_ms / 1000
    state.watermark.hold_s = settings.label_wait_ms / 1000
    state.watermark.restart(now)
    log.info(
        "restored the checkpoint of %s: records=%d versions=%s",
        state.saved_at,
        state.records,
        state.versions,
    )
    return state


def create_app(settings: TrainingSettings | None = None) -> FastAPI:
    settings = settings or TrainingSettings()
    topics = Topics(settings.topic_prefix)
    pipeline = load_pipeline(settings.pipeline_config)  # fail fast on a bad pipeline file

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.kafka_bootstrap_servers
        prefix = settings.topic_prefix
        await ensure_topics(bootstrap, prefix, settings.topic_partitions)
        redis = Redis.from_url(settings.redis_url)
        registry = ModelRegistry(
            redis, namespace=f"driftline:{prefix}registry", keep=settings.registry_keep
        )
        store = CheckpointStore(redis, registry, key=f"driftline:{prefix}training:checkpoint")
        producer = make_producer(bootstrap, client_id="driftline-training")
        consumer = make_consumer(
            bootstrap_servers=bootstrap, group_id=settings.group_id, client_id="driftline-training"
        )
        worker_clock = asyncio.get_running_loop().time
        state = await restore_state(store, pipeline, settings, worker_clock())
        await producer.start()
        await consumer.start()
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
            await consumer.stop()
            await producer.stop()
            await redis.aclose()

    app = FastAPI(title="Driftline training", lifespan=lifespan)
    app.include_router(router)
    app.include_router(health.router)
    return app
