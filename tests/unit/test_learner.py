"""OnlineLearner: River's question/answer order in event time, joins, TTL, duplicates.

The `slow` fidelity tests replay weather.csv through the learner in shuffled or
partitioned arrival order and check the per-model counts (and every scored
prediction, in order) against River's own `evaluate.progressive_val_score`.
"""

from __future__ import annotations

import csv
import os
import pickle
import random
from collections.abc import Callable, Hashable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from river import base, evaluate, linear_model, metrics, preprocessing, tree

from services.training.learner import Learned, LearnerOutput, OnlineLearner, PredictionMade
from tests.fakes import Recorder

T0 = datetime(2020, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def recorder_learner(ttl: timedelta | None = None) -> OnlineLearner:
    return OnlineLearner({"rec": Recorder()}, ttl=ttl)


def log_of(learner: OnlineLearner) -> list[tuple[Any, ...]]:
    model = learner.models["rec"]
    assert isinstance(model, Recorder)
    return model.log


# An item as a partition would deliver it: ("features", id, event_time, x) or
# ("label", id, label, label_time).
Item = tuple[str, str, Any, Any]


def feed(learner: OnlineLearner, items: list[Item]) -> None:
    for kind, event_id, a, b in items:
        if kind == "features":
            learner.add_features(event_id, a, b)
        else:
            learner.add_label(event_id, a, b)


def features(event_id: str, seconds: float) -> Item:
    return ("features", event_id, at(seconds), {"id": event_id})


def label(event_id: str, y: Any, seconds: float | None = None) -> Item:
    return ("label", event_id, y, None if seconds is None else at(seconds))


# ---- order


def test_labels_go_before_features_of_the_same_time() -> None:
    learner = recorder_learner()
    feed(learner, [features("b", 5), features("a", 0), label("a", 1, 5)])
    learner.advance(None)
    assert log_of(learner) == [("predict", "a"), ("learn", "a", 1), ("predict", "b")]


def test_ties_in_event_time_go_by_event_id_whatever_the_arrival_order() -> None:
    items = [features(e, 0) for e in ("c", "a", "b")] + [label(e, 1, 0) for e in "ab"]
    logs = set()
    for order in range(6):
        learner = recorder_learner()
        feed(learner, random.Random(order).sample(items, len(items)))
        learner.advance(None)
        logs.add(tuple(log_of(learner)))
    assert logs == {
        (("predict", "a"), ("learn", "a", 1), ("predict", "b"), ("learn", "b", 1), ("predict", "c"))
    }


def test_a_label_before_its_features_waits_and_is_learned_right_after_the_prediction() -> None:
    learner = recorder_learner()
    feed(learner, [label("a", 1, 0), features("a", 3), features("b", 3), label("b", 0, 1)])
    out = learner.advance(None)
    assert log_of(learner) == [
        ("predict", "a"),
        ("learn", "a", 1),
        ("predict", "b"),
        ("learn", "b", 0),
    ]
    assert [type(r) for r in out] == [PredictionMade, Learned, PredictionMade, Learned]


def test_a_label_without_time_arrives_at_its_event_time() -> None:
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        learner = recorder_learner()
        items = [features("a", 0), features("b", 1), label("a", 1)]
        feed(learner, [items[i] for i in order])
        learner.advance(None)
        assert log_of(learner) == [("predict", "a"), ("learn", "a", 1), ("predict", "b")]


def test_delayed_labels_interleave_with_later_events() -> None:
    learner = recorder_learner()
    feed(learner, [features(e, t) for e, t in [("a", 0), ("b", 1), ("c", 2), ("d", 3)]])
    feed(learner, [label("a", 1, 2.5), label("b", 0, 2), label("c", 0, 9), label("d", 0, 3)])
    out = learner.advance(None)
    assert log_of(learner) == [
        ("predict", "a"),
        ("predict", "b"),
        ("learn", "b", 0),  # due at 2, before the features at 2
        ("predict", "c"),
        ("learn", "a", 1),
        ("predict", "d"),  # d's label, due at 3 too, waited for these features
        ("learn", "d", 0),
        ("learn", "c", 0),
    ]
    # a and b were predicted before anything was learned: None, not scored
    learned = [(r.event_id, r.correct) for r in out if isinstance(r, Learned)]
    assert learned == [("b", None), ("a", None), ("d", False), ("c", True)]
    score = learner.scores["rec"]
    assert (score.n_learned, score.n_scored, score.n_correct, score.accuracy) == (4, 2, 1, 0.5)


def random_stream(seed: int, n: int = 40) -> list[Item]:
    """Events 10 s apart; labels 0-60 s later (some with no time), no two labels at once."""
    rng = random.Random(seed)
    items: list[Item] = []
    label_times: set[float] = set()
    for i in range(n):
        items.append(features(f"e{i}", 10 * i))
        if rng.random() < 0.2:
            items.append(label(f"e{i}", rng.randint(0, 1)))
            label_times.add(10 * i)
            continue
        t = 10 * i + rng.choice([0, 5, 10, 20, 35, 60])
        while t in label_times:
            t += 1
        label_times.add(t)
        items.append(label(f"e{i}", rng.randint(0, 1), t))
    return items


def test_any_arrival_order_gives_the_same_outputs_as_sorted_input() -> None:
    items = random_stream(seed=7)
    reference = recorder_learner()
    feed(reference, items)
    expected = reference.advance(None)
    for seed in range(20):
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        learner = recorder_learner()
        feed(learner, shuffled)
        assert learner.advance(None) == expected
        assert log_of(learner) == log_of(reference)


def consume_partitioned(
    items: list[Item], learner: OnlineLearner, seed: int, n_partitions: int = 3
) -> list[LearnerOutput]:
    """Features and labels on their own topics, each split over partitions that are each
    in time order; consumed in random batches, advancing to a safe watermark each time."""

    def time_of(item: Item) -> datetime:
        return item[2] if item[0] == "features" else item[3]

    partitions: list[list[Item]] = []
    for kind in ("features", "label"):
        of_kind = sorted((it for it in items if it[0] == kind), key=time_of)
        partitions += [of_kind[p::n_partitions] for p in range(n_partitions)]
    rng = random.Random(seed)
    positions = [0] * len(partitions)
    out: list[LearnerOutput] = []
    while any(pos < len(p) for pos, p in zip(positions, partitions, strict=True)):
        p = rng.choice([i for i, part in enumerate(partitions) if positions[i] < len(part)])
        batch = partitions[p][positions[p] : positions[p] + rng.randint(1, 50)]
        feed(learner, batch)
        positions[p] += len(batch)
        open_partitions = [i for i, part in enumerate(partitions) if positions[i] < len(part)]
        if any(positions[i] == 0 for i in open_partitions):
            continue  # a partition not read from yet could still hold anything
        if open_partitions:
            last = min(time_of(partitions[i][positions[i] - 1]) for i in open_partitions)
            out += learner.advance(last - timedelta(microseconds=1))
    return out + learner.advance(None)


def test_partitioned_consumption_with_watermarks_gives_the_same_outputs() -> None:
    items = [it for it in random_stream(seed=3) if it[0] == "features" or it[3] is not None]
    reference = recorder_learner()
    feed(reference, items)
    expected = reference.advance(None)
    for seed in range(10):
        learner = recorder_learner()
        assert consume_partitioned(items, learner, seed) == expected
        assert learner.late == 0


def test_advance_stops_at_the_watermark() -> None:
    learner = recorder_learner()
    feed(learner, [features("a", 0), features("b", 10), label("a", 1, 10)])
    assert [r.event_id for r in learner.advance(at(9))] == ["a"]
    assert learner.buffered == 2
    assert learner.awaiting_labels == 1
    assert [type(r) for r in learner.advance(at(10))] == [Learned, PredictionMade]
    assert learner.buffered == 0
    assert learner.clock == at(10)


def test_late_items_are_counted_and_still_processed() -> None:
    learner = recorder_learner()
    feed(learner, [features("a", 0), features("b", 10)])
    learner.advance(at(10))
    feed(learner, [label("a", 1, 5)])
    assert learner.late == 1
    assert [type(r) for r in learner.advance(at(11))] == [Learned]


# ---- duplicates and TTL


def test_a_duplicate_features_or_label_has_effect_once() -> None:
    learner = recorder_learner()
    feed(learner, [features("a", 0), label("a", 1, 1), features("a", 0), label("a", 0, 1)])
    learner.advance(None)
    feed(learner, [features("a", 0), label("a", 1)])
    learner.advance(None)
    assert log_of(learner) == [("predict", "a"), ("learn", "a", 1)]
    assert learner.duplicates == 4


def test_a_prediction_waits_for_its_label_at_most_ttl() -> None:
    learner = recorder_learner(ttl=timedelta(seconds=60))
    feed(learner, [features("a", 0), features("b", 0.5)])
    learner.advance(at(60))
    assert (learner.expired_features, learner.awaiting_labels) == (0, 2)
    learner.advance(at(60.25))
    assert (learner.expired_features, learner.awaiting_labels) == (1, 1)
    feed(learner, [label("a", 1, 61), label("b", 1, 60.5)])
    learner.advance(at(200))
    assert log_of(learner) == [("predict", "a"), ("predict", "b"), ("learn", "b", 1)]
    assert (learner.expired_features, learner.expired_labels) == (1, 1)  # a's label came too late


def test_a_label_waits_for_its_features_at_most_ttl() -> None:
    learner = recorder_learner(ttl=timedelta(seconds=60))
    feed(learner, [label("a", 1, 0), label("b", 1), features("x", 0)])  # b has no time yet
    learner.advance(at(30))
    assert learner.awaiting_features == 2
    learner.advance(at(91))  # b has waited since the clock stood at 30
    assert (learner.expired_labels, learner.awaiting_features) == (2, 0)
    assert learner.expired_features == 1  # x never got a label


def test_ttl_is_measured_in_event_time_however_often_advance_is_called() -> None:
    items = [features("a", 0), features("b", 100), label("a", 1, 100), label("b", 0, 100)]
    once, stepwise = (
        recorder_learner(timedelta(seconds=60)),
        recorder_learner(timedelta(seconds=60)),
    )
    feed(once, items)
    feed(stepwise, items)
    once.advance(None)
    for t in range(0, 101, 10):
        stepwise.advance(at(t))
    for learner in (once, stepwise):
        assert log_of(learner) == [("predict", "a"), ("predict", "b"), ("learn", "b", 0)]
        assert (learner.expired_features, learner.awaiting_features) == (1, 1)
        learner.advance(at(161))  # a's label has now waited more than ttl for its features
        assert (learner.expired_labels, learner.awaiting_features) == (1, 0)


def test_finished_event_ids_are_remembered_for_ttl_then_forgotten() -> None:
    learner = recorder_learner(ttl=timedelta(seconds=60))
    feed(learner, [features("a", 0), label("a", 1, 1)])
    learner.advance(at(61))  # a finished at 1: remembered while the clock is within 60 s
    feed(learner, [features("a", 0)])
    assert learner.duplicates == 1
    learner.advance(at(62))
    feed(learner, [features("a", 0)])  # forgotten: admitted again, as a late event
    assert (learner.duplicates, learner.late) == (1, 1)
    assert [type(r) for r in learner.advance(at(63))] == [PredictionMade]
    assert (learner.expired_features, learner.awaiting_labels) == (1, 0)


# ---- models, scores, checkpoints


def test_every_model_predicts_then_learns_with_river_scoring() -> None:
    learner = OnlineLearner(
        {"tree": tree.HoeffdingTreeClassifier(), "lr": linear_model.LogisticRegression()}
    )
    learner.add_features("a", at(0), {"x": 1.0})
    learner.add_label("a", True)
    learner.add_features("b", at(1), {"x": 2.0})
    learner.add_label("b", True, at(2))
    out = learner.advance(None)
    tree_first, lr_first = out[0], out[1]
    assert isinstance(tree_first, PredictionMade) and isinstance(lr_first, PredictionMade)
    assert (tree_first.model, tree_first.y_pred, tree_first.proba) == ("tree", None, {})
    assert lr_first.proba == {False: 0.5, True: 0.5}
    assert out[2] == Learned("a", "tree", None)  # a None prediction is not scored
    assert out[3] == Learned("a", "lr", False)
    assert out[4:6] == [
        PredictionMade("b", "tree", True, {True: 1.0}, at(1)),
        PredictionMade("b", "lr", True, out[5].proba, at(1)),  # type: ignore[union-attr]
    ]
    assert (learner.scores["tree"].n_scored, learner.scores["tree"].n_correct) == (1, 1)
    assert learner.scores["lr"].accuracy == 0.5


def test_a_regressor_learns_and_is_scored_without_correctness() -> None:
    learner = OnlineLearner({"lin": linear_model.LinearRegression()})
    feed(learner, [("features", "a", at(0), {"x": 1.0}), label("a", 3.0)])
    out = learner.advance(None)
    assert out[0] == PredictionMade("a", "lin", 0.0, None, at(0))
    assert out[1] == Learned("a", "lin", None)
    assert learner.scores["lin"].n_scored == 1


class Fragile(base.Classifier):
    """Raises on the event ids it is told to, like a model handed a class it cannot order."""

    def __init__(self, bad: set[float]) -> None:
        self.bad = bad

    def learn_one(self, x: dict[Hashable, Any], y: Any) -> None:
        if x["x"] in self.bad:
            raise TypeError("'<' not supported between instances of 'str' and 'bool'")

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Any, float]:
        if -x["x"] in self.bad:
            raise ValueError("cannot predict")
        return {True: 1.0}


def test_a_model_that_raises_skips_that_item_and_the_others_go_on() -> None:
    learner = OnlineLearner(
        {"fragile": Fragile({2.0, -3.0}), "tree": tree.HoeffdingTreeClassifier()}
    )
    for i in range(1, 5):
        feed(learner, [("features", f"e{i}", at(i), {"x": float(i)}), label(f"e{i}", True)])
    out = learner.advance(None)
    fragile = [o for o in out if o.model == "fragile"]
    assert [o.y_pred for o in fragile if isinstance(o, PredictionMade)] == [True, True, None, True]
    assert [o.event_id for o in fragile if isinstance(o, Learned)] == ["e1", "e3", "e4"]
    assert learner.model_errors == 2
    assert learner.scores["fragile"].n_learned == 3
    assert learner.scores["tree"].n_learned == 4, "the other model learned every item"


def test_a_pickled_learner_resumes_exactly() -> None:
    items = random_stream(seed=11)
    half = len(items) // 2
    straight = recorder_learner(ttl=timedelta(seconds=45))
    feed(straight, items)
    expected = straight.advance(at(150)) + straight.advance(None)

    resumed = recorder_learner(ttl=timedelta(seconds=45))
    feed(resumed, items[:half])
    out = resumed.advance(at(150))
    resumed = pickle.loads(pickle.dumps(resumed))
    feed(resumed, items[half:])
    out += resumed.advance(at(150)) + resumed.advance(None)
    assert out == expected
    assert log_of(resumed) == log_of(straight)
    assert vars(resumed.scores["rec"]) == vars(straight.scores["rec"])
    assert resumed.expired_features == straight.expired_features > 0


def test_a_checkpoint_from_before_per_event_records_resumes() -> None:
    # Pickled by the release before the per-event records (layout 2: timers in arrival
    # order, forget buckets, packed ids): random_stream(11) fed to half, advanced to 150 s.
    items = random_stream(seed=11)
    straight = recorder_learner(ttl=timedelta(seconds=45))
    feed(straight, items)
    expected = straight.advance(at(150)) + straight.advance(None)
    resumed = pickle.loads((Path(__file__).parent / "data" / "learner-v2.pickle").read_bytes())
    feed(resumed, items[len(items) // 2 :])
    out = resumed.advance(at(150)) + resumed.advance(None)
    assert out == expected[len(expected) - len(out) :]
    assert log_of(resumed) == log_of(straight)
    assert vars(resumed.scores["rec"]) == vars(straight.scores["rec"])
    assert resumed.expired_features == straight.expired_features > 0


@pytest.mark.parametrize("odd", ["", "a\0b"], ids=["empty-id", "id-with-nul"])
def test_remembered_ids_survive_a_pickle_whatever_they_hold(odd: str) -> None:
    learner = recorder_learner(ttl=timedelta(seconds=60))
    feed(learner, [features(odd, 0), label(odd, 1, 1), features("b", 2), label("c", 0, 3)])
    learner.advance(at(5))
    resumed = pickle.loads(pickle.dumps(learner))
    assert resumed._seen_features == learner._seen_features
    assert resumed._seen_labels == learner._seen_labels == {odd, "c"}
    assert resumed._forget == learner._forget
    feed(resumed, [features(odd, 0), label("c", 1, 4)])
    assert resumed.duplicates == 2


def test_a_checkpoint_from_before_microsecond_times_resumes() -> None:
    # Pickled by the release that kept datetimes: "u" and "d" untimed labels, "a"
    # learned, "b" predicted, "c" a label waiting, "e" buffered; clock at 20 s, ttl 60 s.
    # Expected outputs and counters are what that release did next.
    data = (Path(__file__).parent / "data" / "learner-v1.pickle").read_bytes()
    learner = pickle.loads(data)
    assert learner.clock == at(20)
    learner.add_features("a", at(0), {"x": 1.0})  # a duplicate
    learner.add_label("b", True, at(21))
    learner.add_features("c", at(12), {"x": 0.5})
    learner.add_features("d", at(15), {"x": 0.7})
    out = learner.advance(at(70))
    assert [(type(o).__name__, o.event_id) for o in out] == [
        ("PredictionMade", "c"),
        ("Learned", "c"),
        ("PredictionMade", "d"),
        ("Learned", "d"),
        ("Learned", "b"),
    ]
    assert (learner.duplicates, learner.late, learner.awaiting_features, learner.buffered) == (
        1,
        3,
        1,
        1,
    )
    out = learner.advance(at(200))
    assert [(type(o).__name__, o.event_id, o.event_time) for o in out] == [
        ("PredictionMade", "e", at(100))
    ]
    assert (learner.expired_features, learner.expired_labels) == (1, 1)
    assert vars(learner.scores["lr"]) == {"n_learned": 4, "n_scored": 4, "n_correct": 2}
    assert sorted(learner._seen_features) == ["e"] and not learner._seen_labels


# ---- fidelity to River on weather.csv

ROOT = Path(__file__).resolve().parents[2]
WEATHER_CANDIDATES = [
    Path(os.environ.get("DRIFTLINE_WEATHER_CSV", ROOT / "datasets" / "weather.csv")),
    ROOT.parent / "shared" / "datasets" / "weather.csv",
]

Row = tuple[dict[Hashable, Any], int]


@pytest.fixture(scope="module")
def weather() -> list[Row]:
    path = next((p for p in WEATHER_CANDIDATES if p.exists()), None)
    if path is None:
        pytest.fail(
            f"weather.csv not found (set DRIFTLINE_WEATHER_CSV); tried {WEATHER_CANDIDATES}"
        )
    rows: list[Row] = []
    with path.open(newline="") as f:
        for record in csv.DictReader(f):
            y = int(record.pop("target"))
            x: dict[Hashable, Any] = {k: float(v) for k, v in record.items()}
            rows.append((x, y))
    assert len(rows) == 18_159
    return rows


MODELS: dict[str, Callable[[], base.Estimator]] = {
    "logreg": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    "hoeffding_tree": lambda: tree.HoeffdingTreeClassifier(),
}


def river_reference(rows: list[Row], **timing: Any) -> dict[str, tuple[int, int, list[Any]]]:
    """Per model: (scored, correct, every scored prediction in order) from River itself."""
    reference = {}
    for name, make in MODELS.items():
        accuracy = metrics.Accuracy()
        steps = evaluate.iter_progressive_val_score(
            rows, make(), accuracy, step=1, yield_predictions=True, **timing
        )
        scored = [step["Prediction"] for step in steps if step["Prediction"] is not None]
        assert accuracy.cm.total_weight == len(scored)
        reference[name] = (len(scored), int(accuracy.cm.total_true_positives), scored)
    return reference


def learner_result(
    learner: OnlineLearner, out: list[LearnerOutput]
) -> dict[str, tuple[int, int, list[Any]]]:
    predicted = {(r.event_id, r.model): r.y_pred for r in out if isinstance(r, PredictionMade)}
    result = {}
    for name in MODELS:
        score = learner.scores[name]
        assert score.n_learned == len(predicted) // len(MODELS)
        scored = [
            predicted[r.event_id, name]
            for r in out
            if isinstance(r, Learned) and r.model == name and r.correct is not None
        ]
        result[name] = (score.n_scored, score.n_correct, scored)
    return result


def weather_items(rows: list[Row], times: list[datetime], delay: Any) -> Iterator[Item]:
    for i, (x, y) in enumerate(rows):
        yield ("features", f"w{i}", times[i], x)
        if delay is None:
            yield ("label", f"w{i}", y, None)
        elif isinstance(delay, int):
            yield ("label", f"w{i}", y, at(i + delay))
        else:
            yield ("label", f"w{i}", y, times[i] + delay)


def run_shuffled(items: list[Item], seed: int = 0) -> tuple[OnlineLearner, list[LearnerOutput]]:
    random.Random(seed).shuffle(items)
    learner = OnlineLearner({name: make() for name, make in MODELS.items()})
    feed(learner, items)
    return learner, learner.advance(None)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [None, 10], ids=["no-delay", "delay-10-rows"])
def test_shuffled_weather_matches_river(weather: list[Row], delay: int | None) -> None:
    times = [at(i) for i in range(len(weather))]
    learner, out = run_shuffled(list(weather_items(weather, times, delay)))
    result = learner_result(learner, out)
    reference = river_reference(weather, delay=delay)
    for name in MODELS:
        assert result[name][:2] == reference[name][:2], name
        assert result[name][2] == reference[name][2], name


@pytest.mark.slow
def test_shuffled_weather_matches_river_in_irregular_time(weather: list[Row]) -> None:
    """Events 1-5 s apart, labels 10 s later: many labels fall due exactly at an event."""
    rng = random.Random(5)
    seconds = [0]
    for _ in weather[1:]:
        seconds.append(seconds[-1] + rng.randint(1, 5))
    times = [at(s) for s in seconds]
    delay = timedelta(seconds=10)
    learner, out = run_shuffled(list(weather_items(weather, times, delay)))
    moment_of = {id(x): t for (x, _), t in zip(weather, times, strict=True)}
    reference = river_reference(weather, moment=lambda x: moment_of[id(x)], delay=delay)
    for name in MODELS:
        assert result_matches(learner_result(learner, out)[name], reference[name]), name


def result_matches(got: tuple[int, int, list[Any]], want: tuple[int, int, list[Any]]) -> bool:
    return got[:2] == want[:2] and got[2] == want[2]


@pytest.mark.slow
def test_partitioned_weather_with_watermarks_matches_river(weather: list[Row]) -> None:
    times = [at(i) for i in range(len(weather))]
    learner = OnlineLearner({name: make() for name, make in MODELS.items()})
    out = consume_partitioned(list(weather_items(weather, times, 10)), learner, seed=1)
    assert learner.late == 0
    reference = river_reference(weather, delay=10)
    for name in MODELS:
        assert result_matches(learner_result(learner, out)[name], reference[name]), name
