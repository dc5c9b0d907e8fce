"""The `models` group: the registry's versions, the production alias, promotions and rollbacks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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


def cluster_options(command: Any) -> Any:
    """Where and how `--cluster` rolls the change out (credentials: the kube config)."""
    for option in reversed([
        click.option("--cluster", is_flag=True,
                     help="Also roll it out on Kubernetes: apply the InferenceService through the API "
                          "and wait for the new revision before moving the alias (a failure restores "
                          "the previous spec and leaves the alias)."),
        click.option("--namespace", default="shoprec", show_default=True, help="The InferenceService's namespace."),
        click.option("--name", "service", default="shoprec", show_default=True, help="The InferenceService."),
        click.option("--context", default=None, help="kube config context [default: the current one]."),
        click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=600.0, show_default=True,
                     help="Seconds to wait for each step of the rollout."),
        click.option("--poll", "poll_s", type=click.FloatRange(min=0), default=5.0, show_default=True,
                     help="Seconds between two reads of the service's status."),
    ]):
        command = option(command)
    return command


def _cluster_api(context: str | None) -> Any:
    from shoprec.kserve.cluster import KubernetesInferenceServices, api_client_from_environment

    return KubernetesInferenceServices(api_client_from_environment(context))


def _echo_rollout(report: Any) -> None:
    for step in report.steps:
        click.echo(f"  {report.namespace}/{report.name}: {step}")


@models.command(name="promote")
@click.argument("version")
@click.option("--reason", required=True, help="Why (kept in the registry's history).")
@cluster_options
@click.option("--canary", "canary_percent", type=click.IntRange(0, 100), default=10, show_default=True,
              help="With --cluster in serverless mode: the new revision's share before it gets 100% "
                   "(100: no canary). Raw mode has no canary: a rolling update.")
@click.option("--canary-hold", "canary_hold_s", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds the canary must stay Ready before it gets all the traffic.")
@click.option("--gitops", "gitops_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The GitOps path (render only): write the InferenceService YAML here for a GitOps "
                   "repo or `kubectl apply`, and move the alias; nothing is applied.")
@REGISTRY_OPTION
@HOME_OPTION
def models_promote(version: str, reason: str, cluster: bool, namespace: str, service: str, context: str | None,
                   timeout_s: float, poll_s: float, canary_percent: int, canary_hold_s: float, gitops_out: Path | None,
                   registry_uri: str | None, home: Path | None) -> None:
    """Make VERSION production by hand (a manual override of the gate, recorded as such)."""
    registry = open_registry(registry_uri, home)
    actor = "manual (shoprec models promote)"
    if cluster and gitops_out:
        raise click.UsageError("--cluster applies the service, --gitops only renders it: choose one")
    if cluster:
        from shoprec.kserve.manifests import render_inference_service
        from shoprec.lifecycle.deployment import RolloutPolicy, deploy_cluster

        policy = RolloutPolicy(timeout_s=timeout_s, poll_s=poll_s, canary_hold_s=canary_hold_s,
                               canary_traffic_percent=None if canary_percent >= 100 else canary_percent)
        done = deploy_cluster(registry, version, reason=reason, render=render_inference_service,
                              api=_cluster_api(context), actor=actor, name=service, namespace=namespace,
                              policy=policy)
        _echo_rollout(done.rollout)
        event = done.event
    elif gitops_out:
        from shoprec.kserve.manifests import render_inference_service
        from shoprec.lifecycle.deployment import deploy_gitops

        event = deploy_gitops(registry, version, gitops_out, reason=reason, render=render_inference_service,
                              namespace=namespace, decision=None,
                              canary_traffic_percent=None if canary_percent >= 100 else canary_percent)
        click.echo(f"rendered (not applied): {gitops_out}")
    else:
        event = registry.promote(version, reason=reason, actor=actor)
    click.echo(f"production: {event.previous or 'none'} -> {event.version} ({event.reason})")


@models.command(name="rollback")
@click.option("--reason", default="manual rollback", show_default=True,
              help="Why (kept in the registry's history).")
@cluster_options
@REGISTRY_OPTION
@HOME_OPTION
def models_rollback(reason: str, cluster: bool, namespace: str, service: str, context: str | None,
                    timeout_s: float, poll_s: float, registry_uri: str | None, home: Path | None) -> None:
    """Point production back at the version before the current one (with --cluster: serve it
    again first, no canary)."""
    registry = open_registry(registry_uri, home)
    actor = "manual (shoprec models rollback)"
    if cluster:
        from shoprec.kserve.manifests import render_inference_service
        from shoprec.lifecycle.deployment import RolloutPolicy, rollback_cluster

        done = rollback_cluster(registry, reason=reason, render=render_inference_service,
                                api=_cluster_api(context), actor=actor, name=service, namespace=namespace,
                                policy=RolloutPolicy(timeout_s=timeout_s, poll_s=poll_s))
        _echo_rollout(done.rollout)
        event = done.event
    else:
        event = registry.rollback(reason=reason, actor=actor)
    click.echo(f"production: {event.previous} -> {event.version} (rolled back: {event.reason})")


@models.command(name="history")
@REGISTRY_OPTION
@HOME_OPTION
def models_history(registry_uri: str | None, home: Path | None) -> None:
    """Every promotion and rollback, oldest first."""
    for e in open_registry(registry_uri, home).history():
        click.echo(f"{e.at[:19].replace('T', ' ')}  {e.action:<8} {e.previous or '-'} -> {e.version}"
                   f"  by {e.actor}: {e.reason}")
