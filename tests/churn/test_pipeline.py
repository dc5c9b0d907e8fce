"""The churn pipeline: compiled with the cluster settings, and run end to end through kfp.local by
the real `shoprec churn-run` command on an Instacart slice (ingest -> validate -> features ->
materialize -> churn_train -> churn_register -> churn_deploy when the gate passed ->
churn_monitor)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from shoprec import schema as S

SHOPREC = str(Path(sys.executable).with_name("shoprec"))
STEPS = {"ingest", "validate", "build-features", "materialize", "churn-train", "churn-register", "churn-monitor"}
DEPLOY = "churn-deploy"  # only when the churn gate passed


def test_churn_pipeline_compiles_with_the_cluster_settings(tmp_path: Path) -> None:
    from shoprec.pipelines.compile import compile_all

    paths = {p.name: p for p in compile_all(tmp_path, image="registry.example/shoprec:3")}
    pipeline, platform = yaml.safe_load_all(paths["churn_pipeline.yaml"].read_text())
    assert pipeline["pipelineInfo"]["name"] == "shoprec-churn"
    tasks = pipeline["root"]["dag"]["tasks"]
    assert set(tasks) == STEPS | {"condition-1"}
    # The deploy step runs under the churn gate's verdict, as the recommender's under promote's.
    gate = tasks["condition-1"]
    assert gate["taskInfo"]["name"] == "churn-gate-passed" and gate["dependentTasks"] == ["churn-register"]
    assert gate["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--churn-register-Output'] == true"
    assert set(pipeline["components"]["comp-condition-1"]["dag"]["tasks"]) == {DEPLOY}
    executors = pipeline["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        resources = executor["container"]["resources"]
        assert {"resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"} <= set(resources)
        assert "accelerator" not in resources, name  # a small MLP: no GPU node
        assert executor["container"]["image"] == "registry.example/shoprec:3"
        assert k8s[name]["securityContext"] == {"runAsNonRoot": True, "runAsUser": "10001"}, name
    secrets = {name: {s["secretName"] for s in config.get("secretAsEnv", [])} for name, config in k8s.items()}
    # Only materialize writes the platform's stores; churn training keeps its own Feast home.
    assert "shoprec-feature-store" in secrets["exec-materialize"]
    assert "shoprec-feature-store" not in secrets["exec-churn-train"]
    assert k8s["exec-materialize"]["podMetadata"]["labels"]["shoprec.io/redis-client"] == "true"
    for name in ("exec-churn-train", "exec-churn-register", "exec-churn-deploy", "exec-churn-monitor"):
        assert k8s[name]["pvcMount"][0]["mountPath"] == "/var/lib/shoprec", name  # the shared home
    # The data steps are the training pipeline's own, with the same parameters and settings.
    training_pipeline, training_platform = yaml.safe_load_all(paths["training_pipeline.yaml"].read_text())
    training_k8s = training_platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("ingest", "validate", "build-features", "materialize"):
        assert pipeline["components"][f"comp-{step}"] == training_pipeline["components"][f"comp-{step}"], step
        assert executors[f"exec-{step}"] == training_pipeline["deploymentSpec"]["executors"][f"exec-{step}"], step
        assert k8s[f"exec-{step}"] == training_k8s[f"exec-{step}"], step
        assert tasks[step] == training_pipeline["root"]["dag"]["tasks"][step], step
    data = ("dataset", "items_path", "limit_users", "max_events_per_user_day", "window_start", "window_end",
            "max_quarantine_share", "timestamp_unit", "features_as_of", "max_len", "home")
    churn_inputs = pipeline["root"]["inputDefinitions"]["parameters"]
    training_inputs = training_pipeline["root"]["inputDefinitions"]["parameters"]
    assert all(churn_inputs[name] == training_inputs[name] for name in data)


@pytest.mark.integration
def test_churn_run_end_to_end_on_an_instacart_slice(tmp_path: Path) -> None:
    from shoprec.churn.bundle import churn_registry, load_churn_bundle, load_registered
    from shoprec.churn.drift import CHURN_FEATURES_REPORT, CHURN_PREDICTIONS_REPORT
    from shoprec.churn.scoring import score_users
    from shoprec.features.settings import FeatureStoreSettings
    from shoprec.features.store import open_store
    from shoprec.home import Home
    from shoprec.monitoring.index import list_reports

    home = Home(tmp_path / "home")
    done = subprocess.run([SHOPREC, "churn-run", "--limit-users", "120", "--snapshots", "3", "--epochs", "40",
                           "--resamples", "100", "--home", str(home.root)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = [p for p in home.runs.iterdir() if p.is_dir()]
    decision = json.loads((run / "churn-register" / "decision").read_text())
    ran = STEPS | ({DEPLOY} if decision["promote"] else set())
    assert {p.name for p in run.iterdir() if p.is_dir()} == ran
    for step in ran:
        assert f"{step:<16} SUCCESS" in done.stdout, step

    # A registered, verified version: the bundle the run trained, under shoprec-churn.
    registry = churn_registry(home.registry)
    [record] = registry.versions()
    trained = load_churn_bundle(run / "churn-train" / "model")
    assert record.weights_sha256 == trained.config["weights_sha256"] and record.kind == "churn-mlp"
    assert decision["version"] == record.version and record.version in done.stdout
    assert decision["promote"] == decision["gate"]["passed"] == trained.metrics["gate"]["passed"]
    # Deployed exactly when the gate passed: the alias a churn server started with --registry follows.
    assert registry.production() == (record.version if decision["promote"] else None)
    if decision["promote"]:
        deployed = json.loads((run / DEPLOY / "deployment").read_text())
        assert deployed["target"] == "local" and deployed["event"]["version"] == record.version
    # The model's report (with the reliability plot) and the churn drift reports in the home.
    report = (run / "churn-train" / "report").read_text()
    assert "<svg" in report and "recency" in report and "PR-AUC" in report
    kinds = {e.summary.kind: e for e in list_reports(home)}
    assert {CHURN_FEATURES_REPORT, CHURN_PREDICTIONS_REPORT} <= set(kinds)
    assert kinds[CHURN_PREDICTIONS_REPORT].summary.metrics["model_version"] == record.version
    assert kinds[CHURN_PREDICTIONS_REPORT].html_path.exists()
    # The online store the run materialized serves the registered model: a user of the slice is known.
    bundle, _ = load_registered(registry, record.version)
    settings = FeatureStoreSettings(home=home)
    clean = pd.read_parquet(run / "validate" / "clean" / S.EVENTS_FILE)
    first = str(clean[S.USER_ID].iloc[0])
    [answer] = score_users(bundle, open_store(settings), [first], settings)
    assert answer["known"] is True and 0.0 <= answer["churn_probability"] <= 1.0
