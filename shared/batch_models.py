"""Batch challengers: scikit-learn models refitted on a recent window, with River's verbs.

`sk_hgb` (`HistGradientBoostingClassifier`) and `sk_logreg` (`SimpleImputer` ->
`StandardScaler` -> `LogisticRegression`) sit in the learner beside the online models
and compete by the same rule (`services.training.champion`): each predicts every event
before its label is learned (test-then-train), so every prediction is of an event that
came after the model's training window.

How a `BatchClassifier` learns:

- `learn_one(x, y)` appends the row to a ring of the `window` most recent labelled
  events and counts the labels. At `min_train` labels, and then every `retrain_every`
  labels after the start of the last fit (or at the next label after `retrain_now()`,
  e.g. on a concept-drift alert), it starts a fit of the window as it stands, in a
  separate process (one worker per process, shared by every batch model; `background`
  false fits in the caller, for tests). A fit due while another is pending starts at
  the first label after that one took over.
- The fit is a `HalvingRandomSearchCV` (successive halving over `n_candidates` draws of
  a small fixed grid, `GRIDS`) with `TimeSeriesSplit(n_splits)` as its cross-validation
  (each split trains on the past and is scored on what follows, by accuracy), a fixed
  `random_state` (`seed`), then the best candidate refitted on the whole window.
- The new model takes over at exactly `swap_after` labels after its fit started: the
  `learn_one` that reaches that count collects the result, waiting for the fit only if
  it is not done yet (with the defaults it has had 2,500 labels' time; a fit of 5,000
  rows takes about 2.4 s for `sk_hgb`, 0.15 s for `sk_logreg`, on one core). So *when* a model starts serving depends only on the
  stream, never on timing, and the same stream gives the same predictions.
- Before its first fit took over it predicts nothing (`predict_proba_one` is empty:
  the learner learns but does not score, as with a River classifier before its first
  class).

Pickling (training's checkpoints, registry versions, live slots) keeps the window and,
for a fit in flight, its input (the window as it was) or its result if it came back:
after unpickling, the next `learn_one` starts that fit again, which gives the same
model (same rows, same seed), taken over at the same label count. A model unpickled
only to predict (serving) never starts a fit. `batch_info` is what the version's
`ModelPublished.batch` says about the model that serves: its cross-validation scores,
chosen parameters and training window (label counts).

>>> import random
>>> rng = random.Random(1)
>>> model = SKLogisticRegression(window=300, min_train=200, retrain_every=400,
...                              swap_after=50, n_splits=3, n_candidates=4, background=False)
>>> for i in range(260):
...     x = {"a": rng.random(), "b": rng.random()}
...     model.learn_one(x, x["a"] > 0.5)
...     if i == 248:
...         print(model.predict_one(x))
None
>>> model.predict_one({"a": 0.9, "b": 0.5}), model.batch_info["window"]
(True, {'rows': 200, 'first': 1, 'last': 200})
>>> model.batch_info["cv"]["scheme"], model.batch_info["serving_from"]
('TimeSeriesSplit', 250)
"""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from river import base
from river.base.typing import ClfTarget

__all__ = [
    "GRIDS",
    "BatchClassifier",
    "FitJob",
    "FitResult",
    "SKHistGradientBoosting",
    "SKLogisticRegression",
    "batch_info",
    "fit_window",
]

log = logging.getLogger(__name__)

# The search spaces (successive halving draws `n_candidates` of these combinations).
GRIDS: dict[str, dict[str, list[Any]]] = {
    "hgb": {
        "learning_rate": [0.03, 0.1, 0.3],
        "max_leaf_nodes": [7, 15, 31, 63],
        "min_samples_leaf": [5, 20, 50],
        "l2_regularization": [0.0, 0.1, 1.0],
    },
    "logreg": {"C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]},
}
HALVING_FACTOR = 3
HGB_MAX_ITER = 100
PARENT_POLL_S = 1.0  # how often the worker checks that its parent is alive


@dataclass(frozen=True)
class FitJob:
    """One fit's input: the window's rows in time order (columns sorted by name, missing
    values NaN), the labels as codes into `classes`, and the search's settings."""

    kind: str  # a key of GRIDS
    X: np.ndarray
    y: np.ndarray
    columns: tuple[str, ...]
    classes: tuple[Any, ...]  # label of each code
    first: int  # the window is the first-th to the last-th labelled event
    last: int
    n_splits: int
    n_candidates: int
    seed: int


@dataclass(frozen=True)
class FitResult:
    """A fitted estimator (None: the window held one class), the labels of its
    `predict_proba` columns, the input columns it reads, what the search found, and
    which columns are indicators (every value present in the window was 1.0: a sparse
    one-hot key, absent meaning 0, as River's linear models read it)."""

    estimator: Any
    labels: tuple[Any, ...]
    columns: tuple[str, ...]
    info: dict[str, Any]
    indicators: tuple[bool, ...] = ()

    def row(self, x: Mapping[Any, Any]) -> list[float]:
        """`x` as the estimator reads it: in `columns` order, absent or None NaN, but 0.0
        for an indicator column."""
        row = [_value(x.get(c)) for c in self.columns]
        for i, indicator in enumerate(self.indicators):
            if indicator and row[i] != row[i]:
                row[i] = 0.0
        return row


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _estimator(kind: str, seed: int) -> tuple[Any, str]:
    """The estimator to search and the prefix of its parameters in the grid."""
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.feature_selection import VarianceThreshold
        from sklearn.pipeline import make_pipeline

        # VarianceThreshold drops the columns empty (all NaN: a feature that appeared
        # later than a split's rows) or constant in the rows it fits: gradient boosting
        # fails on an empty one.
        boosting = HistGradientBoostingClassifier(
            max_iter=HGB_MAX_ITER, early_stopping=False, random_state=seed
        )
        return make_pipeline(VarianceThreshold(), boosting), "histgradientboostingclassifier__"
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(
        SimpleImputer(keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    )
    return pipeline, "logisticregression__"


def fit_window(job: FitJob) -> FitResult:
    """Search, cross-validate in time order and refit on the whole window (runs in the
    worker process; deterministic given `job`)."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV, TimeSeriesSplit
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    window: dict[str, int] = {"rows": len(job.y), "first": job.first, "last": job.last}
    X = job.X
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty column's nanmin
        ones = (np.nanmin(X, axis=0) == 1.0) & (np.nanmax(X, axis=0) == 1.0)
    indicators = tuple(bool(i) for i in ones)
    if ones.any():
        X = X.copy()
        X[:, ones] = np.nan_to_num(X[:, ones], nan=0.0)
    codes = np.unique(job.y)
    if len(codes) < 2:  # one class: nothing to search, it is the answer
        alone = {"window": window, "note": "the window holds one class", "params": {}}
        return FitResult(None, (job.classes[int(codes[0])],), job.columns, alone, indicators)
    estimator, prefix = _estimator(job.kind, job.seed)
    grid = {prefix + name: values for name, values in GRIDS[job.kind].items()}
    combinations = math.prod(len(values) for values in grid.values())
    search = HalvingRandomSearchCV(
        estimator,
        grid,
        n_candidates=min(job.n_candidates, combinations),
        factor=HALVING_FACTOR,
        min_resources="exhaust",  # the last round scores on (nearly) the whole window
        cv=TimeSeriesSplit(n_splits=job.n_splits),
        scoring="accuracy",
        random_state=job.seed,
        refit=True,
        error_score=np.nan,
        n_jobs=1,
    )
    with threadpool_limits(limits=1), warnings.catch_warnings():  # one core: the learner's
        warnings.simplefilter("ignore", RuntimeWarning)  # nanvar of an empty column
        search.fit(X, job.y)
    best = search.best_index_
    results = search.cv_results_
    splits = [_finite(results[f"split{i}_test_score"][best]) for i in range(job.n_splits)]
    info: dict[str, Any] = {
        "search": "HalvingRandomSearchCV",
        "params": {k.removeprefix(prefix): _plain(v) for k, v in search.best_params_.items()},
        "cv": {
            "scheme": "TimeSeriesSplit",
            "n_splits": job.n_splits,
            "scoring": "accuracy",
            "mean": _finite(results["mean_test_score"][best]),
            "std": _finite(results["std_test_score"][best]),
            "splits": splits,
            "n_resources": int(results["n_resources"][best]),
        },
        "candidates": int(search.n_candidates_[0]),
        "iterations": int(search.n_iterations_),
        "window": window,
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    fitted = search.best_estimator_
    labels = tuple(job.classes[int(code)] for code in fitted.classes_)
    return FitResult(fitted, labels, job.columns, info, indicators)


# ---- predicting one row fast: scikit-learn's per-call overhead is ~0.6 ms for 100 trees


def _compile(kind: str, estimator: Any) -> Callable[[list[float]], list[float]]:
    """`predict_proba` of one row (a list in the fit's column order) as plain Python over
    the fitted parameters: the same sums in the same order as scikit-learn's
    (`HistGradientBoostingClassifier` adds each tree's leaf to the baseline, iteration
    by iteration), in ~40 µs where `predict_proba` takes ~600 µs (tests compare them)."""
    return _compile_hgb(estimator) if kind == "hgb" else _compile_logreg(estimator)


def _compile_hgb(pipeline: Any) -> Callable[[list[float]], list[float]]:
    kept, boosting = (step for _, step in pipeline.steps)
    columns = np.flatnonzero(kept.get_support())
    n_classes = len(boosting._predictors[0])
    trees = []
    for iteration in boosting._predictors:
        for k, tree in enumerate(iteration):
            nodes = tree.nodes
            if nodes["is_categorical"].any():  # never: the window's columns are numeric
                raise ValueError("categorical splits are not compiled")
            trees.append(
                (
                    k,
                    columns[nodes["feature_idx"]].tolist(),
                    nodes["num_threshold"].tolist(),
                    nodes["missing_go_to_left"].astype(bool).tolist(),
                    nodes["left"].tolist(),
                    nodes["right"].tolist(),
                    nodes["is_leaf"].astype(bool).tolist(),
                    nodes["value"].tolist(),
                )
            )
    baseline = boosting._baseline_prediction.ravel().tolist()

    def proba(row: list[float]) -> list[float]:
        raw = list(baseline)
        for k, feature, threshold, missing_left, left, right, leaf, value in trees:
            n = 0
            while not leaf[n]:
                v = row[feature[n]]
                if v != v:  # NaN: the side missing values went to in training
                    n = left[n] if missing_left[n] else right[n]
                else:
                    n = left[n] if v <= threshold[n] else right[n]
            raw[k] += value[n]
        return _link(raw, n_classes)

    return proba


def _compile_logreg(pipeline: Any) -> Callable[[list[float]], list[float]]:
    imputer, scaler, glm = (step for _, step in pipeline.steps)
    fill = imputer.statistics_.tolist()
    mean, scale = scaler.mean_.tolist(), scaler.scale_.tolist()
    coef, intercept = glm.coef_.tolist(), glm.intercept_.tolist()
    n_classes = len(coef) if len(coef) > 1 else 1

    def proba(row: list[float]) -> list[float]:
        z = [
            ((f if v != v else v) - m) / s
            for v, f, m, s in zip(row, fill, mean, scale, strict=True)
        ]
        raw = [
            b + sum(w * zi for w, zi in zip(ws, z, strict=True))
            for ws, b in zip(coef, intercept, strict=True)
        ]
        return _link(raw, n_classes)

    return proba


def _link(raw: list[float], n_classes: int) -> list[float]:
    """Probabilities from raw scores: the logistic (binary) or the softmax."""
    if n_classes == 1:
        p = _expit(raw[0])
        return [1.0 - p, p]
    top = max(raw)
    e = [math.exp(r - top) for r in raw]
    total = sum(e)
    return [v / total for v in e]


def _expit(r: float) -> float:
    if r >= 0:
        return 1.0 / (1.0 + math.exp(-r))
    e = math.exp(r)
    return e / (1.0 + e)


# ---- the worker process

_POOL: ProcessPoolExecutor | None = None


def _pool() -> ProcessPoolExecutor:
    """The process's one fitting worker, started on first use (spawned: a fork of a
    threaded service would copy its locks); it ends when its parent does, however that
    ends (kill -9 too)."""
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_follow_parent,
            initargs=(os.getpid(),),
        )
    return _POOL


def _warm() -> None:
    """In the worker: import what a fit needs before the first one is due."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: F401
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.linear_model import LogisticRegression  # noqa: F401


def _follow_parent(parent: int) -> None:
    """In the worker: exit as soon as `parent` is gone (an orphan is re-parented)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def _drop_pool() -> None:
    global _POOL
    pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


atexit.register(_drop_pool)


# ---- the model


def _value(v: Any) -> float:
    return math.nan if v is None else float(v)


class BatchClassifier(base.Classifier):
    """A scikit-learn classifier refitted on a window of recent labelled events (see the
    module doc). Parameters:

    - `window` (5,000): the labelled events kept, most recent first.
    - `retrain_every` (5,000): labels between the starts of two fits.
    - `min_train` (1,000): labels before the first fit.
    - `swap_after` (2,500): labels between a fit's start and its model taking over;
      the learner waits for a fit not back by then (see the README's cost figures).
    - `n_splits` (3): `TimeSeriesSplit`'s splits; `n_candidates` (8): the halving
      search's first round (at most the grid's size); `seed` (42): its and the
      estimator's `random_state`.
    - `background` (True): fit in the worker process, else in the caller.
    - `max_columns` (500): the most feature names kept (sorted, first come); values of
      later ones are ignored (`ignored`) until a column no row of a full window has is
      dropped at the start of a fit.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        window: int = 5000,
        retrain_every: int = 5000,
        min_train: int = 1000,
        swap_after: int = 2500,
        n_splits: int = 3,
        n_candidates: int = 8,
        seed: int = 42,
        background: bool = True,
        max_columns: int = 500,
    ) -> None:
        for name, value, low in (
            ("window", window, 2),
            ("retrain_every", retrain_every, 1),
            ("min_train", min_train, 2),
            ("swap_after", swap_after, 0),
            ("n_splits", n_splits, 2),
            ("n_candidates", n_candidates, 1),
            ("seed", seed, 0),
            ("max_columns", max_columns, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")
        if not isinstance(background, bool):
            raise ValueError(f"background must be true or false, not {background!r}")
        if min_train > window:
            raise ValueError(f"min_train ({min_train}) cannot exceed window ({window})")
        if min_train <= n_splits * 2:
            raise ValueError(f"min_train ({min_train}) is too small for {n_splits} splits")
        self.window = window
        self.retrain_every = retrain_every
        self.min_train = min_train
        self.swap_after = swap_after
        self.n_splits = n_splits
        self.n_candidates = n_candidates
        self.seed = seed
        self.background = background
        self.max_columns = max_columns
        self.n_labels = 0  # labelled events learned, ever
        self._columns: list[str] = []  # the window's columns, first seen first
        self._column: dict[str, int] = {}
        self.ignored = 0  # values of columns beyond max_columns, not kept
        self._X = np.empty((0, 0))  # ring of the window's rows (allocated on first use)
        self._y = np.empty(0, dtype=np.int32)
        self._classes: list[Any] = []  # label of each code, first seen first
        self._code: dict[Any, int] = {}
        self._fit_started: int | None = None  # label count at the start of the last fit
        self._retrain = False  # retrain_now() asked for one
        self._pending: FitJob | None = None  # a fit started, not taken over yet
        self._swap_at = 0
        # the pending fit's job and result, once back (the job: a late callback of an
        # earlier fit cannot pass for this one's)
        self._result: tuple[FitJob, FitResult] | None = None
        self._future: Future[FitResult] | None = None  # never pickled
        self._fitted: FitResult | None = None  # what predicts
        self._predictor: Callable[[list[float]], list[float]] | None = None  # never pickled
        self._serving_from = 0  # the label count at which `_fitted` took over

    @property
    def _multiclass(self) -> bool:
        return True

    # ---- River's verbs

    def learn_one(self, x: dict[Hashable, Any], y: ClfTarget) -> None:
        if _POOL is None and self.background:  # start the worker well before a fit
            _pool().submit(_warm)
        self._append(x, y)
        self.n_labels += 1
        if self._pending is not None:
            if self.n_labels >= self._swap_at:
                self._take_over()
            elif self._future is None and self._ready() is None and self.background:
                self._submit()  # restored from a pickle mid-fit: the same fit again
        if self._pending is None and self._fit_due():
            self._start()

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[ClfTarget, float]:
        fitted = self._fitted
        if fitted is None:
            return {}
        if fitted.estimator is None:
            return {fitted.labels[0]: 1.0}
        predictor = self._predictor
        if predictor is None:
            predictor = self._predictor = _compile(self.kind, fitted.estimator)
        proba = predictor(fitted.row(x))
        return dict(zip(fitted.labels, proba, strict=True))

    # ---- beyond River's verbs

    def retrain_now(self) -> None:
        """Start a fit at the next label (or right after the pending one takes over): on
        a concept-drift alert. Deterministic if called at a fixed point of the stream
        (from the learner's own outputs, not on a message's arrival)."""
        self._retrain = True

    @property
    def batch_info(self) -> dict[str, Any] | None:
        """What the serving model's fit found (None before the first took over)."""
        if self._fitted is None:
            return None
        return {**self._fitted.info, "serving_from": self._serving_from}

    @property
    def fitted(self) -> FitResult | None:
        """The fit that predicts (None before the first took over)."""
        return self._fitted

    @property
    def fitting(self) -> bool:
        """Whether a fit is pending (started, not taken over)."""
        return self._pending is not None

    # ---- internals

    def _append(self, x: dict[Hashable, Any], y: ClfTarget) -> None:
        row = {str(name): _value(v) for name, v in x.items()}  # refuses a string before any change
        if y not in self._code:
            self._code[y] = len(self._classes)
            self._classes.append(y)
        new = sorted(name for name in row if name not in self._column)
        room = self.max_columns - len(self._columns)
        if len(new) > room:
            for name in new[max(room, 0) :]:
                del row[name]
            self.ignored += len(new) - max(room, 0)
            new = new[: max(room, 0)]
        if self._X.shape[0] < self.window:  # first use, or just unpickled (trimmed)
            grown = np.full((self.window, len(self._columns)), np.nan)
            grown[: self._X.shape[0]] = self._X
            ys = np.zeros(self.window, dtype=np.int32)
            ys[: self._y.shape[0]] = self._y
            self._X, self._y = grown, ys
        if new:
            for name in new:
                self._column[name] = len(self._columns)
                self._columns.append(name)
            wider = np.full((self.window, len(self._columns)), np.nan)
            wider[:, : self._X.shape[1]] = self._X
            self._X = wider
        at = self.n_labels % self.window
        self._X[at] = np.nan
        for name, value in row.items():
            self._X[at, self._column[name]] = value
        self._y[at] = self._code[y]

    def _fit_due(self) -> bool:
        if self.n_labels < self.min_train:
            return False
        if self._fit_started is None or self._retrain:
            return True
        return self.n_labels - self._fit_started >= self.retrain_every

    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        """The window's rows and codes, oldest first."""
        n = self.n_labels
        if n <= self.window:
            return self._X[:n].copy(), self._y[:n].copy()
        at = n % self.window
        return np.concatenate([self._X[at:], self._X[:at]]), np.concatenate(
            [self._y[at:], self._y[:at]]
        )

    def _start(self) -> None:
        self._drop_empty_columns()
        X, y = self._window()
        order = sorted(range(len(self._columns)), key=self._columns.__getitem__)
        self._pending = FitJob(
            kind=self.kind,
            X=np.ascontiguousarray(X[:, order]),
            y=y,
            columns=tuple(self._columns[i] for i in order),
            classes=tuple(self._classes),
            first=self.n_labels - len(y) + 1,
            last=self.n_labels,
            n_splits=self.n_splits,
            n_candidates=self.n_candidates,
            seed=self.seed,
        )
        self._swap_at = self.n_labels + self.swap_after
        self._fit_started = self.n_labels
        self._retrain = False
        self._result = None
        if self.background:
            self._submit()
        if self.swap_after == 0:
            self._take_over()

    def _drop_empty_columns(self) -> None:
        """Forget the columns no row of the window has (a one-hot key not seen lately):
        they hold no data, and their room goes to new ones."""
        if self.n_labels < self.window or not self._columns:
            return
        keep = np.asarray(~np.isnan(self._X).all(axis=0))
        if keep.all():
            return
        self._X = np.ascontiguousarray(self._X[:, keep])
        self._columns = [c for c, k in zip(self._columns, keep.tolist(), strict=True) if k]
        self._column = {c: i for i, c in enumerate(self._columns)}

    def _submit(self) -> None:
        assert self._pending is not None
        try:
            future = _pool().submit(fit_window, self._pending)
        except (BrokenProcessPool, RuntimeError):
            log.warning("the fitting process is gone; starting another", exc_info=True)
            _drop_pool()
            future = _pool().submit(fit_window, self._pending)
        self._future = future
        job = self._pending
        future.add_done_callback(lambda done: self._done(job, done))

    def _done(self, job: FitJob, future: Future[FitResult]) -> None:
        # in the pool's thread: only set an attribute (a pickle may read it any time)
        if not future.cancelled() and future.exception() is None:
            self._result = (job, future.result())

    def _ready(self) -> FitResult | None:
        """The pending fit's result if it came back."""
        done = self._result
        return done[1] if done is not None and done[0] is self._pending else None

    def _take_over(self) -> None:
        """The pending fit's model serves from now on (waits for it if it is not back)."""
        job = self._pending
        assert job is not None
        result = self._ready()
        if result is None and self._future is not None:
            started = time.perf_counter()
            try:
                result = self._future.result()
            except Exception:
                log.warning("a fit failed in the worker; fitting here", exc_info=True)
                _drop_pool()
            waited = time.perf_counter() - started
            if waited > 0.1:
                log.info(
                    "%s waited %.1f s for its fit (window %d rows)", self.kind, waited, len(job.y)
                )
        if result is None:
            result = fit_window(job)
        self._fitted, self._serving_from, self._predictor = result, self.n_labels, None
        self._pending, self._future, self._result = None, None, None

    # ---- pickling

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the future; the window trimmed to the rows it holds. Reads plain
        attributes only: a forked child pickles it (training's checkpoint)."""
        state = dict(self.__dict__)
        state["_future"] = state["_predictor"] = None
        n = min(self.n_labels, self._X.shape[0])
        if n < self._X.shape[0]:
            state["_X"], state["_y"] = self._X[:n], self._y[:n]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._predictor = None


class SKHistGradientBoosting(BatchClassifier):
    """`sk_hgb`: scikit-learn's `HistGradientBoostingClassifier` (100 iterations, no early
    stopping), searched over `GRIDS["hgb"]`; missing features are NaN, which it routes
    (behind a `VarianceThreshold` that drops the window's empty or constant columns)."""

    kind = "hgb"


class SKLogisticRegression(BatchClassifier):
    """`sk_logreg`: `SimpleImputer` (mean) -> `StandardScaler` -> scikit-learn's
    `LogisticRegression`, searched over `GRIDS["logreg"]` (its inverse penalty `C`)."""

    kind = "logreg"


def batch_info(model: Any) -> dict[str, Any] | None:
    """A batch model's `batch_info`; None for any other model."""
    return model.batch_info if isinstance(model, BatchClassifier) else None
