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
@click.option("--features-as-of", default="", show_default="the last clean event",
              help="Build the feature tables as of this date-time (UTC).")
@click.option("--train-minutes", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Training budget of the transformer (0 = until early stopping).")
@HOME_OPTION
@click.option("--verbose", is_flag=True, help="Stream every step's log, not only progress.")
def run(dataset: str, items_path: str, limit_users: int, max_events_per_user_day: int,
        window_start: str, window_end: str, features_as_of: str, train_minutes: float,
        home: Path | None, verbose: bool) -> None:
    """Run the training pipeline locally through kfp.local."""
    from shoprec.kfp.local import run_locally
    from shoprec.pipelines.training import training_pipeline

    console = Console(file=sys.stdout)
    home = Home.at(home).ensure()
    if dataset not in ("instacart", "ml-100k"):
        dataset = str(Path(dataset).expanduser().resolve())  # tasks run in other folders
        items_path = str(Path(items_path).expanduser().resolve()) if items_path else ""
    ValidationConfig.from_strings(max_events_per_user_day, window_start, window_end)  # fail early
    arguments = {
        "dataset": dataset, "items_path": items_path, "limit_users": limit_users,
        "max_events_per_user_day": max_events_per_user_day,
        "window_start": window_start, "window_end": window_end,
        "features_as_of": features_as_of,
        "budget_minutes": train_minutes,
        "home": str(home.root),
        "registry_uri": str(home.registry),
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
        result = run_locally(training_pipeline, arguments, home.runs, on_task_done,
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
        "model bundle": result.output("train", "model"),
        "evaluation": result.output("evaluate", "report"),
        "promotion decision": result.output("promote", "decision_report"),
        "quarantine": result.output("validate", "quarantine") / "quarantine.parquet",
        "validation report": result.output("validate", "report"),
        "run folder": result.root,
        "log": log,
    })
    _print_model_summary(console, result.output("train", "model") / "metrics.json",
                         result.output("promote", "decision"))


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
    out = Home.at(home).ensure().validation_report(stamp)
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
@click.option("--image", default=None,
              help="Image the steps run on [default: $SHOPREC_IMAGE, else the built-in default].")
def compile_command(output_dir: Path | None, image: str | None) -> None:
    """Compile the pipelines to KFP YAML for a cluster."""
    from shoprec.pipelines.compile import COMPILED_DIR, compile_all

    for path in compile_all(output_dir or COMPILED_DIR, image):
        click.echo(f"wrote {path}")


@cli.command()
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


REGISTRY_OPTION = click.option(
    "--registry", "registry_uri", envvar="SHOPREC_REGISTRY", default=None,
    help="Registry folder or object-store URL (s3://...) [default: $SHOPREC_REGISTRY or the "
         "home's registry/].",
)


def _registry(registry_uri: str | None, home: Path | None) -> Any:
    from shoprec.lifecycle.registry import Registry

    return Registry(registry_uri) if registry_uri else Registry.from_home(Home.at(home))


@cli.group()
def models() -> None:
    """Model registry: versions, the production alias, promotions and rollbacks."""


@models.command(name="list")
@REGISTRY_OPTION
@HOME_OPTION
def models_list(registry_uri: str | None, home: Path | None) -> None:
    """Every registered version with its metrics; the production one is marked."""
    registry = _registry(registry_uri, home)
    production = registry.production()
    table = Table(title=f"Models in {registry.uri}")
    for column in ("", "version", "kind", "registered (UTC)", "NDCG@10", "coverage", "note"):
        table.add_column(column, justify="right" if column in ("NDCG@10", "coverage") else "left")
    for v in registry.versions():
        metric = lambda name: f"{v.metrics[name]:.4f}" if isinstance(v.metrics.get(name), float) else ""  # noqa: E731
        table.add_row("production" if v.version == production else "", v.version, v.kind,
                      v.registered_at[:19].replace("T", " "), metric("NDCG@10"), metric("coverage"), v.note)
    Console(file=sys.stdout, width=160).print(table)
    if production is None:
        click.echo("no production version yet")


@models.command(name="promote")
@click.argument("version")
@click.option("--reason", required=True, help="Why (kept in the registry's history).")
@REGISTRY_OPTION
@HOME_OPTION
def models_promote(version: str, reason: str, registry_uri: str | None, home: Path | None) -> None:
    """Make VERSION production by hand (a manual override of the gate, recorded as such)."""
    registry = _registry(registry_uri, home)
    event = registry.promote(version, reason=reason, actor="manual (shoprec models promote)")
    click.echo(f"production: {event.previous or 'none'} -> {event.version} ({event.reason})")


@models.command(name="rollback")
@click.option("--reason", default="manual rollback", show_default=True,
              help="Why (kept in the registry's history).")
@REGISTRY_OPTION
@HOME_OPTION
def models_rollback(reason: str, registry_uri: str | None, home: Path | None) -> None:
    """Point production back at the version before the current one."""
    event = _registry(registry_uri, home).rollback(reason=reason, actor="manual (shoprec models rollback)")
    click.echo(f"production: {event.previous} -> {event.version} (rolled back: {event.reason})")


@models.command(name="history")
@REGISTRY_OPTION
@HOME_OPTION
def models_history(registry_uri: str | None, home: Path | None) -> None:
    """Every promotion and rollback, oldest first."""
    for e in _registry(registry_uri, home).history():
        click.echo(f"{e.at[:19].replace('T', ' ')}  {e.action:<8} {e.previous or '-'} -> {e.version}"
                   f"  by {e.actor}: {e.reason}")


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="Transformer port (what shops call: V1 and V2).")
@click.option("--predictor-port", type=click.IntRange(1, 65535), default=8081, show_default=True,
              help="Predictor port.")
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Serve this bundle instead of the registry's production version.")
@click.option("--items", "items_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Items table with titles (item_id, title, category) for the answers.")
@click.option("--feature-timeout-ms", type=click.FloatRange(min=1), default=50.0, show_default=True,
              help="Answer from the fallback when Feast takes longer than this.")
@REGISTRY_OPTION
@HOME_OPTION
def serve(port: int, predictor_port: int, model_dir: Path | None, items_path: Path | None,
          feature_timeout_ms: float, registry_uri: str | None, home: Path | None) -> None:
    """Serve recommendations locally: transformer (Feast features, fallbacks, reasons) in front
    of the predictor (the production model); Ctrl-C or SIGTERM stops both gracefully."""
    import signal
    import threading

    from shoprec.kserve.process import running_servers

    home = Home.at(home)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with running_servers(home, registry=registry_uri or None, model_dir=model_dir, transformer_port=port,
                         predictor_port=predictor_port, items=items_path,
                         feature_timeout_ms=feature_timeout_ms) as urls:
        click.echo(f"transformer {urls.transformer}  (V1 /v1/models/shoprec:predict, V2 /v2/models/shoprec/infer)")
        click.echo(f"predictor   {urls.predictor}")
        click.echo(f"prediction log: {home.predictions}")
        stop.wait()
        click.echo("stopping ...")
    click.echo("stopped")


@cli.command()
@click.option("--user", "user_id", default=None, help="A user id: recommendations from the endpoint.")
@click.option("--items", "items", default=None, help="Comma-separated item ids (a cart): bought together.")
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--category", default=None, help="Only items of this category.")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The transformer (shoprec serve).")
@click.option("--batch", "batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Users file (one id a line, or CSV/Parquet with user_id): score all in process.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --batch: where to write the Parquet (user_id, rank, item_id, score, reason, fallback).")
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="With --batch: this bundle instead of the registry's production version.")
@REGISTRY_OPTION
@HOME_OPTION
def recommend(user_id: str | None, items: str | None, k: int, category: str | None, url: str,
              batch_file: Path | None, out: Path | None, model_dir: Path | None, registry_uri: str | None,
              home: Path | None) -> None:
    """Recommendations for one user or cart (from the running endpoint), or for a users file."""
    if sum(x is not None for x in (user_id, items, batch_file)) != 1:
        raise click.UsageError("give exactly one of --user, --items or --batch")
    if batch_file is not None:
        if out is None:
            raise click.UsageError("--batch needs --out recs.parquet")
        _recommend_batch(batch_file, out, k, model_dir, registry_uri, home)
        return
    import httpx

    instance: dict[str, Any] = {"user_id": user_id} if user_id is not None else {
        "items": [i.strip() for i in (items or "").split(",") if i.strip()]}
    instance["k"] = k
    if category:
        instance["category"] = category
    try:
        response = httpx.post(f"{url.rstrip('/')}/v1/models/shoprec:predict", json={"instances": [instance]},
                              timeout=30)
    except httpx.TransportError as exc:
        raise ShoprecError(f"no endpoint at {url} ({type(exc).__name__}); start it with `shoprec serve`") from exc
    if response.status_code != 200:
        raise ShoprecError(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
    prediction = response.json()["predictions"][0]
    who = f"user {user_id}" if user_id is not None else f"cart {instance['items']}"
    table = Table(title=f"Top {k} for {who} (model {prediction['model_version']}, "
                        f"fallback: {prediction['fallback'] or 'none'})")
    for column in ("#", "item", "score", "title", "category", "why"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, item in enumerate(prediction["items"], start=1):
        table.add_row(str(rank), item["item_id"], f"{item['score']:.4f}", item.get("title", ""),
                      item.get("category", ""), item["reason"])
    Console(file=sys.stdout, width=160).print(table)


def _recommend_batch(batch_file: Path, out: Path, k: int, model_dir: Path | None, registry_uri: str | None,
                     home: Path | None) -> None:
    from rich.progress import Progress

    from shoprec.serving.batch import read_users, recommend_users
    from shoprec.serving.catalog import load_catalog
    from shoprec.features.store import FeatureStoreSettings
    from shoprec.models.inference import BundleRecommender
    from shoprec.serving.transformer import FeastSDKSource, TransformerCore

    home = Home.at(home)
    users = read_users(batch_file)
    if model_dir is not None:
        recommender, version = BundleRecommender.from_bundle(model_dir), model_dir.name
    else:
        registry = _registry(registry_uri, home)
        version = registry._require_production()
        recommender = registry.load(version)
    settings = FeatureStoreSettings.from_env(home)
    data_items = home.data / "items.parquet"
    catalog = load_catalog(home.features if home.item_stats.exists() else None,
                           data_items if data_items.exists() else None)
    core = TransformerCore(catalog, FeastSDKSource(settings), timeout_s=120.0)
    with Progress(console=Console(file=sys.stderr)) as progress:
        task = progress.add_task(f"scoring {len(users):,} users", total=len(users))
        frame = recommend_users(users, recommender, version, core, k,
                                on_progress=lambda n: progress.advance(task, n))
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    fallbacks = frame.drop_duplicates("user_id")["fallback"].fillna("model").value_counts().to_dict()
    click.echo(f"wrote {len(frame):,} rows for {len(users):,} users to {out} (model {version}; answered by: "
               + ", ".join(f"{name} {count}" for name, count in fallbacks.items()) + ")")


@cli.command()
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


@cli.command()
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


def _step_order(pipeline: Any) -> list[str]:
    """The pipeline's task names in dependency order; a condition shows as its inner tasks + "?"."""
    spec = pipeline.pipeline_spec
    tasks = spec.root.dag.tasks
    ordered: list[str] = []
    while len(ordered) < len(tasks):
        ready = [name for name, task in tasks.items() if name not in ordered
                 and all(dep in ordered for dep in task.dependent_tasks)]
        ordered += sorted(ready)
    shown = []
    for name in ordered:
        inner = spec.components[tasks[name].component_ref.name].dag.tasks
        shown += [f"{task}?" for task in inner] if tasks[name].trigger_policy.condition else [name]
    return shown


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


def _print_model_summary(console: Console, metrics_path: Path, decision_path: Path) -> None:
    """The candidate against the baselines, and what the promotion gate decided."""
    if metrics_path.exists():
        metrics = _read_json(metrics_path)
        k = metrics.get("k", 10)
        table = Table(title=f"Models (test window, full ranking, k={k})")
        for column in ("model", f"HR@{k}", f"NDCG@{k}", "95% CI", "coverage"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for name, result in metrics.get("models", {}).items():
            values = result["metrics"]
            low, high = result.get("intervals", {}).get(f"NDCG@{k}", (float("nan"),) * 2)
            label = f"[bold]{name}[/]" if name == metrics.get("primary") else name
            table.add_row(label, f"{values[f'HR@{k}']:.4f}", f"{values[f'NDCG@{k}']:.4f}",
                          f"{low:.3f}-{high:.3f}", f"{values.get('coverage', float('nan')):.3f}")
        console.print(table)
    if decision_path.exists():
        decision = _read_json(decision_path)
        verdict = "[green]PROMOTED[/]" if decision["promote"] else "[yellow]not promoted[/]"
        console.print(f"Promotion gate: {verdict} (version {decision.get('version')})")
        for reason in decision.get("reasons", []):
            console.print(f"  - {reason}")


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
