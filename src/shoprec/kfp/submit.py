"""Submit the compiled pipelines to a Kubeflow Pipelines 2.x cluster with `kfp.Client`.

A run of the training pipeline (`submit_run`), or a recurring run of the monitoring pipeline on
a cron schedule (`schedule_run`). Parameters arrive as `key=value` strings and are checked and
typed against the compiled pipeline's own parameter list, so a typo is an error here, not a
failed run on the cluster. The token comes from $KF_PIPELINES_TOKEN when set, else kfp.Client
finds one itself (kube config, in-cluster service account); it is never printed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from shoprec.errors import ShoprecError

TOKEN_ENV = "KF_PIPELINES_TOKEN"
UI_ENV = "KF_PIPELINES_UI_ENDPOINT"
DEFAULT_EXPERIMENT = "shoprec"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class Submitted:
    """What the cluster answered: the run (or recurring run) id, its page, and a final state."""

    kind: str  # "run" | "recurring run"
    id: str
    url: str
    state: str | None = None


def pipeline_parameters(package: Path) -> dict[str, str]:
    """The compiled pipeline's parameters: name -> KFP type (STRING, NUMBER_INTEGER, ...)."""
    spec = next(iter(yaml.safe_load_all(package.read_text(encoding="utf-8"))))
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {name: entry["parameterType"] for name, entry in declared.items()}


def parse_params(pairs: Iterable[str], package: Path) -> dict[str, Any]:
    """`key=value` strings -> typed arguments of the pipeline in `package` (unknown keys and values
    of the wrong type are errors naming the parameter)."""
    declared = pipeline_parameters(package)
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ShoprecError(f"--param must be key=value, got {pair!r}")
        if key not in declared:
            raise ShoprecError(f"{package.name} has no parameter {key!r}; it has: {', '.join(sorted(declared))}")
        arguments[key] = _typed(key, value, declared[key])
    return arguments


def _typed(key: str, value: str, kind: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(value)
        if kind == "NUMBER_DOUBLE":
            return float(value)
        if kind == "BOOLEAN":
            if value.lower() in _TRUE + _FALSE:
                return value.lower() in _TRUE
            raise ValueError(value)
    except ValueError:
        raise ShoprecError(f"parameter {key!r} is {kind}, got {value!r}") from None
    return value


def cron_for_kfp(expression: str) -> str:
    """KFP schedules take six cron fields (seconds first): a usual five-field one gets '0 '."""
    fields = expression.split()
    if len(fields) == 5:
        return "0 " + " ".join(fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise ShoprecError(f"--schedule needs a cron expression of 5 or 6 fields, got {expression!r}")


def client_for(host: str, token: str | None = None) -> Any:
    """A kfp.Client for `host`; the token from the argument or $KF_PIPELINES_TOKEN, else kfp's own."""
    import warnings

    import kfp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*only works with Kubeflow Pipeline v2.*")
        return kfp.Client(host=host, existing_token=token or os.environ.get(TOKEN_ENV) or None)


def _page(host: str, path: str) -> str:
    return f"{(os.environ.get(UI_ENV) or host).rstrip('/')}/#/{path}"


def submit_run(host: str, package: Path, arguments: dict[str, Any], *, experiment: str = DEFAULT_EXPERIMENT,
               run_name: str | None = None, service_account: str | None = None, wait: bool = False,
               timeout_s: int = 6 * 3600, client: Any = None) -> Submitted:
    """Create one run of the compiled `package`; with `wait`, block until it ends (a run that does
    not succeed is an error carrying its state and page)."""
    client = client or client_for(host)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name, experiment_name=experiment,
        service_account=service_account)
    submitted = Submitted("run", result.run_id, _page(host, f"runs/details/{result.run_id}"))
    if not wait:
        return submitted
    final = client.wait_for_run_completion(result.run_id, timeout=timeout_s)
    state = str(final.state)
    if state.upper() != "SUCCEEDED":
        raise ShoprecError(f"run {result.run_id} ended {state}: {submitted.url}")
    return Submitted("run", result.run_id, submitted.url, state)


def schedule_run(host: str, package: Path, arguments: dict[str, Any], cron: str, *,
                 experiment: str = DEFAULT_EXPERIMENT, name: str | None = None,
                 service_account: str | None = None, client: Any = None) -> Submitted:
    """Create a recurring run of `package` on `cron` (one at a time, no catch-up of missed runs)."""
    client = client or client_for(host)
    experiment_id = client.create_experiment(name=experiment).experiment_id
    recurring = client.create_recurring_run(
        experiment_id=experiment_id, job_name=name or f"{package.stem} {cron}",
        cron_expression=cron_for_kfp(cron), max_concurrency=1, no_catchup=True, params=arguments,
        pipeline_package_path=str(package), service_account=service_account)
    return Submitted("recurring run", recurring.recurring_run_id,
                     _page(host, f"recurringrun/details/{recurring.recurring_run_id}"))
