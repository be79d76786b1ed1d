"""Serving settings, from the environment."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings

__all__ = ["ServingSettings"]


class ServingSettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    # Consumer group of the `features` scorer; the `models` reader uses no group.
    group_id: str = "driftline-serving"
    # Most feature vectors scored (and predictions produced) per batch.
    batch_size: int = Field(default=500, ge=1)
    # TTL the online store is opened with (serving only reads; kept for the store's config).
    feature_ttl_s: float = Field(default=7 * 24 * 3600, gt=0)
    # HTTP predictions being published at once; past it a prediction is dropped and counted.
    max_pending_publishes: int = Field(default=10_000, ge=1)
    # Longest the start-up waits to read the `models` topic to its end.
    models_catch_up_timeout_s: float = Field(default=30.0, gt=0)
