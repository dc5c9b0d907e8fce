"""Serving commands: `serve` (both servers here), `recommend` (one user, a cart or a users file),
the `events` group (live events into the online store) and `demo` (a small home to serve)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from shoprec.cli.options import HOME_OPTION, REGISTRY_OPTION, open_registry
from shoprec.errors import ShoprecError
from shoprec.home import Home


@click.group()
def events() -> None:
    """Live events for the feature store."""


@events.command(name="push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@HOME_OPTION
def events_push(file: Path, home: Path | None) -> None:
    """Push the events in FILE (CSV or Parquet: user_id, item_id, timestamp; session_id
    optional) to the online store."""
    from shoprec.data.loaders import load_event_files
    from shoprec.features.online import push_events
    from shoprec.features.settings import FeatureStoreSettings
    from shoprec.features.store import open_store

    settings = FeatureStoreSettings.from_env(home)
    summary = push_events(open_store(settings), load_event_files(file).events, settings)
    click.echo(f"pushed {summary.events} event(s) of {summary.users} user(s) to {settings.describe()}")


@click.command()
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


@click.command()
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
    from shoprec.features.settings import FeatureStoreSettings
    from shoprec.models.inference import BundleRecommender
    from shoprec.serving.feature_sources import FeastSDKSource
    from shoprec.serving.transformer import TransformerCore

    home = Home.at(home)
    users = read_users(batch_file)
    if model_dir is not None:
        recommender, version = BundleRecommender.from_bundle(model_dir), model_dir.name
    else:
        registry = open_registry(registry_uri, home)
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


@click.command()
@HOME_OPTION
@click.option("--users", type=click.IntRange(min=2), default=40, show_default=True,
              help="MovieLens-100K users in the slice.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Training epochs of the small SASRec (on CPU).")
def demo(home: Path | None, users: int, epochs: int) -> None:
    """Build a small demo home to serve: an ML-100K slice's features in the online store and a
    small SASRec trained on it, registered and promoted to production."""
    from shoprec.cli.demo import build_demo_home

    home = Home.at(home)
    if home.root.exists() and any(home.root.iterdir()):
        raise ShoprecError(f"{home.root} is not empty: `shoprec demo` needs a new folder (--home)")
    console = Console(file=sys.stdout)
    with console.status(f"building a demo home in {home.root} ...", spinner="dots"):
        built = build_demo_home(home.root, users=users, epochs=epochs)
    root, items = shlex.quote(str(home.root)), shlex.quote(str(built.items_path))
    user = str(built.sequences.users[0])
    body = shlex.quote(f'{{"instances": [{{"user_id": "{user}", "k": 5}}]}}')
    click.echo(f"demo home {home.root}: {len(built.sequences.users)} users, "
               f"{built.vocab.n_items} items, model {built.version} in production")
    click.echo("next, serve it (Ctrl-C stops):")
    click.echo(f"  shoprec serve --home {root} --items {items}")
    click.echo("and ask it, from another shell:")
    click.echo(f"  curl -s -H 'Content-Type: application/json' "
               f"http://127.0.0.1:8080/v1/models/shoprec:predict -d {body}")
    click.echo(f"  shoprec recommend --user {user}")
