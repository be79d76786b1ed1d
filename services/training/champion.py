"""The champion policy: which model serving answers with, chosen by evidence.

Every model of the pipeline predicts on every event before it learns it
(`services.training.learner`), so training holds paired predictions: for each event,
which models were right. Against the champion, each challenger's events split into
b (the champion right, the challenger wrong) and c (the reverse); under "both are as
good" b and c are equally likely. `ChampionPolicy.observe` promotes the challenger
with the largest gain (c - b) among those that pass either of two tests, each at half
of 1 - `confidence` (so together at most 1 - `confidence`):

- **Recent window** (fast, for a change): McNemar's test on the window of `window`
  events just ended. Its statistic, with the continuity correction, is
  (|b - c| - 1)^2 / (b + c), chi-squared with one degree of freedom; one test per
  window, each on events no other test saw. With two equal models and the default
  confidence 0.9999, one window in 20,000 promotes by chance; a gap of 10 points of
  accuracy is found in the first window.
- **Since the champion was chosen** (patient, for a small steady gap): a sequential
  test on the counts since the last change or drift, looked at after every event.
  Its statistic is the likelihood ratio of the discordant pairs under a uniform prior
  on P(challenger wins a pair) against 1/2: 2^(b+c) B(c+1, b+1). It is a
  nonnegative martingale under "as good", so it ever reaches 1/alpha with
  probability at most alpha (Ville's inequality), however long it runs and however
  often it is looked at: an equal challenger is promoted by chance at most once in
  2 / (1 - `confidence`) tenures. 1 / ratio is its (always valid) p-value. It finds
  a large gap within a few dozen events (so the first model listed, chosen on no
  evidence, is replaced quickly) and a 2-point gap within a few thousand.
- Hysteresis: after a change both tests start again, so the new champion is judged
  only on events that came after it was chosen, and to go back the old one must in
  turn be significantly better. Two models of equal accuracy do not flap.
- Concept drift: ADWIN watches the champion's errors. When it finds they rose, the
  policy reports a `Drift` with the action the pipeline configured (`on_drift`):
  `promote_best` starts a short window (`window` / 4) at once, so the model best
  after the drift is promoted (by the same test) as soon as the evidence is there;
  `retrain_batch` also asks the batch challengers to fit again; `reset` also starts
  a fresh, untrained copy of the champion as a challenger (named `<model>.fresh`, or
  back to `<model>` when the champion is the fresh one: at most two of each model,
  never replacing the champion); `none` only reports.

Events whose label is not a class (regression) carry no "right or wrong": the policy
then keeps its champion. Decisions depend only on the learner's outputs, which follow
event time, so a restored checkpoint makes the same decisions: the policy is part of
training's checkpointed state.

>>> from services.training.learner import Learned
>>> policy = ChampionPolicy(["a", "b"], "a", window=30, confidence=0.95)
>>> outputs = []
>>> for i in range(30):  # "b" right every time, "a" one time in three
...     outputs += [Learned(f"e{i}", "a", i % 3 == 0), Learned(f"e{i}", "b", True)]
>>> [(p.model, p.evidence["test"], p.evidence["b"], p.evidence["c"])
...  for p in policy.observe(outputs)]
[('b', 'sequential', 0, 9)]
>>> policy.champion
'b'
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

from river import drift

from services.training.learner import Learned, LearnerOutput
from shared.pipeline import PipelineConfig

__all__ = ["ChampionPolicy", "Drift", "Promotion", "log_mixture_ratio", "mcnemar", "policy_for"]

Action = Literal["promote_best", "retrain_batch", "reset", "none"]
FRESH = ".fresh"  # the name of a fresh copy of a model (`reset`)


@dataclass(frozen=True)
class Promotion:
    """A change of champion the policy made, with its evidence."""

    change_id: str  # the policy's epoch and its nth change: stable across restarts
    model: str
    previous: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Drift:
    """The champion's errors rose (ADWIN): what was seen and the action that follows."""

    alert_id: str
    model: str
    action: Action
    error_before: float
    error_after: float
    events: int  # events the policy had counted for the champion when it was found
    fresh: str | None = None  # `reset`: the name the fresh copy takes


def mcnemar(b: int, c: int) -> tuple[float, float]:
    """McNemar's statistic (continuity-corrected) and its p-value (chi-squared, 1 dof).

    >>> mcnemar(10, 30)
    (9.025, 0.002663...)
    """
    if b + c == 0:
        return 0.0, 1.0
    statistic = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return statistic, math.erfc(math.sqrt(statistic / 2))


def log_mixture_ratio(b: int, c: int) -> float:
    """The log of the sequential test's likelihood ratio: 2^(b+c) B(c+1, b+1).

    >>> round(math.exp(log_mixture_ratio(0, 7)), 1), round(log_mixture_ratio(5, 5), 2)
    (16.0, -1.0)
    """
    n = b + c
    return math.lgamma(c + 1) + math.lgamma(b + 1) - math.lgamma(n + 2) + n * math.log(2)


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
        on_drift: Action = "promote_best",
    ) -> None:
        self.models = list(models)
        self.champion = champion
        self.on_drift: Action = on_drift
        self.pending: list[Promotion | Drift] = []
        self.changes = 0
        self.drifts = 0
        self.events = 0  # events counted (scored) since the policy began
        self._adwin = drift.ADWIN()
        self._round = window  # the current window's length (shorter after a drift)
        self.epoch = uuid.uuid4().hex[:12]  # with `changes`, names each change uniquely
        self.last: dict[str, Any] | None = None  # the last window's standing, when it closed
        self._champion_at = self.models.index(champion)
        self._since = _Counts(len(self.models))  # since the champion was chosen, or a drift
        self.configure(window=window, confidence=confidence, auto=auto, on_drift=on_drift)
        self._reset()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("retrain", None)  # wired again by whoever restores the policy
        state.pop("reset", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("pending", [])
        self.__dict__.update(state)
        if "_adwin" not in state:  # pickled before drift detection
            self.on_drift, self.drifts, self.events = "promote_best", 0, 0
            self._adwin, self._round = drift.ADWIN(), self.window
        if "_since" not in state:  # pickled before the sequential test
            self._since = _Counts(len(self.models))
        if "_window" not in state:  # pickled with the window's counts as four fields
            self._window = _Counts(len(self.models))
            self._window.n, self._window.right = state.pop("_n"), state.pop("_right")
            self._window.b, self._window.c = state.pop("_b"), state.pop("_c")
            for old in ("_n", "_right", "_b", "_c"):
                self.__dict__.pop(old, None)

    def configure(
        self, *, window: int, confidence: float, auto: bool, on_drift: Action = "promote_best"
    ) -> None:
        """New settings (a restored policy takes the pipeline file's own)."""
        self.window, self.confidence, self.auto = window, confidence, auto
        self.on_drift = on_drift
        alpha = (1 - confidence) / 2  # each test's share
        # McNemar: statistic > z^2 <=> p-value < alpha; sequential: ratio > 1 / alpha
        self._z2 = NormalDist().inv_cdf(1 - alpha / 2) ** 2
        self._log_bound = math.log(1 / alpha)

    def set_champion(self, model: str) -> None:
        """Make `model` the champion (an operator's pin); a new window starts."""
        self.champion, self._champion_at = model, self.models.index(model)
        self._adwin = drift.ADWIN()
        self._since = _Counts(len(self.models))
        self._reset()

    # `retrain`, when set, is called when a drift's action is `retrain_batch`; `reset`
    # with (the fresh copy's name, the model it copies) when it is `reset`
    retrain: Callable[[], None] | None = None
    reset: Callable[[str, str], None] | None = None

    def observe_event(self, outputs: list[Learned]) -> None:
        """`observe` one event's outputs as the learner learns it (`after_learn`): a
        drift's refit starts before the next event, at a point the stream fixes. The
        decisions wait in `pending` for `take`."""
        decided = self.observe(outputs)
        if decided:
            self.pending += decided
            for found in decided:
                if not isinstance(found, Drift):
                    continue
                if found.action == "retrain_batch" and self.retrain is not None:
                    self.retrain()
                if found.fresh is not None and self.reset is not None:
                    self.reset(found.fresh, found.model.removesuffix(FRESH))

    def take(self) -> list[Promotion | Drift]:
        """The decisions `observe_event` made since the last call."""
        taken, self.pending = self.pending, []
        return taken

    def observe(self, outputs: Iterable[LearnerOutput]) -> list[Promotion | Drift]:
        """Take the learner's outputs (each event's `Learned`, one per model, in a row);
        return the promotions and drifts they led to, in order."""
        promotions: list[Promotion | Drift] = []
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
        counts, n = self._window, self._window.n
        return {
            "champion": self.champion,
            "policy": "auto" if self.auto else "manual",
            "window": self._round,
            "n": n,
            "models": {
                name: {
                    "accuracy": counts.right[i] / n if n else None,
                    "b": counts.b[i],
                    "c": counts.c[i],
                }
                for i, name in enumerate(self.models)
            },
            "since_chosen": {"n": self._since.n, "b": self._since.b, "c": self._since.c},
        }

    # ---- internals

    def _reset(self, length: int | None = None) -> None:
        self._round = self.window if length is None else length
        self._window = _Counts(len(self.models))

    def _event(self, bits: int) -> list[Promotion | Drift]:
        champion_right = bits >> self._champion_at & 1
        self.events += 1
        found = self._watch(champion_right)
        if found is not None and self.on_drift != "none" and self.auto:
            if self.on_drift == "reset":
                found = self._fresh(found)
            self._reset(max(30, self.window // 4))  # judge the models on what came after
            self._since = _Counts(len(self.models))
        self._window.add(bits, champion_right)
        self._since.add(bits, champion_right)
        decided: list[Promotion | Drift] = [] if found is None else [found]
        promotion = self._sequential() if self.auto and not champion_right else None
        if promotion is None and self._window.n < self._round:
            return decided
        if promotion is None:
            promotion = self._challenge() if self.auto else None
            self.last = self.standing()
        self._reset()
        return decided if promotion is None else [*decided, promotion]

    def _fresh(self, found: Drift) -> Drift:
        """The name a fresh copy of the champion takes (added to the models if new)."""
        base = self.champion.removesuffix(FRESH)
        name = base + FRESH if self.champion == base else base
        if name not in self.models:
            self.models.append(name)
        return dataclasses.replace(found, fresh=name)

    def _watch(self, champion_right: int) -> Drift | None:
        """Feed the champion's error to ADWIN; a `Drift` if the error rate rose."""
        before = self._adwin.estimation
        self._adwin.update(0.0 if champion_right else 1.0)
        if not self._adwin.drift_detected or self._adwin.estimation <= before:
            return None
        self.drifts += 1
        return Drift(
            f"training:{self.epoch}:drift:{self.drifts}",
            self.champion,
            self.on_drift,
            before,
            self._adwin.estimation,
            self.events,
        )

    def _challenge(self) -> Promotion | None:
        """McNemar's test on the window just ended."""
        best, gain, counts = None, 0, self._window
        for i, name in enumerate(self.models):
            b, c = counts.b[i], counts.c[i]
            if name == self.champion or c <= b:
                continue
            if (c - b - 1) ** 2 > self._z2 * (b + c) and c - b > gain:
                best, gain = i, c - b
        if best is None:
            return None
        statistic, p_value = mcnemar(counts.b[best], counts.c[best])
        return self._promote(best, counts, "mcnemar", statistic, p_value)

    def _sequential(self) -> Promotion | None:
        """The sequential test on the counts since the champion was chosen (its ratio
        only grows on an event the champion got wrong: asked then)."""
        best, gain, ratio, counts = None, 0, 0.0, self._since
        for i, name in enumerate(self.models):
            b, c = counts.b[i], counts.c[i]
            if name == self.champion or c - b <= gain:
                continue
            if (log_ratio := log_mixture_ratio(b, c)) > self._log_bound:
                best, gain, ratio = i, c - b, log_ratio
        if best is None:
            return None
        return self._promote(best, counts, "sequential", ratio, math.exp(-ratio))

    def _promote(
        self, i: int, counts: _Counts, test: str, statistic: float, p_value: float
    ) -> Promotion:
        n, old = counts.n, self._champion_at
        evidence = {
            "test": test,  # "mcnemar" (the last window) or "sequential" (since chosen)
            "window": n,
            "champion": {"model": self.champion, "accuracy": counts.right[old] / n},
            "challenger": {"model": self.models[i], "accuracy": counts.right[i] / n},
            "b": counts.b[i],
            "c": counts.c[i],
            "statistic": statistic,  # McNemar's chi-squared, or the log likelihood ratio
            "p_value": p_value,
            "confidence": self.confidence,
        }
        previous = self.champion
        self.champion, self._champion_at = self.models[i], i
        self._adwin = drift.ADWIN()  # the new champion's errors, from now on
        self._since = _Counts(len(self.models))
        self.changes += 1
        return Promotion(f"{self.epoch}:{self.changes}", self.champion, previous, evidence)


class _Counts:
    """Paired counts over a stretch of events: per model, right; b, c against the champion."""

    def __init__(self, models: int) -> None:
        self.n = 0
        self.right = [0] * models
        self.b = [0] * models  # champion right, model wrong
        self.c = [0] * models  # champion wrong, model right

    def add(self, bits: int, champion_right: int) -> None:
        self.n += 1
        right, b, c = self.right, self.b, self.c
        for i in range(len(right)):
            if bits >> i & 1:
                right[i] += 1
                if not champion_right:
                    c[i] += 1
            elif champion_right:
                b[i] += 1


def policy_for(pipeline: PipelineConfig, policy: ChampionPolicy | None) -> ChampionPolicy:
    """`policy` (restored) with the pipeline's settings, or a new one if there is none
    or it was of other models."""
    names = [m.name for m in pipeline.models]
    settings = pipeline.champion
    auto = settings.policy == "auto"
    if policy is None or not set(names) <= set(policy.models):  # extras: fresh copies
        return ChampionPolicy(
            names,
            pipeline.initial_champion(),
            window=settings.window,
            confidence=settings.confidence,
            auto=auto,
            on_drift=settings.on_drift,
        )
    policy.configure(
        window=settings.window,
        confidence=settings.confidence,
        auto=auto,
        on_drift=settings.on_drift,
    )
    return policy
