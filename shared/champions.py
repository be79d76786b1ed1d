"""Who the champion is, as the `champions` topic tells it.

Training's champion policy announces each promotion on `champions`; operators pin a
model (or a version of it), unpin, or roll back there too. `ChampionView` folds those
messages: the champion is the pinned one while a pin stands, else the policy's
latest. Serving folds the topic from its beginning (it is small and kept for good) to
know what to answer with; the CLI and training read it the same way.

>>> from shared.clock import utcnow
>>> view = ChampionView("logreg")
>>> def change(action, model, version=None):
...     return ChampionChanged(change_id=f"{action}-{model}", model=model, version=version,
...         action=action, by="test", reason="example", changed_at=utcnow())
>>> view.apply(change("promote", "hat")), view.model, view.version
(True, 'hat', None)
>>> view.apply(change("pin", "logreg", "7")), view.model, view.version
(True, 'logreg', '7')
>>> view.apply(change("promote", "arf")), view.model  # pinned: the policy waits
(False, 'logreg')
>>> view.apply(change("unpin", "arf")), view.model
(True, 'arf')
"""

from __future__ import annotations

import logging
from collections import deque

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from shared.kafka import read_from_start
from shared.messages import ChampionChanged

__all__ = ["HISTORY", "ChampionView", "decode_change", "read_changes"]

log = logging.getLogger(__name__)

HISTORY = 100  # changes kept for `GET /models` and the CLI (the topic keeps them all)


class ChampionView:
    """The champion after the messages applied so far (see the module doc)."""

    def __init__(self, initial: str) -> None:
        self.policy_model = initial  # the champion policy's latest choice
        self.pinned: tuple[str, str | None] | None = None  # (model, version) an operator chose
        self.history: deque[ChampionChanged] = deque(maxlen=HISTORY)
        self._ids: deque[str] = deque(maxlen=HISTORY)
        # the champions served one after the other, (model, pinned version), newest last
        self.served: deque[tuple[str, str | None]] = deque([(initial, None)], maxlen=HISTORY)

    @property
    def model(self) -> str:
        return self.pinned[0] if self.pinned else self.policy_model

    @property
    def version(self) -> str | None:
        """The pinned version, or None: the model's newest."""
        return self.pinned[1] if self.pinned else None

    @property
    def previous(self) -> tuple[str, str | None] | None:
        """The champion before this one (what a rollback returns to), None if none."""
        return self.served[-2] if len(self.served) > 1 else None

    @property
    def last(self) -> ChampionChanged | None:
        """The change that made the champion what it is (None: it is the initial one)."""
        for change in reversed(self.history):
            if self.pinned is None and change.action in ("promote", "unpin"):
                return change
            if self.pinned is not None and change.action in ("pin", "rollback"):
                return change
        return None

    def apply(self, change: ChampionChanged) -> bool:
        """Apply one message; whether the champion (model or version) changed."""
        if change.change_id in self._ids:
            return False  # a promotion re-sent after a restart
        self._ids.append(change.change_id)
        self.history.append(change)
        before = (self.model, self.version)
        if change.action == "promote":
            self.policy_model = change.model
        elif change.action in ("pin", "rollback"):
            self.pinned = (change.model, change.version)
        else:  # unpin
            self.pinned = None
            self.policy_model = change.model
        now = (self.model, self.version)
        if now != before:
            self.served.append(now)
        return now != before


def decode_change(record: ConsumerRecord) -> ChampionChanged | None:
    """The change in `record`, or None (invalid: logged)."""
    if record.value is None:
        return None
    try:
        return ChampionChanged.model_validate_json(record.value)
    except ValidationError as error:
        log.warning(
            "invalid champion change at %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            str(error).splitlines()[0],
        )
        return None


async def read_changes(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], timeout_s: float = 10.0
) -> list[ChampionChanged]:
    """Every change on `partitions` (of the `champions` topic) so far, in the order they
    were sent; the consumer is assigned them and stays at their end."""
    records = await read_from_start(consumer, partitions, timeout_s)
    records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    return [c for c in map(decode_change, records) if c is not None]
