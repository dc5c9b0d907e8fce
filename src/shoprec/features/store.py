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
from shoprec.features.settings import FeatureStoreSettings, one_line, online_errors, repo_config
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


def load_definitions(repo_dir: Path, features_dir: Path) -> list[Any]:
    """Import the repo's definition files (as `feast apply` would, honouring .feastignore) with
    $SHOPREC_FEATURES_DIR pointing at `features_dir`; returns the Feast objects they declare.

    Each call executes the files afresh, so two homes in one process never share paths.
    """
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource, PushSource
    from feast.repo_operations import get_repo_files

    if not (repo_dir / "feature_store.yaml").is_file():
        raise FeatureStoreConfigError(repo_dir / "feature_store.yaml", "the Feast repo has no feature_store.yaml")
    found: list[Any] = []
    with _definitions_lock:
        previous = os.environ.get(N.FEATURES_DIR_ENV)
        os.environ[N.FEATURES_DIR_ENV] = str(features_dir)
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
            if previous is None:
                os.environ.pop(N.FEATURES_DIR_ENV, None)
            else:
                os.environ[N.FEATURES_DIR_ENV] = previous
    return found


def apply_definitions(settings: FeatureStoreSettings) -> "FeatureStore":
    """`feast apply` for the settings' home: register the repo's definitions, create the online tables.

    Raises:
        FeatureSourceMissing: a view's Parquet table is not in the home's features folder.
        FeatureStoreConfigError: the repo or a named feature_store.yaml is broken.
        FeatureStoreUnavailable: the online store does not answer.
    """
    from feast import FeatureView

    objects = load_definitions(settings.repo_dir, settings.features_dir)
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


def materialize(
    store: "FeatureStore",
    settings: FeatureStoreSettings,
    end: datetime | pd.Timestamp | str | None = None,
    start: datetime | pd.Timestamp | str | None = None,
    views: Sequence[str] | None = None,
) -> MaterializeSummary:
    """Load the latest feature values with timestamps in [start, end] into the online store.

    Defaults: `end` is the tables' `as_of` (features.json), `start` the Unix epoch (the whole
    history: each entity's latest row in the window wins).
    """
    end_time = _utc(end) if end is not None else _tables_as_of(settings)
    start_time = _utc(start) if start is not None else datetime(1970, 1, 1, tzinfo=timezone.utc)
    chosen = list(views) if views else [v.name for v in store.list_feature_views()]
    began = time.perf_counter()
    with online_errors(settings):
        store.materialize(start_date=start_time, end_date=end_time, feature_views=chosen)
    return MaterializeSummary(start_time, end_time, chosen, time.perf_counter() - began, settings.describe())


def publish_and_materialize(
    tables_dir: str | Path,
    settings: FeatureStoreSettings,
) -> MaterializeSummary:
    """Pipeline step: copy a build's tables into the home's features folder (the sources Feast
    reads), apply the repo and materialize everything up to the build's `as_of`.

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
    return materialize(store, settings)


def _tables_as_of(settings: FeatureStoreSettings) -> datetime:
    manifest = settings.home.features_manifest
    if not manifest.is_file():
        raise FeatureSourceMissing("all views", manifest)
    return _utc(json.loads(manifest.read_text())["as_of"])


def _utc(value: datetime | pd.Timestamp | str) -> datetime:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()
