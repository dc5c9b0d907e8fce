"""Start the two serving processes (predictor, then transformer) on localhost and stop them:
used by `shoprec serve`, the serving tests and benchmarks/serving.py alike."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shoprec.infra_check import MODEL_NAME, free_port, predictor_env, running_predictor, stop, wait_ready


@dataclass(frozen=True)
class ServingURLs:
    transformer: str
    predictor: str


def transformer_command(predictor_host: str, port: int, *, home: str | Path,
                        items: str | Path | None = None, feature_timeout_ms: float | None = None,
                        extra: Sequence[str] = ()) -> list[str]:
    command = [sys.executable, "-m", "serving.transformer", "--predictor_host", predictor_host,
               "--http_port", str(port), "--enable_grpc", "false", "--home", str(home)]
    if items:
        command += ["--items", str(items)]
    if feature_timeout_ms is not None:
        command += ["--feature_timeout_ms", str(feature_timeout_ms)]
    return command + list(extra)


@contextlib.contextmanager
def running_transformer(predictor_host: str, *, home: str | Path, port: int | None = None,
                        items: str | Path | None = None, feature_timeout_ms: float | None = None,
                        extra: Sequence[str] = (), env: dict[str, str] | None = None,
                        timeout_s: float = 90.0, log: IO[str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the real transformer until the block ends; yields (base URL, process)."""
    port = port or free_port()
    command = transformer_command(predictor_host, port, home=home, items=items,
                                  feature_timeout_ms=feature_timeout_ms, extra=extra)
    with contextlib.ExitStack() as stack:
        out = log or stack.enter_context(tempfile.TemporaryFile("w+"))
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**predictor_env(), **(env or {})})
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(process, f"{base}/v1/models/{MODEL_NAME}", timeout_s, out)
            yield base, process
        finally:
            stop(process)


@contextlib.contextmanager
def running_servers(home: str | Path, *, registry: str | Path | None = None, model_dir: str | Path | None = None,
                    transformer_port: int | None = None,
                    predictor_port: int | None = None, items: str | Path | None = None,
                    feature_timeout_ms: float | None = None, env: dict[str, Any] | None = None,
                    timeout_s: float = 90.0) -> Iterator[ServingURLs]:
    """Predictor on the registry's production alias (or a fixed bundle) with the home's item
    catalogue, then the transformer forwarding to it; both stopped (SIGTERM) when the block ends."""
    home = Path(home)
    if model_dir is not None:
        source = ["--model_dir", str(model_dir)]
    else:
        source = ["--registry", str(registry or home / "registry")]
    features = home / "features"
    if (features / "item_stats.parquet").exists():
        source += ["--catalog", str(features)]
    if items:
        source += ["--items", str(items)]
    previous = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})  # the predictor inherits it
    try:
        with running_predictor(source, port=predictor_port, timeout_s=timeout_s) as predictor:
            host = predictor.removeprefix("http://")
            with running_transformer(host, home=home, port=transformer_port, items=items,
                                     feature_timeout_ms=feature_timeout_ms, timeout_s=timeout_s) as (base, _):
                yield ServingURLs(base, predictor)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
