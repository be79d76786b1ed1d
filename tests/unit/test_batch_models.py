"""Batch challengers (`shared.batch_models`): fitted with time-ordered cross-validation
and a halving search, taken over at a label count the stream fixes, deterministic
across processes and pickles, explained, and learned beside the online models."""

from __future__ import annotations

import json
import pickle
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from services.training.learner import OnlineLearner
from shared.batch_models import (
    BatchClassifier,
    FitJob,
    SKHistGradientBoosting,
    SKLogisticRegression,
    _compile,
    fit_window,
)
from shared.catalogue import CatalogueError, build_model
from shared.explain import explain, influence
from shared.messages import BatchFit

Row = tuple[dict[str, Any], Any]
SMALL: dict[str, Any] = {"window": 400, "min_train": 300, "retrain_every": 300, "swap_after": 40}
FAST: dict[str, Any] = {**SMALL, "n_candidates": 4}


def stream(n: int, seed: int = 7, drift_at: int | None = None) -> list[Row]:
    """Two informative features and a noise one; after `drift_at` the concept flips."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rng.random(), rng.random(), rng.random()
        y = a + 0.5 * b > 0.75
        if drift_at is not None and i >= drift_at:
            y = not y
        rows.append(({"a": a, "b": b, "noise": c}, y))
    return rows


def run(model: Any, rows: list[Row]) -> list[Any]:
    """Test-then-train: each row's prediction, then learn it."""
    predictions = []
    for x, y in rows:
        predictions.append(model.predict_one(x))
        model.learn_one(x, y)
    return predictions


@pytest.mark.parametrize("cls", [SKHistGradientBoosting, SKLogisticRegression])
def test_a_fit_cross_validates_in_time_order_searches_and_records_it(
    cls: type[BatchClassifier],
) -> None:
    model = cls(**FAST, background=False)
    run(model, stream(339))
    assert model.batch_info is None and model.fitting, "fitted at 300, serves from 340"
    run(model, stream(1, seed=1))
    info = model.batch_info
    assert info is not None and not model.fitting
    assert info["search"] == "HalvingRandomSearchCV"
    assert info["candidates"] == 4 and info["iterations"] >= 1
    cv = info["cv"]
    assert (cv["scheme"], cv["n_splits"], cv["scoring"]) == ("TimeSeriesSplit", 3, "accuracy")
    assert len(cv["splits"]) == 3 and all(0.5 < s <= 1.0 for s in cv["splits"])
    assert cv["mean"] == pytest.approx(sum(cv["splits"]) / 3)
    assert info["window"] == {"rows": 300, "first": 1, "last": 300}
    assert info["serving_from"] == 340
    assert ("learning_rate" if cls.kind == "hgb" else "C") in info["params"]
    BatchFit.model_validate_json(json.dumps(info))  # what a version says


def test_it_predicts_nothing_before_its_first_fit_takes_over_then_at_the_label_count() -> None:
    rows = stream(700)
    model = SKLogisticRegression(**FAST, background=False)
    predictions = run(model, rows)
    assert predictions[:340] == [None] * 340, "learned 339 labels: the fit serves from 340"
    assert all(p in (True, False) for p in predictions[340:])
    # the second fit starts at 600 (300 after the first), serves from 640 on 400 rows
    assert model.batch_info is not None
    assert model.batch_info["window"] == {"rows": 400, "first": 201, "last": 600}
    assert model.batch_info["serving_from"] == 640
    accuracy = sum(p == y for p, (_, y) in zip(predictions[340:], rows[340:], strict=True))
    assert accuracy / 360 > 0.9


def test_the_same_stream_gives_the_same_predictions_in_a_worker_or_in_place() -> None:
    rows = stream(1000)
    in_place = run(SKHistGradientBoosting(**FAST, background=False), rows)
    again = run(SKHistGradientBoosting(**FAST, background=False), rows)
    worker = SKHistGradientBoosting(**FAST)  # the spawned process fits
    assert run(worker, rows) == in_place == again
    assert worker.batch_info is not None and worker.batch_info["serving_from"] == 940


def test_a_pickle_mid_fit_takes_over_at_the_same_count_with_the_same_model() -> None:
    rows = stream(1000, drift_at=500)
    model = SKHistGradientBoosting(**FAST)
    first = run(model, rows[:620])  # a fit started at 600, serves from 640
    assert model.fitting
    restored = pickle.loads(pickle.dumps(model))
    assert restored.fitting and restored.batch_info == model.batch_info
    rest = run(model, rows[620:])
    assert run(restored, rows[620:]) == rest
    assert restored.batch_info == model.batch_info or _same_but_time(
        restored.batch_info, model.batch_info
    )
    assert restored.batch_info is not None and restored.batch_info["serving_from"] == 940
    uninterrupted = run(SKHistGradientBoosting(**FAST, background=False), rows)
    assert first + rest == uninterrupted


def _same_but_time(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    assert a is not None and b is not None
    return {**a, "fit_seconds": 0} == {**b, "fit_seconds": 0}


def test_a_pickled_fitted_model_predicts_without_starting_a_fit() -> None:
    model = SKLogisticRegression(**FAST)
    rows = stream(700)
    run(model, rows[:620])
    assert model.fitting
    served = pickle.loads(pickle.dumps(model))
    x: Any = rows[650][0]
    assert served.predict_one(x) == model.predict_one(x)
    assert served.predict_proba_one(x) == model.predict_proba_one(x)
    assert served._future is None, "predicting alone never starts the pending fit"


def test_retrain_now_fits_at_the_next_label() -> None:
    model = SKLogisticRegression(**FAST, background=False)
    rows = stream(500)
    run(model, rows[:400])  # first fit at 300, serving from 340
    model.retrain_now()
    run(model, rows[400:441])
    assert model.batch_info is not None
    assert model.batch_info["window"]["last"] == 401
    assert model.batch_info["serving_from"] == 441


def test_after_an_abrupt_drift_it_recovers_at_its_next_fit() -> None:
    rows = stream(2000, drift_at=1000)
    model = SKHistGradientBoosting(
        window=500,
        min_train=300,
        retrain_every=400,
        swap_after=50,
        n_candidates=4,
        background=False,
    )
    predictions = run(model, rows)

    def accuracy(start: int, stop: int) -> float:
        pairs = zip(predictions[start:stop], rows[start:stop], strict=True)
        return sum(p == y for p, (_, y) in pairs) / (stop - start)

    assert accuracy(350, 1000) > 0.9
    assert accuracy(1000, 1050) < 0.2, "the old concept, until a fit sees the new one"
    # fits at 1100 (a window of the old concept, mostly) and at 1500 (the new only)
    assert accuracy(1550, 2000) > 0.9


def test_multiclass_string_labels_and_missing_or_new_features() -> None:
    rng = random.Random(3)
    rows: list[Row] = []
    for i in range(500):
        a = rng.random()
        x: dict[str, Any] = {"a": a}
        if i % 7:
            x["b"] = rng.random()  # sometimes missing: NaN
        if i >= 200:
            x["late"] = 1.0  # a column that appears mid-stream
        rows.append((x, "low" if a < 0.33 else "mid" if a < 0.66 else "high"))
    for cls in (SKHistGradientBoosting, SKLogisticRegression):
        model = cls(**FAST, background=False)
        predictions = run(model, rows)
        proba = model.predict_proba_one({"a": 0.9})
        assert (
            set(proba) == {"low", "mid", "high"}
            and max(proba, key=lambda label: proba[label]) == "high"
        )
        assert sum(p == y for p, (_, y) in zip(predictions[340:], rows[340:], strict=True)) > 120
        assert model.batch_info is not None and model.batch_info["window"]["rows"] == 300


def test_a_window_of_one_class_predicts_it() -> None:
    model = SKHistGradientBoosting(**FAST, background=False)
    run(model, [({"a": float(i)}, True) for i in range(340)])
    assert model.predict_proba_one({"a": 1.0}) == {True: 1.0}
    assert model.batch_info is not None and model.batch_info["note"]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"windw": 10}, "has no parameter 'windw'"),
        ({"window": 0}, "window must be an integer >= 2"),
        ({"window": 100, "min_train": 200}, "cannot exceed window"),
        ({"min_train": 5}, "too small for 3 splits"),
        ({"n_splits": 1}, "n_splits must be"),
        ({"swap_after": -1}, "swap_after must be"),
        ({"retrain_every": 2.5}, "retrain_every must be"),
        ({"background": "yes"}, "background must be"),
    ],
)
def test_the_catalogue_refuses_bad_params(params: dict[str, Any], match: str) -> None:
    for name in ("sk_hgb", "sk_logreg"):
        with pytest.raises(CatalogueError, match=match):
            build_model(name, params, task="binary")


def test_catalogue_entries_fit_classification_only() -> None:
    assert isinstance(build_model("sk_hgb", task="multiclass"), SKHistGradientBoosting)
    assert isinstance(
        build_model("sk_logreg", {"window": 3000}, task="binary"), SKLogisticRegression
    )
    with pytest.raises(CatalogueError, match="does not fit task 'regression'"):
        build_model("sk_hgb", task="regression")


def test_explain_and_influence_read_the_fitted_model() -> None:
    rows = stream(400)
    hgb = SKHistGradientBoosting(**FAST, background=False)
    logreg = SKLogisticRegression(**FAST, background=False)
    x = {"a": 0.9, "b": 0.8, "noise": 0.1}
    for model in (hgb, logreg):
        assert explain(model, x)["method"] == "none" and influence(model) == {}
        run(model, rows)
    why = explain(logreg, x)
    assert why["method"] == "linear" and why["features"][0]["feature"] == "a"
    assert "True" in why["note"]
    assert explain(hgb, x)["method"] == "none"
    for model in (hgb, logreg):
        shares = influence(model)
        assert next(iter(shares)) == "a" and sum(shares.values()) == pytest.approx(1.0)


def test_in_the_learner_it_learns_everything_and_scores_once_fitted() -> None:
    rows = stream(600)
    models = {
        "logreg": build_model("logreg"),
        "sk_logreg": build_model("sk_logreg", {**FAST, "background": False}),
    }
    learner = OnlineLearner(models, ttl=timedelta(hours=1))
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    for i, (x, y) in enumerate(rows):
        learner.add_features(f"e{i:04d}", t0 + timedelta(seconds=i), x)
        learner.add_label(f"e{i:04d}", y)
    learner.advance(None)
    score = learner.scores["sk_logreg"]
    assert score.n_learned == 600 and score.n_scored == 600 - 340
    assert score.accuracy > 0.9
    restored = pickle.loads(pickle.dumps(learner))
    assert restored.models["sk_logreg"].batch_info == models["sk_logreg"].batch_info


@pytest.mark.parametrize("kind", ["hgb", "logreg"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_one_row_predictions_equal_scikit_learns_own(kind: str, n_classes: int) -> None:
    """The compiled one-row path (`_compile`) against `predict_proba`, missing values too."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1500, 5))
    X[rng.random(size=X.shape) < 0.1] = np.nan
    X[:, 4] = np.nan  # a column empty in the window: dropped (hgb) or imputed as 0
    signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1])
    y = (np.digitize(signal, [-0.5, 0.5]) if n_classes == 3 else signal > 0).astype(np.int32)
    columns = tuple(f"f{i}" for i in range(5))
    job = FitJob(kind, X, y, columns, tuple(range(n_classes)), 1, 1500, 3, 4, 42)
    fitted = fit_window(job)
    expected = fitted.estimator.predict_proba(X[:400])
    compiled = _compile(kind, fitted.estimator)
    got = np.array([compiled(row.tolist()) for row in X[:400]])
    assert np.abs(got - expected).max() < 1e-12
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_serving_loads_a_pickled_batch_model_predicts_and_explains_it() -> None:
    from services.serving.models import LoadedModel

    model = SKHistGradientBoosting(**FAST, background=False)
    run(model, stream(400))
    served = LoadedModel("sk_hgb", "3", pickle.loads(pickle.dumps(model)))
    vector: dict[str, float | None] = {"a": 0.9, "b": None, "noise": 0.2}
    scored = served.predict(vector)
    assert scored.y_pred is True and scored.probabilities is not None
    assert served.explain(vector)["method"] == "none"
    unfitted = LoadedModel("sk_hgb", "1", SKHistGradientBoosting())
    assert unfitted.predict(vector).y_pred is None


def test_sparse_one_hot_keys_are_indicators_and_the_columns_stay_bounded() -> None:
    """Features' one-hot keys come only when present (`colour=red: 1.0`): absent is 0,
    not missing, or the imputer would fill every one with 1.0. A key of high
    cardinality is bounded by `max_columns` and forgotten once out of the window."""
    rng = random.Random(2)
    rows: list[Row] = []
    for i in range(900):
        colour = rng.choice(["red", "green", "blue"])
        x: dict[str, Any] = {"n": rng.random(), f"colour={colour}": 1.0}
        if i < 450:
            x[f"id={i}"] = 1.0
        rows.append((x, colour == "red"))
    model = SKLogisticRegression(
        window=300, min_train=200, retrain_every=300, swap_after=20, n_candidates=3,
        background=False, max_columns=50,
    )  # fmt: skip
    predictions = run(model, rows)
    right = sum(p == y for p, (_, y) in zip(predictions[220:], rows[220:], strict=True))
    assert right / len(rows[220:]) > 0.97
    fitted = model.fitted
    assert fitted is not None
    indicators = dict(zip(fitted.columns, fitted.indicators, strict=True))
    assert indicators == {"colour=blue": True, "colour=green": True, "colour=red": True, "n": False}
    assert model.ignored > 0, "ids beyond 50 columns were not kept"
    assert sorted(model._columns) == ["colour=blue", "colour=green", "colour=red", "n"]
    assert model._X.shape == (300, 4)


def test_a_pickle_after_the_fit_came_back_keeps_its_result() -> None:
    rows = stream(700)
    model = SKLogisticRegression(**FAST)
    run(model, rows[:610])  # a fit started at 600 in the worker, serves from 640
    deadline = time.monotonic() + 60
    while model._ready() is None:
        assert time.monotonic() < deadline, "the worker never answered"
        time.sleep(0.05)
    restored = pickle.loads(pickle.dumps(model))
    assert restored._ready() is not None
    run(restored, rows[610:615])
    assert restored._future is None, "no fit again: its result came with the pickle"
    assert run(restored, rows[615:]) == run(model, rows[610:])[5:]
    assert restored.batch_info is not None and restored.batch_info == model.batch_info
