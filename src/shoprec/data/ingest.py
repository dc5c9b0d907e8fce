"""Ingest: an event log into a canonical dataset directory, streamed when it is a file.

A shop's own log (Parquet or CSV) is copied batch by batch into the directory's events file,
so the step's memory is one batch whatever the log's size; values stay as they are (the
validation gate checks and coerces them). The built-in data sets, and slices by user
(`limit_users`, which needs every user's id before it can choose), go through the in-memory
loaders: they are small or made small.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from shoprec import schema as S
from shoprec.data.dataset import finish_dataset
from shoprec.data.loaders import BUILTIN_DATASETS, load_dataset, read_table
from shoprec.errors import DataSourceError

log = logging.getLogger(__name__)

BATCH_ROWS = 500_000
"""Rows per copied batch: the bound on the step's memory (about 100 MB for a typical log)."""

CSV_BLOCK_BYTES = 64 << 20
"""CSV bytes per parsed block; column types are inferred from the first block."""

# Ids stay text ("007" and "7" are different items), as the in-memory CSV reader keeps them.
_ID_COLUMNS = (S.USER_ID, S.ITEM_ID, S.SESSION_ID)


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest wrote: event and item rows, where they came from, and whether the
    events were streamed (False: read whole, for a built-in set, a user slice, or a CSV whose
    later rows did not fit the types of its first block)."""

    directory: Path
    source: str
    events: int
    items: int
    streamed: bool


def ingest(source: str, directory: str | Path, items_path: str | None = None,
           limit_users: int | None = None, batch_rows: int = BATCH_ROWS) -> IngestSummary:
    """Write `source` (a built-in name or an events file) as a dataset directory at `directory`;
    a file's events are copied `batch_rows` at a time (one Parquet row group each)."""
    out = Path(directory)
    if source in BUILTIN_DATASETS or limit_users:
        data = load_dataset(source, items_path, limit_users)
        data.write(out)
        return IngestSummary(out, data.source, len(data.events),
                             0 if data.items is None else len(data.items), streamed=False)
    path = Path(source)
    if not path.exists():
        raise DataSourceError(f"events file not found: {path}")
    items = read_table(Path(items_path), "items") if items_path else None
    out.mkdir(parents=True, exist_ok=True)
    rows, streamed = copy_events(path, out / S.EVENTS_FILE, batch_rows)
    finish_dataset(out, rows, items, None, str(path), {"file": str(path)})
    return IngestSummary(out, str(path), rows, 0 if items is None else len(items), streamed)


def copy_events(path: Path, target: Path, batch_rows: int = BATCH_ROWS) -> tuple[int, bool]:
    """Copy an events file (Parquet file or folder, CSV, TSV) into the Parquet file `target`
    batch by batch: (rows written, whether it streamed)."""
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith(".parquet") or path.is_dir():
            return _write_batches(_parquet_batches(path, batch_rows), target, batch_rows), True
        if suffix.endswith((".csv", ".csv.gz", ".tsv")):
            try:
                csv = _csv_batches(path, "\t" if ".tsv" in suffix else ",")
                return _write_batches(csv, target, batch_rows), True
            except pa.ArrowInvalid as exc:
                # A later block that does not fit the first block's types (a number column
                # with text further down): read it whole, as before, and let the gate judge
                # the values rather than failing the ingest.
                log.warning("%s: column types change after the first block (%s); reading it whole",
                            path, str(exc).splitlines()[0][:200])
                frame = read_table(path, "events")
                frame.to_parquet(target, index=False)
                return len(frame), False
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataSourceError(f"cannot read events file {path}: {str(exc)[:500]}") from exc
    raise DataSourceError(f"events file {path}: unsupported format (use .csv, .tsv or .parquet)")


def _parquet_batches(path: Path, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if path.is_dir():
        import pyarrow.dataset as ds

        dataset = ds.dataset(path, format="parquet")
        return dataset.schema, iter(dataset.to_batches(batch_size=batch_rows))
    parquet = pq.ParquetFile(path)
    return parquet.schema_arrow, parquet.iter_batches(batch_size=batch_rows)


def _csv_batches(path: Path, delimiter: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    parse = pa_csv.ParseOptions(delimiter=delimiter)
    header = pa_csv.open_csv(path, parse_options=parse,
                             read_options=pa_csv.ReadOptions(block_size=1 << 16)).schema.names
    types = {name: pa.string() for name in _ID_COLUMNS if name in header}
    reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                             parse_options=parse, convert_options=pa_csv.ConvertOptions(column_types=types))
    return reader.schema, iter(reader)


def _write_batches(source: tuple[pa.Schema, Iterator[pa.RecordBatch]], target: Path,
                   batch_rows: int = BATCH_ROWS) -> int:
    """Write record batches to one Parquet file with the source's schema (an empty log gives an
    empty file with its columns: the gate reports it)."""
    schema, batches = source
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        for batch in batches:
            # CSV blocks are sized in bytes: re-cut them so a row group is `batch_rows` at most.
            for start in range(0, batch.num_rows, batch_rows):
                part = batch.slice(start, batch_rows)
                writer.write_batch(part, row_group_size=batch_rows)
                rows += part.num_rows
    return rows
