"""The whole loop, sustained, and how fresh the online store is at 1,000 events/s.

`run_sustained_bench(rates, hold_s)` starts all five services of one `BenchStack`
(`logreg` on River's Agrawal rows, as the learning bench) and climbs the rates in
order: at each, events and their labels flow at that constant rate (`flowing`) for a
warm-up (`WARM_UP_S`, the first 10 s, while the groups absorb the step up; not judged)
and then `hold_s` seconds, while every consumer group's lag is sampled. A rate is
sustained when every group's judged lag (below) stayed under one second of events
(`MAX_LAG_S`) for the whole hold and the publisher kept the rate; the climb stops at the first rate
that fails. The figure's baseline is a bare aiokafka relay over the run's own
`events.raw`, measured after the stack stops (the machine's speed for one hop, from
the same run); issue 13's target (3,000 events/s) is in `extra`, not measured.

Lag is what a lag tool shows: end offsets minus the group's committed offsets,
summed per topic, sampled every `SAMPLE_S`, over that topic's inflow during the step
(messages per second), so seconds of events; a group reading two topics counts the
worse. Every group commits at least every half second (ingestion and serving's scorer
every batch, the others every 0.5 s), so this lag is how far behind each service is.
Each step reports, per group, the maximum lag, the longest time without a commit,
and each service's CPU.

Freshness: while events flow at 1,000/s (before the climb), probe events for new
entities (one event each, `PROBE_SPACING_S` apart) go to `events.raw`; the time from
sending one until its entity's Redis row (`shared.feature_store`'s layout) holds its
event_id is polled every millisecond or so. The baseline, interleaved with the probes
in the same stream, is one bare Kafka hop: the same producer's send until a plain
consumer has the record. The loop's path is two hops (ingestion, features) and a
Redis write. Meanwhile, training's and serving's counts of events learned are sampled
every 50 ms: each time the served model changes, how long ago training had learned
that many events (what a learned label takes to be served).

    python -m benchmarks.sustained            # 1,000 to 6,000 events/s, 120 s holds
    python -m benchmarks.sustained --quick    # 30 s holds, 100 probes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis
from tqdm import tqdm

from benchmarks.learning import fresh_stack, raw_messages, synthetic_rows, write_pipeline
from benchmarks.relay import relay_rate
from benchmarks.report import Row, print_table, progress, write_results
from benchmarks.stack import ADMIN_KAFKA, BOOTSTRAP, REDIS_URL, BenchStack, process_cpu_seconds
from benchmarks.stream import flowing
from shared.kafka import make_consumer, make_producer
from shared.topics import Topics, partitions_of

__all__ = ["GroupLag", "Offsets", "lag_seconds", "main", "run_sustained_bench"]

RATES = (1000, 2000, 3000, 4000, 5000, 6000)
TARGET = 3000  # issue 13's figure for the whole loop, events/s
MAX_LAG_S = 1.0  # a group keeps up while its lag stays under this many seconds of events
WARM_UP_S = 10.0  # the start of each step, not judged
SAMPLE_S = 0.1  # between two lag samples
PUBLISHED_SHARE = 0.97  # a step whose publisher fell short of this share of the rate fails
FRESH_RATE = 1000
PROBE_SPACING_S = 0.1
PROBE_TIMEOUT_S = 5.0  # a probe not stored by then counts at this figure
POLL_S = 0.001
CHECKPOINT_S = 30.0  # training's default checkpoint_seconds: a new version that often
RELAY_N = 100_000
PORT_SHIFT = 1000  # away from the other benches' ports, so they may run meanwhile
RESULTS = Path(".bench/sustained.json")  # beside make bench's results.json, not over it
SERVICES = ("ingestion", "features", "training", "serving", "monitoring")


@dataclass(frozen=True)
class Group:
    """One consumer group of the stack and the topics it reads."""

    service: str
    group_id: str
    topics: tuple[str, ...]


def _groups(stack: BenchStack) -> list[Group]:
    t = Topics(stack.prefix)
    reads = {
        "ingestion": (t.events_raw, t.labels_raw),
        "features": (t.events,),  # faust: the app id is the group
        "training": (t.features, t.labels),
        "serving": (t.features, t.labels),  # the stream scorer's group (the replica's)
        "monitoring": (t.predictions, t.labels),
    }
    return [Group(name, stack.env(name)["GROUP_ID"], topics) for name, topics in reads.items()]


@dataclass(frozen=True)
class Offsets:
    """End offsets of the watched partitions and each group's committed ones, at `at`."""

    at: float
    ends: dict[TopicPartition, int]
    committed: dict[str, dict[TopicPartition, int]]  # by group id

    def end(self, topic: str) -> int:
        return sum(end for tp, end in self.ends.items() if tp.topic == topic)

    def done(self, group_id: str) -> int:
        """The sum of the group's committed offsets (it moves at each commit)."""
        return sum(self.committed.get(group_id, {}).values())

    def behind(self, group_id: str, topic: str) -> int:
        """Messages of `topic` past the group's commits (topics here start empty)."""
        done = self.committed.get(group_id, {})
        return sum(
            max(0, end - done.get(tp, 0)) for tp, end in self.ends.items() if tp.topic == topic
        )


def lag_seconds(group: Group, start: Offsets, now: Offsets, rate: float) -> float:
    """The group's lag at `now` in seconds of its topics' inflow since `start` (the worse
    topic); a topic with no inflow yet counts at `rate`.

    >>> tp = TopicPartition("t", 0)
    >>> start = Offsets(0.0, {tp: 0}, {})
    >>> lag_seconds(Group("s", "g", ("t",)), start, Offsets(2.0, {tp: 2000}, {"g": {tp: 1500}}), 1)
    0.5
    """
    elapsed = max(now.at - start.at, SAMPLE_S)
    worst = 0.0
    for topic in group.topics:
        inflow = (now.end(topic) - start.end(topic)) / elapsed or rate
        worst = max(worst, now.behind(group.group_id, topic) / inflow)
    return worst


@dataclass
class GroupLag:
    """One group's lag through a step, seconds of events; judged after the warm-up.

    >>> lag = GroupLag()
    >>> for t, x, done in [(0.0, 3.0, 0), (1.0, 0.1, 900), (2.0, 0.9, 900), (4.0, 1.2, 2900)]:
    ...     lag.add(t, x, done, judged=t >= 1)
    >>> lag.max, lag.over_at, lag.uncommitted_max
    (1.2, 4.0, 2.0)
    """

    max: float = 0.0
    over_at: float | None = None  # seconds into the step it first reached MAX_LAG_S
    done: int = -1  # the committed offsets' sum at the latest sample
    commit_at: float = 0.0  # when that sum last moved
    uncommitted_max: float = 0.0  # the longest seen without a commit

    def add(self, t: float, lag_s: float, done: int, *, judged: bool) -> None:
        """Record the lag sampled `t` s into the step and the group's committed offsets' sum."""
        if done != self.done:
            self.done, self.commit_at = done, t
        if judged:
            self.max = max(self.max, lag_s)
            self.uncommitted_max = max(self.uncommitted_max, t - self.commit_at)
            if lag_s >= MAX_LAG_S and self.over_at is None:
                self.over_at = t


class LagReader:
    """Reads `Offsets` for every group: committed ones first, so lag is never understated."""

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self.admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA)
        self.consumer = make_consumer(
            bootstrap_servers=BOOTSTRAP,
            **ADMIN_KAFKA,
            group_id=None,
            client_id="driftline-bench-lag",
        )
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()
        for topic in sorted({t for g in self.groups for t in g.topics}):
            self.partitions += [
                TopicPartition(topic, p) for p in await partitions_of(BOOTSTRAP, topic, ADMIN_KAFKA)
            ]

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def read(self) -> Offsets:
        committed = {}
        for group in self.groups:
            found = await self.admin.list_consumer_group_offsets(group.group_id)
            committed[group.group_id] = {tp: max(0, meta.offset) for tp, meta in found.items()}
        ends = await self.consumer.end_offsets(self.partitions)
        return Offsets(time.monotonic(), dict(ends), committed)


class LiveStreams:
    """Events and labels timed from now at a rate, their ids never repeating across calls."""

    def __init__(self, rows: list[tuple[dict[str, Any], Any]]) -> None:
        self.rows = rows
        self.next_id = 0

    def make(self, rate: int, seconds: float) -> tuple[list, list]:
        n = int(rate * seconds)
        picked = itertools.islice(itertools.cycle(self.rows), n)
        streams = raw_messages(picked, start_now=True, rate=rate, first=self.next_id)
        self.next_id += n
        return streams


@dataclass(frozen=True)
class Step:
    """One rate of the climb."""

    rate: int
    published_per_s: float
    lags: dict[str, GroupLag]
    cores: dict[str, float]  # CPU seconds per second, per service and the bench itself

    @property
    def sustained(self) -> bool:
        kept_up = all(lag.max < MAX_LAG_S for lag in self.lags.values())
        return kept_up and self.published_per_s >= PUBLISHED_SHARE * self.rate

    def summary(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "sustained": self.sustained,
            "published_per_s": round(self.published_per_s),
            "max_lag_s": {k: round(v.max, 3) for k, v in self.lags.items()},
            "longest_without_commit_s": {
                k: round(v.uncommitted_max, 1) for k, v in self.lags.items()
            },
            "first_over_at_s": {
                k: round(v.over_at, 1) for k, v in self.lags.items() if v.over_at is not None
            },
            "cpu_cores": {k: round(v, 2) for k, v in self.cores.items()},
        }


def _cpu(stack: BenchStack) -> dict[str, float]:
    used = {name: s.cpu_seconds() for name, s in stack.services.items()}
    infra = {name: sum(map(process_cpu_seconds, pids)) for name, pids in _infra_pids().items()}
    return used | infra | {"bench": time.process_time()}


def _infra_pids() -> dict[str, list[int]]:
    """The local broker's and Redis's processes (none found: not reported)."""
    found: dict[str, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = stat.read_bytes().split(b"\0")
            name = (
                "kafka"
                if b"kafka.Kafka" in args
                else "redis"
                if b"redis-server" in args[0]
                else None
            )
            if name:
                found.setdefault(name, []).append(int(stat.parent.name))
    return found


def _check_alive(stack: BenchStack) -> None:
    for service in stack.services.values():
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited; see {service.log}")


def _show(bar: tqdm, rate: int, t: float, lags: dict[str, float]) -> None:
    bar.update(int(rate * t) - bar.n)
    bar.set_postfix_str(" ".join(f"{k} {v:.2f}s" for k, v in lags.items()), refresh=False)


def _record(
    lags: dict[str, GroupLag], groups: list[Group], start: Offsets, now: Offsets, rate: int
) -> dict[str, float]:
    """Add the sample `now` to each group's lag; return the lags."""
    t = now.at - start.at
    sampled = {}
    for g in groups:
        sampled[g.service] = lag = lag_seconds(g, start, now, rate)
        lags[g.service].add(t, lag, now.done(g.group_id), judged=t >= WARM_UP_S)
    return sampled


async def _watch(
    stack: BenchStack, reader: LagReader, rate: int, span: float
) -> tuple[dict[str, GroupLag], float]:
    """Sample every group's lag for `span` s; (the lags, events published per second)."""
    start = now = await reader.read()
    lags = {g.service: GroupLag() for g in reader.groups}
    with progress(int(rate * span), f"{rate:,} events/s") as bar:
        while now.at - start.at < span:
            await asyncio.sleep(SAMPLE_S)
            now = await reader.read()
            _show(bar, rate, now.at - start.at, _record(lags, reader.groups, start, now, rate))
            _check_alive(stack)
    raw = Topics(stack.prefix).events_raw
    return lags, (now.end(raw) - start.end(raw)) / (now.at - start.at)


async def _step(
    stack: BenchStack, reader: LagReader, streams: LiveStreams, rate: int, hold_s: float
) -> Step:
    span = WARM_UP_S + hold_s
    events, labels = streams.make(rate, span + 5)  # the stream outlasts the watch
    before = _cpu(stack)
    with flowing(Topics(stack.prefix), events, labels, rate):
        lags, published = await _watch(stack, reader, rate, span)
    cores = {name: (used - before[name]) / span for name, used in _cpu(stack).items()}
    return Step(rate, published, lags, cores)


def _listed(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in figures.items())


def _describe(step: Step) -> str:
    s = step.summary()
    verdict = "sustained" if step.sustained else "NOT sustained"
    return (
        f"  {step.rate:,} events/s: {verdict} (published {s['published_per_s']:,}/s)\n"
        f"    max lag s: {_listed(s['max_lag_s'])}\n"
        f"    longest without a commit, s: {_listed(s['longest_without_commit_s'])}\n"
        f"    CPU cores: {_listed(s['cpu_cores'])}"
    )


async def _climb(
    stack: BenchStack, streams: LiveStreams, rates: Sequence[int], hold_s: float
) -> list[Step]:
    """Each rate in turn until one is not sustained."""
    reader = LagReader(_groups(stack))
    await reader.start()
    steps: list[Step] = []
    try:
        for rate in rates:
            steps.append(await _step(stack, reader, streams, rate, hold_s))
            print(_describe(steps[-1]), flush=True)
            if not steps[-1].sustained:
                break
    finally:
        await reader.stop()
    return steps


async def _hop_consumer(topic: str) -> AIOKafkaConsumer:
    """A plain consumer at the end of a new one-partition `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    consumer = make_consumer(
        bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA, group_id=None, client_id="driftline-bench-hop"
    )
    await consumer.start()
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    await consumer.seek_to_end(partition)
    return consumer


async def _probe_hop(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, topic: str) -> float:
    """Milliseconds from sending a record to `topic` until `consumer` has it."""
    started = time.perf_counter()
    await producer.send(topic, b"probe")
    await consumer.getone()
    return (time.perf_counter() - started) * 1000


async def _probe_store(
    producer: AIOKafkaProducer, redis: Redis, topics: Topics, i: int, row: tuple[dict, Any]
) -> float:
    """Milliseconds from sending probe event `i` (a new entity) to `events.raw` until
    its entity's Redis row holds it; its label follows."""
    entity = f"probe{i}"
    key, at = entity.encode(), datetime.now(UTC).isoformat()
    event = {"event_id": entity, "event_time": at, "entity_id": entity, "features": row[0]}
    stored = f"driftline:{topics.prefix}features:{entity}"
    started = time.perf_counter()
    await producer.send(topics.events_raw, orjson.dumps(event), key=key)
    while (waited := time.perf_counter() - started) < PROBE_TIMEOUT_S:
        if await redis.hget(stored, "event_id") == key:
            break
        await asyncio.sleep(POLL_S)
    label = {"event_id": entity, "label": row[1], "label_time": at}
    await producer.send(topics.labels_raw, orjson.dumps(label), key=key)
    return min(waited, PROBE_TIMEOUT_S) * 1000


async def _served_behind(training: str, serving: str, until: asyncio.Event) -> list[float]:
    """Ms from training having learned n events (`logreg`) until serving serves a model
    that learned n, for each change of the served model seen (sampled every 50 ms)."""
    reached: list[tuple[int, float]] = []  # (events learned, when first seen)
    delays: list[float] = []
    served: int | None = None
    async with httpx.AsyncClient(timeout=2) as client:
        while not until.is_set():
            trained = (await client.get(f"{training}/api/models")).json()["models"]
            learned = next(m["n_learned"] for m in trained if m["name"] == "logreg")
            if not reached or learned > reached[-1][0]:
                reached.append((learned, time.perf_counter()))
            now = (await client.get(f"{serving}/models")).json()["champion"]["n_learned"]
            if now is not None and now != served:
                first = next((t for n, t in reached if n >= now), None)
                if served is not None and first is not None:
                    delays.append((time.perf_counter() - first) * 1000)
                served = now
            await asyncio.sleep(0.05)
    return delays


async def _probe(
    stack: BenchStack, rows: list[tuple[dict, Any]], probes: int, bar: tqdm
) -> tuple[list[float], list[float], list[float]]:
    """(ms to the Redis row, ms for a bare hop) for each of `probes` probes, and the
    served model's delays behind the learner meanwhile."""
    prefix = stack.prefix
    topics, hop = Topics(prefix), f"{prefix}bench.hop"
    producer = make_producer(BOOTSTRAP, client_id="driftline-bench-probe", **ADMIN_KAFKA)
    redis = Redis.from_url(REDIS_URL)
    consumer = await _hop_consumer(hop)
    await producer.start()
    fresh: list[float] = []
    bare: list[float] = []
    done = asyncio.Event()
    urls = stack.services["training"].url, stack.services["serving"].url
    behind = asyncio.create_task(_served_behind(*urls, done))
    try:
        for i in range(probes):
            started = time.monotonic()
            fresh.append(await _probe_store(producer, redis, topics, i, rows[i % len(rows)]))
            bare.append(await _probe_hop(producer, consumer, hop))
            bar.update(1)
            await asyncio.sleep(max(0.0, PROBE_SPACING_S - (time.monotonic() - started)))
    finally:
        done.set()
        delays = await behind
        await producer.stop()
        await consumer.stop()
        await redis.aclose()
    return fresh, bare, delays


def _freshness(
    stack: BenchStack, streams: LiveStreams, probes: int
) -> tuple[list[float], list[float], list[float]]:
    """Probe while 1,000 events/s flow, once serving is ready and a warm-up has passed."""
    budget = 120 + WARM_UP_S + probes * PROBE_SPACING_S * 2  # readiness, warm-up, probes
    events, labels = streams.make(FRESH_RATE, budget)
    with flowing(Topics(stack.prefix), events, labels, FRESH_RATE):
        stack.wait_ready(stack.services["serving"], timeout_s=120)
        time.sleep(WARM_UP_S)
        with progress(probes, f"freshness probes at {FRESH_RATE:,} events/s") as bar:
            return asyncio.run(_probe(stack, streams.rows, probes, bar))


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _freshness_rows(fresh: list[float], bare: list[float]) -> list[Row]:
    extra = {
        "probes": len(fresh),
        "not_stored_in_5s": sum(ms >= PROBE_TIMEOUT_S * 1000 for ms in fresh),
        "max_ms": round(max(fresh), 1),
        "target_p99_ms": 50,
    }
    name = f"freshness {{}}, events.raw to Redis row at {FRESH_RATE:,} events/s"
    base = "bare Kafka hop, send to consume"
    return [
        Row(name.format("p50"), statistics.median(fresh), "ms", base, statistics.median(bare)),
        Row(name.format("p99"), _percentile(fresh, 99), "ms", base, _percentile(bare, 99), extra),
    ]


def _served_row(delays: list[float]) -> list[Row]:
    """How far the served model trails the learner (baseline: versions alone, configured)."""
    if len(delays) < 2:
        return []
    extra = {"swaps_seen": len(delays), "max_ms": round(max(delays)), "target_p99_ms": 1000}
    return [
        Row(
            f"label learned to served (p99, {FRESH_RATE:,} events/s)",
            _percentile(delays, 99),
            "ms",
            "versions alone: checkpoint_seconds (configured)",
            CHECKPOINT_S * 1000,
            extra,
        )
    ]


def _sustained_row(steps: list[Step], relay: float, hold_s: float, peaks: dict) -> Row:
    best = max((s.rate for s in steps if s.sustained), default=0)
    extra = {
        "target_events_per_s": TARGET,
        "every_rate_sustained": all(s.sustained for s in steps),  # then `best` is a floor
        "hold_s": hold_s,
        "warm_up_s": WARM_UP_S,
        "max_lag_allowed_s": MAX_LAG_S,
        "steps": [s.summary() for s in steps],
        "peak_rss_mb": peaks,
    }
    name = "whole loop sustained (every group's lag at commit < 1 s)"
    return Row(name, best, "events/s", "bare aiokafka relay (events.raw)", relay, extra)


async def _size(topic: str) -> int:
    """Messages in `topic` (it started empty): the sum of its end offsets."""
    consumer = make_consumer(
        bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA, group_id=None, client_id="driftline-bench-size"
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for p in await partitions_of(BOOTSTRAP, topic, ADMIN_KAFKA)
        ]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def _forget(prefix: str) -> None:
    """Delete the run's topics and Redis keys (a full run leaves millions of dedup ids)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **ADMIN_KAFKA)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()
    redis = Redis.from_url(REDIS_URL)
    try:
        chunk: list[bytes] = []
        async for key in redis.scan_iter(match=f"driftline:{prefix}*", count=10_000):
            chunk.append(key)
            if len(chunk) == 10_000:
                await redis.unlink(*chunk)
                chunk.clear()
        if chunk:
            await redis.unlink(*chunk)
    finally:
        await redis.aclose()


def run_sustained_bench(
    rates: Sequence[int] = RATES, hold_s: float = 120.0, *, probes: int = 200
) -> list[Row]:
    """Freshness at 1,000 events/s, then the climb; the stack's topics and keys go after."""
    rows = synthetic_rows(20_000)
    pipeline = write_pipeline(
        BenchStack.work / "pipeline-sustained.yaml", ["logreg"], sorted(rows[0][0])
    )
    stack, topics = fresh_stack(pipeline)
    stack.ports = {name: port + PORT_SHIFT for name, port in stack.ports.items()}
    streams = LiveStreams(rows)
    try:
        with stack.running():
            for name in SERVICES:
                stack.start(name)
            fresh, bare, delays = _freshness(stack, streams, probes)
            steps = asyncio.run(_climb(stack, streams, rates, hold_s))
            peaks = {k: round(s.peak_rss() / 2**20) for k, s in stack.services.items()}
        relay = relay_rate(topics.events_raw, min(RELAY_N, asyncio.run(_size(topics.events_raw))))
    finally:
        asyncio.run(_forget(stack.prefix))
    out = [_sustained_row(steps, relay, hold_s, peaks), *_freshness_rows(fresh, bare)]
    return out + _served_row(delays)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sustained", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="30 s holds, 100 probes")
    parser.add_argument(
        "--rates",
        type=lambda text: [int(r) for r in text.split(",")],
        default=list(RATES),
        help="ascending events/s, comma-separated",
    )
    args = parser.parse_args()
    started = time.monotonic()
    found = run_sustained_bench(
        args.rates, 30.0 if args.quick else 120.0, probes=100 if args.quick else 200
    )
    print(f"\ndone in {time.monotonic() - started:.0f} s\n")
    write_results(found, print_table(found), RESULTS)
    print(f"\nwritten to {RESULTS} (each step's figures under extra)")


if __name__ == "__main__":
    main()
