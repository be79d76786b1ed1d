"""Served accuracy beside the learner's, on a real drifting data set at 1,000 events/s.

weather.csv (the team kit's `datasets/`: 18,159 days of weather at Offutt Air Force
Base, rain or not, with seasonal and long-term drift) is replayed as live traffic at
`rate` events/s through all five services, each label right after its event. Serving
scores every feature vector with the model it serves (`stream` predictions): by
default its own replica of the learner, which has learned every label before it
(`STREAM_MODEL=follow`: the model followed from training's live slot, up to a
second behind); the learner predicts each event test-then-train.
Both are read back from `predictions` and scored on the events both predicted
(serving skips the first few, before any model exists). The figure is served
accuracy; its baseline the learner's on the same events; the gap in percentage
points is in `extra` (the issue's bound: 1).

    python -m benchmarks.served
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from benchmarks.learning import fresh_stack, raw_messages, settle, write_pipeline
from benchmarks.report import Row, print_table, progress
from benchmarks.stack import ADMIN_KAFKA, BOOTSTRAP, BenchStack
from benchmarks.stream import flowing
from shared.kafka import make_consumer
from shared.replay import rows_from_source

__all__ = ["run_served_bench"]

WEATHER = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "weather.csv"
SERVICES = ("ingestion", "features", "training", "serving", "monitoring")
MODEL = "logreg"
PORT_SHIFT = 2000  # away from the other benches' ports (sustained's: 1000)
DRAIN_S = 120.0  # the most to wait, after the stream, for the last predictions


def run_served_bench(rate: int = 1000, modes: tuple[str, ...] = ("replica", "follow")) -> list[Row]:
    """One row per `STREAM_MODEL` in `modes`, each from a fresh stack."""
    return [row for mode in modes for row in _served(rate, mode)]


def _served(rate: int, mode: str) -> list[Row]:
    rows = list(rows_from_source(str(WEATHER)))
    truth = {f"b{i}": bool(y) for i, (_, y) in enumerate(rows)}
    pipeline = write_pipeline(BenchStack.work / "pipeline-served.yaml", [MODEL], sorted(rows[0][0]))
    stack, topics = fresh_stack(pipeline)
    stack.ports = {name: port + PORT_SHIFT for name, port in stack.ports.items()}
    events, labels = raw_messages(rows, start_now=True, rate=rate)
    with stack.running():
        for name in SERVICES:
            stack.start(name, **({"STREAM_MODEL": mode} if name == "serving" else {}))
        settle()
        with flowing(topics, events, labels, rate):
            _follow(len(rows), rate)
        predicted = asyncio.run(_predictions(topics.predictions, set(truth)))
    both = sorted(set(predicted["learner"]) & set(predicted["stream"]))
    if not both:
        raise RuntimeError(f"no event has both a learner and a stream prediction: {predicted}")
    served, learner = (
        100 * sum(predicted[s][e] == truth[e] for e in both) / len(both)
        for s in ("stream", "learner")
    )
    extra = {
        "events": len(rows),
        "scored_by_both": len(both),
        "gap_pp": round(learner - served, 2),
        "same_prediction_pct": round(
            100 * sum(predicted["stream"][e] == predicted["learner"][e] for e in both) / len(both),
            2,
        ),
        "target_gap_pp": 1.0,
    }
    name = f"served (stream, {mode}) accuracy, {MODEL}, weather.csv at {rate:,} events/s"
    return [Row(name, served, "%", "learner accuracy, same events", learner, extra)]


def _follow(n: int, rate: int) -> None:
    """A progress bar while `flowing` publishes `n` events at `rate`/s."""
    started = time.monotonic()
    with progress(n, f"weather.csv at {rate:,} events/s") as bar:
        while (sent := min(n, int((time.monotonic() - started) * rate))) < n:
            bar.update(sent - bar.n)
            time.sleep(0.5)
        bar.update(n - bar.n)


async def _predictions(topic: str, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """source -> event_id -> y_pred of `MODEL`, read until each source has every event
    or nothing new came for a while (at most `DRAIN_S`)."""
    out: dict[str, dict[str, Any]] = {"learner": {}, "stream": {}}
    consumer = make_consumer(
        bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA, group_id=None, client_id="bench-served"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = last_new = time.monotonic()
        deadline += DRAIN_S
        while time.monotonic() < deadline and time.monotonic() - last_new < 10:
            if len(out["learner"]) >= len(wanted) and len(out["stream"]) >= len(wanted) - 10:
                break
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                p = orjson.loads(record.value or b"{}")
                if p.get("model") == MODEL and p.get("source") in out and p["y_pred"] is not None:
                    out[p["source"]][p["event_id"]] = bool(p["y_pred"])
                    last_new = time.monotonic()
    finally:
        await consumer.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.served", description=__doc__)
    parser.add_argument("--rate", type=int, default=1000)
    found = run_served_bench(parser.parse_args().rate)
    print_table(found)
    for row in found:
        print(row.extra)


if __name__ == "__main__":
    main()
