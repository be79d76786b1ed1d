"""The champion policy: which model serving answers with, chosen by evidence.

Every model of the pipeline predicts on every event before it learns it
(`services.training.learner`), so training holds paired predictions: for each event,
which models were right. `ChampionPolicy.observe` counts them over windows of
`window` events in a row and, at the end of each window, promotes a challenger when
McNemar's test on that window says it beats the champion:

- b: events the champion got right and the challenger wrong; c: the reverse. Under
  "both are as good", b and c are equally likely; McNemar's statistic (with the
  continuity correction) is (|b - c| - 1)^2 / (b + c), chi-squared with one degree of
  freedom. A challenger with c > b whose p-value is below 1 - `confidence` qualifies;
  of those, the one with the largest c - b (the largest gain in accuracy) is promoted.
- One test per window, each on events no other test saw, so repeated looks do not
  pile up: with two equal models and the default confidence 0.9999, one window in
  20,000 promotes by chance (at window 1,000: once in 20 million events per
  challenger), while a gap of 10 points of accuracy is found in the first window.
- Hysteresis: the next window starts after the change, so the new champion is judged
  only on events that came after it was chosen, and to go back the old one must in
  turn be significantly better. Two models of equal accuracy do not flap.

Events whose label is not a class (regression) carry no "right or wrong": the policy
then keeps its champion. Decisions depend only on the learner's outputs, which follow
event time, so a restored checkpoint makes the same decisions: the policy is part of
training's checkpointed state.

>>> from services.training.learner import Learned
>>> policy = ChampionPolicy(["a", "b"], "a", window=30, confidence=0.95)
>>> outputs = []
>>> for i in range(30):  # "b" right every time, "a" one time in three
...     outputs += [Learned(f"e{i}", "a", i % 3 == 0), Learned(f"e{i}", "b", True)]
>>> [(p.model, p.previous, p.evidence["b"], p.evidence["c"]) for p in policy.observe(outputs)]
[('b', 'a', 0, 20)]
>>> policy.champion
'b'
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from services.training.learner import Learned, LearnerOutput
from shared.pipeline import PipelineConfig

__all__ = ["ChampionPolicy", "Promotion", "mcnemar", "policy_for"]


@dataclass(frozen=True)
class Promotion:
    """A change of champion the policy made, with its evidence."""

    change_id: str  # the policy's epoch and its nth change: stable across restarts
    model: str
    previous: str
    evidence: dict[str, Any]


def mcnemar(b: int, c: int) -> tuple[float, float]:
    """McNemar's statistic (continuity-corrected) and its p-value (chi-squared, 1 dof).

    >>> mcnemar(10, 30)
    (9.025, 0.002663...)
    """
    if b + c == 0:
        return 0.0, 1.0
    statistic = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return statistic, math.erfc(math.sqrt(statistic / 2))


class ChampionPolicy:
    """Paired right/wrong counts of the current window, and the champion they chose."""

    def __init__(
        self,
        models: list[str],
        champion: str,
        *,
        window: int = 1000,
        confidence: float = 0.9999,
        auto: bool = True,
    ) -> None:
        self.models = list(models)
        self.champion = champion
        self.changes = 0
        self.epoch = uuid.uuid4().hex[:12]  # with `changes`, names each change uniquely
        self.last: dict[str, Any] | None = None  # the last window's standing, when it closed
        self._champion_at = self.models.index(champion)
        self.configure(window=window, confidence=confidence, auto=auto)
        self._reset()

    def configure(self, *, window: int, confidence: float, auto: bool) -> None:
        """New settings (a restored policy takes the pipeline file's own)."""
        self.window, self.confidence, self.auto = window, confidence, auto
        # statistic > z^2 <=> p-value < 1 - confidence
        self._z2 = NormalDist().inv_cdf(1 - (1 - confidence) / 2) ** 2

    def set_champion(self, model: str) -> None:
        """Make `model` the champion (an operator's pin); a new window starts."""
        self.champion, self._champion_at = model, self.models.index(model)
        self._reset()

    def observe(self, outputs: Iterable[LearnerOutput]) -> list[Promotion]:
        """Take the learner's outputs (each event's `Learned`, one per model, in a row);
        return the promotions they led to."""
        promotions = []
        event_id, bits, scored = None, 0, False
        index = {name: i for i, name in enumerate(self.models)}
        for output in outputs:
            if not isinstance(output, Learned) or output.model not in index:
                continue
            if output.event_id != event_id:
                if scored:
                    promotions += self._event(bits)
                event_id, bits, scored = output.event_id, 0, False
            if output.correct is not None:
                scored = True
                if output.correct:
                    bits |= 1 << index[output.model]
        if scored:
            promotions += self._event(bits)
        return promotions

    def standing(self) -> dict[str, Any]:
        """The current window: each model's accuracy and its b, c against the champion."""
        n = self._n
        return {
            "champion": self.champion,
            "policy": "auto" if self.auto else "manual",
            "window": self.window,
            "n": n,
            "models": {
                name: {
                    "accuracy": self._right[i] / n if n else None,
                    "b": self._b[i],
                    "c": self._c[i],
                }
                for i, name in enumerate(self.models)
            },
        }

    # ---- internals

    def _reset(self) -> None:
        self._n = 0
        self._right = [0] * len(self.models)  # per model, right in this window
        self._b = [0] * len(self.models)  # champion right, model wrong
        self._c = [0] * len(self.models)  # champion wrong, model right

    def _event(self, bits: int) -> list[Promotion]:
        champion_right = bits >> self._champion_at & 1
        right, b, c = self._right, self._b, self._c
        for i in range(len(right)):
            if bits >> i & 1:
                right[i] += 1
                if not champion_right:
                    c[i] += 1
            elif champion_right:
                b[i] += 1
        self._n += 1
        if self._n < self.window:
            return []
        promotion = self._challenge() if self.auto else None
        self.last = self.standing()
        self._reset()
        return [] if promotion is None else [promotion]

    def _challenge(self) -> Promotion | None:
        best, gain = None, 0
        for i, name in enumerate(self.models):
            b, c = self._b[i], self._c[i]
            if name == self.champion or c <= b:
                continue
            if (c - b - 1) ** 2 > self._z2 * (b + c) and c - b > gain:
                best, gain = i, c - b
        return None if best is None else self._promote(best)

    def _promote(self, i: int) -> Promotion:
        n, old = self._n, self._champion_at
        b, c = self._b[i], self._c[i]
        statistic, p_value = mcnemar(b, c)
        evidence = {
            "test": "mcnemar",
            "window": n,
            "champion": {"model": self.champion, "accuracy": self._right[old] / n},
            "challenger": {"model": self.models[i], "accuracy": self._right[i] / n},
            "b": b,
            "c": c,
            "statistic": statistic,
            "p_value": p_value,
            "confidence": self.confidence,
        }
        previous = self.champion
        self.champion, self._champion_at = self.models[i], i
        self.changes += 1
        return Promotion(f"{self.epoch}:{self.changes}", self.champion, previous, evidence)


def policy_for(pipeline: PipelineConfig, policy: ChampionPolicy | None) -> ChampionPolicy:
    """`policy` (restored) with the pipeline's settings, or a new one if there is none
    or it was of other models."""
    names = [m.name for m in pipeline.models]
    settings = pipeline.champion
    auto = settings.policy == "auto"
    if policy is None or policy.models != names:
        return ChampionPolicy(
            names,
            pipeline.initial_champion(),
            window=settings.window,
            confidence=settings.confidence,
            auto=auto,
        )
    policy.configure(window=settings.window, confidence=settings.confidence, auto=auto)
    return policy
