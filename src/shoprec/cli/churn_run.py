"""`shoprec churn-run`: the churn pipeline (pipelines/churn.py) on this machine through kfp.local."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from shoprec.cli.options import HOME_OPTION, REGISTRY_OPTION, validation_options
from shoprec.cli.pipeline import data_arguments, run_pipeline_locally, source_options
from shoprec.home import Home


@click.command(name="churn-run")
@source_options
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
    """Run the churn pipeline locally: validate, features, train, gate, register, deploy (the
    churn alias a `--registry` churn server follows, when the gate passes), drift reports."""
    from shoprec.pipelines.churn import churn_pipeline

    home = Home.at(home).ensure()
    arguments = {**data_arguments(home, dataset, items_path, limit_users, max_events_per_user_day, window_start,
                                  window_end, max_quarantine_share, timestamp_unit),
                 "registry_uri": registry_uri or str(home.registry), "horizon_days": horizon_days,
                 "snapshots": snapshots, "epochs": epochs, "resamples": resamples}
    click.echo(f"shoprec-churn on {arguments['dataset']}")
    # The run redirects sys.stdout into its log: step ends are reported on the terminal's stream.
    terminal = sys.stdout
    result = run_pipeline_locally(churn_pipeline, arguments, home,
                                  lambda task, status: click.echo(f"  {task:<16} {status}", file=terminal),
                                  echo=terminal if verbose else None)
    decision = json.loads(result.output("churn-register", "decision").read_text())
    deployed = result.output("churn-deploy", "deployment")
    click.echo(f"{'promoted and deployed' if decision['promote'] else 'registered (not promoted)'}: "
               f"shoprec-churn {decision['version']}: {decision['gate']['reason']}")
    for label, path in (("model bundle", result.output("churn-train", "model")),
                        ("model report", result.output("churn-train", "report")),
                        ("decision", result.output("churn-register", "decision_report")),
                        *((("deployment", deployed),) if deployed.exists() else ()),
                        ("prediction drift", result.output("churn-monitor", "report")),
                        ("drift index", home.reports_index), ("run folder", result.root)):
        click.echo(f"  {label:<17} {path}")
