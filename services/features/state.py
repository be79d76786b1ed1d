"""Per-entity window state on two faust tables, each change written to its changelog once.

`entity_state` maps an entity to its `Window` in memory; its changelog holds a small
head per entity (`{"v": 3, "next": arrival number}`). `entity_entries` has one record
per entry a window holds, keyed `f"{number}:{entity}"` (the number's digits end at the
first colon, so keys never clash), written when the entry is stored and tombstoned
when it is dropped. So a batch writes the entries it added and the tombstones of those
it dropped, plus one head per entity it touched: a hot entity with 10,000 entries in
its window costs what changed, not 10,000 entries per batch.

After a recovery (a start, a rebalance) faust has put the heads into `entity_state`
and the records into `entity_entries`; the first read of a head rebuilds every
recovered entity's `Window` from its records (`Window.from_records`) and empties the
entries table's memory (the changelog keeps them). A version-2 state (the whole state
as one value, written by an earlier release) is read as it is: its window writes all
of its entries out on its first change, and the head replaces the old value.

A batch holds records of several partitions, so the changelog partition is the source
record's own, passed in, rather than faust's "current event". `idle` follows every
write (see `IdleEntities`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from faust.types import TableT

from services.features.faust_io import key_partitions
from services.features.handlers import IdleEntities
from shared.features import EntityState, FeatureComputer, Record, Window
from shared.kafka import send_to_partitions

__all__ = ["ENTRIES_TABLE", "HEAD_VERSION", "TABLE_NAME", "TableStateStore"]

log = logging.getLogger(__name__)

TABLE_NAME = "entity_state"
ENTRIES_TABLE = "entity_entries"
HEAD_VERSION = 3


def _entry_key(number: int, entity_id: str) -> str:
    return f"{number}:{entity_id}"


def _is_head(value: Any) -> bool:
    return isinstance(value, dict) and value.get("v") == HEAD_VERSION


class TableStateStore:
    """The handler's `StateStore` on faust tables, writing their changelogs explicitly."""

    def __init__(
        self,
        table: TableT[str, Any],
        entries: TableT[str, Any],
        computer: FeatureComputer,
        idle: IdleEntities,
    ) -> None:
        self.table = table
        self.entries = entries
        self.computer = computer
        self.idle = idle
        self._partitions = key_partitions(table)
        self._changed: dict[str, int] = {}  # entity -> changelog partition, this batch
        self._gone: dict[str, tuple[int, list[int]]] = {}  # deleted: partition, entries written

    def __len__(self) -> int:
        return len(self.table.data)

    def get(self, entity_id: str) -> EntityState | Window | None:
        state = self.table.data.get(entity_id)
        if _is_head(state):
            self.rebuild()
            state = self.table.data.get(entity_id)
        return state

    def set(self, entity_id: str, state: EntityState | Window, partition: int) -> None:
        self.table.data[entity_id] = state
        self._partitions[entity_id] = partition
        self._changed[entity_id] = partition
        self.idle.touched(entity_id, partition, FeatureComputer.newest(state))

    def delete(self, entity_id: str, partition: int) -> None:
        state = self.table.data.pop(entity_id, None)
        self._partitions.pop(entity_id, None)
        self._changed[entity_id] = partition
        written = state.written() if isinstance(state, Window) else []
        self._gone.setdefault(entity_id, (partition, []))[1].extend(written)

    def rebuild(self) -> int:
        """Turn the recovered heads and entry records into Windows; how many were rebuilt.

        Records whose entity has no head (left by a stop between the two tombstones)
        are tombstoned with the next changelog.
        """
        data, inbox = self.table.data, self.entries.data
        records: dict[str, list[Record]] = defaultdict(list)
        for value in inbox.values():
            records[value[0]].append(value[1:])
        rebuilt = 0
        for entity_id, state in list(data.items()):
            if _is_head(state):
                window = Window.from_records(
                    self.computer, records.pop(entity_id, []), int(state["next"])
                )
                data[entity_id] = window
                if window.pending:  # records past the window's bounds: tombstoned next
                    self._changed[entity_id] = self._partitions.get(entity_id, 0)
                rebuilt += 1
        entry_partitions = key_partitions(self.entries)
        for entity_id, orphans in records.items():
            if entity_id in data:  # a version-2 state beside: its window writes them again
                continue
            partition = entry_partitions.get(_entry_key(orphans[0][2], entity_id), 0)
            self._gone[entity_id] = (partition, [r[2] for r in orphans])
            self._changed[entity_id] = partition
        inbox.clear()
        entry_partitions.clear()
        if rebuilt:
            log.info("rebuilt %d entity windows from their changelog records", rebuilt)
        return rebuilt

    def track_all(self) -> None:
        """Let `idle` follow every entity the tables hold (after a recovery), oldest first."""
        self.rebuild()
        self.idle.clear()
        newest = FeatureComputer.newest
        kept = [(newest(s), e) for e, s in self.table.data.items() if e in self._partitions]
        for newest_us, entity_id in sorted(kept, key=lambda k: (k[0] is not None, k[0] or 0)):
            self.idle.touched(entity_id, self._partitions[entity_id], newest_us)

    async def send_changelog(self, producer: AIOKafkaProducer) -> list[asyncio.Future[Any]]:
        """Send what every entity changed since the last call, in bulk with `producer`
        (faust's own per-record path cost more than the vectors); the acks, to await.
        Keys and values are JSON, as faust's changelog reader expects."""
        changed, self._changed = self._changed, {}
        gone, self._gone = self._gone, {}
        heads: list[tuple[int, bytes | None, bytes | None]] = []
        entries: list[tuple[int, bytes | None, bytes | None]] = []
        for entity_id, partition in changed.items():
            state = self.table.data.get(entity_id)
            if entity_id in gone:  # deleted: tombstones (records without a value)
                old_partition, numbers = gone[entity_id]
                for number in numbers:
                    entries.append((old_partition, _json(_entry_key(number, entity_id)), None))
                if state is None:
                    heads.append((old_partition, _json(entity_id), None))
            if not isinstance(state, Window):  # gone, or a version-2 state unchanged
                continue
            added, dropped = state.drain()
            for record in added:
                key = _json(_entry_key(record[2], entity_id))
                entries.append((partition, key, _json([entity_id, *record])))
            for number in dropped:
                entries.append((partition, _json(_entry_key(number, entity_id)), None))
            heads.append(
                (partition, _json(entity_id), _json({"v": HEAD_VERSION, "next": state.next}))
            )
        sent = await send_to_partitions(producer, self._topic(self.entries), entries)
        return sent + await send_to_partitions(producer, self._topic(self.table), heads)

    @staticmethod
    def _topic(table: TableT[str, Any]) -> str:
        return str(table.changelog_topic.get_topic_name())


def _json(value: Any) -> bytes:
    return orjson.dumps(value)
