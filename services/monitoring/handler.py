"""Monitoring's per-batch step: decoded predictions and labels in, alerts out.

`BatchHandler.handle` is the whole of monitoring's work on one polled batch, with
no Kafka and no HTTP: it moves each partition's event time on the `Watermark`
(`http` predictions do not move it: they carry the time of a request, and a replay
of last year's events next to live traffic must not see its labels expire), adds
every message to the `Monitor`, then advances the monitor to the watermark and
returns the alerts that raised, for the worker to publish.

>>> from datetime import UTC, datetime, timedelta
>>> from services.monitoring.monitor import Monitor
>>> from shared.messages import Label, Prediction
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> watermark = Watermark(idle_s=5)
>>> watermark.assign([("predictions", 0), ("labels", 0)], now=0)
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
from shared.messages import Alert, Label, Prediction
from shared.topics import Topics
from shared.watermark import Partition, Watermark

__all__ = ["BatchHandler", "Decoded"]

Decoded = Mapping[Partition, Sequence[Prediction | Label]]  # valid messages, per partition


class BatchHandler:
    """Feeds decoded batches to the monitor in event time; returns the alerts raised."""

    def __init__(self, monitor: Monitor, watermark: Watermark, topics: Topics) -> None:
        self.monitor = monitor
        self.watermark = watermark
        self.topics = topics

    def handle(self, batch: Decoded, now: float) -> list[Alert]:
        """Add a polled batch (possibly empty), then advance to the watermark at `now`
        (monotonic seconds). Returns the new alerts to publish."""
        add_prediction, add_label = self.monitor.add_prediction, self.monitor.add_label
        for partition, messages in batch.items():
            # the partition's two latest times: observed in order, a lone item far ahead
            # is held while two of them move the clock (see `Watermark.observe`)
            latest: datetime | None = None
            second: datetime | None = None
            for message in messages:
                at: datetime | None = None
                if isinstance(message, Prediction):
                    if message.source != "http":  # timed by a request, not by a stream
                        at = message.event_time or message.time
                    add_prediction(message)
                else:
                    at = message.label_time
                    add_label(message)
                if at is None:
                    continue
                if latest is None or at > latest:
                    latest, second = at, latest
                elif second is None or at > second:
                    second = at
            if second is not None:
                self.watermark.observe(partition, second, now)
            if latest is not None:
                self.watermark.observe(partition, latest, now)
        return self.advance(now)

    def advance(self, now: float) -> list[Alert]:
        """Move the monitor's event time to the watermark; return the alerts raised."""
        watermark = self.watermark.get(now)
        if watermark is None:
            return []
        return self.monitor.advance(
            watermark,
            labels_at=self.watermark.get(now, self.topics.labels),
            predictions_at=self.watermark.get(now, self.topics.predictions),
        )
