"""Names shared by the feature tables, the Feast repo (feature_repo/) and serving: one place.

The Feast definitions import these, so a renamed column cannot drift between the table
builder and the feature views.
"""

from __future__ import annotations

from typing import Final

from shoprec import schema as S

PROJECT: Final = "shoprec"
# Feast's timestamp column in every feature table: when the row's values became true.
FEATURE_TIMESTAMP: Final = "event_timestamp"

# Environment variables. FEATURES_DIR_ENV tells feature_repo/ where the Parquet tables live;
# the library sets it while it loads the definitions, `feast apply` users set it themselves
# (default: <checkout>/shoprec-home/features, the default home of `make run`).
FEATURES_DIR_ENV: Final = "SHOPREC_FEATURES_DIR"
FEATURE_REPO_ENV: Final = "SHOPREC_FEATURE_REPO"
# Which offline store runs the point-in-time join: "duckdb" (one machine, the default) or "spark"
# (Feast's Spark offline store). feature_repo/ picks its sources' class from it (FileSource for
# DuckDB, SparkSource for Spark); the library sets it while it loads the definitions.
OFFLINE_STORE_ENV: Final = "SHOPREC_FEAST_OFFLINE_STORE"

# --- tables (file names under Home.features): defined in schema, below Home and this room ------
from shoprec.schema import ITEM_STATS, TABLE_FILES, USER_HISTORY, USER_RECENT_ITEMS, USER_STATS  # noqa: E402, F401
PUSH_SOURCE: Final = "user_recent_items_push"
HISTORY_PUSH_SOURCE: Final = "user_history_push"
FEATURE_SERVICE: Final = "recommender_v1"

# --- user_stats -------------------------------------------------------------------------------
WINDOWS: Final[dict[str, int | None]] = {"7d": 7, "30d": 30, "all": None}
EVENT_PLURAL: Final[dict[str, str]] = {S.VIEW: "views", S.CART: "carts", S.PURCHASE: "purchases"}
USER_COUNT_FEATURES: Final[tuple[str, ...]] = tuple(
    f"{EVENT_PLURAL[kind]}_{window}" for window in WINDOWS for kind in S.EVENT_TYPES
)
DISTINCT_ITEMS: Final = "distinct_items"
DAYS_SINCE_LAST_EVENT: Final = "days_since_last_event"
MEAN_PRICE: Final = "mean_price"
TOP_CATEGORY: Final = "top_category"
USER_STATS_FEATURES: Final[tuple[str, ...]] = USER_COUNT_FEATURES + (
    DISTINCT_ITEMS, DAYS_SINCE_LAST_EVENT, MEAN_PRICE, TOP_CATEGORY,
)

# --- item_stats -------------------------------------------------------------------------------
ITEM_EVENT_FEATURES: Final[tuple[str, ...]] = tuple(f"events_{window}" for window in WINDOWS)
ITEM_USERS_ALL: Final = "users_all"
PURCHASE_SHARE: Final = "purchase_share"
ITEM_PRICE: Final = "price"
ITEM_CATEGORY: Final = "category"
ITEM_STATS_FEATURES: Final[tuple[str, ...]] = ITEM_EVENT_FEATURES + (
    ITEM_USERS_ALL, PURCHASE_SHARE, ITEM_PRICE, ITEM_CATEGORY,
)

# --- user_recent_items ------------------------------------------------------------------------
RECENT_ITEMS: Final = "recent_items"  # oldest first, most recent last: the model's input order
# Its length is the sequence window, `max_len` (config.DEFAULT_MAX_LEN unless the pipeline says).

# --- user_history -----------------------------------------------------------------------------
# Each user's newest `history_len` items (config.DEFAULT_HISTORY_LEN), oldest first, as of the
# build and kept current online by pushes: what serving sends the model (the window is its tail).
HISTORY_ITEMS: Final = "history_items"
# One flag per history item, aligned with it: True where the item opens a session, as
# `shoprec.sequences.session_starts` marks it over the user's whole log (a repeat head reads it).
HISTORY_SESSION_STARTS: Final = "history_session_starts"
# The user's newest event (nanoseconds since the epoch, UTC) and its session id ("" for none):
# what a push needs to tell whether its first event opens a session. Push bookkeeping, not
# features: the service leaves them out (feature_repo/), so neither serving nor training reads them.
HISTORY_LAST_EVENT_NS: Final = "history_last_event_ns"
HISTORY_LAST_SESSION: Final = "history_last_session"
HISTORY_LAST_FEATURES: Final[tuple[str, ...]] = (HISTORY_LAST_EVENT_NS, HISTORY_LAST_SESSION)

# The per-user list features (item ids and their session flags): long lists that training sets
# never join (the model rebuilds its sequences from the events) and that a table of scalars
# must not carry.
LIST_FEATURES: Final[tuple[str, ...]] = (RECENT_ITEMS, HISTORY_ITEMS, HISTORY_SESSION_STARTS)

UNKNOWN_CATEGORY: Final = "unknown"
