"""Where the Feast stores are and how to reach them: settings, Feast config, Redis connection.

`FeatureStoreSettings` comes from environment variables with local defaults under the home
folder; `repo_config` turns it into Feast's RepoConfig (built here, or loaded from a named
feature_store.yaml): the offline store is DuckDB (one machine) or Feast's Spark store
(`SHOPREC_FEAST_OFFLINE_STORE=spark`, Spark master and settings from `SHOPREC_SPARK_MASTER` /
`SHOPREC_SPARK_CONF`). The Redis connection string gets its timeouts here, and `describe` /
`online_errors` name a store in logs and errors without its credentials. Kept apart from
`store` (apply, materialize) and `online` (reads, pushes), which both start from these
settings; nothing here imports Feast until a config is built, nor opens a store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoprec.errors import FeatureStoreConfigError, FeatureStoreError, FeatureStoreUnavailable
from shoprec.features import names as N
from shoprec.home import Home

if TYPE_CHECKING:  # Feast takes seconds to import: only the functions that need it import it.
    from feast.repo_config import RepoConfig

ONLINE_STORE_ENV = "SHOPREC_FEAST_ONLINE_STORE"
OFFLINE_STORE_ENV = N.OFFLINE_STORE_ENV  # SHOPREC_FEAST_OFFLINE_STORE
SPARK_MASTER_ENV = "SHOPREC_SPARK_MASTER"
SPARK_CONF_ENV = "SHOPREC_SPARK_CONF"
REDIS_ENV = "SHOPREC_REDIS"
REGISTRY_ENV = "SHOPREC_FEAST_REGISTRY"
YAML_ENV = "SHOPREC_FEAST_YAML"
DEFAULT_REDIS = "127.0.0.1:6379"
ONLINE_STORES = ("sqlite", "redis")
OFFLINE_STORES = ("duckdb", "spark")
DEFAULT_SPARK_MASTER = "local[2]"
# The Spark session the Spark offline store starts (when none is active in the process).
# UTC: Feast's Spark join compares timestamps with naive-UTC literals, so any other session time
# zone shifts the point in time; no progress bars in logs. Local mode: few shuffle partitions
# (Spark's 200 are for a cluster) and no web UI (no port to clash over). SHOPREC_SPARK_CONF
# (a JSON object) adds to or overrides these, e.g. {"spark.driver.memory": "8g"}.
SPARK_CONF: dict[str, str] = {"spark.sql.session.timeZone": "UTC", "spark.ui.showConsoleProgress": "false"}
SPARK_LOCAL_CONF: dict[str, str] = {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"}
REGISTRY_FILE = "registry.db"
SQLITE_FILE = "online_store.db"
_SQL_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql", "oracle")


@dataclass(frozen=True)
class FeatureStoreSettings:
    """Where the feature store keeps things.

    Attributes:
        home: the home (a folder is taken as one); tables, the file registry and the SQLite
            store live in its `features/` folder.
        online_store: "sqlite" (local default) or "redis".
        offline_store: "duckdb" (local default: one machine) or "spark" (Feast's Spark offline
            store runs the point-in-time join; the feature views then read the same Parquet
            tables through SparkSource). Needs pyspark and a Java runtime.
        spark_master: the Spark master when offline_store is spark: "local[2]" (default: Spark in
            this process, two cores), or a cluster's (spark://..., k8s://...).
        spark_conf: extra Spark settings (pairs, or a dict) over SPARK_CONF.
        redis: Redis connection string ("host:port[,password=...]") when online_store is redis.
        registry: a registry path or URI: a file path (default `<home>/features/registry.db`),
            s3:// or gs:// (file registry on object storage), or a SQLAlchemy URL (SQL registry).
        feature_store_yaml: when set, the stores come from this file instead (e.g.
            feature_repo/feature_store.production.yaml); the tables still come from `home`.
        repo: the Feast repo folder (default: $SHOPREC_FEATURE_REPO or the checkout's feature_repo).
    """

    home: Home
    online_store: str = "sqlite"
    offline_store: str = "duckdb"
    spark_master: str = DEFAULT_SPARK_MASTER
    spark_conf: tuple[tuple[str, str], ...] = ()
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
        if self.offline_store not in OFFLINE_STORES:
            raise FeatureStoreError(
                f"unknown offline store '{self.offline_store}' (${OFFLINE_STORE_ENV}); use one of {OFFLINE_STORES}"
            )
        conf = self.spark_conf.items() if isinstance(self.spark_conf, dict) else self.spark_conf
        object.__setattr__(self, "spark_conf", tuple((str(k), str(v)) for k, v in conf))

    @staticmethod
    def from_env(home: str | Path | None = None, **overrides: Any) -> "FeatureStoreSettings":
        """Settings from the environment, with local defaults; keyword arguments win."""
        env = os.environ
        values: dict[str, Any] = {
            "home": Home.at(home),
            "online_store": env.get(ONLINE_STORE_ENV) or "sqlite",
            "offline_store": env.get(OFFLINE_STORE_ENV) or "duckdb",
            "spark_master": env.get(SPARK_MASTER_ENV) or DEFAULT_SPARK_MASTER,
            "spark_conf": _spark_conf_from_env(env.get(SPARK_CONF_ENV)),
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
        offline = f"offline=spark ({self.spark_master}), " if self.offline_store == "spark" else ""
        return f"{offline}online={online}, registry={_redact(self.registry or str(self.features_dir / REGISTRY_FILE))}"

    def spark_session_conf(self) -> dict[str, str]:
        """The Spark settings the Spark offline store starts its session with."""
        local = self.spark_master.startswith("local")
        return {"spark.master": self.spark_master, **SPARK_CONF, **(SPARK_LOCAL_CONF if local else {}),
                **dict(self.spark_conf)}


def _spark_conf_from_env(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FeatureStoreError(f"${SPARK_CONF_ENV} is not JSON: {exc}") from exc
    if not isinstance(conf, dict):
        raise FeatureStoreError(f"${SPARK_CONF_ENV} must be a JSON object of Spark settings, got {text!r}")
    return tuple((str(k), str(v)) for k, v in conf.items())


def offline_store_of(config: "RepoConfig") -> str:
    """"spark" when `config` runs Feast's Spark offline store, else "duckdb": the value the
    feature repo reads from $SHOPREC_FEAST_OFFLINE_STORE to pick its sources' class (a yaml that
    names the Spark store gets SparkSource sources without a second setting)."""
    kind = str(getattr(config.offline_store, "type", "") or "")
    return "spark" if kind == "spark" or kind.endswith(".SparkOfflineStore") else "duckdb"


def default_repo_dir() -> Path:
    """The checkout's feature_repo/ (src/shoprec/features -> repo root)."""
    return Path(__file__).resolve().parents[3] / "feature_repo"


def repo_config(settings: FeatureStoreSettings) -> "RepoConfig":
    """The Feast RepoConfig for `settings` (local profile built here; a yaml when one is named)."""
    from feast.repo_config import RepoConfig

    if settings.feature_store_yaml is not None:
        config = _load_yaml_config(settings)
        online = config.online_store  # a named yaml's Redis gets the same timeouts as ours
        if getattr(online, "type", None) == "redis":
            online.connection_string = redis_connection_string(online.connection_string)
        if settings.offline_store == "spark" and offline_store_of(config) != "spark":
            # The yaml names every store; a Spark setting it would silently ignore is an error.
            raise FeatureStoreConfigError(
                settings.feature_store_yaml,
                f"${OFFLINE_STORE_ENV}=spark, but this file's offline_store is "
                f"'{config.offline_store.type}': name the Spark store in it "
                "(offline_store: {type: spark, spark_conf: {...}})",
            )
        return config
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
    offline: dict[str, Any] = {"type": "duckdb"}
    if settings.offline_store == "spark":
        offline = {"type": "spark", "spark_conf": settings.spark_session_conf()}
    return RepoConfig(
        project=N.PROJECT,
        provider="local",
        registry=registry,
        offline_store=offline,
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
        raise FeatureStoreConfigError(path, one_line(exc)) from exc


# --- Redis connection -------------------------------------------------------------------------

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


class online_errors:
    """Turn the online store's connection failures into FeatureStoreUnavailable naming the store
    (by `describe`, so never with its credentials). Used around every online-store call."""

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
            raise FeatureStoreUnavailable(f"online store unavailable ({where}): {one_line(exc)}") from exc


# --- describing without secrets ---------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    """An exception as one line of at most 500 characters (for error messages and logs)."""
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def _redact(uri: str) -> str:
    """Hide a password in a URL (scheme://user:secret@host -> scheme://user:***@host)."""
    if "://" in uri and "@" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri
