"""Training settings, from the environment."""

from __future__ import annotations

from pydantic import Field

from shared.signing import SigningSettings

__all__ = ["TrainingSettings"]


class TrainingSettings(SigningSettings):
    host: str = "127.0.0.1"
    port: int = 8003
    kafka_username: str = "training"
    group_id: str = "driftline-training"
    # Checkpoint (new model versions + the learner with its input offsets) after this
    # many consumed records, or this many seconds, whichever comes first; and at shutdown.
    checkpoint_every: int = Field(default=100_000, ge=1)
    checkpoint_seconds: float = Field(default=30.0, gt=0)
    # A checkpoint also publishes a registry version of each model that learned when
    # this long has passed since the last ones (0: every checkpoint); a model's first
    # version comes at its first checkpoint. Versions are the history kept for
    # rollback; serving follows the live slot (below) between them.
    version_seconds: float = Field(default=600.0, ge=0)
    # Every model that learned is written to its live slot (what serving follows)
    # about this often (0: never; serving then swaps only on new versions).
    live_seconds: float = Field(default=0.5, ge=0)
    # Records per poll: a batch is parsed, learned and published before the next.
    batch_size: int = Field(default=5000, ge=1)
    poll_ms: int = Field(default=200, ge=10)
    # How many registry versions per model GET /api/models lists (newest).
    api_versions: int = Field(default=20, ge=1)
