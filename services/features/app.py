"""Bootstrap: wires faust (topics, state table, web), Redis and the handler.

One agent consumes `events` in batches (`BATCH_SIZE`, `BATCH_WITHIN_S`). For each batch:
`plan_batch` computes the vectors, reading and updating the per-entity windows kept in
faust tables (`services.features.state`: what each batch changed goes to their changelog
topics, on the source record's partition, so a restart or a new owner of the partition
recovers the windows);
then the entity rows are written to Redis in one pipeline (retried until Redis answers),
then the vectors are produced to `features` and their acks awaited, and the state's
changelog writes too. Only then does the agent keep, in a second changelogged table
(`source_offsets`), the next offset of each `events` partition it handled, await that
write's ack, and let faust acknowledge the events.

Faust's own offsets are not enough. Its commit can lag what was handled (a stop racing a
periodic commit), so a restart redelivers records: those below `source_offsets` were
published already and are dropped, as is a record its fetcher hands over twice in one
batch. Its fetcher can drop records around a rebalance or a state recovery (acknowledged
without reaching the agent): a batch that starts past `source_offsets` has a gap, and
the agent reads the missing range itself with a plain consumer first. (A gap shows when
a later record of its partition arrives.) A stop waits for the batch in hand. Delivery
is at least once (a crash between the vectors' acks and the offsets' changelog
republishes a batch); a redelivered event finds its event_id in the state and yields the
same vector again without counting twice.

What the service does around faust rather than through it (a leaner fetch loop, raw
records decoded without faust's serializer registry, batches taken from the stream's
queue in one go, the producer for whole batches) is in `services.features.faust_io`.

While Redis is down the batch waits (retrying, `/healthz` 503) and nothing is
acknowledged; a SIGTERM then waits too, since committing would skip those events.

`GET /healthz` is 200 once the worker has partitions of `events` assigned, has
recovered its state and is not rebalancing, and the last Redis write did not fail;
503 otherwise. The body names each check: `{"status": "ok"|"unavailable",
"assigned_partitions": [...], "recovered": bool, "rebalancing": bool,
"redis_failing": bool}`. `GET /metrics` is Prometheus.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from aiokafka import TopicPartition
from faust.tables.manager import TableManager
from faust.types import FutureMessage, StreamT, TableT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from services.features import metrics
from services.features.config import FeaturesSettings
from services.features.faust_io import (
    FeaturesApp,
    commit_handled,
    handled_elsewhere,
    kafka_producer,
    take_events,
)
from services.features.handlers import (
    BatchPlan,
    IdleEntities,
    JumpGuard,
    RawEvent,
    find_gaps,
    plan_batch,
    tail_gaps,
    unhandled,
)
from services.features.state import ENTRIES_TABLE, TABLE_NAME, TableStateStore
from shared import tasks
from shared.feature_store import EntityRow, OnlineStore, RedisOnlineStore
from shared.features import FeatureComputer, time_us
from shared.kafka import make_consumer, produce_all
from shared.pipeline import load_pipeline
from shared.topics import Topics

__all__ = ["FeaturesService"]

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 5.0
OFFSETS_TABLE = "source_offsets"
GAP_READ_TIMEOUT_S = 30.0
# A stream quiet this long while a partition's handled offset is behind its end had its
# last records dropped by faust's fetcher (no later record shows the gap): read them.
TAIL_CHECK_S = 2.0


class SourceOffsets:
    """Per `events` partition, the offset after the last record handled, in a faust table."""

    def __init__(self, table: TableT[str, int]) -> None:
        self.table = table

    def next_offsets(self) -> dict[int, int]:
        return {int(p): int(o) for p, o in self.table.data.items()}

    def advance(self, records: list[RawEvent]) -> list[FutureMessage]:
        """Keep each partition's next offset; the changelog writes, to await."""
        sent: list[FutureMessage] = []
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        for partition, offset in last.items():
            key = str(partition)
            if offset + 1 > self.table.data.get(key, 0):
                self.table.data[key] = offset + 1
                sent.append(self.table.send_changelog(partition, key, offset + 1))
        return sent


class FeaturesService:
    """The faust app of the features service and the dependencies of its agent."""

    def __init__(
        self,
        settings: FeaturesSettings,
        *,
        partitions: int,
        store: OnlineStore | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.computer = FeatureComputer(
            load_pipeline(settings.pipeline_config),
            allowed_lateness=timedelta(seconds=settings.allowed_lateness_s),
            max_entries=settings.max_state_entries,
        )
        self.store: OnlineStore = store or RedisOnlineStore(
            settings.redis(),
            namespace=f"driftline:{settings.topic_prefix}features",
            ttl_s=settings.feature_ttl_s,
        )
        self.jumps = JumpGuard(settings.max_jump())
        self.redis_failing = False
        self._gapped: set[int] = set()  # events partitions that had a gap read back
        datadir = Path(settings.data_dir) / settings.app_id()
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = FeaturesApp(
            settings.app_id(),
            broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
            broker_credentials=settings.kafka_auth().faust(),
            store="memory://",
            autodiscover=False,
            datadir=str(datadir),
            topic_partitions=partitions,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            processing_guarantee="at_least_once",
            # Room for the next batch while one is handled; offsets committed often
            # enough for lag tools to show lag under a second.
            stream_buffer_maxsize=max(4096, 4 * settings.batch_size),
            broker_commit_interval=0.2,
            broker_session_timeout=settings.session_timeout_s,
            # No linger: a batch of vectors is sent in one go, then awaited as a whole,
            # so waiting longer would add to every batch's wait for its acks.
            producer_linger=0.0,
            producer_max_batch_size=256 * 1024,
            web_enabled=True,
            web_bind=settings.host,
            web_host=settings.host,
            web_port=settings.port,
        )
        # Keys and values are JSON (faust's default for untyped tables).
        self.table = self.app.Table(TABLE_NAME, default=None, partitions=partitions)
        entries = self.app.Table(ENTRIES_TABLE, default=None, partitions=partitions)
        self.idle = IdleEntities(self.computer.retention // timedelta(microseconds=1))
        self.states = TableStateStore(self.table, entries, self.computer, self.idle)
        self._track_all = True  # after a recovery: the table holds entities not yet tracked
        self.offsets = SourceOffsets(
            self.app.Table(OFFSETS_TABLE, default=None, partitions=partitions)
        )
        self.source = self.app.topic(
            self.topics.events, key_serializer="raw", value_serializer="raw"
        )
        self.sink = self.app.topic(
            self.topics.features, key_serializer="raw", value_serializer="raw"
        )
        self.app.agent(self.source, name="compute-features")(self._agent)
        self.app.page("/healthz")(self._healthz_view())
        self.app.page("/metrics")(_metrics_view)
        self.app.task(self._settle_logging)
        self.app.task(self._start_recovery_watch)
        self.app.timer(TAIL_CHECK_S)(self._read_tail)
        self._handling = asyncio.Lock()  # one batch at a time: the agent's, or the tail's
        self._last_batch = time.monotonic()
        self.app.on_rebalance_complete.connect(self._recovered)

    def _recovered(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Faust signals each table recovery (a start, a rebalance) before the agent resumes."""
        self._track_all = True

    async def _start_recovery_watch(self) -> None:
        recovery = cast(TableManager, self.app.tables).recovery
        watch = recovery_watch(recovery, self.settings.recovery_stall_s)
        tasks.start(watch, name="features-recovery-watch", essential=True)

    async def _settle_logging(self) -> None:
        """Faust's worker leaves the root logger at DEBUG as it starts, and faust logs a
        debug line per record sent: set the configured level back."""
        logging.getLogger().setLevel(self.settings.log_level.upper())

    async def _agent(self, stream: StreamT[bytes]) -> None:
        settings = self.settings
        # What start-up built lives as long as the worker: keep it out of the
        # collector's full passes.
        gc.collect()
        gc.freeze()
        batches = take_events(stream, settings.batch_size, settings.batch_within_s)
        async for events in batches:
            records = [
                RawEvent(
                    e.message.partition,
                    e.message.offset,
                    e.value,
                    int(e.message.timestamp * 1000) if e.message.timestamp else None,
                )
                for e in events
            ]
            self._last_batch = time.monotonic()
            # Even when faust stops the agent: a batch cut short after its vectors
            # went out but before its offsets were kept is published again.
            await tasks.finish(self._handle_new(records))

    async def _read_tail(self) -> None:
        """Every `TAIL_CHECK_S`, while no batch comes: records up to each partition's end
        that never reached the agent (faust's fetcher dropped a stream's last records
        around a recovery; a gap is otherwise seen only when a later record comes)."""
        if time.monotonic() - self._last_batch < TAIL_CHECK_S or not self.health()[0]:
            return
        consumer = cast(Any, self.app.consumer)
        mine = [tp for tp in consumer.assignment() if tp.topic == self.topics.events]
        if not mine:
            return
        ends = {tp.partition: end for tp, end in (await consumer.highwaters(*mine)).items()}
        if tail_gaps(self.offsets.next_offsets(), ends):
            await tasks.finish(self._handle_new([], ends))

    async def _handle_new(
        self, records: list[RawEvent], ends: dict[int, int] | None = None
    ) -> None:
        """Drop records handled before a restart, read back skipped ones (and, with
        `ends`, any between the last handled and a partition's end), handle the rest."""
        async with self._handling:
            await self._handle_fresh(records, ends or {})

    async def _handle_fresh(self, records: list[RawEvent], ends: dict[int, int]) -> None:
        next_offsets = self.offsets.next_offsets()
        fresh = unhandled(records, next_offsets)
        if len(fresh) < len(records):
            log.info("skipped %d records handled already", len(records) - len(fresh))
            metrics.REDELIVERED.inc(len(records) - len(fresh))
        gaps = find_gaps(fresh, next_offsets) + tail_gaps(next_offsets, ends)
        if not fresh and not gaps:
            return
        await self.handle(await self._fill_gaps(fresh, gaps))
        for partition, first, end in gaps:  # published: faust's commits may pass them
            await handled_elsewhere(self.app, self.topics.events, partition, first, end - 1)
            self._gapped.add(partition)
        if self._gapped:  # and the group shows what was handled, whatever faust commits
            handled = self.offsets.next_offsets()
            mine = {p: handled[p] for p in self._gapped if p in handled}
            await commit_handled(self.app, self.topics.events, mine)

    async def _fill_gaps(
        self, records: list[RawEvent], gaps: list[tuple[int, int, int]]
    ) -> list[RawEvent]:
        """The batch with any offsets faust skipped (`gaps`) read back in, in offset order."""
        if not gaps:
            return records
        filled = list(records)
        for partition, first, end in gaps:
            missing = await self._read_range(partition, first, end)
            log.warning(
                "events/%d: offsets %d..%d never reached the agent; read %d of them directly",
                partition,
                first,
                end - 1,
                len(missing),
            )
            metrics.GAP_RECORDS.inc(len(missing))
            filled += missing
        return sorted(filled, key=lambda r: (r.partition, r.offset))

    async def _read_range(self, partition: int, first: int, end: int) -> list[RawEvent]:
        """Records `first`..`end - 1` of one `events` partition, with a group-less consumer."""
        tp = TopicPartition(self.topics.events, partition)
        consumer = make_consumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None,
            client_id="driftline-features-gaps",
            **self.settings.kafka(),
        )
        await consumer.start()
        out: list[RawEvent] = []
        try:
            consumer.assign([tp])
            consumer.seek(tp, first)
            deadline = time.monotonic() + GAP_READ_TIMEOUT_S
            while await consumer.position(tp) < end and time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=500)
                out += [
                    RawEvent(partition, r.offset, r.value, r.timestamp)
                    for r in batch.get(tp, [])
                    if r.offset < end
                ]
        finally:
            await consumer.stop()
        return out

    async def handle(self, records: list[RawEvent]) -> BatchPlan:
        """Compute, store and publish one batch (the faust-free part of the agent)."""
        plan = plan_batch(records, self.states, self.computer, self.jumps)
        metrics.HELD_JUMPS.set(self.jumps.held)
        self._forget_idle()
        for invalid in plan.invalid:
            metrics.INVALID.labels(invalid.errors[0].code).inc()
        state_written = await self.states.send_changelog(kafka_producer(self.app))
        if plan.computed:
            await self._publish(plan)
        # The state first, then the offsets, each acknowledged before the next step.
        # Once the offsets are kept, the state they reflect is durable and a record at
        # or past them has not been published.
        await _acked(state_written)
        await _acked(self.offsets.advance(records))
        return plan

    def _forget_idle(self) -> None:
        """Delete the states no window can need any more (tombstones go with the batch)."""
        if self._track_all:
            self._track_all = False
            self.states.track_all()
        clocks = {p: time_us(t) for (_, p), t in self.jumps.clock.last_times().items()}
        idle = self.idle.sweep(clocks)
        for entity_id, partition in idle:
            self.states.delete(entity_id, partition)
        metrics.ENTITIES_FORGOTTEN.inc(len(idle))
        metrics.ENTITIES.set(len(self.states))

    async def _publish(self, plan: BatchPlan) -> None:
        rows = plan.rows()
        written = await self._write_rows(rows)
        metrics.REDIS_WRITES.inc(written)
        metrics.STALE_WRITES.inc(len(rows) - written)
        vectors = [(c.key(), c.vector_json()) for c in plan.computed]
        await produce_all(kafka_producer(self.app), self.topics.features, vectors)
        now_ms = time.time() * 1000
        for computed in plan.computed:
            if computed.timestamp_ms is not None:
                metrics.LATENCY.observe(max(0.0, (now_ms - computed.timestamp_ms) / 1000))
            if computed.duplicate:
                metrics.DUPLICATES.inc()
        metrics.EVENTS_PROCESSED.inc(len(plan.computed))
        metrics.VECTORS_PUBLISHED.inc(len(plan.computed))

    async def _write_rows(self, rows: list[EntityRow]) -> int:
        delay = 0.1
        while True:
            try:
                written = await self.store.write_batch(rows)
            except (RedisError, OSError) as error:
                metrics.REDIS_ERRORS.inc()
                self.redis_failing = True
                log.warning("redis write of %d rows failed (retrying): %s", len(rows), error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
            else:
                self.redis_failing = False
                return written

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the worker is processing, and why not."""
        app = self.app
        assigned = sorted(
            tp.partition for tp in app.consumer.assignment() if tp.topic == self.topics.events
        )
        recovered = cast(TableManager, app.tables).recovery.completed.is_set()
        checks = {
            "assigned_partitions": assigned,
            "recovered": recovered,
            "rebalancing": bool(app.rebalancing),
            "redis_failing": self.redis_failing,
        }
        healthy = bool(assigned) and recovered and not app.rebalancing and not self.redis_failing
        return healthy, checks

    def _healthz_view(self) -> Any:
        service = self

        async def healthz(web: View, request: Request) -> Response:
            healthy, checks = service.health()
            body = {"status": "ok" if healthy else "unavailable", **checks}
            return web.json(body, status=200 if healthy else 503)

        return healthz


async def recovery_watch(recovery: Any, stall_s: float, every_s: float = 5.0) -> None:
    """Raise once a table recovery has read nothing for `stall_s` (its changelog
    reader stuck: seen after a broker's kill -9, the records there and readable). The
    task is essential: the worker stops and its supervisor starts it again, and a
    new recovery reads the changelogs afresh. (Faust's own fields: it logs the same
    condition as a warning, and waits forever.)"""
    while True:
        await asyncio.sleep(every_s)
        started = getattr(recovery, "_recovery_started_at", None)
        if not recovery.in_recovery or started is None:
            continue
        last = getattr(recovery, "_last_active_event_processed_at", None) or started
        idle = time.monotonic() - last
        if idle > stall_s:
            raise RuntimeError(
                f"the table recovery has read nothing for {idle:.0f} s (RECOVERY_STALL_S"
                f" {stall_s:g}): restarting the worker to read the changelogs afresh"
            )


async def _acked(sent: Sequence[Awaitable[Any]]) -> None:
    """Wait until the broker acknowledged every changelog write in `sent`.

    Faust buffers table writes and sends them from a background task; its own
    `buffer.flush()` gives up after 0.1 s, so a write could still be pending at a stop.
    """
    await asyncio.gather(*sent)


async def _metrics_view(web: View, request: Request) -> Response:
    # aiohttp refuses a charset inside content_type; Prometheus text is ASCII.
    content_type = CONTENT_TYPE_LATEST.split("; charset=")[0]
    return web.bytes(generate_latest(), content_type=content_type)
