"""Event time every input partition has reached: the one watermark of the services.

Each Kafka partition delivers its items roughly in time order, so once a partition
has delivered an item at time t, what it still holds is at t or later. The watermark
is therefore the smallest last time over the partitions that can still deliver
something (or over one topic's, `get(now, topic)`). The rules, as `Watermark.get`
applies them:

- a partition holds the watermark at the last event time it delivered (a partition's
  time never goes back);
- a partition that has delivered no time yet holds everything back (None: not known
  yet), unless it is caught up: it is empty, or carries only untimed items;
- a partition that is caught up (position == high watermark), drained (nothing for
  it is still in a service upstream: `shared.upstream`) and quiet for longer than
  `idle_s` of wall time is skipped (else one quiet partition would stop the clock);
  one whose upstream lags is waited for, however long that takes;
- when every partition is skipped, the watermark is the latest time seen (a flush);
- no lone item moves a partition's time more than `max_jump` ahead (`observe`), so
  one event dated hours ahead cannot drag every clock downstream with it.

`LearnerWatermark` adds what an online learner needs to replay the streams exactly
as River would (training): see its docstring.

Pure logic, no Kafka: partitions are (topic, partition) pairs and `now` is a
monotonic clock in seconds, passed in. Monitoring's `BatchHandler` and training's
worker tell it what each partition delivered and which ones are caught up.

>>> from datetime import UTC, datetime
>>> t = lambda s: datetime(2024, 1, 1, 0, 0, s, tzinfo=UTC)
>>> w = Watermark(idle_s=5)
>>> w.assign([("p", 0), ("l", 0)], now=0)
>>> w.observe(("p", 0), t(9), now=0)
>>> w.get(now=0) is None  # ("l", 0) may hold items of any time
True
>>> w.observe(("l", 0), t(0), now=0)
>>> w.get(now=0) == t(0), w.get(now=0, topic="p") == t(9)
(True, True)
>>> w.caught_up(("l", 0), True)
>>> w.get(now=6) == t(9)  # ("l", 0) is caught up and quiet
True
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "CONFIRMED",
    "EPSILON",
    "HELD",
    "JUMP_FACTOR",
    "LIVE_GRACE_S",
    "LearnerWatermark",
    "Partition",
    "PartitionProgress",
    "Watermark",
]

Partition = tuple[str, int]  # (topic, partition); aiokafka's TopicPartition is one

EPSILON = timedelta(microseconds=1)  # a learner's watermark sits just below a last time
LIVE_GRACE_S = 0.25  # a silent partition's wait after its topic's first item
JUMP_FACTOR = 100  # a lone step this many times the typical one is held (and max_jump)
HELD = "held"  # `observe`: a lone item far ahead, which moved no clock
CONFIRMED = "confirmed"  # `observe`: the item after a held one, far ahead too: the jump stands


@dataclass
class PartitionProgress:
    """What one partition has delivered, and since when it has been quiet."""

    last_time: datetime | None = None  # event time of the last timed item consumed
    delivered: bool = False  # anything at all (timed or not) consumed
    caught_up: bool = False  # position == high watermark at the last check
    drained: bool = True  # nothing for it upstream at the last check (True: not asked)
    last_active: float = 0.0  # monotonic seconds: last delivery, or assignment
    ahead: datetime | None = None  # a lone item far ahead, not yet confirmed by the next
    gap_s: float = 0.0  # typical step forward between items (moving average), seconds

    def settled(self) -> bool:
        """Caught up, and nothing for it is still on its way from upstream."""
        return self.caught_up and self.drained

    def idle(self, now: float, idle_s: float) -> bool:
        return self.settled() and now - self.last_active > idle_s


class Watermark:
    """The event time up to which every input partition has been read (see module doc)."""

    margin = timedelta(0)  # how far below a partition's last time the watermark sits
    rewinds = False  # an earlier time than the last one moves a partition's time back
    max_jump: timedelta | None = None  # see `observe` (a class default: old pickles load)
    held_jumps = 0  # lone items far ahead that moved no clock

    def __init__(self, idle_s: float = 5.0, max_jump: timedelta | None = None) -> None:
        self.idle_s = idle_s
        self.max_jump = max_jump
        self.partitions: dict[Partition, PartitionProgress] = {}

    # ---- partitions

    def assign(
        self,
        partitions: Iterable[Partition],
        now: float,
        last_times: Mapping[Partition, datetime] | None = None,
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

    def revoke(self, partitions: Iterable[Partition]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def observe(self, partition: Partition, time: datetime | None, now: float) -> str | None:
        """An item was consumed from `partition` at `now`; `time` is None if it has none.

        No single item moves a partition's time further ahead than `max_jump` or
        `JUMP_FACTOR` times the partition's typical step, whichever is more: such an
        item (a clock set wrong, a mistyped date) is only noted, and the partition's
        time moves when the next item is that far ahead too (a stream that resumes
        after a gap). The lone item waits downstream until the stream's time reaches
        it. Daily data moves in steps of days, so only a step of months holds there.

        Returns `HELD` for such a lone item, `CONFIRMED` for the next one if it is far
        ahead too (the jump stands), else None.
        """
        progress = self.partitions.setdefault(partition, PartitionProgress())
        progress.delivered = True
        progress.last_active = now
        progress.caught_up = False
        if time is None:
            return None
        last = progress.last_time
        step = 0.0 if last is None else (time - last).total_seconds()
        verdict = None
        if self.max_jump is not None and step > 0:
            reach = max(self.max_jump.total_seconds(), JUMP_FACTOR * progress.gap_s)
            if step > reach:
                if progress.ahead is None:  # a lone item far ahead
                    progress.ahead = time
                    self.held_jumps += 1
                    return HELD
                verdict = CONFIRMED
            gap = progress.gap_s
            progress.gap_s = step if gap == 0 else gap + (step - gap) / 10
        progress.ahead = None
        if last is None or time > last or self.rewinds:
            progress.last_time = time
        return verdict

    def caught_up(self, partition: Partition, caught_up: bool) -> None:
        """Record whether `partition`'s position has reached its high watermark."""
        if partition in self.partitions:
            self.partitions[partition].caught_up = caught_up

    def drained(self, partition: Partition, drained: bool) -> None:
        """Record whether the services upstream still owe `partition` something."""
        if partition in self.partitions:
            self.partitions[partition].drained = drained

    def last_times(self) -> dict[Partition, datetime]:
        """The last timed item per partition (what a checkpoint keeps)."""
        return {p: s.last_time for p, s in self.partitions.items() if s.last_time is not None}

    def restart(self, now: float) -> None:
        """Forget wall-clock state (after a restore from a checkpoint in another process)."""
        for progress in self.partitions.values():
            progress.last_active = now
            progress.caught_up = False

    # ---- the watermark

    def skipping(self, now: float) -> bool:
        """Whether some partition is caught up and idle (a candidate for skipping)."""
        return any(p.idle(now, self.idle_s) for p in self.partitions.values())

    def get(self, now: float, topic: str | Collection[str] | None = None) -> datetime | None:
        """The watermark of `topic`'s partitions (or of several topics'), or of all
        (None: not known yet)."""
        topics = {topic} if isinstance(topic, str) else topic
        mine = [(k, p) for k, p in self.partitions.items() if topics is None or k[0] in topics]
        skipped = self._skipped(now)
        bounds: list[datetime] = []
        for key, progress in mine:
            if key in skipped:
                continue
            if progress.last_time is None:
                return None  # could still deliver anything
            bounds.append(progress.last_time - self.margin)
        if bounds:
            return min(bounds)
        seen = [p.last_time for _, p in mine if p.last_time is not None]
        return max(seen, default=None)  # every partition skipped: flush

    def _skipped(self, now: float) -> set[Partition]:
        """The partitions that hold nothing back at `now`."""
        return {
            key
            for key, p in self.partitions.items()
            if p.settled() and (p.last_time is None or p.idle(now, self.idle_s))
        }


class LearnerWatermark(Watermark):
    """How far an online learner may advance (training's watermark).

    `OnlineLearner.advance(w)` needs "everything up to w has been added", and a label
    must not be learned before the events that came earlier are predicted. So, beyond
    `Watermark`'s rules:

    - the watermark sits `EPSILON` below a partition's last time (another item at
      that very time may still come), plus the allowed lateness if any (`margin`: an
      item up to that late within its partition is still taken in time order), and
      that time is the last timed item's even when it is earlier than the one before;
    - a label without `label_time` has no time of its own: the learner applies it at
      its event's time, so a partition that delivered only untimed items holds
      nothing back;
    - a partition whose upstream still owes it something (the features service is
      away or behind) is never skipped, however long that lasts: a label waits for
      its features until their own stream's time passes it, and then its TTL, in
      event time, decides;
    - while a topic still owes the item of an event already seen on another (`hold`:
      a label whose features have not come, remembered for at most `hold_s` of wall
      time), its drained partitions are given `hold_s` instead of `idle_s` (for a
      reader with no word from upstream);
    - a partition that has delivered nothing is skipped only once settled and idle,
      and `LIVE_GRACE_S` after its topic's first item (a producer writes a batch's
      partitions a little apart), or, if its topic has delivered nothing at all,
      `hold_s` after the first item on any other: at start, one stream may simply be
      late.

    >>> from datetime import UTC, datetime
    >>> t = lambda s: datetime(2024, 1, 1, 0, 0, s, tzinfo=UTC)
    >>> w = LearnerWatermark(idle_s=2)
    >>> w.assign([("features", 0), ("labels", 0)], now=0)
    >>> w.observe(("features", 0), t(5), now=0)
    >>> w.get(now=1) is None  # labels/0 has delivered nothing: it could hold anything
    True
    >>> w.observe(("labels", 0), t(3), now=1)
    >>> w.get(now=1) == t(3) - EPSILON
    True
    >>> w.caught_up(("features", 0), True); w.caught_up(("labels", 0), True)
    >>> w.drained(("labels", 0), False)  # ingestion has labels it has not forwarded
    >>> w.get(now=9) == t(3) - EPSILON
    True
    >>> w.drained(("labels", 0), True)
    >>> w.get(now=9) == t(5)  # both settled and idle: flush
    True
    """

    margin = EPSILON
    rewinds = True

    def __init__(
        self, idle_s: float = 2.0, hold_s: float = 60.0, max_jump: timedelta | None = None
    ) -> None:
        super().__init__(idle_s, max_jump)
        self.hold_s = hold_s
        self._holds: dict[str, tuple[str, float]] = {}  # event_id -> (owing topic, since)
        self._first_delivery: float | None = None  # wall time of the first item, any topic
        self._live_since: dict[str, float] = {}  # topic -> wall time of its first item

    def observe(self, partition: Partition, time: datetime | None, now: float) -> str | None:
        verdict = super().observe(partition, time, now)
        if self._first_delivery is None:
            self._first_delivery = now
        self._live_since.setdefault(partition[0], now)
        return verdict

    def restart(self, now: float) -> None:
        super().restart(now)
        self._holds = {e: (topic, now) for e, (topic, _) in self._holds.items()}
        self._first_delivery = None
        self._live_since = {}  # wall times of another process (and older pickles lack it)

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

    def _quiet_since_live(self, topic: str, now: float) -> bool:
        """Whether `topic`'s first item came over `LIVE_GRACE_S` ago: its other
        partitions then had that long to deliver theirs (a producer writes a batch's
        partitions a few milliseconds apart)."""
        since = self._live_since.get(topic)
        return since is None or now - since > min(self.idle_s, LIVE_GRACE_S)

    def _skipped(self, now: float) -> set[Partition]:
        owing = self._owing_topics(now)
        live = {topic for (topic, _), p in self.partitions.items() if p.delivered}
        waited = self._first_delivery is not None and now - self._first_delivery > self.hold_s
        skipped: set[Partition] = set()
        for key, p in self.partitions.items():
            topic = key[0]
            if p.delivered and p.last_time is None:
                skipped.add(key)  # untimed items only
            elif not p.idle(now, self.idle_s):
                continue
            elif p.delivered:
                if topic not in owing or p.idle(now, self.hold_s):
                    skipped.add(key)
            elif self._quiet_since_live(topic, now) if topic in live else waited:
                skipped.add(key)
        return skipped
