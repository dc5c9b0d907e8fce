"""Start the KServe servers as processes on localhost (`python -m shoprec.kserve.predictor`,
`... .transformer`), wait until they are ready and stop them gracefully: used by the infra check,
`shoprec serve`, the serving tests and benchmarks/serving.py alike."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shoprec.config import MODEL_NAME
from shoprec.errors import InfraCheckError
from shoprec.home import Home


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_predictor(source_args: Sequence[str], *, port: int | None = None,
                      timeout_s: float = 60.0) -> Iterator[str]:
    """Run the real predictor (`--model_dir B` or `--registry R ...`) until the block ends; yields
    its base URL once it reports ready. InfraCheckError carries its error line if it dies first."""
    with running_model_server("shoprec.kserve.predictor", source_args, MODEL_NAME, "the predictor",
                              port=port, timeout_s=timeout_s) as base:
        yield base


@contextlib.contextmanager
def running_model_server(module: str, args: Sequence[str], model_name: str, what: str, *,
                         port: int | None = None, env: dict[str, str] | None = None,
                         timeout_s: float = 60.0) -> Iterator[str]:
    """Run one KServe model server (`python -m MODULE ARGS --http_port P`) until the block ends;
    yields its base URL once `/v1/models/MODEL_NAME` reports ready, and stops it (SIGTERM)."""
    port = port or free_port()
    command = [sys.executable, "-m", module, *args, "--http_port", str(port), "--enable_grpc", "false"]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=None if env is None else {**os.environ, **env})
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(process, f"{base}/v1/models/{model_name}", timeout_s, log, what)
            yield base
        finally:
            stop(process)


def wait_ready(process: subprocess.Popen, url: str, timeout_s: float, log: Any = None,
               what: str = "the server") -> None:
    """Poll `url` until it answers 200 (and does not say `"ready": false`); InfraCheckError
    with the server's error line if the process dies first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InfraCheckError(f"{what} exited with code {process.returncode} before it was "
                                  f"ready: {_error_line(log)}")
        try:
            status, body = http_json("GET", url, None, 2.0)
            if status == 200 and body.get("ready", True):
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.2)
    raise InfraCheckError(f"{what} was not ready at {url} within {timeout_s:.0f} s: {_error_line(log)}")


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> int | None:
    """SIGTERM (graceful), then SIGKILL if it does not exit in time; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def http_json(method: str, url: str, payload: Any, timeout: float) -> tuple[int, dict[str, Any]]:
    """One HTTP call with a JSON body (or none): (status, parsed JSON answer)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except ValueError:
            return exc.code, {"error": body.decode(errors="replace")[:300]}


def _error_line(log: Any) -> str:
    """The last exception line in a server's log (else its last line)."""
    if log is None:
        return "no log"
    log.flush()
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", line)]
    return (errors or lines or ["no output"])[-1][:500]


@dataclass(frozen=True)
class ServingURLs:
    transformer: str
    predictor: str


def transformer_command(predictor_host: str, port: int, *, home: str | Path,
                        items: str | Path | None = None, feature_timeout_ms: float | None = None,
                        extra: Sequence[str] = ()) -> list[str]:
    command = [sys.executable, "-m", "shoprec.kserve.transformer", "--predictor_host", predictor_host,
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
                                   env={**os.environ, **(env or {})})
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(process, f"{base}/v1/models/{MODEL_NAME}", timeout_s, out)
            yield base, process
        finally:
            stop(process)


@contextlib.contextmanager
def running_servers(home: Home | str | Path, *, registry: str | Path | None = None, model_dir: str | Path | None = None,
                    transformer_port: int | None = None,
                    predictor_port: int | None = None, items: str | Path | None = None,
                    feature_timeout_ms: float | None = None, env: dict[str, Any] | None = None,
                    timeout_s: float = 90.0, campaigns: str | Path | None = None) -> Iterator[ServingURLs]:
    """Predictor on the registry's production alias (or a fixed bundle) with the home's item
    catalogue (and a campaigns table, when given), then the transformer forwarding to it; both
    stopped (SIGTERM) when the block ends."""
    home = Home.at(home)
    if model_dir is not None:
        source = ["--model_dir", str(model_dir)]
    else:
        source = ["--registry", str(registry or home.registry)]
    if home.item_stats.exists():
        source += ["--catalog", str(home.features)]
    if items:
        source += ["--items", str(items)]
    if campaigns:
        source += ["--campaigns", str(campaigns)]
    previous = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})  # the predictor inherits it
    try:
        with running_predictor(source, port=predictor_port, timeout_s=timeout_s) as predictor:
            host = predictor.removeprefix("http://")
            with running_transformer(host, home=home.root, port=transformer_port, items=items,
                                     feature_timeout_ms=feature_timeout_ms, timeout_s=timeout_s) as (base, _):
                yield ServingURLs(base, predictor)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
