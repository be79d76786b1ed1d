"""Durations as written in pipeline files: `<number><unit>`, unit `s`, `m`, `h` or `d`.

>>> parse_duration("90s"), parse_duration("1.5h")
(datetime.timedelta(seconds=90), datetime.timedelta(seconds=5400))
>>> format_duration(parse_duration("60m"))
'1h'
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["UNITS", "format_duration", "parse_duration"]

UNITS: dict[str, timedelta] = {
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
}

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)(?P<unit>[smhd])")
_HINT = "expected <number><unit> with unit s, m, h or d, e.g. '90s', '15m', '1h', '30d'"


def parse_duration(text: object) -> timedelta:
    """Parse a positive duration such as `"90s"`, `"15m"`, `"1.5h"` or `"30d"`.

    Raises `ValueError` naming the expected form for anything else (including
    numbers without a unit, negative or zero durations, and non-strings).
    """
    if not isinstance(text, str):
        raise ValueError(f"{_HINT}; got {type(text).__name__} {text!r}")
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{_HINT}; got {text!r}")
    number = float(match["number"])
    if number <= 0:
        raise ValueError(f"duration must be positive; got {text!r}")
    try:
        duration = number * UNITS[match["unit"]]
    except OverflowError:
        raise ValueError(f"duration is too large; got {text!r}") from None
    if duration <= timedelta(0):
        raise ValueError(f"duration is shorter than a microsecond; got {text!r}")
    return duration


def format_duration(duration: timedelta) -> str:
    """The shortest `<number><unit>` that `parse_duration` reads back as `duration`."""
    if duration <= timedelta(0):
        raise ValueError(f"duration must be positive; got {duration!r}")
    for unit, size in UNITS.items():
        if duration % size == timedelta(0):
            return f"{duration // size}{unit}"
    return f"{duration.total_seconds()}s"
