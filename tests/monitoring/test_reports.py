"""Drift reports on windows with known drift: real Evidently, real files."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shoprec import schema as S
from shoprec.data.dataset import EventData
from shoprec.errors import EmptyWindowError, SchemaMismatchError
from shoprec.home import Home
from shoprec.monitoring import drift as D
from shoprec.monitoring.index import list_reports
from shoprec.monitoring.reference import save_reference
from shoprec.monitoring.run import first_report, run_monitoring
from shoprec.serving.prediction_log import PredictionLog, PredictionRecord, hash_user

from .conftest import START, current_window


@pytest.fixture(scope="module")
def home(tmp_path_factory, training_dir, bundle_dir) -> Home:
    """A home whose training pipeline's monitor step ran: first report + saved reference."""
    root = tmp_path_factory.mktemp("home")
    first_report(training_dir, root, bundle_dir=bundle_dir)
    return Home(root)


@pytest.fixture(scope="module")
def shifted_run(home):
    return run_monitoring(home, current_window(shifted=True))


@pytest.fixture(scope="module")
def fresh_run(home):
    return run_monitoring(home, current_window(shifted=False))


def test_planted_shift_is_flagged_and_columns_named(shifted_run) -> None:
    by_kind = {r.kind: r for r in shifted_run.reports}
    items = by_kind[D.ITEM_FEATURES]
    users = by_kind[D.USER_FEATURES]
    assert items.dataset_drift and items.verdict == D.DRIFT
    assert "price" in items.drifted_columns  # prices x3
    assert {"mean_price", "top_category"} <= set(users.drifted_columns)  # price and category mix
    assert shifted_run.verdict == D.DRIFT
    saved = json.loads((shifted_run.folder / "item_features.json").read_text())
    assert saved["dataset_drift"] is True and "price" in saved["drifted_columns"]
    price_test = next(t for t in saved["column_tests"] if t["column"] == "price")
    assert price_test["drifted"] is True and price_test["method"]


def test_fresh_resample_of_the_reference_is_not_flagged(fresh_run) -> None:
    for report in fresh_run.reports:
        if report.kind in (D.USER_FEATURES, D.ITEM_FEATURES):
            assert not report.dataset_drift, (report.kind, report.drifted_columns)
            assert report.verdict == D.NO_DRIFT


def test_first_report_compares_training_window_with_held_out_window(home) -> None:
    runs = [e for e in list_reports(home) if e.summary.report_id.startswith("training-")]
    assert {e.summary.kind for e in runs} == {D.USER_FEATURES, D.ITEM_FEATURES}
    summary = runs[0].summary
    # Held out: the newest 7 days of 21 (ending just after the last event, ~2026-01-22 00:00);
    # reference: the 7 days before them.
    cur_start, cur_end = (pd.Timestamp(t, tz="UTC") for t in summary.current_window.split(" .. "))
    ref_start, ref_end = (pd.Timestamp(t, tz="UTC") for t in summary.reference_window.split(" .. "))
    assert ref_end == cur_start and cur_end - cur_start == ref_end - ref_start == pd.Timedelta(days=7)
    assert START + pd.Timedelta(days=20) < cur_end <= START + pd.Timedelta(days=21, minutes=1)
    from shoprec.monitoring.reference import reference_folder

    assert (reference_folder(home) / "reference.json").exists()


def test_prediction_drift_and_quality_from_the_prediction_log(tmp_path, training_data, bundle_dir) -> None:
    home = Home(tmp_path)
    save_reference(home, training_data, bundle_dir=bundle_dir)
    current = current_window(shifted=False)
    log = PredictionLog(home.logs / "predictions")
    first = current.events.drop_duplicates(S.USER_ID).head(150)
    for n, row in enumerate(first.itertuples(index=False)):
        # Every other answer is a popularity fallback with low scores: the fallback rate jumps.
        fallback = "unknown_user" if n % 2 else None
        log.append(PredictionRecord(
            request_id=f"r{n}", user_hash=hash_user(row.user_id), kind="user", model_version="v1",
            fallback=fallback, items=[f"i{j}" for j in range(10)], scores=[0.01 * j for j in range(10)],
            categories=["dairy"] * 10, time=(row.timestamp - pd.Timedelta(seconds=1)).isoformat()))
    result = run_monitoring(home, current)
    by_kind = {r.kind: r for r in result.reports}
    predictions = by_kind[D.PREDICTIONS]
    assert predictions.metrics["fallback_rate"]["current"] == pytest.approx(0.5, abs=0.01)
    assert predictions.metrics["fallback_rate"]["reference"] == 0.0
    assert {"fallback", "score", "category"} <= set(predictions.drifted_columns)
    quality = by_kind[D.QUALITY]
    ndcg = quality.metrics["quality"]["NDCG@10"]
    assert 0.0 <= ndcg["current"] <= 1.0 and 0.0 < ndcg["reference"] <= 1.0
    assert quality.metrics["users_current"] > 0
    assert (result.folder / "quality.html").exists()


def test_empty_current_window_is_a_clear_error(home) -> None:
    empty = EventData(current_window(False).events.iloc[0:0], None)
    with pytest.raises(EmptyWindowError, match="current events"):
        run_monitoring(home, empty)


def test_schema_that_differs_from_the_reference_is_a_clear_error(home) -> None:
    events = current_window(False).events.rename(columns={S.PRICE: "cost"})
    with pytest.raises(SchemaMismatchError, match=r"missing column\(s\) \['price'\].*unexpected column\(s\) \['cost'\]"):
        run_monitoring(home, EventData(events, None))
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(SchemaMismatchError, match="unexpected column"):
        D.drift_report(frame, frame.assign(b=1), kind="x", report_id="r/x", out_dir=Path("/nonexistent"),
                       numerical=["a"], categorical=[])


def test_all_null_column_is_reported_not_a_crash(tmp_path) -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=500), "c": rng.choice(["x", "y"], 500), "gone": np.nan})
    cur = pd.DataFrame({"a": rng.normal(size=500), "c": rng.choice(["x", "y"], 500), "gone": np.nan})
    summary = D.drift_report(ref, cur, kind="user_features", report_id="r/user_features", out_dir=tmp_path,
                             numerical=["a", "gone"], categorical=["c"])
    assert summary.all_null_columns == {"reference": ["gone"], "current": ["gone"]}
    assert "gone" not in summary.columns and summary.columns == ["a", "c"]
    assert "all-null columns" in (tmp_path / "user_features.html").read_text()


class _Refs(HTMLParser):
    """Every resource a page loads: script/img/iframe src, link href, CSS url() and @import."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "embed", "source", "audio", "video") and attrs.get("src"):
            self.refs.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.refs.append(attrs["href"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            import re

            self.refs += [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", data) if not u.startswith("data:")]
            self.refs += re.findall(r"@import\s+['\"]?([^'\";]+)", data)


def test_report_html_needs_nothing_external_to_render(shifted_run) -> None:
    for report in shifted_run.reports:
        parser = _Refs()
        parser.feed((shifted_run.folder / report.html).read_text(encoding="utf-8"))
        assert parser.refs == [], f"{report.html} loads {parser.refs[:5]}"


def test_index_lists_every_report(home, shifted_run, fresh_run) -> None:
    from shoprec.monitoring.index import write_index

    write_index(home)
    page = home.reports_index.read_text()
    entries = list_reports(home)
    on_disk = [p for p in (home.reports / "monitoring").glob("*/*.json")
               if p.name != "run.json" and p.parent.name != "reference"]
    assert len(entries) == len(on_disk) >= 6
    for entry in entries:
        assert entry.summary.report_id in page
        assert entry.html_path.exists()
    assert "DRIFT" in page and "NO DRIFT" in page
