"""Ingestion settings, from the environment."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from services.ingestion.handlers import DEFAULT_MAX_FUTURE_S
from shared.http_keys import require_key
from shared.settings import CommonSettings
from shared.validation import DEFAULT_MAX_BYTES

__all__ = ["IngestionSettings"]


class IngestionSettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = 8001
    kafka_username: str = "ingestion"
    group_id: str = "driftline-ingestion"
    # A second message with an event_id seen within this many seconds is a duplicate
    # (ids are kept up to 1.25 times as long; Redis holds rate x 1.25 x window x ~56 B).
    dedup_window_s: int = Field(default=24 * 3600, ge=4)
    # Larger raw messages are dead-lettered with code too_large.
    max_message_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1024)
    # An event or label time further ahead of the wall clock is dead-lettered.
    max_future_s: float = Field(default=DEFAULT_MAX_FUTURE_S, gt=0)
    # Most items one POST may carry.
    max_batch_items: int = Field(default=1000, ge=1)
    # Largest POST body accepted (a batch of items).
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Raw records per poll: validated, produced and remembered as one batch.
    batch_size: int = Field(default=2000, ge=1)
    # The key POST /events and POST /labels need (`Authorization: Bearer <key>`), or a
    # file holding it (compose's secret); else .secrets/writer_key. No key: no start.
    driftline_writer_key: SecretStr | None = None
    driftline_writer_key_file: str | None = None

    @model_validator(mode="after")
    def _writer_key(self) -> IngestionSettings:
        self.driftline_writer_key = require_key(
            "writer", self.driftline_writer_key, self.driftline_writer_key_file
        )
        return self
