"""`python -m services.serving`: the serving service on port 8000."""

from __future__ import annotations

import uvicorn

from services.serving.app import create_app
from services.serving.config import ServingSettings
from shared.logs import configure_logging


def main() -> None:
    settings = ServingSettings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
