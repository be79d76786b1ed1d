"""Bootstrap of one HTTP worker: wires Kafka, Redis, the pipeline and the handlers into the app.

Each worker process (see `processes`) builds its own app: its own Redis client, its
own producer for `http` predictions and its own groupless `models` reader, so each
hot-swaps the champion by itself. The stream scorer is another process
(`stream_process`); a worker only reads its health from the shared `StreamStatus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from services.serving import admin, metrics
from services.serving.api import router
from services.serving.bootstrap import watched_models
from services.serving.config import ServingSettings
from services.serving.context import ServingContext
from services.serving.errors import install_error_handlers
from services.serving.live import LiveRows
from services.serving.models import ModelHolder
from services.serving.processes import StreamStatus
from services.serving.publisher import PredictionPublisher
from shared import tasks
from shared.body_limit import BodyLimit
from shared.features import FeatureComputer
from shared.http_keys import KeyCheck
from shared.kafka import make_producer
from shared.messages import ChampionChanged
from shared.pipeline import load_pipeline
from shared.topics import Topics

__all__ = ["MAX_IDLE_S", "build_app", "create_app"]

log = logging.getLogger(__name__)

CLIENT_ID = "driftline-serving"
MAX_IDLE_S = 30.0  # a consumer that has not polled for this long is considered stuck

Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


async def _flush_metrics(every_s: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        metrics.TALLY.flush()


def build_app(lifespan: Lifespan) -> FastAPI:
    """The FastAPI app around a lifespan that sets `app.state.context` (tests pass fakes)."""
    app = FastAPI(title="Driftline serving", lifespan=lifespan)
    app.include_router(router)
    app.include_router(admin.router)
    install_error_handlers(app)
    return app


def create_app(
    settings: ServingSettings | None = None,
    stream: StreamStatus | None = None,
    process: str = "http-0",
) -> FastAPI:
    """The app of one HTTP worker named `process`; `stream` is the scorer's shared status."""
    settings = settings or ServingSettings()
    topics = Topics(settings.topic_prefix)
    stream = stream or StreamStatus(enabled=False)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.set_process(process)
        pipeline = load_pipeline(settings.pipeline_config)  # fail fast on a bad config
        holder = ModelHolder(champion=pipeline.initial_champion(), keep=settings.registry_keep)
        store = LiveRows(
            settings.redis_url,
            namespace=f"driftline:{settings.topic_prefix}features",
            timeout_s=settings.redis_timeout_s,
        )
        producer = make_producer(
            settings.kafka_bootstrap_servers, client_id=CLIENT_ID, **settings.kafka()
        )
        await producer.start()
        await producer.partitions_for(topics.predictions)  # the first send then never waits
        publisher = PredictionPublisher(
            producer, topics.predictions, max_pending=settings.max_pending_publishes
        )

        async def send_change(change: ChampionChanged) -> None:
            await producer.send_and_wait(topics.champions, change.to_json(), key=b"champion")

        try:
            async with watched_models(settings, holder, client_id=CLIENT_ID) as watcher:
                publisher.start()

                def liveness() -> tuple[bool, dict[str, Any]]:
                    alive = watcher.alive(MAX_IDLE_S) and stream.alive()
                    return alive, {
                        "process": process,
                        "workers": settings.workers,
                        "models_idle_s": round(watcher.seconds_since_poll(), 3),
                        **stream.details(),
                    }

                app.state.context = ServingContext(
                    holder=holder,
                    store=store,
                    computer=FeatureComputer(pipeline),
                    sink=publisher,
                    liveness=liveness,
                    reader=KeyCheck(settings.driftline_reader_key, "reader"),
                    admin=KeyCheck(settings.driftline_api_key, "API"),
                    models=tuple(m.name for m in pipeline.models),
                    send_change=send_change,
                    admin_wait_s=settings.admin_wait_s,
                )
                log.info(
                    "%s serving %s (champion %s) from %s",
                    process,
                    pipeline.name,
                    holder.champion,
                    topics.models,
                )
                flushing = tasks.start(_flush_metrics(), name="serving-metrics-flush")
                # what start-up built lives as long as the worker: keep it out of the
                # collector's full passes, which then stay short (tail latency)
                gc.collect()
                gc.freeze()
                try:
                    yield
                finally:
                    await tasks.cancel(flushing)
                    metrics.TALLY.flush()
                    await publisher.close()
        finally:
            await producer.stop()
            await store.aclose()

    app = build_app(lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    return app
