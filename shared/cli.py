"""`driftline`: the operator's command line.

driftline topics                         create the topics of DESIGN.md
driftline replay weather.csv --label-column target --label-delay 10 --rate 500
driftline replay synth:agrawal-drift --n 20000
driftline replay river:Phishing --label-delay 5m
driftline resign --old-key-file OLD      re-sign what Redis holds with the new signing key
driftline models list|promote|unpin|rollback   the champion (see `shared.models_cli`)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from shared import models_cli
from shared.durations import parse_duration
from shared.replay import SYNTHETIC, ReplayPlan, plan_messages, replay, rows_from_source
from shared.resign import Resigned, resign
from shared.settings import CommonSettings
from shared.signing import SigningKey, SigningSettings
from shared.topics import Topics, ensure_topics

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("topics", help="create every missing topic")

    rp = commands.add_parser("replay", help="replay a data set into events.raw and labels.raw")
    rp.add_argument("source", help=f"a CSV path, river:<Dataset> or synth:<{'|'.join(SYNTHETIC)}>")
    rp.add_argument("--label-column", default="target", help="CSV column holding the label")
    rp.add_argument("--entity-column", help="CSV column holding the entity id (default: none)")
    rp.add_argument("--time-column", help="CSV column holding the event time (default: a clock)")
    rp.add_argument(
        "--label-delay",
        default="0",
        help="rows (10) or a duration (90s, 5m, 1h) until a row's label arrives (default 0)",
    )
    rp.add_argument("--start", default="2020-01-01T00:00:00+00:00", help="clock start (RFC 3339)")
    rp.add_argument("--step", default="1s", help="clock step between rows (default 1s)")
    rp.add_argument("--n", type=int, help="replay at most N rows (synthetic streams: length)")
    rp.add_argument("--seed", type=int, default=42, help="seed of a synthetic stream")
    rp.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    rp.add_argument("--id-prefix", help="event_id prefix (default: source name + a run id)")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rs = commands.add_parser(
        "resign",
        help="re-sign the registry, checkpoints and snapshot under the signing key (rotation)",
    )
    rs.add_argument(
        "--old-key-file",
        required=True,
        type=Path,
        help="a file holding the key they are signed with now; the new key is"
        " DRIFTLINE_SIGNING_KEY (or its _FILE, or .secrets/signing_key)",
    )
    models_cli.add_parser(commands)
    return parser


def _resign(args: argparse.Namespace) -> int:
    settings = SigningSettings()
    old = SigningKey(args.old_key_file.read_text().strip().encode())
    new = settings.signing_key()
    if old == new:
        print("driftline resign: the old key is the signing key already", file=sys.stderr)
        return 2

    async def run() -> Resigned:
        redis = settings.redis()
        try:
            return await resign(redis, settings.topic_prefix, old, new)
        finally:
            await redis.aclose()

    done = asyncio.run(run())
    counts = done.counts
    print(
        f"re-signed {counts['resigned']}, already under the new key {counts['current']},"
        f" signed with neither key {counts['unverified']} (left as they are)"
    )
    for name in done.unverified:
        print(f"  not signed with the old key: {name}", file=sys.stderr)
    return 1 if done.unverified else 0


def _replay(args: argparse.Namespace, settings: CommonSettings) -> int:
    name = args.source.split(":", 1)[1] if ":" in args.source else Path(args.source).stem
    plan = ReplayPlan(
        id_prefix=args.id_prefix or f"{name}-{uuid.uuid4().hex[:6]}",
        start=datetime.fromisoformat(args.start).astimezone(UTC),
        step=parse_duration(args.step),
        label_delay=args.label_delay,
        entity_column=args.entity_column,
        time_column=args.time_column,
    )
    rows = rows_from_source(args.source, label_column=args.label_column, n=args.n, seed=args.seed)
    topics = Topics(settings.topic_prefix)
    # as the outside producer, unless KAFKA_USERNAME names another principal
    writer = None if "kafka_username" in settings.model_fields_set else "producer"
    stats = asyncio.run(
        replay(
            plan_messages(rows, plan),
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topics=topics,
            rate=args.rate,
            total=args.n,
            progress=not args.quiet,
            auth=settings.kafka(writer),
        )
    )
    print(
        f"replayed {stats.events} events and {stats.labels} labels "
        f"(ids {plan.id_prefix}-0..) in {stats.seconds:.1f}s, {stats.events_per_second:.0f} events/s",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "models":
        return models_cli.run(args)
    if args.command == "resign":
        try:
            return _resign(args)
        except (ValueError, OSError) as exc:  # no key, a short one, an unreadable file
            print(f"driftline resign: {exc}", file=sys.stderr)
            return 2
    settings = CommonSettings()
    if args.command == "topics":
        created = asyncio.run(
            ensure_topics(
                settings.kafka_bootstrap_servers,
                settings.topic_prefix,
                settings.topic_partitions,
                settings.kafka("admin"),
            )
        )
        print(f"created: {', '.join(created) or 'none (all exist)'}")
        return 0
    try:
        return _replay(args, settings)
    except (ValueError, FileNotFoundError) as exc:
        print(f"driftline replay: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
