"""The Feast repo itself: `feast plan` / `feast apply` from the folder, the production yaml,
and errors that name the broken file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shoprec.errors import FeatureSourceMissing, FeatureStoreConfigError
from shoprec.features import names as N
from shoprec.features.online import online_user_features
from shoprec.features.settings import FeatureStoreSettings, default_repo_dir, repo_config
from shoprec.features.store import apply_definitions, materialize, open_store
from shoprec.features.tables import build_feature_tables

from .conftest import AS_OF

pytestmark = pytest.mark.integration
REPO = default_repo_dir()
FEAST = Path(sys.executable).parent / "feast"


def _feast(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(FEAST), *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=180)


def test_feast_plan_and_apply_run_from_the_repo_folder(tmp_path, timeline):
    """As a Feast user would: a checkout with tables in its default home, `feast plan`, `feast apply`."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    events, items = timeline
    build_feature_tables(events, items).write(checkout / "shoprec-home" / "features")
    env = {N.FEATURES_DIR_ENV: ""}  # the repo's own default: <checkout>/shoprec-home/features

    plan = _feast(["plan"], checkout / "feature_repo", env)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "user_recent_items" in plan.stdout and "recommender_v1" in plan.stdout
    apply = _feast(["apply"], checkout / "feature_repo", env)
    assert apply.returncode == 0, apply.stderr[-2000:]
    assert (checkout / "shoprec-home" / "features" / "registry.db").is_file()
    listed = _feast(["feature-services", "list"], checkout / "feature_repo", env)
    assert "recommender_v1" in listed.stdout
    assert "workflow" not in apply.stdout + apply.stderr  # .feastignore keeps the helper out


def test_production_yaml_with_sql_registry_and_redis(tmp_path, timeline, clean_redis, monkeypatch):
    events, items = timeline
    monkeypatch.setenv("SHOPREC_FEAST_REGISTRY", f"sqlite:///{tmp_path / 'registry.sqlite'}")
    monkeypatch.setenv("SHOPREC_REDIS", clean_redis)
    settings = FeatureStoreSettings(home=tmp_path, feature_store_yaml=REPO / "feature_store.production.yaml")
    build_feature_tables(events, items, as_of=AS_OF).write(settings.features_dir)
    store = apply_definitions(settings)
    assert type(store.registry).__name__ == "SqlRegistry"
    assert store.config.online_store.type == "redis"
    materialize(store, settings)
    got = online_user_features(store, ["u1"], settings=settings)
    assert got[N.RECENT_ITEMS][0] == ["A", "B", "B", "C", "A"]


def test_a_broken_feature_store_yaml_is_named(tmp_path, timeline):
    broken = tmp_path / "feature_store.yaml"
    broken.write_text("project: shoprec\nonline_store:\n  type: sqlite\n  pathh: [unclosed\n")
    settings = FeatureStoreSettings(home=tmp_path, feature_store_yaml=broken)
    with pytest.raises(FeatureStoreConfigError, match=f"{broken}: not valid YAML"):
        open_store(settings)

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("project: shoprec\nregistry: r.db\nprovider: local\nonline_store:\n  type: nosuchstore\n")
    with pytest.raises(FeatureStoreConfigError, match=f"feature store config {wrong}"):
        open_store(FeatureStoreSettings(home=tmp_path, feature_store_yaml=wrong))

    absent = tmp_path / "absent.yaml"
    with pytest.raises(FeatureStoreConfigError, match=f"{absent}: file not found"):
        open_store(FeatureStoreSettings(home=tmp_path, feature_store_yaml=absent))


def test_a_missing_source_file_is_named(tmp_path, timeline):
    events, items = timeline
    settings = FeatureStoreSettings(home=tmp_path)
    build_feature_tables(events, items).write(settings.features_dir)
    (settings.features_dir / "item_stats.parquet").unlink()
    with pytest.raises(FeatureSourceMissing, match=r"'item_stats' not found: .*/features/item_stats.parquet"):
        apply_definitions(settings)
    assert (settings.features_dir / "user_stats.parquet").is_file()  # nothing else was touched


def test_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPREC_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("SHOPREC_REDIS", "redis.example:6380,password=s3cret")
    monkeypatch.setenv("SHOPREC_FEAST_REGISTRY", "postgresql://feast:pw@db:5432/feast")
    settings = FeatureStoreSettings.from_env(tmp_path)
    config = repo_config(settings)
    assert config.online_store.type == "redis"
    # The secret from the environment, plus the socket timeouts a hung Redis needs.
    assert config.online_store.connection_string == \
        "redis.example:6380,password=s3cret,socket_timeout=1,socket_connect_timeout=1,retry=null"
    assert config.registry.registry_type == "sql"
    assert "pw" not in settings.describe() and "s3cret" not in settings.describe()
    monkeypatch.delenv("SHOPREC_FEAST_ONLINE_STORE")
    monkeypatch.delenv("SHOPREC_FEAST_REGISTRY")
    local = repo_config(FeatureStoreSettings.from_env(tmp_path))
    assert (local.online_store.type, local.offline_store.type) == ("sqlite", "duckdb")
    assert local.registry.path == str(tmp_path / "features" / "registry.db")


def test_events_push_command_reaches_the_online_store(tmp_path, timeline):
    events, items = timeline
    settings = FeatureStoreSettings(home=tmp_path / "home")
    build_feature_tables(events, items, as_of=AS_OF).write(settings.features_dir)
    materialize(apply_definitions(settings), settings)
    new = tmp_path / "new.csv"
    new.write_text("user_id,item_id,timestamp\nu2,Z,2024-02-21T08:00:00Z\n")

    done = subprocess.run([str(FEAST.with_name("shoprec")), "events", "push", str(new), "--home", str(settings.home.root)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "SHOPREC_FEAST_ONLINE_STORE": "sqlite"})
    assert done.returncode == 0, done.stderr
    assert "pushed 1 event(s) of 1 user(s)" in done.stdout
    got = online_user_features(open_store(settings), ["u2"])
    assert got[N.RECENT_ITEMS][0] == ["C", "Z"]
