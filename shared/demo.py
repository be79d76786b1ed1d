"""`make demo`: replay a stream with an abrupt concept drift through the running stack,
then print what happened: accuracy per model before and after the drift (what the
learner scored, and what serving answered), the drift alerts and where they fired,
the champion's changes (training's policy, with its evidence), the served accuracy
after the drift climbing back window by window, and the throughput.

Run with the stack up (`make up`): `python -m shared.demo [--n 10000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import TopicPartition
from tqdm import tqdm

from shared.http_keys import bearer
from shared.kafka import make_consumer, read_from_start
from shared.pipeline import load_pipeline
from shared.replay import ReplayPlan, plan_messages, replay, rows_from_source
from shared.settings import CommonSettings
from shared.topics import Topics, ensure_topics, partitions_of

__all__ = ["main"]

SERVING = "http://127.0.0.1:8000"
MONITORING = "http://127.0.0.1:8002"


RECOVERY_BIN = 500  # events per row of the recovery table


async def _read_topic(
    bootstrap: str, topic: str, keep: str | None, auth: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every message of `topic` whose event_id starts with `keep` (None: every one),
    read as `auth`."""
    consumer = make_consumer(
        bootstrap_servers=bootstrap, group_id=None, client_id="driftline-demo", **auth
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic, auth)]
        found: list[dict[str, Any]] = []
        for m in await read_from_start(consumer, partitions):
            value = json.loads(m.value)
            if keep is None or str(value.get("event_id") or "").startswith(keep):
                found.append(value)
        return found
    finally:
        await consumer.stop()


def _scored_n(summary: dict[str, Any], model: str) -> int:
    for row in summary.get("models", []):
        if row["model"] == model and row["source"] == "learner":
            return int(row["n"])
    return 0


def _wait_for_monitoring_replay(timeout: float) -> None:
    """Monitoring rebuilds its counts from the topics at start: wait until it has."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{MONITORING}/healthz", timeout=10).json().get("replaying"):
        if time.monotonic() > deadline:
            raise SystemExit("monitoring is still replaying its topics; try again shortly")
        time.sleep(1)


def _learner_n(model: str) -> int:
    return _scored_n(httpx.get(f"{MONITORING}/api/summary", timeout=10).json(), model)


def _wait_for_learner(model: str, before: int, expected: int, timeout: float) -> float:
    """Poll monitoring until this run's learner predictions are all scored; return seconds."""
    started = time.monotonic()
    with tqdm(total=expected, desc="scored by monitoring", unit="ev") as bar:
        while time.monotonic() - started < timeout:
            n = _learner_n(model) - before
            bar.update(n - bar.n)
            if n >= expected:
                break
            time.sleep(1)
    return time.monotonic() - started


def _row_at(moment: str | None, plan: ReplayPlan) -> int | None:
    """The row whose event time `moment` is (the plan's clock), None if unknown."""
    if not moment:
        return None
    return int((datetime.fromisoformat(moment) - plan.start) / plan.step)


def _recovery(
    predictions: list[dict[str, Any]], labels: dict[str, Any], drift_at: int, n: int
) -> list[tuple[int, float, int]]:
    """Served (`stream`) accuracy after the drift per `RECOVERY_BIN` events: (first row,
    accuracy, n)."""
    bins: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for p in predictions:
        if p["source"] != "stream" or p["y_pred"] is None or p["event_id"] not in labels:
            continue
        row = int(p["event_id"].rsplit("-", 1)[1])
        if row >= drift_at:
            cell = bins[(row - drift_at) // RECOVERY_BIN]
            cell[0] += int(p["y_pred"] == labels[p["event_id"]])
            cell[1] += 1
    return [
        (drift_at + k * RECOVERY_BIN, right / total, total)
        for k, (right, total) in sorted(bins.items())
        if total
    ]


def _accuracy_split(
    predictions: list[dict[str, Any]], labels: dict[str, Any], drift_at: int
) -> dict[tuple[str, str], tuple[float, int, float, int]]:
    """(model, source) -> (accuracy before, n before, accuracy after, n after)."""
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for p in predictions:
        event_id, y_pred = p["event_id"], p["y_pred"]
        if event_id not in labels or y_pred is None:
            continue
        row = int(event_id.rsplit("-", 1)[1])
        cell = tally[(p["model"], p["source"])]
        offset = 0 if row < drift_at else 2
        cell[offset] += int(y_pred == labels[event_id])
        cell[offset + 1] += 1
    return {
        key: (c[0] / max(c[1], 1), c[1], c[2] / max(c[3], 1), c[3])
        for key, c in sorted(tally.items())
    }


async def _run(n: int, rate: float | None) -> None:
    settings = CommonSettings()
    pipeline = load_pipeline(settings.pipeline_config)
    topics = Topics(settings.topic_prefix)
    bootstrap = settings.kafka_bootstrap_servers
    # `make up` made the topics; this only checks, as the operator who reads them all
    reader = settings.kafka("operator")
    await ensure_topics(bootstrap, settings.topic_prefix, settings.topic_partitions, reader)
    run = f"demo-{uuid.uuid4().hex[:6]}"
    drift_at = n // 2
    print(
        f"Replaying synth:agrawal-drift ({n} events, concept changes at event {drift_at}) as {run}-*"
    )
    champion = pipeline.models[0].name
    _wait_for_monitoring_replay(timeout=300)
    before = _learner_n(champion)  # monitoring counts every run since the topics began
    rows = rows_from_source("synth:agrawal-drift", n=n)
    # event times end now, 100 ms apart, so the demo sits in time with live traffic
    step = timedelta(milliseconds=100)
    plan = ReplayPlan(run, start=datetime.now(UTC) - n * step, step=step)
    stats = await replay(
        plan_messages(rows, plan),
        bootstrap_servers=bootstrap,
        topics=topics,
        rate=rate,
        total=n,
        auth=settings.kafka("producer"),
    )
    waited = _wait_for_learner(champion, before, n, timeout=300)
    answer = httpx.post(
        f"{SERVING}/predict",
        json={"entity_id": "global", "features": {}},
        headers=bearer("reader"),
        timeout=10,
    )
    await asyncio.sleep(2)  # let the last stream predictions reach the topic

    predictions = await _read_topic(bootstrap, topics.predictions, run, reader)
    labels = {
        m["event_id"]: m["label"] for m in await _read_topic(bootstrap, topics.labels, run, reader)
    }
    alerts = httpx.get(f"{MONITORING}/api/alerts", timeout=10).json()["alerts"]

    print(f"\nAccuracy before / after the drift at event {drift_at} (learner = test-then-train,")
    print("stream = served by the current published version):")
    print(f"  {'model':<16}{'source':<9}{'before':>8}{'n':>7}{'after':>9}{'n':>7}")
    for (model, source), (acc_b, n_b, acc_a, n_a) in _accuracy_split(
        predictions, labels, drift_at
    ).items():
        print(f"  {model:<16}{source:<9}{acc_b:>8.3f}{n_b:>7}{acc_a:>9.3f}{n_a:>7}")

    mine = [a for a in alerts if str(a.get("details", {}).get("event_id", "")).startswith(run)]
    print(f"\nDrift alerts in this run: {len(mine)}")
    for alert in mine:
        event_id = str(alert["details"]["event_id"])
        print(
            f"  {alert['subject']:<24} {alert['detector']}: fired at event {event_id.rsplit('-', 1)[1]}"
        )
    started = datetime.now(UTC) - timedelta(seconds=stats.seconds + waited + 60)
    changes = [
        c
        for c in await _read_topic(bootstrap, topics.champions, None, reader)
        if datetime.fromisoformat(c["changed_at"]) >= started
    ]
    print(f"\nChampion changes during this run: {len(changes)}")
    for change in changes:
        row = _row_at(change.get("event_time"), plan)
        where = f" at event {row}" if row is not None else ""
        print(
            f"  {change['action']} {change['model']}{where} by {change['by']}: {change['reason']}"
        )
    drifts = [
        a
        for a in await _read_topic(bootstrap, topics.alerts, None, reader)
        if a.get("detector", "").startswith("training")
        and datetime.fromisoformat(a["raised_at"]) >= started
    ]
    for alert in drifts:
        details = alert["details"]
        row = _row_at(details.get("event_time"), plan)
        print(
            f"  training saw {alert['subject']}'s errors rise"
            f" {details['error_before']:.2f} -> {details['error_after']:.2f}"
            f" at event {row}: {details['action']}"
        )
    recovery = _recovery(predictions, labels, drift_at, n)
    if recovery:
        print(f"\nServed accuracy after the drift, per {RECOVERY_BIN} events:")
        for first, accuracy, total in recovery:
            bar = "#" * round(accuracy * 40)
            print(
                f"  events {first:>6}-{first + RECOVERY_BIN - 1:<6} {accuracy:6.3f} {bar} ({total})"
            )
        split = _accuracy_split(predictions, labels, drift_at)
        served = [v for (_, source), v in split.items() if source == "stream"]
        level = max((acc_b for acc_b, n_b, _, _ in served if n_b), default=None)
        back = next(
            (f for f, acc, _ in recovery if level is not None and acc >= level - 0.05), None
        )
        if back is not None and level is not None:
            print(
                f"  back within 5 points of the served accuracy before the drift ({level:.3f})"
                f" {back - drift_at + RECOVERY_BIN} events after it"
            )
    if answer.status_code == 200:
        body = answer.json()
        print(
            f"\nPOST /predict -> {body['prediction']} from {body['model']} version {body['model_version']}"
        )
    else:
        print(f"\nPOST /predict -> {answer.status_code} {answer.text}")
    print(
        f"\nThroughput: replayed at {stats.events_per_second:.0f} events/s; "
        f"all {n} scored end to end after {stats.seconds + waited:.1f}s "
        f"({n / (stats.seconds + waited):.0f} events/s through the whole loop)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="events to replay")
    parser.add_argument(
        "--rate", type=float, help="events per second (default: as fast as possible)"
    )
    args = parser.parse_args()
    asyncio.run(_run(args.n, args.rate))


if __name__ == "__main__":
    main()
