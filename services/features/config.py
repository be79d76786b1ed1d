"""Features settings, from the environment."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings

__all__ = ["FeaturesSettings"]


class FeaturesSettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = 6066
    kafka_username: str = "features"
    # The faust app id, hence the consumer group and the state changelog topic
    # (`{app_id}-entity_state-changelog`). Empty: f"{TOPIC_PREFIX}driftline-features".
    # Changing it starts from empty state.
    group_id: str = ""
    # Live features of an entity not seen for this long expire from Redis.
    feature_ttl_s: float = Field(default=7 * 24 * 3600, gt=0)
    # Most entries kept in one entity's window state (the oldest go first).
    max_state_entries: int = Field(default=10_000, ge=1)
    # Events handled (and written to Redis in one pipeline) per batch, and the
    # longest a partial batch waits for more (a busy stream fills batches while the
    # last one is handled; a wait only delays the events in hand).
    batch_size: int = Field(default=2000, ge=1)
    batch_within_s: float = Field(default=0.002, gt=0)
    # A worker silent this long leaves the consumer group (its partitions move on).
    session_timeout_s: float = Field(default=10, gt=0)
    # A table recovery that reads nothing for this long (faust's changelog reader can
    # stall after a broker restart) stops the worker, and its supervisor restarts it.
    recovery_stall_s: float = Field(default=60, gt=0)
    # Faust's working directory (its tables live in memory and in Kafka).
    data_dir: str = ".data/features"

    def app_id(self) -> str:
        return self.group_id or f"{self.topic_prefix}driftline-features"
