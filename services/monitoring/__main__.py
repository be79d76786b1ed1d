"""`python -m services.monitoring`: the monitoring service on port 8002."""

from __future__ import annotations

import gc
import os
import sys

import uvicorn

from services.monitoring.app import create_app
from services.monitoring.config import MonitoringSettings
from shared import tasks
from shared.logs import configure_logging

# Python's default (700, 10, 10) promotes predictions that wait a little for their
# label (or for the watermark) to the oldest generation, and then walks the whole
# join state again and again in full collections: about 40% of the CPU in the
# replay benchmark. Young generations this size let them die young instead.
GC_THRESHOLDS = (50_000, 20, 100)


def main() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    settings = MonitoringSettings()
    os.nice(settings.niceness)  # before any thread starts: Linux's nice is per thread
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    sys.exit(tasks.exit_status())  # 1: its loop failed (see shared.tasks)


if __name__ == "__main__":
    main()
