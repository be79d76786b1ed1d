"""Durations in pipeline files: `<number><unit>`, read exactly, refused clearly."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("30d", timedelta(days=30)),
        ("1.5h", timedelta(minutes=90)),
        ("0.5s", timedelta(milliseconds=500)),
        (".25d", timedelta(hours=6)),
        (" 2m ", timedelta(minutes=2)),
    ],
)
def test_valid_durations_parse_exactly(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "1", "h", "1w", "1H", "1 h", "-1h", "+1h", "1.h", "1e3s", "1h30m", "0s", "0.0h", "nanh"],
)
def test_malformed_or_non_positive_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text) if text else "got ''"):
        parse_duration(text)


@pytest.mark.parametrize("value", [3600, 1.5, None, True, ["1h"]])
def test_non_strings_are_refused_with_the_expected_form(value: object) -> None:
    with pytest.raises(ValueError, match="unit s, m, h or d"):
        parse_duration(value)


def test_absurd_durations_are_refused_not_overflowed() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration("99999999999999d")
    with pytest.raises(ValueError, match="shorter than a microsecond"):
        parse_duration("0.0000001s")


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=60), "1h"),
        (timedelta(hours=48), "2d"),
        (timedelta(minutes=90), "90m"),
        (timedelta(milliseconds=1500), "1.5s"),
    ],
)
def test_format_is_the_shortest_form_and_reads_back(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text
    assert parse_duration(text) == duration


def test_format_refuses_non_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        format_duration(timedelta(0))
