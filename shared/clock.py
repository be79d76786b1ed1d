"""Wall-clock time, in one place so handlers can be given a fixed clock in tests."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)
