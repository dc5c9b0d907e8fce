"""The Feast store: open it, apply the repo's definitions, materialize the tables into it.

Feast is the contract between training and serving: the definitions live in `feature_repo/`
(read by `feast apply` and by `apply_definitions` alike), the stores come from
`FeatureStoreSettings` (`settings`: environment variables with local defaults under the home
folder). This module owns the store's lifecycle, the pipeline's side: `open_store`,
`apply_definitions`, `materialize` and `publish_and_materialize`. What serving does with an
opened store (online reads, pushes) is `online`'s. Nothing here opens a store at import time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from shoprec.errors import FeatureSourceMissing, FeatureStoreConfigError
from shoprec.features import names as N
from shoprec.features.settings import FeatureStoreSettings, offline_store_of, one_line, online_errors, repo_config
from shoprec.features.tables import DEFAULT_MEMORY_LIMIT, duckdb_connection
from shoprec.home import FEATURES_MANIFEST

if TYPE_CHECKING:  # Feast takes seconds to import: only the functions that need it import it.
    from feast import FeatureStore

_definitions_lock = threading.Lock()


def open_store(settings: FeatureStoreSettings) -> "FeatureStore":
    """A Feast FeatureStore over the settings' stores (nothing is created until it is used)."""
    from feast import FeatureStore

    config = repo_config(settings)
    settings.features_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.repo_dir), config=config)


# --- apply ------------------------------------------------------------------------------------


def load_definitions(repo_dir: Path, features_dir: Path, offline_store: str = "duckdb") -> list[Any]:
    """Import the repo's definition files (as `feast apply` would, honouring .feastignore) with
    $SHOPREC_FEATURES_DIR pointing at `features_dir` and $SHOPREC_FEAST_OFFLINE_STORE at
    `offline_store` ("spark": SparkSource sources); returns the Feast objects they declare.

    Each call executes the files afresh, so two homes in one process never share paths.
    """
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource, PushSource
    from feast.repo_operations import get_repo_files

    if not (repo_dir / "feature_store.yaml").is_file():
        raise FeatureStoreConfigError(repo_dir / "feature_store.yaml", "the Feast repo has no feature_store.yaml")
    found: list[Any] = []
    with _definitions_lock:
        previous = {name: os.environ.get(name) for name in (N.FEATURES_DIR_ENV, N.OFFLINE_STORE_ENV)}
        os.environ[N.FEATURES_DIR_ENV] = str(features_dir)
        os.environ[N.OFFLINE_STORE_ENV] = offline_store
        try:
            for number, path in enumerate(get_repo_files(repo_dir)):
                spec = importlib.util.spec_from_file_location(f"_shoprec_feature_repo_{number}", path)
                if spec is None or spec.loader is None:
                    raise FeatureStoreConfigError(path, "cannot be imported")
                module = importlib.util.module_from_spec(spec)
                try:
                    spec.loader.exec_module(module)
                except Exception as exc:
                    raise FeatureStoreConfigError(path, f"import failed: {one_line(exc)}") from exc
                for value in vars(module).values():
                    kinds = (Entity, DataSource, FeatureView, FeatureService)
                    if isinstance(value, kinds) and not any(value is seen for seen in found):
                        found.append(value)
                        if isinstance(value, PushSource) and value.batch_source is not None:
                            if not any(value.batch_source is seen for seen in found):
                                found.append(value.batch_source)
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return found


def apply_definitions(settings: FeatureStoreSettings) -> "FeatureStore":
    """`feast apply` for the settings' home: register the repo's definitions, create the online tables.

    Raises:
        FeatureSourceMissing: a view's Parquet table is not in the home's features folder.
        FeatureStoreConfigError: the repo or a named feature_store.yaml is broken.
        FeatureStoreUnavailable: the online store does not answer.
    """
    from feast import FeatureView

    # The sources' class follows the offline store the config names (a yaml's, or the settings').
    objects = load_definitions(settings.repo_dir, settings.features_dir, offline_store_of(repo_config(settings)))
    for view in (o for o in objects if isinstance(o, FeatureView)):
        source = view.batch_source
        path = Path(getattr(source, "path", "") or "")
        if source is not None and "://" not in str(path) and not path.exists():
            raise FeatureSourceMissing(view.name, path)
    store = open_store(settings)
    with online_errors(settings):
        store.apply(objects)
    return store


# --- materialize ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaterializeSummary:
    """What one materialization did: the window, the views, the time it took."""

    start: datetime
    end: datetime
    views: list[str]
    seconds: float
    store: str


MATERIALIZE_BATCH_ROWS = 10_000
"""Rows per online-store write while materializing: the bound on what one write holds."""


def materialize(
    store: "FeatureStore",
    settings: FeatureStoreSettings,
    end: datetime | pd.Timestamp | str | None = None,
    start: datetime | pd.Timestamp | str | None = None,
    views: Sequence[str] | None = None,
    batch_rows: int = MATERIALIZE_BATCH_ROWS,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> MaterializeSummary:
    """Load the latest feature values with timestamps in [start, end] into the online store.

    Defaults: `end` is the tables' `as_of` (features.json), `start` the Unix epoch (the whole
    history: each entity's latest row in the window wins).

    In bounded memory, one view at a time: DuckDB (within `memory_limit`, spilling beyond)
    picks each entity's latest row straight from the view's Parquet table, and the rows reach
    the online store in record batches of `batch_rows`, converted and written as Feast's own
    materialization does; then the registry records the interval, as `feast materialize`
    does. A view whose table is not a local Parquet file goes through Feast's materialize,
    told to pull only the latest rows and to write in batches of `batch_rows`.
    """
    end_time = _utc(end) if end is not None else _tables_as_of(settings)
    start_time = _utc(start) if start is not None else datetime(1970, 1, 1, tzinfo=timezone.utc)
    if start_time > end_time:
        raise ValueError(f"materialize: start {start_time} is after end {end_time}")
    chosen = list(views) if views else [v.name for v in store.list_feature_views()]
    began = time.perf_counter()
    with online_errors(settings):
        for name in chosen:
            view = store.get_feature_view(name)
            path = _local_parquet(view.batch_source)
            if path is None:
                _feast_materialize(store, name, start_time, end_time, batch_rows)
                continue
            _materialize_parquet(store, view, path, start_time, end_time, batch_rows, memory_limit,
                                 settings.features_dir)
            store.registry.apply_materialization(view, store.project, start_time, end_time)
    return MaterializeSummary(start_time, end_time, chosen, time.perf_counter() - began, settings.describe())


def publish_and_materialize(
    tables_dir: str | Path,
    settings: FeatureStoreSettings,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    batch_rows: int = MATERIALIZE_BATCH_ROWS,
) -> MaterializeSummary:
    """Pipeline step: copy a build's tables into the home's features folder (the sources Feast
    reads), apply the repo and materialize everything up to the build's `as_of` (in bounded
    memory: `materialize`'s `memory_limit` and `batch_rows`).

    Each file is copied then renamed into place, so a reader never sees half a table.
    """
    source = Path(tables_dir)
    names = [*N.TABLE_FILES.values(), FEATURES_MANIFEST]
    for name in names:
        if not (source / name).is_file():
            raise FeatureSourceMissing(name.removesuffix(".parquet"), source / name)
    settings.features_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        partial = settings.features_dir / f".{name}.partial"
        shutil.copyfile(source / name, partial)
        partial.replace(settings.features_dir / name)
    store = apply_definitions(settings)
    return materialize(store, settings, batch_rows=batch_rows, memory_limit=memory_limit)


def _local_parquet(source: Any) -> Path | None:
    """The local Parquet file a batch source reads (FileSource, or SparkSource over a file), else None."""
    raw = str(getattr(source, "path", "") or "").removeprefix("file://")
    file_format = getattr(source, "file_format", None)  # FileSource: a format object; SparkSource: text
    if file_format is None:
        named = "parquet" if raw.endswith(".parquet") else ""
    else:
        named = (file_format if isinstance(file_format, str) else type(file_format).__name__).lower()
    if not raw or "://" in raw or "parquet" not in named:
        return None
    path = Path(raw)
    return path if path.is_file() else None


def _materialize_parquet(
    store: "FeatureStore",
    view: Any,
    path: Path,
    start: datetime,
    end: datetime,
    batch_rows: int,
    memory_limit: str,
    spill_near: Path,
) -> int:
    """Write each entity's latest row of `view` in [start, end] from its Parquet table to the
    online store, in record batches; returns the rows written.

    DuckDB streams the table twice: once for each entity's latest time (a hash table of one
    entry per entity), once to keep the rows at that time; nothing else is held.
    """
    from feast.utils import _convert_arrow_to_proto  # what Feast's local materialization writes with

    source = view.batch_source
    from_source = {feature: column for column, feature in (source.field_mapping or {}).items()}
    join_keys = {entity.name: entity.dtype.to_value_type() for entity in view.entity_columns}
    stamps = [c for c in (source.timestamp_field, source.created_timestamp_column) if c]
    columns = [
        f"{_quoted(from_source.get(name, name))} AS {_quoted(name)}"
        for name in [*join_keys, *(feature.name for feature in view.features)]
    ] + [f"CAST({_quoted(c)} AS TIMESTAMPTZ) AS {_quoted(c)}" for c in stamps]
    ts = _quoted(source.timestamp_field)
    rows = (
        f"(SELECT {', '.join(columns)} FROM read_parquet('{_escaped(path)}') "
        f"WHERE CAST({ts} AS TIMESTAMPTZ) BETWEEN '{start.isoformat()}'::TIMESTAMPTZ "
        f"AND '{end.isoformat()}'::TIMESTAMPTZ)"
    )
    keys = ", ".join(_quoted(k) for k in join_keys)
    on = " AND ".join(f"r.{_quoted(k)} = l.{_quoted(k)}" for k in join_keys)
    query = (
        f"SELECT r.* FROM {rows} r JOIN (SELECT {keys}, max({ts}) AS _latest FROM {rows} GROUP BY {keys}) l "
        f"ON {on} AND r.{ts} = l._latest"
    )
    if source.created_timestamp_column:  # ties on the event time: the latest created wins, as in Feast
        query += f" QUALIFY row_number() OVER (PARTITION BY {', '.join(f'r.{_quoted(k)}' for k in join_keys)} " \
                 f"ORDER BY r.{_quoted(source.created_timestamp_column)} DESC) = 1"
    provider = store._get_provider()
    written = 0
    with duckdb_connection(memory_limit, spill_near) as con:
        for batch in con.sql(query).to_arrow_reader(batch_rows):
            if batch.num_rows:
                provider.online_write_batch(store.config, view, _convert_arrow_to_proto(batch, view, join_keys),
                                            progress=None)
                written += batch.num_rows
    return written


def _feast_materialize(store: "FeatureStore", name: str, start: datetime, end: datetime, batch_rows: int) -> None:
    """Feast's own materialize of one view, pulling only each entity's latest row and writing
    in batches (its defaults pull the whole history and write it in one batch)."""
    from feast.repo_config import MaterializationConfig

    previous = store.config.materialization_config
    store.config.materialization_config = MaterializationConfig(
        pull_latest_features=True, online_write_batch_size=batch_rows
    )
    try:
        store.materialize(start_date=start, end_date=end, feature_views=[name])
    finally:
        store.config.materialization_config = previous


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _escaped(path: Path) -> str:
    return str(path).replace("'", "''")


def _tables_as_of(settings: FeatureStoreSettings) -> datetime:
    manifest = settings.home.features_manifest
    if not manifest.is_file():
        raise FeatureSourceMissing("all views", manifest)
    return _utc(json.loads(manifest.read_text())["as_of"])


def _utc(value: datetime | pd.Timestamp | str) -> datetime:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()
