"""Explanations for every catalogue model: linear parts add up to the score, tree tests hold."""

from __future__ import annotations

import math
import random
import re
from typing import Any

import pytest

from shared.catalogue import CATALOGUE, build_model
from shared.explain import explain, influence

# Batch challengers: a window small enough to have fitted (in this process) by 2,000 rows.
BATCH = {
    "window": 1000,
    "min_train": 500,
    "swap_after": 100,
    "n_candidates": 4,
    "background": False,
}


def _trained(name: str) -> Any:
    rng = random.Random(1)
    model = build_model(name, BATCH if name.startswith("sk_") else None)
    regression = "regressor" in name or name == "linreg"
    for _ in range(2000):
        x = {"a": rng.random(), "b": rng.random(), "c": rng.random()}
        y = x["a"] > 0.5 and x["b"] > 0.3
        model.learn_one(x, float(y) + x["c"] if regression else y)
    return model


X = {"a": 0.7, "b": 0.2, "c": 0.5}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_catalogue_model_is_explained_or_says_why_not(name: str) -> None:
    why = explain(_trained(name), X)
    assert why["method"] in {"linear", "decision_path", "forest", "none"}
    assert (why["method"] == "none") == (name in {"gnb", "sk_hgb"})
    for part in why["features"]:
        assert part["feature"] in X and part["value"] == X[part["feature"]]
    if why["method"] == "none":
        assert why["note"]


def test_logreg_parts_add_up_to_its_log_odds() -> None:
    model = _trained("logreg")
    why = explain(model, X)
    score = why["intercept"] + sum(f["contribution"] for f in why["features"])
    assert 1 / (1 + math.exp(-score)) == pytest.approx(model.predict_proba_one(X)[True], abs=1e-12)
    sizes = [abs(f["contribution"]) for f in why["features"]]
    assert sizes == sorted(sizes, reverse=True)


def test_linreg_parts_add_up_to_its_prediction() -> None:
    model = _trained("linreg")
    why = explain(model, X)
    total = why["intercept"] + sum(f["contribution"] for f in why["features"])
    assert total == pytest.approx(model.predict_one(X), abs=1e-12)


@pytest.mark.parametrize("name", ["hoeffding_tree", "hat", "hoeffding_tree_regressor"])
def test_each_test_on_the_decision_path_holds_for_the_vector(name: str) -> None:
    why = explain(_trained(name), X)
    assert why["method"] == "decision_path" and why["features"]
    for part in why["features"]:
        feature, op, threshold = re.fullmatch(r"(\w+) (≤|>) (\S+)", part["test"]).groups()  # type: ignore[union-attr]
        value = X[feature]
        assert value <= float(threshold) if op == "≤" else value > float(threshold)


def test_a_missing_feature_follows_the_most_common_branch() -> None:
    why = explain(_trained("hoeffding_tree"), {"a": 0.7})
    assert any("missing" in part["test"] for part in why["features"])


def test_a_forest_counts_the_trees_testing_each_feature() -> None:
    why = explain(_trained("arf"), X)
    assert why["method"] == "forest" and why["trees"] == 10
    counts = [part["trees"] for part in why["features"]]
    assert counts == sorted(counts, reverse=True) and 0 < counts[0] <= 10


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_influence_is_shares_of_what_each_model_relies_on(name: str) -> None:
    shares = influence(_trained(name))
    if name == "gnb":
        assert shares == {}
        return
    assert sum(shares.values()) == pytest.approx(1.0)
    assert list(shares.values()) == sorted(shares.values(), reverse=True)
    assert set(shares) <= set(X)
    classifier = "regressor" not in name and name != "linreg"
    if classifier:  # the label is a function of a and b alone
        assert set(list(shares)[:2]) == {"a", "b"}


def test_a_published_version_carries_its_influence() -> None:
    from shared.registry import ModelRegistry
    from shared.signing import SigningKey

    class Pipe:
        def set(self, *args: Any) -> None: ...
        def zadd(self, *args: Any) -> None: ...

    model = _trained("logreg")
    registry = ModelRegistry(None, signing_key=SigningKey(b"0123456789abcdef"))  # type: ignore[arg-type]
    published = registry.stage(Pipe(), "logreg", "1", model, {}, [])  # type: ignore[arg-type]
    assert published.influence == influence(model)
