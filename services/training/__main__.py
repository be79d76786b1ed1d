"""`python -m services.training`: the training service (admin and metrics HTTP on 8003)."""

from __future__ import annotations

import gc
import sys

import uvicorn

from services.training.app import create_app
from services.training.config import TrainingSettings
from shared import tasks
from shared.logs import configure_logging

# As in monitoring: predictions wait a little for their label (or for the watermark),
# and with Python's default (700, 10, 10) they reach the oldest generation, whose full
# collections then walk the learner's whole state again and again. Young generations
# this size let them die young instead.
GC_THRESHOLDS = (50_000, 20, 100)


def main() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    settings = TrainingSettings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    sys.exit(tasks.exit_status())  # 1: its loop failed (see shared.tasks)


if __name__ == "__main__":
    main()
