"""`python -m services.training`: the training service (admin and metrics HTTP on 8003)."""

from __future__ import annotations

import uvicorn

from services.training.app import create_app
from services.training.config import TrainingSettings
from shared.logs import configure_logging


def main() -> None:
    settings = TrainingSettings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
