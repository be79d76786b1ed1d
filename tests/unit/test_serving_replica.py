"""Serving's replica of the learner without Kafka: restored mid-stream, it predicts as training."""

from __future__ import annotations

import json
import pickle
import random
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import ConsumerRecord, TopicPartition

from services.serving.replica import published_ahead, stream_records
from services.training.checkpoint import TrainingState
from services.training.feed import LearnerFeed
from services.training.learner import Learned, LearnerOutput, OnlineLearner, PredictionMade
from shared.catalogue import build_model
from shared.messages import Prediction
from shared.watermark import LearnerWatermark

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PARTS = [TopicPartition(t, p) for t in ("features", "labels") for p in range(2)]


def stream(n: int, seed: int = 7) -> list[dict[TopicPartition, list[ConsumerRecord]]]:
    """Batches of features and labels over two partitions each, labels 3 events late,
    with a drift half way (the target flips), so a model behind would predict worse."""
    rng = random.Random(seed)
    offsets = dict.fromkeys(PARTS, 0)
    batches = []
    for start in range(0, n, 50):
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        for i in range(start, min(n, start + 50)):
            x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
            y = (x["a"] + 0.3 * x["b"] > 0) != (i > n // 2)
            vector = {
                "event_id": f"e{i}",
                "entity_id": f"k{i % 4}",
                "event_time": (T0 + timedelta(seconds=i)).isoformat(),
                "features": x,
                "feature_set_version": "v",
            }
            label = {
                "event_id": f"e{i}",
                "label": y,
                "label_time": (T0 + timedelta(seconds=i + 3)).isoformat(),
            }
            for topic, value in (("features", vector), ("labels", label)):
                tp = TopicPartition(topic, i % 2)
                record = ConsumerRecord(
                    topic, tp.partition, offsets[tp], 0, 0, None, json.dumps(value).encode(),
                    None, 0, 0, [],
                )  # fmt: skip
                offsets[tp] += 1
                batch.setdefault(tp, []).append(record)
        batches.append(batch)
    return batches


def fresh() -> TrainingState:
    models = {name: build_model(name, {}, "binary") for name in ("logreg", "gnb")}
    state = TrainingState(
        OnlineLearner(models, ttl=timedelta(hours=1)), LearnerWatermark(), config_hash="x"
    )
    state.watermark.assign(PARTS, 0.0)
    return state


def run(feed: LearnerFeed, batches: list) -> list:
    outputs = []
    for batch in batches:
        feed.take({tp: records for tp, records in batch.items() if records}, now=0.0)
        outputs += feed.advance(now=0.0) or []
    return outputs


def from_seek(state: TrainingState, batches: list) -> list:
    """`batches` as a consumer positioned by `LearnerFeed.seek` reads them: on each
    partition from where the restored state re-reads (or reads on) to the end."""
    start = {tp: state.replay_from.get(tp, state.offsets.get(tp, 0)) for tp in PARTS}
    return [
        {tp: [r for r in records if r.offset >= start[tp]] for tp, records in batch.items()}
        for batch in batches
    ]


def test_a_replica_restored_mid_stream_predicts_exactly_as_the_learner() -> None:
    batches = stream(600)
    training = LearnerFeed(fresh(), features="features", labels="labels", task="binary")
    made = run(training, batches[:5])
    checkpoint = pickle.dumps(training.state)  # what training checkpoints, mid-stream
    made += run(training, batches[5:])

    state = pickle.loads(checkpoint)
    state.learner.keep_only(["logreg"])
    replica = LearnerFeed(state, features="features", labels="labels", task="binary")
    assert state.replay, "the waiting predictions' vectors are re-read, not checkpointed"
    replayed = run(replica, from_seek(state, batches))

    def champion(outputs: list) -> list:
        return [o for o in outputs if isinstance(o, PredictionMade) and o.model == "logreg"]

    assert champion(replayed) == champion(made)[-len(champion(replayed)) :]
    assert len(champion(replayed)) > 300  # events after the checkpoint
    assert {o.model for o in replayed if isinstance(o, Learned)} == {"logreg"}
    assert replica.state.learner.scores["logreg"] == training.state.learner.scores["logreg"]


def test_stream_records_are_the_champions_stream_predictions_and_forget_entities() -> None:
    made: list[LearnerOutput] = [
        PredictionMade("e1", "logreg", True, {False: 0.25, True: 0.75}, T0),
        PredictionMade("e1", "gnb", False, {False: 0.5, True: 0.5}, T0),
        Learned("e0", "logreg", True),
        PredictionMade("e2", "logreg", False, None, T0),
    ]
    entities: dict[str, str | None] = {"e1": "k1", "e2": None, "e3": "k3"}
    records = stream_records(made, "logreg", "4", entities)
    assert [key for key, _ in records] == [b"k1", b"global"]
    first = Prediction.model_validate_json(records[0][1])
    assert (first.prediction_id, first.source, first.model_version) == (
        "e1:logreg:stream",
        "stream",
        "4",
    )
    assert first.probabilities == {"False": 0.25, "True": 0.75}
    assert orjson.loads(records[1][1])["entity_id"] is None
    assert entities == {"e3": "k3"}, "every predicted event's entity is forgotten"


def test_a_new_champion_does_not_publish_again_what_the_previous_one_scored() -> None:
    """The champion changes: the replica of the new one starts from training's older
    checkpoint; the events the previous one had published get no second prediction,
    and every event still gets one."""
    batches = stream(600)
    training = LearnerFeed(fresh(), features="features", labels="labels", task="binary")
    run(training, batches[:4])
    checkpoint = pickle.dumps(training.state)  # training's, behind the replica's
    made = run(training, batches[4:])  # what is predicted after it
    predicted = {o.event_id for o in made if isinstance(o, PredictionMade) and o.model == "gnb"}

    old_state = pickle.loads(checkpoint)
    old_state.learner.keep_only(["logreg"])
    old = LearnerFeed(old_state, features="features", labels="labels", task="binary")
    entities: dict[str, str | None] = {}
    published_ids = []
    for batch in from_seek(old_state, batches)[:8]:  # the previous champion's replica
        old.take({tp: r for tp, r in batch.items() if r}, now=0.0)
        outputs = old.advance(now=0.0) or []
        published_ids += [
            orjson.loads(v)["event_id"] for _, v in stream_records(outputs, "logreg", "1", entities)
        ]
    mine = old.state  # its own checkpoint when the champion changed

    state = pickle.loads(checkpoint)  # what `restore_replica` takes for the new champion
    state.learner.keep_only(["gnb"])
    published = published_ahead(state, mine, {tp for tp in PARTS if tp.topic == "features"})
    assert published is not None and published.buffered, "some read, not yet predicted"
    new = LearnerFeed(state, features="features", labels="labels", task="binary")
    republished = []
    for batch in from_seek(state, batches):
        published.note(batch)
        new.take({tp: r for tp, r in batch.items() if r}, now=0.0)
        outputs = new.advance(now=0.0) or []
        records = stream_records(outputs, "gnb", "1", state.entities, published.scored)
        republished += [orjson.loads(v)["event_id"] for _, v in records]
    assert not set(published_ids) & set(republished)
    assert len(published_ids) > 100 and len(republished) > 100
    assert set(published_ids) | set(republished) == predicted
    assert not published.spans and not published.scored
