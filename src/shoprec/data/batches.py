"""Events in batches: where the gate reads them from, and where it writes what it decided.

A source yields the events as given, a batch at a time, each batch indexed by its rows'
positions in the whole log (row 0 is the log's first row), so every pass over a source sees
the same rows under the same numbers. A sink receives each batch's clean and quarantined rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec import schema as S

# Rows per batch: what one batch costs in memory bounds the gate's memory, whatever the log's
# size. On Instacart-like rows a 500,000-row batch peaks near 0.5 GB above the imports; it was
# also faster than 1,000,000 (benchmarks/validation.py), while much smaller batches pay GX's
# fixed cost per batch (about 0.3 s) too often.
DEFAULT_BATCH_ROWS = 500_000

_TEXT_COLUMNS = (S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.SESSION_ID)


class FrameEvents:
    """An in-memory events table, sliced into batches (views, not copies)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame
        self.num_rows = len(frame)
        self.columns = [str(c) for c in frame.columns]

    def batches(self, rows: int) -> Iterator[pd.DataFrame]:
        frame = self._frame
        for start in range(0, max(self.num_rows, 1), rows):
            batch = frame.iloc[start:start + rows]  # a new frame over the same data
            batch.index = pd.RangeIndex(start, start + len(batch))
            yield batch

    def is_datetime(self, column: str) -> bool:
        """Does `column` hold date-times (not numbers or text to parse)?"""
        return column in self._frame and pd.api.types.is_datetime64_any_dtype(self._frame[column])

    def arrow_types(self) -> dict[str, pa.DataType]:
        """The Arrow type of each column beyond the canonical ones (whose output types are
        fixed), inferred over the whole table: it is in memory anyway."""
        types = {}
        for column in self._frame.columns:
            if column in S.EVENT_COLUMNS:
                continue
            try:
                types[str(column)] = pa.Schema.from_pandas(self._frame[[column]], preserve_index=False
                                                           ).field(str(column)).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                continue  # mixed Python objects: the batch's own type, as pandas would write it
        return types


class ParquetEvents:
    """An events Parquet file, read a batch at a time (never whole)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # No pre-buffering: pyarrow would otherwise keep every column chunk it has read until
        # the end, which grows with the file, not the batch.
        self._file = pq.ParquetFile(self.path, pre_buffer=False)
        self._schema = self._file.schema_arrow  # with the pandas metadata of the writer
        self.num_rows = self._file.metadata.num_rows
        self.columns = list(self._schema.names)

    def batches(self, rows: int) -> Iterator[pd.DataFrame]:
        start = 0
        for batch in self._file.iter_batches(batch_size=rows):
            frame = pa.Table.from_batches([batch], schema=self._schema).to_pandas()
            yield frame.set_axis(pd.RangeIndex(start, start + len(frame)), axis=0)
            start += len(frame)
        if start == 0:  # an empty file is still checked, as one empty batch
            yield self._schema.empty_table().to_pandas()

    def arrow_types(self) -> dict[str, pa.DataType]:
        return {field.name: field.type for field in self._schema}

    def is_datetime(self, column: str) -> bool:
        """Does `column` hold date-times (not numbers or text to parse)? From the schema alone."""
        return column in self.columns and pa.types.is_timestamp(self._schema.field(column).type)


class FrameSink:
    """Collects the batches' outputs in memory (the in-memory `validate`)."""

    def __init__(self) -> None:
        self._clean: list[pd.DataFrame] = []
        self._quarantine: list[pd.DataFrame] = []

    def write(self, clean: pd.DataFrame, quarantine: pd.DataFrame) -> None:
        self._clean.append(clean)
        self._quarantine.append(quarantine)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return _concat(self._clean), _concat(self._quarantine)


class ParquetSink:
    """Appends each batch's clean rows and quarantined rows to two Parquet files.

    Column types are fixed for the whole file at the first batch: ids and event types are
    text, timestamps UTC nanoseconds, other columns the type they have in the source.
    """

    def __init__(self, clean_path: Path, quarantine_path: Path,
                 source_types: dict[str, pa.DataType] | None = None) -> None:
        self.clean_path = Path(clean_path)
        self.quarantine_path = Path(quarantine_path)
        self._types = source_types or {}
        self._writers: dict[Path, pq.ParquetWriter] = {}

    def write(self, clean: pd.DataFrame, quarantine: pd.DataFrame) -> None:
        self._append(self.clean_path, clean)
        self._append(self.quarantine_path, quarantine)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def __enter__(self) -> "ParquetSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _append(self, path: Path, frame: pd.DataFrame) -> None:
        writer = self._writers.get(path)
        schema = writer.schema if writer is not None else self._schema(frame)
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        if writer is None:
            writer = self._writers[path] = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)

    def _schema(self, frame: pd.DataFrame) -> pa.Schema:
        fields = []
        for column in frame.columns:
            if column in _TEXT_COLUMNS or column in (S.QUARANTINE_REASON, S.QUARANTINE_DETAIL):
                kind = pa.string()
            elif column == S.TIMESTAMP:
                kind = pa.timestamp("ns", tz="UTC")
            elif column in (S.PRICE, S.QUANTITY):
                kind = pa.float64()  # the gate makes them float64 (a non-number fails it)
            elif column in self._types and not pa.types.is_null(self._types[column]):
                kind = self._types[column]
            else:
                kind = pa.Schema.from_pandas(frame[[column]], preserve_index=False).field(column).type
            fields.append(pa.field(column, kind))
        return pa.schema(fields)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
