"""Monitoring's event-time clock: how far every input partition has got.

The watermark is the oldest last-seen event time over the partitions that have
data, ignoring partitions that are caught up and have been quiet for `idle_s`
seconds (else one quiet partition would stop every expiry). A partition that has
delivered no time yet holds the watermark back (None) unless it is caught up: it
is empty, or carries only labels without `label_time`. When every partition with
a time is skipped as idle, the newest time seen stands. No Kafka here: the worker
tells it what was delivered, what is caught up, and the wall clock (`now`,
monotonic seconds).

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> w = Watermark(idle_s=5)
>>> w.assign([("p", 0), ("l", 0)])
>>> w.observe(("p", 0), t0 + timedelta(seconds=9))
>>> w.get(now=0) is None  # ("l", 0) has data whose time is not known yet
True
>>> w.observe(("l", 0), t0)
>>> w.get(now=0) == t0, w.get(now=0, topic="p") == t0 + timedelta(seconds=9)
(True, True)
>>> w.delivered([("l", 0)], now=0); w.caught_up(("l", 0), True)
>>> w.get(now=6) == t0 + timedelta(seconds=9)  # ("l", 0) is caught up and quiet
True
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

__all__ = ["Partition", "Watermark"]

Partition = tuple[str, int]  # (topic, partition); aiokafka's TopicPartition is one


class Watermark:
    """Event time every partition with data has reached (see the module doc)."""

    def __init__(self, idle_s: float = 5.0) -> None:
        self.idle_s = idle_s
        self._partitions: list[Partition] = []
        self._last_time: dict[Partition, datetime] = {}
        self._last_message: dict[Partition, float] = {}
        self._caught_up: dict[Partition, bool] = {}

    def assign(self, partitions: Iterable[Partition]) -> None:
        """The partitions read (all of both input topics)."""
        self._partitions = list(partitions)

    def observe(self, partition: Partition, at: datetime) -> None:
        """A message of `partition` carried event time `at` (the clock never goes back)."""
        last = self._last_time.get(partition)
        if last is None or at > last:
            self._last_time[partition] = at

    def delivered(self, partitions: Iterable[Partition], now: float) -> None:
        """These partitions delivered messages (valid or not) at `now`."""
        for partition in partitions:
            self._last_message[partition] = now

    def caught_up(self, partition: Partition, caught_up: bool) -> None:
        """Whether `partition` has been read up to its end."""
        self._caught_up[partition] = caught_up

    def get(self, now: float, topic: str | None = None) -> datetime | None:
        """The watermark of `topic`'s partitions, or of all (None: not known yet)."""
        times = []
        for partition in self._partitions:
            if topic is not None and partition[0] != topic:
                continue
            caught_up = self._caught_up.get(partition, False)
            last = self._last_time.get(partition)
            if last is None:
                if caught_up:
                    continue  # empty, or labels without label_time only
                return None
            if caught_up and now - self._last_message.get(partition, now) >= self.idle_s:
                continue
            times.append(last)
        if times:
            return min(times)
        last_times = [t for p, t in self._last_time.items() if topic is None or p[0] == topic]
        return max(last_times) if last_times else None
