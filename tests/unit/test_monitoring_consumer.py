"""The monitoring worker's decoding and event-time watermark, with a small fake of the
consumer: records go through `decode` and the pure `BatchHandler`, as in `run`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aiokafka import ConsumerRecord, TopicPartition

from services.monitoring.consumer import MonitoringWorker
from services.monitoring.data_drift import DataDrift
from services.monitoring.handler import source_view
from services.monitoring.metrics import MonitoringMetrics
from services.monitoring.monitor import Monitor
from shared.messages import FeatureVector, Label, Prediction
from shared.pipeline import DataDriftSettings, Features
from shared.topics import Topics

TOPICS = Topics("unit.")
PREDICTIONS = TopicPartition(TOPICS.predictions, 0)
LABELS = TopicPartition(TOPICS.labels, 0)
T0 = datetime(2020, 1, 1, tzinfo=UTC)
NOW = 100.0  # the monotonic clock, in seconds


class FakeConsumer:
    def assignment(self) -> set[TopicPartition]:
        return {PREDICTIONS, LABELS}


def _worker(max_jump: timedelta | None = None, *, learner: bool = False) -> MonitoringWorker:
    """A worker after its start; unless `learner`, no learner predictions are to come
    (the partition is caught up and training has read all it was given)."""
    monitor = Monitor("binary", ttl=timedelta(days=1))
    worker = MonitoringWorker(
        cast(Any, FakeConsumer()),
        cast(Any, None),
        monitor,
        TOPICS,
        MonitoringMetrics(monitor),
        bootstrap_servers="unused:9092",
        max_jump=max_jump,
    )
    worker.watermark.assign([source_view(PREDICTIONS, "learner"), LABELS], NOW)
    if not learner:
        worker.watermark.caught_up(source_view(PREDICTIONS, "learner"), True)
    return worker


def _handle(worker: MonitoringWorker, tp: TopicPartition, value: bytes) -> None:
    """One poll of one record, as `MonitoringWorker.run` handles it."""
    worker.handler.handle(worker.decode({tp: [_record(tp, value)]}, NOW), NOW)


def _watermark(worker: MonitoringWorker, topic: str | None = None) -> datetime | None:
    if topic == TOPICS.predictions:  # every timed source of predictions
        return worker.handler.predictions_at(NOW)
    return worker.watermark.get(NOW, topic)


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
    worker = _worker(learner=True)
    label = Label(event_id="e1", label=1, label_time=T0).to_json()
    _handle(worker, LABELS, label)
    _handle(worker, PREDICTIONS, _prediction("e0", "learner", T0))
    live = datetime.now(UTC)
    _handle(worker, PREDICTIONS, _prediction("live", "http", live))
    assert _watermark(worker, TOPICS.predictions) == T0
    assert _watermark(worker) == T0


def test_stream_predictions_move_it() -> None:
    worker = _worker()
    later = T0 + timedelta(hours=2)
    _handle(worker, PREDICTIONS, _prediction("e0", "stream", later))
    _handle(worker, LABELS, Label(event_id="e0", label=1, label_time=T0).to_json())
    assert _watermark(worker, TOPICS.predictions) == later
    assert _watermark(worker) == T0


def test_one_prediction_dated_hours_ahead_in_a_batch_moves_no_clock_two_do() -> None:
    worker = _worker(max_jump=timedelta(minutes=10))
    ahead = T0 + timedelta(hours=3)
    times = [T0, T0 + timedelta(seconds=1), ahead]
    poll = [_record(PREDICTIONS, _prediction(f"e{i}", "stream", t)) for i, t in enumerate(times)]
    worker.handler.handle(worker.decode({PREDICTIONS: poll}, NOW), NOW)
    assert _watermark(worker, TOPICS.predictions) == T0 + timedelta(seconds=1)
    resumed = [_record(PREDICTIONS, _prediction(f"r{i}", "stream", ahead)) for i in range(2)]
    worker.handler.handle(worker.decode({PREDICTIONS: resumed}, NOW), NOW)
    assert _watermark(worker, TOPICS.predictions) == ahead


def test_invalid_records_are_counted_and_left_out() -> None:
    worker = _worker()
    good = _prediction("e0", "stream", T0)
    records = [_record(PREDICTIONS, v) for v in (b"not json", good, b'{"event_id": "e1"}')]
    decoded = worker.decode({PREDICTIONS: records}, NOW)
    assert [m.event_id for m in decoded[PREDICTIONS]] == ["e0"]
    assert worker.metrics.collector.invalid == {TOPICS.predictions: 2}
    assert worker.consumed == 3


def test_a_batch_gives_the_alerts_to_publish_and_no_io() -> None:
    """The handler alone (no consumer, no producer) raises the drift alert."""
    worker = _worker()
    batch: dict[TopicPartition, list[Prediction | Label]] = {PREDICTIONS: [], LABELS: []}
    for i in range(3000):
        at = T0 + timedelta(seconds=i)
        wrong = i >= 1500 and i % 2 == 0
        p = Prediction.model_validate_json(_prediction(f"e{i}", "stream", at))
        batch[PREDICTIONS].append(p)
        batch[LABELS].append(
            Label(event_id=p.event_id or "", label=0 if wrong else 1, label_time=at)
        )
    alerts = worker.handler.handle(batch, NOW)
    assert alerts and alerts[0].subject == "logreg:stream" and alerts[0].kind == "concept_drift"


def test_labels_and_stream_predictions_racing_ahead_wait_for_the_learners() -> None:
    """Labels and the stream's predictions run a year ahead of training's (a fast
    replay, training slower or restarting): the learner's clock holds the labels, and
    its predictions still join every one when they come."""
    worker = _worker(learner=True)
    worker.monitor.joiner.ttl = timedelta(hours=1)
    batch: dict[TopicPartition, list[Prediction | Label]] = {PREDICTIONS: [], LABELS: []}
    days = [T0 + timedelta(days=i) for i in range(365)]
    for i, at in enumerate(days):
        p = Prediction.model_validate_json(_prediction(f"e{i}", "stream", at))
        batch[PREDICTIONS].append(p)
        batch[LABELS].append(Label(event_id=f"e{i}", label=1, label_time=at))
    worker.handler.handle(batch, NOW)
    assert worker.monitor.joiner.expired_labels == 0, "the learner's clock has not started"
    late = [
        Prediction.model_validate_json(_prediction(f"e{i}", "learner", at))
        for i, at in enumerate(days)
    ]
    worker.handler.handle({PREDICTIONS: late}, NOW + 1)
    rows = {(r["model"], r["source"]): r["n"] for r in worker.monitor.summary()["models"]}
    assert rows == {("logreg", "stream"): 365, ("logreg", "learner"): 365}


def test_a_source_that_stops_holds_until_its_writer_has_read_everything() -> None:
    """Training stops mid-stream: its clock holds while its group lags upstream, and is
    skipped once that group has read all it was given and the partition is quiet."""
    worker = _worker(learner=True)
    learner, stream = source_view(PREDICTIONS, "learner"), source_view(PREDICTIONS, "stream")
    first = Prediction.model_validate_json(_prediction("e0", "learner", T0))
    later = T0 + timedelta(days=30)
    ahead = Prediction.model_validate_json(_prediction("e1", "stream", later))
    worker.handler.handle({PREDICTIONS: [first, ahead]}, NOW)
    for view in (learner, stream):
        worker.watermark.caught_up(view, True)
    worker.watermark.drained(learner, False)  # training's group lags on features
    assert worker.handler.predictions_at(NOW + 3600) == T0
    worker.watermark.drained(learner, True)
    assert worker.handler.predictions_at(NOW + 3600) == later


FEATURES = TopicPartition(TOPICS.features, 0)


def _vector(event: str, at: datetime, x: float) -> bytes:
    return FeatureVector(
        event_id=event, entity_id=None, event_time=at, features={"x": x}, feature_set_version="v"
    ).to_json()


def test_feature_vectors_have_their_own_clock() -> None:
    """A features partition that lags holds the data drift detector, not the joins;
    and joins that lag do not hold the detector."""
    worker = _worker()
    worker.monitor.data_drift = DataDrift(Features(numeric=("x",)), DataDriftSettings())
    worker.watermark.assign([FEATURES], NOW)  # as `start` assigns it: delivered nothing yet
    _handle(worker, LABELS, Label(event_id="e0", label=1, label_time=T0).to_json())
    _handle(worker, PREDICTIONS, _prediction("e0", "stream", T0))
    assert worker.monitor.summary()["models"][0]["n"] == 1, "not held by the features"
    records = [_record(FEATURES, _vector(f"e{i}", T0 + timedelta(hours=i), 1.0)) for i in range(3)]
    worker.handler.handle(worker.decode({FEATURES: records}, NOW), NOW)
    assert _watermark(worker, TOPICS.features) == T0 + timedelta(hours=2)
    assert worker.monitor.summary()["clock"] == T0.isoformat(), "nor do they move the joins"
    drift = worker.monitor.drift_report()["features"][0]
    assert drift["reference_n"] == 3  # every vector up to the features' own clock
