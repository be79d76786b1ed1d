"""Alerts that reach people: every alert POSTed as JSON to each `ALERT_WEBHOOK_URLS`.

`Webhooks.send(alerts)` queues one delivery per alert and URL, once the alerts are on
the `alerts` topic; a background task POSTs them in order (one request at a time per
URL, so a receiver sees its alerts in the order they were raised). A delivery that
fails (no answer within `timeout_s`, a connection refused, a status other than 2xx)
is tried again after 0.5 s, 1 s, 2 s, ... (at most `MAX_BACKOFF_S` apart) until
`attempts` tries were made; then it is given up, logged and counted. A URL that keeps
failing delays only its own queue. The queue holds at most `max_pending` deliveries
per URL; past that the oldest is dropped (counted): the `alerts` topic keeps every
alert. Deliveries still queued when the service stops are lost (the topic has them).

The body is the alert's `Alert` JSON, exactly as on the topic (`schemas/`).
Prometheus: `driftline_monitoring_webhook_deliveries_total{outcome}` with `delivered`,
`failed` (given up), `dropped` (queue full), and `..._webhook_retries_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence

import httpx
from prometheus_client import CollectorRegistry, Counter

from shared.messages import Alert

__all__ = ["MAX_BACKOFF_S", "Webhooks", "parse_urls"]

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


def parse_urls(text: str) -> list[str]:
    """`ALERT_WEBHOOK_URLS`: comma-separated http(s) URLs; blanks ignored.

    >>> parse_urls(" http://a:9/x, ,https://b/y ")
    ['http://a:9/x', 'https://b/y']
    """
    urls = [u.strip() for u in text.split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"ALERT_WEBHOOK_URLS: {url!r} is not an http(s) URL")
    return urls


class Webhooks:
    """Delivers alerts to each URL in the background (see the module doc)."""

    def __init__(
        self,
        urls: Sequence[str],
        registry: CollectorRegistry,
        *,
        timeout_s: float = 5.0,
        attempts: int = 8,
        max_pending: int = 10_000,
    ) -> None:
        self.urls = list(urls)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._queues = {url: deque[bytes](maxlen=max_pending) for url in self.urls}
        self._wake = {url: asyncio.Event() for url in self.urls}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self.deliveries = Counter(
            "driftline_monitoring_webhook_deliveries",
            "Alert deliveries to webhook URLs, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "driftline_monitoring_webhook_retries",
            "Webhook deliveries tried again after a failure",
            registry=registry,
        )
        for outcome in ("delivered", "failed", "dropped"):
            self.deliveries.labels(outcome)

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout_s)
        self._tasks = [asyncio.create_task(self._deliver(url)) for url in self.urls]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    def send(self, alerts: Iterable[Alert]) -> None:
        """Queue each alert for every URL (returns at once)."""
        bodies = [alert.to_json() for alert in alerts]
        for url, queue in self._queues.items():
            for body in bodies:
                if len(queue) == queue.maxlen:
                    self.deliveries.labels("dropped").inc()
                queue.append(body)
            if bodies:
                self._wake[url].set()

    async def _deliver(self, url: str) -> None:
        queue, wake = self._queues[url], self._wake[url]
        while True:
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            body = queue[0]
            delivered = await self._post(url, body)
            if queue and queue[0] is body:  # not dropped meanwhile (queue full)
                queue.popleft()
            self.deliveries.labels("delivered" if delivered else "failed").inc()

    async def _post(self, url: str, body: bytes) -> bool:
        """POST `body` to `url`, retried with backoff; whether it was delivered."""
        assert self._client is not None
        delay = FIRST_BACKOFF_S
        for attempt in range(1, self.attempts + 1):
            try:
                answer = await self._client.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                if answer.is_success:
                    return True
                problem = f"HTTP {answer.status_code}"
            except httpx.HTTPError as error:
                problem = repr(error)
            if attempt == self.attempts:
                log.error("alert webhook %s failed %d times (%s): given up", url, attempt, problem)
                return False
            log.warning("alert webhook %s failed (%s); again in %.1f s", url, problem, delay)
            self.retries.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
        return False
