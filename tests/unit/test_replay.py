"""The replay plan: ids, times, label delays and arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.replay import ReplayPlan, plan_messages, rows_from_source

T0 = datetime(2020, 1, 1, tzinfo=UTC)


def _rows(n: int) -> list[tuple[dict[str, object], int]]:
    return [({"x": float(i)}, i % 2) for i in range(n)]


def _times(kind: str, messages: list[tuple[str, str, dict[str, object]]]) -> dict[str, str]:
    field = "event_time" if kind == "event" else "label_time"
    return {str(m["event_id"]): str(m[field]) for k, _, m in messages if k == kind}


def test_label_right_after_its_event_by_default() -> None:
    messages = list(plan_messages(_rows(3), ReplayPlan("r")))
    assert [(k, m["event_id"]) for k, _, m in messages] == [
        ("event", "r-0"), ("label", "r-0"), ("event", "r-1"), ("label", "r-1"),
        ("event", "r-2"), ("label", "r-2"),
    ]  # fmt: skip
    assert _times("label", messages) == _times("event", messages)
    assert messages[0][2]["event_time"] == T0.isoformat()


def test_label_delay_in_rows_uses_the_event_time_of_the_later_row() -> None:
    messages = list(plan_messages(_rows(5), ReplayPlan("r", label_delay="2")))
    labels = _times("label", messages)
    assert labels["r-0"] == (T0 + timedelta(seconds=2)).isoformat()
    assert labels["r-4"] == (T0 + timedelta(seconds=6)).isoformat(), (
        "past the end, the clock goes on"
    )
    order = [(k, m["event_id"]) for k, _, m in messages]
    assert order.index(("label", "r-0")) < order.index(("event", "r-2")), (
        "due at t: before the event at t"
    )
    assert order.index(("label", "r-0")) > order.index(("event", "r-1"))


def test_label_delay_as_a_duration() -> None:
    messages = list(
        plan_messages(_rows(3), ReplayPlan("r", label_delay="90s", step=timedelta(minutes=1)))
    )
    assert _times("label", messages)["r-0"] == (T0 + timedelta(seconds=90)).isoformat()
    order = [(k, m["event_id"]) for k, _, m in messages]
    assert order == [
        ("event", "r-0"), ("event", "r-1"), ("label", "r-0"), ("event", "r-2"),
        ("label", "r-1"), ("label", "r-2"),
    ]  # fmt: skip


def test_entities_and_time_columns(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text(
        "who,when,amount,kind,y\nann,2024-05-01T10:00:00Z,3.5,red,1\nbob,2024-05-01T10:00:05Z,,blue,0\n"
    )
    rows = rows_from_source(str(csv), label_column="y")
    plan = ReplayPlan("d", entity_column="who", time_column="when")
    messages = list(plan_messages(rows, plan))
    first_key, first = messages[0][1], messages[0][2]
    assert first_key == "ann"
    assert first == {
        "event_id": "d-0",
        "event_time": "2024-05-01T10:00:00+00:00",
        "entity_id": "ann",
        "features": {"amount": 3.5, "kind": "red"},
    }
    labels = [(key, m) for k, key, m in messages if k == "label"]
    assert labels[1] == (
        "bob",
        {
            "event_id": "d-1",
            "label": 0,
            "entity_id": "bob",
            "label_time": "2024-05-01T10:00:05+00:00",
        },
    )
    assert messages[2][2]["features"] == {"amount": None, "kind": "blue"}


def test_missing_label_column_is_a_clear_error(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no label column 'target'"):
        list(rows_from_source(str(csv)))


def test_synthetic_drift_switches_concept_halfway() -> None:
    rows = list(rows_from_source("synth:agrawal-drift", n=2000))
    plain = list(rows_from_source("synth:agrawal", n=2000))
    assert len(rows) == 2000
    assert rows[:1000] == plain[:1000]
    assert rows[1000:] != plain[1000:]
    with pytest.raises(ValueError, match="unknown synthetic stream"):
        list(rows_from_source("synth:nope"))
