"""Ingest streams a shop's log file into the dataset directory batch by batch, with the same
values the in-memory reader gives, and the gate reads what it wrote."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.dataset import EventData
from shoprec.data.gate import run_gate
from shoprec.data.ingest import ingest
from shoprec.data.loaders import load_event_files
from shoprec.data.report import ReportPaths
from shoprec.errors import DataSourceError


def _log(rows: int) -> pd.DataFrame:
    return pd.DataFrame({
        S.USER_ID: [f"{i % 37:03d}" for i in range(rows)],  # "007": ids stay text
        S.ITEM_ID: [f"i{i % 11}" for i in range(rows)],
        S.EVENT_TYPE: ["view", "cart", "purchase"] * (rows // 3) + ["view"] * (rows % 3),
        S.TIMESTAMP: pd.date_range("2024-01-01", periods=rows, freq="min", tz="UTC").astype(str),
        S.QUANTITY: [1 + i % 3 for i in range(rows)],
    })


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_file_streams_in_batches_with_the_values_the_whole_reader_gives(tmp_path, suffix):
    frame = _log(1000)
    source = tmp_path / f"events{suffix}"
    frame.to_parquet(source, index=False) if suffix == ".parquet" else frame.to_csv(source, index=False)

    written = ingest(str(source), tmp_path / "raw", batch_rows=128)

    assert written.streamed and written.events == 1000
    events_file = tmp_path / "raw" / S.EVENTS_FILE
    assert pq.ParquetFile(events_file).metadata.num_row_groups == 8  # ceil(1000 / 128): never whole
    ingested = EventData.read(tmp_path / "raw").events
    whole = load_event_files(source).events
    pd.testing.assert_frame_equal(ingested.astype(str), whole.astype(str), check_dtype=False)
    assert ingested[S.USER_ID].iloc[7] == "007"
    manifest = json.loads((tmp_path / "raw" / S.DATASET_MANIFEST).read_text())
    assert manifest["events"] == 1000 and manifest["snapshot_id"]


def test_a_csv_whose_types_change_after_the_first_block_is_read_whole_not_refused(tmp_path, monkeypatch):
    import shoprec.data.ingest as ingest_module

    monkeypatch.setattr(ingest_module, "CSV_BLOCK_BYTES", 4096)  # many blocks from a small file
    frame = _log(600)
    frame[S.QUANTITY] = frame[S.QUANTITY].astype(object)
    frame.loc[590, S.QUANTITY] = "lots"  # text in a number column, far below the first block
    source = tmp_path / "events.csv"
    frame.to_csv(source, index=False)

    written = ingest(str(source), tmp_path / "raw")

    assert not written.streamed and written.events == 600
    assert EventData.read(tmp_path / "raw").events[S.QUANTITY].iloc[590] == "lots"


def test_the_gate_accounts_for_every_streamed_row(tmp_path):
    bot = _log(40).assign(**{S.USER_ID: "bot"})  # 40 events in one day: quarantined, not lost
    frame = pd.concat([_log(900), bot], ignore_index=True)
    source = tmp_path / "events.parquet"
    frame.to_parquet(source, index=False)
    raw = ingest(str(source), tmp_path / "raw", batch_rows=100).directory

    outcome = run_gate(raw, ValidationConfig(max_events_per_user_day=30), tmp_path / "clean",
                       tmp_path / "quarantine", ReportPaths(tmp_path / "report.json", tmp_path / "report.md"))

    report = outcome.report
    assert report.rows_in == 940
    assert report.rows_clean == 900
    assert report.rows_clean + sum(report.quarantined.values()) == 940


def test_a_missing_or_unsupported_file_is_named(tmp_path):
    with pytest.raises(DataSourceError, match="events file not found: .*nothing.csv"):
        ingest(str(tmp_path / "nothing.csv"), tmp_path / "raw")
    odd = tmp_path / "events.xlsx"
    odd.write_text("x")
    with pytest.raises(DataSourceError, match="unsupported format"):
        ingest(str(odd), tmp_path / "raw")
