"""Launchers for the monitoring trigger, built where KFP may be imported (not in the library)."""

from __future__ import annotations

from typing import Any

from shoprec.home import Home
from shoprec.monitoring.trigger import KfpLauncher, Launcher, LocalLauncher


def launcher_for(
    mode: str, pipeline_ref: str, arguments: dict[str, Any], home: Home, kfp_host: str = ""
) -> Launcher:
    """The launcher of `mode` ("local" | "kfp") for the pipeline `module:function`."""
    import importlib

    from shoprec.errors import MonitoringError

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
