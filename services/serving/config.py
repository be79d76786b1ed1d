"""Serving settings, from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from shared.http_keys import require_key
from shared.signing import SigningSettings

__all__ = ["ServingSettings"]


class ServingSettings(SigningSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    kafka_username: str = "serving"
    # HTTP worker processes, each a uvicorn server with its own model watcher. On a
    # 2-core machine 2 answer about twice what 1 does while the stream scorer idles.
    workers: int = Field(default=2, ge=1)
    # Run the `features` scorer (a process of its own); false serves HTTP only, for
    # replicas that scale HTTP while another instance scores the stream.
    stream_scoring: bool = True
    # What the stream is scored with: `replica`, the champion learned in the scorer
    # itself from every label before each vector (`replica.py`; costs its learning CPU
    # again), or `follow`, the model followed from training's live slot (up to a
    # second behind the learner).
    stream_model: Literal["replica", "follow"] = "replica"
    # The stream scorer's CPU priority below the HTTP workers' (Linux nice; 2: about
    # two thirds of their weight): when CPU is short a request waits for no scoring
    # burst, the stream lags instead. At 5 the replica fell behind at 3,000 events/s.
    stream_niceness: int = Field(default=2, ge=0, le=19)
    # How often the replica checkpoints its own state (a restart replays from there).
    replica_checkpoint_seconds: float = Field(default=10.0, gt=0)
    # Consumer group of the `features` scorer when it follows; the `models` readers use no group.
    group_id: str = "driftline-serving"
    # Most records per batch of the stream scorer (vectors scored, or for the replica
    # vectors and labels learned; 2,000 halved the replica's rate).
    batch_size: int = Field(default=5000, ge=1)
    # Largest request body read (413 past it, before any parsing). A /predict body is
    # an entity id and at most 1,000 features.
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Longest a live-feature read may take: a stalled Redis answers 503 after this.
    redis_timeout_s: float = Field(default=0.5, gt=0)
    # Longest one read of a model artifact from the registry's Redis may take.
    artifact_timeout_s: float = Field(default=10.0, gt=0)
    # HTTP predictions buffered or being published; past it a prediction is dropped and counted.
    max_pending_publishes: int = Field(default=10_000, ge=1)
    # How often each process checks the champion's live slot (the learner's model
    # between versions, written by training about every 0.5 s); 0: versions only.
    live_follow_s: float = Field(default=0.25, ge=0)
    # Longest the start-up waits to read the `models` topic to its end.
    models_catch_up_timeout_s: float = Field(default=30.0, gt=0)
    # The key POST /predict needs (`Authorization: Bearer <key>`), or a file holding it
    # (compose's secret); else .secrets/reader_key. `predict_needs_key` false opens
    # /predict to anyone who reaches the port (a trusted network only: see the README).
    driftline_reader_key: SecretStr | None = None
    driftline_reader_key_file: str | None = None
    predict_needs_key: bool = True
    # The key the admin endpoints need (DESIGN: DRIFTLINE_API_KEY), or a file holding
    # it; else .secrets/api_key. Required: without it serving does not start.
    driftline_api_key: SecretStr | None = None
    driftline_api_key_file: str | None = None
    # Longest an admin change waits to be read back (and served) by its own process.
    admin_wait_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _reader_key(self) -> ServingSettings:
        if not self.predict_needs_key:
            self.driftline_reader_key = None
            return self
        self.driftline_reader_key = require_key(
            "reader",
            self.driftline_reader_key,
            self.driftline_reader_key_file,
            ", or set PREDICT_NEEDS_KEY=false",
        )
        return self

    @model_validator(mode="after")
    def _api_key(self) -> ServingSettings:
        self.driftline_api_key = require_key(
            "api", self.driftline_api_key, self.driftline_api_key_file
        )
        return self
