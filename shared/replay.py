"""Replay a data set into `events.raw` and `labels.raw`, as live traffic would arrive.

A source is a CSV file, a River data set (`river:Phishing`) or a synthetic stream
(`synth:agrawal`, `synth:agrawal-drift`, `synth:sea-drift`). Row i gets an event
time (a time column, or `start + i * step`) and its label arrives `label_delay`
later: a number of rows (label time = the event time of row i + delay) or a
duration. Messages are published in time order, a label due at t before the event
at t, each keyed by its entity (or `global`), like River's `simulate_qa`.

>>> rows = list(rows_from_source("synth:agrawal", n=3))
>>> len(rows), sorted(rows[0][0])[:3]
(3, ['age', 'car', 'commission'])
"""

from __future__ import annotations

import asyncio
import csv
import heapq
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from shared.durations import parse_duration
from shared.messages import GLOBAL_KEY
from shared.topics import Topics

__all__ = ["ReplayPlan", "ReplayStats", "plan_messages", "replay", "rows_from_source"]

Row = tuple[dict[str, Any], Any]  # (features, label)
SYNTHETIC = ("agrawal", "agrawal-drift", "sea", "sea-drift")


def _number_or_text(value: str) -> float | str | None:
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _label_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _csv_rows(path: Path, label_column: str) -> Iterator[tuple[dict[str, Any], Any]]:
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            if label_column not in record:
                raise ValueError(f"{path}: no label column {label_column!r}")
            label = _label_value(_number_or_text(record.pop(label_column)))
            yield {k: _number_or_text(v) for k, v in record.items()}, label


def _synthetic(name: str, n: int, seed: int) -> Iterable[tuple[dict[Any, Any], Any]]:
    """A River generator; `-drift` switches concept abruptly halfway through."""
    from river.datasets import synth

    concepts: dict[str, tuple[Any, Any]] = {
        "agrawal": (
            lambda s: synth.Agrawal(classification_function=0, seed=s),
            lambda s: synth.Agrawal(classification_function=2, seed=s),
        ),
        "sea": (lambda s: synth.SEA(variant=0, seed=s), lambda s: synth.SEA(variant=3, seed=s)),
    }
    base, drifting = name.removesuffix("-drift"), name.endswith("-drift")
    if base not in concepts:
        raise ValueError(f"unknown synthetic stream {name!r}; choose from {', '.join(SYNTHETIC)}")
    before, after = concepts[base]
    if not drifting:
        return before(seed).take(n)
    half = n // 2
    return itertools.chain(before(seed).take(half), after(seed + 1).take(n - half))


def _river_dataset(name: str) -> Iterable[tuple[dict[Any, Any], Any]]:
    from river import datasets

    dataset = getattr(datasets, name, None)
    if dataset is None:
        raise ValueError(f"river.datasets has no {name!r}")
    return dataset()


def rows_from_source(
    source: str, *, label_column: str = "target", n: int | None = None, seed: int = 42
) -> Iterator[Row]:
    """(features, label) pairs from a CSV path, `river:<Dataset>` or `synth:<stream>`."""
    if source.startswith("synth:"):
        rows: Iterable[tuple[dict[Any, Any], Any]] = _synthetic(source[6:], n or 10_000, seed)
    elif source.startswith("river:"):
        rows = _river_dataset(source[6:])
    else:
        rows = _csv_rows(Path(source), label_column)
    for i, (x, y) in enumerate(rows):
        if n is not None and i >= n:
            return
        features = {
            str(k): (v if isinstance(v, str | bool) or v is None else float(v))
            for k, v in x.items()
        }
        yield features, (y if isinstance(y, bool | str) else _label_value(float(y)))


@dataclass(frozen=True)
class ReplayPlan:
    """How rows become messages: ids, times, entities, label delay."""

    id_prefix: str
    start: datetime = datetime(2020, 1, 1, tzinfo=UTC)
    step: timedelta = timedelta(seconds=1)
    label_delay: str = "0"  # rows ("10") or a duration ("10m")
    entity_column: str | None = None
    time_column: str | None = None


def _parse_time(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def plan_messages(
    rows: Iterable[Row], plan: ReplayPlan
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (kind, key, message) in arrival order: kind is "event" or "label"."""
    delay_rows = int(plan.label_delay) if plan.label_delay.isdigit() else None
    delay_time = None if delay_rows is not None else parse_duration(plan.label_delay)
    pending: list[tuple[datetime, int, str, dict[str, Any]]] = []  # labels by due time
    times: list[datetime] = []
    waiting_for_row: list[tuple[int, int, str, dict[str, Any]]] = []  # (due row, seq, key, label)
    for i, (features, label) in enumerate(rows):
        entity = features.pop(plan.entity_column, None) if plan.entity_column else None
        moment = (
            _parse_time(features.pop(plan.time_column))
            if plan.time_column
            else plan.start + i * plan.step
        )
        times.append(moment)
        while waiting_for_row and waiting_for_row[0][0] <= i:  # label times fixed by row i
            _, seq, key, message = heapq.heappop(waiting_for_row)
            heapq.heappush(
                pending, (moment, seq, key, {**message, "label_time": moment.isoformat()})
            )
        while pending and pending[0][0] <= moment:  # labels due now go before the event
            _, _, key, message = heapq.heappop(pending)
            yield "label", key, message
        event_id = f"{plan.id_prefix}-{i}"
        key = str(entity) if entity is not None else GLOBAL_KEY
        entity_id = str(entity) if entity is not None else None
        yield (
            "event",
            key,
            {
                "event_id": event_id,
                "event_time": moment.isoformat(),
                "entity_id": entity_id,
                "features": features,
            },
        )
        label_msg: dict[str, Any] = {"event_id": event_id, "label": label, "entity_id": entity_id}
        if delay_rows is not None and delay_rows > 0:
            heapq.heappush(waiting_for_row, (i + delay_rows, i, key, label_msg))
        else:
            due = moment + (delay_time or timedelta(0))
            heapq.heappush(pending, (due, i, key, {**label_msg, "label_time": due.isoformat()}))
    # labels due after the last row: their time continues the row clock
    last = times[-1] if times else plan.start
    for due_row, seq, key, message in sorted(waiting_for_row):
        due = last + (due_row - len(times) + 1) * plan.step
        heapq.heappush(pending, (due, seq, key, {**message, "label_time": due.isoformat()}))
    while pending:
        _, _, key, message = heapq.heappop(pending)
        yield "label", key, message


@dataclass
class ReplayStats:
    events: int = 0
    labels: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def replay(
    messages: Iterable[tuple[str, str, dict[str, Any]]],
    *,
    bootstrap_servers: str,
    topics: Topics,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
    auth: Mapping[str, Any] | None = None,
) -> ReplayStats:
    """Publish planned messages as the principal `auth` (the outside `producer`, who may
    write `events.raw` and `labels.raw`); `rate` caps events per second."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        **(auth or {}),
    )
    await producer.start()
    stats = ReplayStats()
    started = time.monotonic()
    bar = tqdm(total=total, unit="ev", disable=not progress, desc="replay")
    try:
        pending = []
        for kind, key, message in messages:
            topic = topics.events_raw if kind == "event" else topics.labels_raw
            value = json.dumps(message, separators=(",", ":")).encode()
            pending.append(await producer.send(topic, value, key=key.encode()))
            if kind == "event":
                stats.events += 1
                bar.update(1)
                if rate:
                    ahead = stats.events / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            else:
                stats.labels += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        bar.close()
        await producer.stop()
    stats.seconds = time.monotonic() - started
    return stats
