"""Launchers for the monitoring trigger: the shell side of `shoprec.monitoring.trigger`, which
decides and records but never starts a pipeline itself."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoprec.errors import MonitoringError
from shoprec.home import Home
from shoprec.monitoring.trigger import TRIGGER_PARAMETER, Launcher


def launcher_for(
    mode: str, pipeline_ref: str, arguments: dict[str, Any], home: Home, kfp_host: str = ""
) -> Launcher:
    """The launcher of `mode` ("local" | "kfp") for the pipeline `module:function`."""
    if mode == "local":
        return LocalLauncher(pipeline_ref, arguments, home.runs)
    module_name, _, attribute = pipeline_ref.partition(":")
    try:
        pipeline = getattr(importlib.import_module(module_name), attribute or "training_pipeline")
    except (ImportError, AttributeError) as exc:
        raise MonitoringError(f"training pipeline {pipeline_ref!r} cannot be imported: {exc}") from exc
    if mode == "kfp":
        import kfp

        return KfpLauncher(kfp.Client(host=kfp_host or None), pipeline, arguments)
    raise MonitoringError(f"trigger mode must be 'local' or 'kfp', got {mode!r}")


class LocalLauncher:
    """Runs the training pipeline (`module:function`) here through kfp.local, in a fresh
    Python process (a kfp.local task cannot define components in-process: kfp.dsl is only
    partly there inside a task: see _KFP_RUNTIME below), `python -m shoprec.kfp.retrain`.
    The report id goes into the run's `lineage.json` and, when the pipeline has a
    `triggered_by` parameter, into its arguments."""

    def __init__(self, pipeline_ref: str, arguments: dict[str, Any], pipeline_root: Path) -> None:
        self.pipeline_ref, self.arguments, self.pipeline_root = pipeline_ref, dict(arguments), pipeline_root

    def launch(self, report_id: str) -> dict[str, Any]:
        request = json.dumps({"pipeline": self.pipeline_ref, "arguments": self.arguments,
                              "root": str(self.pipeline_root), "report_id": report_id})
        # Inside a KFP task _KFP_RUNTIME=true strips kfp.dsl to the runtime parts; the new
        # process defines and runs pipelines, so it needs the whole SDK.
        env = {k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"}
        done = subprocess.run([sys.executable, "-m", "shoprec.kfp.retrain", request],
                              capture_output=True, text=True, env=env)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise MonitoringError(f"local training run of {self.pipeline_ref} did not start: "
                                  f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return json.loads(lines[-1])


class KfpLauncher:
    """Creates a run on a Kubeflow Pipelines cluster through the KFP client; the report id is
    in the run name and, when the pipeline has a `triggered_by` parameter, its arguments."""

    def __init__(self, client: Any, pipeline: Callable[..., Any], arguments: dict[str, Any],
                 experiment_name: str = "shoprec-retraining") -> None:
        self.client, self.pipeline, self.arguments = client, pipeline, dict(arguments)
        self.experiment_name = experiment_name

    def launch(self, report_id: str) -> dict[str, Any]:
        arguments = with_lineage(self.arguments, report_id, pipeline_parameters(self.pipeline))
        run_name = f"retrain-{report_id.replace('/', '-')}"
        result = self.client.create_run_from_pipeline_func(
            self.pipeline, arguments=arguments, run_name=run_name, experiment_name=self.experiment_name)
        return {"mode": "kfp", "run_id": getattr(result, "run_id", None), "run_name": run_name,
                "triggered_by": report_id}


def pipeline_parameters(pipeline: Callable[..., Any]) -> set[str]:
    """Input parameter names of a KFP pipeline function (empty when it is not one)."""
    spec = getattr(pipeline, "pipeline_spec", None)
    if spec is None:
        return set()
    return set(spec.root.input_definitions.parameters.keys())


def with_lineage(arguments: dict[str, Any], report_id: str, parameters: set[str]) -> dict[str, Any]:
    if TRIGGER_PARAMETER in parameters:
        return {**arguments, TRIGGER_PARAMETER: report_id}
    return dict(arguments)
