"""The gate in batches: every row accounted for across batch boundaries, results equal to one batch.

Tiny batches (3 to 7 rows) put a duplicate's two copies, a bot's events and a hard failure in
different batches; the events are streamed from a dataset directory, as the pipeline does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.batches import ParquetEvents
from shoprec.data.dataset import EventData
from shoprec.data.gate import run_gate
from shoprec.data.report import ReportPaths
from shoprec.data.validation import (
    BOT_ACTIVITY,
    DUPLICATE,
    OUTSIDE_WINDOW,
    QUARANTINE_REASONS,
    check_events,
    validate,
)
from shoprec.errors import DataValidationError

from tests.conftest import events_frame

NOW = pd.Timestamp("2025-01-01T00:00:00Z")
ITEMS = pd.DataFrame({S.ITEM_ID: ["i1", "i2", "i3"], S.PRICE: [5.0, 12.5, 3.0]})
KEY = [S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP, S.PRICE]


def _spread_log() -> pd.DataFrame:
    """12 events: a duplicate whose copies are rows 0 and 7, a bot whose 5 events are rows 2..10
    (4 on one day), an epoch-zero event (row 4) and one late event (row 11)."""
    return events_frame([
        ("u1", "i1", "view", "2024-03-01T10:00:00Z", 5.0),  # 0: first copy, stays clean
        ("u2", "i2", "view", "2024-03-01T11:00:00Z", 12.5),
        ("bot", "i1", "view", "2024-03-05T12:00:00Z", 5.0),  # 2: bot
        ("u2", "i3", "cart", "2024-03-01T11:05:00Z", 3.0),
        ("u3", "i2", "view", "1970-01-01T00:00:00Z", 12.5),  # 4: outside the window
        ("bot", "i2", "view", "2024-03-05T12:01:00Z", 12.5),  # 5: bot
        ("u2", "i3", "purchase", "2024-03-01T11:09:00Z", 3.0),
        ("u1", "i1", "view", "2024-03-01T10:00:00Z", 5.0),  # 7: copy of row 0
        ("bot", "i3", "view", "2024-03-05T12:02:00Z", 3.0),  # 8: bot
        ("bot", "i3", "cart", "2024-03-06T08:00:00Z", 3.0),  # 9: bot, a quiet day
        ("bot", "i1", "view", "2024-03-05T12:03:00Z", 5.0),  # 10: bot
        ("u1", "i2", "view", "2024-03-20T10:00:00Z", 12.5),  # 11: after window_end
    ])


CONFIG = ValidationConfig(now=NOW, max_events_per_user_day=3,
                          window_end=pd.Timestamp("2024-03-10T00:00:00Z"))


def _gate(tmp_path: Path, data: EventData, config: ValidationConfig, batch_rows: int,
          name: str) -> dict:
    """run_gate on `data` written as a dataset directory, streamed `batch_rows` at a time."""
    source = data.write(tmp_path / f"{name}-raw")
    out = tmp_path / name
    report = ReportPaths(out / "report.json", out / "report.md")
    outcome = run_gate(source, config, out / "clean", out / "quarantine", report,
                       batch_rows=batch_rows)
    written = json.loads(report.json.read_text())
    written.pop("created_at")
    return {
        "report": written,
        "outcome": outcome,
        "clean": pd.read_parquet(out / "clean" / S.EVENTS_FILE),
        "quarantine": pd.read_parquet(out / "quarantine" / S.QUARANTINE_FILE),
        "dataset": EventData.read(out / "clean"),
        "folder": out,
    }


def test_every_row_is_accounted_for_across_batch_boundaries(tmp_path) -> None:
    events = _spread_log()

    run = _gate(tmp_path, EventData(events, ITEMS, None, "spread"), CONFIG, 3, "small")

    report = run["report"]
    assert report["passed"] and report["rows_in"] == 12
    assert report["quarantined_by_reason"] == dict.fromkeys(QUARANTINE_REASONS, 0) | {
        OUTSIDE_WINDOW: 2, DUPLICATE: 1, BOT_ACTIVITY: 5}
    assert report["rows_clean"] + report["rows_quarantined"] == 12 == len(run["clean"]) + len(run["quarantine"])
    # The union of clean and quarantined rows is the input, row for row.
    back = pd.concat([run["clean"], run["quarantine"][run["clean"].columns]], ignore_index=True)
    pd.testing.assert_frame_equal(back[KEY].sort_values(KEY, ignore_index=True),
                                  events[KEY].sort_values(KEY, ignore_index=True))
    quarantine = run["quarantine"]
    reasons = dict(zip(run["quarantine"][S.TIMESTAMP], run["quarantine"][S.QUARANTINE_REASON]))
    # Rows 0 and 7 fall into batches 1 and 3: the first copy stays clean, the later one goes.
    first_copy = events.iloc[0]
    assert ((run["clean"][S.USER_ID] == "u1") & (run["clean"][S.TIMESTAMP] == first_copy[S.TIMESTAMP])).sum() == 1
    assert reasons[first_copy[S.TIMESTAMP]] == DUPLICATE
    # The bot's five events sit in four batches; its busiest day has 4 > 3: all five go,
    # its quiet day too.
    bot = run["quarantine"][run["quarantine"][S.USER_ID] == "bot"]
    assert len(bot) == 5 and (bot[S.QUARANTINE_REASON] == BOT_ACTIVITY).all()
    assert (bot[S.QUARANTINE_DETAIL] == "user has 4 events on one day (ceiling 3)").all()
    assert "bot" not in set(run["clean"][S.USER_ID])
    outside = quarantine[quarantine[S.QUARANTINE_REASON] == OUTSIDE_WINDOW]
    assert sorted(outside[S.USER_ID]) == ["u1", "u3"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks[DUPLICATE]["unexpected_count"] == 2 and checks[DUPLICATE]["element_count"] == 12
    assert [r[S.USER_ID] for r in checks[DUPLICATE]["sample_rows"]] == ["u1", "u1"]
    assert checks[BOT_ACTIVITY]["unexpected_count"] == 5
    assert checks[BOT_ACTIVITY]["sample_rows"] == [{S.USER_ID: "bot", "busiest_day_events": 4}]
    assert checks[OUTSIDE_WINDOW]["unexpected_count"] == 2
    # The clean directory is a data set like any other; nothing of the staging is left.
    assert len(run["dataset"].events) == 4 and list(run["dataset"].items[S.ITEM_ID]) == ["i1", "i2", "i3"]
    assert sorted(p.name for p in run["folder"].iterdir()) == ["clean", "quarantine", "report.json",
                                                               "report.md"]


@pytest.mark.parametrize("batch_rows", [3, 7])
def test_tiny_batches_give_the_one_batch_result_row_for_row(tmp_path, batch_rows: int) -> None:
    data = EventData(_spread_log(), ITEMS, None, "spread")

    one = _gate(tmp_path, data, CONFIG, 1_000_000, "one")
    many = _gate(tmp_path, data, CONFIG, batch_rows, "many")

    _assert_same(one, many)
    # The in-memory gate is the same code, in batches of its own.
    memory = validate(data, CONFIG, batch_rows=batch_rows)
    pd.testing.assert_frame_equal(memory.clean.events, validate(data, CONFIG).clean.events)
    pd.testing.assert_frame_equal(memory.quarantine.reset_index(drop=True), many["quarantine"],
                                  check_dtype=False)


def test_movielens_in_batches_equals_one_batch(tmp_path) -> None:
    from shoprec.data.loaders import load_movielens_100k

    data = load_movielens_100k()
    events = data.events
    # Plant copies whose first copy sits in an earlier batch than the later one.
    copies = events.iloc[[10, 30_000, 55_000]]
    events = pd.concat([events.iloc[:60_000], copies, events.iloc[60_000:], copies.iloc[:1]],
                       ignore_index=True)
    data = EventData(events, data.items, data.users, data.source, data.info)
    config = ValidationConfig(now=NOW, max_events_per_user_day=200)

    one = _gate(tmp_path, data, config, 1_000_000, "one")
    many = _gate(tmp_path, data, config, 25_000, "many")

    _assert_same(one, many)
    report = many["report"]
    assert report["quarantined_by_reason"][DUPLICATE] == 4
    assert report["quarantined_by_reason"][BOT_ACTIVITY] > 0
    assert report["rows_clean"] + report["rows_quarantined"] == len(events)


def test_a_hard_failure_in_a_late_batch_stops_the_gate_and_writes_nothing(tmp_path) -> None:
    events = _spread_log()
    events.loc[10, S.EVENT_TYPE] = "click"
    source = EventData(events, ITEMS).write(tmp_path / "raw")
    report = ReportPaths(tmp_path / "out" / "report.json", tmp_path / "out" / "report.md")

    with pytest.raises(DataValidationError) as raised:
        run_gate(source, CONFIG, tmp_path / "out" / "clean", tmp_path / "out" / "quarantine",
                 report, batch_rows=3)

    assert raised.value.failed_checks == ["event_type_in_set"]
    written = json.loads(report.json.read_text())
    check = next(c for c in written["checks"] if c["name"] == "event_type_in_set")
    assert check["unexpected_count"] == 1 and check["element_count"] == 12
    assert check["sample_rows"][0][S.EVENT_TYPE] == "click"
    assert written["rows_clean"] == 0 and written["quarantined_by_reason"] == {}
    # Batches 1-3 passed and were written to the staging folder; none of it is left.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.md"]


def test_the_gate_never_holds_more_than_a_batch(tmp_path) -> None:
    source = EventData(_spread_log(), ITEMS).write(tmp_path / "raw")
    seen: list[int] = []

    class Watched(ParquetEvents):
        def batches(self, rows: int):
            for batch in super().batches(rows):
                seen.append(len(batch))
                yield batch

    report = check_events(Watched(source / S.EVENTS_FILE), ITEMS, None, "watched", CONFIG,
                          batch_rows=5)

    assert report.passed and report.rows_in == 12
    assert max(seen) <= 5 and sum(seen) == 2 * 12  # two passes, every row in each


def _assert_same(one: dict, many: dict) -> None:
    assert one["report"] == many["report"]
    pd.testing.assert_frame_equal(one["clean"], many["clean"])
    pd.testing.assert_frame_equal(one["quarantine"], many["quarantine"])
