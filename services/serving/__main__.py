"""`python -m services.serving`: the serving service on port 8000.

One supervisor process (this one) binds the port and starts `WORKERS` HTTP worker
processes plus the stream scorer process, restarting any that exits; see
`services.serving.processes`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys

from services.serving.app import create_app
from services.serving.config import ServingSettings
from services.serving.processes import (
    ChildSpec,
    ServerOptions,
    StreamStatus,
    Supervisor,
    bind_socket,
    metrics_dir,
    run_http_worker,
)
from services.serving.stream_process import MAX_IDLE_S, run_stream_process
from shared.logs import configure_logging
from shared.pipeline import load_pipeline
from shared.topics import ensure_topics

log = logging.getLogger("services.serving")


def children(
    settings: ServingSettings, options: ServerOptions, status: StreamStatus
) -> list[ChildSpec]:
    """The HTTP workers on one socket, and the stream scorer (unless disabled)."""
    sock = bind_socket(options)
    parent = os.getpid()
    specs = [
        ChildSpec(
            f"http-{i}",
            run_http_worker,
            (
                functools.partial(create_app, settings, status, f"http-{i}"),
                options,
                sock,
                parent,
                settings.log_level,
            ),
        )
        for i in range(options.workers)
    ]
    if status.enabled:
        specs.append(
            ChildSpec(
                "stream", run_stream_process, (settings, status, parent), status.count_restart
            )
        )
    return specs


def main() -> None:
    settings = ServingSettings()
    configure_logging(settings.log_level)
    load_pipeline(settings.pipeline_config)  # fail fast on a bad config, before any child
    asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap_servers,
            settings.topic_prefix,
            settings.topic_partitions,
            settings.kafka(),
        )
    )
    options = ServerOptions(host=settings.host, port=settings.port, workers=settings.workers)
    status = StreamStatus(enabled=settings.stream_scoring)
    # the first start may read the whole `models` topic before the scorer polls
    status.extend(MAX_IDLE_S + settings.models_catch_up_timeout_s)
    with metrics_dir():
        supervisor = Supervisor(children(settings, options, status))
        log.info(
            "serving on http://%s:%d with %d HTTP workers%s",
            options.host,
            options.port,
            options.workers,
            " and the stream scorer" if status.enabled else "",
        )
        sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
