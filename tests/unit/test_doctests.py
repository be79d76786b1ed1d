"""The examples in docstrings run as tests: every module with a `>>>` line."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for package in ("services", "shared")
    for path in (ROOT / package).rglob("*.py")
    if ">>> " in path.read_text()
)


def test_the_doctested_modules_are_found() -> None:
    assert "services.features.handlers" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
