"""`shoprec churn-run`: the churn pipeline (pipelines/churn.py) on this machine through kfp.local."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from shoprec.cli.options import HOME_OPTION, REGISTRY_OPTION, validation_options
from shoprec.config import ValidationConfig
from shoprec.errors import DataValidationError, ShoprecError
from shoprec.home import Home


@click.command(name="churn-run")
@click.option("--dataset", default="instacart", show_default=True,
              help="instacart, ml-100k, or the path of your events file (CSV or Parquet).")
@click.option("--items", "items_path", default="", help="Items file for your own events (optional).")
@click.option("--limit-users", type=click.IntRange(min=0), default=0,
              help="Use only the first N users (a quick real slice); 0 = all.")
@validation_options
@click.option("--horizon-days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Churned = no purchase in this many days after a snapshot.")
@click.option("--snapshots", type=click.IntRange(min=2), default=8, show_default=True,
              help="Snapshot times (the latest is the test set).")
@click.option("--epochs", type=click.IntRange(min=1), default=300, show_default=True,
              help="Most training epochs (early stopping on held-out users).")
@click.option("--resamples", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Bootstrap resamples of the paired intervals.")
@REGISTRY_OPTION
@HOME_OPTION
@click.option("--verbose", is_flag=True, help="Stream every step's log.")
def churn_run(dataset: str, items_path: str, limit_users: int, max_events_per_user_day: int,
              window_start: str, window_end: str, max_quarantine_share: float, timestamp_unit: str,
              horizon_days: int, snapshots: int, epochs: int, resamples: int, registry_uri: str | None,
              home: Path | None, verbose: bool) -> None:
    """Run the churn pipeline locally: validate, features, train, gate, register, drift reports."""
    from shoprec.kfp.local import run_locally
    from shoprec.pipelines.churn import churn_pipeline

    home = Home.at(home).ensure()
    if dataset not in ("instacart", "ml-100k"):
        dataset = str(Path(dataset).expanduser().resolve())  # tasks run in other folders
        items_path = str(Path(items_path).expanduser().resolve()) if items_path else ""
    ValidationConfig.from_strings(max_events_per_user_day, window_start, window_end,  # fail early
                                  max_quarantine_share, timestamp_unit)
    arguments = {
        "dataset": dataset, "items_path": items_path, "limit_users": limit_users,
        "max_events_per_user_day": max_events_per_user_day, "window_start": window_start,
        "window_end": window_end, "max_quarantine_share": max_quarantine_share,
        "timestamp_unit": timestamp_unit, "home": str(home.root),
        "registry_uri": registry_uri or str(home.registry), "horizon_days": horizon_days,
        "snapshots": snapshots, "epochs": epochs, "resamples": resamples,
    }
    click.echo(f"shoprec-churn on {dataset}")
    # The run redirects sys.stdout into its log: step ends are reported on the terminal's stream.
    terminal = sys.stdout
    result = run_locally(churn_pipeline, arguments, home.runs,
                         lambda task, status: click.echo(f"  {task:<16} {status}", file=terminal),
                         echo=terminal if verbose else None)
    if not result.succeeded:
        report_json = result.output("validate", "report_json")
        if report_json.exists() and not json.loads(report_json.read_text())["passed"]:
            raise DataValidationError(json.loads(report_json.read_text())["failed_hard_checks"],
                                      result.output("validate", "report"))
        raise ShoprecError(f"churn pipeline failed: {result.error}; log: {result.root / 'pipeline.log'}")
    decision = json.loads(result.output("churn-register", "decision").read_text())
    click.echo(f"{'promoted' if decision['promoted'] else 'registered (not promoted)'}: "
               f"shoprec-churn {decision['version']}: {decision['gate']['reason']}")
    for label, path in (("model bundle", result.output("churn-train", "model")),
                        ("model report", result.output("churn-train", "report")),
                        ("decision", result.output("churn-register", "decision_report")),
                        ("prediction drift", result.output("churn-monitor", "report")),
                        ("drift index", home.reports_index), ("run folder", result.root)):
        click.echo(f"  {label:<17} {path}")
