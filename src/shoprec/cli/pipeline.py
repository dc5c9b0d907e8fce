"""Pipeline commands: `run` (kfp.local), `validate` (the gate alone), `compile` and `submit` (a cluster)."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import click
from rich.console import Console
from rich.markup import escape

from shoprec.cli.options import HOME_OPTION, validation_options
from shoprec.cli.summary import print_model_summary, print_steps_summary, print_validation_summary, read_json
from shoprec.config import DEFAULT_TRAIN_MINUTES, ValidationConfig
from shoprec.errors import DataValidationError, ShoprecError
from shoprec.home import Home


def source_options(command: Any) -> Any:
    """The event source of a local pipeline run, shared by `run` and `churn-run`."""
    command = click.option("--limit-users", type=click.IntRange(min=0), default=0,
                           help="Use only the first N users (a quick real slice); 0 = all.")(command)
    command = click.option("--items", "items_path", default="",
                           help="Items file for your own events (optional).")(command)
    command = click.option("--dataset", default="instacart", show_default=True,
                           help="instacart, ml-100k, or the path of your events file (CSV or Parquet).")(command)
    return command


def data_arguments(home: Home, dataset: str, items_path: str, limit_users: int, max_events_per_user_day: int,
                   window_start: str, window_end: str, max_quarantine_share: float,
                   timestamp_unit: str) -> dict[str, Any]:
    """A local run's data parameters (`shoprec.pipelines.platform.DataParameters`) and its home;
    the gate's settings are checked now, before any step starts (ValidationError)."""
    if dataset not in ("instacart", "ml-100k"):
        dataset = str(Path(dataset).expanduser().resolve())  # tasks run in other folders
        items_path = str(Path(items_path).expanduser().resolve()) if items_path else ""
    ValidationConfig.from_strings(max_events_per_user_day, window_start, window_end,  # fail early
                                  max_quarantine_share, timestamp_unit)
    return {"dataset": dataset, "items_path": items_path, "limit_users": limit_users,
            "max_events_per_user_day": max_events_per_user_day, "window_start": window_start,
            "window_end": window_end, "max_quarantine_share": max_quarantine_share,
            "timestamp_unit": timestamp_unit, "home": str(home.root)}


def run_pipeline_locally(pipeline: Any, arguments: dict[str, Any], home: Home,
                         on_task_done: Callable[[str, str], None], echo: TextIO | None) -> Any:
    """Run `pipeline` through kfp.local in the home's runs folder; returns the finished run
    (`shoprec.kfp.local.LocalRun`). A run the validation gate stopped raises DataValidationError
    (the failed checks, the report); any other failure ShoprecError naming the error and the log."""
    from shoprec.kfp.local import run_locally

    result = run_locally(pipeline, arguments, home.runs, on_task_done, echo=echo)
    if not result.succeeded:
        report_json = result.output("validate", "report_json")
        if report_json.exists() and not read_json(report_json)["passed"]:
            raise DataValidationError(read_json(report_json)["failed_hard_checks"],
                                      result.output("validate", "report"))
        raise ShoprecError(f"{pipeline.name} failed: {result.error}; log: {result.root / 'pipeline.log'}")
    return result


@click.command()
@source_options
@validation_options
@click.option("--features-as-of", default="", show_default="the last clean event",
              help="Build the feature tables as of this date-time (UTC).")
@click.option("--train-minutes", type=click.FloatRange(min=0), default=DEFAULT_TRAIN_MINUTES, show_default=True,
              help="Training budget of the transformer (0 = until early stopping).")
@HOME_OPTION
@click.option("--verbose", is_flag=True, help="Stream every step's log, not only progress.")
def run(dataset: str, items_path: str, limit_users: int, max_events_per_user_day: int,
        window_start: str, window_end: str, max_quarantine_share: float, timestamp_unit: str,
        features_as_of: str, train_minutes: float, home: Path | None, verbose: bool) -> None:
    """Run the training pipeline locally through kfp.local."""
    from shoprec.kfp.spec import step_order
    from shoprec.pipelines.training import training_pipeline

    console = Console(file=sys.stdout)
    home = Home.at(home).ensure()
    arguments = {**data_arguments(home, dataset, items_path, limit_users, max_events_per_user_day, window_start,
                                  window_end, max_quarantine_share, timestamp_unit),
                 "features_as_of": features_as_of, "budget_minutes": train_minutes,
                 "registry_uri": str(home.registry)}
    steps = step_order(training_pipeline)
    console.print(f"[bold]shoprec-training[/] on [cyan]{arguments['dataset']}[/]: {' -> '.join(steps)}")
    console.print(_time_estimate(train_minutes))
    started = time.perf_counter()
    done: list[tuple[str, str, float]] = []  # (task, status, seconds since the start)

    def on_task_done(task: str, status: str) -> None:
        elapsed = time.perf_counter() - started
        done.append((task, status, elapsed))
        mark = "[green]ok[/]" if status == "SUCCESS" else f"[red]{status}[/]"
        console.print(f"  [{len(done)}/{len(steps)}] {task:<16} {mark}  {elapsed:6.1f} s")

    with console.status("running the pipeline ...", spinner="dots") as status:
        result = run_pipeline_locally(training_pipeline, arguments, home, on_task_done,
                                      echo=sys.stdout if verbose else _TrainingProgress(console, status))
    log = result.root / "pipeline.log"
    print_validation_summary(console, read_json(result.output("validate", "report_json")), {
        "clean data": result.output("validate", "clean"),
        "model bundle": result.output("train", "model"),
        "evaluation": result.output("evaluate", "report"),
        "promotion decision": result.output("promote", "decision_report"),
        "quarantine": result.output("validate", "quarantine") / "quarantine.parquet",
        "validation report": result.output("validate", "report"),
        "run folder": result.root,
        "log": log,
    })
    print_model_summary(console, result.output("train", "model") / "metrics.json",
                        result.output("promote", "decision"))
    print_steps_summary(console, [(task, status, seconds, result.step_metrics(task).get("peak_rss_mb"))
                                  for task, status, seconds in _durations(done)])


@click.command()
@click.argument("source")
@click.option("--items", "items_path", default=None, help="Items file for your own events.")
@validation_options
@HOME_OPTION
def validate(source: str, items_path: str | None, max_events_per_user_day: int, window_start: str,
             window_end: str, max_quarantine_share: float, timestamp_unit: str,
             home: Path | None) -> None:
    """Run the validation gate alone on SOURCE (a file path, instacart or ml-100k)."""
    from shoprec.data.gate import run_gate
    from shoprec.data.ingest import ingest
    from shoprec.data.report import ReportPaths

    console = Console(file=sys.stdout)
    config = ValidationConfig.from_strings(max_events_per_user_day, window_start, window_end,
                                           max_quarantine_share, timestamp_unit)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Home.at(home).ensure().validation_report(stamp)
    report = ReportPaths(out / "validation_report.json", out / "validation_report.md")
    with console.status(f"validating {source} ..."):
        # Ingested first (streamed for a file), then the gate streams the dataset directory:
        # memory stays one batch whatever the log's size.
        raw = ingest(source, out / "raw", items_path).directory
        outcome = run_gate(raw, config, out / "clean", out / "quarantine", report)
    print_validation_summary(console, outcome.report.to_dict(), {
        "clean data": out / "clean",
        "quarantine": out / "quarantine" / "quarantine.parquet",
        "validation report": report.markdown,
    })


@click.command(name="compile")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the YAML [default: pipelines/compiled].")
@click.option("--image", default=None,
              help="Image the steps run on [default: $SHOPREC_IMAGE, else the built-in default].")
def compile_command(output_dir: Path | None, image: str | None) -> None:
    """Compile the pipelines to KFP YAML for a cluster."""
    from shoprec.pipelines.compile import COMPILED_DIR, compile_all

    for path in compile_all(output_dir or COMPILED_DIR, image):
        click.echo(f"wrote {path}")


@click.command()
@click.option("--host", envvar="KF_PIPELINES_ENDPOINT", required=True,
              help="Kubeflow Pipelines API URL [env: KF_PIPELINES_ENDPOINT]; token from $KF_PIPELINES_TOKEN "
                   "or the kube config.")
@click.option("--experiment", default="shoprec", show_default=True)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A pipeline parameter (repeatable), typed by the compiled pipeline.")
@click.option("--wait", is_flag=True, help="Block until the run ends; exit 2 unless it succeeded.")
@click.option("--schedule", default=None, metavar="CRON",
              help="Create a recurring run of the monitoring pipeline on this cron schedule instead.")
@click.option("--service-account", default=None, help="Kubernetes service account of the run's pods.")
def submit(host: str, experiment: str, params: tuple[str, ...], wait: bool, schedule: str | None,
           service_account: str | None) -> None:
    """Submit the compiled training pipeline (or schedule the monitoring one) to a KFP cluster."""
    from shoprec.pipelines.compile import COMPILED_DIR
    from shoprec.kfp.submit import parse_params, schedule_run, submit_run

    package = COMPILED_DIR / ("monitoring_pipeline.yaml" if schedule else "training_pipeline.yaml")
    arguments = parse_params(params, package)
    if schedule:
        done = schedule_run(host, package, arguments, schedule, experiment=experiment,
                            service_account=service_account)
    else:
        done = submit_run(host, package, arguments, experiment=experiment, wait=wait,
                          service_account=service_account)
    click.echo(f"{done.kind} {done.id}{f' {done.state}' if done.state else ''}: {done.url}")


def _time_estimate(train_minutes: float) -> str:
    """What the run will take, said before it starts (README: under 12 minutes for the whole
    Instacart sample on a 2-core CPU with the default budget, `config.DEFAULT_TRAIN_MINUTES`)."""
    if train_minutes <= 0:
        return ("the transformer trains until early stopping (no time budget: --train-minutes 0), "
                "which can take long on a CPU; every epoch is shown below")
    return (f"expect up to about {train_minutes + 1:.0f} minutes: the transformer trains for up to "
            f"{train_minutes:g} minutes (--train-minutes), the other steps take about a minute more "
            f"(Instacart sample, 2-core CPU); every epoch is shown below with the time left")


class _TrainingProgress(io.TextIOBase):
    """The pipeline log's training progress lines (training.loop's `[train] epoch ...`) shown
    as they come, and the latest one on the spinner, when the whole log is not streamed."""

    def __init__(self, console: Console, status: Any) -> None:
        self._console, self._status, self._pending = console, status, ""

    # training.loop.PROGRESS_PREFIX, spelt out: importing the loop would load torch into this
    # process only to read a constant.
    PREFIX = "[train]"

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            at = line.find(self.PREFIX)
            if at >= 0:
                progress = line[at + len(self.PREFIX):].strip()
                self._console.print(f"    [dim]train[/] {escape(progress)}")
                self._status.update(f"running the pipeline ... train {escape(progress.split(' | ')[0])}")
        return len(text)


def _durations(done: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """(task, status, seconds) with each task's time since the previous one ended: kfp.local runs
    the steps one after another, so that is the step's own time (pipeline overhead included)."""
    out, previous = [], 0.0
    for task, status, elapsed in done:
        out.append((task, status, elapsed - previous))
        previous = elapsed
    return out
