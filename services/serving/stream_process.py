"""Bootstrap of the stream scorer process: the learner's replica, or a scorer of a followed model.

With `STREAM_MODEL=replica` (the default) it wires Kafka and training's checkpoint
to a `LearnerReplica`; with `follow`, Kafka and a model watcher to `FeatureScorer`.
The supervisor (`processes`) starts it as a child of `python -m services.serving`
and restarts it if it exits. While it runs, a heartbeat task moves the shared
`StreamStatus` deadline forward as long as its loops keep polling; the HTTP
workers' `/healthz` answers 503 once the deadline has passed. A SIGTERM lets the
scorer's batch in hand finish (produced, acknowledged, committed) first; a restarted
replica replays from its own checkpoint (its group offsets are for lag tools only).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.serving import metrics
from services.serving.bootstrap import watched_models
from services.serving.config import ServingSettings
from services.serving.models import ModelHolder
from services.serving.processes import StreamStatus, die_with_parent
from services.serving.replica import GC_THRESHOLDS, LearnerReplica, restore_replica
from services.serving.stream import FeatureScorer
from services.training.checkpoint import CheckpointStore, checkpoint_key
from services.training.feed import LearnerFeed
from shared import tasks
from shared.champions import ChampionView, decode_change, read_changes
from shared.kafka import make_consumer, make_producer
from shared.logs import configure_logging
from shared.pipeline import load_pipeline
from shared.registry import ModelRegistry
from shared.topics import Topics, partitions_of
from shared.upstream import learner_upstream

__all__ = ["HEARTBEAT_S", "MAX_IDLE_S", "run_stream_process", "score_stream"]

log = logging.getLogger(__name__)

CLIENT_ID = "driftline-serving-stream"
MAX_IDLE_S = 30.0  # a scorer that has not polled for this long is stuck
HEARTBEAT_S = 1.0
REPLICA_FETCH_MIN_BYTES = 256 * 1024
REPLICA_FETCH_WAIT_MS = 100


def run_stream_process(settings: ServingSettings, status: StreamStatus, parent_pid: int) -> None:
    """The child process's entry point."""
    die_with_parent(parent_pid)
    status.pid = os.getpid()
    # when CPU is short, the kernel runs HTTP workers first: a request waits for
    # no scoring burst, the stream only lags (and catches up in larger batches)
    os.nice(settings.stream_niceness)
    if settings.stream_model == "replica":
        gc.set_threshold(*GC_THRESHOLDS)
    configure_logging(settings.log_level)
    metrics.set_process("stream")
    asyncio.run(score_stream(settings, status))


class _Polling(Protocol):
    def seconds_since_poll(self) -> float: ...


async def _heartbeat(pollers: list[_Polling], status: StreamStatus) -> None:
    while True:
        idle = max(poller.seconds_since_poll() for poller in pollers)
        status.extend(MAX_IDLE_S - idle)
        await asyncio.sleep(HEARTBEAT_S)


Running = tuple[list[asyncio.Task[Any]], list[_Polling]]  # its tasks, what must keep polling


@contextlib.asynccontextmanager
async def _followed_model(
    settings: ServingSettings, producer: AIOKafkaProducer, topics: Topics
) -> AsyncIterator[Running]:
    """`STREAM_MODEL=follow`: `features` scored in its group with the model followed."""
    pipeline = load_pipeline(settings.pipeline_config)
    holder = ModelHolder(champion=pipeline.initial_champion(), keep=settings.registry_keep)
    consumer = make_consumer(
        topics.features,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.group_id,
        client_id=CLIENT_ID,
        **settings.kafka(),
    )
    async with watched_models(settings, holder, client_id=CLIENT_ID) as watcher:
        await consumer.start()
        try:
            scorer = FeatureScorer(
                consumer, producer, holder, topics.predictions, batch_size=settings.batch_size
            )
            running = tasks.start(scorer.run(), name="serving-features-scorer")
            assert watcher.task is not None
            log.info(
                "scoring %s with %s (group %s)", topics.features, holder.champion, settings.group_id
            )
            try:
                yield [running, watcher.task], [scorer, watcher]
            finally:
                await tasks.cancel(running)  # the scorer finishes its batch in hand first
        finally:
            await consumer.stop()


@contextlib.asynccontextmanager
async def _replicated_learner(
    settings: ServingSettings, producer: AIOKafkaProducer, topics: Topics
) -> AsyncIterator[Running]:
    """`STREAM_MODEL=replica`: the champion learned here from every partition (see `replica`)."""
    pipeline = load_pipeline(settings.pipeline_config)
    prefix, bootstrap = settings.topic_prefix, settings.kafka_bootstrap_servers
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.artifact_timeout_s,
        socket_connect_timeout=settings.artifact_timeout_s,
    )
    registry = ModelRegistry(
        redis, namespace=f"driftline:{prefix}registry", signing_key=settings.signing_key()
    )
    consumer = make_consumer(
        bootstrap_servers=bootstrap,
        group_id=settings.group_id,  # partitions assigned: the group only holds offsets
        client_id=CLIENT_ID,
        # the broker answers a fetch once it has this much or this long has passed:
        # at 1,000 events/s ten fetches a second instead of hundreds of tiny ones
        fetch_min_bytes=REPLICA_FETCH_MIN_BYTES,
        fetch_max_wait_ms=REPLICA_FETCH_WAIT_MS,
        **settings.kafka(),
    )
    exits = contextlib.AsyncExitStack()
    try:
        clock = asyncio.get_running_loop().time
        upstream = await exits.enter_async_context(learner_upstream(settings, CLIENT_ID))
        champions = make_consumer(
            bootstrap_servers=bootstrap, group_id=None, client_id=CLIENT_ID, **settings.kafka()
        )
        await champions.start()
        exits.push_async_callback(champions.stop)
        view = ChampionView(pipeline.initial_champion())
        numbers = await partitions_of(bootstrap, topics.champions, settings.kafka())
        for change in await read_changes(
            champions, [TopicPartition(topics.champions, p) for p in numbers]
        ):
            view.apply(change)
        champion = view.model
        training = CheckpointStore(redis, registry, checkpoint_key(prefix))
        own = CheckpointStore(redis, registry, f"driftline:{prefix}serving:replica")
        state, published = await restore_replica(
            own, training, pipeline, settings, clock(), champion
        )
        feed = LearnerFeed(
            state,
            features=topics.features,
            labels=topics.labels,
            task=pipeline.task,
            upstream=upstream,
        )
        replica = LearnerReplica(
            consumer,
            producer,
            feed,
            registry,
            own,
            champion=champion,
            predictions_topic=topics.predictions,
            checkpoint_seconds=settings.replica_checkpoint_seconds,
            batch_size=settings.batch_size,
            clock=clock,
            published=published,
        )
        await consumer.start()
        partitions = {
            t: await partitions_of(bootstrap, t, settings.kafka())
            for t in (topics.features, topics.labels)
        }
        await replica.start(partitions)
        gc.collect()
        gc.freeze()  # the restored state lives as long as the process
        running = [
            tasks.start(replica.run(), name="serving-learner-replica"),
            tasks.start(replica.follow_versions(), name="serving-replica-versions"),
            # a new champion: this process ends and is started again to learn it
            tasks.start(_until_changed(champions, view, replica), name="serving-champion-changed"),
        ]
        try:
            yield running, [replica]
        finally:
            await tasks.cancel(*running)
    finally:
        await exits.aclose()
        await consumer.stop()
        await redis.aclose()


async def _until_changed(
    consumer: AIOKafkaConsumer, view: ChampionView, replica: LearnerReplica
) -> None:
    """Return once the `champions` topic names another champion than `view`'s, the
    replica stopped and checkpointed (what it published, for the next champion)."""
    while True:
        batch = await consumer.getmany(timeout_ms=1000)
        for record in (r for records in batch.values() for r in records):
            change = decode_change(record)
            if change is not None and view.apply(change):
                log.info(
                    "the champion is now %s: the stream scorer restarts to learn it", view.model
                )
                try:
                    await replica.save_and_stop()
                except (RedisError, OSError) as error:  # then from its last checkpoint
                    log.warning("replica checkpoint not written at the change: %r", error)
                return


async def score_stream(settings: ServingSettings, status: StreamStatus) -> None:
    """Score `features` until SIGTERM or SIGINT (or until a task fails: then raise)."""
    topics = Topics(settings.topic_prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = make_producer(
        settings.kafka_bootstrap_servers, client_id=CLIENT_ID, **settings.kafka()
    )
    source = _replicated_learner if settings.stream_model == "replica" else _followed_model
    await producer.start()
    try:
        await producer.partitions_for(topics.predictions)
        async with source(settings, producer, topics) as (running, pollers):
            beat = tasks.start(_heartbeat(pollers, status), name="serving-heartbeat")
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                [stopping, beat, *running], return_when=asyncio.FIRST_COMPLETED
            )
            stopping.cancel()
            await tasks.cancel(beat)
            if not stop.is_set():
                failed = next(t for t in done if t is not stopping)
                error = None if failed.cancelled() else failed.exception()
                raise RuntimeError(f"{failed.get_name()} stopped") from error
    finally:
        await producer.stop()
