"""The Kafka side of monitoring: read on from the last snapshot, then follow live.

At start the worker reads the alerts already published, then assigns itself every
partition of `predictions`, `labels` and `features` (for data drift), seeks to the
offsets of the last snapshot (`services.monitoring.snapshot`; the beginning without
one) and replays what follows through the `Monitor`. De-duplication and event-time
order make the replay give the same counts and drift as the first pass, and
deterministic alert ids keep it from publishing an alert twice. Every `SNAPSHOT_SECONDS` it takes a new snapshot. Offsets are still
committed to `GROUP_ID` (best effort), only so that lag tools can watch the group.

Each poll is one round of the services' loop: decode the batch (each message
parsed once, with its typed model; an invalid one is counted and logged), hand it
to the pure `BatchHandler` (join, score, drift: no I/O), publish the alerts it
returned with one `produce_all` (acks awaited once), then commit (every few
seconds). Event time advances by a `Watermark` (`shared.watermark`), which the worker
keeps told of what each partition delivered, which ones are caught up, and (every
`UPSTREAM_EVERY_S`) whether the services writing each source of predictions have read
all they were given (`shared.upstream`): a quiet source whose writer lags holds the
labels' expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Gauge
from pydantic import ValidationError

from services.monitoring.handler import BatchHandler, Incoming, source_view
from services.monitoring.metrics import MonitoringMetrics
from services.monitoring.monitor import Monitor
from services.monitoring.snapshot import SnapshotStore
from services.monitoring.webhooks import Webhooks
from shared.kafka import produce_all, read_from_start
from shared.messages import Alert, FeatureVector, Label, Prediction
from shared.topics import Topics, partitions_of
from shared.upstream import Upstream
from shared.watermark import Partition, Watermark

__all__ = ["MonitoringWorker", "read_alerts"]

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 0.2  # commits are for lag tools: often enough to show lag well under a second
UPSTREAM_EVERY_S = 0.5  # how often the groups of training and serving are asked how far


async def _assign_from_start(
    consumer: AIOKafkaConsumer,
    bootstrap: str,
    topics: list[str],
    offsets: Mapping[Partition, int] | None = None,
    auth: Mapping[str, Any] | None = None,
) -> dict[TopicPartition, int]:
    """Assign every partition of `topics`, seek to `offsets` (the beginning where none
    is given); return end offsets. `auth`: the principal's client options."""
    assigned = [
        TopicPartition(t, p) for t in topics for p in await partitions_of(bootstrap, t, auth)
    ]
    consumer.assign(assigned)
    known = offsets or {}
    fresh = [tp for tp in assigned if (tp.topic, tp.partition) not in known]
    for tp in assigned:
        if tp not in fresh:
            consumer.seek(tp, known[(tp.topic, tp.partition)])
    if fresh:
        await consumer.seek_to_beginning(*fresh)
    ends = await consumer.end_offsets(assigned)
    return dict(ends)


async def read_alerts(
    consumer: AIOKafkaConsumer, bootstrap: str, topic: str, auth: Mapping[str, Any] | None = None
) -> list[Alert]:
    """Every alert on `topic` up to its current end (undecodable ones skipped)."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic, auth)]
    alerts: list[Alert] = []
    for record in await read_from_start(consumer, partitions):
        if record.value is None:
            continue
        try:
            alerts.append(Alert.model_validate_json(record.value))
        except ValidationError:
            log.warning("skipping an undecodable alert at offset %s", record.offset)
    return alerts


class MonitoringWorker:
    """Consumes predictions, labels and feature vectors into the monitor; publishes
    its alerts."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        monitor: Monitor,
        topics: Topics,
        metrics: MonitoringMetrics,
        *,
        bootstrap_servers: str,
        auth: Mapping[str, Any] | None = None,
        batch_size: int = 2000,
        idle_s: float = 5.0,
        max_jump: timedelta | None = None,
        upstream: Upstream | None = None,
        watermark: Watermark | None = None,
        start_offsets: Mapping[Partition, int] | None = None,
        snapshots: SnapshotStore | None = None,
        snapshot_every_s: float = 60.0,
        webhooks: Webhooks | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.monitor = monitor
        self.topics = topics
        self.metrics = metrics
        self.bootstrap_servers = bootstrap_servers
        self.auth = auth
        self.batch_size = batch_size
        if watermark is None:
            watermark = Watermark(idle_s, max_jump)
        else:  # restored from a snapshot: today's settings, and no wall-clock state
            watermark.idle_s, watermark.max_jump = idle_s, max_jump
            watermark.restart(time.monotonic())
        self.watermark = watermark
        self.start_offsets = dict(start_offsets or {})
        self.snapshots = snapshots
        self.snapshot_every_s = snapshot_every_s
        self._last_snapshot = time.monotonic()
        self._snapshot: asyncio.Future[int] | None = None
        self.snapshot_bytes = 0
        self.upstream = upstream  # which sources of predictions still owe some
        self._asked_upstream = 0.0
        self.handler = BatchHandler(monitor, self.watermark, topics)
        self.last_poll = time.monotonic()
        self.replay_ends: dict[TopicPartition, int] = {}
        self.replaying = True
        self.consumed = 0
        self._lag: dict[TopicPartition, Gauge] = {}
        self._last_commit = time.monotonic()
        self._unpublished: list[Alert] = []
        self.webhooks = webhooks
        self._models: dict[str, type[Incoming]] = {
            topics.predictions: Prediction,
            topics.labels: Label,
            topics.features: FeatureVector,
        }

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self.last_poll

    async def start(self) -> None:
        """Assign the input topics from the snapshot's offsets or their beginning."""
        self.replay_ends = await _assign_from_start(
            self.consumer,
            self.bootstrap_servers,
            [self.topics.predictions, self.topics.labels, self.topics.features],
            self.start_offsets,
            self.auth,
        )
        # a predictions partition has one clock per timed source (`source_view`): the
        # learner's from the start (its predictions may come after the labels), the
        # stream's once it delivers (not every deployment scores the stream)
        self.watermark.assign(
            [
                source_view(tp, "learner") if tp.topic == self.topics.predictions else tp
                for tp in self.replay_ends
            ],
            time.monotonic(),
        )
        behind = {
            tp: end - self.start_offsets.get((tp.topic, tp.partition), 0)
            for tp, end in self.replay_ends.items()
        }
        self.replaying = any(n > 0 for n in behind.values())
        log.info("monitoring replays %d messages", sum(max(0, n) for n in behind.values()))

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.batch_size)
            now = self.last_poll = time.monotonic()
            started = time.perf_counter()
            decoded = self.decode(batch, now)
            await self._update_positions()
            self._unpublished += self.handler.handle(decoded, now)
            if self._unpublished:
                await self._publish()
            if batch:
                self.metrics.latency.observe(time.perf_counter() - started)
            await self._commit()
            await self._take_snapshot()

    def decode(
        self, batch: dict[TopicPartition, list[ConsumerRecord]], now: float
    ) -> dict[TopicPartition, list[Incoming]]:
        """Each record parsed once with its topic's model; invalid ones counted, logged
        and left out. Tells the watermark which partitions delivered at `now`."""
        decoded: dict[TopicPartition, list[Incoming]] = {}
        wall_ms = time.time() * 1000
        for tp, records in batch.items():
            if not self.replaying:
                self.metrics.record_latency.observe_many(
                    max(0.0, (wall_ms - r.timestamp) / 1000)
                    for r in records
                    if r.timestamp is not None
                )
            validate = self._models[tp.topic].model_validate_json
            messages: list[Incoming] = []
            for record in records:
                try:
                    messages.append(validate(record.value or b""))
                except ValidationError as error:
                    self._invalid(record, error)
            decoded[tp] = messages
            self.consumed += len(records)
            if tp.topic == self.topics.labels:  # (predictions: the handler, per source)
                self.watermark.observe(tp, None, now)  # delivered (valid or not): not idle
        return decoded

    def _invalid(self, record: ConsumerRecord, error: ValidationError) -> None:
        invalid = self.metrics.collector.invalid
        invalid[record.topic] = invalid.get(record.topic, 0) + 1
        log.warning(
            "skipping an invalid message topic=%s partition=%s offset=%s: %s",
            record.topic,
            record.partition,
            record.offset,
            error.errors()[0]["msg"] if error.errors() else error,
        )

    async def _update_positions(self) -> None:
        """Lag per partition, which partitions are caught up and drained upstream,
        whether the replay is over."""
        done = True
        views = [  # the predictions partitions' views (see `source_view`)
            key
            for key in self.watermark.partitions
            if key[0] not in (self.topics.labels, self.topics.features)
        ]
        now = time.monotonic()
        if self.upstream is not None and now - self._asked_upstream >= UPSTREAM_EVERY_S:
            self._asked_upstream = now
            asked = [TopicPartition(*key) for key in views]
            for view, drained in (await self.upstream.drained(asked)).items():
                self.watermark.drained((view.topic, view.partition), drained)
        for tp in self.consumer.assignment():
            position = await self.consumer.position(tp)
            high = self.consumer.highwater(tp)
            if high is not None:
                lag = self._lag.get(tp)
                if lag is None:
                    lag = self._lag[tp] = self.metrics.consumer_lag.labels(tp.topic, tp.partition)
                lag.set(max(0, high - position))
            caught_up = high is not None and position >= high
            if tp.topic == self.topics.predictions:
                for key in views:
                    if key[1] == tp.partition:
                        self.watermark.caught_up(key, caught_up)
            else:
                self.watermark.caught_up(tp, caught_up)
            if position < self.replay_ends.get(tp, 0):
                done = False
        if self.replaying and done:
            self.replaying = False
            log.info("monitoring replay done: %d messages", self.consumed)

    async def _publish(self) -> None:
        """Send the alerts raised so far, acks awaited once; on failure keep them and
        retry next round."""
        alerts = self._unpublished
        try:
            await produce_all(
                self.producer,
                self.topics.alerts,
                [(a.subject.encode(), a.to_json()) for a in alerts],
            )
        except Exception:
            log.exception("publishing %d alerts failed; will retry", len(alerts))
            return
        self._unpublished = []
        if self.webhooks is not None:
            self.webhooks.send(alerts)
        for alert in alerts:
            log.warning(
                "alert %s kind=%s subject=%s details=%s",
                alert.alert_id,
                alert.kind,
                alert.subject,
                alert.details,
            )

    async def _take_snapshot(self) -> None:
        """Every `snapshot_every_s`, between batches and with every alert published:
        the state and the offsets it reflects (one snapshot at a time)."""
        if self.snapshots is None or self._unpublished:
            return
        if self._snapshot is not None:
            if not self._snapshot.done():
                return
            try:
                self.snapshot_bytes = self._snapshot.result()
                self.metrics.snapshot_bytes.set(self.snapshot_bytes)
            except Exception:
                log.exception("a monitoring snapshot failed; the next one is tried")
            self._snapshot = None
        now = time.monotonic()
        if now - self._last_snapshot < self.snapshot_every_s:
            return
        self._last_snapshot = now
        offsets = {
            (tp.topic, tp.partition): await self.consumer.position(tp)
            for tp in self.consumer.assignment()
        }
        self._snapshot = self.snapshots.save(self.monitor, self.watermark, offsets)

    async def _commit(self) -> None:
        if time.monotonic() - self._last_commit < COMMIT_EVERY_S:
            return
        self._last_commit = time.monotonic()
        with contextlib.suppress(Exception):
            await self.consumer.commit()
