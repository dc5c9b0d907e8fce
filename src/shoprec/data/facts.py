"""The gate's global facts: what a row's fate depends on beyond its own batch, found with DuckDB.

Two soft checks cannot be decided one batch at a time: an exact duplicate's first copy may sit
in an earlier batch, and a bot's busiest day may be spread over several. The first pass adds
every batch's normalized event key (all event columns) to a DuckDB table, which DuckDB moves
to its scratch folder past its memory limit; `finish` then groups it (spilling to disk the
same way), and the second pass asks, batch by batch, which rows are later copies and each
user's busiest-day count.

Keys are compared as the in-memory gate compares them (`pandas.DataFrame.duplicated`): ids
as their text, timestamps as UTC nanoseconds, NaN equal to NaN and missing equal to missing.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from shoprec import schema as S

NS_PER_DAY = 86_400_000_000_000
# DuckDB's share of memory; past it, its tables and groupings go to its files on disk.
DUCKDB_MEMORY_LIMIT = "256MB"
DUCKDB_LOOKUP_MEMORY_LIMIT = "64MB"
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


class GlobalFacts:
    """Duplicate copies and busiest days over the whole log; DuckDB spills to `scratch`."""

    def __init__(self, scratch: str | Path, key_columns: list[str]) -> None:
        scratch = Path(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        # An in-memory database (inserts are cheaper than into a file, which would compress
        # and checkpoint them) whose tables still go to the temporary folder when memory is short.
        self._con = duckdb.connect(":memory:")
        self._con.execute(f"SET temp_directory = '{_sql_text(str(scratch / 'spill'))}'")
        self._con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        self._con.execute("SET preserve_insertion_order = false")
        self._columns = list(key_columns)
        self._keys = [f"k{i}" for i in range(len(key_columns))]
        self._user = self._keys[key_columns.index(S.USER_ID)]
        self._started = False
        self._null_user_busiest = 0

    # --- first pass ---------------------------------------------------------------------------

    def add(self, normal: pd.DataFrame, outside: np.ndarray) -> None:
        """Add one normalized batch (indexed by row number) and its outside-the-window flags."""
        nanos = normal[S.TIMESTAMP].array.asi8
        columns = {
            "row": pa.array(normal.index.to_numpy(dtype="int64")),
            # Day numbers as the in-memory gate computed them (NaT in a day of its own).
            "day": pa.array(nanos // NS_PER_DAY),
            "outside": pa.array(np.asarray(outside, dtype=bool)),
        }
        for name, column in zip(self._keys, self._columns):
            array = key_array(normal[column])
            columns[name] = array.cast(pa.string()) if pa.types.is_null(array.type) else array
        batch = pa.table(columns)
        statement = "INSERT INTO keys SELECT * FROM batch" if self._started else \
            "CREATE TABLE keys AS SELECT * FROM batch"
        self._con.register("batch", batch)
        try:
            self._con.execute(statement)
        finally:
            self._con.unregister("batch")
        self._started = True

    def finish(self) -> None:
        """Group the whole log: duplicate groups, later copies, each user's busiest day."""
        keys = ", ".join(self._keys)
        same = " AND ".join(f"k.{k} IS NOT DISTINCT FROM g.{k}" for k in self._keys)
        all_missing = " AND ".join(f"k.{k} IS NULL" for k in self._keys)
        con = self._con
        con.execute(f"""CREATE TABLE groups AS
            SELECT {keys}, min(row) AS first_row FROM keys GROUP BY {keys} HAVING count(*) > 1""")
        con.execute(f"""CREATE TABLE dups AS
            SELECT k.row, k.row <> g.first_row AS later, {all_missing} AS all_missing
            FROM keys k JOIN groups g ON {same} ORDER BY k.row""")
        # A user's busiest day counts the events that are neither outside the window nor later
        # copies; NULL users group together (the in-memory gate's code -1).
        con.execute(f"""CREATE TABLE busiest AS
            SELECT user_id, max(events) AS events FROM (
                SELECT k.{self._user} AS user_id, k.day, count(*) AS events
                FROM keys k LEFT JOIN (SELECT row FROM dups WHERE later) d ON k.row = d.row
                WHERE NOT k.outside AND d.row IS NULL GROUP BY ALL)
            GROUP BY user_id""")
        # (fetchall, not fetchone: DuckDB refuses new work while a result is unfinished)
        null_user = con.execute("SELECT events FROM busiest WHERE user_id IS NULL").fetchall()
        self._null_user_busiest = int(null_user[0][0]) if null_user else 0
        con.execute("DROP TABLE groups")
        con.execute("DROP TABLE keys")
        # The second pass only looks up the small tables left: hand the rest of the memory back.
        con.execute(f"SET memory_limit = '{DUCKDB_LOOKUP_MEMORY_LIMIT}'")

    # --- second pass --------------------------------------------------------------------------

    def later_copies(self, start: int, stop: int) -> np.ndarray:
        """For rows start..stop-1: is the row an exact copy of an earlier row?"""
        rows = self._con.execute(
            "SELECT row FROM dups WHERE later AND row >= ? AND row < ?", [start, stop]
        ).fetchnumpy()["row"]
        flags = np.zeros(stop - start, dtype=bool)
        flags[np.asarray(rows, dtype="int64") - start] = True
        return flags

    def busiest_day_events(self, users: pd.Series) -> np.ndarray:
        """Per row: its user's event count on their busiest UTC day (0: no counted events).

        `users` is a batch's categorical user column, as the first pass saw it."""
        categories = _category_keys(users)
        per_category = np.zeros(len(categories) + 1, dtype="int64")
        per_category[-1] = self._null_user_busiest  # code -1: a missing user id
        self._con.register("batch_users", pa.table({
            "i": pa.array(np.arange(len(categories), dtype="int64")), "user_id": categories}))
        try:
            found = self._con.execute(
                "SELECT u.i, b.events FROM batch_users u JOIN busiest b ON u.user_id = b.user_id"
            ).fetchnumpy()
        finally:
            self._con.unregister("batch_users")
        per_category[np.asarray(found["i"], dtype="int64")] = np.asarray(found["events"], dtype="int64")
        return per_category[users.cat.codes.to_numpy()]

    def duplicate_check(self, samples: int) -> tuple[int, list[int]]:
        """What GX's compound-unique expectation says of the whole log: how many rows have a copy
        (every copy counts; rows whose key is entirely missing are ignored), and the first
        `samples` of them by row number."""
        count = self._con.execute("SELECT count(*) FROM dups WHERE NOT all_missing").fetchall()[0][0]
        first = self._con.execute(
            "SELECT row FROM dups WHERE NOT all_missing ORDER BY row LIMIT ?", [samples]).fetchall()
        return int(count), [int(row) for (row,) in first]

    def bots(self, ceiling: int) -> dict[str, int]:
        """Users (id text) whose busiest day has more than `ceiling` events, with that count."""
        found = self._con.execute(
            "SELECT user_id, events FROM busiest WHERE events > ? AND user_id IS NOT NULL",
            [ceiling]).fetchall()
        return {str(user): int(events) for user, events in found}

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "GlobalFacts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def key_array(column: pd.Series) -> pa.Array:
    """One key column as Arrow values DuckDB compares the way pandas' `duplicated` does.

    A value is encoded the same way in every batch: a text column stays text, while any
    other Python object in an object column (a number among strings in an in-memory frame, a
    date) becomes a tagged text that no plain text equals."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        return _category_keys(column).take(pa.array(codes, mask=codes < 0))
    if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
        return pa.array(column.array.asi8, mask=column.isna().to_numpy())  # exact nanoseconds
    if column.dtype == object:
        try:
            array = pa.array(column, from_pandas=True)
        except _ARROW_ERRORS:
            array = None
        if array is not None and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
                                  or pa.types.is_null(array.type)):
            return array.cast(pa.string())
        return pa.array([_as_text(v) for v in column], type=pa.string())
    array = pa.array(column, from_pandas=True)
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _category_keys(column: pd.Series) -> pa.Array:
    categories = column.cat.categories
    return key_array(pd.Series(categories, dtype=categories.dtype))


def _as_text(value: object) -> str | None:
    """A Python object as key text: numbers equal when Python says so (1 == 1.0 == True)."""
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # list-likes: never missing
        pass
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float, np.number)):
        return f"\x00number:{float(value)!r}"
    return f"\x00{type(value).__name__}:{value!r}"


def _sql_text(text: str) -> str:
    return text.replace("'", "''")

