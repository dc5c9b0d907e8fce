"""Start the churn server as a process on localhost for tests and local use (the same helpers
as the recommender's servers: free port, readiness poll, graceful stop)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from shoprec.churn.bundle import CHURN_MODEL_NAME
from shoprec.kserve.process import running_model_server


@contextlib.contextmanager
def running_churn_server(registry: str | Path, home: str | Path, *, port: int | None = None,
                         env: dict[str, str] | None = None, extra: Sequence[str] = (),
                         timeout_s: float = 90.0) -> Iterator[str]:
    """Run `python -m shoprec.kserve.churn --registry R --home H [extra]` (it follows the churn
    model's production alias; extra: e.g. `--poll_seconds 0.2`) until the block ends; yields its
    base URL once ready."""
    with running_model_server("shoprec.kserve.churn", ["--registry", str(registry), "--home", str(home), *extra],
                              CHURN_MODEL_NAME, "the churn server", port=port, env=env or {},
                              timeout_s=timeout_s) as base:
        yield base
