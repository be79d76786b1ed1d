"""HTTP entry points of training: the models it trains (`/healthz`, `/metrics`: `shared.health`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.training.worker import TrainingWorker
from shared.registry import ModelRegistry

__all__ = ["router"]

router = APIRouter()


@router.get("/api/models")
async def models(request: Request) -> dict[str, Any]:
    """Each model's live counts and current version, with its versions in the registry."""
    worker: TrainingWorker = request.app.state.worker
    registry: ModelRegistry = request.app.state.registry
    limit: int = request.app.state.settings.api_versions
    state = worker.state
    learner = state.learner
    saved_at = state.saved_at.isoformat() if state.saved_at else None
    rows = []
    for name, score in learner.scores.items():
        versions = await registry.versions(name, limit=limit)
        rows.append(
            {
                "name": name,
                "version": state.version_of(name),
                "n_learned": score.n_learned,
                "n_scored": score.n_scored,
                "n_correct": score.n_correct,
                "accuracy": score.accuracy,
                "last_checkpoint": saved_at,
                "versions": [
                    {
                        "version": v.version,
                        "published_at": v.published_at.isoformat(),
                        "n_learned": v.lineage.n_learned,
                        "metrics": v.metrics,
                        "artifact_key": v.artifact_key,
                    }
                    for v in versions
                ],
            }
        )
    return {
        "models": rows,
        "records": state.records,
        "event_time": learner.clock.isoformat() if learner.clock else None,
        "pending": {"features": learner.awaiting_labels, "labels": learner.awaiting_features},
        "buffered": learner.buffered,
        "expired": {"features": learner.expired_features, "labels": learner.expired_labels},
        "duplicates": learner.duplicates,
        "late": learner.late,
        "last_checkpoint": saved_at,
        "config_hash": state.config_hash,
        "restored": worker.restored,
        # the champion policy: its champion, the window being counted, the last one
        "champion": None
        if state.champion is None
        else {**state.champion.standing(), "last_window": state.champion.last},
    }
