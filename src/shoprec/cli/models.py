"""The `models` group: the registry's versions, the production alias, promotions and rollbacks."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shoprec.cli.options import HOME_OPTION, REGISTRY_OPTION, open_registry


@click.group()
def models() -> None:
    """Model registry: versions, the production alias, promotions and rollbacks."""


@models.command(name="list")
@REGISTRY_OPTION
@HOME_OPTION
def models_list(registry_uri: str | None, home: Path | None) -> None:
    """Every registered version with its metrics; the production one is marked."""
    registry = open_registry(registry_uri, home)
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
    registry = open_registry(registry_uri, home)
    event = registry.promote(version, reason=reason, actor="manual (shoprec models promote)")
    click.echo(f"production: {event.previous or 'none'} -> {event.version} ({event.reason})")


@models.command(name="rollback")
@click.option("--reason", default="manual rollback", show_default=True,
              help="Why (kept in the registry's history).")
@REGISTRY_OPTION
@HOME_OPTION
def models_rollback(reason: str, registry_uri: str | None, home: Path | None) -> None:
    """Point production back at the version before the current one."""
    event = open_registry(registry_uri, home).rollback(reason=reason, actor="manual (shoprec models rollback)")
    click.echo(f"production: {event.previous} -> {event.version} (rolled back: {event.reason})")


@models.command(name="history")
@REGISTRY_OPTION
@HOME_OPTION
def models_history(registry_uri: str | None, home: Path | None) -> None:
    """Every promotion and rollback, oldest first."""
    for e in open_registry(registry_uri, home).history():
        click.echo(f"{e.at[:19].replace('T', ' ')}  {e.action:<8} {e.previous or '-'} -> {e.version}"
                   f"  by {e.actor}: {e.reason}")
