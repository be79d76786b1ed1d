"""Monitoring settings, from the environment."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.monitoring.webhooks import parse_urls
from shared.signing import SigningSettings

__all__ = ["MonitoringSettings"]


class MonitoringSettings(SigningSettings):
    host: str = "127.0.0.1"
    port: int = 8002
    kafka_username: str = "monitoring"
    group_id: str = "driftline-monitoring"
    # Size of the recent window the `window` metrics are computed over (scored predictions).
    window_size: int = Field(default=1000, ge=1)
    # ADWIN's confidence: smaller detects fewer, surer changes.
    drift_delta: float = Field(default=0.002, gt=0, lt=1)
    # Scored predictions per (model, source) before a drift may raise an alert.
    drift_warmup: int = Field(default=500, ge=0)
    # How much higher the error must be after a detected change than before it.
    drift_margin: float = Field(default=0.01, ge=0)
    # One point of the dashboard's history per this many scored predictions, at first;
    # at `history_points` points per (model, source) every second one is dropped and
    # points come half as often, so the chart spans the whole stream in bounded memory.
    history_every: int = Field(default=100, ge=1)
    history_points: int = Field(default=1000, ge=2)
    # A caught-up partition quiet this long no longer holds event time back (seconds),
    # once the service that writes it has read all it was given: training's and
    # serving's groups (their GROUP_IDs) are asked how far they are.
    idle_partition_s: float = Field(default=5.0, gt=0)
    training_group_id: str = "driftline-training"
    serving_group_id: str = "driftline-serving"
    # Added to the process's nice value: monitoring is the service allowed to lag, so
    # on a machine it shares, a busy CPU runs the learning path first (5: the learning
    # path at 11,700-12,300 events/s on 2 cores, 9,200-11,200 at 0; the whole loop
    # still holds 4,000 events/s with monitoring's lag under 0.4 s). 0: an equal share.
    niceness: int = Field(default=5, ge=0, le=19)
    # Every alert is POSTed as JSON to each of these (comma-separated http(s) URLs),
    # retried with backoff (see services/monitoring/webhooks.py); "" sends none.
    alert_webhook_urls: str = ""
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_attempts: int = Field(default=8, ge=1)

    @field_validator("alert_webhook_urls")
    @classmethod
    def _urls(cls, value: str) -> str:
        parse_urls(value)  # a bad URL stops the service at start, named
        return value

    # A snapshot of the state (and the offsets it reflects) goes to Redis this often, so a
    # restart reads on from it rather than replaying both topics (0: never; replay).
    snapshot_seconds: float = Field(default=60.0, ge=0)
    # How often the dashboard's consumer lag and throughput of every service's group are
    # sampled (seconds; 0: never). Each sample asks the broker a few requests, off the loop.
    lag_every_s: float = Field(default=5.0, ge=0)
    # Records per poll of the input topics.
    batch_size: int = Field(default=2000, ge=1)
