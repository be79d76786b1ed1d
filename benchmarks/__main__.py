"""`make bench`: throughput of Driftline's hot paths, as ratios to same-run baselines.

These machines are noisy, so each figure is compared with a baseline measured
alongside it (best of several repeats), never with an absolute number.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from shared.messages import Event
from shared.validation import validate_raw

__all__ = ["main"]

REPEATS = 5


def _best_rate(work: Callable[[], int]) -> float:
    """Items per second, best of REPEATS runs."""
    best = 0.0
    for _ in range(REPEATS):
        started = time.perf_counter()
        n = work()
        best = max(best, n / (time.perf_counter() - started))
    return best


def _events(n: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "event_id": f"e{i}",
                "event_time": "2024-05-01T12:00:00Z",
                "entity_id": f"u{i % 100}",
                "features": {f"f{j}": i * 0.5 + j for j in range(8)} | {"country": "NL"},
            }
        ).encode()
        for i in range(n)
    ]


def bench_validation(n: int = 20_000) -> None:
    raw = _events(n)

    def baseline() -> int:  # the least any consumer must do: parse the JSON
        for value in raw:
            json.loads(value)
        return n

    def ours() -> int:  # strict parse + JSON Schema + typed model
        for value in raw:
            validate_raw(Event, value)
        return n

    base, mine = _best_rate(baseline), _best_rate(ours)
    print(
        f"ingestion validation: {mine:,.0f} events/s; json.loads alone {base:,.0f}/s; "
        f"ratio {mine / base:.3f} (cost of full validation: {base / mine:.1f}x a bare parse)"
    )


def main() -> None:
    bench_validation()


if __name__ == "__main__":
    main()
