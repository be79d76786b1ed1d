"""Learning throughput: training alone, and the learning path from `events.raw`.

The learning path runs the whole stack, as the issue measures it: serving (scoring
every vector) and monitoring (joining every prediction) run beside ingestion,
features and training, allowed to lag; the figure is the rate at which training
learned.

Each figure stands beside River running the same models on the same rows in this
process (predict, then learn, row by row: what progressive validation does), and
beside a bare aiokafka relay over the same topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis

from benchmarks.relay import relay_rate
from benchmarks.report import Row, progress
from benchmarks.stack import ADMIN_KAFKA, BOOTSTRAP, REDIS_URL, BenchStack, Service
from shared.catalogue import build_model
from shared.kafka import make_producer, produce_all
from shared.messages import FeatureVector, Label
from shared.replay import rows_from_source
from shared.topics import Topics

__all__ = [
    "fresh_stack",
    "raw_messages",
    "river_rate",
    "run_learning_bench",
    "synthetic_rows",
    "write_pipeline",
]

START = datetime(2024, 1, 1, tzinfo=UTC)
ENTITIES = 64


def synthetic_rows(n: int) -> list[tuple[dict[str, Any], Any]]:
    """`n` rows of River's Agrawal stream with an abrupt drift halfway."""
    return list(rows_from_source("synth:agrawal-drift", n=n))


def write_pipeline(path: Path, models: list[str], features: list[str]) -> Path:
    lines = ["name: bench", "task: binary", "features:", f"  numeric: [{', '.join(features)}]"]
    lines += ["  categorical: []", "  aggregates: []", "models:"]
    lines += [f"  - name: {m}" for m in models]
    lines += ["labels:", "  ttl: 30d"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def river_rate(rows: list[tuple[dict[str, Any], Any]], models: list[str]) -> float:
    """Rows per second of River in this process, the models in series, test-then-train."""
    built = [build_model(name, {}, "binary") for name in models]
    started = time.perf_counter()
    for x, y in rows:
        for model in built:
            model.predict_proba_one(x)
            model.learn_one(x, y)
    return len(rows) / (time.perf_counter() - started)


def _time(i: int) -> datetime:
    return START + timedelta(seconds=i)


def raw_messages(
    rows: Iterable[tuple[dict[str, Any], Any]],
    *,
    start_now: bool = False,
    rate: int = 1000,
    first: int = 0,
) -> tuple[list, list]:
    """(events, labels) as (key, value) pairs; each label one step after its event.

    Events are a second apart from 2024-01-01, or, with `start_now`, `1 / rate` s apart
    from now (live traffic at `rate`/s, whose times ingestion accepts as they come).
    Event ids count from `first`, so streams made one after another never share an id.
    """
    start, step = (
        (datetime.now(UTC), timedelta(seconds=1 / rate))
        if start_now
        else (START, timedelta(seconds=1))
    )
    events, labels = [], []
    for i, (x, y) in enumerate(rows, first):
        key = f"u{i % ENTITIES}"
        at = start + (i - first) * step
        event = {"event_id": f"b{i}", "event_time": at.isoformat(), "entity_id": key}
        events.append((key.encode(), orjson.dumps({**event, "features": x})))
        label = {"event_id": f"b{i}", "label": y, "label_time": (at + step).isoformat()}
        labels.append((key.encode(), orjson.dumps(label)))
    return events, labels


def vector_messages(rows: Iterable[tuple[dict[str, Any], Any]]) -> tuple[list, list]:
    """(features, labels) as training reads them: FeatureVector and Label pairs."""
    vectors, labels = [], []
    for i, (x, y) in enumerate(rows):
        key = f"u{i % ENTITIES}"
        vector = FeatureVector(
            event_id=f"b{i}",
            entity_id=key,
            event_time=_time(i),
            features={k: float(v) for k, v in x.items()},
            feature_set_version="bench",
        )
        label = Label(event_id=f"b{i}", label=y, label_time=_time(i + 1))
        vectors.append((key.encode(), vector.to_json()))
        labels.append((key.encode(), label.to_json()))
    return vectors, labels


async def fill(topic_items: dict[str, list[tuple[bytes, bytes]]], chunk: int = 5000) -> None:
    producer = make_producer(BOOTSTRAP, client_id="driftline-bench", **ADMIN_KAFKA)
    await producer.start()
    try:
        for topic, items in topic_items.items():
            for i in range(0, len(items), chunk):
                await produce_all(producer, topic, items[i : i + chunk])
    finally:
        await producer.stop()


def wait_learned(training: Service, n: int, models: int, desc: str) -> float:
    """Events learned per second by every model while the stream flows.

    Timed between 5% and 95% of the `n` events learned: a finite bench stream has a
    start (consumers fetching) and an end (the last labels wait for the idle rule,
    `IDLE_MS`, since no later event comes) that a live stream does not have.
    """
    target = n * models
    low, high = 0.05 * n, 0.95 * n
    t_low = t_high = None
    with progress(total=n, desc=desc) as bar:
        while t_high is None:
            if training.process.poll() is not None:
                raise RuntimeError(f"training exited; see {training.log}")
            learned = int(training.metric("driftline_training_learned_total")) // models
            now = time.monotonic()
            bar.update(learned - bar.n)
            if t_low is None and learned >= low:
                t_low = (now, learned)
            if learned >= high:
                t_high = (now, learned)
            time.sleep(0.1)
        while int(training.metric("driftline_training_learned_total")) < target:
            time.sleep(0.2)  # every event is learned in the end
            bar.update(n - bar.n)
    assert t_low is not None
    return (t_high[1] - t_low[1]) / max(t_high[0] - t_low[0], 1e-3)


def redis_bytes() -> int:
    """Redis's `used_memory` now."""
    return int(redis.Redis.from_url(REDIS_URL).info("memory")["used_memory"])


def settle(seconds: float = 4.0) -> None:
    """Let freshly started consumers join their groups before the inputs flow."""
    time.sleep(seconds)


def fresh_stack(pipeline: Path) -> tuple[BenchStack, Topics]:
    """A stack under a new topic prefix, its topics created."""
    stack = BenchStack(pipeline)
    stack.provision(3)
    return stack, Topics(stack.prefix)


def _training_alone(rows: list, models: list[str], pipeline: Path, river: float) -> list[Row]:
    names = "+".join(models)
    stack, topics = fresh_stack(pipeline)
    vectors, labels = vector_messages(rows)
    with stack.running():
        training = stack.start("training")
        settle()
        asyncio.run(fill({topics.features: vectors, topics.labels: labels}))
        rate = wait_learned(training, len(rows), len(models), f"training alone ({names})")
        rss = training.peak_rss()
    relay = relay_rate(topics.features, len(vectors))
    name = f"training alone, {names}"
    return [
        Row(name, rate, "labelled events/s", "River in-process", river),
        Row(
            name,
            rate,
            "labelled events/s",
            "bare aiokafka relay",
            relay,
            {"peak_rss_mb": rss / 2**20},
        ),
    ]


def _learning_path(rows: list, models: list[str], pipeline: Path, river: float) -> Row:
    names = "+".join(models)
    stack, topics = fresh_stack(pipeline)
    events, labels = raw_messages(rows)
    with stack.running():
        for name in ("ingestion", "features", "training", "serving", "monitoring"):
            stack.start(name)
        settle()
        cpu = {name: s.cpu_seconds() for name, s in stack.services.items()}
        redis_before = redis_bytes()
        asyncio.run(fill({topics.events_raw: events, topics.labels_raw: labels}))
        training = stack.services["training"]
        rate = wait_learned(training, len(rows), len(models), f"learning path ({names})")
        per_1000 = {
            name: round((s.cpu_seconds() - cpu[name]) * 1000 / len(rows), 3)
            for name, s in stack.services.items()
        }
        peaks = {name: s.peak_rss() / 2**20 for name, s in stack.services.items()}
        grown = (redis_bytes() - redis_before) * 1000 / len(rows)
    extra = {
        "peak_rss_mb": peaks,
        "cpu_s_per_1000_events": per_1000,
        "redis_bytes_per_1000_events": grown,
    }
    return Row(f"learning path, {names}", rate, "events/s", "River in-process", river, extra)


def run_learning_bench(
    n: int, models: list[str], *, alone: bool = True, path: bool = True
) -> list[Row]:
    """Training alone (features and labels topics filled), and the whole learning path."""
    rows = synthetic_rows(n)
    river = river_rate(rows, models)
    pipeline = write_pipeline(
        BenchStack.work / f"pipeline-{'+'.join(models)}.yaml", models, sorted(rows[0][0])
    )
    out: list[Row] = []
    if alone:
        out += _training_alone(rows, models, pipeline, river)
    if path:
        out.append(_learning_path(rows, models, pipeline, river))
    return out
