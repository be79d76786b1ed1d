"""The model catalogue: one conformance suite run over every entry, plus the fixed names.

Like River's own estimator checks: every entry builds, pickles, clones, learns a
small stream, predicts, and predicts the same after a pickle round trip.
"""

from __future__ import annotations

import itertools
import math
import pickle
from typing import Any

import pytest
from river import base, compose, datasets, forest, linear_model, naive_bayes, preprocessing, tree

from shared.catalogue import CATALOGUE, CatalogueError, ModelSpec, build_model

Rows = list[tuple[dict[str, Any], Any]]

# Batch challengers fit on a window: small enough that they fit (in the test's own
# process) and predict within the conformance suite's 200 rows.
SMALL_BATCH = {
    "window": 150,
    "min_train": 100,
    "retrain_every": 60,
    "swap_after": 10,
    "n_candidates": 4,
    "background": False,
}
PARAMS: dict[str, dict[str, Any]] = {"sk_hgb": SMALL_BATCH, "sk_logreg": SMALL_BATCH}


def build(spec: ModelSpec) -> Any:
    """The entry with the params that make it learn within the suite's stream."""
    return build_model(spec.name, PARAMS.get(spec.name))


def rows_for(spec: ModelSpec, n: int = 250) -> Rows:
    stream = datasets.TrumpApproval() if "regression" in spec.tasks else datasets.Phishing()
    return list(itertools.islice(stream, n))


def is_classifier(spec: ModelSpec) -> bool:
    return "regression" not in spec.tasks


def final_step(model: Any) -> Any:
    return list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model


def learn(model: Any, rows: Rows) -> None:
    for x, y in rows:
        model.learn_one(x, y)


def answers(model: Any, rows: Rows, classifier: bool) -> list[Any]:
    if classifier:
        return [(model.predict_one(x), model.predict_proba_one(x)) for x, _ in rows]
    return [model.predict_one(x) for x, _ in rows]


ENTRIES = pytest.mark.parametrize("spec", CATALOGUE.values(), ids=list(CATALOGUE))


@ENTRIES
def test_entry_builds_a_fresh_model_of_its_kind(spec: ModelSpec) -> None:
    model = build_model(spec.name)
    assert model is not build_model(spec.name)
    assert spec.tasks in ({"binary"}, {"binary", "multiclass"}, {"regression"})
    expected = base.Classifier if is_classifier(spec) else base.Regressor
    assert isinstance(final_step(model), expected)
    assert isinstance(final_step(model), spec.estimator)


@ENTRIES
def test_entry_pickles_and_clones_unfitted(spec: ModelSpec) -> None:
    model = build_model(spec.name)
    assert repr(pickle.loads(pickle.dumps(model))) == repr(model)
    assert repr(model.clone()) == repr(model)


@ENTRIES
def test_entry_learns_and_predicts_a_small_stream(spec: ModelSpec) -> None:
    rows = rows_for(spec)
    model = build(spec)
    learn(model, rows[:200])
    for x, _ in rows[200:]:
        y_pred = model.predict_one(x)
        if is_classifier(spec):
            assert y_pred in (True, False)
            proba = model.predict_proba_one(x)
            assert set(proba) <= {True, False}
            assert all(0.0 <= p <= 1.0 for p in proba.values())
            assert math.isclose(sum(proba.values()), 1.0, abs_tol=1e-6)
        else:
            assert isinstance(y_pred, float) and math.isfinite(y_pred)


@ENTRIES
def test_entry_predicts_and_learns_identically_after_a_pickle_round_trip(spec: ModelSpec) -> None:
    rows, classifier = rows_for(spec), is_classifier(spec)
    model = build(spec)
    learn(model, rows[:200])
    restored = pickle.loads(pickle.dumps(model))
    assert answers(restored, rows[200:], classifier) == answers(model, rows[200:], classifier)
    learn(model, rows[200:225])
    learn(restored, rows[200:225])
    assert answers(restored, rows[225:], classifier) == answers(model, rows[225:], classifier)


@ENTRIES
def test_entry_clone_is_unfitted_and_relearns_the_same(spec: ModelSpec) -> None:
    rows, classifier = rows_for(spec), is_classifier(spec)
    model = build(spec)
    learn(model, rows[:200])
    clone = model.clone()
    assert answers(clone, rows[200:], classifier) == answers(build(spec), rows[200:], classifier)
    learn(clone, rows[:200])
    assert answers(clone, rows[200:], classifier) == answers(model, rows[200:], classifier)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("logreg", preprocessing.StandardScaler() | linear_model.LogisticRegression()),
        ("hoeffding_tree", tree.HoeffdingTreeClassifier()),
        ("hat", tree.HoeffdingAdaptiveTreeClassifier(seed=42)),
        ("arf", forest.ARFClassifier(seed=42)),
        ("gnb", naive_bayes.GaussianNB()),
        ("linreg", preprocessing.StandardScaler() | linear_model.LinearRegression()),
        ("hoeffding_tree_regressor", tree.HoeffdingTreeRegressor()),
        ("hat_regressor", tree.HoeffdingAdaptiveTreeRegressor(seed=42)),
        ("arf_regressor", forest.ARFRegressor(seed=42)),
    ],
)
def test_names_have_their_fixed_meaning(name: str, expected: Any) -> None:
    model = build_model(name)
    assert type(model) is type(expected)
    if isinstance(expected, compose.Pipeline):
        assert list(model.steps) == list(expected.steps)
    assert repr(model) == repr(expected)


def test_the_catalogue_names_are_exactly_the_documented_ones() -> None:
    assert set(CATALOGUE) == {
        "logreg",
        "hoeffding_tree",
        "hat",
        "arf",
        "gnb",
        "linreg",
        "hoeffding_tree_regressor",
        "hat_regressor",
        "arf_regressor",
        "sk_hgb",
        "sk_logreg",
    }
    assert all(name == spec.name for name, spec in CATALOGUE.items())


def test_params_reach_the_estimator() -> None:
    logreg = build_model("logreg", {"l2": 0.1})
    assert logreg["LogisticRegression"].l2 == 0.1
    assert logreg["StandardScaler"].with_std is True
    assert build_model("linreg", {"intercept_init": 2.0})["LinearRegression"].intercept_init == 2.0
    hat = build_model("hat", {"grace_period": 50})
    assert (hat.grace_period, hat.seed) == (50, 42)
    assert build_model("arf", {"n_models": 3, "seed": 7}).seed == 7
    assert build_model("gnb", {}) is not None


def test_params_do_not_leak_between_builds() -> None:
    params = {"grace_period": 50}
    build_model("hat", params)
    assert params == {"grace_period": 50}
    assert build_model("hat").grace_period == tree.HoeffdingAdaptiveTreeClassifier().grace_period


def test_an_unknown_param_is_refused_by_name() -> None:
    with pytest.raises(
        CatalogueError, match=r"model 'logreg' has no parameter 'l3' \(it takes .*l2"
    ):
        build_model("logreg", {"l3": 0.1})
    with pytest.raises(CatalogueError, match="'with_std'"):
        build_model("logreg", {"with_std": False})  # the scaler's, not the linear model's


def test_a_param_the_estimator_rejects_is_a_catalogue_error() -> None:
    with pytest.raises(CatalogueError, match="model 'arf': bad parameters"):
        build_model("arf", {"n_models": "many"})


def test_an_unknown_model_is_refused_with_the_known_names() -> None:
    with pytest.raises(CatalogueError, match=r"unknown model 'svm' .*logreg"):
        build_model("svm")


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("hat", "regression"),
        ("arf", "regression"),
        ("logreg", "regression"),
        ("logreg", "multiclass"),
        ("linreg", "binary"),
        ("arf_regressor", "multiclass"),
    ],
)
def test_a_model_that_does_not_fit_the_task_is_refused(name: str, task: Any) -> None:
    with pytest.raises(CatalogueError, match=f"model '{name}' does not fit task '{task}'"):
        build_model(name, task=task)


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("logreg", "binary"),
        ("hat", "multiclass"),
        ("gnb", "binary"),
        ("hat_regressor", "regression"),
    ],
)
def test_a_model_that_fits_the_task_is_built(name: str, task: Any) -> None:
    assert build_model(name, task=task) is not None
