"""Helpers the steps call while they run (inside the task's process): no KFP import here,
since a running task only has the runtime part of kfp.dsl."""

from __future__ import annotations

from typing import Any


def log_peak_memory(metrics: Any) -> float:
    """Log this step's peak resident memory as `peak_rss_mb` and its CPU time as `cpu_seconds`
    into its Output[Metrics]; return the peak.

    Call it last in a component, so everything the step loaded counts. The peak is the step
    process's own high-water mark (`VmHWM` in /proc/self/status on Linux; `ru_maxrss`
    elsewhere, which on Linux would also carry the size of the process that forked it). CPU
    time (user + system, the step and the subprocesses it waited for) says what a step costs
    when wall time is inflated by other work sharing the cores. Subprocesses the step started
    and waited for (a server it checked, a tool it ran) are logged apart, as
    `peak_rss_children_mb` (the largest one), when there were any: an upper bound, since Linux
    counts a child forked from a large process at that process's size.
    """
    import resource
    import sys

    unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    own_usage = resource.getrusage(resource.RUSAGE_SELF)
    child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = _vm_hwm_mb()
    if own is None:
        own = own_usage.ru_maxrss * unit / 2**20
    metrics.log_metric("peak_rss_mb", round(own, 1))
    cpu = own_usage.ru_utime + own_usage.ru_stime + child_usage.ru_utime + child_usage.ru_stime
    metrics.log_metric("cpu_seconds", round(cpu, 1))
    children = child_usage.ru_maxrss * unit / 2**20
    if children > 0:
        metrics.log_metric("peak_rss_children_mb", round(children, 1))
    return round(own, 1)


def _vm_hwm_mb() -> float | None:
    """This process's peak resident memory since it started its program (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def rollout_policy_from_env(canary_traffic_percent: int) -> Any:
    """The cluster rollout policy of a deploy step (`shoprec.lifecycle.deployment.RolloutPolicy`),
    from the shoprec-settings ConfigMap: $SHOPREC_DEPLOY_TIMEOUT_S (default 600) bounds each wait,
    $SHOPREC_DEPLOY_POLL_S (default 5) is the time between status reads, $SHOPREC_CANARY_HOLD_S
    (default 60) how long a canary must stay Ready, $SHOPREC_KSERVE_DEPLOYMENT_MODE forces a mode
    (default: read from the service). canary_traffic_percent >= 100: no canary."""
    import os

    from shoprec.lifecycle.deployment import RolloutPolicy

    return RolloutPolicy(timeout_s=float(os.environ.get("SHOPREC_DEPLOY_TIMEOUT_S") or 600),
                         poll_s=float(os.environ.get("SHOPREC_DEPLOY_POLL_S") or 5),
                         canary_hold_s=float(os.environ.get("SHOPREC_CANARY_HOLD_S") or 60),
                         canary_traffic_percent=None if canary_traffic_percent >= 100 else canary_traffic_percent,
                         mode=os.environ.get("SHOPREC_KSERVE_DEPLOYMENT_MODE") or None)
