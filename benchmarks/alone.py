"""Each service alone: its input topic filled beforehand, its output counted.

Ingestion reads `events.raw`, features reads `events` (one categorical feature and
two rolling aggregates, as the issue asks; then again with every event on one entity,
whose windows hold 10,000 entries), serving's stream scorer learns its replica of
the champion from `features` and `labels`, or reads `features` with a trained
champion loaded (`STREAM_MODEL=follow`; `logreg`, and `arf` beside it), and the figure is
output messages per second, timed between 5% and 95% of the output (a finite
stream's start and end are not steady state). Beside it: a bare aiokafka relay over
the same input topic, and the service's CPU seconds per 1,000 events.

    python -m benchmarks.alone [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from redis.asyncio import Redis

from benchmarks.learning import (
    START,
    fill,
    raw_messages,
    settle,
    synthetic_rows,
    vector_messages,
    write_pipeline,
)
from benchmarks.relay import relay_rate
from benchmarks.report import Row, print_table, progress
from benchmarks.stack import ADMIN_KAFKA, BOOTSTRAP, REDIS_URL, BenchStack, Service
from shared.catalogue import build_model
from shared.kafka import make_consumer, make_producer
from shared.registry import ModelRegistry
from shared.signing import local_signing_key
from shared.topics import Topics

__all__ = ["run_alone_bench", "run_scorer_bench"]

PARTITIONS = 3
TRAIN_ROWS = 2000  # the served champion learns these before the scorer starts
REGIONS = ("north", "south", "east", "west")


def features_pipeline(path: Path, numeric: list[str]) -> Path:
    """The synthetic rows' numeric fields, one categorical and two rolling aggregates."""
    lines = ["name: bench-features", "task: binary", "features:"]
    lines += [f"  numeric: [{', '.join(numeric)}]", "  categorical: [region]"]
    lines += ["  aggregates:", "    - {field: salary, how: mean, window: 1h}"]
    lines += ["    - {field: loan, how: sum, window: 1h}"]
    lines += ["models:", "  - name: logreg", "labels:", "  ttl: 30d"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def with_region(rows: list[tuple[dict[str, Any], Any]]) -> list[tuple[dict[str, Any], Any]]:
    return [({**x, "region": REGIONS[i % len(REGIONS)]}, y) for i, (x, y) in enumerate(rows)]


def wait_output(service: Service, topic: str, n: int, desc: str) -> float:
    """Messages per second written to `topic` by `service`, between 5% and 95% of `n`
    (by the messages' own timestamps: a service that starts on a filled topic may be
    done before a poll of the count would have seen it start)."""
    return asyncio.run(_wait_output(service, topic, n, desc))


async def _wait_output(service: Service, topic: str, n: int, desc: str) -> float:
    consumer = make_consumer(
        bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA, group_id=None, client_id="bench-count"
    )
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    try:
        with progress(total=n, desc=desc) as bar:
            while bar.n < 0.95 * n:
                if service.process.poll() is not None:
                    raise RuntimeError(f"{service.name} exited; see {service.log}")
                count = sum((await consumer.end_offsets(partitions)).values())
                bar.update(count - bar.n)
                await asyncio.sleep(0.05)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        stamps: list[int] = []
        while len(stamps) < 0.95 * n:
            batch = await consumer.getmany(timeout_ms=1000)
            stamps += [r.timestamp for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    stamps.sort()
    low, high = int(0.05 * n), int(0.95 * n) - 1
    return (high - low) / max((stamps[high] - stamps[low]) / 1000, 1e-3)


def _alone(
    name: str,
    pipeline: Path,
    source: str,
    sink: str,
    items: dict[str, list],
    n: int,
    *,
    champion: Any = None,
    figure: str = "",
    env: dict[str, str] | None = None,
    fill_first: bool = False,
) -> list[Row]:
    stack = BenchStack(pipeline)
    stack.provision(PARTITIONS)
    topics = Topics(stack.prefix)
    if champion is not None:
        asyncio.run(_publish(stack.prefix, topics, champion))
    filled = {getattr(topics, t): v for t, v in items.items()}
    if fill_first:  # the whole input waits before the start (a learner needs both topics)
        asyncio.run(fill(filled))
    with stack.running():
        service = stack.start(name, **(env or {}))
        if champion is not None:
            stack.wait_ready(service)  # a vector that comes before the champion is skipped
        if not fill_first:
            settle()
            asyncio.run(fill(filled))
        cpu = service.cpu_seconds()
        rate = wait_output(service, getattr(topics, sink), n, f"{name} alone")
        extra = {
            "cpu_s_per_1000_events": round((service.cpu_seconds() - cpu) * 1000 / n, 3),
            "peak_rss_mb": service.peak_rss() / 2**20,
        }
    relay = relay_rate(getattr(topics, source), n)
    figure = figure or f"{name} alone"
    return [Row(figure, rate, "events/s", "bare aiokafka relay", relay, extra)]


async def _publish(prefix: str, topics: Topics, champion: tuple[str, Any]) -> None:
    """`champion` (name, trained model) as version 1 in the registry, announced on `models`."""
    name, model = champion
    redis = Redis.from_url(REDIS_URL)
    try:
        key = local_signing_key()
        assert key is not None, "no signing key: run `make secrets`"
        registry = ModelRegistry(redis, f"driftline:{prefix}registry", signing_key=key)
        published = await registry.save(name, model, {}, [])
    finally:
        await redis.aclose()
    producer = make_producer(BOOTSTRAP, client_id="bench-champion", **ADMIN_KAFKA)
    await producer.start()
    try:
        await producer.send_and_wait(topics.models, published.to_json(), key=name.encode())
    finally:
        await producer.stop()


def run_scorer_bench(n: int, models: tuple[str, ...] = ("logreg", "arf")) -> list[Row]:
    """Serving's stream scorer alone, each model served in turn, in both `STREAM_MODEL`s:
    `replica` (the default) reads `features` and `labels` and learns every label;
    `follow` reads `features` only, scored by a champion trained beforehand."""
    rows = synthetic_rows(n + TRAIN_ROWS)
    train, score = rows[:TRAIN_ROWS], rows[TRAIN_ROWS:]
    vectors, labels = vector_messages(score)
    out = []
    for mode in ("replica", "follow"):
        for name in models:
            path = BenchStack.work / f"pipeline-scorer-{name}.yaml"
            pipeline = write_pipeline(path, [name], sorted(rows[0][0]))
            champion = None
            if mode == "follow":
                champion = build_model(name, {}, "binary")
                for x, y in train:
                    champion.learn_one(x, y)
            out += _alone(
                "serving",
                pipeline,
                "features",
                "predictions",
                {"features": vectors, "labels": labels}
                if mode == "replica"
                else {"features": vectors},
                n,
                champion=None if champion is None else (name, champion),
                figure=f"serving stream scoring alone, {name} "
                + ("replica learning each label" if mode == "replica" else "followed"),
                env={"STREAM_MODEL": mode},
                fill_first=mode == "replica",
            )
    return out


def hot_messages(rows: list[tuple[dict[str, Any], Any]]) -> list[tuple[bytes, bytes]]:
    """Events without an entity (all in the one "global" state), 0.1 s apart: the 1 h
    windows hold 10,000 entries (the state's bound) once the stream is 1,000 s in."""
    events = []
    for i, (x, _) in enumerate(rows):
        at = (START + timedelta(seconds=i / 10)).isoformat()
        events.append(
            (b"global", orjson.dumps({"event_id": f"h{i}", "event_time": at, "features": x}))
        )
    return events


def run_alone_bench(n: int) -> list[Row]:
    rows = with_region(synthetic_rows(n))
    numeric = sorted(k for k in rows[0][0] if k != "region")
    pipeline = features_pipeline(BenchStack.work / "pipeline-features.yaml", numeric)
    events, _ = raw_messages(rows)
    out = _alone("ingestion", pipeline, "events_raw", "events", {"events_raw": events}, n)
    # a raw event is already in the shape ingestion publishes to `events`
    out += _alone("features", pipeline, "events", "features", {"events": events}, n)
    out += _alone(
        "features",
        pipeline,
        "events",
        "features",
        {"events": hot_messages(rows)},
        n,
        figure="features alone, one hot entity (10,000 in window)",
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.alone", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller stream")
    parser.add_argument("--scorer", action="store_true", help="serving's stream scorer only")
    args = parser.parse_args()
    n = 20_000 if args.quick else 60_000
    print_table(run_scorer_bench(n) if args.scorer else run_alone_bench(n) + run_scorer_bench(n))


if __name__ == "__main__":
    main()
