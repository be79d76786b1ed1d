"""Alert webhooks against a real local HTTP receiver: retried with backoff, in order,
counted; a URL that never answers is given up and does not hold the others back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from services.monitoring.webhooks import Webhooks, parse_urls
from shared.messages import Alert
from tests.support import WebhookReceiver, free_port


def _alert(i: int) -> Alert:
    return Alert(
        alert_id=f"a{i}",
        kind="concept_drift",
        subject="logreg:stream",
        detector="ADWIN",
        raised_at=datetime(2024, 5, 1, 12, i, tzinfo=UTC),
        details={"index": i},
    )


@pytest.fixture
def flaky() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=2)
    yield receiver
    receiver.close()


def _count(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value(
        "driftline_monitoring_webhook_deliveries_total", {"outcome": outcome}
    )


async def test_alerts_reach_every_url_in_order_despite_failures(flaky: WebhookReceiver) -> None:
    registry = CollectorRegistry()
    dead = f"http://127.0.0.1:{free_port()}/nobody"  # connection refused, every time
    hooks = Webhooks([flaky.url, dead], registry, timeout_s=2, attempts=3)
    hooks.start()
    try:
        hooks.send([_alert(1), _alert(2)])
        hooks.send([_alert(3)])
        got = await asyncio.to_thread(flaky.wait_for, 3, 20)
        assert [a["alert_id"] for a in got] == ["a1", "a2", "a3"]
        assert got[0] == _alert(1).model_dump(mode="json")
        for _ in range(200):  # the dead URL: 3 tries (0.5 s, then 1 s apart) per alert
            if _count(registry, "failed") == 1:
                break
            await asyncio.sleep(0.05)
        assert _count(registry, "delivered") == 3
        assert _count(registry, "failed") == 1
        retries = registry.get_sample_value("driftline_monitoring_webhook_retries_total")
        assert retries is not None and retries >= 4  # 2 for the flaky URL, 2 for the dead
    finally:
        await hooks.stop()


def test_urls_must_be_http() -> None:
    assert parse_urls("") == []
    with pytest.raises(ValueError, match="ftp://x"):
        parse_urls("http://ok/a,ftp://x")
