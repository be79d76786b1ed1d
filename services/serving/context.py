"""What the HTTP routes depend on, wired by the bootstrap and injected as `Annotated` deps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from services.serving.models import ModelHolder
from shared.feature_store import RowReader
from shared.features import FeatureComputer
from shared.http_keys import KeyCheck
from shared.messages import ChampionChanged

__all__ = ["Context", "PredictionSink", "ServingContext"]


class PredictionSink(Protocol):
    """Where HTTP predictions go; must return at once (the send happens in the background).

    `key` is the entity's, `value` a `Prediction` message's JSON.
    """

    def publish_nowait(self, key: bytes, value: bytes) -> None: ...


def _always_alive() -> tuple[bool, dict[str, Any]]:
    return True, {}


@dataclass
class ServingContext:
    """The service's adapters and state, as the routes see them."""

    holder: ModelHolder
    store: RowReader
    computer: FeatureComputer
    sink: PredictionSink
    # (alive, details): are the process's consumers running and polling?
    liveness: Callable[[], tuple[bool, dict[str, Any]]] = field(default=_always_alive)
    # the key POST /predict needs (none: open, as `PREDICT_NEEDS_KEY=false` makes it)
    reader: KeyCheck = field(default_factory=lambda: KeyCheck(None, "reader"))
    # the admin endpoints: their key (None refuses every call), the pipeline's models,
    # and how a change of champion is sent (on `champions`, read back by every process)
    admin: KeyCheck | None = None
    models: tuple[str, ...] = ()
    send_change: Callable[[ChampionChanged], Awaitable[None]] | None = None
    admin_wait_s: float = 10.0


def get_context(request: Request) -> ServingContext:
    context: ServingContext = request.app.state.context
    return context


Context = Annotated[ServingContext, Depends(get_context)]
