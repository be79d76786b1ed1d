"""The model holder: loads before it swaps, ignores older versions, never half-swaps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any

import pytest
from river import base

from services.serving.errors import ModelNotReady
from services.serving.models import (
    InMemoryArtifactLoader,
    LoadedModel,
    ModelHolder,
    model_input,
    published,
    version_order,
)


class VersionModel(base.Classifier):
    """Predicts its own version: a prediction shows which model made it."""

    def __init__(self, version: int) -> None:
        self.version = version

    def learn_one(self, x: dict[Hashable, Any], y: Any) -> None:
        pass

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Any, float]:
        return {self.version: 1.0}


class SlowLoader(InMemoryArtifactLoader):
    """Loading takes several turns of the event loop, like a real fetch and unpickle."""

    async def load(self, artifact_key: str) -> Any:
        for _ in range(5):
            await asyncio.sleep(0.001)
        return await super().load(artifact_key)


def test_versions_order_numerically() -> None:
    assert sorted(["10", "9", "2", "x"], key=version_order) == ["2", "9", "10", "x"]


def test_missing_values_are_left_out_of_the_model_input() -> None:
    assert model_input({"a": 1.0, "b": None}) == {"a": 1.0}


async def test_before_any_version_the_reason_is_clear() -> None:
    holder = ModelHolder("logreg")
    with pytest.raises(ModelNotReady, match="no model version of 'logreg' has been published yet"):
        holder.require()
    assert (
        await holder.offer(published("logreg", "1", "missing"), InMemoryArtifactLoader()) is False
    )
    with pytest.raises(ModelNotReady, match=r"could be loaded.*'missing' is not stored"):
        holder.require()


async def test_only_newer_champion_versions_are_loaded() -> None:
    loader = InMemoryArtifactLoader({f"k{v}": VersionModel(v) for v in range(1, 4)})
    holder = ModelHolder("logreg")
    assert await holder.offer(published("logreg", "2", "k2"), loader)
    assert not await holder.offer(published("logreg", "1", "k1"), loader)  # older: recorded only
    assert not await holder.offer(published("hat", "3", "k3"), loader)  # not the champion
    assert holder.require().version == "2"
    assert holder.versions("logreg") == ["1", "2"] and holder.versions("hat") == ["3"]
    assert await holder.offer(published("logreg", "3", "k3"), loader)
    assert holder.require().predict({}).y_pred == 3


async def test_a_failed_load_keeps_serving_the_current_version() -> None:
    loader = InMemoryArtifactLoader({"k1": VersionModel(1)})
    holder = ModelHolder("logreg")
    await holder.offer(published("logreg", "1", "k1"), loader)
    assert not await holder.offer(published("logreg", "2", "gone"), loader)
    assert holder.require().version == "1"
    assert holder.load_error is not None and "'2'" in holder.load_error


async def test_swaps_under_concurrent_predictions_never_mix_versions() -> None:
    n_versions = 30
    loader = SlowLoader({f"k{v}": VersionModel(v) for v in range(1, n_versions + 1)})
    holder = ModelHolder("logreg")
    await holder.offer(published("logreg", "1", "k1"), loader)
    done = asyncio.Event()
    seen: list[list[int]] = []

    async def client() -> None:
        versions: list[int] = []
        while not done.is_set():
            model = holder.require()
            scored = model.predict({"x": 1.0})
            assert scored.y_pred == int(model.version)  # the answer is the version's own
            assert scored.probabilities == {model.version: 1.0}
            versions.append(int(model.version))
            await asyncio.sleep(0)
        seen.append(versions)

    async def publisher() -> None:
        for v in range(2, n_versions + 1):
            await holder.offer(published("logreg", str(v), f"k{v}"), loader)
            await holder.offer(published("logreg", str(v - 1), f"k{v - 1}"), loader)  # stale
        await asyncio.sleep(0.01)  # let every client predict with the last version
        done.set()

    await asyncio.gather(*(client() for _ in range(8)), publisher())
    assert holder.require().version == str(n_versions)
    for versions in seen:
        assert versions == sorted(versions), "a client saw an older version after a newer one"
        assert versions[-1] == n_versions


def test_threads_reading_while_swapping_see_whole_models() -> None:
    holder = ModelHolder("logreg")
    holder.swap(LoadedModel("logreg", "1", VersionModel(1)))
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                model = holder.require()
                assert model.predict({}).y_pred == int(model.version)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for v in range(2, 500):
        holder.swap(LoadedModel("logreg", str(v), VersionModel(v)))
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [] and holder.require().version == "499"


def test_the_holder_lists_the_newest_versions_only() -> None:
    holder = ModelHolder("lr", keep=3)
    for v in range(1, 13):
        holder.record(published("lr", str(v), f"k{v}"))
    assert holder.versions("lr") == ["10", "11", "12"]
