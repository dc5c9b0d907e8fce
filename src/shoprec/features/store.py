"""The Feast store: settings, apply, materialize, online reads and pushes.

Feast is the contract between training and serving: the definitions live in `feature_repo/`
(read by `feast apply` and by `apply_definitions` alike), the stores come from
`FeatureStoreSettings` (environment variables with local defaults under the home folder).
Nothing here opens a store at import time.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from shoprec import schema as S
from shoprec.config import DEFAULT_MAX_LEN
from shoprec.errors import (
    FeatureSourceMissing,
    FeatureStoreConfigError,
    FeatureStoreError,
    FeatureStoreUnavailable,
)
from shoprec.features import names as N
from shoprec.home import FEATURES_MANIFEST, Home

if TYPE_CHECKING:  # Feast takes seconds to import: only the functions that need it import it.
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

ONLINE_STORE_ENV = "SHOPREC_FEAST_ONLINE_STORE"
REDIS_ENV = "SHOPREC_REDIS"
REGISTRY_ENV = "SHOPREC_FEAST_REGISTRY"
YAML_ENV = "SHOPREC_FEAST_YAML"
DEFAULT_REDIS = "127.0.0.1:6379"
ONLINE_STORES = ("sqlite", "redis")
REGISTRY_FILE = "registry.db"
SQLITE_FILE = "online_store.db"
_SQL_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql", "oracle")

# What an online read returns for a user the store does not know (with `missing` = True).
# Counts are zero; `days_since_last_event` -1 means "never seen"; a price nobody paid is NaN.
USER_DEFAULTS: dict[str, Any] = {
    **{name: 0 for name in N.USER_COUNT_FEATURES},
    N.DISTINCT_ITEMS: 0,
    N.DAYS_SINCE_LAST_EVENT: -1.0,
    N.MEAN_PRICE: math.nan,
    N.TOP_CATEGORY: N.UNKNOWN_CATEGORY,
    N.RECENT_ITEMS: [],
}
MISSING_FLAG = "missing"

_definitions_lock = threading.Lock()


@dataclass(frozen=True)
class FeatureStoreSettings:
    """Where the feature store keeps things.

    Attributes:
        home: the home (a folder is taken as one); tables, the file registry and the SQLite
            store live in its `features/` folder.
        online_store: "sqlite" (local default) or "redis".
        redis: Redis connection string ("host:port[,password=...]") when online_store is redis.
        registry: a registry path or URI: a file path (default `<home>/features/registry.db`),
            s3:// or gs:// (file registry on object storage), or a SQLAlchemy URL (SQL registry).
        feature_store_yaml: when set, the stores come from this file instead (e.g.
            feature_repo/feature_store.production.yaml); the tables still come from `home`.
        repo: the Feast repo folder (default: $SHOPREC_FEATURE_REPO or the checkout's feature_repo).
    """

    home: Home
    online_store: str = "sqlite"
    redis: str = DEFAULT_REDIS
    registry: str | None = None
    feature_store_yaml: Path | None = None
    repo: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.home, Home):  # a plain folder: the frozen field takes its Home
            object.__setattr__(self, "home", Home.at(self.home))
        if self.online_store not in ONLINE_STORES:
            raise FeatureStoreError(
                f"unknown online store '{self.online_store}' (${ONLINE_STORE_ENV}); use one of {ONLINE_STORES}"
            )

    @staticmethod
    def from_env(home: str | Path | None = None, **overrides: Any) -> "FeatureStoreSettings":
        """Settings from the environment, with local defaults; keyword arguments win."""
        env = os.environ
        values: dict[str, Any] = {
            "home": Home.at(home),
            "online_store": env.get(ONLINE_STORE_ENV) or "sqlite",
            "redis": env.get(REDIS_ENV) or DEFAULT_REDIS,
            "registry": env.get(REGISTRY_ENV) or None,
            "feature_store_yaml": Path(env[YAML_ENV]) if env.get(YAML_ENV) else None,
            "repo": Path(env[N.FEATURE_REPO_ENV]) if env.get(N.FEATURE_REPO_ENV) else None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return FeatureStoreSettings(**values)

    @property
    def features_dir(self) -> Path:
        return self.home.features

    @property
    def repo_dir(self) -> Path:
        return (self.repo or default_repo_dir()).resolve()

    def describe(self) -> str:
        """One line for logs: which stores, never credentials."""
        if self.feature_store_yaml:
            return f"stores from {self.feature_store_yaml}"
        online = "sqlite" if self.online_store == "sqlite" else f"redis at {self.redis.split(',')[0]}"
        return f"online={online}, registry={_redact(self.registry or str(self.features_dir / REGISTRY_FILE))}"


def default_repo_dir() -> Path:
    """The checkout's feature_repo/ (src/shoprec/features -> repo root)."""
    return Path(__file__).resolve().parents[3] / "feature_repo"


def repo_config(settings: FeatureStoreSettings) -> "RepoConfig":
    """The Feast RepoConfig for `settings` (local profile built here; a yaml when one is named)."""
    from feast.repo_config import RepoConfig

    if settings.feature_store_yaml is not None:
        return _load_yaml_config(settings)
    registry_uri = settings.registry or str(settings.features_dir / REGISTRY_FILE)
    is_sql = registry_uri.split(":", 1)[0].split("+", 1)[0] in _SQL_SCHEMES and "://" in registry_uri
    registry = {
        "registry_type": "sql" if is_sql else "file",
        "path": registry_uri,
        # The registry is read once a minute at most: online reads must not hit the disk each time.
        "cache_ttl_seconds": 60,
    }
    if settings.online_store == "redis":
        online: dict[str, Any] = {"type": "redis", "connection_string": redis_connection_string(settings.redis)}
    else:
        online = {"type": "sqlite", "path": str(settings.features_dir / SQLITE_FILE)}
    return RepoConfig(
        project=N.PROJECT,
        provider="local",
        registry=registry,
        offline_store={"type": "duckdb"},
        online_store=online,
        entity_key_serialization_version=3,
        repo_path=settings.repo_dir,
    )


def _load_yaml_config(settings: FeatureStoreSettings) -> "RepoConfig":
    import yaml
    from feast.repo_config import load_repo_config

    path = Path(settings.feature_store_yaml or "")
    if not path.is_file():
        raise FeatureStoreConfigError(path, "file not found")
    try:
        return load_repo_config(settings.repo_dir, path)
    except yaml.YAMLError as exc:
        raise FeatureStoreConfigError(path, f"not valid YAML: {exc}") from exc
    except Exception as exc:  # Feast raises FeastConfigError, pydantic or type errors
        raise FeatureStoreConfigError(path, _one_line(exc)) from exc


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
                    raise FeatureStoreConfigError(path, f"import failed: {_one_line(exc)}") from exc
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
    with _online_errors(settings):
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
    with _online_errors(settings):
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
    manifest = settings.features_dir / FEATURES_MANIFEST
    if not manifest.is_file():
        raise FeatureSourceMissing("all views", manifest)
    return _utc(json.loads(manifest.read_text())["as_of"])


def _tables_max_len(settings: FeatureStoreSettings | None) -> int | None:
    manifest = settings.features_dir / FEATURES_MANIFEST if settings else None
    if manifest is None or not manifest.is_file():
        return None
    return int(json.loads(manifest.read_text()).get("max_len") or 0) or None


# --- online reads -----------------------------------------------------------------------------


def user_feature_refs(store: "FeatureStore", service: str = N.FEATURE_SERVICE) -> list[str]:
    """The service's user-keyed features as "view:feature" references (what serving reads per user)."""
    feature_service = store.get_feature_service(service)
    refs: list[str] = []
    for projection in feature_service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        if view.entities == ["user"]:
            refs.extend(f"{projection.name}:{f.name}" for f in projection.features)
    return refs


def online_user_rows(
    store: "FeatureStore",
    user_ids: Sequence[str],
    refs: Sequence[str] | None = None,
    settings: FeatureStoreSettings | None = None,
) -> list[dict[str, Any]]:
    """The online features of `user_ids` through `recommender_v1`: one dict per user, in order
    (the serving hot path: no DataFrame, which costs more than the store read itself).

    A user the store does not know gets `USER_DEFAULTS` and `missing` = True (no exception);
    a known user's null values (e.g. no prices seen) get the same defaults.

    Pass `refs` from `user_feature_refs` to skip the service lookup on hot paths.
    """
    chosen = list(refs) if refs is not None else user_feature_refs(store)
    users = [str(user) for user in user_ids]
    with _online_errors(settings):
        values = store.get_online_features(features=chosen, entity_rows=[{S.USER_ID: u} for u in users]).to_dict()
    return user_rows(users, [ref.split(":", 1)[1] for ref in chosen], values)


def user_rows(user_ids: Sequence[str], names: Sequence[str], columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Online feature columns (name -> one value per user, None where unknown; a name absent
    from `columns` counts as unknown) as one dict per user: defaults for nulls, the recent
    items as a list, and `missing` when the store knew nothing of the user. Shared by the
    SDK read and the feature-server client, so both answer alike."""
    unknown = [None] * len(user_ids)
    rows = []
    for i, user in enumerate(user_ids):
        row: dict[str, Any] = {S.USER_ID: user}
        for name in names:
            value = columns.get(name, unknown)[i]
            if name == N.RECENT_ITEMS:
                row[name] = list(value) if value is not None else []
            else:
                row[name] = USER_DEFAULTS.get(name) if value is None else value
        row[MISSING_FLAG] = all(columns.get(name, unknown)[i] is None for name in names)
        rows.append(row)
    return rows


def online_user_features(
    store: "FeatureStore",
    user_ids: Sequence[str],
    refs: Sequence[str] | None = None,
    settings: FeatureStoreSettings | None = None,
) -> pd.DataFrame:
    """`online_user_rows` as a frame: one row per user id, in order, with the `missing` flag."""
    chosen = list(refs) if refs is not None else user_feature_refs(store)  # looked up once
    rows = online_user_rows(store, user_ids, chosen, settings)
    return pd.DataFrame(rows, columns=[S.USER_ID, *(ref.split(":", 1)[1] for ref in chosen), MISSING_FLAG])


# --- push -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushSummary:
    users: int
    events: int
    recent_items: dict[str, list[str]] = field(default_factory=dict)


def push_events(
    store: "FeatureStore",
    events: pd.DataFrame,
    settings: FeatureStoreSettings | None = None,
    max_len: int | None = None,
) -> PushSummary:
    """Push new events to the online store at once: each user's `recent_items` becomes the
    online list followed by the new items (by time), cut to the last N: `max_len`, else the
    N the tables were built with (features.json in the settings' home), else the view's tag.

    Only the online store changes; the offline history gets these events at the next
    `build_features` from the event log, so training never sees a pushed-only value.

    Raises:
        FeatureStoreError: the events lack user_id, item_id or timestamp.
    """
    from feast.data_source import PushMode

    lacking = [c for c in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP) if c not in events.columns]
    if lacking:
        raise FeatureStoreError(f"pushed events lack column(s) {lacking}; have {list(events.columns)}")
    if events.empty:
        return PushSummary(0, 0)
    new = pd.DataFrame(
        {
            S.USER_ID: events[S.USER_ID].astype(str).to_numpy(),
            S.ITEM_ID: events[S.ITEM_ID].astype(str).to_numpy(),
            S.TIMESTAMP: pd.to_datetime(events[S.TIMESTAMP], utc=True).to_numpy(),
        }
    )
    new[S.TIMESTAMP] = pd.to_datetime(new[S.TIMESTAMP], utc=True)
    if new[S.TIMESTAMP].isna().any():
        bad = int(new[S.TIMESTAMP].isna().sum())
        raise FeatureStoreError(f"{bad} pushed event(s) have no parseable timestamp; nothing pushed")
    new = new.sort_values([S.USER_ID, S.TIMESTAMP], kind="stable")
    keep = max_len or _tables_max_len(settings) or int(
        store.get_feature_view(N.USER_RECENT_ITEMS).tags.get("max_len", DEFAULT_MAX_LEN)
    )
    users = list(dict.fromkeys(new[S.USER_ID]))
    current = online_user_features(store, users, refs=[f"{N.USER_RECENT_ITEMS}:{N.RECENT_ITEMS}"], settings=settings)
    lists: dict[str, list[str]] = {}
    stamps = []
    for (user, group), before in zip(new.groupby(S.USER_ID, sort=False), current[N.RECENT_ITEMS]):
        lists[str(user)] = (list(before) + group[S.ITEM_ID].tolist())[-keep:]
        stamps.append(group[S.TIMESTAMP].max())
    frame = pd.DataFrame(
        {S.USER_ID: list(lists), N.FEATURE_TIMESTAMP: stamps, N.RECENT_ITEMS: list(lists.values())}
    )
    with _online_errors(settings):
        store.push(N.PUSH_SOURCE, frame, to=PushMode.ONLINE)
    return PushSummary(users=len(lists), events=len(new), recent_items=lists)


# --- helpers ----------------------------------------------------------------------------------


class _online_errors:
    """Turn the online store's connection failures into FeatureStoreUnavailable naming the store."""

    def __init__(self, settings: FeatureStoreSettings | None) -> None:
        self.settings = settings

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        import redis

        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            where = self.settings.describe() if self.settings else "the online store"
            raise FeatureStoreUnavailable(f"online store unavailable ({where}): {_one_line(exc)}") from exc


REDIS_SOCKET_TIMEOUT_S = 1.0


def redis_connection_string(connection: str) -> str:
    """The Redis connection string with socket timeouts (1 s) unless it names its own: a Redis
    that accepts and never answers would otherwise hold a reading thread forever (the server
    answers from the fallback after its own 50 ms either way, but threads are finite). With
    one retry a hung read gives up after about 2 s."""
    keys = {part.split("=", 1)[0].strip() for part in connection.split(",") if "=" in part}
    extra = [f"{key}={REDIS_SOCKET_TIMEOUT_S:g}" for key in ("socket_timeout", "socket_connect_timeout")
             if key not in keys]
    if "retry" not in keys:
        # retry=null: redis-py's one immediate retry instead of its default 3 with up to 10 s
        # back-off, which kept a down store's reader (and a SIGTERM'd server) waiting ~10 s.
        extra.append("retry=null")
    return ",".join([connection, *extra])


def _utc(value: datetime | pd.Timestamp | str) -> datetime:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def _redact(uri: str) -> str:
    """Hide a password in a URL (scheme://user:secret@host -> scheme://user:***@host)."""
    if "://" in uri and "@" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri
