"""The summary tables `shoprec run` and `shoprec validate` print when they are done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def read_json(path: Path) -> dict[str, Any]:
    """A JSON report written by a pipeline step (validation report, metrics, promotion decision)."""
    return json.loads(path.read_text())


def print_validation_summary(console: Console, report: dict[str, Any], outputs: dict[str, Path]) -> None:
    """Rows in, clean, quarantined by reason (from a validation report's dict), and where
    everything is: one row per `outputs` entry (name -> path)."""
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
        where.add_row(name, short_path(path))
    console.print(where)


def print_model_summary(console: Console, metrics_path: Path, decision_path: Path) -> None:
    """The candidate against the baselines (the bundle's metrics.json), and what the promotion
    gate decided (its decision JSON); each part is left out when its file does not exist."""
    if metrics_path.exists():
        metrics = read_json(metrics_path)
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
        decision = read_json(decision_path)
        verdict = "[green]PROMOTED[/]" if decision["promote"] else "[yellow]not promoted[/]"
        console.print(f"Promotion gate: {verdict} (version {decision.get('version')})")
        for reason in decision.get("reasons", []):
            console.print(f"  - {reason}")


def print_steps_summary(console: Console, steps: list[tuple[str, str, float | None, float | None]]) -> None:
    """One row per step: (name, status, seconds, peak resident memory of its process in MB)."""
    table = Table(title="Steps")
    for column in ("step", "status", "seconds", "peak memory"):
        table.add_column(column, justify="left" if column in ("step", "status") else "right")
    for name, status, seconds, peak_mb in steps:
        table.add_row(name, status, "-" if seconds is None else f"{seconds:.1f}",
                      "-" if peak_mb is None else f"{peak_mb / 1024:.2f} GB")
    console.print(table)


def short_path(path: Path) -> str:
    """A path relative to the current folder when it lies inside it (tables stay readable)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
