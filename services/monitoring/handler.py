"""Monitoring's per-batch step: decoded predictions, labels and feature vectors in,
alerts out.

`BatchHandler.handle` is the whole of monitoring's work on one polled batch, with
no Kafka and no HTTP: it moves each partition's event time on the `Watermark`, adds
every message to the `Monitor`, then advances the monitor to the watermark and
returns the alerts that raised, for the worker to publish. The `features` topic has
clocks of its own on the watermark: the joins wait for predictions and labels only,
the data drift detector for the feature vectors only.

A `predictions` partition carries several streams that move at their own pace: the
learner's predictions come from training (which waits for labels), the stream's from
serving. Each source has its own clock on the watermark, a view of the partition
named `predictions#<source>` (`source_view`), and a label expires only once every
source's clock is a TTL past it: labels and fast stream predictions racing ahead no
longer expire labels the learner's predictions have yet to join. `http` predictions
move no clock: they carry the time of a request, and a replay of last year's events
next to live traffic must not see its labels expire.

>>> from datetime import UTC, datetime, timedelta
>>> from services.monitoring.monitor import Monitor
>>> from shared.messages import Label, Prediction
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> watermark = Watermark(idle_s=5)
>>> watermark.assign([("labels", 0)], now=0)  # (a worker assigns the learner's view too)
>>> handler = BatchHandler(Monitor("binary", timedelta(hours=1)), watermark, Topics())
>>> p = Prediction(prediction_id="p1", event_id="e1", model="lr", model_version="1",
...                y_pred=True, probabilities=None, source="stream", time=t0)
>>> handler.handle({("predictions", 0): [p],
...                 ("labels", 0): [Label(event_id="e1", label=1, label_time=t0)]}, now=0)
[]
>>> handler.monitor.summary()["models"][0]["n"]
1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from services.monitoring.monitor import Monitor
from shared.messages import Alert, FeatureVector, Label, Prediction
from shared.topics import Topics
from shared.watermark import Partition, Watermark

__all__ = ["SOURCES_TIMED", "BatchHandler", "Decoded", "Incoming", "source_view"]

SOURCES_TIMED = ("learner", "stream")  # prediction sources whose event time is a clock

Incoming = Prediction | Label | FeatureVector
Decoded = Mapping[Partition, Sequence[Incoming]]  # valid messages, per partition


def source_view(partition: Partition, source: str) -> Partition:
    """The watermark's view of a `predictions` partition for one source."""
    return (f"{partition[0]}#{source}", partition[1])


class BatchHandler:
    """Feeds decoded batches to the monitor in event time; returns the alerts raised."""

    def __init__(self, monitor: Monitor, watermark: Watermark, topics: Topics) -> None:
        self.monitor = monitor
        self.watermark = watermark
        self.topics = topics
        self._views = {source_view((topics.predictions, 0), s)[0] for s in SOURCES_TIMED}
        self._joined = {*self._views, topics.labels}  # the clocks of the joins

    def handle(self, batch: Decoded, now: float) -> list[Alert]:
        """Add a polled batch (possibly empty), then advance to the watermark at `now`
        (monotonic seconds). Returns the new alerts to publish."""
        monitor = self.monitor
        add_prediction, add_label, add_features = (
            monitor.add_prediction,
            monitor.add_label,
            monitor.add_features,
        )
        # per clock, its two latest times: observed in order, a lone item far ahead is
        # held while two of them move the clock (see `Watermark.observe`)
        latest: dict[Partition, tuple[datetime, datetime | None]] = {}
        for partition, messages in batch.items():
            for message in messages:
                if isinstance(message, Prediction):
                    add_prediction(message)
                    if message.source == "http":  # timed by a request, not by a stream
                        continue
                    clock = source_view(partition, message.source)
                    at = message.event_time or message.time
                elif isinstance(message, FeatureVector):
                    add_features(message)
                    clock, at = partition, message.event_time
                else:
                    add_label(message)
                    if message.label_time is None:
                        continue
                    clock, at = partition, message.label_time
                first, second = latest.get(clock, (None, None))
                if first is None or at > first:
                    latest[clock] = (at, first)
                elif second is None or at > second:
                    latest[clock] = (first, at)
        for clock, (first, second) in latest.items():
            if second is not None:
                self.watermark.observe(clock, second, now)
            self.watermark.observe(clock, first, now)
        return self.advance(now)

    def predictions_at(self, now: float) -> datetime | None:
        """How far every timed source of predictions has got (None: not known yet)."""
        return self.watermark.get(now, self._views)

    def advance(self, now: float) -> list[Alert]:
        """Move the monitor's event time to the watermark; return the alerts raised."""
        alerts = []
        features_at = self.watermark.get(now, self.topics.features)
        if features_at is not None:
            alerts += self.monitor.advance_features(features_at)
        watermark = self.watermark.get(now, self._joined)
        if watermark is None:
            return alerts
        return alerts + self.monitor.advance(
            watermark,
            labels_at=self.watermark.get(now, self.topics.labels),
            predictions_at=self.predictions_at(now),
        )
