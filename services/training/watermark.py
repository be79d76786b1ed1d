"""How far in event time the learner may go: the watermark over every input partition.

Each Kafka partition delivers its items in time order, so once a partition has
delivered an item at time t, everything it still holds is at t or later. The
learner may therefore advance to just below the smallest "last time consumed" over
the partitions that can still deliver something: `OnlineLearner.advance(w)` needs
"everything up to w has been added". The rules, as `Watermark.decide` applies them:

- a partition holds the watermark just below the time of the last timed item it
  delivered (a label without `label_time` has no time of its own: the learner
  applies it at its event's time, so it holds nothing back);
- a partition that has delivered nothing yet holds everything back: it could
  still hold anything;
- a partition that is caught up (position == high watermark) and has been idle
  for longer than `idle_s` of wall time is skipped: it holds nothing back, except
  - while a topic still owes the item of an event already seen on another
    (`hold`: a label whose features have not come, remembered for at most `hold_s`
    of wall time), that topic's partitions are given `hold_s` instead of `idle_s`:
    the features are on their way through the slower features service, and labels
    must not be learned before the events that came earlier are predicted;
  - a topic that has never delivered anything is not skipped either until `hold_s`
    after the first item on any other: at start, one stream may simply be late;
- when every partition is skipped, the watermark is the latest time seen:
  everything buffered is processed (a flush).

Pure logic, no Kafka: partitions are (topic, partition) pairs and `now` is a
monotonic clock in seconds, passed in.

>>> from datetime import UTC, datetime
>>> t = lambda s: datetime(2024, 1, 1, 0, 0, s, tzinfo=UTC)
>>> w = Watermark(idle_s=2)
>>> w.assign([("features", 0), ("labels", 0)], now=0)
>>> w.observe(("features", 0), t(5), now=0)
>>> w.decide(now=1) is None  # labels/0 has delivered nothing: it could hold anything
True
>>> w.observe(("labels", 0), t(3), now=1)
>>> w.decide(now=1) == t(3) - EPSILON
True
>>> w.caught_up(("features", 0), True); w.caught_up(("labels", 0), True)
>>> w.decide(now=9) == t(5)  # both caught up and idle: flush
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["EPSILON", "PartitionKey", "PartitionProgress", "Watermark"]

PartitionKey = tuple[str, int]  # (topic, partition); aiokafka's TopicPartition is one

EPSILON = timedelta(microseconds=1)  # the watermark sits just below a partition's last time


@dataclass
class PartitionProgress:
    """What one partition has delivered, and since when it has been quiet."""

    last_time: datetime | None = None  # time of the last timed item consumed
    delivered: bool = False  # anything at all (timed or not) consumed
    caught_up: bool = False  # position == high watermark at the last check
    last_active: float = 0.0  # monotonic seconds: last delivery, or assignment

    def idle(self, now: float, idle_s: float) -> bool:
        return self.caught_up and now - self.last_active > idle_s


class Watermark:
    """The event time up to which every input partition has been read (see module doc)."""

    def __init__(self, idle_s: float = 2.0, hold_s: float = 60.0) -> None:
        self.idle_s = idle_s
        self.hold_s = hold_s
        self.partitions: dict[PartitionKey, PartitionProgress] = {}
        self._holds: dict[str, tuple[str, float]] = {}  # event_id -> (owing topic, since)
        self._first_delivery: float | None = None  # wall time of the first item, any topic

    # ---- partitions

    def assign(
        self,
        partitions: Iterable[PartitionKey],
        now: float,
        last_times: Mapping[PartitionKey, datetime] | None = None,
    ) -> None:
        """Start tracking `partitions` (kept as they are if already tracked).

        `last_times` (from a checkpoint) are times the partitions had already reached:
        everything after the checkpoint's offsets is at those times or later.
        """
        for partition in partitions:
            if partition in self.partitions:
                continue
            known = (last_times or {}).get(partition)
            self.partitions[partition] = PartitionProgress(
                last_time=known, delivered=known is not None, last_active=now
            )

    def revoke(self, partitions: Iterable[PartitionKey]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def observe(self, partition: PartitionKey, time: datetime | None, now: float) -> None:
        """A record was consumed from `partition`; `time` is None if it has no time."""
        progress = self.partitions.setdefault(partition, PartitionProgress())
        progress.delivered = True
        progress.last_active = now
        progress.caught_up = False
        if time is not None:
            progress.last_time = time
        if self._first_delivery is None:
            self._first_delivery = now

    def caught_up(self, partition: PartitionKey, caught_up: bool) -> None:
        """Record whether `partition`'s position has reached its high watermark."""
        if partition in self.partitions:
            self.partitions[partition].caught_up = caught_up

    def last_times(self) -> dict[PartitionKey, datetime]:
        """The last timed item per partition (what a checkpoint keeps)."""
        return {p: s.last_time for p, s in self.partitions.items() if s.last_time is not None}

    def restart(self, now: float) -> None:
        """Forget wall-clock state (after a restore from a checkpoint in another process)."""
        for progress in self.partitions.values():
            progress.last_active = now
            progress.caught_up = False
        self._holds = {e: (topic, now) for e, (topic, _) in self._holds.items()}
        self._first_delivery = None

    # ---- items owed

    def hold(self, event_id: str, topic: str, now: float) -> None:
        """`topic` still owes an item of `event_id` (a label came, its features not yet)."""
        self._holds.setdefault(event_id, (topic, now))

    def release(self, event_id: str) -> None:
        """The owed item of `event_id` came."""
        self._holds.pop(event_id, None)

    @property
    def holds(self) -> int:
        return len(self._holds)

    def _owing_topics(self, now: float) -> set[str]:
        while self._holds:  # oldest first (dicts keep insertion order)
            event_id, (_, since) = next(iter(self._holds.items()))
            if now - since <= self.hold_s:
                break
            del self._holds[event_id]  # waited too long: it may never come
        return {topic for topic, _ in self._holds.values()}

    # ---- the decision

    def skipping(self, now: float) -> bool:
        """Whether some partition is caught up and idle (a candidate for skipping)."""
        return any(p.idle(now, self.idle_s) for p in self.partitions.values())

    def decide(self, now: float) -> datetime | None:
        """The time the learner may advance to now, or None to wait."""
        owing = self._owing_topics(now)
        live = {topic for (topic, _), p in self.partitions.items() if p.delivered}
        waited = self._first_delivery is not None and now - self._first_delivery > self.hold_s
        bounds: list[datetime] = []
        for (topic, _), progress in self.partitions.items():
            if progress.idle(now, self.idle_s):
                if progress.delivered:
                    if topic not in owing or progress.idle(now, self.hold_s):
                        continue
                elif topic in live or waited:
                    continue
            if progress.last_time is not None:
                bounds.append(progress.last_time - EPSILON)
            elif not progress.delivered:
                return None  # could still deliver anything
        if bounds:
            return min(bounds)
        seen = [p.last_time for p in self.partitions.values() if p.last_time is not None]
        return max(seen) if seen else None  # every partition skipped: flush
