"""Registering churn bundles in the platform's registry through `Registry.register(reader=...)`,
and the churn pipeline's gate-and-register and deploy (local) steps, on a real (small) trained
churn bundle (the `trained` fixture, tests/churn/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoprec.churn.bundle import CHURN_MODEL_NAME, churn_registry, load_churn_bundle, load_registered, register_churn
from shoprec.churn.evaluate import headline
from shoprec.churn.model import KIND
from shoprec.churn.steps import (churn_store_settings, decision_markdown, deploy_churn, gate_and_register,
                                 registry_root)
from shoprec.churn.train import ChurnOutcome
from shoprec.errors import BundleError, BundleIntegrityError
from shoprec.home import Home
from shoprec.lifecycle.registry import Registry
from shoprec.models.bundle import WEIGHTS_FILE


def test_register_with_the_churn_reader_records_a_verified_churn_version(trained: ChurnOutcome, tmp_path: Path) -> None:
    registry = churn_registry(tmp_path / "registry")
    record = registry.register(trained.bundle_dir, metrics=headline(trained.evaluation), reader=load_churn_bundle)

    bundle = load_churn_bundle(trained.bundle_dir)
    assert record.kind == KIND and record.weights_sha256 == bundle.config["weights_sha256"]
    assert set(record.files) >= {WEIGHTS_FILE, "config.json", "metrics.json"}
    assert record.metrics == pytest.approx(headline(trained.evaluation))
    assert registry.uri.endswith(f"/{CHURN_MODEL_NAME}")  # its own model name under the root
    loaded, version = load_registered(registry, record.version)
    x = np.abs(np.random.default_rng(0).normal(3, 2, (5, len(bundle.features))))
    assert version == record.version
    assert np.allclose(loaded.model.probability(x), bundle.model.probability(x))


def test_without_the_churn_reader_the_registry_refuses_a_churn_bundle(trained: ChurnOutcome, tmp_path: Path) -> None:
    # Why `reader=` exists: the recommender's loader cannot read a churn bundle.
    registry = Registry(tmp_path / "registry")
    with pytest.raises(BundleError, match="items.json"):
        registry.register(trained.bundle_dir)
    assert registry.versions() == []


def test_the_reader_checks_the_weights_before_anything_is_registered(trained: ChurnOutcome, tmp_path: Path) -> None:
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(trained.bundle_dir, tampered)
    weights = tampered / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    registry = churn_registry(tmp_path / "registry")
    with pytest.raises(BundleIntegrityError):
        register_churn(registry, tampered, headline(trained.evaluation))
    assert registry.versions() == []


def test_gate_and_register_decides_and_deploy_moves_the_alias_only_for_a_pass(
        trained: ChurnOutcome, tmp_path: Path) -> None:
    import json
    import shutil

    root = str(tmp_path / "registry")
    decision = gate_and_register(trained.bundle_dir, root)
    registry = churn_registry(root)
    assert decision["promote"] is trained.gate["passed"] is True  # the generated label beats recency
    # Registered, decided, not deployed: the alias moves in the deploy step only.
    assert registry.production() is None and decision["production"] is None
    assert decision["version"] in decision_markdown(decision) and "PASSED THE GATE" in decision_markdown(decision)
    done = deploy_churn(decision, root, "local")
    assert registry.production() == decision["version"] == done["version"]
    assert registry.history()[-1].actor == "churn-gate" and done["event"]["version"] == decision["version"]
    assert registry.history()[-1].metrics == pytest.approx(decision["metrics"])

    # The same model with an evaluation where it no longer beats recency: registered, not promoted.
    failing = tmp_path / "failing"
    shutil.copytree(trained.bundle_dir, failing)
    metrics = json.loads((failing / "metrics.json").read_text())
    metrics["paired"]["recency"]["pr_auc"].update(delta=0.001, low=-0.01, high=0.02)
    (failing / "metrics.json").write_text(json.dumps(metrics))
    second = gate_and_register(failing, root)
    assert second["promote"] is False and second["version"] != decision["version"]
    assert "NOT PROMOTED" in decision_markdown(second)
    with pytest.raises(ValueError, match=f"rejected shoprec-churn {second['version']}: nothing to deploy"):
        deploy_churn(second, root, "local")
    assert registry.production() == decision["version"]  # production unchanged
    assert [v.version for v in registry.versions()] == [decision["version"], second["version"]]
    assert len(registry.history()) == 1


def test_deploy_churn_refuses_an_unknown_target_or_a_cluster_deploy_without_its_parts(
        trained: ChurnOutcome, tmp_path: Path) -> None:
    root = str(tmp_path / "registry")
    decision = gate_and_register(trained.bundle_dir, root)
    with pytest.raises(ValueError, match="target must be one of local, cluster, gitops, not 'moon'"):
        deploy_churn(decision, root, "moon")
    with pytest.raises(ValueError, match="a cluster deploy needs the InferenceService renderer"):
        deploy_churn(decision, root, "cluster")
    assert churn_registry(root).production() is None


def test_churn_store_settings_never_take_the_platforms_stores_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a cluster these name the platform's SQL registry and Redis: `feast apply` of the churn
    # home there would repoint the platform's feature views at the churn tables.
    monkeypatch.setenv("SHOPREC_FEAST_REGISTRY", "postgresql://feast@db/feast")
    monkeypatch.setenv("SHOPREC_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("SHOPREC_FEAST_YAML", "/app/feature_repo/feature_store.production.yaml")
    settings = churn_store_settings(tmp_path / "home")
    assert settings.registry is None and settings.feature_store_yaml is None
    assert settings.online_store == "sqlite"
    assert settings.features_dir == Home.at(tmp_path / "home").root / "churn" / "features"
    assert registry_root("", tmp_path / "home") == str(Home.at(tmp_path / "home").registry)
    assert registry_root("s3://b/registry", tmp_path / "home") == "s3://b/registry"
