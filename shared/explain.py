"""Why a model answered as it did: each feature's part in one prediction.

`explain(model, x)` reads the fitted model, never changes it, and answers by family:

- `linear` (`logreg`, `linreg`: a `StandardScaler` in front of a linear model): each
  feature's contribution is its weight times its standardised value. With the
  `intercept` they add up to the model's raw score: the log-odds of the positive class
  for `logreg`, the prediction for `linreg`. Sorted by size, largest first.
- `decision_path` (`hoeffding_tree`, `hat` and their regressors): the tests on the
  path from the root to the leaf the vector reaches, in order, as River writes them
  (`amount > 120.5`); a feature the vector lacks follows its most common branch.
- `forest` (`arf`, `arf_regressor`): per feature, in how many of the forest's trees
  the vector's path tests it (`trees`), most first.
- `linear` for `sk_logreg` too (a batch challenger, `shared.batch_models`): weight
  times the imputed, standardised value, for the predicted class (binary: the
  positive class, the last label of `classes`).
- `none` for any other model (`gnb`, `sk_hgb`, a batch model before its first fit),
  with the reason in `note`.

>>> from river import linear_model, preprocessing
>>> model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
>>> for i in range(200):
...     x = {"a": float(i % 10), "b": float(i % 3)}
...     model.learn_one(x, x["a"] > 4)
>>> why = explain(model, {"a": 9.0, "b": 1.0})
>>> why["method"], [f["feature"] for f in why["features"]]
('linear', ['a', 'b'])
>>> why["features"][0]["contribution"] > 1.0
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import compose, linear_model, preprocessing

from shared.batch_models import BatchClassifier

__all__ = ["explain", "influence"]


def explain(model: Any, x: Mapping[str, float]) -> dict[str, Any]:
    """`{"method": ..., "features": [...], "intercept"?: float, "note"?: str}` for `x`."""
    if isinstance(model, BatchClassifier):
        return _batch(model, x)
    scaler, estimator = _split(model)
    if isinstance(estimator, linear_model.base.GLM):
        return _linear(scaler, estimator, x)
    if scaler is None and _root(estimator) is not None:
        return _path(estimator, x)
    if scaler is None and _trees(estimator):
        return _forest(estimator, x)
    return {
        "method": "none",
        "features": [],
        "note": f"no explanation for {type(estimator).__name__}",
    }


def _split(model: Any) -> tuple[preprocessing.StandardScaler | None, Any]:
    """The scaler in front (if any) and the estimator of a catalogue model."""
    if isinstance(model, compose.Pipeline):
        steps = list(model.steps.values())
        if len(steps) == 2 and isinstance(steps[0], preprocessing.StandardScaler):
            return steps[0], steps[1]
        return None, model
    return None, model


def _linear(
    scaler: preprocessing.StandardScaler | None, glm: Any, x: Mapping[str, float]
) -> dict[str, Any]:
    z = scaler.transform_one(dict(x)) if scaler is not None else dict(x)
    weights = glm.weights
    parts = {name: float(weights.get(name, 0.0) * z[name]) for name in x}
    features = [
        {"feature": name, "value": x[name], "contribution": part}
        for name, part in sorted(parts.items(), key=lambda item: -abs(item[1]))
    ]
    return {"method": "linear", "intercept": float(glm.intercept), "features": features}


def _none(note: str) -> dict[str, Any]:
    return {"method": "none", "features": [], "note": note}


def _batch(model: BatchClassifier, x: Mapping[str, float]) -> dict[str, Any]:
    fitted = model.fitted
    if fitted is None or fitted.estimator is None:
        return _none(f"{type(model).__name__} has no fitted model yet (or one class only)")
    if model.kind != "logreg":
        return _none(
            f"no per-prediction explanation for {type(model).__name__} (gradient boosting);"
            " the version's influence gives what it relies on overall"
        )
    imputer, scaler, glm = (step for _, step in fitted.estimator.steps)
    row = np.array([fitted.row(x)])
    z = scaler.transform(imputer.transform(row))[0]
    proba = fitted.estimator.predict_proba(row)[0]
    k = 0 if glm.coef_.shape[0] == 1 else int(np.argmax(proba))
    parts = {c: float(glm.coef_[k][i] * z[i]) for i, c in enumerate(fitted.columns) if c in x}
    features = [
        {"feature": name, "value": x[name], "contribution": part}
        for name, part in sorted(parts.items(), key=lambda item: -abs(item[1]))
    ]
    label = fitted.labels[-1] if glm.coef_.shape[0] == 1 else fitted.labels[k]
    return {
        "method": "linear",
        "intercept": float(glm.intercept_[k]),
        "features": features,
        "note": f"log-odds of class {label!r}",
    }


def _batch_influence(model: BatchClassifier) -> dict[str, float]:
    """Absolute weights on standardised inputs (`sk_logreg`, summed over classes), or the
    samples the boosted trees' splits divide per feature (`sk_hgb`)."""
    fitted = model.fitted
    if fitted is None or fitted.estimator is None:
        return {}
    raw: dict[str, float] = {}
    if model.kind == "logreg":
        weights = np.abs(fitted.estimator.steps[-1][1].coef_).sum(axis=0)
        return {c: float(w) for c, w in zip(fitted.columns, weights, strict=True)}
    kept, boosting = (step for _, step in fitted.estimator.steps)
    columns = [c for c, keep in zip(fitted.columns, kept.get_support(), strict=True) if keep]
    for trees in boosting._predictors:
        for tree in trees:
            nodes = tree.nodes[tree.nodes["is_leaf"] == 0]
            for feature, count in zip(nodes["feature_idx"], nodes["count"], strict=True):
                name = columns[int(feature)]
                raw[name] = raw.get(name, 0.0) + float(count)
    return raw


def _root(tree: Any) -> Any:
    return getattr(tree, "_root", None)


def _trees(forest: Any) -> list[Any]:
    trees = getattr(forest, "models", None) or getattr(forest, "data", None) or []
    return [t for t in trees if _root(t) is not None]


def _tests(tree: Any, x: Mapping[str, float]) -> list[tuple[str, str]]:
    """`(feature, test)` for each branch on `x`'s path through `tree`, root first."""
    tests = []
    node = _root(tree)
    while hasattr(node, "branch_no"):  # a branch; a leaf ends the path
        feature = node.feature
        if feature in x:
            index = node.branch_no(x)
            tests.append((feature, node.repr_branch(index, shorten=False)))
        else:
            index, _ = node.most_common_path()
            tests.append((feature, f"{feature} missing: its most common branch"))
        node = node.children[index]
    return tests


def _path(tree: Any, x: Mapping[str, float]) -> dict[str, Any]:
    features = [
        {"feature": feature, "value": x.get(feature), "test": test}
        for feature, test in _tests(tree, x)
    ]
    return {"method": "decision_path", "features": features}


def _forest(forest: Any, x: Mapping[str, float]) -> dict[str, Any]:
    trees = _trees(forest)
    counts = Counter(feature for tree in trees for feature in {f for f, _ in _tests(tree, x)})
    features = [
        {"feature": feature, "value": x.get(feature), "trees": n}
        for feature, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    return {"method": "forest", "trees": len(trees), "features": features}


def influence(model: Any, top: int = 20) -> dict[str, float]:
    """What `model` relies on overall: each feature's share (all features' sum to 1) of, for a
    linear model, the absolute weights (on standardised inputs, so comparable); for a
    tree or forest (or `sk_hgb`'s boosted trees), the weight of the samples its splits on
    the feature divide; the
    `top` largest, largest first. Empty for a model it cannot read (or one that has
    learned nothing yet).

    >>> from river import linear_model, preprocessing
    >>> model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    >>> for i in range(200):
    ...     model.learn_one({"a": float(i % 10), "b": float(i % 3)}, i % 10 > 4)
    >>> list(influence(model)), round(sum(influence(model).values()), 6)
    (['a', 'b'], 1.0)
    """
    scaler, estimator = _split(model)
    raw: dict[str, float] = {}
    if isinstance(model, BatchClassifier):
        raw = _batch_influence(model)
    elif isinstance(estimator, linear_model.base.GLM):
        raw = {f: abs(float(w)) for f, w in estimator.weights.items()}
    elif scaler is None:
        trees = [estimator] if _root(estimator) is not None else _trees(estimator)
        for tree in trees:
            for node in _root(tree).iter_dfs():
                if hasattr(node, "branch_no"):  # a split: weighted by what reaches it
                    weight = float(getattr(node, "total_weight", 1.0) or 1.0)
                    raw[node.feature] = raw.get(node.feature, 0.0) + weight
    total = sum(raw.values())
    if total <= 0:
        return {}
    return {f: v / total for f, v in sorted(raw.items(), key=lambda i: (-i[1], i[0]))[:top]}
