"""Following the learner: the champion's live slot, swapped in as it moves.

Training writes each model's live slot in the registry about every half second
(`shared.registry.ModelRegistry.put_live`). `LiveFollower.run` reads the champion's
slot stamp (its version and count of events learned: one small Redis read) every
`every_s`; when the slot is ahead of the model served, it loads the model (unpickled
off the event loop) and swaps it in the way a new version is (`ModelHolder.swap`).
Loading takes the process's time, so the pace adapts as in training: after a load
that took more than `budget` of the interval, the next poll waits longer. A failed
read is counted and logged; the model served stays. A slot whose signature is missing
or wrong (`shared.signing`) is refused before unpickling, counted in
`driftline_registry_rejected_total{what="live"}` and logged once: the follower reads
the slot again only when its stamp moves.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.serving import metrics
from services.serving.models import LoadedModel, ModelHolder
from shared.registry import ModelRegistry
from shared.signing import SignatureError

__all__ = ["LiveFollower"]

log = logging.getLogger(__name__)


class LiveFollower:
    """Keeps `holder` on the champion's live slot when it is ahead (see the module doc)."""

    def __init__(
        self,
        registry: ModelRegistry,
        holder: ModelHolder,
        every_s: float = 0.25,
        budget: float = 0.02,
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.every_s = every_s
        self.budget = budget
        self.wait_s = every_s
        self.refused: tuple[str, int] | None = None  # the stamp of a slot refused

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.wait_s)
            await self.poll()

    async def poll(self) -> bool:
        """Swap to the live slot if it is ahead of what is served; whether it swapped."""
        name = self.holder.champion
        if self.holder.pinned is not None:  # an operator chose a version: stay on it
            return False
        started = time.perf_counter()
        seen: tuple[str, int] | None = None
        try:
            stamp = await self.registry.live_stamp(name)
            if stamp is None or not self.holder.is_ahead(stamp.version, stamp.n_learned):
                return False
            seen = (stamp.version, stamp.n_learned)
            if seen == self.refused:
                return False
            live = await self.registry.load_live(name)
        except SignatureError as error:  # not written with our key: never unpickled
            self.refused = seen
            log.error("REFUSED %s's live slot (not unpickled): %s", name, error)
            return False
        except Exception as error:  # Redis away, a bad pickle: keep serving what we have
            metrics.LIVE_LOAD_ERRORS.labels(name).inc()
            log.warning("cannot read %s's live slot: %r", name, error)
            return False
        if live is None:
            return False
        swapped = self.holder.swap(
            LoadedModel(name, live.version, live.model, n_learned=live.n_learned)
        )
        spent = time.perf_counter() - started
        self.wait_s = max(self.every_s, spent / self.budget)
        return swapped
