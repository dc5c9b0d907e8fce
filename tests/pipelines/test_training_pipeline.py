"""The training pipeline through the real `shoprec` command and kfp.local."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from shoprec import schema as S

SHOPREC = str(Path(sys.executable).with_name("shoprec"))
REPO = Path(__file__).resolve().parents[2]


def shoprec(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SHOPREC, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def only_run(home: Path) -> Path:
    runs = [p for p in (home / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.integration
def test_run_on_a_real_instacart_slice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = shoprec("run", "--limit-users", "25", "--home", str(home), cwd=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    run = only_run(home)
    clean = pd.read_parquet(run / "validate" / "clean" / S.EVENTS_FILE)
    assert clean[S.USER_ID].nunique() == 25
    report = json.loads((run / "validate" / "report_json").read_text())
    assert report["passed"] and report["rows_in"] == report["rows_clean"] + report["rows_quarantined"]
    assert f"{report['rows_in']:,}" in done.stdout and "quarantined: duplicate" in done.stdout
    assert_every_step_delivered(run, Path(home), done.stdout)


def assert_every_step_delivered(run: Path, home: Path, stdout: str) -> None:
    """Each step's outputs, not only its status: a model bundle that loads, test metrics of
    every model, the gate's decision (and a deployment exactly when it promoted), the first
    drift report with its saved reference and its Evidently workspace runs; and the run said
    how long it would take and showed training progress."""
    from shoprec.home import Home
    from shoprec.lifecycle.registry import Registry
    from shoprec.models.inference import BundleRecommender
    from shoprec.monitoring.drift import ReportSummary
    from shoprec.monitoring.reference import load_reference
    from shoprec.monitoring.workspace import DriftWorkspace

    log = (run / "pipeline.log").read_text()
    for step in ("ingest", "validate", "build-features", "materialize", "train", "evaluate", "promote", "monitor"):
        assert f"Task '{step}' finished with status SUCCESS" in log, step
    # train: a bundle that loads and answers, with the test metrics of every model.
    bundle = run / "train" / "model"
    recommender = BundleRecommender.from_bundle(bundle)
    clean = pd.read_parquet(run / "validate" / "clean" / S.EVENTS_FILE)
    history = clean.sort_values(S.TIMESTAMP)[S.ITEM_ID].astype(str).tail(3).tolist()
    assert len(recommender.recommend_batch([history], k=5)[0]) == 5
    # Its repeat side reads as many items as the published features keep per user (serving sends them).
    from shoprec.features.tables import features_history_len

    kept = features_history_len(Home(home).features)
    assert kept and recommender.bundle.model.repeat_history == kept
    metrics = json.loads((bundle / "metrics.json").read_text())
    k = metrics["k"]
    assert metrics["primary"] in metrics["models"] and {"mostpop", "markov1"} <= set(metrics["models"])
    for name, row in metrics["models"].items():
        assert 0.0 <= row["metrics"][f"NDCG@{k}"] <= 1.0 and 0.0 <= row["metrics"][f"HR@{k}"] <= 1.0, name
        assert name in stdout  # the summary's model table
    assert (run / "evaluate" / "report").stat().st_size > 0
    # promote: a decision; deploy ran exactly when it promoted, and moved the alias there.
    decision = json.loads((run / "promote" / "decision").read_text())
    assert isinstance(decision["promote"], bool) and decision["reasons"] and decision["version"]
    production = Registry.from_home(Home(home)).production()
    assert (run / "deploy").is_dir() == decision["promote"]
    assert production == (decision["version"] if decision["promote"] else None)
    # monitor: the first drift report, the reference of the model in production, the workspace.
    assert "shoprec-verdict" in (run / "monitor" / "report").read_text(encoding="utf-8")
    [first] = list((home / "reports" / "monitoring").glob("training-*"))
    summaries = [ReportSummary.from_dict(json.loads(p.read_text())) for p in first.glob("*.json") if p.name != "run.json"]
    assert {s.kind for s in summaries} == {"user_features", "item_features"}
    reference = load_reference(Home(home))
    assert reference.facts["model_version"] == production
    assert (reference.predictions is not None) == decision["promote"]
    assert sorted(r.name for r in DriftWorkspace.of(Home(home)).runs()) == sorted(s.report_id for s in summaries)
    # The time it takes was said before it started; training showed its epochs.
    assert "expect up to about 10 minutes" in stdout
    assert "train epoch 1/" in stdout and "left" in stdout


@pytest.mark.integration
def test_corrupt_file_stops_the_run_at_the_gate(tmp_path: Path) -> None:
    bad = tmp_path / "events.csv"
    bad.write_text(
        "user_id,item_id,event_type,timestamp,price\n"
        "u1,i1,view,2024-01-01T10:00:00Z,3.5\n"
        "u1,i2,click,2024-01-01T10:01:00Z,-1\n"
    )
    home = tmp_path / "home"

    done = shoprec("run", "--dataset", str(bad), "--home", str(home), cwd=tmp_path)

    assert done.returncode == 3, done.stdout + done.stderr
    assert "event_type_in_set" in done.stderr and "price_not_negative" in done.stderr
    report_path = Path(done.stderr.strip().split("report: ")[-1])
    assert report_path.exists() and "click" in report_path.read_text()
    run = only_run(home)
    # No step after the gate ran, and the gate wrote no clean data.
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["ingest", "validate"]
    assert not (run / "validate" / "clean" / S.EVENTS_FILE).exists()
    assert bad.read_text().count("\n") == 3  # the input is untouched


@pytest.mark.integration
def test_validate_command_alone(tmp_path: Path) -> None:
    good = tmp_path / "events.csv"
    good.write_text(
        "user_id,item_id,event_type,timestamp\n"
        "u1,i1,view,2024-01-01T10:00:00Z\n"
        "u1,i1,view,2024-01-01T10:00:00Z\n"
    )
    done = shoprec("validate", str(good), "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    quarantine = next((tmp_path / "home" / "reports").glob("validation-*/quarantine/*.parquet"))
    assert pd.read_parquet(quarantine)[S.QUARANTINE_REASON].tolist() == ["duplicate"]


def test_compiled_pipeline_is_current_and_loads_back(tmp_path: Path) -> None:
    from kfp import components

    done = shoprec("compile", "--output-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    fresh = tmp_path / "training_pipeline.yaml"
    loaded = components.load_component_from_file(str(fresh))
    assert loaded.name == "shoprec-training"
    assert set(loaded.pipeline_spec.root.dag.tasks) >= {"ingest", "validate"}
    committed = REPO / "pipelines" / "compiled" / "training_pipeline.yaml"
    # Two documents: the pipeline spec, then its Kubernetes platform spec (GPU, secrets, volume).
    assert list(yaml.safe_load_all(committed.read_text())) == list(yaml.safe_load_all(fresh.read_text())), (
        "pipelines/compiled/training_pipeline.yaml is stale: run `shoprec compile`")


def test_compile_records_the_image_asked_for(tmp_path: Path) -> None:
    done = shoprec("compile", "--output-dir", str(tmp_path), "--image", "registry.example/shop/rec:1.2",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    asked = "registry.example/shop/rec:1.2"
    # The GPU step (train) runs on the CUDA variant of the image asked for; every other step on it.
    expected = {"training_pipeline.yaml": {asked, asked + "-gpu"}, "monitoring_pipeline.yaml": {asked}}
    for name, wanted in expected.items():
        spec = next(yaml.safe_load_all((tmp_path / name).read_text()))
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == wanted, (name, images)
