"""Helpers the steps call while they run (inside the task's process): no KFP import here,
since a running task only has the runtime part of kfp.dsl."""

from __future__ import annotations

from typing import Any


def log_peak_memory(metrics: Any) -> float:
    """Log this step's peak resident memory as `peak_rss_mb` into its Output[Metrics]; return it.

    Call it last in a component: it reads the high-water mark of the step's own process
    (`getrusage(RUSAGE_SELF).ru_maxrss`: KiB on Linux, bytes on macOS), so everything the step
    loaded counts. Subprocesses the step started and waited for (a server it checked, a tool it
    ran) are logged apart, as `peak_rss_children_mb` (the largest one), when there were any: an
    upper bound, since Linux counts a child forked from a large process at that process's size.
    """
    import resource
    import sys

    unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20
    metrics.log_metric("peak_rss_mb", round(own, 1))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit / 2**20
    if children > 0:
        metrics.log_metric("peak_rss_children_mb", round(children, 1))
    return round(own, 1)
