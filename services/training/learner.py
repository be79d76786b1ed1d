"""Online learning in event time: River's progressive validation, fed piecemeal.

`OnlineLearner` buffers feature vectors and labels as they arrive, from any number
of partitions and in any order; `advance(watermark)` then replays everything up to
the watermark in the order `river.stream.simulate_qa` would: by time, a label before
features of the same time, and a label whose features are not processed yet waits
and is learned right after their prediction. Every model predicts when an event's
features come and, when its label comes, scores that same prediction and learns.
So the scores equal `river.evaluate.progressive_val_score` on the same rows. Items
of equal time and kind go by event_id, whatever order they arrived in: the result
never depends on how partitions interleave (River's own order for such ties is the
rows' order, which ids such as zero-padded row numbers keep).

>>> from datetime import UTC, datetime, timedelta
>>> from river import linear_model
>>> learner = OnlineLearner({"lr": linear_model.LogisticRegression()}, ttl=timedelta(hours=1))
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> learner.add_label("e1", True, label_time=t0 + timedelta(seconds=5))
>>> learner.add_features("e1", t0, {"x": 1.0})
>>> [(type(r).__name__, r.y_pred) for r in learner.advance(t0)]
[('PredictionMade', False)]
>>> learner.advance(t0 + timedelta(seconds=5))
[Learned(event_id='e1', model='lr', correct=False)]
>>> learner.scores["lr"]
Score(n_learned=1, n_scored=1, n_correct=0)
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from river import base

from services.training import ledger
from services.training.ledger import NONE, Waits
from shared.catalogue import predict, predicts_by_max_proba

__all__ = [
    "Changes",
    "Learned",
    "LearnerOutput",
    "OnlineLearner",
    "PredictionMade",
    "Score",
    "micros",
]

# At equal times labels go first: simulate_qa reveals an answer due at t before the
# question asked at t.
_LABEL, _FEATURES = 0, 1

log = logging.getLogger(__name__)

_Timer = Literal["prediction", "label", "untimed"]
_TIMERS: tuple[_Timer, ...] = ("prediction", "label", "untimed")
FORGET_BUCKETS = 64  # finished ids are forgotten at most ttl / 64 later than due
LAYOUT = 3  # the pickled state's layout: per-event records (`ledger`) since 3
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PredictionMade:
    """A model's prediction for an event, made when the event's features arrived."""

    event_id: str
    model: str
    y_pred: Any
    proba: dict[Any, float] | None  # classifiers only
    event_time: datetime


@dataclass(frozen=True, slots=True)
class Learned:
    """A model scored its prediction for the event against the label, then learned it."""

    event_id: str
    model: str
    correct: bool | None  # None for a regressor, or when the model could not predict yet


LearnerOutput = PredictionMade | Learned


@dataclass
class Score:
    """One model's progressive counts, as River's metric would count them.

    Like `progressive_val_score`, a prediction of None (a classifier that has seen
    no class yet) is learned from but not scored.
    """

    n_learned: int = 0
    n_scored: int = 0
    n_correct: int = 0

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_scored if self.n_scored else 0.0


@dataclass(slots=True)
class _Prediction:
    event_time: datetime | None  # None while its vector is not re-read (`fill`)
    x: dict[str, Any] | None  # None while its vector is not re-read (`fill`)
    y_pred: dict[str, Any]  # model name -> prediction, scored when the label comes
    ref: Any = None  # where its vector can be read again (`add_features`), if known


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in a learner's per-event records (`OnlineLearner.take_changes`): the
    event ids, the forget cells dropped, and per forget cell the (start, end) of its
    ids added."""

    ids: set[str]
    dropped: list[int]
    cells: dict[int, tuple[int, int]]


class OnlineLearner:
    """Several named River models learning side by side from a features/labels join.

    `ttl` bounds, in event time, how long a prediction waits for its label and a
    label for its features (None: forever); it also bounds how long an `event_id` is
    remembered for de-duplication after its event is done (and while it waits). Waits
    expire in (since, event_id) order, so a learner rebuilt from its per-event records
    expires the same items. The learner is picklable: pickle it whole to checkpoint
    models, buffers and counters together, or the per-event records apart
    (`take_changes`, `pack_items`, `load_items`: training's checkpoint writes only those
    that changed). Times are kept as integer microseconds inside.

    A model that raises on one item (a class type it cannot order, say) skips that
    item, counted in `model_errors`, and the other models and items go on.
    """

    model_errors = 0  # a class default: checkpoints from before it still load
    # Called with each event's `Learned` outputs right after its models learned it, before
    # the next item: what runs here acts at a point the stream fixes (training's
    # champion policy). Not pickled: whoever restores wires it again.
    after_learn: Callable[[list[Learned]], None] | None = None
    abandoned = 0  # waiting predictions whose vector could not be re-read (`abandon`)

    def __init__(self, models: Mapping[str, Any], ttl: timedelta | None = None) -> None:
        self.models = dict(models)
        self.ttl = ttl
        self.scores = {name: Score() for name in self.models}
        self.duplicates = 0
        self.expired_features = 0  # predictions whose label never came within ttl
        self.expired_labels = 0  # labels whose features never came within ttl
        self.late = 0  # items added at or before the time already processed
        self._classifiers = {n: isinstance(m, base.Classifier) for n, m in self.models.items()}
        self._by_max_proba = {n: predicts_by_max_proba(m) for n, m in self.models.items()}
        self._clock: int | None = None  # event time processed so far, in microseconds
        self._ttl_us = None if ttl is None else ttl // _US
        # (time, kind, event_id, seq, (x, event_time) for features | y for a label): at
        # equal times labels first, then by event_id, whatever order the items came in
        self._queue: list[tuple[int, int, str, int, Any]] = []
        self._seq = 0
        self._unscheduled: list[str] = []  # untimed labels added before any clock existed
        self._bucket_us = max(1, self._ttl_us // FORGET_BUCKETS) if self._ttl_us else 1
        self._items_apart = False  # pickle without the per-event records (`pack_items`)
        self._clear_items()

    def _clear_items(self) -> None:
        """No per-event records: what `pack_items` saves and `load_items` reads back."""
        self._predictions: dict[str, _Prediction] = {}  # predicted, waiting for the label
        self._labels: dict[str, tuple[Any, int]] = {}  # (label, since): waits for features
        # (label, since) of a label without label_time whose features are not added yet;
        # since is None until a clock exists (`_unscheduled`)
        self._untimed: dict[str, tuple[Any, int | None]] = {}
        self._seen_features: dict[str, int] = {}  # event_id -> event time
        self._seen_labels: set[str] = set()
        # One queue of (since, event_id) per kind of wait, smallest first.
        self._timers: dict[_Timer, Waits] = {w: Waits() for w in _TIMERS}
        # Finished event ids to forget, by cell of the time grid (`_bucket_us` wide):
        # cell -> [latest since, ids], and a heap of the cells.
        self._forget: dict[int, list[Any]] = {}
        self._forget_cells: list[int] = []
        self._unfilled: dict[Any, str] = {}  # ref -> event_id of a vector not re-read yet
        # What changed since `take_changes` (None: not tracked, or too much: save all):
        # event ids, and per forget cell how many of its ids were taken.
        self._changed: set[str] | None = None
        self._cells_taken: dict[int, int] = {}
        self._cells_dropped: list[int] = []

    def __getstate__(self) -> dict[str, Any]:
        """The state with the per-event records packed as columns (`ledger`): a
        checkpoint of millions of them pickles a few strings and arrays, not millions
        of objects. With `_items_apart` (a checkpoint that saves them itself, see
        `pack_items`) without them."""
        state = {k: v for k, v in self.__dict__.items() if k not in _ITEMS}
        state.pop("after_learn", None)
        state["_layout"] = LAYOUT
        state["_items"] = None if self._items_apart else self.pack_items(None)
        state["_items_apart"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("_layout") == LAYOUT:
            items = state.pop("_items")
            self.__dict__.update(state)
            self._clear_items()
            if items is not None:
                self.load_items([items])
            return
        _old_layout(self, state)

    @property
    def clock(self) -> datetime | None:
        """The event time processed so far (UTC), None before anything was processed."""
        return None if self._clock is None else EPOCH + timedelta(microseconds=self._clock)

    # ---- input

    def add_features(
        self, event_id: str, event_time: datetime, x: dict[str, Any], ref: Any = None
    ) -> None:
        """Buffer an event's feature vector; the models predict on it at `event_time`.

        `ref`, a tuple ending in an integer offset (for Kafka: topic, partition,
        offset), says where the vector can be read again: a pickled learner then keeps, for a prediction
        waiting for its label, only `ref` and the models' predictions, and after
        unpickling waits for the vector to be handed back (`fill`) before it advances.
        """
        if event_id in self._seen_features:
            self.duplicates += 1
            return
        time = micros(event_time)
        self._seen_features[event_id] = time
        self._touch(event_id)
        self._push(time, _FEATURES, event_id, (x, event_time, ref))
        if event_id in self._untimed:
            self._push(time, _LABEL, event_id, self._untimed.pop(event_id)[0])

    def add_label(self, event_id: str, label: Any, label_time: datetime | None = None) -> None:
        """Buffer a label; it arrives at `label_time`, or at its event's time if None."""
        if event_id in self._seen_labels:
            self.duplicates += 1
            return
        self._seen_labels.add(event_id)
        self._touch(event_id)
        time = self._seen_features.get(event_id) if label_time is None else micros(label_time)
        if time is not None:
            self._push(time, _LABEL, event_id, label)
            return
        # its time is known once the features are added
        self._untimed[event_id] = (label, self._clock)
        if self._clock is None:
            self._unscheduled.append(event_id)
        else:
            self._start_timer(self._clock, "untimed", event_id)

    def fill(self, ref: Any, x: dict[str, Any], event_time: datetime) -> bool:
        """Hand back the vector read again at `ref`; whether a waiting prediction needed it."""
        event_id = self._unfilled.pop(ref, None)
        if event_id is None:
            return False
        prediction = self._predictions[event_id]
        prediction.x, prediction.event_time = x, event_time
        return True

    @property
    def unfilled(self) -> int:
        """Waiting predictions whose vector is not re-read yet (`advance` refuses to run)."""
        return len(self._unfilled)

    def unfilled_refs(self) -> list[Any]:
        return list(self._unfilled)

    def abandon(self, ref: Any) -> None:
        """Give up on the vector at `ref` (no longer readable): its prediction expires."""
        event_id = self._unfilled.pop(ref)
        del self._predictions[event_id]
        self._touch(event_id)
        self.expired_features += 1
        self.abandoned += 1
        self._forget_later(self._clock or 0, event_id)

    def waiting_refs(self) -> list[Any]:
        """The refs of the predictions waiting for their labels (re-read after a restore)."""
        return [p.ref for p in self._predictions.values() if p.ref is not None]

    def has_features(self, event_id: str) -> bool:
        """Whether `event_id`'s features were added (and are still remembered)."""
        return event_id in self._seen_features

    def keep_only(self, names: Iterable[str]) -> None:
        """Drop every model but `names`: a replica that serves one model learns only it.

        >>> from river import linear_model, naive_bayes
        >>> learner = OnlineLearner({"a": linear_model.LogisticRegression(),
        ...                          "b": naive_bayes.GaussianNB()})
        >>> learner.keep_only(["b"]); sorted(learner.models), sorted(learner.scores)
        (['b'], ['b'])
        """
        keep = set(names)
        self.models = {n: m for n, m in self.models.items() if n in keep}
        self.scores = {n: s for n, s in self.scores.items() if n in keep}
        self._classifiers = {n: c for n, c in self._classifiers.items() if n in keep}
        self._by_max_proba = {n: b for n, b in self._by_max_proba.items() if n in keep}

    def replace_model(self, name: str, model: Any) -> None:
        """Put `model` (fresh) under `name`, added if new: its score starts at zero, and
        the predictions the one it replaces made, still waiting, are not scored for it."""
        self.models[name] = model
        self.scores[name] = Score()
        self._classifiers[name] = isinstance(model, base.Classifier)
        self._by_max_proba[name] = predicts_by_max_proba(model)
        for prediction in self._predictions.values():
            prediction.y_pred[name] = None
        self._changed = None  # every waiting record changed: the next save writes all

    # ---- saving the per-event records apart (training's checkpoint)

    def take_changes(self) -> Changes | None:
        """What changed since the last call (None: all of it, as on the first call), for
        `pack_items`; from now on changes are tracked again from empty."""
        changed, self._changed = self._changed, set()
        cells = {
            cell: (self._cells_taken.get(cell, 0), len(b[1])) for cell, b in self._forget.items()
        }
        self._cells_taken = {cell: end for cell, (_, end) in cells.items()}
        dropped, self._cells_dropped = self._cells_dropped, []
        if changed is None or len(changed) > len(self._seen_features) + len(self._seen_labels):
            return None
        return Changes(changed, dropped, cells)

    def lose_changes(self) -> None:
        """Changes taken were not saved: the next `take_changes` gives all."""
        self._changed = None

    def pack_items(self, changes: Changes | None) -> dict[str, Any]:
        """The per-event records (all of them, or those `changes` names) and the forget
        cells, as `load_items` reads them back."""
        if changes is None:
            ids: Iterable[str] = self._seen_features.keys() | self._seen_labels
            cells = {cell: (0, len(b[1])) for cell, b in self._forget.items()}
            dropped: list[int] = []
        else:
            ids, cells, dropped = changes.ids, changes.cells, changes.dropped
        forget = {
            cell: (self._forget[cell][0], self._forget[cell][1][a:b])
            for cell, (a, b) in cells.items()
            if cell in self._forget
        }
        return {
            "records": ledger.pack(map(self._record, ids), list(self.models)),
            "cells": [(cell, since, ledger.pack_ids(ids)) for cell, (since, ids) in forget.items()],
            "dropped": dropped,
            "whole": changes is None,
        }

    def load_items(self, packs: Iterable[dict[str, Any]]) -> None:
        """Read back what `pack_items` wrote: a whole one first, then changes in order."""
        predictions, labels, untimed = self._predictions, self._labels, self._untimed
        seen_features, seen_labels, forget = self._seen_features, self._seen_labels, self._forget
        for packed in packs:
            if packed["whole"]:
                self._clear_items()
                predictions, labels, untimed = self._predictions, self._labels, self._untimed
                seen_features, seen_labels, forget = (
                    self._seen_features,
                    self._seen_labels,
                    self._forget,
                )
            for event_id, time, labelled, state, detail in ledger.unpack(packed["records"]):
                predictions.pop(event_id, None)
                labels.pop(event_id, None)
                untimed.pop(event_id, None)
                seen_features.pop(event_id, None)
                seen_labels.discard(event_id)
                if time != NONE:
                    seen_features[event_id] = time
                if labelled:
                    seen_labels.add(event_id)
                if state == ledger.WAITS_PREDICTION:
                    if detail[0] is None:
                        _, y_pred, x, event_time = detail
                        predictions[event_id] = _Prediction(event_time, x, y_pred, None)
                    else:
                        predictions[event_id] = _Prediction(None, None, detail[1], detail[0])
                elif state == ledger.WAITS_LABEL:
                    labels[event_id] = detail
                elif state == ledger.WAITS_UNTIMED:
                    untimed[event_id] = detail
            for cell in packed["dropped"]:
                forget.pop(cell, None)
            for cell, since, ids in packed["cells"]:
                bucket = forget.setdefault(cell, [since, []])
                bucket[0] = since
                bucket[1].extend(ledger.unpack_ids(ids))
        self._forget_cells = sorted(forget)
        self._unfilled = {p.ref: e for e, p in predictions.items() if p.x is None}
        timers = self._timers
        timers["prediction"] = Waits((seen_features[e], e) for e in predictions)
        timers["label"] = Waits((since, e) for e, (_, since) in labels.items())
        timers["untimed"] = Waits((s, e) for e, (_, s) in untimed.items() if s is not None)

    def _record(self, event_id: str) -> tuple[str, int, bool, int, Any]:
        time = self._seen_features.get(event_id, NONE)
        labelled = event_id in self._seen_labels
        prediction = self._predictions.get(event_id)
        if prediction is not None:
            detail: tuple[Any, ...]
            if prediction.ref is None:
                detail = (None, prediction.y_pred, prediction.x, prediction.event_time)
            else:
                detail = (prediction.ref, prediction.y_pred)
            return event_id, time, labelled, ledger.WAITS_PREDICTION, detail
        if event_id in self._labels:
            return event_id, time, labelled, ledger.WAITS_LABEL, self._labels[event_id]
        if event_id in self._untimed:
            return event_id, time, labelled, ledger.WAITS_UNTIMED, self._untimed[event_id]
        return event_id, time, labelled, ledger.SEEN, None

    # ---- processing

    def advance(self, watermark: datetime | None = None) -> list[LearnerOutput]:
        """Process every buffered item with time <= `watermark`, in River's order.

        The watermark promises that every item up to it has been added (for Kafka:
        just below the smallest last-consumed time over all assigned partitions).
        None flushes everything, as at the end of a stream.
        """
        if self._unfilled:
            raise RuntimeError(
                f"{len(self._unfilled)} waiting predictions lack their vector: fill them first"
            )
        out: list[LearnerOutput] = []
        queue = self._queue
        limit = None if watermark is None else micros(watermark)
        while queue and (limit is None or queue[0][0] <= limit):
            time, kind, event_id, _, value = heapq.heappop(queue)
            self._tick(time)
            if kind == _FEATURES:
                self._predict(event_id, time, value, out)
            elif event_id in self._predictions:
                self._learn(event_id, value, time, out)
            else:
                self._labels[event_id] = (value, time)
                self._seen_labels.add(event_id)  # remembered while it waits
                self._touch(event_id)
                self._start_timer(time, "label", event_id)
        if limit is not None:
            self._tick(limit)
        if self._clock is not None and self._unscheduled:
            for event_id in self._unscheduled:
                if event_id in self._untimed:
                    self._untimed[event_id] = (self._untimed[event_id][0], self._clock)
                    self._touch(event_id)
                    self._start_timer(self._clock, "untimed", event_id)
            self._unscheduled.clear()
        return out

    def buffered_vectors(self) -> dict[str, Any]:
        """The vectors added but not predicted yet (beyond the watermark): event id -> ref."""
        return {
            item[2]: item[4][2] if len(item[4]) > 2 else None
            for item in self._queue
            if item[1] == _FEATURES
        }

    def next_time(self) -> datetime | None:
        """The time of the next buffered item (None: nothing buffered)."""
        if not self._queue:
            return None
        return EPOCH + timedelta(microseconds=self._queue[0][0])

    @property
    def buffered(self) -> int:
        """Items added but not yet processed (beyond the watermark)."""
        return len(self._queue)

    @property
    def awaiting_labels(self) -> int:
        return len(self._predictions)

    @property
    def remembered(self) -> tuple[int, int]:
        """Event ids remembered for de-duplication: of features, of labels."""
        return len(self._seen_features), len(self._seen_labels)

    @property
    def awaiting_features(self) -> int:
        return len(self._labels) + len(self._untimed)

    # ---- internals

    def _push(self, time: int, kind: int, event_id: str, value: Any) -> None:
        if self._clock is not None and time <= self._clock:
            self.late += 1
        self._seq += 1
        heapq.heappush(self._queue, (time, kind, event_id, self._seq, value))

    def _predict(self, event_id: str, time: int, value: tuple[Any, ...], out: list) -> None:
        x, event_time = value[0], value[1]
        ref = value[2] if len(value) > 2 else None  # 2 long: a checkpoint from before refs
        y_preds = {}
        classifiers, by_max_proba = self._classifiers, self._by_max_proba
        for name, model in self.models.items():
            try:
                y_pred, proba = predict(model, x, by_max_proba[name], classifiers[name])
            except Exception:
                self._model_failed(name, "predict on", event_id)
                y_pred, proba = None, None
            y_preds[name] = y_pred
            out.append(PredictionMade(event_id, name, y_pred, proba, event_time))
        self._predictions[event_id] = _Prediction(event_time, x, y_preds, ref)
        self._seen_features[event_id] = time  # remembered while it waits (even if forgotten)
        self._touch(event_id)
        if event_id in self._labels:
            self._learn(event_id, self._labels.pop(event_id)[0], time, out)
        else:
            self._start_timer(time, "prediction", event_id)

    def _learn(self, event_id: str, y: Any, time: int, out: list) -> None:
        prediction = self._predictions.pop(event_id)
        assert prediction.x is not None, "advance refuses to run with vectors not re-read"
        start = len(out)
        for name, model in self.models.items():
            y_pred, score = prediction.y_pred.get(name), self.scores[name]
            correct: bool | None = None
            if y_pred is not None:
                score.n_scored += 1
                if self._classifiers[name]:
                    correct = y_pred == y
                    score.n_correct += correct
            try:
                model.learn_one(prediction.x, y)
            except Exception:
                self._model_failed(name, "learn from", event_id)
                continue
            score.n_learned += 1
            out.append(Learned(event_id, name, correct))
        self._forget_later(time, event_id)
        if self.after_learn is not None:
            self.after_learn(out[start:])

    def _model_failed(self, name: str, doing: str, event_id: str) -> None:
        self.model_errors += 1
        log.warning("model %s could not %s event %s; skipped", name, doing, event_id, exc_info=True)

    def _tick(self, time: int) -> None:
        """Move the clock forward (never back) and expire what waited longer than ttl."""
        if self._clock is None or time > self._clock:
            self._clock = time
        if self._ttl_us is None:
            return
        horizon = self._clock - self._ttl_us
        timers = self._timers
        for what, waiting in (
            ("prediction", self._predictions),
            ("label", self._labels),
            ("untimed", self._untimed),
        ):
            started = timers[what]  # type: ignore[index]
            while (first := started.first()) is not None:
                since, event_id = first
                if event_id not in waiting:
                    started.pop()  # joined in time: nothing to expire
                elif since < horizon:
                    started.pop()
                    self._expire(what, event_id)  # type: ignore[arg-type]
                else:
                    break
        cells, forget = self._forget_cells, self._forget
        if cells and forget[cells[0]][0] < horizon:
            self._forget_until(horizon)

    def _forget_until(self, horizon: int) -> None:
        """Forget the finished ids of every cell whose latest since is before `horizon`
        (but those that wait again, for a late label or features: forgotten once done)."""
        cells, forget = self._forget_cells, self._forget
        seen_features, seen_labels, changed = self._seen_features, self._seen_labels, self._changed
        predictions, labels, untimed = self._predictions, self._labels, self._untimed
        while cells and forget[cells[0]][0] < horizon:
            cell = heapq.heappop(cells)
            ids = forget.pop(cell)[1]
            for event_id in ids:
                if event_id in predictions or event_id in labels or event_id in untimed:
                    continue
                seen_features.pop(event_id, None)
                seen_labels.discard(event_id)
            if changed is not None:
                changed.update(ids)
                self._cells_taken.pop(cell, None)
                self._cells_dropped.append(cell)

    def _expire(self, what: _Timer, event_id: str) -> None:
        self._touch(event_id)
        if what == "prediction":
            del self._predictions[event_id]
            self.expired_features += 1
        elif what == "label":
            del self._labels[event_id]
            self.expired_labels += 1
        else:
            del self._untimed[event_id]
            self.expired_labels += 1
        assert self._clock is not None
        self._forget_later(self._clock, event_id)

    def _start_timer(self, since: int, what: _Timer, event_id: str) -> None:
        if self._ttl_us is not None:
            self._timers[what].add(since, event_id)

    def _forget_later(self, since: int, event_id: str) -> None:
        """Forget a finished `event_id` once `since` is older than ttl (in buckets)."""
        if self._ttl_us is None:
            return
        self._touch(event_id)
        cell = since // self._bucket_us
        bucket = self._forget.get(cell)
        if bucket is None:
            self._forget[cell] = [since, [event_id]]
            heapq.heappush(self._forget_cells, cell)
        else:
            if since > bucket[0]:
                bucket[0] = since
            bucket[1].append(event_id)

    def _touch(self, event_id: str) -> None:
        changed = self._changed
        if changed is not None:
            changed.add(event_id)


# The per-event records and what tracks their changes: packed apart (`pack_items`).
_ITEMS = (
    "_predictions",
    "_labels",
    "_untimed",
    "_seen_features",
    "_seen_labels",
    "_timers",
    "_forget",
    "_forget_cells",
    "_unfilled",
    "_changed",
    "_cells_taken",
    "_cells_dropped",
)


def _old_layout(learner: OnlineLearner, state: dict[str, Any]) -> None:
    """Load a state pickled before `LAYOUT` 3 (queues of timers in arrival order, forget
    buckets in a deque, maybe packed ids) into today's structures."""
    if "_clock" not in state:  # a checkpoint from before times were microseconds
        state = _upgrade(state)
    state = dict(state)
    if isinstance(state["_seen_features"], tuple):  # packed ids
        ids, times = state["_seen_features"]
        state["_seen_features"] = dict(zip(ledger.unpack_ids(ids), times, strict=True))
        state["_seen_labels"] = set(ledger.unpack_ids(state["_seen_labels"]))
        state["_forget"] = [
            [first, last, ledger.unpack_ids(ids)] for first, last, ids in state["_forget"]
        ]
    predictions = state["_predictions"]
    if isinstance(predictions, tuple):  # packed: ("packed", whole, ids, parts, ...)
        _, whole, ids, parts, where, offsets, y_preds = predictions
        predictions = dict(whole)
        names = list(y_preds)
        for i, event_id in enumerate(ledger.unpack_ids(ids) if len(offsets) else []):
            y_pred = {name: y_preds[name][i] for name in names}
            predictions[event_id] = _Prediction(None, None, y_pred, (*parts[where[i]], offsets[i]))
    queue = state["_queue"]
    if queue and isinstance(queue[0][2], int):  # from before ties went by event_id
        state["_queue"] = [(t, kind, e, seq, v) for t, kind, seq, e, v in queue]
        heapq.heapify(state["_queue"])
    timers, forget, clock = state["_timers"], state["_forget"], state["_clock"]
    since = {what: {e: t for t, e in timers[what]} for what in _TIMERS}
    rest = {k: v for k, v in state.items() if k not in (*_ITEMS, "_timers", "_forget")}
    learner.__dict__.update(rest)
    if "_by_max_proba" not in state:  # a checkpoint from before it
        learner._by_max_proba = {n: predicts_by_max_proba(m) for n, m in learner.models.items()}
    learner._bucket_us = state.get("_bucket_us", 1)
    learner._items_apart = False
    learner._clear_items()
    learner._predictions = predictions
    learner._unfilled = {p.ref: e for e, p in predictions.items() if p.x is None}
    learner._labels = {e: (y, since["label"].get(e, clock)) for e, y in state["_labels"].items()}
    learner._untimed = {e: (y, since["untimed"].get(e)) for e, y in state["_untimed"].items()}
    learner._seen_features = state["_seen_features"]
    learner._seen_labels = state["_seen_labels"]
    for what in _TIMERS:
        for t, e in timers[what]:
            learner._timers[what].add(t, e)
    for _, last, ids in forget:
        for event_id in ids:
            learner._forget_later(last, event_id)


def micros(time: datetime) -> int:
    """`time` as microseconds since the epoch (a naive time is taken as UTC)."""
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    return (time - EPOCH) // _US


def _upgrade(old: dict[str, Any]) -> dict[str, Any]:
    """A learner's state as pickled before times were microseconds, in today's layout."""
    state = dict(old)
    clock = state.pop("clock")
    ttl = state["ttl"]
    state["_clock"] = None if clock is None else micros(clock)
    state["_ttl_us"] = None if ttl is None else ttl // _US
    queue = [
        (micros(t), kind, seq, event_id, (value, t) if kind == _FEATURES else value)
        for t, kind, seq, event_id, value in state["_queue"]
    ]
    heapq.heapify(queue)
    state["_queue"] = queue
    state["_seen_features"] = {k: micros(t) for k, t in state["_seen_features"].items()}
    timers: dict[str, deque[tuple[int, str]]] = {w: deque() for w in _TIMERS}
    forget: deque[list[Any]] = deque()
    for since, _, what, event_id in sorted(state["_timers"]):
        if what == "forget":
            forget.append([micros(since), micros(since), [event_id]])
        else:
            timers[what].append((micros(since), event_id))
    state["_timers"] = timers
    state["_forget"] = forget
    state["_bucket_us"] = max(1, state["_ttl_us"] // FORGET_BUCKETS) if state["_ttl_us"] else 1
    return state
