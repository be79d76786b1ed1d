"""Bootstrap of the stream scorer process: wires Kafka, Redis and a model watcher to `FeatureScorer`.

The supervisor (`processes`) starts it as a child of `python -m services.serving`
and restarts it if it exits. While it runs, a heartbeat task moves the shared
`StreamStatus` deadline forward as long as the scorer and its model watcher keep
polling; the HTTP workers' `/healthz` answers 503 once the deadline has passed. A
SIGTERM lets the batch in hand finish (produced, acknowledged, committed) first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from services.serving import metrics
from services.serving.bootstrap import watched_models
from services.serving.config import ServingSettings
from services.serving.models import ModelHolder
from services.serving.processes import StreamStatus, die_with_parent
from services.serving.stream import FeatureScorer
from services.serving.watcher import ModelWatcher
from shared import tasks
from shared.kafka import make_consumer, make_producer
from shared.logs import configure_logging
from shared.pipeline import load_pipeline
from shared.topics import Topics

__all__ = ["HEARTBEAT_S", "MAX_IDLE_S", "STREAM_NICENESS", "run_stream_process", "score_stream"]

log = logging.getLogger(__name__)

CLIENT_ID = "driftline-serving-stream"
MAX_IDLE_S = 30.0  # a scorer that has not polled for this long is stuck
HEARTBEAT_S = 1.0
STREAM_NICENESS = 5  # the scorer's CPU weight is about a third of an HTTP worker's


def run_stream_process(settings: ServingSettings, status: StreamStatus, parent_pid: int) -> None:
    """The child process's entry point."""
    die_with_parent(parent_pid)
    status.pid = os.getpid()
    # when CPU is short, the kernel runs HTTP workers first: a request waits for
    # no scoring burst, the stream only lags (and catches up in larger batches)
    os.nice(STREAM_NICENESS)
    configure_logging(settings.log_level)
    metrics.set_process("stream")
    asyncio.run(score_stream(settings, status))


async def _heartbeat(scorer: FeatureScorer, watcher: ModelWatcher, status: StreamStatus) -> None:
    while True:
        idle = max(scorer.seconds_since_poll(), watcher.seconds_since_poll())
        status.extend(MAX_IDLE_S - idle)
        await asyncio.sleep(HEARTBEAT_S)


async def score_stream(settings: ServingSettings, status: StreamStatus) -> None:
    """Score `features` until SIGTERM or SIGINT (or until a task fails: then raise)."""
    topics = Topics(settings.topic_prefix)
    pipeline = load_pipeline(settings.pipeline_config)
    holder = ModelHolder(champion=pipeline.models[0].name, keep=settings.registry_keep)
    bootstrap = settings.kafka_bootstrap_servers
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = make_producer(bootstrap, client_id=CLIENT_ID)
    consumer = make_consumer(
        topics.features,
        bootstrap_servers=bootstrap,
        group_id=settings.group_id,
        client_id=CLIENT_ID,
    )
    await producer.start()
    try:
        await producer.partitions_for(topics.predictions)
        async with watched_models(settings, holder, client_id=CLIENT_ID) as watcher:
            await consumer.start()
            try:
                scorer = FeatureScorer(
                    consumer, producer, holder, topics.predictions, batch_size=settings.batch_size
                )
                running = [
                    tasks.start(scorer.run(), name="serving-features-scorer"),
                    tasks.start(_heartbeat(scorer, watcher, status), name="serving-heartbeat"),
                ]
                assert watcher.task is not None
                log.info(
                    "scoring %s with %s (group %s)",
                    topics.features,
                    holder.champion,
                    settings.group_id,
                )
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait(
                    [stopping, watcher.task, *running], return_when=asyncio.FIRST_COMPLETED
                )
                stopping.cancel()
                await tasks.cancel(*running)  # the scorer finishes its batch in hand first
                if not stop.is_set():
                    failed = next(t for t in done if t is not stopping)
                    error = None if failed.cancelled() else failed.exception()
                    raise RuntimeError(f"{failed.get_name()} stopped") from error
            finally:
                await consumer.stop()
    finally:
        await producer.stop()
