"""The reference is the promoted model's and is written atomically; a serving outage is kept
apart from drift; every report is in a local Evidently workspace that `evidently ui` serves.
Real bundles, a real registry, real Evidently, real files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.home import Home
from shoprec.lifecycle.registry import Registry
from shoprec.monitoring import drift as D
from shoprec.monitoring import frames as F
from shoprec.monitoring.index import list_reports
from shoprec.monitoring.reference import (
    ServingModel, load_reference, reference_folder, save_reference,
)
from shoprec.monitoring.run import first_report, run_monitoring
from shoprec.monitoring.trigger import TriggerPolicy, decide_retraining
from shoprec.monitoring.workspace import DriftWorkspace, workspace_dir
from shoprec.serving.prediction_log import PredictionLog, PredictionRecord, hash_user

from .conftest import current_window


def model_answers(bundle_dir: Path, training_data) -> pd.DataFrame:
    """What the reference should hold for `bundle_dir`: its answers on the validation users."""
    popularity = F.popularity_table(training_data.events)
    return F.model_reference(bundle_dir, training_data.events, training_data.items, popularity)[0]


@pytest.fixture
def registry_with_champion(tmp_path, bundle_dir) -> tuple[Home, Registry, str]:
    home = Home(tmp_path / "home")
    registry = Registry.from_home(home)
    champion = registry.register(bundle_dir).version
    registry.promote(champion, reason="the champion of the test")
    return home, registry, champion


def test_a_rejected_candidate_never_becomes_the_reference(
        registry_with_champion, training_dir, training_data, bundle_dir, popular_bundle_dir) -> None:
    home, registry, champion = registry_with_champion
    champion_answers = model_answers(bundle_dir, training_data)
    candidate_answers = model_answers(popular_bundle_dir, training_data)
    assert not champion_answers.equals(candidate_answers)  # the two models answer differently

    rejected = ServingModel.after_gate({"promote": False, "version": "v-candidate"}, popular_bundle_dir, registry)
    assert rejected.version == champion and not rejected.promoted
    first_report(training_dir, home.root, bundle_dir=popular_bundle_dir, serving=rejected)
    reference = load_reference(home)
    assert reference.facts["model_version"] == champion and reference.facts["promoted"] is False
    pd.testing.assert_frame_equal(reference.predictions, champion_answers)

    # A second rejection keeps the champion's reference as it was (same folder, not rewritten).
    kept = reference_folder(home)
    first_report(training_dir, home.root, bundle_dir=popular_bundle_dir, serving=rejected)
    assert reference_folder(home) == kept

    # A promoted candidate's answers replace them.
    promoted = ServingModel.after_gate({"promote": True, "version": "v-candidate"}, popular_bundle_dir, registry)
    first_report(training_dir, home.root, bundle_dir=popular_bundle_dir, serving=promoted)
    reference = load_reference(home)
    assert reference.facts["model_version"] == "v-candidate" and reference.facts["promoted"] is True
    pd.testing.assert_frame_equal(reference.predictions, candidate_answers)


def test_no_model_in_production_means_a_reference_without_predictions(tmp_path, training_dir, popular_bundle_dir) -> None:
    home = Home(tmp_path / "home")
    serving = ServingModel.after_gate({"promote": False, "version": "v1"}, popular_bundle_dir,
                                      Registry.from_home(home))
    assert serving == ServingModel(None, None, promoted=False)
    first_report(training_dir, home.root, bundle_dir=popular_bundle_dir, serving=serving)
    reference = load_reference(home)
    assert reference.predictions is None and reference.facts["model"] is None


def test_a_failed_save_leaves_the_previous_reference_whole(tmp_path, training_data, bundle_dir) -> None:
    home = Home(tmp_path)
    save_reference(home, training_data, bundle_dir=bundle_dir, model_version="v1")
    before = load_reference(home)
    broken = tmp_path / "not-a-bundle"
    broken.mkdir()
    shifted = current_window(shifted=True)  # other events: a half-written save would show
    with pytest.raises(Exception):
        save_reference(home, shifted, bundle_dir=broken, model_version="v2")
    after = load_reference(home)
    assert after.facts == before.facts
    pd.testing.assert_frame_equal(after.predictions, before.predictions)
    pd.testing.assert_frame_equal(after.events, before.events)
    # Nothing half-written is left beside it.
    assert not [p for p in home.monitoring_reference.iterdir() if p.name.endswith(".partial")]


def test_saves_switch_the_reference_by_one_rename_and_keep_two_versions(tmp_path, training_data, bundle_dir) -> None:
    home = Home(tmp_path)
    folders = [save_reference(home, training_data, bundle_dir=None, model_version=f"v{n}") for n in range(4)]
    assert reference_folder(home) == folders[-1]
    assert load_reference(home).facts["model_version"] == "v3"
    versions = sorted(p.name for p in home.monitoring_reference.iterdir() if p.is_dir())
    assert versions == sorted(f.name for f in folders[-2:])  # the one in force and the one before
    pointer = json.loads((home.monitoring_reference / "current.json").read_text())
    assert pointer["version"] == folders[-1].name


def log_answers(home: Home, bundle_dir: Path, current, outage_share: float) -> int:
    """Log the real model's answers for current users; every n-th answer is instead an
    outage fallback (popular items, feature store unavailable). Returns the outage count."""
    from shoprec.models.inference import BundleRecommender

    recommender = BundleRecommender.from_bundle(bundle_dir)
    log = PredictionLog(home.logs / "predictions")
    users = current.events.sort_values(S.TIMESTAMP).drop_duplicates(S.USER_ID).head(200)
    histories = [current.events.loc[current.events[S.USER_ID] == u, S.ITEM_ID].astype(str).tolist()[:3]
                 for u in users[S.USER_ID]]
    answers = recommender.recommend_batch(histories, k=10)
    outages = 0
    for n, (row, answer) in enumerate(zip(users.itertuples(index=False), answers)):
        down = outage_share > 0 and n % round(1 / outage_share) == 0
        outages += down
        items = [f"i{j}" for j in range(10)] if down else [r.item_id for r in answer]
        scores = [0.001] * 10 if down else [r.score for r in answer]
        log.append(PredictionRecord(
            request_id=f"r{n}", user_hash=hash_user(row.user_id), kind="user", model_version="v1",
            fallback="features_unavailable" if down else None, items=items, scores=scores,
            categories=["dairy"] * 10, time=(row.timestamp - pd.Timedelta(seconds=1)).isoformat()))
    return outages


def test_a_serving_outage_is_reported_apart_and_starts_no_retraining(tmp_path, training_data, bundle_dir) -> None:
    home = Home(tmp_path)
    save_reference(home, training_data, bundle_dir=bundle_dir)
    current = current_window(shifted=False)
    outages = log_answers(home, bundle_dir, current, outage_share=0.5)
    result = run_monitoring(home, current)
    predictions = next(r for r in result.reports if r.kind == D.PREDICTIONS)
    assert result.outage == {"rate": pytest.approx(outages / 200, abs=1e-3), "answers": outages, "answers_total": 200}
    assert predictions.metrics["outage"]["answers"] == outages
    # The outage answers are not in the compared data: no fallback drift, no cold-start rate.
    assert predictions.metrics["fallback_rate"]["current"] == 0.0
    assert predictions.rows_current == (200 - outages) * 10
    assert "fallback" not in predictions.drifted_columns
    assert "ALERT: serving outage" in (result.folder / predictions.html).read_text()
    run = json.loads((result.folder / "run.json").read_text())
    decision = decide_retraining([D.ReportSummary.from_dict(r) for r in run["reports"]], TriggerPolicy(), home,
                                 outage=run["outage"])
    assert not any("fallback" in reason for reason in decision.reasons)
    assert decision.alerts and "serving outage" in decision.alerts[0]


def test_a_window_of_nothing_but_outage_is_an_alert_not_an_empty_comparison(tmp_path, training_data, bundle_dir) -> None:
    home = Home(tmp_path)
    save_reference(home, training_data, bundle_dir=bundle_dir)
    current = current_window(shifted=False)
    log_answers(home, bundle_dir, current, outage_share=1.0)
    result = run_monitoring(home, current)
    assert D.PREDICTIONS not in {r.kind for r in result.reports}
    assert "outage fallback" in result.skipped[D.PREDICTIONS]
    assert result.outage["rate"] == 1.0
    decision = decide_retraining(result.reports, TriggerPolicy(), home, outage=result.outage)
    assert decision.alerts


@pytest.fixture(scope="module")
def checked_home(tmp_path_factory, training_dir, bundle_dir) -> Home:
    """The training pipeline's first report, then two checks: all in the workspace."""
    home = Home(tmp_path_factory.mktemp("home"))
    first_report(training_dir, home.root, bundle_dir=bundle_dir)
    run_monitoring(home, current_window(shifted=True))
    run_monitoring(home, current_window(shifted=False))
    return home


def test_the_evidently_workspace_lists_every_run(checked_home) -> None:
    from evidently.ui.workspace import Workspace

    indexed = {e.summary.report_id: e.summary for e in list_reports(checked_home)}
    assert len(indexed) == 6  # 3 runs x (user features, item features)
    stored = DriftWorkspace.of(checked_home).runs()
    assert sorted(r.name for r in stored) == sorted(indexed)
    for run in stored:
        summary = indexed[run.name]
        assert run.project == f"shoprec {summary.kind}" and summary.kind in run.tags
        assert run.metadata["report_id"] == run.name
        assert summary.metrics["evidently_workspace"]["snapshot_id"] == run.snapshot_id
    # Evidently's own API, with nothing of ours in between: one project per kind, three runs each,
    # and the drift-share dashboard on each project.
    workspace = Workspace(str(workspace_dir(checked_home)))
    projects = {p.name: p for p in workspace.list_projects()}
    assert set(projects) == {"shoprec user_features", "shoprec item_features"}
    for project in projects.values():
        assert len(workspace.list_runs(project.id)) == 3
        panels = workspace.get_dashboard(project.id).panels
        assert any(v.metric.endswith("DriftedColumnsCount") and v.metric_labels == {"value_type": "share"}
                   for panel in panels for v in panel.values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_evidently_ui_serves_the_workspace(checked_home, tmp_path) -> None:
    """`evidently ui --workspace <home>/reports/evidently`, as the README says, lists the runs."""
    port = free_port()
    evidently = Path(sys.executable).with_name("evidently")
    server = subprocess.Popen([str(evidently), "ui", "--workspace", str(workspace_dir(checked_home)),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              cwd=tmp_path, env={**os.environ, "DO_NOT_TRACK": "1"})
    try:
        projects = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and projects is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/projects", timeout=5) as answer:
                    projects = json.loads(answer.read())
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        assert projects is not None, "evidently ui did not answer"
        names = {p["name"]: p["id"] for p in projects}
        assert {"shoprec user_features", "shoprec item_features"} <= set(names)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/projects/{names['shoprec item_features']}/snapshots",
                                    timeout=10) as answer:
            snapshots = json.loads(answer.read())
        assert len(snapshots) == 3
    finally:
        server.terminate()
        server.wait(timeout=30)
