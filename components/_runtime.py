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
