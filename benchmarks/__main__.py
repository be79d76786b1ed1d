"""`make bench`: Driftline's figures, each beside a baseline measured in the same run.

These machines are noisy, so no figure stands alone: each has a baseline from the
same run (River in-process, a bare aiokafka relay, a bare FastAPI endpoint, a bare
consumer) and the ratio. The table is printed and written to `.bench/results.json`.
Kafka and Redis must be up (`make bench` starts them); each part runs its services
as child processes under a fresh topic prefix, so `make up`'s stack is not touched.

    python -m benchmarks            # everything (about 35 minutes)
    python -m benchmarks --quick    # smaller streams, shorter loads and holds

The whole loop's sustained rate and the freshness probes also write their per-step
detail to `.bench/sustained.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from benchmarks.alone import run_alone_bench, run_scorer_bench
from benchmarks.http import run_http_bench, seeded_serving
from benchmarks.learning import (
    raw_messages,
    run_learning_bench,
    synthetic_rows,
    write_pipeline,
)
from benchmarks.monitoring import run_monitoring_bench
from benchmarks.report import Row, print_table, write_results
from benchmarks.served import run_served_bench
from benchmarks.stack import BenchStack, clear_earlier_runs
from benchmarks.stream import flowing
from benchmarks.sustained import RATES, run_sustained_bench
from shared.messages import Event
from shared.topics import Topics
from shared.validation import validate_raw

__all__ = ["main"]

THREE = ["logreg", "hoeffding_tree", "hat"]
SETTLE_S = 5.0  # after clearing what earlier parts left, before the next part starts


def _rows(dicts: list[dict[str, Any]]) -> list[Row]:
    return [
        Row(d["name"], float(d["value"]), d["unit"], d["baseline"], float(d["baseline_value"]))
        for d in dicts
    ]


def bench_validation(n: int = 20_000) -> list[Row]:
    raw = [
        json.dumps(
            {
                "event_id": f"e{i}",
                "event_time": "2024-05-01T12:00:00Z",
                "entity_id": f"u{i % 100}",
                "features": {f"f{j}": i * 0.5 + j for j in range(8)} | {"country": "NL"},
            }
        ).encode()
        for i in range(n)
    ]

    def best(work: Callable[[bytes], object]) -> float:
        rates = []
        for _ in range(3):
            started = time.perf_counter()
            for value in raw:
                work(value)
            rates.append(n / (time.perf_counter() - started))
        return max(rates)

    base, mine = best(json.loads), best(lambda v: validate_raw(Event, v))
    return [Row("ingestion validation (one core)", mine, "events/s", "json.loads alone", base)]


def bench_serving_under_stream(n: int, rate: int, duration_s: float) -> list[Row]:
    """`/predict` while events and labels flow at `rate`/s through the learning loop."""
    rows = synthetic_rows(n)
    pipeline = write_pipeline(
        BenchStack.work / "pipeline-stream.yaml", ["logreg"], sorted(rows[0][0])
    )
    stack = BenchStack(pipeline)
    stack.provision(3)
    topics = Topics(stack.prefix)
    events, labels = raw_messages(rows, start_now=True)
    with stack.running():
        for name in ("ingestion", "features"):
            stack.start(name)
        stack.start("training", CHECKPOINT_SECONDS="5")
        serving = stack.start("serving")
        with flowing(topics, events, labels, rate):
            stack.wait_ready(serving, timeout_s=120)
            entities = [f"u{i}" for i in range(64)]
            label = f"{rate:,} events/s flowing"
            out = _rows(
                run_http_bench(serving.url, label=label, duration_s=duration_s, entity_ids=entities)
            )
        for row in out:
            row.extra["peak_rss_mb"] = {k: s.peak_rss() / 2**20 for k, s in stack.services.items()}
    return out


def bench_serving_quiet(duration_s: float) -> list[Row]:
    with seeded_serving() as (url, entities):
        return _rows(run_http_bench(url, label="quiet", duration_s=duration_s, entity_ids=entities))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller streams, shorter loads")
    args = parser.parse_args()
    n = 20_000 if args.quick else 60_000
    load_s = 10.0 if args.quick else 30.0
    hold_s = 30.0 if args.quick else 120.0
    parts: list[tuple[str, Callable[[], list[Row]]]] = [
        ("validation", bench_validation),
        ("ingestion and features alone", lambda: run_alone_bench(n)),
        ("learning, logreg", lambda: run_learning_bench(n, ["logreg"])),
        ("learning, three models", lambda: run_learning_bench(n // 3, THREE, alone=False)),
        ("stream scoring alone", lambda: run_scorer_bench(n // 2)),
        (
            "monitoring",
            lambda: _rows(run_monitoring_bench(max(2 * n, 100_000), live_seconds=load_s / 2)),
        ),
        ("serving, quiet", lambda: bench_serving_quiet(load_s)),
        ("serving, stream", lambda: bench_serving_under_stream(n * 4, 1000, load_s)),
        ("served accuracy", run_served_bench),
        (
            "whole loop sustained, freshness",
            lambda: run_sustained_bench(RATES, hold_s, probes=100 if args.quick else 200),
        ),
    ]
    rows: list[Row] = []
    for i, (name, part) in enumerate(parts, 1):
        # each part starts from a broker and a Redis without what earlier parts left (one
        # run leaves ~130 topics and ~740,000 keys: Redis's AOF rewrites then fork a
        # larger process, which stalls the later parts' reads)
        topics, keys = clear_earlier_runs()
        time.sleep(SETTLE_S)  # the broker deletes the topics' logs meanwhile
        print(f"[{i}/{len(parts)}] {name} (cleared {topics} topics, {keys} keys) ...", flush=True)
        started = time.monotonic()
        try:
            found = part()
        except Exception as error:  # one broken part must not hide the others
            print(f"    {name} failed: {error!r}", flush=True)
            continue
        rows += found
        print(f"    done in {time.monotonic() - started:.0f} s", flush=True)
    print()
    table = print_table(rows)
    write_results(rows, table)
    print("\nwritten to .bench/results.json and .bench/results.md")


if __name__ == "__main__":
    main()
