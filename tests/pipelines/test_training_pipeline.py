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
    assert (run / "pipeline.log").read_text().count("finished with status SUCCESS") >= 2


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
    for name in ("training_pipeline.yaml", "monitoring_pipeline.yaml"):
        spec = next(yaml.safe_load_all((tmp_path / name).read_text()))
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == {"registry.example/shop/rec:1.2"}, (name, images)
