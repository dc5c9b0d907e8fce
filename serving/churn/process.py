"""Start the churn server as a process on localhost for tests and local use (the same helpers
as the recommender's servers: free port, readiness poll, graceful stop)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shoprec.churn.bundle import CHURN_MODEL_NAME
from shoprec.kserve.process import free_port, stop, wait_ready


@contextlib.contextmanager
def running_churn_server(registry: str | Path, home: str | Path, *, port: int | None = None,
                         env: dict[str, str] | None = None, timeout_s: float = 90.0) -> Iterator[str]:
    """Run `python -m shoprec.kserve.churn` until the block ends; yields its base URL once ready."""
    port = port or free_port()
    command = [sys.executable, "-m", "shoprec.kserve.churn", "--registry", str(registry),
               "--home", str(home), "--http_port", str(port), "--enable_grpc", "false"]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(process, f"{base}/v1/models/{CHURN_MODEL_NAME}", timeout_s, log, "the churn server")
            yield base
        finally:
            stop(process)
