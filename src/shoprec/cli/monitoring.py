"""Monitoring commands: `drift` (one check by hand) and `reports` (every drift report so far)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shoprec.cli.options import HOME_OPTION
from shoprec.home import Home


@click.command()
@HOME_OPTION
def reports(home: Path | None) -> None:
    """List every drift report (time, windows, verdict) and the index page's path."""
    from shoprec.monitoring.index import list_reports, write_index

    home = Home.at(home)
    entries = list_reports(home)
    table = Table(title=f"Drift reports in {home.reports}")
    for column in ("time (UTC)", "report", "reference window", "current window", "verdict", "drifted"):
        table.add_column(column)
    for e in entries:
        s = e.summary
        colour = "green" if s.verdict == "no drift" else "red"
        table.add_row(s.created_at[:19].replace("T", " "), s.report_id, s.reference_window, s.current_window,
                      f"[{colour}]{s.verdict}[/]", f"{s.drift_share:.0%} {', '.join(s.drifted_columns)}")
    Console(file=sys.stdout, width=200).print(table)
    click.echo(f"{len(entries)} report(s); index: {write_index(home)}")


@click.command()
@click.option("--current", "current_path", default="",
              help="Current events: a CSV / Parquet events file or a dataset folder [default: "
                   "the prediction log only].")
@click.option("--window", "window_days", type=click.FloatRange(min=0, min_open=True), default=7.0,
              show_default=True, help="Days in the current (and the reference) window.")
@click.option("--drift-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of drifted columns that makes a report's verdict dataset drift.")
@HOME_OPTION
def drift(current_path: str, window_days: float, drift_share: float, home: Path | None) -> None:
    """Run one drift check by hand against the training window's reference."""
    from shoprec.monitoring.run import MonitoringSettings, read_current, run_monitoring

    home = Home.at(home)
    result = run_monitoring(home, read_current(current_path),
                            settings=MonitoringSettings(window_days=window_days, drift_share=drift_share))
    for s in result.reports:
        click.echo(f"{s.kind:<14} {s.verdict:<12} {s.drift_share:5.0%}  drifted: "
                   f"{', '.join(s.drifted_columns) or '-'}  -> {result.folder / s.html}")
    for kind, why in result.skipped.items():
        click.echo(f"{kind:<14} skipped: {why}")
    click.echo(f"verdict: {result.verdict}; index: {home.reports_index}")
