"""The validation gate: Great Expectations suites defined in code, a quarantine, a report.

Hard checks stop the run (`DataValidationError`); soft checks move rows to the quarantine and
the run goes on. Every input row ends in the clean output or in the quarantine, with its reason.

The gate reads the events in batches (`check_events`), so its memory follows the batch size,
not the log's: what spans batches (exact duplicates, a user's busiest day) is found first over
the whole log with DuckDB (`shoprec.data.facts`); then GX checks each batch of events coerced
to canonical types (ids and event types as categoricals, which keeps GX's pandas engine fast
on a million rows) plus derived columns: each row's own facts (`shoprec.data.quarantine`:
a whole-number id, an item in the items table, a positive quantity) and each user's
busiest-day event count. A check whose columns are missing is reported as skipped
beside the failed "column present" check that explains why. An in-memory frame (`validate`)
goes through the same code, cut into batches.

Rows that are only slightly wrong (`shoprec.data.quarantine`) are quarantined, and their
"tolerant" hard checks stop the run only when more than `max_quarantine_share` of the events
fail them: that share is known only after the last batch, so those checks never stop the
writing early (a failed gate discards what was written). Epoch-number timestamps are read in
one unit for the whole log (`shoprec.data.timestamps`); the report says which.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.batches import DEFAULT_BATCH_ROWS, FrameEvents, FrameSink
from shoprec.data.dataset import EventData
from shoprec.data.facts import GlobalFacts
from shoprec.data.quarantine import (
    BOT_ACTIVITY,
    BUSIEST_DAY_EVENTS,
    DUPLICATE,
    FUTURE_TIMESTAMP,
    ID_COLUMNS,
    INVALID_ID,
    INVALID_QUANTITY,
    ITEM_KNOWN,
    OUTSIDE_WINDOW,
    QUANTITY_VALID,
    QUARANTINE_REASONS,
    UNKNOWN_ITEM,
    RowRules,
    add_row_facts,
    assign_reasons,
    excluded_rows,
    whole_id_column,
)
from shoprec.data.timestamps import (
    UNIT_SAMPLE_VALUES,
    TimestampReading,
    UnitChoice,
    choose_unit,
    parse_timestamps,
)

Severity = Literal["hard", "soft"]

# Columns a sample row of an events check shows, and how many samples a check keeps.
_ROW_COLUMNS = (S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP)
GX_SAMPLES = 5
# The first pass (keys into DuckDB) reads at most this many rows at a time.
FIRST_PASS_BATCH_ROWS = 250_000

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "float32", "float64", "Int64Dtype",
                 "Float64Dtype"]


@dataclass
class CheckResult:
    """One expectation's outcome, in the words the report uses."""

    name: str
    severity: Severity
    table: str
    column: str | None
    description: str
    expectation: str
    success: bool
    element_count: int = 0
    unexpected_count: int = 0
    sample_rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False
    # A tolerant hard check: its rows are quarantined, and it fails only when more than this
    # share of the rows it saw are unexpected.
    tolerance: float | None = None


@dataclass
class ValidationReport:
    """Everything a person needs to judge a data set: each check, counts, the quarantine."""

    source: str
    checks: list[CheckResult]
    rows_in: int
    rows_clean: int
    quarantined: dict[str, int]
    config: dict[str, Any]
    # How the timestamps were read (`TimestampReading.to_dict`), and what a person should know
    # about how the input was read, in sentences (the unit, zone-less times, a user slice).
    timestamps: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    created_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def failed_hard(self) -> list[str]:
        """Names of hard checks that failed: any one stops the run."""
        return [c.name for c in self.checks if c.severity == "hard" and not c.success and not c.skipped]

    @property
    def passed(self) -> bool:
        return not self.failed_hard

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "created_at": self.created_at,
            "passed": self.passed,
            "failed_hard_checks": self.failed_hard,
            "rows_in": self.rows_in,
            "rows_clean": self.rows_clean,
            "rows_quarantined": sum(self.quarantined.values()),
            "quarantined_by_reason": self.quarantined,
            "timestamps": self.timestamps,
            "notes": self.notes,
            "config": self.config,
            "checks": [vars(check) for check in self.checks],
        }


@dataclass
class ValidationOutcome:
    """The gate's three products: clean data, quarantined rows, and the report."""

    clean: EventData
    quarantine: pd.DataFrame
    report: ValidationReport


@dataclass(frozen=True)
class _Check:
    """A check before it runs: the GX expectation plus the words and columns for the report."""

    name: str
    severity: Severity
    column: str | None
    description: str
    expectation: Any
    show: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # columns that must exist for the check to run
    tolerance: float | None = None  # see CheckResult.tolerance


def validate(
    data: EventData, config: ValidationConfig | None = None, *, batch_rows: int = DEFAULT_BATCH_ROWS
) -> ValidationOutcome:
    """Run the gate over an in-memory data set; reads and writes nothing (but scratch files it
    removes), raises nothing on bad data.

    The same batched gate `check_events` runs for `run_gate` on a dataset directory; here the
    frame is cut into batches of `batch_rows` and the outputs are collected in memory.
    Returns the outcome whatever the verdict; `outcome.report.passed` is False on a hard failure,
    and then `clean` and `quarantine` are empty (no row was judged).
    """
    config = config or ValidationConfig()
    sink = FrameSink()
    report = check_events(FrameEvents(data.events), data.items, data.users, data.source, config,
                          sink, batch_rows=batch_rows, info=data.info)
    if report.passed:
        clean_events, quarantine = sink.frames()
    else:
        clean_events = quarantine = data.events.iloc[:0]
    clean = EventData(clean_events, data.items, data.users, data.source, data.info)
    return ValidationOutcome(clean=clean, quarantine=quarantine, report=report)


class EventSource(Protocol):
    """Where the events come from, a batch at a time (`shoprec.data.batches`)."""

    num_rows: int
    columns: list[str]

    def batches(self, rows: int) -> Iterator[pd.DataFrame]: ...

    def is_datetime(self, column: str) -> bool: ...


class EventSink(Protocol):
    """Where each batch's clean and quarantined rows go (`shoprec.data.batches`)."""

    def write(self, clean: pd.DataFrame, quarantine: pd.DataFrame) -> None: ...


def check_events(
    events: EventSource,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    source: str,
    config: ValidationConfig | None = None,
    sink: EventSink | None = None,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    scratch: str | Path | None = None,
    info: dict[str, Any] | None = None,
) -> ValidationReport:
    """The gate, in two passes over the events, holding one batch of `batch_rows` at a time.

    Pass 1 adds every batch's normalized event key to DuckDB (`GlobalFacts`), which finds the
    later copies of exact duplicates and each user's busiest day over the whole log. Pass 2
    runs the GX suite on each batch (results summed over batches; a check passes when it
    passes on every batch, a tolerant one when its share over the whole log is small enough),
    assigns each row its quarantine reason and hands the batch's clean and quarantined rows to
    `sink`, until a hard check fails: then nothing more is written and the caller must discard
    what was. Before pass 1, epoch-number timestamps get their unit (given, or detected from
    the log's first values). Scratch files (DuckDB's) live in a temporary folder under
    `scratch` (default: the system's) and are removed. `info` is the data set's facts (a
    `limit_users` slice is named in the report).
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, not {batch_rows}")
    config = config or ValidationConfig()
    now = config.now or pd.Timestamp.now(tz="UTC")
    rules = RowRules(config, now)
    judged = all(c in events.columns for c in S.EVENT_REQUIRED) and events.num_rows > 0
    runner = _GxRunner()
    # The side tables are small and whole: checked first, so a failure there writes nothing.
    table_checks = []
    if items is not None:
        table_checks += runner.run("items", items, _key_table_checks(items, "items", S.ITEM_ID))
    if users is not None:
        table_checks += runner.run("users", users, _key_table_checks(users, "users", S.USER_ID))
    failed = any(c.severity == "hard" and not c.success for c in table_checks)
    known_items = _known_items(items)
    reading = TimestampReading(_timestamp_unit(events, config, batch_rows))
    unit = reading.choice.unit

    with tempfile.TemporaryDirectory(prefix="shoprec-gate-", dir=scratch) as work:
        facts = _first_pass(events, rules, known_items, unit, batch_rows, work) if judged else None
        try:
            duplicates, duplicate_rows = facts.duplicate_check(GX_SAMPLES) if facts else (0, [])
            specs: list[_Check] = []
            runnable: set[str] = set()
            suite: _Suite | None = None
            tallies: dict[str, list[CheckResult]] = {}
            duplicate_samples: list[dict[str, Any]] = []
            counts = dict.fromkeys(QUARANTINE_REASONS, 0)
            rows_clean = 0
            numeric_users = False
            for raw in events.batches(batch_rows):
                normal, read = _normalize_batch(raw, unit, known_items, count_times=True)
                reading.add(read)
                if facts is not None:
                    start = int(normal.index[0]) if len(normal) else 0
                    later = pd.Series(facts.later_copies(start, start + len(normal)), index=normal.index)
                    busiest = pd.Series(facts.busiest_day_events(normal[S.USER_ID]), index=normal.index)
                    reasons, detail = assign_reasons(normal, rules, later, busiest)
                    checked = normal.assign(**{BUSIEST_DAY_EVENTS: busiest})
                else:  # a table without its required columns is only checked, never split
                    checked = normal
                if suite is None:
                    numeric_users = S.USER_ID in raw and pd.api.types.is_numeric_dtype(raw[S.USER_ID])
                    specs = _event_checks(checked, raw, config, now)
                    runnable = {c.name for c in specs if all(column in checked for column in c.requires)}
                    # Duplicates span batches: that check's verdict comes from the first pass.
                    suite = runner.suite("events", [c for c in specs
                                                    if c.name in runnable and c.name != DUPLICATE])
                # Sample rows show the events as they came in (an unparseable timestamp as text).
                results = suite.run(checked, raw)
                for result in results:
                    tallies.setdefault(result.name, []).append(result)
                # A tolerant check's verdict waits for the whole log's share.
                failed = failed or any(r.severity == "hard" and not r.success and r.tolerance is None
                                       for r in results)
                if duplicate_rows:
                    duplicate_samples += _sample_rows(raw, [r for r in duplicate_rows if r in raw.index],
                                                      _ROW_COLUMNS)
                if facts is None or failed:
                    continue
                clean_rows, quarantined = _split(normal, reasons, detail)
                if sink is not None:
                    sink.write(clean_rows, quarantined)
                rows_clean += len(clean_rows)
                for reason, count in quarantined[S.QUARANTINE_REASON].value_counts().items():
                    counts[reason] += int(count)
            bots = facts.bots(config.max_events_per_user_day) if facts else {}
        finally:
            if facts is not None:
                facts.close()

    checks = []
    for check in specs:
        if check.name == DUPLICATE and check.name in runnable:
            checks.append(CheckResult(
                check.name, check.severity, "events", check.column, check.description,
                check.expectation.expectation_type, success=duplicates == 0,
                element_count=events.num_rows, unexpected_count=duplicates,
                sample_rows=duplicate_samples[:GX_SAMPLES]))
        elif check.name in tallies:
            checks.append(_merge(tallies[check.name]))
        else:
            checks.append(_skipped(check))
    checks += table_checks
    for check in checks:
        if check.name == BOT_ACTIVITY and not check.success and not check.skipped:
            check.sample_rows = _bot_samples(bots, config, numeric_users)

    passed = judged and all(c.success for c in checks if c.severity == "hard")
    return ValidationReport(
        source=source,
        checks=checks,
        rows_in=events.num_rows,
        rows_clean=rows_clean if passed else 0,
        quarantined=counts if passed else {},
        config={
            "max_events_per_user_day": config.max_events_per_user_day,
            "window_start": _text(config.window_start),
            "window_end": _text(config.window_end),
            "now": _text(now),
            "max_quarantine_share": config.max_quarantine_share,
            "timestamp_unit": config.timestamp_unit,
        },
        timestamps=reading.to_dict(),
        notes=reading.sentences() + _slice_notes(info or {}, events.num_rows),
    )


def _timestamp_unit(events: EventSource, config: ValidationConfig, batch_rows: int) -> UnitChoice:
    """The epoch unit of the whole log, chosen once so that every batch reads its numbers alike:
    the configured one, else detected from the first values (read only when they are not
    date-times already)."""
    if config.timestamp_unit != "auto" or S.TIMESTAMP not in events.columns \
            or events.is_datetime(S.TIMESTAMP):
        return choose_unit(config.timestamp_unit, [])
    batches = events.batches(min(batch_rows, UNIT_SAMPLE_VALUES))
    try:
        return choose_unit("auto", (raw[S.TIMESTAMP] for raw in batches))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # the rest of the log is not read


def _slice_notes(info: dict[str, Any], rows: int) -> list[str]:
    """A `--limit-users` slice, named so that no one reads its row count as the whole log's."""
    if not info.get("limit_users"):
        return []
    note = (f"The input is a slice (--limit-users {info['limit_users']}): {rows:,} rows, the "
            f"events of the first {info['limit_users']:,} users in id order and every row "
            "without a user id")
    if "rows_before_limit" in info:
        note += f", of {int(info['rows_before_limit']):,} rows in the source"
    return [note + "."]


def _first_pass(events: EventSource, rules: RowRules, known_items: pd.Index | None, unit: str,
                batch_rows: int, work: str) -> GlobalFacts:
    """Every batch's normalized key into DuckDB, then grouped: the log's global facts.

    No GX runs here, so smaller batches cost little: they leave DuckDB the memory."""
    facts: GlobalFacts | None = None
    try:
        for raw in events.batches(min(batch_rows, FIRST_PASS_BATCH_ROWS)):
            normal, _ = _normalize_batch(raw, unit, known_items)
            if facts is None:
                facts = GlobalFacts(work, _event_key(normal))
            facts.add(normal, excluded_rows(normal, rules))
        assert facts is not None, "a judged source has at least one batch"
        facts.finish()
    except BaseException:
        if facts is not None:
            facts.close()
        raise
    return facts


def _split(normal: pd.DataFrame, reasons: pd.Series,
           detail: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A batch's clean rows and its quarantined rows (with reason and detail), as output."""
    in_quarantine = reasons.notna()
    clean = _to_output(normal[~in_quarantine])
    quarantine = _to_output(normal[in_quarantine]).assign(
        **{S.QUARANTINE_REASON: reasons[in_quarantine].to_numpy(),
           S.QUARANTINE_DETAIL: detail[in_quarantine].to_numpy()}
    )
    return clean, quarantine


def _normalize_batch(raw: pd.DataFrame, unit: str, known_items: pd.Index | None,
                     count_times: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:
    """One batch in canonical types with the row checks' derived columns, indexed by row
    number in the whole log, and how its timestamps were read (counted when `count_times`)."""
    normal, fractional, read = _normalize(raw, unit, count_times)
    normal.index = raw.index  # row numbers in the whole log
    return add_row_facts(normal, raw, known_items, fractional), read


def normalize_events(events: pd.DataFrame, timestamp_unit: str = "s") -> pd.DataFrame:
    """Coerce an events table to canonical types, as far as its columns allow.

    Ids and event types become categoricals with string categories (ids are text: integer ids
    from a file become "7", not 7.0; a fractional float id keeps its digits, "12.7", for the
    gate to quarantine). Timestamps are parsed to UTC (numbers as epochs in `timestamp_unit`);
    what does not parse becomes NaT, a hard failure. Numeric columns become float64; a price or
    quantity column that is not numeric is left as it came, for the type check to name. Missing
    optional columns are added empty; missing required ones are not. A blank session id ("",
    spaces) is a missing one.
    """
    return _normalize(events, timestamp_unit, False)[0]


def _normalize(events: pd.DataFrame, unit: str,
               count_times: bool) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, int]]:
    """`normalize_events`, plus the rows of each id column whose id is a fractional float and
    the timestamp reading's counts."""
    # A shallow copy: columns are replaced, never written into, so the input stays as it was.
    out = events.copy(deep=False)
    out.index = pd.RangeIndex(len(out))
    fractional: dict[str, np.ndarray] = {}
    for column in (S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.SESSION_ID):
        if column in out:
            out[column], bad = _string_categorical(out[column])
            if bad is not None and column in ID_COLUMNS:
                fractional[column] = bad
    if S.SESSION_ID not in out:
        out[S.SESSION_ID] = pd.Categorical([None] * len(out), categories=[])
    else:
        # A blank session id says nothing: it is a missing one, so every reader (training's
        # session openings, the feature tables, pushes) falls back to the time gap alike.
        ids = out[S.SESSION_ID]
        blank = [c for c in ids.cat.categories if not str(c).strip()]
        if blank:
            out[S.SESSION_ID] = ids.cat.remove_categories(blank)
    read = {"numbers": 0, "aware": 0, "naive": 0}
    if S.TIMESTAMP in out:
        out[S.TIMESTAMP], read = parse_timestamps(out[S.TIMESTAMP], unit, count=count_times)
    for column in (S.PRICE, S.QUANTITY):
        if column not in out:
            out[column] = np.nan
        elif pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].astype("float64")
    ordered = [c for c in S.EVENT_COLUMNS if c in out] + [c for c in out if c not in S.EVENT_COLUMNS]
    return out[ordered], fractional, read


# A float holds every integer up to 2**53 exactly; a larger float id may be another id.
_EXACT_FLOAT_IDS = 2.0**53


def _string_categorical(column: pd.Series) -> tuple[pd.Series, np.ndarray | None]:
    """The column as a categorical of text, and (for float ids) the rows whose value is not a
    whole number a float holds exactly (None: not a float column)."""
    categorical = column.astype("category")
    categories = categorical.cat.categories
    bad_rows = None
    if not (categories.dtype == object and all(isinstance(v, str) for v in categories[:50])):
        if categories.dtype.kind == "f":
            # Integer ids from a CSV or Parquet file (read as floats beside a missing value): the
            # same ids as text ("7", not 7.0). A fractional id keeps its digits: truncated, 12.7
            # would silently become user 12.
            values = categories.to_numpy(dtype="float64")
            whole = (np.floor(values) == values) & (np.abs(values) <= _EXACT_FLOAT_IDS)
            text = pd.Series(values).astype(str).to_numpy(dtype=object)
            text[whole] = values[whole].astype("int64").astype(str)
            codes = categorical.cat.codes.to_numpy()
            bad_rows = (codes >= 0) & ~np.append(whole, True)[codes]
        else:
            text = categories.astype(str)
        categorical = categorical.cat.rename_categories(text)
    return categorical, bad_rows


def _event_key(frame: pd.DataFrame) -> list[str]:
    """Columns that make two events the same event: every event column the source has."""
    return [c for c in frame.columns if not c.startswith("_")]


def _known_items(items: pd.DataFrame | None) -> pd.Index | None:
    if items is None or S.ITEM_ID not in items:
        return None
    return pd.Index(_string_categorical(items[S.ITEM_ID])[0].dropna().astype(str).unique())


def _key_table_checks(table: pd.DataFrame, name: str, key: str) -> list[_Check]:
    import great_expectations.expectations as gxe

    checks = [
        _Check(f"{name}_{key}_present", "hard", key, f"the {name} table has a '{key}' column",
               gxe.ExpectColumnToExist(column=key)),
    ]
    if key in table:
        checks += [
            _Check(f"{name}_{key}_not_null", "hard", key, f"every {name[:-1]} has an id",
                   gxe.ExpectColumnValuesToNotBeNull(column=key), (key,)),
            _Check(f"{name}_{key}_unique", "hard", key, f"each {name[:-1]} appears once",
                   gxe.ExpectColumnValuesToBeUnique(column=key), (key,)),
        ]
    if S.PRICE in table:
        checks += [
            _Check(f"{name}_price_type", "hard", S.PRICE, "'price' holds numbers",
                   gxe.ExpectColumnValuesToBeInTypeList(column=S.PRICE, type_list=NUMERIC_TYPES)),
            _Check(f"{name}_price_not_negative", "hard", S.PRICE, "prices are >= 0",
                   gxe.ExpectColumnValuesToBeBetween(column=S.PRICE, min_value=0), (key, S.PRICE)),
        ]
    return checks


def _event_checks(checked: pd.DataFrame, raw: pd.DataFrame, config: ValidationConfig,
                  now: pd.Timestamp) -> list[_Check]:
    """Every check on the events table, hard ones first (tolerant ones among them).

    `checked` is the first normalized batch with its derived columns, `raw` the same batch as
    it came: a float id column and a given quantity column get their checks."""
    import great_expectations.expectations as gxe

    row = _ROW_COLUMNS
    share = config.max_quarantine_share
    # GX's own `mostly` says the same as the tolerance (per batch; the whole log's share decides).
    mostly = 1.0 - share
    ceiling = f"quarantined; more than {share * 100:g}% of events stop the run"
    checks = [
        _Check("events_not_empty", "hard", None, "the events table has at least one row",
               gxe.ExpectTableRowCountToBeBetween(min_value=1)),
    ]
    checks += [
        _Check(f"{column}_present", "hard", column, f"required column '{column}' exists",
               gxe.ExpectColumnToExist(column=column))
        for column in S.EVENT_REQUIRED
    ]
    # Ids and event types of any scalar type are read as text, and timestamps are checked by
    # parsing them, so the type checks are the numeric columns'.
    checks += [
        _Check(f"{column}_type", "hard", column, f"'{column}' holds numbers",
               gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=NUMERIC_TYPES))
        for column in (S.PRICE, S.QUANTITY)
    ]
    checks += [
        _Check(f"{column}_not_null", "hard", column, f"every event has a value in '{column}'",
               gxe.ExpectColumnValuesToNotBeNull(column=column), row, requires=row)
        for column in (S.USER_ID, S.ITEM_ID, S.EVENT_TYPE)
    ]
    # A float id column (integer ids beside a missing value, or ids that went through a float)
    # must hold whole numbers: 12.7 is no id, and truncated it would be another one.
    checks += [
        _Check(f"{column}_whole_number", "hard", column,
               f"numeric '{column}' ids are whole numbers a float holds exactly ({INVALID_ID}: {ceiling})",
               gxe.ExpectColumnValuesToBeInSet(column=whole_id_column(column), value_set=[True],
                                               mostly=mostly),
               row + tuple({column} - set(row)), requires=row, tolerance=share)
        for column in ID_COLUMNS if column in raw and pd.api.types.is_float_dtype(raw[column])
    ]
    checks += [
        _Check("timestamp_parseable", "hard", S.TIMESTAMP,
               "every event has a 'timestamp' that parses as a date-time",
               gxe.ExpectColumnValuesToNotBeNull(column=S.TIMESTAMP), row, requires=row),
        _Check("timestamp_not_in_future", "hard", S.TIMESTAMP,
               f"no 'timestamp' is after {now.isoformat(timespec='seconds')} (now) "
               f"({FUTURE_TIMESTAMP}: {ceiling})",
               gxe.ExpectColumnValuesToBeBetween(column=S.TIMESTAMP, max_value=now, mostly=mostly),
               row, requires=row, tolerance=share),
        _Check("event_type_in_set", "hard", S.EVENT_TYPE,
               f"'event_type' is one of {', '.join(S.EVENT_TYPES)}",
               gxe.ExpectColumnValuesToBeInSet(column=S.EVENT_TYPE, value_set=list(S.EVENT_TYPES)),
               row, requires=row),
    ]
    # A price that is not numeric cannot be compared with 0: its type check already names it.
    if pd.api.types.is_numeric_dtype(checked[S.PRICE]):
        checks.append(
            _Check("price_not_negative", "hard", S.PRICE, "'price' is >= 0",
                   gxe.ExpectColumnValuesToBeBetween(column=S.PRICE, min_value=0),
                   row + (S.PRICE,), requires=row))
    # A quantity the source gives must be a positive number on every event: missing, zero,
    # negative or infinite, it is wrong (a text column fails its type check instead).
    if S.QUANTITY in raw and pd.api.types.is_float_dtype(checked[S.QUANTITY]):
        checks.append(
            _Check("quantity_positive", "hard", S.QUANTITY,
                   f"every event's 'quantity' is a positive number, not missing ({INVALID_QUANTITY}: "
                   f"{ceiling})",
                   gxe.ExpectColumnValuesToBeInSet(column=QUANTITY_VALID, value_set=[True],
                                                   mostly=mostly),
                   row + (S.QUANTITY,), requires=row, tolerance=share))
    if ITEM_KNOWN in checked:
        checks.append(
            _Check("item_id_known", "hard", S.ITEM_ID,
                   f"every event's 'item_id' is in the items table ({UNKNOWN_ITEM}: {ceiling})",
                   gxe.ExpectColumnValuesToBeInSet(column=ITEM_KNOWN, value_set=[True], mostly=mostly),
                   row, requires=row, tolerance=share))
    checks += [
        _Check(DUPLICATE, "soft", None,
               "no event appears twice (all copies after the first are quarantined)",
               gxe.ExpectCompoundColumnsToBeUnique(column_list=_event_key(checked)), row,
               requires=row),
        _Check(BOT_ACTIVITY, "soft", S.USER_ID,
               f"no user has more than {config.max_events_per_user_day} events on one day "
               "(a bot's events are all quarantined)",
               gxe.ExpectColumnValuesToBeBetween(column=BUSIEST_DAY_EVENTS,
                                                 max_value=config.max_events_per_user_day),
               requires=row + (BUSIEST_DAY_EVENTS,)),
    ]
    if config.window_start is not None or config.window_end is not None:
        checks.append(
            _Check(OUTSIDE_WINDOW, "soft", S.TIMESTAMP,
                   f"timestamps within [{_text(config.window_start) or '-'}, "
                   f"{_text(config.window_end) or '-'}]",
                   gxe.ExpectColumnValuesToBeBetween(column=S.TIMESTAMP, min_value=config.window_start,
                                                     max_value=config.window_end), row,
                   requires=row))
    return checks


def _skipped(check: _Check) -> CheckResult:
    return CheckResult(check.name, check.severity, "events", check.column,
                       f"{check.description} (not run: needs {', '.join(check.requires)})",
                       check.expectation.expectation_type, success=False, skipped=True)


def _bot_samples(bots: dict[str, int], config: ValidationConfig,
                 numeric_ids: bool) -> list[dict[str, Any]]:
    """One line per offending user (busiest-day count), rather than arbitrary event rows.

    Ties keep the users' id order (numeric ids in number order), as a grouping by id gives."""
    def id_order(user: str) -> tuple[int, Any]:
        if numeric_ids:
            try:
                return (0, int(user))
            except ValueError:
                pass
        return (1, user)

    ordered = sorted(bots, key=id_order)
    users = pd.Series([bots[u] for u in ordered], index=ordered, dtype="int64")
    users = users.sort_values(ascending=False).head(config.sample_rows)
    return [{S.USER_ID: str(user), "busiest_day_events": int(count)} for user, count in users.items()]


def _merge(results: list[CheckResult]) -> CheckResult:
    """One check's per-batch results as one: counts summed, the first samples and error kept.

    A tolerant check passes when its unexpected rows are at most its share of all the rows
    it saw, whichever batches they sit in."""
    first = results[0]
    merged = first if len(results) == 1 else replace(
        first,
        success=all(r.success for r in results),
        element_count=sum(r.element_count for r in results),
        unexpected_count=sum(r.unexpected_count for r in results),
        sample_rows=[row for result in results for row in result.sample_rows][:GX_SAMPLES],
        error=next((r.error for r in results if r.error), None),
    )
    if merged.tolerance is not None and merged.error is None:
        # Compared as counts (with a hair for float rounding): 1 of 100 rows is within 1%.
        allowed = merged.tolerance * merged.element_count * (1 + 1e-9)
        merged = replace(merged, success=merged.unexpected_count <= allowed)
    return merged


def _sample_rows(frame: pd.DataFrame, index: list[Any], show: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of `frame` (by index label) as the report shows them: the `show` columns as text."""
    shown = [c for c in show if c in frame.columns]
    rows = frame.loc[[i for i in index if i in frame.index], shown]
    return [{k: _cell(v) for k, v in row.items()} for row in rows.to_dict("records")]


def _to_output(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical output types: ids and event types back to plain strings, derived columns dropped."""
    out = frame[[c for c in frame.columns if not c.startswith("_")]].reset_index(drop=True)
    for column in (S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.SESSION_ID):
        out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _cell(value: Any) -> str:
    """A sample-row cell as a person reads it: missing values say so."""
    return "(missing)" if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)) else str(value)


class _GxRunner:
    """One ephemeral GX context: a pandas data source with one asset per table."""

    def __init__(self) -> None:
        # No telemetry (this machine, and many clusters, have no route out) and no progress
        # bars inside a pipeline log.
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        # GX logs its plugin registry at INFO: hundreds of lines per run in a pipeline log.
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self._gx = gx
        project = DataContextConfig(
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
            store_backend_defaults=InMemoryStoreBackendDefaults(),
        )
        self._context = gx.get_context(mode="ephemeral", project_config=project)
        self._source = self._context.data_sources.add_pandas("shoprec")
        self._suites = 0

    def run(self, table: str, frame: pd.DataFrame, checks: list[_Check],
            display: pd.DataFrame | None = None) -> list[CheckResult]:
        """Validate `frame` against the checks as one suite; one CheckResult per check, in order."""
        return self.suite(table, checks).run(frame, display)

    def suite(self, table: str, checks: list[_Check]) -> "_Suite":
        """The checks as one GX suite on a data frame asset, to run on one batch after another."""
        self._suites += 1
        asset = self._source.add_dataframe_asset(f"{table}_{self._suites}")
        suite = self._gx.ExpectationSuite(name=f"shoprec_{table}_{self._suites}")
        for check in checks:
            # GX returns results in its own order: the check's name in `meta` pairs them up.
            check.expectation.meta = {"shoprec_check": check.name}
            suite.add_expectation(check.expectation)
        return _Suite(table, checks, asset.add_batch_definition_whole_dataframe("all"),
                      self._context.suites.add(suite))


class _Suite:
    def __init__(self, table: str, checks: list[_Check], batches: Any, suite: Any) -> None:
        self._table, self._checks, self._batches, self._suite = table, checks, batches, suite

    def run(self, frame: pd.DataFrame, display: pd.DataFrame | None = None) -> list[CheckResult]:
        """One CheckResult per check, in order. Sample rows of failed checks come from `display`
        (default `frame`), matched by index."""
        if not self._checks:
            return []
        display = frame if display is None else display
        batch = self._batches.get_batch(batch_parameters={"dataframe": frame})
        outcome = batch.validate(self._suite, result_format={"result_format": "SUMMARY",
                                                             "partial_unexpected_count": GX_SAMPLES})
        by_name = {r.expectation_config.meta["shoprec_check"]: r for r in outcome.results}
        return [self._result(self._table, display, check, by_name[check.name]) for check in self._checks]

    @staticmethod
    def _result(table: str, frame: pd.DataFrame, check: _Check, result: Any) -> CheckResult:
        details = result.result or {}
        error = None
        info = result.exception_info or {}
        if info.get("raised_exception"):
            error = str(info.get("exception_message"))
        elif isinstance(info, dict):
            for value in info.values():
                if isinstance(value, dict) and value.get("raised_exception"):
                    error = str(value.get("exception_message"))
        samples: list[dict[str, Any]] = []
        index = details.get("partial_unexpected_index_list") or []
        # A tolerant check may pass with rows quarantined: those rows are shown too.
        show = not result.success or (check.tolerance is not None and details.get("unexpected_count"))
        if show and index and check.show:
            samples = _sample_rows(frame, index, check.show)
        elif show and details.get("partial_unexpected_list"):
            samples = [{"value": _cell(v)} for v in details["partial_unexpected_list"]]
        return CheckResult(
            name=check.name,
            severity=check.severity,
            table=table,
            column=check.column,
            description=check.description,
            expectation=check.expectation.expectation_type,
            success=bool(result.success),
            element_count=int(details.get("element_count") or len(frame)),
            unexpected_count=int(details.get("unexpected_count") or 0),
            sample_rows=samples,
            error=error,
            tolerance=check.tolerance,
        )
