"""`python -m services.features`: the features worker, its web on port 6066."""

from __future__ import annotations

import asyncio
import gc

import faust

from services.features.app import FeaturesService
from services.features.config import FeaturesSettings
from shared import tasks
from shared.logs import configure_logging
from shared.topics import Topics, ensure_topics, partitions_of


async def _prepare(settings: FeaturesSettings) -> int:
    """Create missing topics before faust subscribes; return the partitions of `events`."""
    bootstrap = settings.kafka_bootstrap_servers
    auth = settings.kafka()
    await ensure_topics(bootstrap, settings.topic_prefix, settings.topic_partitions, auth)
    return len(await partitions_of(bootstrap, Topics(settings.topic_prefix).events, auth))


# Python's default (700, 10, 10) walks the young generation every 700 new containers,
# while a batch keeps each event's window state (a handful of lists) alive until its
# rows are written: the states of a 2,000-event batch were walked again and again.
# Young generations this size let a batch's garbage go in few, short collections.
GC_THRESHOLDS = (50_000, 20, 100)


def main() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    settings = FeaturesSettings()
    configure_logging(settings.log_level)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    partitions = loop.run_until_complete(_prepare(settings))
    service = FeaturesService(settings, partitions=partitions)
    worker = faust.Worker(service.app, loglevel=settings.log_level, loop=loop)
    try:
        worker.execute_from_commandline()
    except SystemExit as done:  # faust exits 0 on SIGTERM, also one an essential task sent
        raise SystemExit(tasks.exit_status() or done.code) from None


if __name__ == "__main__":
    main()
