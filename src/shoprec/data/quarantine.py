"""Which events the gate quarantines, and why: one reason per row, the first that applies.

Rows that are slightly wrong (a fractional id, a timestamp from a skewed client clock, an
item the items table lacks, a missing or non-positive quantity) are quarantined like the soft
checks' rows; their checks stop the run only above `ValidationConfig.max_quarantine_share`.
Each such fact is a derived boolean column of the normalized batch, so GX checks exactly the
rows this module quarantines, and the first pass can leave them out of a user's busiest day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.config import ValidationConfig

# Quarantine reasons, in the order they are assigned: a row gets the first that applies.
INVALID_ID = "invalid_id"
FUTURE_TIMESTAMP = "future_timestamp"
OUTSIDE_WINDOW = "outside_window"
UNKNOWN_ITEM = "unknown_item"
INVALID_QUANTITY = "invalid_quantity"
DUPLICATE = "duplicate"
BOT_ACTIVITY = "bot_activity"
QUARANTINE_REASONS = (INVALID_ID, FUTURE_TIMESTAMP, OUTSIDE_WINDOW, UNKNOWN_ITEM, INVALID_QUANTITY,
                      DUPLICATE, BOT_ACTIVITY)

# Derived columns exist only in the frame GX checks, never in an output (they start with "_").
ID_COLUMNS = (S.USER_ID, S.ITEM_ID, S.SESSION_ID)
ITEM_KNOWN = "_item_known"
QUANTITY_VALID = "_quantity_valid"
BUSIEST_DAY_EVENTS = "_busiest_day_events"


def whole_id_column(column: str) -> str:
    """The derived column saying, per row, that `column`'s id is not a fractional number."""
    return f"_{column}_whole"


@dataclass(frozen=True)
class RowRules:
    """What a row's own defects are judged against (the same in both passes)."""

    config: ValidationConfig
    now: pd.Timestamp


def add_row_facts(normal: pd.DataFrame, raw: pd.DataFrame, known_items: pd.Index | None,
                  fractional: dict[str, np.ndarray]) -> pd.DataFrame:
    """`normal` (one normalized batch) with the derived columns the row checks read.

    `fractional` maps an id column to its rows whose id was a non-whole (or inexact) float;
    `known_items` is the items table's ids (None: no items table, no check); the quantity is
    judged only when the source has the column and it holds numbers (else its type check fails)."""
    facts = {whole_id_column(c): ~fractional[c] if c in fractional else np.ones(len(normal), bool)
             for c in ID_COLUMNS}
    if known_items is not None and S.ITEM_ID in normal:  # else 'item_id_present' fails
        items = normal[S.ITEM_ID]
        facts[ITEM_KNOWN] = items.isin(known_items).to_numpy() | items.isna().to_numpy()
    quantity = normal[S.QUANTITY]
    if S.QUANTITY in raw.columns and pd.api.types.is_float_dtype(quantity):
        values = quantity.to_numpy()
        with np.errstate(invalid="ignore"):
            facts[QUANTITY_VALID] = np.isfinite(values) & (values > 0)
    else:
        facts[QUANTITY_VALID] = np.ones(len(normal), bool)
    return normal.assign(**facts)


def row_defects(normal: pd.DataFrame, rules: RowRules) -> list[tuple[str, pd.Series]]:
    """Each row-level reason (all but duplicates and bots) with its rows, in reason order."""
    stamps = normal[S.TIMESTAMP]
    whole = np.logical_and.reduce([normal[whole_id_column(c)].to_numpy() for c in ID_COLUMNS])
    found = [(INVALID_ID, pd.Series(~whole, index=normal.index)),
             (FUTURE_TIMESTAMP, (stamps > rules.now).fillna(False)),
             (OUTSIDE_WINDOW, outside_window(normal, rules.config))]
    if ITEM_KNOWN in normal:
        found.append((UNKNOWN_ITEM, ~normal[ITEM_KNOWN]))
    found.append((INVALID_QUANTITY, ~normal[QUANTITY_VALID]))
    return found


def excluded_rows(normal: pd.DataFrame, rules: RowRules) -> np.ndarray:
    """Rows quarantined for a row-level reason: they count toward no user's busiest day."""
    masks = [mask.to_numpy(dtype=bool) for _, mask in row_defects(normal, rules)]
    return np.logical_or.reduce(masks)


def assign_reasons(normal: pd.DataFrame, rules: RowRules, later_copy: pd.Series,
                   busiest: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each row's quarantine reason (None = clean) and a detail a person reads.

    `later_copy`: the row is an exact copy of an earlier row (whole log); `busiest`: its user's
    busiest-day count over the events quarantined for no row-level reason and not later copies."""
    index = normal.index
    reasons = pd.Series(np.full(len(normal), None, dtype=object), index=index)
    details = pd.Series(np.full(len(normal), None, dtype=object), index=index)
    config = rules.config
    for reason, mask in row_defects(normal, rules) + [(DUPLICATE, later_copy)]:
        rows = mask.to_numpy(dtype=bool) & reasons.isna().to_numpy()
        if rows.any():
            reasons[rows] = reason
            details[rows] = _detail(reason, normal[rows], rules)
    ceiling = config.max_events_per_user_day
    bot = (busiest > ceiling) & reasons.isna()
    reasons[bot] = BOT_ACTIVITY
    details[bot] = ("user has " + busiest[bot].astype("int64").astype(str)
                    + f" events on one day (ceiling {ceiling})")
    return reasons, details


def outside_window(normal: pd.DataFrame, config: ValidationConfig) -> pd.Series:
    """Rows whose (parsed) timestamp lies outside [window_start, window_end]."""
    stamps = normal[S.TIMESTAMP]
    outside = pd.Series(False, index=normal.index)
    if config.window_start is not None:
        outside |= stamps < config.window_start
    if config.window_end is not None:
        outside |= stamps > config.window_end
    return outside & stamps.notna()


def _detail(reason: str, rows: pd.DataFrame, rules: RowRules) -> pd.Series | str:
    """Why each of `rows` has `reason`, naming the column and the value."""
    config = rules.config
    if reason == INVALID_ID:
        detail = pd.Series("", index=rows.index, dtype=object)
        for column in reversed(ID_COLUMNS):  # the first fractional column names the row
            bad = ~rows[whole_id_column(column)]
            detail[bad] = (f"'{column}' is " + rows.loc[bad, column].astype(str)
                           + ", not a whole number (a float id would be truncated)")
        return detail
    if reason == FUTURE_TIMESTAMP:
        return ("timestamp " + rows[S.TIMESTAMP].astype(str)
                + f" is after now ({rules.now.isoformat(timespec='seconds')}): a skewed client clock?")
    if reason == OUTSIDE_WINDOW:
        return ("timestamp " + rows[S.TIMESTAMP].astype(str)
                + f" outside [{_text(config.window_start) or '-'}, {_text(config.window_end) or '-'}]")
    if reason == UNKNOWN_ITEM:
        return "'item_id' " + rows[S.ITEM_ID].astype(str) + " is not in the items table"
    if reason == INVALID_QUANTITY:
        quantity = rows[S.QUANTITY]
        return pd.Series(np.where(quantity.isna(), "'quantity' is missing",
                                  "'quantity' " + quantity.astype(str) + " is not a positive number"),
                         index=rows.index)
    return "exact copy of an earlier event"


def _text(value: object) -> str | None:
    return None if value is None else str(value)
