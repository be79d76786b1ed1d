"""A cap on request bodies, applied before any of the body is parsed.

`BodyLimit` wraps an ASGI app: a request whose `Content-Length` is over `max_bytes`
is answered 413 without reading its body; one without a length (chunked) is read
through a counter and answered 413 as soon as it passes `max_bytes`, so a client
cannot make a service hold more than `max_bytes` of its body in memory. The answer
is JSON in the shape of the services' other 4xx bodies, naming the body and the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "fastapi_problem"]


class _TooLarge(BaseException):
    """Raised from `receive` into the app: a BaseException, so that no handler of the
    app's own (a route's `except Exception`) turns it into a 500 on its way out."""


def fastapi_problem(message: str) -> dict[str, Any]:
    """The problem in FastAPI's shape (serving's 422s have it)."""
    return {"loc": ["body"], "type": "too_large", "msg": message}


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes` (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        problem: Callable[[str], dict[str, Any]] = fastapi_problem,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.problem = problem  # the service's shape of one problem, given the message

    def _body(self, got: str) -> bytes:
        message = f"the request body is {got}; at most {self.max_bytes} bytes are accepted"
        return orjson.dumps({"detail": [self.problem(message)]})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await _answer(send, self._body(f"{int(value)} bytes"))
                    return
                break
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _answer(send, self._body("longer"))


async def _answer(send: Send, body: bytes) -> None:
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
