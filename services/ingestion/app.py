"""Bootstrap: wires Kafka, Redis and the handlers into the ingestion service."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.ingestion.api import router, too_large
from services.ingestion.config import IngestionSettings
from services.ingestion.consumer import IngestionWorker
from services.ingestion.seen import RedisSeenStore, pack_with_hiredis
from shared import health, tasks
from shared.body_limit import BodyLimit
from shared.http_keys import KeyCheck
from shared.kafka import make_consumer, make_producer
from shared.topics import Topics, ensure_topics

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: IngestionSettings | None = None) -> FastAPI:
    settings = settings or IngestionSettings()
    topics = Topics(settings.topic_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.kafka_bootstrap_servers
        auth = settings.kafka()
        await ensure_topics(bootstrap, settings.topic_prefix, settings.topic_partitions, auth)
        redis = pack_with_hiredis(settings.redis())
        producer = make_producer(bootstrap, client_id="driftline-ingestion", **auth)
        consumer = make_consumer(
            topics.events_raw,
            topics.labels_raw,
            bootstrap_servers=bootstrap,
            group_id=settings.group_id,
            client_id="driftline-ingestion",
            **auth,
        )
        await producer.start()
        await consumer.start()
        worker = IngestionWorker(
            consumer,
            producer,
            RedisSeenStore(
                redis,
                namespace=f"driftline:{settings.topic_prefix}ingest:seen",
                topics={"event": topics.events_raw, "label": topics.labels_raw},
                window_s=settings.dedup_window_s,
            ),
            topics,
            max_bytes=settings.max_message_bytes,
            max_future_s=settings.max_future_s,
            batch_size=settings.batch_size,
        )
        # What start-up built lives as long as the worker: keep it out of the
        # collector's full passes (each batch's survivors trigger them; they walked
        # ~90k start-up objects, about 12% of the CPU per event).
        gc.collect()
        gc.freeze()
        task = tasks.start(worker.run(), name="ingestion-consumer", essential=True)
        app.state.settings = settings
        app.state.writer = KeyCheck(settings.driftline_writer_key, "writer")
        app.state.topics = topics
        app.state.producer = producer
        app.state.worker = worker
        app.state.worker_task = task
        log.info("ingestion consuming %s, %s", topics.events_raw, topics.labels_raw)
        try:
            yield
        finally:
            await tasks.cancel(task)
            await consumer.stop()
            await producer.stop()
            await redis.aclose()

    app = FastAPI(title="Driftline ingestion", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, problem=too_large)
    app.include_router(router)
    app.include_router(health.router)
    return app
