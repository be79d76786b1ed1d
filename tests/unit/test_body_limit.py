"""shared.body_limit: a body over the cap is a 413 before the app parses any of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.body_limit import BodyLimit

LIMIT = 1000


def _app(**options: Any) -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    reads: list[int] = []

    @app.post("/in")
    async def take(request: Request) -> JSONResponse:
        try:  # like /predict: anything the route did not expect is its 500
            body = await request.body()
        except Exception:
            return JSONResponse({"detail": "internal"}, status_code=500)
        reads.append(len(body))
        return JSONResponse({"n": len(body)})

    app.add_middleware(BodyLimit, max_bytes=LIMIT, **options)
    return app, reads


async def _post(app: FastAPI, content: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/in", content=content)


async def test_a_body_within_the_limit_passes() -> None:
    app, reads = _app()
    response = await _post(app, b"x" * LIMIT)
    assert response.status_code == 200 and reads == [LIMIT]


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    app, reads = _app()
    response = await _post(app, b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json() == {
        "detail": [
            {
                "loc": ["body"],
                "type": "too_large",
                "msg": f"the request body is {LIMIT + 1} bytes; at most {LIMIT} bytes are accepted",
            }
        ]
    }
    assert reads == []


async def test_a_chunked_body_is_cut_off_once_past_the_limit() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"x" * 100

    app, reads = _app(problem=lambda message: {"code": "too_large", "message": message})
    response = await _post(app, chunks())
    assert response.status_code == 413  # not the route's 500
    assert response.json()["detail"][0]["code"] == "too_large"
    assert "longer" in response.json()["detail"][0]["message"]
    assert reads == []
