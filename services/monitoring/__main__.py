"""`python -m services.monitoring`: the monitoring service on port 8002."""

from __future__ import annotations

import uvicorn

from services.monitoring.app import create_app
from services.monitoring.config import MonitoringSettings
from shared.logs import configure_logging


def main() -> None:
    settings = MonitoringSettings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
