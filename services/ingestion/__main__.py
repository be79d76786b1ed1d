"""`python -m services.ingestion`: the ingestion service on port 8001."""

from __future__ import annotations

import uvicorn

from services.ingestion.app import create_app
from services.ingestion.config import IngestionSettings
from shared.logs import configure_logging


def main() -> None:
    settings = IngestionSettings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
