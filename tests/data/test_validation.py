"""The validation gate: hard checks stop with a named reason; soft checks quarantine, losing nothing."""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.dataset import EventData
from shoprec.data.gate import run_gate
from shoprec.data.report import ReportPaths
from shoprec.data.validation import BOT_ACTIVITY, DUPLICATE, OUTSIDE_WINDOW, QUARANTINE_REASONS, validate
from shoprec.errors import DataValidationError

from tests.conftest import events_frame

NOW = pd.Timestamp("2025-01-01T00:00:00Z")
CONFIG = ValidationConfig(now=NOW)
ITEMS = pd.DataFrame({S.ITEM_ID: ["i1", "i2", "i3"], S.PRICE: [5.0, 12.5, 3.0]})


def _set(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object}) if not isinstance(value, float) else frame
        frame.loc[row, column] = value
        return frame
    return change


HARD_CASES = [
    ("missing column", lambda f: f.drop(columns=[S.EVENT_TYPE]), "event_type_present", S.EVENT_TYPE),
    ("null user", _set(S.USER_ID, 1, None), "user_id_not_null", S.USER_ID),
    ("null item", _set(S.ITEM_ID, 2, None), "item_id_not_null", S.ITEM_ID),
    ("null event type", _set(S.EVENT_TYPE, 2, None), "event_type_not_null", S.EVENT_TYPE),
    ("unparseable time", _set(S.TIMESTAMP, 3, "the day after tomorrow"), "timestamp_parseable",
     S.TIMESTAMP),
    ("future time", _set(S.TIMESTAMP, 0, pd.Timestamp("2030-01-01T00:00:00Z")),
     "timestamp_not_in_future", S.TIMESTAMP),
    ("unknown event type", _set(S.EVENT_TYPE, 4, "click"), "event_type_in_set", S.EVENT_TYPE),
    ("negative price", _set(S.PRICE, 5, -1.0), "price_not_negative", S.PRICE),
    ("text price", _set(S.PRICE, 5, "cheap"), "price_type", S.PRICE),
    ("unknown item", _set(S.ITEM_ID, 0, "i999"), "item_id_known", S.ITEM_ID),
    ("empty table", lambda f: f.iloc[:0], "events_not_empty", None),
]


@pytest.mark.parametrize("label, break_it, check_name, column", HARD_CASES,
                         ids=[case[0] for case in HARD_CASES])
def test_each_hard_check_stops_the_gate_naming_its_column(
    tmp_path, good_events: pd.DataFrame, label: str, break_it: Callable, check_name: str,
    column: str | None,
) -> None:
    data = EventData(break_it(good_events.copy()), ITEMS, None, "crafted")
    report = ReportPaths(tmp_path / "report.json", tmp_path / "report.md")

    with pytest.raises(DataValidationError) as raised:
        run_gate(data, CONFIG, tmp_path / "clean", tmp_path / "quarantine", report)

    assert check_name in raised.value.failed_checks
    assert str(report.markdown) in str(raised.value)
    written = json.loads(report.json.read_text())
    failed = {c["name"]: c for c in written["checks"] if not c["success"] and not c["skipped"]}
    assert failed[check_name]["column"] == column
    if column:
        assert f"'{column}'" in failed[check_name]["description"]
        assert column in report.markdown.read_text()
    # Nothing downstream: no clean data, no quarantine, and the input frame is untouched.
    assert not (tmp_path / "clean").exists() and not (tmp_path / "quarantine").exists()


def test_failed_check_shows_offending_rows_as_given(good_events: pd.DataFrame) -> None:
    broken = _set(S.TIMESTAMP, 3, "the day after tomorrow")(good_events.copy())
    outcome = validate(EventData(broken, ITEMS), CONFIG)
    check = next(c for c in outcome.report.checks if c.name == "timestamp_parseable")
    assert check.unexpected_count == 1
    assert check.sample_rows == [{S.USER_ID: "u2", S.ITEM_ID: "i2", S.EVENT_TYPE: "view",
                                  S.TIMESTAMP: "the day after tomorrow"}]


def test_missing_column_skips_the_checks_that_need_it(good_events: pd.DataFrame) -> None:
    outcome = validate(EventData(good_events.drop(columns=[S.TIMESTAMP])), CONFIG)
    skipped = {c.name for c in outcome.report.checks if c.skipped}
    assert {"timestamp_parseable", "timestamp_not_in_future", DUPLICATE} <= skipped
    assert outcome.report.failed_hard == ["timestamp_present"]


def test_duplicate_item_ids_in_items_table_stop_the_gate(good_events: pd.DataFrame) -> None:
    items = pd.concat([ITEMS, ITEMS.iloc[:1]], ignore_index=True)
    outcome = validate(EventData(good_events, items), CONFIG)
    assert outcome.report.failed_hard == ["items_item_id_unique"]


def _noisy_events() -> pd.DataFrame:
    """Valid events plus two exact duplicates, a bot (30 events in a day) and an epoch-zero event."""
    rows = [
        ("u1", "i1", "view", "2024-03-01T10:00:00Z", 5.0),
        ("u1", "i2", "view", "2024-03-01T10:05:00Z", 12.5),
        ("u2", "i3", "purchase", "2024-03-02T11:00:00Z", 3.0),
        ("u1", "i1", "view", "2024-03-01T10:00:00Z", 5.0),  # duplicate of row 0
        ("u2", "i3", "purchase", "2024-03-02T11:00:00Z", 3.0),  # duplicate of row 2
        ("u3", "i2", "view", "1970-01-01T00:00:00Z", 12.5),  # tracker placeholder time
    ]
    rows += [("bot", f"i{1 + n % 3}", "view", f"2024-03-05T12:{n:02d}:00Z", 1.0) for n in range(30)]
    rows += [("bot", "i1", "view", "2024-03-06T12:00:00Z", 1.0)]  # even its quiet days go
    return events_frame(rows)


def test_quarantine_accounts_for_every_row() -> None:
    events = _noisy_events()
    config = ValidationConfig(now=NOW, max_events_per_user_day=20)

    outcome = validate(EventData(events, ITEMS), config)

    report = outcome.report
    assert report.passed
    assert report.quarantined == dict.fromkeys(QUARANTINE_REASONS, 0) | {
        OUTSIDE_WINDOW: 1, DUPLICATE: 2, BOT_ACTIVITY: 31}
    assert report.rows_clean + sum(report.quarantined.values()) == report.rows_in == len(events)
    # The union of clean and quarantined rows is the input, row for row.
    back = pd.concat([outcome.clean.events,
                      outcome.quarantine.drop(columns=[S.QUARANTINE_REASON, S.QUARANTINE_DETAIL])])
    key = [S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP, S.PRICE]
    pd.testing.assert_frame_equal(
        back[key].sort_values(key, ignore_index=True), events[key].sort_values(key, ignore_index=True)
    )
    # The first copy of a duplicate stays clean; the bot's every event is quarantined.
    assert len(outcome.clean.events) == 2 + 0 + 1
    assert set(outcome.clean.events[S.USER_ID]) == {"u1", "u2"}
    bot = outcome.quarantine[outcome.quarantine[S.USER_ID] == "bot"]
    assert (bot[S.QUARANTINE_REASON] == BOT_ACTIVITY).all() and len(bot) == 31
    assert "30 events on one day" in bot[S.QUARANTINE_DETAIL].iloc[0]
    epoch = outcome.quarantine[outcome.quarantine[S.USER_ID] == "u3"]
    assert epoch[S.QUARANTINE_REASON].tolist() == [OUTSIDE_WINDOW]
    soft = {c.name: c for c in report.checks if c.severity == "soft"}
    assert not soft[BOT_ACTIVITY].success and soft[BOT_ACTIVITY].sample_rows == [
        {S.USER_ID: "bot", "busiest_day_events": 30}]
    assert not soft[DUPLICATE].success and not soft[OUTSIDE_WINDOW].success


def test_gate_writes_clean_quarantine_and_readable_report(tmp_path) -> None:
    config = ValidationConfig(now=NOW, max_events_per_user_day=20)
    report = ReportPaths(tmp_path / "r.json", tmp_path / "r.md")

    run_gate(EventData(_noisy_events(), ITEMS, None, "noisy"), config, tmp_path / "clean",
             tmp_path / "quarantine", report)

    clean = EventData.read(tmp_path / "clean")
    quarantine = pd.read_parquet(tmp_path / "quarantine" / S.QUARANTINE_FILE)
    assert len(clean.events) == 3 and len(quarantine) == 34
    assert json.loads((tmp_path / "clean" / S.DATASET_MANIFEST).read_text())["snapshot_id"]
    page = report.markdown.read_text()
    assert "**Verdict: PASSED**" in page
    assert "| bot_activity | 31 |" in page
    summary = json.loads(report.json.read_text())
    assert summary["rows_in"] == 37 and summary["rows_quarantined"] == 34
    assert {c["expectation"] for c in summary["checks"]} >= {
        "expect_column_values_to_not_be_null", "expect_compound_columns_to_be_unique"}


def test_window_end_quarantines_late_events(good_events: pd.DataFrame) -> None:
    config = ValidationConfig(now=NOW, window_end=pd.Timestamp("2024-03-02T00:00:00Z"))
    outcome = validate(EventData(good_events), config)
    assert outcome.report.quarantined[OUTSIDE_WINDOW] == 3
    assert outcome.clean.events[S.TIMESTAMP].max() < pd.Timestamp("2024-03-02T00:00:00Z")


def test_real_instacart_passes_the_gate() -> None:
    from shoprec.data.loaders import load_instacart

    outcome = validate(load_instacart())
    assert outcome.report.passed
    assert outcome.report.rows_clean + sum(outcome.report.quarantined.values()) == 150_000
    assert np.isnan(outcome.clean.events[S.PRICE]).all()


def test_a_blank_session_id_is_a_missing_one() -> None:
    from shoprec.data.validation import normalize_events

    events = pd.DataFrame({S.USER_ID: ["u1"] * 4, S.ITEM_ID: ["a", "b", "c", "d"],
                           S.TIMESTAMP: pd.date_range("2024-01-01", periods=4, freq="min", tz="UTC"),
                           S.EVENT_TYPE: [S.PURCHASE] * 4, S.SESSION_ID: ["o1", "", "  ", None]})
    clean = normalize_events(events)
    assert clean[S.SESSION_ID].isna().tolist() == [False, True, True, True]
    assert list(clean[S.SESSION_ID].cat.categories) == ["o1"] and len(clean) == 4  # no event lost
