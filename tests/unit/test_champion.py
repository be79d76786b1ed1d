"""The champion policy on paired predictions: promotes on evidence, never flaps."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from services.training.champion import ChampionPolicy, Drift, Promotion, mcnemar
from services.training.learner import Learned, LearnerOutput


def paired(n: int, accuracy: dict[str, float], rng: random.Random, start: int = 0) -> list:
    """`n` events, each model right with its own probability, independently."""
    outputs: list[LearnerOutput] = []
    for i in range(start, start + n):
        for model, p in accuracy.items():
            outputs.append(Learned(f"e{i}", model, rng.random() < p))
    return outputs


def test_an_abrupt_drift_after_which_the_second_model_is_better_promotes_it_once() -> None:
    rng = random.Random(1)
    policy = ChampionPolicy(["old", "new"], "old", window=500)
    before = paired(5_000, {"old": 0.85, "new": 0.75}, rng)
    assert policy.observe(before) == []
    after = paired(5_000, {"old": 0.60, "new": 0.85}, rng, start=5_000)
    decided = policy.observe(after)
    promotions = [p for p in decided if isinstance(p, Promotion)]
    assert [(p.model, p.previous) for p in promotions] == [("new", "old")]
    drifts = [d for d in decided if isinstance(d, Drift)]
    assert [(d.model, d.action) for d in drifts] == [("old", "promote_best")]
    assert drifts[0].error_after > drifts[0].error_before
    evidence = promotions[0].evidence
    assert evidence["challenger"]["accuracy"] > evidence["champion"]["accuracy"] + 0.15
    assert evidence["c"] > evidence["b"] and evidence["p_value"] < 0.001
    assert evidence["window"] == 125 and evidence["test"] == "mcnemar"  # judged after the drift
    assert policy.champion == "new"


def promoted_after_drift(on_drift: str, seed: int) -> int:
    """Events after an abrupt drift until "b" is promoted over "a" (window 1,000)."""
    rng = random.Random(seed)
    policy = ChampionPolicy(["a", "b"], "a", window=1_000, on_drift=on_drift)  # type: ignore[arg-type]
    policy.observe(paired(3_500, {"a": 0.9, "b": 0.7}, rng))
    for i in range(3_500, 9_000):
        decided = policy.observe(paired(1, {"a": 0.55, "b": 0.9}, rng, start=i))
        if any(isinstance(d, Promotion) for d in decided):
            return i - 3_500
    raise AssertionError("never promoted")


def test_a_drift_of_the_champion_has_the_models_judged_at_once_on_what_came_after() -> None:
    for seed in range(3):
        quick, waiting = (
            promoted_after_drift("promote_best", seed),
            promoted_after_drift("none", seed),
        )
        assert quick < 600, quick  # ADWIN's delay plus a quarter window
        assert waiting >= 500 and quick < waiting, (quick, waiting)


def test_equal_models_on_a_stationary_stream_are_never_promoted() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        policy = ChampionPolicy(["a", "b", "c"], "a", window=500)
        decided = policy.observe(paired(20_000, {"a": 0.8, "b": 0.8, "c": 0.8}, rng))
        assert not [d for d in decided if isinstance(d, Promotion)]
        assert policy.champion == "a"


def test_it_does_not_flap_between_two_close_models() -> None:
    rng = random.Random(7)
    policy = ChampionPolicy(["a", "b"], "a", window=1000)
    decided = policy.observe(paired(100_000, {"a": 0.80, "b": 0.81}, rng))
    assert len([d for d in decided if isinstance(d, Promotion)]) <= 1


def test_a_small_steady_gap_is_found_by_the_sequential_test_and_kept() -> None:
    """Two points of accuracy: no single window of 1,000 shows it at 0.9999, the
    counts since the champion was chosen do (independent errors: ~20,000 events)."""
    for seed in range(3):
        rng = random.Random(seed)
        policy = ChampionPolicy(["a", "b"], "a", window=1000)
        decided = policy.observe(paired(40_000, {"a": 0.76, "b": 0.78}, rng))
        promotions = [d for d in decided if isinstance(d, Promotion)]
        assert [(p.model, p.evidence["test"]) for p in promotions] == [("b", "sequential")]
        evidence = promotions[0].evidence
        assert evidence["window"] < 35_000 and evidence["p_value"] < 0.00005
        assert evidence["c"] > evidence["b"]


def test_the_first_listed_model_chosen_on_no_evidence_is_replaced_within_a_few_dozen() -> None:
    rng = random.Random(3)
    policy = ChampionPolicy(["worst", "best"], "worst", window=1000)
    decided = policy.observe(paired(1000, {"worst": 0.6, "best": 0.95}, rng))
    (promotion,) = [d for d in decided if isinstance(d, Promotion)]
    assert promotion.model == "best" and promotion.evidence["window"] < 100


def test_manual_policy_counts_but_never_promotes_and_a_pin_moves_the_champion() -> None:
    rng = random.Random(3)
    policy = ChampionPolicy(["a", "b"], "a", window=200, auto=False)
    assert not [
        d
        for d in policy.observe(paired(2_000, {"a": 0.5, "b": 0.95}, rng))
        if isinstance(d, Promotion)
    ]
    assert policy.last is not None and policy.last["models"]["b"]["accuracy"] > 0.9
    policy.set_champion("b")
    assert policy.champion == "b" and policy.standing()["n"] == 0


def test_regression_outputs_carry_no_evidence() -> None:
    policy = ChampionPolicy(["a", "b"], "a", window=30)
    outputs = [Learned(f"e{i}", m, None) for i in range(100) for m in ("a", "b")]
    assert policy.observe(outputs) == [] and policy.standing()["n"] == 0


def test_a_pickled_policy_decides_as_one_that_was_never_stopped() -> None:
    rng = random.Random(5)
    stream = paired(4_000, {"a": 0.7, "b": 0.7}, rng) + paired(
        4_000, {"a": 0.6, "b": 0.9}, rng, start=4_000
    )
    straight = ChampionPolicy(["a", "b"], "a", window=400)
    expected = straight.observe(stream)
    resumed = ChampionPolicy(["a", "b"], "a", window=400)
    resumed.epoch = straight.epoch  # one policy, stopped and started again
    half = 2 * 4_123  # mid-window (an event's outputs come in one advance: never split)
    got = resumed.observe(stream[:half])
    resumed = pickle.loads(pickle.dumps(resumed))
    got += resumed.observe(stream[half:])
    assert got == expected and len(expected) == 1


def test_mcnemar_statistic_and_p_value() -> None:
    assert mcnemar(0, 0) == (0.0, 1.0)
    statistic, p = mcnemar(30, 10)
    assert statistic == (20 - 1) ** 2 / 40 and 0.002 < p < 0.003


def test_fed_event_by_event_it_decides_the_same_and_refits_at_the_drift_itself() -> None:
    rng = random.Random(6)
    stream = paired(3_000, {"a": 0.9, "b": 0.7}, rng) + paired(
        3_000, {"a": 0.5, "b": 0.9}, rng, start=3_000
    )
    whole = ChampionPolicy(["a", "b"], "a", window=500, on_drift="retrain_batch")
    expected = whole.observe(stream)
    live = ChampionPolicy(["a", "b"], "a", window=500, on_drift="retrain_batch")
    live.epoch = whole.epoch
    refits: list[int] = []
    live.retrain = lambda: refits.append(live.events)
    for i in range(0, len(stream), 2):  # as `OnlineLearner.after_learn` calls it
        live.observe_event(stream[i : i + 2])
    assert live.take() == expected and live.take() == []
    drifts = [d for d in expected if isinstance(d, Drift)]
    assert drifts and refits == [d.events for d in drifts], "refit at the event that drifted"
    assert pickle.loads(pickle.dumps(live)).retrain is None  # wired again after a restore


def test_reset_names_a_fresh_copy_of_the_champion_and_never_replaces_the_champion() -> None:
    rng = random.Random(8)
    policy = ChampionPolicy(["a", "b"], "a", window=500, on_drift="reset")
    resets: list[tuple[str, str]] = []
    policy.reset = lambda name, model: resets.append((name, model))
    stream = paired(3_000, {"a": 0.9, "b": 0.6}, rng) + paired(
        3_000, {"a": 0.5, "b": 0.6}, rng, start=3_000
    )
    for i in range(0, len(stream), 2):
        policy.observe_event(stream[i : i + 2])
    drifts = [d for d in policy.take() if isinstance(d, Drift)]
    assert drifts and all(d.action == "reset" for d in drifts)
    assert drifts[0].fresh == "a.fresh" and resets[0] == ("a.fresh", "a")
    assert policy.models == ["a", "b", "a.fresh"]
    policy.champion, policy._champion_at = "a.fresh", 2  # as if the fresh one won
    assert policy._fresh(drifts[0]).fresh == "a", "the fresh champion's copy takes the old name"


def test_a_reset_starts_a_fresh_model_that_learns_from_the_drift_on_and_restores_alike() -> None:
    from services.training.checkpoint import fresh_state, wire_champion
    from shared.pipeline import PipelineConfig
    from shared.settings import CommonSettings

    pipeline = PipelineConfig.model_validate(
        {
            "name": "t",
            "task": "binary",
            "features": {"numeric": ["x"]},
            "models": [{"name": "logreg"}, {"name": "gnb"}],
            "champion": {"window": 200, "on_drift": "reset"},
        }
    )
    rng = random.Random(9)
    xs = [rng.uniform(-1, 1) for _ in range(4_000)]
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def run(state: Any, start: int, stop: int) -> list[Any]:
        learner, out = state.learner, []
        for i in range(start, stop):
            y = xs[i] > 0 if i < 2_000 else xs[i] < 0  # the concept flips at 2,000
            learner.add_features(f"e{i:05d}", t0 + timedelta(seconds=i), {"x": xs[i]})
            learner.add_label(f"e{i:05d}", y)
            out += learner.advance(t0 + timedelta(seconds=i))
        return out

    straight = fresh_state(pipeline, CommonSettings())
    wire_champion(straight, pipeline)
    expected = run(straight, 0, 4_000)
    assert "logreg.fresh" in straight.learner.models
    fresh = straight.learner.scores["logreg.fresh"]
    assert 0 < fresh.n_learned < 2_000, "learned only what came after the drift"

    resumed = fresh_state(pipeline, CommonSettings())
    assert resumed.champion is not None and straight.champion is not None
    resumed.champion.epoch = straight.champion.epoch
    wire_champion(resumed, pipeline)
    got = run(resumed, 0, 2_500)
    resumed = pickle.loads(pickle.dumps(resumed))
    wire_champion(resumed, pipeline)
    got += run(resumed, 2_500, 4_000)
    assert got == expected
    assert vars(resumed.learner.scores["logreg.fresh"]) == vars(fresh)
