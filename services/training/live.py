"""The live slot: each model as it learns, put in the registry about every half second.

Checkpoints publish registry versions every `version_seconds` (600 s by default):
that is the history kept for rollback. What serving serves must follow the learner
much closer, so `LiveModels.publish` also writes every model that learned since its
last write to the registry's live slot (`ModelRegistry.put_live`), which serving
polls and swaps to. Pickling takes the learner's time, so the pace adapts: the next
write comes after `every_s`, or later when the last one took more than `budget` of
the time since (a large forest is written every few seconds, a linear model twice a
second). A failed write is logged and tried again at the next turn; learning never
waits for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from redis.exceptions import RedisError

from services.training.learner import OnlineLearner
from shared.registry import ModelRegistry

__all__ = ["LiveModels"]

log = logging.getLogger(__name__)


class LiveModels:
    """Writes each model's live slot when due (see the module doc)."""

    def __init__(self, registry: ModelRegistry, every_s: float = 0.5, budget: float = 0.05) -> None:
        self.registry = registry
        self.every_s = every_s
        self.budget = budget
        self.next_at = 0.0
        self.written: dict[str, int] = {}  # model -> n_learned last written

    def due(self, now: float) -> bool:
        return self.every_s > 0 and now >= self.next_at

    async def publish(
        self, learner: OnlineLearner, versions: Mapping[str, str], now: float
    ) -> None:
        """Write the slot of every model that learned since its last write."""
        started = time.perf_counter()
        try:
            for name, model in learner.models.items():
                n = learner.scores[name].n_learned
                if n != self.written.get(name):
                    await self.registry.put_live(name, versions.get(name, "0"), n, model)
                    self.written[name] = n
        except (RedisError, OSError) as error:
            log.warning("live models not written (next turn tries again): %r", error)
        spent = time.perf_counter() - started
        self.next_at = now + max(self.every_s, spent / self.budget)
