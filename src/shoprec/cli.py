"""The `shoprec` command: each subcommand is a few lines over a library function.

Pipelines are imported inside the commands that run them, so the library itself never
imports KFP; errors become one clear line and an exit code.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from shoprec.config import ValidationConfig, resolve_home
from shoprec.errors import DataValidationError, ShoprecError
from shoprec.home import Home

HOME_OPTION = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Home folder for runs, reports, features and the registry "
         "[default: $SHOPREC_HOME or ./shoprec-home].",
)


def _validation_options(command: Any) -> Any:
    """The gate's soft-check settings, shared by `run` and `validate`."""
    command = click.option("--window-end", default="", show_default="open",
                           help="Quarantine events after this date-time (UTC).")(command)
    command = click.option("--window-start", default="1995-01-01", show_default=True,
                           help="Quarantine events before this date-time (UTC); '' for open.")(command)
    command = click.option("--max-events-per-user-day", type=click.IntRange(min=1), default=1000,
                           show_default=True,
                           help="Bot ceiling: a user above it on any one day is quarantined.")(command)
    return command


@click.group()
@click.version_option(package_name="shoprec")
def cli() -> None:
    """shoprec: e-commerce recommendations on Kubeflow and KServe, or on this machine."""


@cli.command()
@click.option("--dataset", default="instacart", show_default=True,
              help="instacart, ml-100k, or the path of your events file (CSV or Parquet).")
@click.option("--items", "items_path", default="", help="Items file for your own events (optional).")
@click.option("--limit-users", type=click.IntRange(min=0), default=0,
              help="Use only the first N users (a quick real slice); 0 = all.")
@_validation_options
@HOME_OPTION
@click.option("--verbose", is_flag=True, help="Stream every step's log, not only progress.")
def run(dataset: str, items_path: str, limit_users: int, max_events_per_user_day: int,
        window_start: str, window_end: str, home: Path | None, verbose: bool) -> None:
    """Run the training pipeline locally through kfp.local."""
    from pipelines.local import run_locally
    from pipelines.training import training_pipeline

    console = Console(file=sys.stdout)
    layout = Home(resolve_home(home)).ensure()
    if dataset not in ("instacart", "ml-100k"):
        dataset = str(Path(dataset).expanduser().resolve())  # tasks run in other folders
        items_path = str(Path(items_path).expanduser().resolve()) if items_path else ""
    ValidationConfig.from_strings(max_events_per_user_day, window_start, window_end)  # fail early
    arguments = {
        "dataset": dataset, "items_path": items_path, "limit_users": limit_users,
        "max_events_per_user_day": max_events_per_user_day,
        "window_start": window_start, "window_end": window_end,
        "feature_home": str(layout.root),
    }
    steps = _step_order(training_pipeline)
    console.print(f"[bold]shoprec-training[/] on [cyan]{dataset}[/]: {' -> '.join(steps)}")
    started = time.perf_counter()
    done: list[str] = []

    def on_task_done(task: str, status: str) -> None:
        done.append(task)
        mark = "[green]ok[/]" if status == "SUCCESS" else f"[red]{status}[/]"
        console.print(f"  [{len(done)}/{len(steps)}] {task:<16} {mark}  "
                      f"{time.perf_counter() - started:6.1f} s")

    with console.status("running the pipeline ...", spinner="dots"):
        result = run_locally(training_pipeline, arguments, layout.runs, on_task_done,
                             echo=sys.stdout if verbose else None)
    log = result.root / "pipeline.log"
    report_json = result.output("validate", "report_json")
    if not result.succeeded:
        if report_json.exists() and not _read_json(report_json)["passed"]:
            failed = _read_json(report_json)["failed_hard_checks"]
            raise DataValidationError(failed, result.output("validate", "report"))
        raise ShoprecError(f"pipeline failed: {result.error}; log: {log}")
    _print_summary(console, _read_json(report_json), {
        "clean data": result.output("validate", "clean"),
        "quarantine": result.output("validate", "quarantine") / "quarantine.parquet",
        "validation report": result.output("validate", "report"),
        "run folder": result.root,
        "log": log,
    })


@cli.command()
@click.argument("source")
@click.option("--items", "items_path", default=None, help="Items file for your own events.")
@_validation_options
@HOME_OPTION
def validate(source: str, items_path: str | None, max_events_per_user_day: int, window_start: str,
             window_end: str, home: Path | None) -> None:
    """Run the validation gate alone on SOURCE (a file path, instacart or ml-100k)."""
    from shoprec.data.gate import run_gate
    from shoprec.data.loaders import load_dataset
    from shoprec.data.report import ReportPaths

    console = Console(file=sys.stdout)
    config = ValidationConfig.from_strings(max_events_per_user_day, window_start, window_end)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Home(resolve_home(home)).ensure().reports / f"validation-{stamp}"
    report = ReportPaths(out / "validation_report.json", out / "validation_report.md")
    with console.status(f"validating {source} ..."):
        outcome = run_gate(load_dataset(source, items_path), config, out / "clean",
                           out / "quarantine", report)
    _print_summary(console, outcome.report.to_dict(), {
        "clean data": out / "clean",
        "quarantine": out / "quarantine" / "quarantine.parquet",
        "validation report": report.markdown,
    })


@cli.command(name="compile")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the YAML [default: pipelines/compiled].")
def compile_command(output_dir: Path | None) -> None:
    """Compile the pipelines to KFP YAML for a cluster."""
    from pipelines.local import COMPILED_DIR, compile_all

    for path in compile_all(output_dir or COMPILED_DIR):
        click.echo(f"wrote {path}")


@cli.group()
def events() -> None:
    """Live events for the feature store."""


@events.command(name="push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@HOME_OPTION
def events_push(file: Path, home: Path | None) -> None:
    """Push the events in FILE (CSV or Parquet: user_id, item_id, timestamp) to the online store."""
    from shoprec.data.loaders import load_event_files
    from shoprec.features.store import FeatureStoreSettings, open_store, push_events

    settings = FeatureStoreSettings.from_env(home)
    summary = push_events(open_store(settings), load_event_files(file).events, settings)
    click.echo(f"pushed {summary.events} event(s) of {summary.users} user(s) to {settings.describe()}")


def _step_order(pipeline: Any) -> list[str]:
    """The pipeline's task names in an order that respects their dependencies."""
    tasks = pipeline.pipeline_spec.root.dag.tasks
    ordered: list[str] = []
    while len(ordered) < len(tasks):
        ready = [name for name, task in tasks.items() if name not in ordered
                 and all(dep in ordered for dep in task.dependent_tasks)]
        ordered += sorted(ready)
    return ordered


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


def _print_summary(console: Console, report: dict[str, Any], outputs: dict[str, Path]) -> None:
    """Rows in, clean, quarantined by reason, and where everything is."""
    table = Table(title="Validation", show_header=True)
    table.add_column("rows")
    table.add_column("count", justify="right")
    table.add_row("in", f"{report['rows_in']:,}")
    table.add_row("clean", f"{report['rows_clean']:,}")
    for reason, count in report["quarantined_by_reason"].items():
        table.add_row(f"quarantined: {reason}", f"{count:,}")
    console.print(table)
    where = Table(title="Outputs", show_header=False)
    where.add_column("what")
    where.add_column("path", overflow="fold")
    for name, path in outputs.items():
        where.add_row(name, _short(path))
    console.print(where)


def _short(path: Path) -> str:
    """A path relative to the current folder when it lies inside it (tables stay readable)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main() -> None:
    """Console entry point: library errors become one line on stderr and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ShoprecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
