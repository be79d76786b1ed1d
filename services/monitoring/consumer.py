"""The Kafka side of monitoring: rebuild from the beginning, then follow live.

State is rebuilt, not checkpointed: at start the worker reads the alerts already
published, then assigns itself every partition of `predictions` and `labels`,
seeks to the beginning and replays them through the `Monitor`. De-duplication and
event-time joins make the replay give the same counts as the first pass, and
deterministic alert ids keep it from publishing an alert twice. Offsets are still
committed to `GROUP_ID` (best effort), only so that lag tools can watch the group.

Event time advances by a watermark: the oldest last-seen time over the partitions
that have data, ignoring partitions that are caught up and idle for `idle_s`
seconds (else one quiet partition would stop every expiry). `http` predictions
do not move it: they carry the time of a request, and a replay of last year's
events next to live traffic must not see its labels expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from services.monitoring.joiner import prediction_time
from services.monitoring.metrics import MonitoringMetrics
from services.monitoring.monitor import Monitor
from shared.messages import Alert, Label, Prediction
from shared.topics import Topics, partitions_of

__all__ = ["MonitoringWorker", "read_alerts"]

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 5.0


async def _assign_from_start(
    consumer: AIOKafkaConsumer, bootstrap: str, topics: list[str]
) -> dict[TopicPartition, int]:
    """Assign every partition of `topics`, seek to the beginning; return end offsets."""
    assigned = [TopicPartition(t, p) for t in topics for p in await partitions_of(bootstrap, t)]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    ends = await consumer.end_offsets(assigned)
    return dict(ends)


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def read_alerts(consumer: AIOKafkaConsumer, bootstrap: str, topic: str) -> list[Alert]:
    """Every alert on `topic` up to its current end (undecodable ones skipped)."""
    ends = await _assign_from_start(consumer, bootstrap, [topic])
    alerts: list[Alert] = []
    while not await _reached(consumer, ends):
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            for record in records:
                if record.value is None:
                    continue
                try:
                    alerts.append(Alert.model_validate_json(record.value))
                except ValidationError:
                    log.warning("skipping an undecodable alert at offset %s", record.offset)
    return alerts


class MonitoringWorker:
    """Consumes predictions and labels into the monitor; publishes its alerts."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        monitor: Monitor,
        topics: Topics,
        metrics: MonitoringMetrics,
        *,
        bootstrap_servers: str,
        batch_size: int = 2000,
        idle_s: float = 5.0,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.monitor = monitor
        self.topics = topics
        self.metrics = metrics
        self.bootstrap_servers = bootstrap_servers
        self.batch_size = batch_size
        self.idle_s = idle_s
        self.last_poll = time.monotonic()
        self.replay_ends: dict[TopicPartition, int] = {}
        self.replaying = True
        self.consumed = 0
        self._last_time: dict[TopicPartition, datetime] = {}
        self._last_message: dict[TopicPartition, float] = {}
        self._caught_up: dict[TopicPartition, bool] = {}
        self._last_commit = time.monotonic()
        self._unpublished: list[Alert] = []

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self.last_poll

    async def start(self) -> None:
        """Assign both input topics from their beginning (the replay)."""
        self.replay_ends = await _assign_from_start(
            self.consumer,
            self.bootstrap_servers,
            [self.topics.predictions, self.topics.labels],
        )
        self.replaying = any(end > 0 for end in self.replay_ends.values())
        log.info("monitoring replays %d messages", sum(self.replay_ends.values()))

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.batch_size)
            self.last_poll = time.monotonic()
            started = time.perf_counter()
            for tp, records in batch.items():
                for record in records:
                    self._handle(tp, record)
            await self._update_positions()
            watermark = self._watermark()
            if watermark is not None:
                self._unpublished += self.monitor.advance(
                    watermark,
                    labels_at=self._watermark(self.topics.labels),
                    predictions_at=self._watermark(self.topics.predictions),
                )
            if self._unpublished:
                await self._publish()
            if batch:
                self.metrics.latency.observe(time.perf_counter() - started)
            await self._commit()

    def _handle(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        self.consumed += 1
        self._last_message[tp] = time.monotonic()
        if not self.replaying and record.timestamp is not None:
            self.metrics.record_latency.observe(max(0.0, time.time() - record.timestamp / 1000))
        value = record.value
        try:
            if record.topic == self.topics.predictions:
                prediction = Prediction.model_validate_json(value or b"")
                if prediction.source != "http":  # timed by a request, not by a stream
                    self._seen_time(tp, prediction_time(prediction))
                self.monitor.add_prediction(prediction)
                return
            label = Label.model_validate_json(value or b"")
            if label.label_time is not None:
                self._seen_time(tp, label.label_time)
            self.monitor.add_label(label)
        except ValidationError as error:
            invalid = self.metrics.collector.invalid
            invalid[record.topic] = invalid.get(record.topic, 0) + 1
            log.warning(
                "skipping an invalid message topic=%s partition=%s offset=%s: %s",
                record.topic,
                record.partition,
                record.offset,
                error.errors()[0]["msg"] if error.errors() else error,
            )

    def _seen_time(self, tp: TopicPartition, at: datetime) -> None:
        last = self._last_time.get(tp)
        if last is None or at > last:
            self._last_time[tp] = at

    async def _update_positions(self) -> None:
        """Lag per partition, which partitions are caught up, whether the replay is over."""
        done = True
        for tp in self.consumer.assignment():
            position = await self.consumer.position(tp)
            high = self.consumer.highwater(tp)
            if high is not None:
                self.metrics.consumer_lag.labels(tp.topic, tp.partition).set(
                    max(0, high - position)
                )
            self._caught_up[tp] = high is not None and position >= high
            if position < self.replay_ends.get(tp, 0):
                done = False
        if self.replaying and done:
            self.replaying = False
            log.info("monitoring replay done: %d messages", self.consumed)

    def _watermark(self, topic: str | None = None) -> datetime | None:
        """Event time every partition with data (of `topic`, or of both) has reached
        (see the module doc).

        None while a partition has data whose time is not known yet (not read so far).
        """
        now = time.monotonic()
        times = []
        last_times = [t for tp, t in self._last_time.items() if topic in (None, tp.topic)]
        for tp in self.consumer.assignment():
            if topic not in (None, tp.topic):
                continue
            caught_up = self._caught_up.get(tp, False)
            last = self._last_time.get(tp)
            if last is None:
                if caught_up:
                    continue  # empty, or labels without label_time only
                return None
            if caught_up and now - self._last_message.get(tp, now) >= self.idle_s:
                continue
            times.append(last)
        if times:
            return min(times)
        return max(last_times) if last_times else None

    async def _publish(self) -> None:
        """Send the alerts raised so far; on failure keep them and retry next round."""
        alerts = self._unpublished
        try:
            sent = [
                await self.producer.send(self.topics.alerts, a.to_json(), key=a.subject.encode())
                for a in alerts
            ]
            await asyncio.gather(*sent)
        except Exception:
            log.exception("publishing %d alerts failed; will retry", len(alerts))
            return
        self._unpublished = []
        for alert in alerts:
            log.warning(
                "alert %s kind=%s subject=%s details=%s",
                alert.alert_id,
                alert.kind,
                alert.subject,
                alert.details,
            )

    async def _commit(self) -> None:
        if time.monotonic() - self._last_commit < COMMIT_EVERY_S:
            return
        self._last_commit = time.monotonic()
        with contextlib.suppress(Exception):
            await self.consumer.commit()
