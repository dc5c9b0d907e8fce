"""Options shared by several `shoprec` commands, and the registry they name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shoprec.config import TIMESTAMP_UNITS
from shoprec.home import Home

HOME_OPTION = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Home folder for runs, reports, features and the registry "
         "[default: $SHOPREC_HOME or ./shoprec-home].",
)

REGISTRY_OPTION = click.option(
    "--registry", "registry_uri", envvar="SHOPREC_REGISTRY", default=None,
    help="Registry folder or object-store URL (s3://...) [default: $SHOPREC_REGISTRY or the "
         "home's registry/].",
)


def check_date_time(context: click.Context, parameter: click.Parameter, value: str) -> str:
    """A --window-start / --window-end value checked where it is given: a date-time pandas
    reads ('2026-03-01', '2026-03-01T12:00:00Z') or '' (open). Kept as text, as the pipeline
    parameters carry it; a bad one is a one-line usage error naming the option, never a
    pandas traceback from the run."""
    if not value:
        return value
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise click.BadParameter(f"{value[:60]!r} is not a date-time (e.g. 2026-03-01 or "
                                 f"2026-03-01T12:00:00Z; '' for open): {str(exc)[:120]}",
                                 context, parameter) from exc
    if pd.isna(stamp):  # "nan", "NaT": pandas reads them as no time at all
        raise click.BadParameter(f"{value[:60]!r} is not a date-time; give '' for an open window",
                                 context, parameter)
    return value


def validation_options(command: Any) -> Any:
    """The gate's soft-check settings, shared by `run` and `validate`."""
    command = click.option("--timestamp-unit", type=click.Choice(TIMESTAMP_UNITS), default="auto",
                           show_default=True,
                           help="Unit of epoch-number timestamps; auto detects it from their "
                                "magnitude (the report says which).")(command)
    command = click.option("--max-quarantine-share", type=click.FloatRange(0, 1), default=0.01,
                           show_default=True,
                           help="Future-dated events, unknown items, fractional ids and bad "
                                "quantities are quarantined; above this share of events, the "
                                "run stops.")(command)
    command = click.option("--window-end", default="", show_default="open", callback=check_date_time,
                           help="Quarantine events after this date-time (UTC).")(command)
    command = click.option("--window-start", default="1995-01-01", show_default=True, callback=check_date_time,
                           help="Quarantine events before this date-time (UTC); '' for open.")(command)
    command = click.option("--max-events-per-user-day", type=click.IntRange(min=1), default=1000,
                           show_default=True,
                           help="Bot ceiling: a user above it on any one day is quarantined.")(command)
    return command


def open_registry(registry_uri: str | None, home: Path | None) -> Any:
    """The registry of --registry when given, else the home's (--home, $SHOPREC_HOME, ./shoprec-home)."""
    from shoprec.lifecycle.registry import Registry

    return Registry(registry_uri) if registry_uri else Registry.from_home(Home.at(home))
