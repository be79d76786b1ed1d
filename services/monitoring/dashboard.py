"""The dashboard: one static page that draws itself from the JSON endpoints.

`static/index.html`, `static/dashboard.css` and `static/dashboard.js` are shipped
with the package (no build step, no CDN: the machine running it may have no
internet). The script polls `/api/summary`, `/api/timeline`, `/api/drift`,
`/api/alerts` and `/api/lag` every `POLL_MS` (2 s) and redraws: hand-written SVG
for the charts, plain tables for the numbers. So the page updates live without a
reload; each poll costs the service a few small JSON documents (their sizes are
bounded by the histories': see `timeline` and `lag`).

>>> page = asset("index.html")
>>> page.media_type, b"dashboard.js" in page.body
('text/html; charset=utf-8', True)
>>> asset("../config.py")
Traceback (most recent call last):
...
KeyError: '../config.py'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

__all__ = ["ASSETS", "Asset", "asset"]

# what the page is made of, and how each is served
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    """One file of the page, read once."""

    body: bytes
    media_type: str


@cache
def asset(name: str) -> Asset:
    """The page's file `name` (only the names in `ASSETS`)."""
    if name not in ASSETS:
        raise KeyError(name)
    body = files("services.monitoring").joinpath("static", name).read_bytes()
    return Asset(body, ASSETS[name])
