"""Monitoring alone: predictions/s with `predictions` and `labels` filled beforehand.

`python -m benchmarks.monitoring [N]` creates topics under a fresh prefix, fills
`predictions` with N predictions (three models as `learner`, the champion as
`stream`: four per event) and `labels` with their labels, then times

- the baseline: a bare aiokafka consumer (every partition of both topics, from the
  beginning) that only `json.loads` each value, in this process;
- monitoring: `python -m services.monitoring` as a subprocess on that prefix, from
  its first consumed message until it has consumed everything (`consumed` in
  /api/summary), and until every joined prediction is scored (`n` summed).

Both figures are predictions/s (the labels are read too, in both), and the ratio is
monitoring's over the baseline's, measured in the same run.

Then, live: monitoring and a bare consumer (a subprocess) follow fresh topics while
this process publishes `live_rate` events/s (four predictions and a label each, as
the whole loop makes them) for `live_seconds`; rows give the share of a core each
used and how far behind each was when the stream ended (ratio: monitoring's over
the bare consumer's). `MONITORING_BENCH_PYSPY=file` records the service's stacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.stack import ADMIN_KAFKA, process_cpu_seconds
from shared.acls import Groups, provision
from shared.kafka import make_producer, produce_all
from shared.topics import Topics, partitions_of

__all__ = ["run_monitoring_bench"]

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
PORT = int(os.environ.get("MONITORING_BENCH_PORT", "18002"))
ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 5, 1, tzinfo=UTC)
LEARNERS = ("logreg", "hoeffding_tree", "hat")
CHAMPION = "logreg"
PER_EVENT = len(LEARNERS) + 1
PIPELINE = """\
name: monitoring-bench
task: binary
features:
  numeric: [x]
models:
  - name: logreg
  - name: hoeffding_tree
  - name: hat
labels:
  ttl: 1h
"""


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def workload(n_predictions: int) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """`(key, value)` pairs for `predictions` and `labels`, keyed by entity id."""
    predictions, labels = [], []
    for i in range(n_predictions // PER_EVENT):
        entity = f"u{i % 997}"
        key = entity.encode()
        when = _iso(T0 + timedelta(milliseconds=10 * i))
        y = (i * 7919) % 3 != 0
        for model, source in [(m, "learner") for m in LEARNERS] + [(CHAMPION, "stream")]:
            right = (i + len(model)) % 5 != 0
            y_pred = y if right else not y
            p_true = 0.8 if y_pred else 0.2
            prediction = {
                "prediction_id": f"{model}:{source}:e{i}",
                "event_id": f"e{i}",
                "entity_id": entity,
                "model": model,
                "model_version": "1" if i < n_predictions // PER_EVENT // 2 else "2",
                "y_pred": y_pred,
                "probabilities": {"True": p_true, "False": round(1 - p_true, 6)},
                "source": source,
                "event_time": when,
                "time": when,
            }
            predictions.append((key, json.dumps(prediction).encode()))
        label = {"event_id": f"e{i}", "label": y, "label_time": when, "entity_id": entity}
        labels.append((key, json.dumps(label).encode()))
    return predictions, labels


async def _fill(prefix: str, n_predictions: int) -> tuple[int, int]:
    await provision(BOOTSTRAP, ADMIN_KAFKA, prefix, Groups(monitoring=f"{prefix}monitoring"), 3)
    topics = Topics(prefix)
    predictions, labels = workload(n_predictions)
    producer = make_producer(BOOTSTRAP, client_id="bench-monitoring", **ADMIN_KAFKA)
    await producer.start()
    try:
        for start in range(0, len(predictions), 20_000):
            await produce_all(producer, topics.predictions, predictions[start : start + 20_000])
        for start in range(0, len(labels), 20_000):
            await produce_all(producer, topics.labels, labels[start : start + 20_000])
    finally:
        await producer.stop()
    return len(predictions), len(labels)


async def _bare_consume(prefix: str, total: int) -> float:
    """Seconds a bare consumer takes to read and `json.loads` `total` messages."""
    topics = Topics(prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        **ADMIN_KAFKA,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        assigned = [
            TopicPartition(t, p)
            for t in (topics.predictions, topics.labels)
            for p in await partitions_of(BOOTSTRAP, t, ADMIN_KAFKA)
        ]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        seen, started = 0, 0.0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            if not started and batch:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    json.loads(record.value or b"")
                seen += len(records)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def _summary(client: httpx.Client) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = client.get(f"http://127.0.0.1:{PORT}/api/summary").json()
        return body
    except httpx.HTTPError:
        return None


@contextlib.contextmanager
def _monitoring(prefix: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`python -m services.monitoring` on `prefix` (port PORT) while the block runs."""
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Path(tmp) / "pipeline.yaml"
        pipeline.write_text(PIPELINE)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
            "TOPIC_PREFIX": prefix,
            "GROUP_ID": f"{prefix}monitoring",
            "PORT": str(PORT),
            "PIPELINE_CONFIG": str(pipeline),
            "IDLE_PARTITION_S": "0.5",
            "LOG_LEVEL": "WARNING",
        }
        log = Path(tmp) / "monitoring.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.monitoring"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        profiler = None
        if profile := os.environ.get("MONITORING_BENCH_PYSPY"):  # collapsed stacks, for us
            spy = ["py-spy", "record", "-r", "250", "-f", "raw", "-o", profile]
            profiler = subprocess.Popen([*spy, "--pid", str(process.pid)])
        try:
            yield process, log
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if profiler is not None:
                profiler.wait()  # it writes its output once the service is gone


def _run_service(prefix: str, total: int, n_predictions: int, timeout: float) -> dict[str, float]:
    """Start monitoring on `prefix`; seconds from its first consumed message to all
    consumed, and to all scored."""
    with _monitoring(prefix) as (process, log):
        return _watch(process, total, n_predictions, timeout, log)


def _watch(
    process: subprocess.Popen[bytes], total: int, n_predictions: int, timeout: float, log: Path
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    first: tuple[float, int] | None = None
    consumed_at = scored_at = 0.0
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"monitoring exited: {log.read_text()[-3000:]}")
            body = _summary(client)
            now = time.perf_counter()
            if body is not None:
                consumed = int(body["consumed"])
                if first is None and consumed > 0:
                    first = (now, consumed)
                if consumed >= total and not consumed_at:
                    consumed_at = now
                if sum(int(r["n"]) for r in body["models"]) >= n_predictions:
                    scored_at = now
                    break
            time.sleep(0.1)
    if first is None or not consumed_at or not scored_at:
        raise TimeoutError(f"monitoring did not finish in {timeout}s: {log.read_text()[-3000:]}")
    # the messages read before the first poll saw any are not timed: leave them out
    share = 1 - first[1] / total
    if share < 0.5:
        raise RuntimeError(f"too few predictions to time: {first[1]} of {total} read at start")
    if os.environ.get("MONITORING_BENCH_DEBUG"):
        print(f"first seen {first[1]} of {total}; consumed {consumed_at - first[0]:.2f}s")
    return {
        "consumed_s": (consumed_at - first[0]) / share,
        "scored_s": (scored_at - first[0]) / share,
    }


async def _produce_paced(
    prefix: str,
    predictions: list[tuple[bytes, bytes]],
    labels: list[tuple[bytes, bytes]],
    rate: int,
) -> float:
    """Publish `rate` events/s (each event's predictions and its label) in ticks of
    100 ms; return `time.time()` when the last tick was acknowledged."""
    topics = Topics(prefix)
    producer = make_producer(BOOTSTRAP, client_id="bench-monitoring-live", **ADMIN_KAFKA)
    await producer.start()
    try:
        per_tick = max(1, rate // 10)
        started = time.perf_counter()
        for k, i in enumerate(range(0, len(labels), per_tick)):
            await asyncio.sleep(max(0.0, started + k / 10 - time.perf_counter()))
            await asyncio.gather(
                produce_all(
                    producer,
                    topics.predictions,
                    predictions[i * PER_EVENT : (i + per_tick) * PER_EVENT],
                ),
                produce_all(producer, topics.labels, labels[i : i + per_tick]),
            )
        return time.time()
    finally:
        await producer.stop()


async def _bare_follow(prefix: str, total: int) -> None:
    """The live baseline (run as `--bare PREFIX TOTAL`): follow both topics with a bare
    consumer that `json.loads` each value; print its CPU seconds and when it read the
    last message, as JSON."""
    topics = Topics(prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA, enable_auto_commit=False
    )
    await consumer.start()
    try:
        assigned = [
            TopicPartition(t, p)
            for t in (topics.predictions, topics.labels)
            for p in await partitions_of(BOOTSTRAP, t, ADMIN_KAFKA)
        ]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        for tp in assigned:
            await consumer.position(tp)
        print("ready", flush=True)
        cpu, seen = time.process_time(), 0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batch.values():
                for record in records:
                    json.loads(record.value or b"")
                seen += len(records)
        print(json.dumps({"cpu_s": time.process_time() - cpu, "last_at": time.time()}))
    finally:
        await consumer.stop()


def _run_live(rate: int, seconds: float, timeout: float) -> dict[str, float]:
    """Monitoring and a bare consumer following the same stream at `rate` events/s:
    the share of a core each used, and how far behind each was when it ended."""
    prefix = f"benchlive{uuid.uuid4().hex[:8]}."
    asyncio.run(
        provision(BOOTSTRAP, ADMIN_KAFKA, prefix, Groups(monitoring=f"{prefix}monitoring"), 3)
    )
    predictions, labels = workload(int(rate * seconds) * PER_EVENT)
    total = len(predictions) + len(labels)
    with _monitoring(prefix) as (process, log), httpx.Client(timeout=5) as client:
        deadline = time.monotonic() + timeout
        while (body := _summary(client)) is None or body["replaying"]:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"monitoring did not start: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        bare = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.monitoring", "--bare", prefix, str(total)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert bare.stdout is not None
        bare.stdout.readline()  # ready
        cpu, started = process_cpu_seconds(process.pid), time.time()
        ended = asyncio.run(_produce_paced(prefix, predictions, labels, rate))
        while int((_summary(client) or {"consumed": 0})["consumed"]) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"monitoring fell behind: {log.read_text()[-3000:]}")
            time.sleep(0.05)
        drained, used = time.time(), process_cpu_seconds(process.pid) - cpu
        out, _ = bare.communicate(timeout=timeout)
    baseline = json.loads(out.strip().splitlines()[-1])
    return {
        "cpu": used / (ended - started),
        "lag_s": drained - ended,
        "bare_cpu": baseline["cpu_s"] / (ended - started),
        "bare_lag_s": baseline["last_at"] - ended,
    }


def run_monitoring_bench(
    n: int = 100_000, live_rate: int = 3000, live_seconds: float = 20, timeout: float = 600
) -> list[dict[str, Any]]:
    """Monitoring alone, each figure beside a bare consumer's from the same run:
    predictions/s replaying filled topics, then CPU and lag following a live stream
    of `live_rate` events/s (each with its predictions and label). 0 skips either."""
    rows = []
    if n:
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        n_predictions, n_labels = asyncio.run(_fill(prefix, n))
        total = n_predictions + n_labels
        bare_s = asyncio.run(_bare_consume(prefix, total))
        timed = _run_service(prefix, total, n_predictions, timeout)
        baseline = n_predictions / bare_s
        replay = "bare aiokafka consume + json.loads (same topics)"
        for name, seconds in (
            ("monitoring predictions consumed", timed["consumed_s"]),
            (
                "monitoring predictions scored (incl. a 0.5 s idle wait at the end)",
                timed["scored_s"],
            ),
        ):
            value = n_predictions / seconds
            rows.append(_row(name, value, "predictions/s", replay, baseline))
    if live_rate:
        live = _run_live(live_rate, live_seconds, timeout)
        stream = f"bare aiokafka consume + json.loads following the same {live_rate:,} events/s"
        rows.append(
            _row(
                f"monitoring CPU at {live_rate:,} events/s ({live_rate * PER_EVENT:,} predictions/s)",
                100 * live["cpu"],
                "% of a core",
                stream,
                100 * live["bare_cpu"],
            )
        )
        rows.append(
            _row(
                "monitoring behind at the stream's end",
                live["lag_s"],
                "s",
                stream,
                live["bare_lag_s"],
            )
        )
    return rows


def _row(
    name: str, value: float, unit: str, baseline: str, baseline_value: float
) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 3),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(baseline_value, 3),
        "ratio": round(value / baseline_value, 4) if baseline_value else None,
    }


def main() -> None:
    if sys.argv[1:2] == ["--bare"]:
        asyncio.run(_bare_follow(sys.argv[2], int(sys.argv[3])))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    live_rate = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    for row in run_monitoring_bench(n, live_rate):
        print(
            f"{row['name']}: {row['value']:,.2f} {row['unit']}; "
            f"{row['baseline']}: {row['baseline_value']:,.2f}; ratio {row['ratio']}"
        )


if __name__ == "__main__":
    main()
