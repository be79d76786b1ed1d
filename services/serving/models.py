"""The current champion model, hot-swapped as training publishes new versions.

`ModelHolder` keeps every `ModelPublished` it has seen and one `LoadedModel`, the
champion's newest loaded version. A new version is loaded completely first (the
artifact fetched and unpickled off the event loop) and then swapped in with a single
reference assignment: a request reads `holder.current` once and uses that object to
the end, so it never sees a half-loaded model and never fails because of a swap.
Older versions than the one served are recorded but never loaded.

>>> import asyncio
>>> from river import linear_model
>>> loader = InMemoryArtifactLoader({"k1": linear_model.LogisticRegression()})
>>> holder = ModelHolder("logreg")
>>> asyncio.run(holder.offer(published("logreg", "1", "k1"), loader))
True
>>> holder.require().version, holder.require().predict({"x": 1.0}).y_pred
('1', False)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from redis.asyncio import Redis
from river.base import Classifier

from services.serving import metrics
from services.serving.errors import ModelLoadError, ModelNotReady, PredictionFailed
from shared.catalogue import RiverModel, predict, predicts_by_max_proba
from shared.champions import ChampionView
from shared.clock import utcnow
from shared.explain import explain
from shared.messages import Lineage, ModelPublished
from shared.registry import version_order
from shared.signing import SignatureError, SigningKey, loads_signed

__all__ = [
    "ArtifactLoader",
    "InMemoryArtifactLoader",
    "LoadedModel",
    "ModelHolder",
    "RedisArtifactLoader",
    "Scored",
    "model_input",
    "published",
    "version_order",
]

log = logging.getLogger(__name__)

Scalar = bool | int | float | str | None


def model_input(vector: Mapping[str, float | None]) -> dict[str, float]:
    """The dict a River model is given: the vector without its missing (None) values."""
    return {name: value for name, value in vector.items() if value is not None}


def _plain(value: Any) -> Scalar:
    """A model's output as a JSON scalar (numpy scalars unwrapped, other objects as text)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _probabilities(proba: Mapping[Any, Any]) -> dict[str, float] | None:
    out = {}
    for label, p in proba.items():
        p = float(p)
        if not math.isfinite(p):
            return None
        key = label if type(label) is str else str(_plain(label))
        out[key] = 0.0 if p < 0.0 else 1.0 if p > 1.0 else p
    return out


@dataclass(frozen=True, slots=True)
class Scored:
    """One prediction: the label or value, and class probabilities for a classifier."""

    y_pred: Scalar
    probabilities: dict[str, float] | None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One model version, fully loaded and ready to predict."""

    name: str
    version: str
    model: RiverModel
    loaded_at: datetime = field(default_factory=utcnow)
    # Events learned: a live-slot model (see `shared.registry`) builds on `version`
    # with more of them; None for a registry version whose metadata lacks the count.
    n_learned: int | None = None
    is_classifier: bool = field(init=False, repr=False, compare=False)
    _by_max_proba: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_classifier", isinstance(self.model, Classifier))
        object.__setattr__(self, "_by_max_proba", predicts_by_max_proba(self.model))

    def explain(self, vector: Mapping[str, float | None]) -> dict[str, Any]:
        """Each feature's part in the prediction for `vector` (`shared.explain`); a model
        it cannot read gets method "none" (logged), never an error."""
        x = {name: value for name, value in vector.items() if value is not None}
        try:
            return explain(self.model, x)
        except Exception:
            log.exception("explaining %s version %s failed", self.name, self.version)
            return {"method": "none", "features": [], "note": "the model could not be explained"}

    def predict(self, vector: Mapping[str, float | None]) -> Scored:
        """`predict_one` (and `predict_proba_one` for a classifier) on the vector.

        A model that raises gives `PredictionFailed`, whose `detail` names the model
        and version only (clients read it); the error itself is in `cause`, for logs.
        """
        x = {name: value for name, value in vector.items() if value is not None}
        try:
            y_pred, proba = predict(self.model, x, self._by_max_proba, self.is_classifier)
        except Exception as error:
            raise PredictionFailed(
                f"model {self.name!r} version {self.version!r} failed to predict",
                cause=repr(error),
            ) from error
        return Scored(_plain(y_pred), None if proba is None else _probabilities(proba))


class ArtifactLoader(Protocol):
    """Where model artifacts live: `load` returns the unpickled model or raises ModelLoadError."""

    async def load(self, artifact_key: str) -> RiverModel: ...


class RedisArtifactLoader:
    """Artifacts are plain Redis keys holding a pickled River model, signed.

    Unpickling runs code chosen by whoever wrote the bytes, so the signature (an
    HMAC-SHA256 of the signing key, `shared.signing`) is verified first: an artifact
    without it, or with a wrong one, is refused unread (`ModelLoadError`; counted in
    `driftline_registry_rejected_total{what="artifact"}`) and the version served stays.
    """

    def __init__(self, redis: Redis, signing_key: SigningKey) -> None:
        self.redis = redis
        self.signing_key = signing_key

    async def load(self, artifact_key: str) -> RiverModel:
        try:
            data = await self.redis.get(artifact_key)
        except Exception as error:
            raise ModelLoadError(f"cannot read artifact {artifact_key!r}: {error!r}") from error
        if data is None:
            raise ModelLoadError(f"artifact {artifact_key!r} is not in Redis")
        if isinstance(data, str):  # a client opened with decode_responses=True
            raise ModelLoadError(f"artifact {artifact_key!r} was read as text, not bytes")
        try:
            return await asyncio.to_thread(loads_signed, self.signing_key, data, "artifact")
        except SignatureError as error:
            log.error("REFUSED artifact %s (not unpickled): %s", artifact_key, error)
            raise ModelLoadError(f"artifact {artifact_key!r} refused: {error}") from error
        except Exception as error:
            raise ModelLoadError(
                f"artifact {artifact_key!r} cannot be unpickled: {error!r}"
            ) from error


class InMemoryArtifactLoader:
    """For tests: artifacts in a dict (missing keys raise ModelLoadError)."""

    def __init__(self, artifacts: Mapping[str, RiverModel] | None = None) -> None:
        self.artifacts = dict(artifacts or {})

    async def load(self, artifact_key: str) -> RiverModel:
        await asyncio.sleep(0)  # a real load yields to the event loop too
        if artifact_key not in self.artifacts:
            raise ModelLoadError(f"artifact {artifact_key!r} is not stored")
        return self.artifacts[artifact_key]


def published(name: str, version: str, artifact_key: str) -> ModelPublished:
    """A minimal `ModelPublished` (for tests and examples)."""
    return ModelPublished(
        name=name,
        version=version,
        lineage=Lineage(offsets=[]),
        metrics={},
        artifact_key=artifact_key,
        published_at=utcnow(),
    )


def _age(version: str, n_learned: int | None) -> tuple[tuple[int, int, str], int]:
    """How far along a model is: its version, then the events it learned."""
    return version_order(version), -1 if n_learned is None else n_learned


class ModelHolder:
    """The champion's current version, plus the newest `keep` versions seen of every model
    (the registry's retention: older ones are deleted there)."""

    def __init__(self, champion: str, keep: int = 20) -> None:
        self.champion = champion
        self.pinned: str | None = None  # a version an operator pinned: no newer is taken
        self.view = ChampionView(champion)  # the `champions` topic, as read so far
        self.keep = keep
        self.current: LoadedModel | None = None
        self.seen: dict[str, dict[str, ModelPublished]] = {}
        self.load_error: str | None = None  # why the newest champion version is not served

    def record(self, message: ModelPublished) -> None:
        """Remember a published version (any model), without loading it."""
        versions = self.seen.setdefault(message.name, {})
        versions[message.version] = message
        if len(versions) > self.keep:
            for old in sorted(versions, key=version_order)[: len(versions) - self.keep]:
                del versions[old]

    def versions(self, name: str) -> list[str]:
        return sorted(self.seen.get(name, {}), key=version_order)

    def newest(self, name: str) -> ModelPublished | None:
        versions = self.versions(name)
        return self.seen[name][versions[-1]] if versions else None

    def is_newer(self, message: ModelPublished) -> bool:
        """Whether `message` is a champion version ahead of the model served."""
        return (
            message.name == self.champion
            and self.pinned is None
            and self.is_ahead(message.version, message.lineage.n_learned)
        )

    async def offer(self, message: ModelPublished, loader: ArtifactLoader) -> bool:
        """Record `message`; if it is a newer champion version, load it and swap it in."""
        self.record(message)
        if not self.is_newer(message):
            return False
        try:
            model = await loader.load(message.artifact_key)
        except ModelLoadError as error:
            metrics.MODEL_LOAD_ERRORS.labels(message.name).inc()
            self.load_error = f"model {message.name!r} version {message.version!r}: {error.detail}"
            log.error("cannot load %s", self.load_error)
            return False
        n = message.lineage.n_learned
        loaded = LoadedModel(message.name, message.version, model, n_learned=n)
        return self.swap(loaded)

    def swap(self, loaded: LoadedModel) -> bool:
        """Serve `loaded` from now on (one assignment), unless a newer model is served.

        Newer: a later version, or the same version having learned more events (a
        model from the live slot).
        """
        current = self.current
        if loaded.name != self.champion or not self.is_ahead(loaded.version, loaded.n_learned):
            return False
        self.current = loaded
        self.load_error = None
        process = metrics.process_name()
        metrics.MODEL_SWAPS.labels(loaded.name, process).inc()
        if loaded.version.isdigit():
            metrics.MODEL_VERSION.labels(loaded.name, process).set(int(loaded.version))
        if loaded.n_learned is not None:
            metrics.MODEL_LEARNED.labels(loaded.name, process).set(loaded.n_learned)
        if current is None or current.version != loaded.version:
            log.info("serving model %s version %s", loaded.name, loaded.version)
        return True

    def is_ahead(self, version: str, n_learned: int | None) -> bool:
        """Whether a model at `version` having learned `n_learned` events is further
        along than the model served (or none is)."""
        current = self.current
        if current is None or current.name != self.champion:
            return True
        return _age(version, n_learned) > _age(current.version, current.n_learned)

    async def follow_view(self, loader: ArtifactLoader) -> bool:
        """Serve the champion `view` names (its pinned version, else its newest seen):
        loaded first, swapped in with one assignment; until then the model served
        stays. Whether it swapped."""
        name, version = self.view.model, self.view.version
        self.champion, self.pinned = name, version
        current = self.current
        if current is not None and current.name == name and version in (None, current.version):
            return False
        target = self.seen.get(name, {}).get(version) if version else self.newest(name)
        if target is None:
            log.warning(
                "champion %s%s has no version seen yet: serving %s meanwhile",
                name,
                f" version {version}" if version else "",
                f"{current.name} {current.version}" if current else "nothing",
            )
            return False
        try:
            model = await loader.load(target.artifact_key)
        except ModelLoadError as error:
            metrics.MODEL_LOAD_ERRORS.labels(name).inc()
            self.load_error = f"model {name!r} version {target.version!r}: {error.detail}"
            log.error("cannot load the new champion: %s", self.load_error)
            return False
        loaded = LoadedModel(name, target.version, model, n_learned=target.lineage.n_learned)
        if (self.champion, self.pinned) != (name, version):
            return False  # the champion changed again while this one loaded
        self.current = loaded
        self.load_error = None
        metrics.MODEL_SWAPS.labels(name, metrics.process_name()).inc()
        log.info(
            "serving champion %s version %s (was %s)",
            name,
            target.version,
            f"{current.name} {current.version}" if current else "none",
        )
        return True

    def require(self) -> LoadedModel:
        """The model to predict with, or ModelNotReady saying why there is none."""
        current = self.current
        if current is not None:
            return current
        if self.load_error is not None:
            raise ModelNotReady(
                f"no version of {self.champion!r} could be loaded: {self.load_error}"
            )
        raise ModelNotReady(f"no model version of {self.champion!r} has been published yet")
