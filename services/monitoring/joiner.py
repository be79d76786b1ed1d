"""Join predictions with labels by event_id, in event time, bounded by the label TTL.

Whichever comes first waits: a prediction for its label, a label for its
predictions (one per model and source, possibly arriving after the label). Time is
*event time*, not the wall clock: a prediction waits from its `event_time` (or its
`time` if it has none), a label from its `label_time` (or, without one, from its
event's time if a prediction already told it, else from the clock at arrival).
The clock is the watermark the caller passes to `advance`; anything that waited
longer than `ttl` behind the stream it waits for expires: a prediction once the
labels' watermark is `ttl` past it, a label once the predictions' watermark is (so
predictions replayed from another era still wait for their labels). Event time
makes a replay of the topics from the beginning give exactly the same joins and
expiries as the first pass.

Predictions are de-duplicated by (model, source, event_id), labels by `event_id`:
one prediction per event, model and source counts, the first; each key is remembered
until `ttl` after it was resolved, so a re-delivery never counts twice, and neither
does an HTTP caller that sends one `event_id` again and again (a stream scorer's
re-score under a newer version, neither).

>>> from datetime import UTC, datetime, timedelta
>>> from shared.messages import Label, Prediction
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> joiner = Joiner(ttl=timedelta(hours=1))
>>> p = Prediction(prediction_id="p1", event_id="e1", model="lr", model_version="1",
...                y_pred=True, probabilities=None, source="learner", time=t0)
>>> joiner.add_prediction(p), joiner.add_prediction(p), joiner.duplicate_predictions
([], [], 1)
>>> [(j.prediction.prediction_id, j.label) for j in joiner.add_label(Label(event_id="e1", label=1))]
[('p1', 1)]
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from shared.messages import Label, Prediction

__all__ = ["Joined", "Joiner", "Predicted", "prediction_time"]

_Timer = Literal["prediction", "label", "forget_prediction", "forget_label"]
_ON_LABELS = frozenset(("prediction", "forget_label"))  # timers the labels' clock drives


class Predicted(NamedTuple):
    """What monitoring keeps of a `Prediction` while it waits to be joined and scored.

    One small tuple (the message's field names) where a pydantic model is three
    objects: less memory per waiting prediction, and fewer objects for the garbage
    collector to walk (a tuple subclass stays tracked, unlike the join state's plain
    label tuples).
    """

    prediction_id: str
    event_id: str | None
    model: str
    model_version: str
    source: str
    y_pred: bool | int | float | str | None
    probabilities: dict[str, float] | None
    event_time: datetime | None
    time: datetime

    @classmethod
    def of(cls, p: Prediction) -> Predicted:
        return cls(
            p.prediction_id,
            p.event_id,
            p.model,
            p.model_version,
            p.source,
            p.y_pred,
            p.probabilities,
            p.event_time,
            p.time,
        )


class Joined(NamedTuple):
    """A prediction with its event's label."""

    prediction: Predicted
    label: Any
    label_time: datetime | None


# A label waiting for predictions: (value, label_time, since, joined). `since` is when
# its wait started (None: before any clock); `joined` how many predictions it joined.
# A tuple of immutable values, so the garbage collector stops tracking it: the join
# state holds one per labelled event for a whole TTL, and the GC would otherwise walk
# every one of them on each full collection.
_LabelState = tuple[Any, datetime | None, datetime | None, int]


def prediction_time(prediction: Prediction | Predicted) -> datetime:
    """When a prediction starts waiting: its event's time, else when it was made."""
    return prediction.event_time or prediction.time


class Joiner:
    """In-memory, event-time join of predictions and labels (no Kafka here)."""

    def __init__(self, ttl: timedelta | None) -> None:
        self.ttl = ttl
        self.clock: datetime | None = None
        self.duplicate_predictions = 0
        self.duplicate_labels = 0
        self.expired_labels = 0  # labels no prediction joined within ttl
        self.without_event = 0  # predictions with no event_id (cannot be joined)
        self._labels: dict[str, _LabelState] = {}  # by event_id
        self._waiting: dict[str, dict[str, Predicted]] = {}  # by event_id, then key
        self._seen_predictions: set[str] = set()
        self._seen_labels: set[str] = set()
        # timers driven by the labels' clock, and by the predictions' clock
        self._label_timers: list[tuple[datetime, int, _Timer, str, str]] = []
        self._prediction_timers: list[tuple[datetime, int, _Timer, str, str]] = []
        self._timers = {"labels": self._label_timers, "predictions": self._prediction_timers}
        self._unscheduled: list[str] = []  # labels that came before any clock
        self._seq = 0

    # ---- input

    def add_prediction(self, message: Prediction | Predicted) -> list[Joined]:
        """Add a prediction: joined now if its label is known, else it waits."""
        event_id = message.event_id
        pid = f"{message.model}\x1f{message.source}\x1f{event_id}"  # the de-duplication key
        seen = self._seen_predictions
        if pid in seen:
            self.duplicate_predictions += 1
            return []
        if event_id is None:
            self.without_event += 1
            return []
        seen.add(pid)
        prediction = message if isinstance(message, Predicted) else Predicted.of(message)
        at = prediction.event_time or prediction.time
        label = self._labels.get(event_id)
        if label is not None:
            value, label_time, since, joined = label
            self._labels[event_id] = (value, label_time, since, joined + 1)
            self._start_timer(self._latest(at, since), "forget_prediction", event_id, pid)
            return [Joined(prediction, value, label_time)]
        waiting = self._waiting.get(event_id)
        if waiting is None:
            self._waiting[event_id] = {pid: prediction}
        else:
            waiting[pid] = prediction
        self._start_timer(at, "prediction", event_id, pid)
        return []

    def add_label(self, label: Label) -> list[Joined]:
        """Add a label: joins every prediction waiting for it, then waits for more."""
        event_id = label.event_id
        if event_id in self._seen_labels:
            self.duplicate_labels += 1
            return []
        self._seen_labels.add(event_id)
        waiting = self._waiting.pop(event_id, None)
        since = label.label_time
        if since is None and waiting:
            since = min(prediction_time(p) for p in waiting.values())
        since = since or self.clock
        joined: list[Joined] = []
        if waiting:
            joined = [Joined(p, label.label, label.label_time) for p in waiting.values()]
            for pid, prediction in waiting.items():
                forget_since = self._latest(prediction_time(prediction), since)
                self._start_timer(forget_since, "forget_prediction", event_id, pid)
        self._labels[event_id] = (label.label, label.label_time, since, len(joined))
        if since is None:
            self._unscheduled.append(event_id)
        else:
            self._start_timer(since, "label", event_id, "")
        return joined

    # ---- time

    def advance(
        self,
        watermark: datetime,
        *,
        labels_at: datetime | None = None,
        predictions_at: datetime | None = None,
    ) -> list[Predicted]:
        """Move the clock to `watermark` (never back); return predictions that expired.

        `labels_at`/`predictions_at` are how far each input stream has got (default:
        `watermark`): a prediction expires against the labels', a label against the
        predictions'.
        """
        if self.clock is None or watermark > self.clock:
            self.clock = watermark
        for event_id in self._unscheduled:
            label = self._labels.get(event_id)
            if label is not None:
                self._labels[event_id] = (label[0], label[1], self.clock, label[3])
            self._start_timer(self.clock, "label", event_id, "")
        self._unscheduled.clear()
        expired: list[Predicted] = []
        if self.ttl is None:
            return expired
        for stream, at in (("labels", labels_at), ("predictions", predictions_at)):
            timers = self._timers[stream]
            horizon = min(at or watermark, self.clock) - self.ttl
            while timers and timers[0][0] < horizon:
                _, _, what, event_id, pid = heapq.heappop(timers)
                expired += self._fire(what, event_id, pid)
        return expired

    def _fire(self, what: _Timer, event_id: str, pid: str) -> list[Predicted]:
        assert self.clock is not None
        if what == "forget_prediction":
            self._seen_predictions.discard(pid)
        elif what == "forget_label":
            self._seen_labels.discard(event_id)
        elif what == "prediction":
            waiting = self._waiting.get(event_id)
            prediction = waiting.pop(pid, None) if waiting is not None else None
            if prediction is not None:
                if not waiting:
                    del self._waiting[event_id]
                self._start_timer(self.clock, "forget_prediction", event_id, pid)
                return [prediction]
        else:  # a label's wait is over: later predictions for it will not join
            label = self._labels.pop(event_id, None)
            if label is not None:
                self.expired_labels += label[3] == 0
                self._start_timer(self.clock, "forget_label", event_id, "")
        return []

    @property
    def waiting_predictions(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())

    @property
    def waiting_labels(self) -> int:
        return len(self._labels)

    # ---- internals

    def _start_timer(self, since: datetime, what: _Timer, event_id: str, pid: str) -> None:
        if self.ttl is not None:
            self._seq += 1
            timers = self._label_timers if what in _ON_LABELS else self._prediction_timers
            heapq.heappush(timers, (since, self._seq, what, event_id, pid))

    def _latest(self, since: datetime, label_since: datetime | None) -> datetime:
        """When a joined prediction's id may start to be forgotten: not before its label."""
        if label_since is not None and label_since > since:
            since = label_since
        clock = self.clock
        return clock if clock is not None and clock > since else since
