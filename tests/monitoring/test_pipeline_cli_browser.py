"""The monitoring pipeline under kfp.local, the `reports` / `drift` commands, and the reports
rendered by a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoprec.cli import cli
from shoprec.home import Home
from shoprec.monitoring.run import first_report

from .conftest import current_window


@pytest.fixture(scope="module")
def home(tmp_path_factory, training_dir) -> Home:
    root = tmp_path_factory.mktemp("home")
    first_report(training_dir, root)
    return Home(root)


@pytest.fixture(scope="module")
def shifted_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("current") / "events.parquet"
    current_window(shifted=True).events.to_parquet(path, index=False)
    return path


def test_drift_and_reports_commands(home, shifted_file) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["drift", "--current", str(shifted_file), "--window", "7", "--home", str(home.root)])
    assert out.exit_code == 0, out.output
    assert "item_features  drift" in out.output and "price" in out.output
    assert "predictions    skipped: the reference has no model predictions" in out.output
    listed = runner.invoke(cli, ["reports", "--home", str(home.root)])
    assert listed.exit_code == 0, listed.output
    assert f"index: {home.reports / 'index.html'}" in listed.output
    assert "4 report(s)" in listed.output  # the first report's two + this check's two


def test_drift_command_reports_an_empty_window_clearly(home, tmp_path) -> None:
    from shoprec.cli import main  # noqa: F401  (the entry point turns errors into one line)

    empty = tmp_path / "empty.parquet"
    current_window(False).events.iloc[0:0].to_parquet(empty, index=False)
    result = subprocess.run([str(Path(shutil.which("shoprec") or ".venv/bin/shoprec")), "drift", "--current",
                             str(empty), "--home", str(home.root)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: the current events window (no events at all) is empty" in result.stderr


def test_monitoring_pipeline_reports_decides_and_triggers_once(tmp_path, training_dir, shifted_file) -> None:
    from shoprec.kfp.local import run_locally
    from shoprec.pipelines.monitoring import monitoring_pipeline

    root = tmp_path / "home"
    first_report(training_dir, root)
    arguments = {"home": str(root), "current_events": str(shifted_file), "cooldown_hours": 24.0,
                 "training_arguments": json.dumps({"dataset": "ml-100k"}),
                 "training_pipeline": "tests.monitoring.retrain_probe:retrain_probe"}
    runs = []
    for _ in range(2):
        result = run_locally(monitoring_pipeline, arguments, tmp_path / "runs")
        assert result.succeeded, result.error
        runs.append(json.loads(result.output("drift-trigger", "triggered").read_text()))
    assert runs[0]["fired"] is True and runs[1]["fired"] is False  # the second is inside the cool-down
    report_id = runs[0]["report_id"]
    assert report_id.endswith(("/user_features", "/item_features"))
    training_run = Path(runs[0]["run"]["run_folder"])
    assert json.loads((training_run / "lineage.json").read_text())["triggered_by"] == report_id
    record = json.loads(next(training_run.glob("record-arguments*/record")).read_text())
    assert record["triggered_by"] == report_id and record["dataset"] == "ml-100k"


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (tests/services.sh start installs it)")
def test_index_and_report_render_in_headless_chromium(home, shifted_file, tmp_path) -> None:
    from shoprec.monitoring.index import list_reports

    CliRunner().invoke(cli, ["drift", "--current", str(shifted_file), "--home", str(home.root)])
    report = next(e for e in list_reports(home) if e.summary.kind == "item_features" and e.summary.verdict == "drift")
    shots = Path(__file__).resolve().parent / "screenshots"
    shots.mkdir(exist_ok=True)
    for name, page, expected in (("index", home.reports_index, "DRIFT"),
                                 ("report", report.html_path, "verdict: DRIFT")):
        with tempfile.TemporaryDirectory() as profile:
            base = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"]
            shot = shots / f"{name}.png"
            shot.unlink(missing_ok=True)
            subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
            assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot of the {name}"
            # The DOM after scripts ran: the verdict text is on the rendered page.
            dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                                 capture_output=True, text=True, timeout=120).stdout
            text = re.sub(r"<[^>]+>", "", dom)  # the page's text as rendered, without tags
            assert expected in text, f"{name}: verdict not on the rendered page"
            if name == "report":
                # Evidently's own widgets rendered too (its React app replaced the root).
                assert "Dataset Drift is detected" in text
                assert "price" in text
