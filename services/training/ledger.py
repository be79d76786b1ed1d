"""The learner's per-event bookkeeping in a form that is cheap to save piece by piece.

A learner remembers, for every event it has seen within the label TTL, a few facts:
the features' time, whether its label came, and what it still waits for (a
prediction for its label, a label for its features). `pack` writes the records of
some events as a few flat columns; `unpack` reads them back. Training's checkpoint
writes all of them now and then (a base) and, at every checkpoint in between, only
those of the events that changed since the last one (`OnlineLearner.take_changes`),
so a checkpoint costs the models plus what changed, not everything pending.

`Waits` is the queue of waits by start time that the learner expires from; its order
is (since, event_id), so a queue rebuilt from the records is the same queue.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = [
    "NONE",
    "SEEN",
    "WAITS_LABEL",
    "WAITS_PREDICTION",
    "WAITS_UNTIMED",
    "Waits",
    "pack",
    "unpack",
]

NONE = -(2**63)  # no time
# What an event waits for (a record's state); a record with no time and no label is
# an event forgotten.
SEEN, WAITS_PREDICTION, WAITS_LABEL, WAITS_UNTIMED = 0, 1, 2, 3

_SEP = "\0"


class Waits:
    """(since, event_id) pairs taken out smallest first: those added in that order (all
    but late items) in a deque, the others in a heap."""

    __slots__ = ("inorder", "late")

    def __init__(self, items: Iterable[tuple[int, str]] = ()) -> None:
        self.inorder: deque[tuple[int, str]] = deque(sorted(items))
        self.late: list[tuple[int, str]] = []

    def add(self, since: int, event_id: str) -> None:
        item = (since, event_id)
        inorder = self.inorder
        if inorder and item < inorder[-1]:
            heapq.heappush(self.late, item)
        else:
            inorder.append(item)

    def first(self) -> tuple[int, str] | None:
        inorder, late = self.inorder, self.late
        if late and (not inorder or late[0] < inorder[0]):
            return late[0]
        return inorder[0] if inorder else None

    def pop(self) -> None:
        inorder, late = self.inorder, self.late
        if late and (not inorder or late[0] < inorder[0]):
            heapq.heappop(late)
        else:
            inorder.popleft()

    def __len__(self) -> int:
        return len(self.inorder) + len(self.late)


def pack_ids(ids: Iterable[str]) -> str | tuple[str, ...]:
    """`ids` as one string joined by NUL (in their order); as a tuple when there are
    none or an id holds a NUL itself. `unpack_ids` gives the list back."""
    listed = list(ids)
    joined = _SEP.join(listed)
    if not listed or joined.count(_SEP) != len(listed) - 1:
        return tuple(listed)
    return joined


def unpack_ids(packed: str | tuple[str, ...]) -> list[str]:
    return list(packed) if isinstance(packed, tuple) else packed.split(_SEP)


def pack(rows: Iterable[tuple[str, int, bool, int, Any]], models: list[str]) -> dict[str, Any]:
    """Records as columns. A row is (event_id, features' time or NONE, label seen,
    state, detail): for WAITS_PREDICTION the detail is (ref, y_pred by model) when the
    vector can be read again at ref, else (None, y_pred, x, event_time); for
    WAITS_LABEL and WAITS_UNTIMED (label, since); None otherwise."""
    ids: list[str] = []
    times, flags = array("q"), bytearray()
    parts: dict[tuple[Any, ...], int] = {}
    where, offsets = array("i"), array("q")
    y_preds: dict[str, list[Any]] = {name: [] for name in models}
    extra: dict[str, Any] = {}
    for event_id, time, labelled, state, detail in rows:
        ids.append(event_id)
        times.append(time)
        flags.append(labelled | state << 1)
        if state == WAITS_PREDICTION and detail[0] is not None:
            *part, offset = detail[0]
            where.append(parts.setdefault(tuple(part), len(parts)))
            offsets.append(offset)
            for name in models:
                y_preds[name].append(detail[1].get(name))
        elif state != SEEN:
            extra[event_id] = detail
    return {
        "ids": pack_ids(ids),
        "n": len(ids),
        "times": times,
        "flags": bytes(flags),
        "parts": tuple(parts),
        "where": where,
        "offsets": offsets,
        "y_preds": y_preds,
        "extra": extra,
    }


def unpack(packed: dict[str, Any]) -> Iterable[tuple[str, int, bool, int, Any]]:
    """The rows `pack` was given, in their order."""
    ids = unpack_ids(packed["ids"]) if packed["n"] else []
    times, flags, extra = packed["times"], packed["flags"], packed["extra"]
    parts, where, offsets, y_preds = (
        packed["parts"],
        packed["where"],
        packed["offsets"],
        packed["y_preds"],
    )
    names = list(y_preds)
    k = 0
    for i, event_id in enumerate(ids):
        state, labelled = flags[i] >> 1, bool(flags[i] & 1)
        detail = extra.get(event_id)
        if state == WAITS_PREDICTION and detail is None:
            ref = (*parts[where[k]], offsets[k])
            detail = (ref, {name: y_preds[name][k] for name in names})
            k += 1
        yield event_id, times[i], labelled, state, detail
