"""Reading the events' `timestamp` column: epoch numbers in their unit, text and date-times as UTC.

Trackers write epoch seconds, milliseconds or microseconds; read in the wrong unit, a
millisecond timestamp lies past the year 2262 and fails as "unparseable", and a second one read
as milliseconds lands in January 1970. The unit is either given (`--timestamp-unit`) or
detected once for the whole log from the numbers' magnitude (`detect_unit`), and every batch is
read in that one unit. Date-times without a time zone are taken as UTC; `TimestampReading`
counts them (and the rest) so the validation report can say how the column was read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shoprec.config import TIMESTAMP_UNITS

AUTO = TIMESTAMP_UNITS[0]
UNITS: tuple[str, ...] = TIMESTAMP_UNITS[1:]
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_NS_PER_UNIT = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# Magnitude bands: below 1e11 a number is seconds (1e11 s is the year 5138, 1e10 s is 2286),
# below 1e14 milliseconds, below 1e17 microseconds, above that nanoseconds. Any date between
# 1973 and 5138 falls in exactly one band whatever its unit.
_UNIT_CEILINGS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))
# Detection reads the first this many non-missing timestamps of the log: enough for a median
# that placeholder zeros and a few stray values cannot move, and cheap to read.
UNIT_SAMPLE_VALUES = 100_000
# A text date-time carries a zone when it ends in Z, UTC/GMT, or an offset after a clock time
# ("10:00:00+01:00", "10:00-0500"); a date alone ("2024-03-01") carries none.
_ZONE = re.compile(r"(?:[zZ]|\b(?:UTC|GMT|utc|gmt)|\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*[+-]\d{2}(?::?\d{2})?)$")


@dataclass
class UnitChoice:
    """The epoch unit numbers are read in, and why: given by the user, or detected."""

    unit: str
    source: str  # "given", "detected" or "default" (no numbers seen to detect it from)
    median: float | None = None  # the magnitude a detection was made from


@dataclass
class TimestampReading:
    """How a log's timestamps were read, summed over its batches (for the report)."""

    choice: UnitChoice
    numbers: int = 0  # epoch numbers, read in `choice.unit`
    aware: int = 0  # date-times with a zone or offset, converted to UTC
    naive: int = 0  # date-times without a zone, taken as UTC

    def add(self, counts: dict[str, int]) -> None:
        """Add one batch's counts (`parse_timestamps`)."""
        self.numbers += counts["numbers"]
        self.aware += counts["aware"]
        self.naive += counts["naive"]

    def to_dict(self) -> dict[str, Any]:
        """The report's `timestamps` entry: the unit, how it was chosen, the counts."""
        return {"unit": self.choice.unit, "unit_source": self.choice.source,
                "unit_median": self.choice.median, "epoch_numbers": self.numbers,
                "with_time_zone": self.aware, "without_time_zone_taken_as_utc": self.naive}

    def sentences(self) -> list[str]:
        """What a person reviewing the run should know about the column, in words."""
        choice, out = self.choice, []
        if self.numbers:
            if choice.source == "given":
                why = "as given by --timestamp-unit"
            elif choice.source == "detected":
                why = f"detected from their magnitude: median {choice.median:.3g}"
            else:
                why = "the default: no numbers to detect a unit from"
            out.append(f"{self.numbers:,} timestamps are numbers, read as Unix epoch "
                       f"{UNIT_NAMES[choice.unit]} ({why}).")
        if self.aware:
            out.append(f"{self.aware:,} timestamps carry a time zone or offset: kept as the same "
                       "instants, in UTC.")
        if self.naive:
            out.append(f"{self.naive:,} timestamps carry no time zone and were taken as UTC: if they "
                       "are local times, add their offset or convert them before ingesting.")
        return out


def choose_unit(given: str, batches: Iterable[pd.Series]) -> UnitChoice:
    """The epoch unit for a whole log: `given` unless it is "auto", else `detect_unit` over the
    first `UNIT_SAMPLE_VALUES` non-missing values of the timestamp column `batches` yield.

    The caller stops nothing: this consumes `batches` only as far as it needs."""
    if given != AUTO:
        if given not in UNITS:
            raise ValueError(f"timestamp unit must be one of {', '.join(TIMESTAMP_UNITS)}, not {given!r}")
        return UnitChoice(given, "given")
    numbers: list[np.ndarray] = []
    seen = 0
    for column in batches:
        if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column):
            break  # date-times already: no numbers to read in any unit
        present = column.dropna()
        numbers.append(_numbers(present).dropna().to_numpy(dtype="float64"))
        seen += len(present)
        if seen >= UNIT_SAMPLE_VALUES:
            break
    sample = np.concatenate(numbers)[:UNIT_SAMPLE_VALUES] if numbers else np.empty(0)
    return detect_unit(sample)


def detect_unit(numbers: np.ndarray) -> UnitChoice:
    """The unit whose magnitude band holds the median of `numbers` ("s" when there are none)."""
    finite = np.abs(numbers[np.isfinite(numbers)])
    if not len(finite):
        return UnitChoice("s", "default")
    median = float(np.median(finite))
    unit = next((unit for ceiling, unit in _UNIT_CEILINGS if median < ceiling), "ns")
    return UnitChoice(unit, "detected", median)


def parse_timestamps(column: pd.Series, unit: str = "s",
                     count: bool = True) -> tuple[pd.Series, dict[str, int]]:
    """The column as UTC date-times (NaT where a value does not parse), and how many values were
    epoch numbers, zoned and zone-less date-times (all 0 unless `count`).

    Numbers are epochs in `unit`; text is ISO 8601 first, then epoch numbers written as text,
    then other layouts ("03/01/2024 10:00"); zone-less date-times are taken as UTC."""
    counts = {"numbers": 0, "aware": 0, "naive": 0}
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        counts["aware"] = int(column.notna().sum()) if count else 0
        return column.dt.tz_convert("UTC").astype("datetime64[ns, UTC]"), counts
    if pd.api.types.is_datetime64_dtype(column):
        counts["naive"] = int(column.notna().sum()) if count else 0
        return column.dt.tz_localize("UTC").astype("datetime64[ns, UTC]"), counts
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        counts["numbers"] = int(column.notna().sum()) if count else 0
        return from_epoch(column, unit), counts
    parsed = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
    retry = parsed.isna() & column.notna()
    number = pd.Series(False, index=column.index)
    if retry.any():  # slower readings, so only where ISO 8601 failed
        numbers = _numbers(column[retry])
        number[numbers.index[numbers.notna()]] = True
        if number.any():
            parsed[number] = from_epoch(numbers[numbers.notna()], unit)
        other = retry & ~number
        if other.any():
            parsed[other] = pd.to_datetime(column[other], utc=True, errors="coerce", format="mixed")
    parsed = parsed.astype("datetime64[ns, UTC]")
    if count:
        read = parsed.notna() & ~number
        zoned = _has_zone(column[read])
        counts.update(numbers=int(number.sum()), aware=int(zoned.sum()), naive=int((~zoned).sum()))
    return parsed, counts


def from_epoch(values: pd.Series, unit: str) -> pd.Series:
    """Epoch numbers in `unit` as UTC date-times; NaT where a value lies beyond what a
    nanosecond timestamp holds (years 1677 to 2262), rather than pandas' OverflowError."""
    limit = (2**63 - 1) // _NS_PER_UNIT[unit]
    if pd.api.types.is_integer_dtype(values) and not values.isna().any() and \
            bool((values.abs() < limit).all()):
        # Integers stay integers: a float carries a nanosecond epoch to only 256 ns.
        return pd.to_datetime(values, unit=unit, utc=True).astype("datetime64[ns, UTC]")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    inside = np.isfinite(numbers) & (numbers.abs() < limit * 0.999)  # float rounding margin
    return pd.to_datetime(numbers.where(inside), unit=unit, utc=True, errors="coerce"
                          ).astype("datetime64[ns, UTC]")


def _numbers(values: pd.Series) -> pd.Series:
    """Each value as a number where it is one (a number, or text that reads as one), else NaN."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    if values.dtype == object:
        values = values.map(lambda v: v.strip() if isinstance(v, str) else
                            (v if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                             else None))
    return pd.to_numeric(values, errors="coerce")


def _has_zone(values: pd.Series) -> pd.Series:
    """Per parsed value: did it carry a time zone (text ending in one, or a zoned date-time)?"""
    try:
        # Arrow's RE2 over the whole column: a Python regex per value costs 4x the parsing.
        text = pc.utf8_trim_whitespace(pa.array(values, type=pa.string(), from_pandas=True))
        zoned = pc.match_substring_regex(text, _ZONE.pattern).to_numpy(zero_copy_only=False)
        return pd.Series(zoned, index=values.index, dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass  # not all text: date-time objects of an in-memory frame among them
    text_values = values.map(lambda v: v.strip() if isinstance(v, str) else None)
    zoned = text_values.map(lambda v: None if v is None else bool(_ZONE.search(v)))
    others = zoned.isna()
    if others.any():
        zoned[others] = values[others].map(lambda v: getattr(v, "tzinfo", None) is not None)
    return zoned.astype(bool)
