"""Bench rows, the printed table and `.bench/results.json`."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["Row", "machine", "print_table", "progress", "write_results"]


@dataclass
class Row:
    """One figure beside its baseline from the same run."""

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else 0.0


@contextmanager
def progress(total: int, desc: str) -> Iterator[tqdm]:
    bar = tqdm(total=total, desc=desc, unit="ev", leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def print_table(rows: list[Row]) -> str:
    header = ("figure", "value", "unit", "baseline (same run)", "baseline value", "ratio")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.name,
                _figure(row.value),
                row.unit,
                row.baseline,
                _figure(row.baseline_value),
                f"{row.ratio:.3f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for i, line in enumerate(lines):
        text.append(
            "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |"
        )
        if i == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    table = "\n".join(text)
    print(table)
    return table


def write_results(rows: list[Row], table: str, path: Path = Path(".bench/results.json")) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    about = machine()
    head = f"{about['cores']} cores, {about['memory_gib']} GiB, {about['cpu']}, {about['when']}"
    path.with_suffix(".md").write_text(f"Machine: {head}\n\n{table}\n")
    body = {
        "machine": machine(),
        "rows": [{**asdict(row), "ratio": row.ratio} for row in rows],
    }
    path.write_text(json.dumps(body, indent=2) + "\n")
