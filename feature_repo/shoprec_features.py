"""shoprec's Feast definitions, in Feast's order: entities -> sources -> feature views -> services.

`feast apply` imports this file (and the library loads it the same way). The Parquet tables it
points at are written by `shoprec.features.tables`; their folder comes from $SHOPREC_FEATURES_DIR,
by default the features folder of the checkout's default home (`make run` writes there).
The sources are FileSource (DuckDB offline store), or SparkSource over the same Parquet files when
$SHOPREC_FEAST_OFFLINE_STORE=spark (Feast's Spark offline store accepts only SparkSource); the
library sets that variable from the store's config, a `feast apply` user sets it with the yaml.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float64, Int64, String

from shoprec import schema as S
from shoprec.config import DEFAULT_HISTORY_LEN, DEFAULT_MAX_LEN
from shoprec.features import names as N

FEATURES_DIR = os.environ.get(N.FEATURES_DIR_ENV) or str(
    Path(__file__).resolve().parent.parent / "shoprec-home" / "features"
)
OFFLINE_STORE = os.environ.get(N.OFFLINE_STORE_ENV) or "duckdb"


def parquet_source(name: str, table: str):
    """One feature table's Parquet file as a batch source of the configured offline store."""
    path = f"{FEATURES_DIR}/{N.TABLE_FILES[table]}"
    if OFFLINE_STORE == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=name, path=path, file_format="parquet", timestamp_field=N.FEATURE_TIMESTAMP)
    return FileSource(name=name, path=path, timestamp_field=N.FEATURE_TIMESTAMP)


# --- entities ----------------------------------------------------------------------------------

# The shopper: every personal feature and every recommendation request is keyed by user_id.
user = Entity(name="user", join_keys=[S.USER_ID], value_type=ValueType.STRING,
              description="A shopper (canonical user_id, text)")

# The product: popularity and catalogue features are keyed by item_id.
item = Entity(name="item", join_keys=[S.ITEM_ID], value_type=ValueType.STRING,
              description="A product (canonical item_id, text)")

# --- sources -----------------------------------------------------------------------------------

# User activity history: one row per user per change (tables.user_stats_table).
user_stats_source = parquet_source("user_stats_source", N.USER_STATS)

# Item popularity history: one row per item per change (tables.item_stats_table).
item_stats_source = parquet_source("item_stats_source", N.ITEM_STATS)

# Each user's recent item ids over time: the batch history behind the push source below.
user_recent_items_source = parquet_source("user_recent_items_source", N.USER_RECENT_ITEMS)

# Live events reach the online store through this push source at once, without re-materializing.
user_recent_items_push = PushSource(name=N.PUSH_SOURCE, batch_source=user_recent_items_source)

# Each user's longer history as of the build (one row per user: tables.user_history_table) and
# its push source, which live events reach as the recent items' does.
user_history_source = parquet_source("user_history_source", N.USER_HISTORY)
user_history_push = PushSource(name=N.HISTORY_PUSH_SOURCE, batch_source=user_history_source)

# --- feature views -----------------------------------------------------------------------------

# Ttl 0 (no expiry): the history tables are complete, and the DuckDB store joins by time alone.

# How active the user is and on what: counts by event type over 7 / 30 days and all time.
user_stats_fv = FeatureView(
    name=N.USER_STATS,
    entities=[user],
    ttl=timedelta(0),
    schema=[Field(name=name, dtype=Int64) for name in N.USER_COUNT_FEATURES]
    + [
        Field(name=N.DISTINCT_ITEMS, dtype=Int64),
        Field(name=N.DAYS_SINCE_LAST_EVENT, dtype=Float64),
        Field(name=N.MEAN_PRICE, dtype=Float64),
        Field(name=N.TOP_CATEGORY, dtype=String),
    ],
    source=user_stats_source,
    online=True,
    tags={"owner": "features", "doc": "shoprec.features.tables.user_stats_table"},
)

# How popular an item is now and what it is: window popularity, purchase share, price, category.
# Not in the model's service: neither training nor the serving path reads it through Feast (the
# serving catalogue and monitoring read its Parquet table; see recommender_v1 below).
item_stats_fv = FeatureView(
    name=N.ITEM_STATS,
    entities=[item],
    ttl=timedelta(0),
    schema=[Field(name=name, dtype=Int64) for name in N.ITEM_EVENT_FEATURES]
    + [
        Field(name=N.ITEM_USERS_ALL, dtype=Int64),
        Field(name=N.PURCHASE_SHARE, dtype=Float64),
        Field(name=N.ITEM_PRICE, dtype=Float64),
        Field(name=N.ITEM_CATEGORY, dtype=String),
    ],
    source=item_stats_source,
    online=True,
    tags={"owner": "features", "doc": "shoprec.features.tables.item_stats_table"},
)

# The model's input sequence at serving: the last N item ids, oldest first; fed by the push source.
user_recent_items_fv = FeatureView(
    name=N.USER_RECENT_ITEMS,
    entities=[user],
    ttl=timedelta(0),
    schema=[Field(name=N.RECENT_ITEMS, dtype=Array(String))],
    source=user_recent_items_push,
    online=True,
    tags={"owner": "features", "max_len": str(DEFAULT_MAX_LEN)},
)

# What serving sends the model: the newest N item ids, oldest first (the window is its tail, the
# repeat bonus reads all of it), and per item whether it opens a session (a repeat head reads
# that); fed by its push source. A snapshot: no value as of earlier times. The newest event's
# time and session id are there for pushes (`online.push_events` tells from them whether its
# first event opens a session); the service leaves them out.
user_history_fv = FeatureView(
    name=N.USER_HISTORY,
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name=N.HISTORY_ITEMS, dtype=Array(String)),
        Field(name=N.HISTORY_SESSION_STARTS, dtype=Array(Bool)),
        Field(name=N.HISTORY_LAST_EVENT_NS, dtype=Int64),
        Field(name=N.HISTORY_LAST_SESSION, dtype=String),
    ],
    source=user_history_push,
    online=True,
    tags={"owner": "features", "history_len": str(DEFAULT_HISTORY_LEN)},
)

# --- feature services --------------------------------------------------------------------------

# The contract between a model and its features: training retrieval and online serving both go
# through it, and every model bundle records its name. It carries what they read: the user's
# history (the model's input at serving; the recent items are its window, kept as of every
# time) and user_stats (serving's top category and the model's optional user context,
# `shoprec.features.user_context`). item_stats left it: on
# validation no model input built from it was kept, and serving reads no item row online.
# Of user_history, the lists only: its last-event fields are push bookkeeping, which training
# sets must not join (training_set.training_features drops only the list features by name).
recommender_v1 = FeatureService(
    name=N.FEATURE_SERVICE,
    features=[user_stats_fv, user_recent_items_fv,
              user_history_fv[[N.HISTORY_ITEMS, N.HISTORY_SESSION_STARTS]]],
    tags={"model": "sequential-recommender"},
    description="Features of the sequential recommender, version 1",
)
