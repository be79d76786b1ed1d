"""The model catalogue: the fixed names a pipeline file may use, and how to build them.

Each name means one River estimator with River's defaults (plus a fixed seed
where the estimator is randomised); `params` from the pipeline file override
those defaults. For `logreg` and `linreg` the params go to the linear model
behind the `StandardScaler`. `sk_hgb` and `sk_logreg` are batch challengers:
scikit-learn models refitted on a window of recent labels, behind River's verbs
(`shared.batch_models`; their params are the window's and the search's).

>>> model = build_model("hat", {"grace_period": 50}, task="binary")
>>> model.grace_period, model.seed
(50, 42)
>>> list(build_model("logreg").steps)
['StandardScaler', 'LogisticRegression']
>>> build_model("hat", task="regression")
Traceback (most recent call last):
  ...
shared.catalogue.CatalogueError: model 'hat' does not fit task 'regression' (it supports binary, multiclass)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from river import base, compose, forest, linear_model, naive_bayes, preprocessing, tree

from shared.batch_models import SKHistGradientBoosting, SKLogisticRegression

__all__ = [
    "CATALOGUE",
    "CatalogueError",
    "ModelSpec",
    "RiverModel",
    "Task",
    "build_model",
    "check_task",
    "get_spec",
    "predict",
    "predicts_by_max_proba",
]

Task = Literal["binary", "multiclass", "regression"]
# A built model: a River classifier, regressor or pipeline. Typed loosely on purpose:
# callers use River's verbs (`learn_one`, `predict_one`, `predict_proba_one`), which
# River's base classes don't share, so a narrower type would force casts everywhere.
RiverModel = Any
CLASSIFICATION: frozenset[Task] = frozenset({"binary", "multiclass"})
REGRESSION: frozenset[Task] = frozenset({"regression"})


class CatalogueError(ValueError):
    """An unknown model name, an unknown parameter, or a model that does not fit the task."""


@dataclass(frozen=True)
class ModelSpec:
    """One catalogue entry: a River estimator, the tasks it fits, its fixed defaults.

    >>> spec = CATALOGUE["arf"]
    >>> spec.estimator.__name__, sorted(spec.tasks), dict(spec.defaults)
    ('ARFClassifier', ['binary', 'multiclass'], {'seed': 42})
    """

    name: str
    estimator: type[base.Estimator]
    tasks: frozenset[Task]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    scaled: bool = False  # put a StandardScaler in front of the estimator

    def param_names(self) -> list[str]:
        """The parameters `build` accepts: those of the estimator's constructor."""
        return sorted(inspect.signature(self.estimator).parameters)

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise `CatalogueError` if a parameter is not one the estimator takes."""
        unknown = sorted(set(params) - set(self.param_names()))
        if unknown:
            raise CatalogueError(
                f"model {self.name!r} has no parameter {', '.join(map(repr, unknown))}"
                f" (it takes {', '.join(self.param_names())})"
            )

    def build(self, params: Mapping[str, Any] | None = None) -> RiverModel:
        """A fresh, unfitted model with the defaults overridden by `params`."""
        params = dict(params or {})
        self.check_params(params)
        try:
            model = self.estimator(**{**self.defaults, **params})
        except (TypeError, ValueError) as error:
            raise CatalogueError(f"model {self.name!r}: bad parameters {params}: {error}") from None
        if self.scaled:
            return preprocessing.StandardScaler() | model
        return model


_SPECS = [
    # `LogisticRegression` is a binary classifier: it would silently misread more classes.
    ModelSpec("logreg", linear_model.LogisticRegression, frozenset({"binary"}), scaled=True),
    ModelSpec("hoeffding_tree", tree.HoeffdingTreeClassifier, CLASSIFICATION),
    ModelSpec("hat", tree.HoeffdingAdaptiveTreeClassifier, CLASSIFICATION, {"seed": 42}),
    ModelSpec("arf", forest.ARFClassifier, CLASSIFICATION, {"seed": 42}),
    ModelSpec("gnb", naive_bayes.GaussianNB, CLASSIFICATION),
    ModelSpec("linreg", linear_model.LinearRegression, REGRESSION, scaled=True),
    ModelSpec("hoeffding_tree_regressor", tree.HoeffdingTreeRegressor, REGRESSION),
    ModelSpec("hat_regressor", tree.HoeffdingAdaptiveTreeRegressor, REGRESSION, {"seed": 42}),
    ModelSpec("arf_regressor", forest.ARFRegressor, REGRESSION, {"seed": 42}),
    # Batch challengers (`shared.batch_models`): scikit-learn refitted on a recent window.
    ModelSpec("sk_hgb", SKHistGradientBoosting, CLASSIFICATION),
    ModelSpec("sk_logreg", SKLogisticRegression, CLASSIFICATION),
]

CATALOGUE: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> ModelSpec:
    """The catalogue entry `name`, or a `CatalogueError` listing the known names."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise CatalogueError(
            f"unknown model {name!r} (the catalogue has {', '.join(CATALOGUE)})"
        ) from None


def check_task(name: str, task: Task) -> None:
    """Raise `CatalogueError` unless the model `name` fits `task`."""
    spec = get_spec(name)
    if task not in spec.tasks:
        raise CatalogueError(
            f"model {name!r} does not fit task {task!r}"
            f" (it supports {', '.join(sorted(spec.tasks))})"
        )


def build_model(
    name: str, params: Mapping[str, Any] | None = None, task: Task | None = None
) -> RiverModel:
    """Build the catalogue model `name`; with `task`, refuse one that does not fit it."""
    if task is not None:
        check_task(name, task)
    return get_spec(name).build(params)


def predicts_by_max_proba(model: RiverModel) -> bool:
    """Whether `predict_one` is River's default: the most probable class of `predict_proba_one`.

    Then one `predict_proba_one` gives both answers, exactly as the two calls would
    (a pipeline's steps before the model only transform while predicting).

    >>> predicts_by_max_proba(build_model("hat")), predicts_by_max_proba(build_model("linreg"))
    (True, False)
    """
    if not isinstance(model, base.Classifier):
        return False
    final = list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model
    return type(final).predict_one is base.Classifier.predict_one


def predict(model: RiverModel, x: dict[str, Any], by_max_proba: bool, classifier: bool) -> Any:
    """`(predict_one(x), predict_proba_one(x) or None)`, in one model pass when `by_max_proba`.

    `by_max_proba` is `predicts_by_max_proba(model)` and `classifier` whether the model is
    a classifier, both worked out once per model, not per call.
    """
    if by_max_proba:
        proba = model.predict_proba_one(x)
        return (max(proba, key=proba.get) if proba else None), proba
    return model.predict_one(x), model.predict_proba_one(x) if classifier else None
