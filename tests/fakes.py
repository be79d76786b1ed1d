"""Small fakes shared by unit tests."""

from __future__ import annotations

from typing import Any

from river import base

__all__ = ["Recorder"]


class Recorder(base.Classifier):
    """A fake classifier: predicts the last label it learned and logs every call."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.last: Any = None

    def learn_one(self, x: dict, y: Any) -> None:
        self.log.append(("learn", x["id"], y))
        self.last = y

    def predict_proba_one(self, x: dict, **kwargs: Any) -> dict:
        return {} if self.last is None else {self.last: 1.0}

    def predict_one(self, x: dict, **kwargs: Any) -> Any:
        self.log.append(("predict", x["id"]))
        return self.last
