"""Bootstrap: wires Kafka, the pipeline config and the monitor into the service."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.monitoring.api import router
from services.monitoring.config import MonitoringSettings
from services.monitoring.consumer import MonitoringWorker, read_alerts
from services.monitoring.data_drift import DataDrift
from services.monitoring.handler import source_view
from services.monitoring.lag import LagWatch, open_lag_watch, watched_groups
from services.monitoring.metrics import MonitoringMetrics
from services.monitoring.models import ModelsFollower
from services.monitoring.monitor import Monitor
from services.monitoring.snapshot import SnapshotStore, identity, snapshot_key
from services.monitoring.webhooks import Webhooks, parse_urls
from shared import tasks
from shared.kafka import make_consumer, make_producer
from shared.pipeline import load_pipeline
from shared.topics import Topics, ensure_topics
from shared.upstream import Hop, open_upstream

__all__ = ["create_app"]

log = logging.getLogger(__name__)

CLIENT_ID = "driftline-monitoring"


def source_chains(settings: MonitoringSettings, topics: Topics) -> dict[str, list[Hop]]:
    """Who writes each timed source of predictions, from what: training's learner reads
    `features` and `labels`, serving's stream scorer `features`."""
    training, serving = settings.training_group_id, settings.serving_group_id
    learner = source_view((topics.predictions, 0), "learner")[0]
    stream = source_view((topics.predictions, 0), "stream")[0]
    return {
        learner: [Hop(training, topics.features), Hop(training, topics.labels)],
        stream: [Hop(serving, topics.features)],
    }


def create_app(settings: MonitoringSettings | None = None) -> FastAPI:
    settings = settings or MonitoringSettings()
    topics = Topics(settings.topic_prefix)
    pipeline = load_pipeline(settings.pipeline_config)  # fails fast on a bad file

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap = settings.kafka_bootstrap_servers
        exits = contextlib.AsyncExitStack()
        auth = settings.kafka()
        await ensure_topics(bootstrap, settings.topic_prefix, settings.topic_partitions, auth)
        redis = settings.redis()
        exits.push_async_callback(redis.aclose)
        snapshots = SnapshotStore(
            redis,
            snapshot_key(settings.topic_prefix),
            identity(pipeline, settings),
            signing_key=settings.signing_key(),
        )
        snapshot = await snapshots.load() if settings.snapshot_seconds > 0 else None
        monitor = (
            snapshot.monitor
            if snapshot is not None
            else Monitor(
                pipeline.task,
                pipeline.labels.ttl,
                window_size=settings.window_size,
                drift_delta=settings.drift_delta,
                drift_warmup=settings.drift_warmup,
                drift_margin=settings.drift_margin,
                history_every=settings.history_every,
                keep_versions=settings.registry_keep,
                history_points=settings.history_points,
                data_drift=DataDrift(pipeline.features, pipeline.data_drift),
            )
        )
        if snapshot is not None:
            log.info("monitoring reads on from its snapshot at %s", snapshot.offsets)
        alerts_reader = make_consumer(
            bootstrap_servers=bootstrap, group_id=None, client_id=CLIENT_ID, **auth
        )
        await alerts_reader.start()
        try:
            monitor.restore_alerts(await read_alerts(alerts_reader, bootstrap, topics.alerts, auth))
        finally:
            await alerts_reader.stop()
        metrics = MonitoringMetrics(monitor)
        producer = make_producer(bootstrap, client_id=CLIENT_ID, **auth)
        consumer = make_consumer(
            bootstrap_servers=bootstrap,
            group_id=settings.group_id,
            client_id=CLIENT_ID,
            **auth,
        )
        await producer.start()
        await consumer.start()
        webhooks = None
        if urls := parse_urls(settings.alert_webhook_urls):
            webhooks = Webhooks(
                urls,
                metrics.registry,
                timeout_s=settings.webhook_timeout_s,
                attempts=settings.webhook_attempts,
            )
            webhooks.start()
            exits.push_async_callback(webhooks.stop)
        upstream = await exits.enter_async_context(
            open_upstream(settings, source_chains(settings, topics), CLIENT_ID)
        )
        worker = MonitoringWorker(
            consumer,
            producer,
            monitor,
            topics,
            metrics,
            bootstrap_servers=bootstrap,
            auth=auth,
            batch_size=settings.batch_size,
            idle_s=settings.idle_partition_s,
            max_jump=settings.max_jump(),
            upstream=upstream,
            watermark=snapshot.watermark if snapshot is not None else None,
            start_offsets=snapshot.offsets if snapshot is not None else None,
            snapshots=snapshots if settings.snapshot_seconds > 0 else None,
            snapshot_every_s=settings.snapshot_seconds,
            webhooks=webhooks,
        )
        await worker.start()
        task = tasks.start(worker.run(), name="monitoring-consumer", essential=True)
        watched = watched_groups(
            settings,
            topics,
            settings.group_id,
            settings.training_group_id,
            settings.serving_group_id,
        )
        lag = LagWatch(None, None, watched, settings.lag_every_s)
        if settings.lag_every_s > 0:  # not essential: the dashboard shows what it last got
            lag = await exits.enter_async_context(
                open_lag_watch(bootstrap, watched, CLIENT_ID, settings.lag_every_s, auth)
            )
            lag_task = tasks.start(lag.run(), name="monitoring-lag")
            exits.push_async_callback(tasks.cancel, lag_task)
        app.state.settings = settings
        app.state.pipeline = pipeline
        app.state.monitor = monitor
        app.state.metrics = metrics
        app.state.worker = worker
        app.state.worker_task = task
        app.state.lag = lag
        models_reader = make_consumer(
            bootstrap_servers=bootstrap, group_id=None, client_id=CLIENT_ID, **auth
        )
        await models_reader.start()
        exits.push_async_callback(models_reader.stop)
        models = ModelsFollower(
            models_reader,
            topics.models,
            bootstrap,
            auth,
            champions=topics.champions,
            alerts=topics.alerts,
            initial=pipeline.initial_champion(),
        )
        models_task = tasks.start(models.run(), name="monitoring-models")
        exits.push_async_callback(tasks.cancel, models_task)
        app.state.models = models
        log.info(
            "monitoring consuming %s, %s, %s", topics.predictions, topics.labels, topics.features
        )
        try:
            yield
        finally:
            await tasks.cancel(task)
            await exits.aclose()
            await consumer.stop()
            await producer.stop()

    app = FastAPI(title="Driftline monitoring", lifespan=lifespan)
    app.include_router(router)
    return app
