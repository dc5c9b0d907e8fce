"""Data that is slightly wrong, not wrong: quarantined below a share, named in the report.

Every test streams a real file (or dataset directory) through the real gate (Great
Expectations, DuckDB) in small batches, so a defect and its neighbours sit in different
batches, and reads back what was written: the report and the quarantine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.dataset import EventData
from shoprec.data.gate import run_gate
from shoprec.data.loaders import load_dataset, load_event_files
from shoprec.data.report import ReportPaths
from shoprec.data.validation import (
    FUTURE_TIMESTAMP,
    INVALID_ID,
    INVALID_QUANTITY,
    OUTSIDE_WINDOW,
    UNKNOWN_ITEM,
)
from shoprec.errors import DataValidationError

NOW = pd.Timestamp("2025-01-01T00:00:00Z")
CONFIG = ValidationConfig(now=NOW)
ITEMS = pd.DataFrame({S.ITEM_ID: ["i1", "i2", "i3"]})
START = pd.Timestamp("2024-03-01T00:00:00Z")


def _events(n: int) -> pd.DataFrame:
    """`n` valid, distinct events of ten users on three items, one an hour from START."""
    return pd.DataFrame({
        S.USER_ID: [f"u{k % 10}" for k in range(n)],
        S.ITEM_ID: [f"i{1 + k % 3}" for k in range(n)],
        S.EVENT_TYPE: "view",
        S.TIMESTAMP: START + pd.to_timedelta(np.arange(n), unit="h"),
        S.QUANTITY: 1.0,
    })


def _gate(tmp_path: Path, data: EventData | Path, config: ValidationConfig = CONFIG,
          batch_rows: int = 7) -> dict:
    """run_gate streaming `data` (a dataset directory; an EventData is written as one first)."""
    source = data.write(tmp_path / "raw") if isinstance(data, EventData) else data
    out = tmp_path / "out"
    report = ReportPaths(out / "report.json", out / "report.md")
    try:
        run_gate(source, config, out / "clean", out / "quarantine", report, batch_rows=batch_rows)
        error = None
    except DataValidationError as exc:
        error = exc
    written = json.loads(report.json.read_text())
    passed = error is None
    return {
        "error": error,
        "report": written,
        "page": report.markdown.read_text(),
        "clean": pd.read_parquet(out / "clean" / S.EVENTS_FILE) if passed else None,
        "quarantine": pd.read_parquet(out / "quarantine" / S.QUARANTINE_FILE) if passed else None,
        "out": out,
    }


def _checks(run: dict) -> dict[str, dict]:
    return {c["name"]: c for c in run["report"]["checks"]}


# --- one future-dated event, one unknown item: quarantined, not fatal -------------------------

def test_a_future_event_and_an_unknown_item_are_quarantined_and_the_run_goes_on(tmp_path) -> None:
    events = _events(200)
    events.loc[13, S.TIMESTAMP] = pd.Timestamp("2025-06-01T08:00:00Z")  # a client clock ahead
    events.loc[150, S.ITEM_ID] = "i999"  # not in the items table

    run = _gate(tmp_path, EventData(events, ITEMS, None, "skewed"))

    assert run["error"] is None
    report = run["report"]
    assert report["quarantined_by_reason"][FUTURE_TIMESTAMP] == 1
    assert report["quarantined_by_reason"][UNKNOWN_ITEM] == 1
    assert report["rows_clean"] == 198 == len(run["clean"])
    assert len(run["clean"]) + len(run["quarantine"]) == len(events)
    quarantine = run["quarantine"].set_index(S.QUARANTINE_REASON)
    future = quarantine.loc[[FUTURE_TIMESTAMP]]
    assert future[S.TIMESTAMP].tolist() == [pd.Timestamp("2025-06-01T08:00:00Z")]
    assert future[S.QUARANTINE_DETAIL].iloc[0] == (
        "timestamp 2025-06-01 08:00:00+00:00 is after now (2025-01-01T00:00:00+00:00): "
        "a skewed client clock?")
    unknown = quarantine.loc[[UNKNOWN_ITEM]]
    assert unknown[S.ITEM_ID].tolist() == ["i999"]
    assert unknown[S.QUARANTINE_DETAIL].iloc[0] == "'item_id' i999 is not in the items table"
    assert "i999" not in set(run["clean"][S.ITEM_ID])
    checks = _checks(run)
    for name in ("timestamp_not_in_future", "item_id_known"):
        assert checks[name]["success"] and checks[name]["unexpected_count"] == 1
        assert checks[name]["tolerance"] == 0.01 and checks[name]["element_count"] == 200
    page = run["page"]
    assert "**Verdict: PASSED**" in page
    assert "| future_timestamp | 1 |" in page and "| unknown_item | 1 |" in page
    assert "| quarantined | hard above 1% | events |" in page
    assert "1 of 200 events (0.50%) fail it, within the 1.00% the run tolerates." in page
    assert "| u3 | i2 | view | 2025-06-01 08:00:00+00:00 |" in page  # the sample row, as given


def test_a_share_under_the_ceiling_overall_passes_though_one_batch_is_far_over(tmp_path) -> None:
    """2 of 200 is 1%: allowed, though the batch of 7 holding both is 29% future."""
    events = _events(200)
    events.loc[[15, 16], S.TIMESTAMP] = pd.Timestamp("2026-01-01T00:00:00Z")

    run = _gate(tmp_path, EventData(events, ITEMS, None, "skewed"))

    assert run["error"] is None
    assert run["report"]["quarantined_by_reason"][FUTURE_TIMESTAMP] == 2
    assert len(run["clean"]) == 198


def test_above_the_share_the_gate_stops_naming_the_check_and_the_share(tmp_path) -> None:
    events = _events(100)
    events.loc[[3, 40, 90], S.TIMESTAMP] = pd.Timestamp("2026-01-01T00:00:00Z")  # 3%: a clock bug
    data = EventData(events, ITEMS, None, "skewed")

    run = _gate(tmp_path / "strict", data)

    assert run["error"] is not None and run["error"].failed_checks == ["timestamp_not_in_future"]
    assert "3 of 100 events (3.00%) fail it, over the 1.00% the run tolerates." in run["page"]
    assert "**Verdict: FAILED: timestamp_not_in_future**" in run["page"]
    assert sorted(p.name for p in run["out"].iterdir()) == ["report.json", "report.md"]
    # The share is a setting: at 5% the same log passes with its three rows quarantined.
    loose = _gate(tmp_path / "loose", data, ValidationConfig(now=NOW, max_quarantine_share=0.05))
    assert loose["error"] is None
    assert loose["quarantine"][S.QUARANTINE_REASON].tolist() == [FUTURE_TIMESTAMP] * 3
    assert "hard above 5%" in loose["page"]


def test_share_zero_makes_one_row_fatal_again(tmp_path) -> None:
    events = _events(200)
    events.loc[0, S.ITEM_ID] = "i999"

    run = _gate(tmp_path, EventData(events, ITEMS), ValidationConfig(now=NOW, max_quarantine_share=0))

    assert run["error"].failed_checks == ["item_id_known"]


def test_the_share_is_checked_when_the_settings_are_made() -> None:
    with pytest.raises(ValueError, match="max_quarantine_share must be between 0 and 1"):
        ValidationConfig(max_quarantine_share=1.5)
    with pytest.raises(ValueError, match="timestamp_unit must be one of auto, s, ms, us, ns"):
        ValidationConfig.from_strings(timestamp_unit="hours")


# --- epoch units and time zones ---------------------------------------------------------------

@pytest.mark.parametrize("unit, per_second", [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
def test_epoch_numbers_are_read_in_their_detected_unit(tmp_path, unit: str, per_second: int) -> None:
    events = _events(40)
    seconds = events[S.TIMESTAMP].astype("int64") // 10**9
    events[S.TIMESTAMP] = seconds * per_second
    events.loc[5, S.TIMESTAMP] = 0  # a tracker placeholder: it must not move the detection
    path = tmp_path / "events.parquet"
    events.to_parquet(path)

    run = _gate(tmp_path, load_event_files(path).write(tmp_path / "raw"))

    assert run["error"] is None, run["page"]
    expected = pd.to_datetime(seconds, unit="s", utc=True).drop(index=5)
    assert sorted(run["clean"][S.TIMESTAMP]) == sorted(expected)
    assert run["quarantine"][S.QUARANTINE_REASON].tolist() == [OUTSIDE_WINDOW]  # 1970-01-01
    assert run["report"]["timestamps"]["unit"] == unit
    assert run["report"]["timestamps"]["unit_source"] == "detected"
    name = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}[unit]
    assert f"- 40 timestamps are numbers, read as Unix epoch {name} (detected from their magnitude" in run["page"]


def test_epoch_milliseconds_in_a_csv_are_read_as_such(tmp_path) -> None:
    """The reported case: a CSV of epoch milliseconds failed as 'unparseable'."""
    events = _events(30)
    events[S.TIMESTAMP] = events[S.TIMESTAMP].astype("int64") // 10**6
    path = tmp_path / "events.csv"
    events.to_csv(path, index=False)

    run = _gate(tmp_path, load_event_files(path).write(tmp_path / "raw"))

    assert run["error"] is None
    assert run["clean"][S.TIMESTAMP].min() == START
    assert _checks(run)["timestamp_parseable"]["success"]


def test_a_given_unit_is_used_and_said(tmp_path) -> None:
    """Seconds told to be milliseconds land in January 1970: quarantined, and the report says
    the unit was given, not detected."""
    events = _events(20)
    events[S.TIMESTAMP] = events[S.TIMESTAMP].astype("int64") // 10**9
    config = ValidationConfig(now=NOW, timestamp_unit="ms")

    run = _gate(tmp_path, EventData(events, ITEMS), config)

    assert run["report"]["timestamps"]["unit"] == "ms"
    assert "read as Unix epoch milliseconds (as given by --timestamp-unit)." in run["page"]
    assert run["report"]["quarantined_by_reason"][OUTSIDE_WINDOW] == 20
    assert run["report"]["config"]["timestamp_unit"] == "ms"


def test_zone_less_timestamps_are_taken_as_utc_and_the_report_says_so(tmp_path) -> None:
    events = _events(12)
    text = events[S.TIMESTAMP].dt.strftime("%Y-%m-%d %H:%M:%S")
    events[S.TIMESTAMP] = text.where(events.index >= 4, text + "+00:00")  # 4 with an offset
    events.loc[0, S.TIMESTAMP] = "2024-03-01 01:00:00+01:00"  # the first row's own zone
    path = tmp_path / "events.csv"
    events.to_csv(path, index=False)

    run = _gate(tmp_path, load_event_files(path).write(tmp_path / "raw"), batch_rows=5)

    assert run["error"] is None
    assert run["clean"][S.TIMESTAMP].iloc[0] == START  # 01:00 at +01:00 is midnight UTC
    assert run["clean"][S.TIMESTAMP].iloc[8] == START + pd.Timedelta(hours=8)  # taken as UTC
    assert run["report"]["timestamps"]["without_time_zone_taken_as_utc"] == 8
    assert run["report"]["timestamps"]["with_time_zone"] == 4
    assert ("- 8 timestamps carry no time zone and were taken as UTC: if they are local times, "
            "add their offset or convert them before ingesting.") in run["page"]
    assert "- 4 timestamps carry a time zone or offset: kept as the same instants, in UTC." in run["page"]


def test_zone_less_parquet_date_times_are_named_too(tmp_path) -> None:
    events = _events(10)
    events[S.TIMESTAMP] = events[S.TIMESTAMP].dt.tz_localize(None)
    path = tmp_path / "events.parquet"
    events.to_parquet(path)

    run = _gate(tmp_path, load_event_files(path).write(tmp_path / "raw"))

    assert run["clean"][S.TIMESTAMP].iloc[0] == START
    assert "- 10 timestamps carry no time zone and were taken as UTC" in run["page"]


# --- quantity, float ids ----------------------------------------------------------------------

def test_a_missing_or_non_positive_quantity_is_quarantined_naming_it(tmp_path) -> None:
    events = _events(400)
    events.loc[[10, 20, 30, 40], S.QUANTITY] = [np.nan, 0.0, -2.0, np.inf]

    run = _gate(tmp_path, EventData(events, ITEMS))

    assert run["error"] is None
    bad = run["quarantine"]
    assert bad[S.QUARANTINE_REASON].tolist() == [INVALID_QUANTITY] * 4
    assert bad[S.QUARANTINE_DETAIL].tolist() == [
        "'quantity' is missing", "'quantity' 0.0 is not a positive number",
        "'quantity' -2.0 is not a positive number", "'quantity' inf is not a positive number"]
    assert (run["clean"][S.QUANTITY] > 0).all() and len(run["clean"]) == 396
    check = _checks(run)["quantity_positive"]
    assert check["column"] == S.QUANTITY and check["unexpected_count"] == 4


def test_many_bad_quantities_stop_the_gate_naming_the_column(tmp_path) -> None:
    events = _events(50)
    events.loc[::10, S.QUANTITY] = -1.0  # 10%

    run = _gate(tmp_path, EventData(events, ITEMS))

    assert run["error"].failed_checks == ["quantity_positive"]
    check = _checks(run)["quantity_positive"]
    assert check["column"] == S.QUANTITY and "'quantity'" in check["description"]
    assert "5 of 50 events (10.00%) fail it" in run["page"]


def test_a_source_without_quantity_is_not_judged_on_it(tmp_path) -> None:
    run = _gate(tmp_path, EventData(_events(20).drop(columns=[S.QUANTITY]), ITEMS))
    assert run["error"] is None and "quantity_positive" not in _checks(run)


def test_a_fractional_float_id_is_quarantined_never_truncated(tmp_path) -> None:
    events = _events(300)
    events[S.USER_ID] = (events.index % 10 + 10).astype("float64")  # 10.0 .. 19.0: whole
    events.loc[77, S.USER_ID] = 12.7  # would have become user "12"
    events.loc[5, S.USER_ID] = np.nan  # why a file's integer ids come as floats (stops the gate)
    path = tmp_path / "events.parquet"
    events.drop(index=5).to_parquet(path)

    run = _gate(tmp_path, load_event_files(path).write(tmp_path / "raw"))

    assert run["error"] is None
    assert sorted(set(run["clean"][S.USER_ID])) == [str(u) for u in range(10, 20)]  # 12.0 -> "12"
    bad = run["quarantine"]
    assert bad[S.QUARANTINE_REASON].tolist() == [INVALID_ID]
    assert bad[S.USER_ID].tolist() == ["12.7"]
    assert bad[S.QUARANTINE_DETAIL].tolist() == [
        "'user_id' is 12.7, not a whole number (a float id would be truncated)"]
    check = _checks(run)["user_id_whole_number"]
    assert check["column"] == S.USER_ID and check["unexpected_count"] == 1
    assert check["sample_rows"][0][S.USER_ID] == "12.7"
    # Read back as a file: the null id made the column float; the gate still fails on it.
    nulls = _gate(tmp_path / "nulls", EventData(events, ITEMS))
    assert nulls["error"].failed_checks == ["user_id_not_null"]


def test_many_fractional_item_ids_stop_the_gate_naming_the_column(tmp_path) -> None:
    events = _events(30)
    events[S.ITEM_ID] = np.where(events.index % 2 == 0, 1.0, 1.5)
    items = pd.DataFrame({S.ITEM_ID: ["1"]})

    run = _gate(tmp_path, EventData(events, items))

    assert "item_id_whole_number" in run["error"].failed_checks
    check = _checks(run)["item_id_whole_number"]
    assert check["column"] == S.ITEM_ID and "'item_id'" in check["description"]
    assert check["unexpected_count"] == 15
    assert {row[S.ITEM_ID] for row in check["sample_rows"]} == {"1.5"}
    # Truncated, 1.5 would have been the known item "1"; kept whole, it is not in the table.
    assert _checks(run)["item_id_known"]["unexpected_count"] == 15


# --- a --limit-users slice hides nothing --------------------------------------------------------

def test_a_user_slice_keeps_rows_without_a_user_and_says_it_is_a_slice(tmp_path) -> None:
    events = _events(60).astype({S.USER_ID: object})
    events.loc[33, S.USER_ID] = None
    path = tmp_path / "events.csv"
    events.to_csv(path, index=False)

    data = load_dataset(str(path), limit_users=2)

    # Users u0 and u1 (12 events) and the row without a user, which the gate must judge.
    assert len(data.events) == 13 and data.events[S.USER_ID].isna().sum() == 1
    assert data.info["rows_before_limit"] == 60
    run = _gate(tmp_path, data)
    assert run["error"].failed_checks == ["user_id_not_null"]  # as the whole file fails
    assert run["report"]["rows_in"] == 13
    assert ("The input is a slice (--limit-users 2): 13 rows, the events of the first 2 users in "
            "id order and every row without a user id, of 60 rows in the source.") in run["page"]


def test_a_clean_slice_accounts_for_every_row_it_holds(tmp_path) -> None:
    events = _events(60)
    events.loc[3, S.TIMESTAMP] = pd.Timestamp("2030-01-01T00:00:00Z")  # user u3: cut by the slice
    events.loc[10, S.TIMESTAMP] = pd.Timestamp("2030-01-01T00:00:00Z")  # user u0: in it
    path = tmp_path / "events.parquet"
    events.to_parquet(path)

    data = load_dataset(str(path), limit_users=3)
    run = _gate(tmp_path, data, ValidationConfig(now=NOW, max_quarantine_share=0.1))

    assert run["report"]["rows_in"] == len(data.events) == 18
    assert len(run["clean"]) + len(run["quarantine"]) == 18
    assert run["quarantine"][S.USER_ID].tolist() == ["u0"]


# --- the CLI carries the settings -----------------------------------------------------------------

def test_validate_command_takes_the_unit_and_the_share(tmp_path) -> None:
    from shoprec.cli import cli

    events = _events(50)
    events[S.TIMESTAMP] = events[S.TIMESTAMP].astype("int64") // 10**9  # seconds
    events.loc[[1, 2], S.TIMESTAMP] = 4_102_444_800  # 2100-01-01: two future rows, 4%
    path = tmp_path / "events.csv"
    events.to_csv(path, index=False)
    home = tmp_path / "home"

    result = CliRunner().invoke(cli, ["validate", str(path), "--home", str(home), "--timestamp-unit",
                                      "s", "--max-quarantine-share", "0.05"])

    assert result.exit_code == 0, result.output
    [page] = home.rglob("validation_report.md")
    text = page.read_text()
    assert "| future_timestamp | 2 |" in text and "(as given by --timestamp-unit)" in text
    strict = CliRunner().invoke(cli, ["validate", str(path), "--home", str(tmp_path / "strict")])
    assert strict.exit_code != 0 and "timestamp_not_in_future" in str(strict.exception or strict.output)
