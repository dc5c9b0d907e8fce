"""The canonical data model: column names and types of the events, items and users tables.

Every module refers to columns through these constants; this is the one place they live.
"""

from __future__ import annotations

from typing import Final

# --- events: one row per interaction -------------------------------------------------------
USER_ID: Final = "user_id"
ITEM_ID: Final = "item_id"
EVENT_TYPE: Final = "event_type"
TIMESTAMP: Final = "timestamp"  # timezone-aware UTC
QUANTITY: Final = "quantity"  # optional
PRICE: Final = "price"  # optional, per unit, >= 0
SESSION_ID: Final = "session_id"  # optional: an Instacart order, a browsing session

VIEW: Final = "view"
CART: Final = "cart"
PURCHASE: Final = "purchase"
EVENT_TYPES: Final[tuple[str, ...]] = (VIEW, CART, PURCHASE)

EVENT_REQUIRED: Final[tuple[str, ...]] = (USER_ID, ITEM_ID, EVENT_TYPE, TIMESTAMP)
EVENT_OPTIONAL: Final[tuple[str, ...]] = (QUANTITY, PRICE, SESSION_ID)
EVENT_COLUMNS: Final[tuple[str, ...]] = EVENT_REQUIRED + EVENT_OPTIONAL

# --- items: one row per item; attributes beyond these are kept as they come -----------------
TITLE: Final = "title"
CATEGORY: Final = "category"
ITEM_REQUIRED: Final[tuple[str, ...]] = (ITEM_ID,)
ITEM_OPTIONAL: Final[tuple[str, ...]] = (TITLE, CATEGORY, PRICE)

# --- users: optional, one row per user with free attributes --------------------------------
USER_REQUIRED: Final[tuple[str, ...]] = (USER_ID,)

# --- quarantine: a quarantined event keeps its columns and gains these ----------------------
QUARANTINE_REASON: Final = "quarantine_reason"
QUARANTINE_DETAIL: Final = "quarantine_detail"

# --- file names inside a dataset directory --------------------------------------------------
EVENTS_FILE: Final = "events.parquet"
ITEMS_FILE: Final = "items.parquet"
USERS_FILE: Final = "users.parquet"
QUARANTINE_FILE: Final = "quarantine.parquet"
DATASET_MANIFEST: Final = "dataset.json"

# Feature tables: one Parquet file per feature view under the home's features folder
# (`Home.feature_table`); shoprec.features.names re-exports them beside the feature names.
USER_STATS: Final = "user_stats"
ITEM_STATS: Final = "item_stats"
USER_RECENT_ITEMS: Final = "user_recent_items"
USER_HISTORY: Final = "user_history"
TABLE_FILES: Final[dict[str, str]] = {
    USER_STATS: "user_stats.parquet",
    ITEM_STATS: "item_stats.parquet",
    USER_RECENT_ITEMS: "user_recent_items.parquet",
    USER_HISTORY: "user_history.parquet",
}
