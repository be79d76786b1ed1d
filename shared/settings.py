"""Settings shared by every service, read from the environment (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CommonSettings"]


class CommonSettings(BaseSettings):
    """The names every service shares. Each service subclasses it with its own."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    pipeline_config: str = "pipelines/default.yaml"
    # Prepended to every topic name: lets tests and tenants share one broker.
    topic_prefix: str = ""
    # Partitions for topics we create; raise it to run more consumer replicas.
    topic_partitions: int = Field(default=3, ge=1)
    log_level: str = "INFO"
    # Versions kept per model: training deletes older ones from the registry (pinned
    # ones stay), serving and monitoring list this many. With a version every 10
    # minutes (training's VERSION_SECONDS), 20 are the last 3 hours to roll back to.
    registry_keep: int = Field(default=20, ge=1)
