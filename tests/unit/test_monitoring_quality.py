"""Quality: equal to River's metrics computed directly on the same pairs."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from river import metrics, utils

from services.monitoring.quality import Quality
from shared.labels import canonical


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def test_binary_metrics_equal_rivers_on_the_same_pairs() -> None:
    rng = random.Random(3)
    pairs = [(rng.random() < 0.4, rng.random() < 0.5, rng.random()) for _ in range(3000)]
    ours, window = Quality("binary"), Quality("binary", window=500)
    river = {
        "accuracy": metrics.Accuracy(),
        "precision": metrics.Precision(),
        "recall": metrics.Recall(),
        "f1": metrics.F1(),
        "log_loss": metrics.LogLoss(),
    }
    rolling: Any = utils.Rolling(metrics.Accuracy, window_size=500)
    rolling_f1: Any = utils.Rolling(metrics.F1, window_size=500)
    for y, y_pred, p in pairs:
        # the wire spells classes in many ways: bools, ints, strings
        ours.update(int(y), "1" if y_pred else "0", {"True": p, "False": 1 - p})
        window.update(y, y_pred, {"1": p, "0": 1 - p})
        for name, metric in river.items():
            metric.update(y, p if name == "log_loss" else y_pred)
        rolling.update(y, y_pred)
        rolling_f1.update(y, y_pred)
    got = ours.get()
    assert ours.n == 3000
    for name, metric in river.items():
        assert close(got[name], metric.get()), name
    assert got["accuracy"] == river["accuracy"].get()  # exact, not just close
    assert close(window.get()["accuracy"], rolling.get())
    assert close(window.get()["f1"], rolling_f1.get())


def test_multiclass_metrics_are_macro_averaged_like_rivers() -> None:
    rng = random.Random(5)
    classes = ["a", "b", "c"]
    ours = Quality("multiclass")
    river = {
        "accuracy": metrics.Accuracy(),
        "precision": metrics.MacroPrecision(),
        "recall": metrics.MacroRecall(),
        "f1": metrics.MacroF1(),
    }
    loss = metrics.CrossEntropy()
    for _ in range(2000):
        y, y_pred = rng.choice(classes), rng.choice(classes)
        weights = [rng.random() + 0.01 for _ in classes]
        proba = {c: w / sum(weights) for c, w in zip(classes, weights, strict=True)}
        ours.update(y, y_pred, proba)
        for metric in river.values():
            metric.update(y, y_pred)
        loss.update(y, proba)
    got = ours.get()
    for name, metric in river.items():
        assert close(got[name], metric.get()), name
    assert close(got["log_loss"], loss.get())


def test_regression_mae_and_rmse_equal_rivers() -> None:
    rng = random.Random(8)
    ours, window = Quality("regression"), Quality("regression", window=100)
    mae, rmse = metrics.MAE(), metrics.RMSE()
    rolling: Any = utils.Rolling(metrics.MAE, window_size=100)
    for _ in range(1000):
        y, y_pred = rng.gauss(0, 3), rng.gauss(0, 3)
        ours.update(y, y_pred)
        window.update(str(y), y_pred)
        mae.update(y, y_pred)
        rmse.update(y, y_pred)
        rolling.update(y, y_pred)
    assert close(ours.get()["mae"], mae.get())
    assert close(ours.get()["rmse"], rmse.get())
    assert close(window.get()["mae"], rolling.get())


@pytest.mark.parametrize(
    ("value", "task", "expected"),
    [
        (True, "binary", True),
        (1, "binary", True),
        ("1", "binary", True),
        (1.0, "binary", True),
        ("true", "binary", True),
        (False, "binary", False),
        ("0", "binary", False),
        ("yes", "binary", "yes"),
        (2, "multiclass", 2),
        ("2", "multiclass", 2),
        (True, "multiclass", 1),
        ("cat", "multiclass", "cat"),
        (3, "regression", 3.0),
        (None, "binary", None),
    ],
)
def test_canonical_spellings(value: Any, task: Any, expected: Any) -> None:
    got = canonical(value, task)
    assert got == expected and type(got) is type(expected)


def test_nothing_scored_yet_gives_none() -> None:
    assert Quality("binary").get() == {
        "accuracy": None,
        "precision": None,
        "recall": None,
        "f1": None,
        "log_loss": None,
    }


def test_binary_metrics_equal_rivers_also_with_predictions_of_no_class() -> None:
    """One confusion matrix serves every metric; predictions that are neither class
    ("yes", 2) count as River's separate metrics count them, cumulative and windowed."""
    rng = random.Random(5)
    ours, window = Quality("binary"), Quality("binary", window=50)
    kinds: list[Any] = [metrics.Accuracy, metrics.Precision, metrics.Recall, metrics.F1]
    river: list[Any] = [kind() for kind in kinds]
    rolling: list[Any] = [utils.Rolling(kind, window_size=50) for kind in kinds]
    for _ in range(500):
        y = rng.random() < 0.5
        y_pred = rng.choice([True, False, "yes", 2])
        ours.update(y, y_pred)
        window.update(y, y_pred)
        for metric in (*river, *rolling):
            metric.update(y, canonical(y_pred, "binary"))
    names = ("accuracy", "precision", "recall", "f1")
    for name, metric, roll in zip(names, river, rolling, strict=True):
        assert ours.get()[name] == metric.get(), name
        assert window.get()[name] == roll.get(), name


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_log_loss_equals_rivers_cumulative_and_windowed(task: Any) -> None:
    rng = random.Random(11)
    classes = [True, False] if task == "binary" else [0, 1, 2]
    ours, window = Quality(task), Quality(task, window=40)
    kind: Any = metrics.LogLoss if task == "binary" else metrics.CrossEntropy
    river: Any = kind()
    rolling: Any = utils.Rolling(kind, window_size=40)
    for i in range(400):
        y = rng.choice(classes)
        weights = [rng.random() + (i % 7 == 0) * 1e-16 for _ in classes]
        proba = {c: w / sum(weights) for c, w in zip(classes, weights, strict=True)}
        if i % 5 == 0:  # some pairs come without probabilities
            proba = {}
        ours.update(y, classes[0], {str(c): p for c, p in proba.items()})
        window.update(y, classes[0], {str(c): p for c, p in proba.items()})
        if proba:
            target = proba[True] if task == "binary" else proba
            river.update(y, target)
            rolling.update(y, target)
    assert ours.get()["log_loss"] == river.get()
    assert window.get()["log_loss"] == rolling.get()
