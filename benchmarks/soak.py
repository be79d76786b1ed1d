"""Soak (`make soak`): the whole loop for 20 minutes; does memory stay flat?

All five services of one `BenchStack` run `logreg` on River's Agrawal rows while
events and their labels flow at 1,000/s with live times (`flowing`) and `/predict`
takes 50 requests/s (vegeta, open loop). Every `SAMPLE_S` the resident memory of each
service (with its child processes), Redis's `used_memory` and what this run's own keys
hold in it (other runs' keys may be expiring meanwhile) are sampled.

Every piece of state is bounded by a window of time (label TTL, duplicate window,
feature TTL), so memory grows until the longest window is full and must then stay
flat. The soak sets those windows to `WINDOW` (5 minutes), so the plateau comes
within the first half; the verdict compares the second half's end with its start:
under `MAX_GROWTH` (10%) for every service and for Redis. The table is printed and
written to `.bench/soak.json`.

    python -m benchmarks.soak                 # 20 minutes
    python -m benchmarks.soak --minutes 4     # a quick look (no verdict worth keeping)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import redis
from tqdm import tqdm

from benchmarks.http import attack, predict_bodies
from benchmarks.learning import ENTITIES, fresh_stack, raw_messages, synthetic_rows
from benchmarks.report import machine
from benchmarks.stack import REDIS_URL, BenchStack, _children, clear_earlier_runs
from benchmarks.stream import flowing

__all__ = ["run_soak"]

RATE = 1000  # events/s, each with its label
PREDICT_RATE = 50  # /predict requests/s
SAMPLE_S = 15.0
WINDOW = "5m"  # label TTL; the duplicate window and feature TTL are as long
MAX_GROWTH = 0.10
SERVICES = ("ingestion", "features", "training", "serving", "monitoring")


def _rss(pid: int) -> int:
    """Resident memory now (VmRSS) of `pid` and its children, bytes."""
    total = 0
    for each in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def _pipeline(path: Path, features: list[str]) -> Path:
    lines = ["name: soak", "task: binary", "features:", f"  numeric: [{', '.join(features)}]"]
    lines += ["  categorical: []", "  aggregates: []", "models:", "  - name: logreg"]
    lines += ["labels:", f"  ttl: {WINDOW}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_bytes(memory: redis.Redis, prefix: str) -> int:
    """What this run's own keys hold in Redis (`MEMORY USAGE` summed over its prefix)."""
    keys = list(memory.scan_iter(match=f"driftline:{prefix}*", count=5000))
    pipe = memory.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key)
    return sum(int(n or 0) for n in pipe.execute())


def _sample(stack: BenchStack, memory: redis.Redis) -> dict[str, float]:
    sample = {name: _rss(s.process.pid) / 2**20 for name, s in stack.services.items()}
    sample["redis"] = int(memory.info("memory")["used_memory"]) / 2**20
    sample["redis (this run's keys)"] = _run_bytes(memory, stack.prefix) / 2**20
    return sample


def _verdict(samples: list[tuple[float, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per service and Redis: MiB at the second half's start and at the end, growth."""
    half = samples[-1][0] / 2
    start = next(s for t, s in samples if t >= half)
    end = samples[-1][1]
    return {
        name: {
            "mib_at_half": round(start[name], 1),
            "mib_at_end": round(end[name], 1),
            "growth": round(end[name] / start[name] - 1, 4) if start[name] else 0.0,
        }
        for name in end
    }


def run_soak(minutes: float) -> dict[str, Any]:
    duration = minutes * 60
    n = int(RATE * (duration + 60))
    topics_gone, keys_gone = clear_earlier_runs()  # Redis's memory is this run's alone
    print(
        f"[soak] cleared {topics_gone} topics, {keys_gone} keys; {n:,} Agrawal rows for"
        f" {minutes:g} min at {RATE}/s ...",
        flush=True,
    )
    rows = synthetic_rows(n)
    pipeline = _pipeline(BenchStack.work / "pipeline-soak.yaml", sorted(rows[0][0]))
    stack, topics = fresh_stack(pipeline)
    seconds = str(int(WINDOW[:-1]) * 60)
    env = {"DEDUP_WINDOW_S": seconds, "FEATURE_TTL_S": seconds}
    memory = redis.Redis.from_url(REDIS_URL)
    samples: list[tuple[float, dict[str, float]]] = []
    load: dict[str, Any] = {}
    with stack.running():
        for name in SERVICES:
            stack.start(name, **env)
        stack.wait_ready(stack.services["serving"], timeout_s=120)
        events, labels = raw_messages(rows, start_now=True, rate=RATE)
        bodies = predict_bodies([f"u{i}" for i in range(ENTITIES)])
        url = f"{stack.services['serving'].url}/predict"

        def predicts() -> None:
            load["result"] = attack(url, bodies, rate=PREDICT_RATE, duration_s=duration)

        with flowing(topics, events, labels, RATE):
            http = threading.Thread(target=predicts, daemon=True)
            http.start()
            started = time.monotonic()
            with tqdm(total=int(duration), desc="soak", unit="s", leave=False) as bar:
                while (elapsed := time.monotonic() - started) < duration:
                    for name, service in stack.services.items():
                        if service.process.poll() is not None:
                            raise RuntimeError(f"{name} exited; see {service.log}")
                    samples.append((elapsed, _sample(stack, memory)))
                    bar.update(int(elapsed) - bar.n)
                    time.sleep(SAMPLE_S)
            http.join(60)
        samples.append((time.monotonic() - started, _sample(stack, memory)))
        learned = stack.services["training"].metric("driftline_training_learned_total")
    verdict = _verdict(samples)
    result = load.get("result")
    report = {
        "machine": machine(),
        "minutes": minutes,
        "rate": RATE,
        "window": WINDOW,
        "learned": learned,
        "predict": None if result is None else result.__dict__,
        "memory": verdict,
        "flat": all(v["growth"] < MAX_GROWTH for v in verdict.values()),
        "samples": [
            {"t": round(t, 1), **{k: round(v, 1) for k, v in s.items()}} for t, s in samples
        ],
    }
    (BenchStack.work / "soak.json").write_text(json.dumps(report, indent=2))
    _print(report)
    return report


def _print(report: dict[str, Any]) -> None:
    print(f"\nsoak: {report['minutes']:g} min at {report['rate']}/s, windows {report['window']}")
    print(f"{'':24} {'MiB at half':>12} {'MiB at end':>11} {'growth':>8}")
    for name, v in report["memory"].items():
        print(f"{name:24} {v['mib_at_half']:12.1f} {v['mib_at_end']:11.1f} {v['growth']:8.1%}")
    predict = report["predict"]
    if predict:
        print(
            f"/predict: {predict['requests']} requests, success {predict['success']:.1%},"
            f" p99 {predict['p99_ms']:.2f} ms"
        )
    print(f"learned {report['learned']:,.0f} events; flat (<{MAX_GROWTH:.0%}): {report['flat']}")
    print("written to .bench/soak.json")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    args = parser.parse_args()
    report = run_soak(args.minutes)
    raise SystemExit(0 if report["flat"] else 1)


if __name__ == "__main__":
    main()
