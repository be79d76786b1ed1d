"""`python -m services.ingestion`: the ingestion service on port 8001."""

from __future__ import annotations

import gc
import sys

import uvicorn

from services.ingestion.app import create_app
from services.ingestion.config import IngestionSettings
from shared import tasks
from shared.logs import configure_logging

# A batch's thousands of messages live until it is committed: with Python's default
# (700, 10, 10) the collector walks the live part of the batch every 700 new objects
# and again in older generations, 0.2-0.3 s of GC in a 60k-event run; young
# generations this size let them die young first (0.1 s, most of it before start-up
# is frozen). Monitoring does the same.
GC_THRESHOLDS = (50_000, 20, 100)


def main() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    settings = IngestionSettings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    sys.exit(tasks.exit_status())  # 1: its loop failed (see shared.tasks)


if __name__ == "__main__":
    main()
