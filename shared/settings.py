"""Settings shared by every service, read from the environment (pydantic-settings)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis

from shared.kafka_auth import SECRETS_DIR, KafkaAuth, password_of

__all__ = ["SECRETS_DIR", "CommonSettings", "local_redis_url"]


def local_redis_url(host: str = "127.0.0.1", port: int = 6379, db: int = 0) -> str:
    """The local stack's Redis, with the password `make setup` made if there is one.

    The Makefile exports `REDIS_URL` built the same way; this default serves a service
    or a test started by hand from the repository.
    """
    secret = SECRETS_DIR / "redis_password"
    password = secret.read_text().strip() if secret.is_file() else ""
    auth = f"default:{password}@" if password else ""  # redis-cli needs the user named
    return f"redis://{auth}{host}:{port}/{db}"


class CommonSettings(BaseSettings):
    """The names every service shares. Each service subclasses it with its own."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Who this client is on Kafka (SASL/SCRAM-SHA-512): each service defaults to its
    # own principal; the password is KAFKA_PASSWORD, else KAFKA_PASSWORD_FILE (compose's
    # secret), else .secrets/kafka_<username>. KAFKA_CA_FILE (the local CA's
    # certificate) switches to TLS, for the SASL_SSL listener.
    kafka_username: str = "operator"
    kafka_password: SecretStr | None = None
    kafka_password_file: str | None = None
    kafka_ca_file: str | None = None
    redis_url: str = Field(default_factory=local_redis_url)
    # A file holding Redis's password (compose's secret): put into `redis_url`.
    redis_password_file: str | None = None
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
    # Longest any one Redis call may take (connect, or a command's answer) before it
    # fails and its loop retries: a stalled Redis never hangs a service.
    redis_call_timeout_s: float = Field(default=10.0, gt=0)
    # The learner's watermark (training's, and serving's replica of it, decide alike):
    # a caught-up partition quiet for this long (wall time) no longer holds it back;
    idle_ms: int = Field(default=2000, ge=0)
    # and the longest wait (wall time) for the features of a label already consumed
    # (meanwhile quiet features partitions are not skipped), and for a silent topic's
    # first record.
    label_wait_ms: int = Field(default=60_000, ge=0)
    # No lone item moves an event-time clock (training's, serving's replica's,
    # monitoring's) more than this many seconds ahead of its partition's last time;
    # the next item far ahead too confirms the jump (0: no limit). Features keeps such
    # an event out of its entity's state and Redis row by the same rule.
    max_jump_s: float = Field(default=600.0, ge=0)
    # How late (event time) an item may come within its partition and still be taken
    # in order: features keeps window entries this much longer, so an event up to this
    # far behind its entity's latest gets an exact window; the learner (training's,
    # serving's replica's) stays this far behind its watermark, so an item up to this
    # late is learned in event-time order. Learning then lags the stream by as much.
    allowed_lateness_s: float = Field(default=0, ge=0)
    # The consumer groups of ingestion and features (their GROUP_IDs), asked how far
    # they are: the learner waits for a quiet partition while a service before it
    # still owes it records ("" for features: its default, {TOPIC_PREFIX}driftline-features).
    ingestion_group_id: str = "driftline-ingestion"
    features_group_id: str = ""

    def redis(self) -> Redis:
        """A client of `redis_url` whose every call gives up after `redis_call_timeout_s`."""
        timeout = self.redis_call_timeout_s
        return Redis.from_url(
            self.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def kafka_auth(self) -> KafkaAuth:
        """This client's Kafka principal, password and TLS."""
        if self.kafka_password is not None and self.kafka_password.get_secret_value():
            password: str | None = self.kafka_password.get_secret_value()
        else:
            password = password_of(self.kafka_username, self.kafka_password_file)
        return KafkaAuth(self.kafka_username, password, self.kafka_ca_file or None)

    def kafka(self, username: str | None = None) -> dict[str, Any]:
        """aiokafka's keyword arguments for a client of this principal; or of `username`
        (its password from .secrets/), for the repository's tools that act as several:
        the demo replays as `producer` and reads as `operator`."""
        auth = self.kafka_auth()
        if username is not None and username != auth.username:
            auth = KafkaAuth(username, password_of(username), auth.ca_file)
        return auth.aiokafka()

    def max_jump(self) -> timedelta | None:
        return timedelta(seconds=self.max_jump_s) if self.max_jump_s else None

    @model_validator(mode="after")
    def _password_from_file(self) -> CommonSettings:
        if self.redis_password_file:
            password = Path(self.redis_password_file).read_text().strip()
            scheme, _, rest = self.redis_url.partition("://")
            host = rest.rpartition("@")[2]
            self.redis_url = f"{scheme}://default:{password}@{host}"
        return self
