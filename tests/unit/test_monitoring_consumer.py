"""The monitoring worker's event-time watermark, with a small fake of the consumer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aiokafka import ConsumerRecord, TopicPartition

from services.monitoring.consumer import MonitoringWorker
from services.monitoring.metrics import MonitoringMetrics
from services.monitoring.monitor import Monitor
from shared.messages import Label, Prediction
from shared.topics import Topics

TOPICS = Topics("unit.")
PREDICTIONS = TopicPartition(TOPICS.predictions, 0)
LABELS = TopicPartition(TOPICS.labels, 0)
T0 = datetime(2020, 1, 1, tzinfo=UTC)


class FakeConsumer:
    def assignment(self) -> set[TopicPartition]:
        return {PREDICTIONS, LABELS}


def _worker() -> MonitoringWorker:
    monitor = Monitor("binary", ttl=timedelta(days=1))
    return MonitoringWorker(
        cast(Any, FakeConsumer()),
        cast(Any, None),
        monitor,
        TOPICS,
        MonitoringMetrics(monitor),
        bootstrap_servers="unused:9092",
    )


def _record(tp: TopicPartition, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, 0, None, 0, None, value, None, 0, 0, ())


def _prediction(event: str, source: str, at: datetime) -> bytes:
    return Prediction(
        prediction_id=f"{event}:{source}",
        event_id=event,
        model="logreg",
        model_version="1",
        y_pred=1,
        probabilities=None,
        source=source,  # type: ignore[arg-type]
        event_time=at,
        time=at,
    ).to_json()


def test_http_predictions_do_not_move_the_event_time_clock() -> None:
    worker = _worker()
    label = Label(event_id="e1", label=1, label_time=T0).to_json()
    worker._handle(LABELS, _record(LABELS, label))
    worker._handle(PREDICTIONS, _record(PREDICTIONS, _prediction("e0", "learner", T0)))
    live = datetime.now(UTC)
    worker._handle(PREDICTIONS, _record(PREDICTIONS, _prediction("live", "http", live)))
    assert worker._watermark(TOPICS.predictions) == T0
    assert worker._watermark() == T0


def test_stream_predictions_move_it() -> None:
    worker = _worker()
    later = T0 + timedelta(hours=2)
    worker._handle(PREDICTIONS, _record(PREDICTIONS, _prediction("e0", "stream", later)))
    worker._handle(LABELS, _record(LABELS, Label(event_id="e0", label=1, label_time=T0).to_json()))
    assert worker._watermark(TOPICS.predictions) == later
    assert worker._watermark() == T0
