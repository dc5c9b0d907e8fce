"""`shoprec churn`: churn risk of one user (`--user`, repeatable) or of a campaign list
(`--batch FILE`), from the churn model's production version and the home's online store."""

from __future__ import annotations

from pathlib import Path

import click

from shoprec.cli.options import HOME_OPTION, REGISTRY_OPTION
from shoprec.home import Home


def read_campaign_list(path: Path) -> list[str]:
    """User ids from a CSV / Parquet with a user_id column, or a text file of one id a line."""
    import pandas as pd

    from shoprec import schema as S
    from shoprec.errors import DataSourceError

    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str)
    else:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if S.USER_ID not in frame:
        raise DataSourceError(f"{path} has no {S.USER_ID} column (columns: {list(frame.columns)})")
    return frame[S.USER_ID].astype(str).tolist()


@click.command()
@click.option("--user", "users", multiple=True, help="A user id (repeat for several).")
@click.option("--batch", "batch", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A campaign list: CSV/Parquet with user_id, or one id a line.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the scored list here (CSV, riskiest first) instead of printing it.")
@click.option("--version", default=None, help="A registered churn version [default: production].")
@REGISTRY_OPTION
@HOME_OPTION
def churn(users: tuple[str, ...], batch: Path | None, out: Path | None, version: str | None,
          registry_uri: str | None, home: Path | None) -> None:
    """Churn risk (probability of no purchase in the model's horizon) and its top drivers."""
    import json

    import pandas as pd

    from shoprec.churn.bundle import churn_registry, load_registered
    from shoprec.churn.scoring import score_users
    from shoprec.features.settings import FeatureStoreSettings
    from shoprec.features.store import open_store

    ids = list(users) + (read_campaign_list(batch) if batch else [])
    if not ids:
        raise click.UsageError("give --user U (repeatable) or --batch FILE")
    bundle, chosen = load_registered(churn_registry(registry_uri or Home.at(home).registry), version)
    settings = FeatureStoreSettings.from_env(home)
    answers = score_users(bundle, open_store(settings), ids, settings)
    if batch is None and out is None:
        for answer in answers:
            click.echo(json.dumps({**answer, "model_version": chosen}))
        return
    frame = pd.DataFrame({
        "user_id": [a["user_id"] for a in answers],
        "churn_probability": [a["churn_probability"] for a in answers],
        "drivers": [", ".join(d["feature"] for d in a["drivers"]) for a in answers],
        "known": [a["known"] for a in answers],
    }).sort_values("churn_probability", ascending=False, na_position="last", kind="stable")
    if out is not None:
        frame.to_csv(out, index=False)
        click.echo(f"scored {len(frame)} user(s) with shoprec-churn {chosen} -> {out}")
    else:
        click.echo(frame.to_csv(index=False), nl=False)
