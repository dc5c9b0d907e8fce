"""Churn monitoring through the platform's Evidently reports: feature drift of the model's inputs
and prediction drift of churn_probability, for the registered churn model of a real home
(Instacart slice), written into the home's monitoring reports and index."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.churn.bundle import churn_registry, load_registered
from shoprec.churn.drift import (CHURN_FEATURES_REPORT, CHURN_PREDICTIONS_REPORT, PROBABILITY,
                                 churn_drift_reports, churn_monitoring_run, churn_population)
from shoprec.data.loaders import limit_to_users, load_instacart
from shoprec.errors import MonitoringError
from shoprec.home import Home
from shoprec.monitoring.index import list_reports

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(churn_home_built):
    home = Home(churn_home_built.root)
    bundle, version = load_registered(churn_registry(home.registry))
    data = limit_to_users(load_instacart(), 120)  # the fixture's events
    return home, bundle, version, data


def test_churn_drift_run_writes_feature_and_prediction_reports_into_the_home(setup) -> None:
    home, bundle, version, data = setup
    run = churn_monitoring_run(home, bundle, data.events, data.items, version=version)

    by_kind = {r.kind: r for r in run.reports}
    assert set(by_kind) == {CHURN_FEATURES_REPORT, CHURN_PREDICTIONS_REPORT}
    assert by_kind[CHURN_FEATURES_REPORT].columns == bundle.features  # every model input is tested
    assert by_kind[CHURN_PREDICTIONS_REPORT].columns == [PROBABILITY]
    test_snapshot = pd.Timestamp(bundle.config["training"]["test_snapshot"])
    for report in run.reports:
        assert (run.folder / report.html).read_text().count('id="shoprec-verdict"') == 1
        assert report.metrics["model_version"] == version
        assert pd.Timestamp(report.metrics["reference_at"]) == test_snapshot
        assert report.rows_reference == report.rows_current == len(set(data.events[S.USER_ID].astype(str)))
    facts = by_kind[CHURN_PREDICTIONS_REPORT].metrics["mean_churn_probability"]
    population = churn_population(bundle, data.events, data.items, test_snapshot)
    assert facts["reference"] == pytest.approx(population[PROBABILITY].mean(), abs=1e-6)
    record = json.loads((run.folder / "run.json").read_text())
    assert record["model"]["version"] == version and record["verdict"] == run.verdict
    # The same index and Evidently workspace as the recommender's reports.
    listed = {e.summary.report_id for e in list_reports(home)}
    assert {f"{run.run_id}/{CHURN_FEATURES_REPORT}", f"{run.run_id}/{CHURN_PREDICTIONS_REPORT}"} <= listed
    assert run.run_id in home.reports_index.read_text()
    assert "evidently_workspace" in by_kind[CHURN_PREDICTIONS_REPORT].metrics


def test_population_is_point_in_time_and_scored_by_the_model(setup) -> None:
    _, bundle, _, data = setup
    at = pd.Timestamp(bundle.config["training"]["test_snapshot"])
    frame = churn_population(bundle, data.events, data.items, at)
    times = pd.to_datetime(data.events[S.TIMESTAMP], utc=True)
    assert set(frame[S.USER_ID]) == set(data.events.loc[(times <= at).to_numpy(), S.USER_ID].astype(str))
    last = data.events.assign(t=times)[times <= at].groupby(S.USER_ID)["t"].max()
    expected = (at - last.reindex(frame[S.USER_ID]).to_numpy()) / pd.Timedelta(days=1)
    assert np.allclose(frame["days_since_last_event"], expected, atol=1e-3)  # no later event leaks in
    assert np.allclose(frame[PROBABILITY], bundle.model.probability(frame[bundle.features].to_numpy(np.float64)))


def test_prediction_drift_is_flagged_only_when_the_risk_moves(setup, tmp_path) -> None:
    _, bundle, _, data = setup
    reference = pd.Timestamp(bundle.config["training"]["test_snapshot"])
    # One second later: the same population and answers, so no drift.
    same = churn_drift_reports(bundle, data.events, data.items, tmp_path / "same", "same",
                               current_at=reference + pd.Timedelta(seconds=1))
    # A year with no events after the log ends: everyone's silence grows, and so does the risk.
    later = churn_drift_reports(bundle, data.events, data.items, tmp_path / "later", "later",
                                current_at=pd.to_datetime(data.events[S.TIMESTAMP], utc=True).max()
                                + pd.Timedelta(days=365))
    kinds = lambda reports: {r.kind: r for r in reports}  # noqa: E731
    assert kinds(same)[CHURN_PREDICTIONS_REPORT].drifted_columns == []
    moved = kinds(later)[CHURN_PREDICTIONS_REPORT]
    assert moved.drifted_columns == [PROBABILITY] and moved.dataset_drift
    assert moved.metrics["mean_churn_probability"]["current"] > moved.metrics["mean_churn_probability"]["reference"]
    assert "days_since_last_event" in kinds(later)[CHURN_FEATURES_REPORT].drifted_columns
    with pytest.raises(MonitoringError, match="not after"):
        churn_drift_reports(bundle, data.events, data.items, tmp_path / "x", "x", current_at=reference)
