"""Infra validation before promotion: start the real KServe predictor (serving/predictor) on a
free localhost port in a subprocess, send canned V1 requests over HTTP, compare every answer
with `Recommender.recommend` for the same histories, check that bad input gets HTTP 400, stop it.

A bundle that fails to load or to answer is rejected with the reason (the predictor's own
error line when it dies on start-up)."""

from __future__ import annotations

import contextlib
import importlib.util
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import shoprec
from shoprec.bundle import VOCAB_FILE
from shoprec.errors import InfraCheckError
from shoprec.promotion import Check
from shoprec.training.data import ItemVocab

MODEL_NAME = "shoprec"
PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"


@dataclass(frozen=True)
class InfraCheckResult:
    """passed, one sentence why, and each failed expectation."""

    passed: bool
    reason: str
    requests: int
    failures: tuple[str, ...] = ()

    def as_check(self) -> Check:
        return Check("infra check (KServe predictor on localhost)", self.passed, self.reason,
                     {"requests": self.requests, "failures": list(self.failures)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canned_instances(vocab: ItemVocab, seed: int = 0) -> list[dict[str, Any]]:
    """V1 instances covering the cases a live server meets: no history, one item, a longer
    history, an unknown item id, k of 1, 10 and larger than the catalogue allows."""
    ids = list(vocab.ids)
    rng = np.random.default_rng(seed)
    some = [ids[int(i)] for i in rng.choice(len(ids), size=min(5, len(ids)), replace=False)]
    return [
        {"items": [], "k": 10},
        {"items": [ids[0]], "k": 10},
        {"items": [ids[-1]], "k": 1},
        {"items": some, "k": 10},
        {"items": ["no-such-item-shoprec-check", *some[:2]], "k": 5},
        {"items": some[::-1], "k": min(50, max(1, len(ids)))},
    ]


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def predictor_env() -> dict[str, str]:
    """The environment for `python -m serving.predictor`: the source checkout on PYTHONPATH when
    the `serving` package is not installed (an editable install maps only src/ packages)."""
    env = dict(os.environ)
    try:
        found = importlib.util.find_spec("serving.predictor") is not None
    except ModuleNotFoundError:
        found = False
    checkout = Path(shoprec.__file__).resolve().parents[2]
    if not found and (checkout / "serving" / "predictor" / "__main__.py").exists():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def running_predictor(source_args: Sequence[str], *, port: int | None = None,
                      timeout_s: float = 60.0) -> Iterator[str]:
    """Run the real predictor (`--model_dir B` or `--registry R ...`) until the block ends; yields
    its base URL once it reports ready. InfraCheckError carries its error line if it dies first."""
    port = port or free_port()
    command = [sys.executable, "-m", "serving.predictor", *source_args,
               "--http_port", str(port), "--enable_grpc", "false"]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=predictor_env())
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(process, f"{base}/v1/models/{MODEL_NAME}", timeout_s, log, "the predictor")
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
            status, body = _http("GET", url, None, 2.0)
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


def _error_line(log: Any) -> str:
    """The last exception line in a server's log (else its last line)."""
    if log is None:
        return "no log"
    log.flush()
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", line)]
    return (errors or lines or ["no output"])[-1][:500]


def _http(method: str, url: str, payload: Any, timeout: float) -> tuple[int, dict[str, Any]]:
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


def predict(base_url: str, instances: list[dict[str, Any]], timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    """One V1 predict call: (HTTP status, JSON body)."""
    return _http("POST", base_url + PREDICT_PATH, {"instances": instances}, timeout)


def compare(expected: list[dict[str, Any]], got: list[dict[str, Any]], what: str) -> list[str]:
    """Differences between expected and served answers (same items in order; scores to 1e-5)."""
    if len(got) != len(expected):
        return [f"{what}: {len(got)} predictions for {len(expected)} instances"]
    problems = []
    for n, (want, have) in enumerate(zip(expected, got)):
        if have.get("items") != want["items"]:
            problems.append(f"{what}[{n}]: items {have.get('items')} != expected {want['items']}")
        elif not np.allclose(have.get("scores", []), want["scores"], rtol=1e-5, atol=1e-6):
            problems.append(f"{what}[{n}]: scores {have.get('scores')} != expected {want['scores']}")
    return problems


def check_bundle(bundle_dir: str | Path, *, timeout_s: float = 60.0,
                 instances: list[dict[str, Any]] | None = None) -> InfraCheckResult:
    """Serve `bundle_dir` with the real predictor and check its answers (see the module doc)."""
    from shoprec.inference import Recommender
    from shoprec.serving import answer, parse_v1

    bundle_dir = Path(bundle_dir)
    try:
        instances = instances or canned_instances(ItemVocab.read(bundle_dir / VOCAB_FILE))
    except (OSError, ValueError, KeyError) as exc:
        return InfraCheckResult(False, f"cannot read the bundle's item vocabulary: {exc}", 0)
    sent, failures, served = 0, [], {}
    try:
        with running_predictor(["--model_dir", str(bundle_dir)], timeout_s=timeout_s) as base:
            for what, batch in (("batch", instances), ("single", instances[1:2])):
                sent += 1
                status, body = predict(base, batch)
                if status != 200:
                    failures.append(f"{what} request answered HTTP {status}: {body.get('error', body)}")
                else:
                    served[what] = body.get("predictions", [])
            sent += 1
            status, body = predict(base, [{"items": "not-a-list"}])
            if status != 400:
                failures.append(f"a malformed request got HTTP {status}, not 400")
    except InfraCheckError as exc:
        return InfraCheckResult(False, f"the predictor could not serve the bundle: {exc}", sent)
    if not failures:
        try:  # the reference: the one inference path, in this process
            expected = answer(Recommender.from_bundle(bundle_dir), parse_v1({"instances": instances}))
        except Exception as exc:
            return InfraCheckResult(False, f"the bundle cannot answer: {type(exc).__name__}: {exc}", sent)
        failures += compare(expected, served["batch"], "batch")
        failures += compare(expected[1:2], served["single"], "single")
    if failures:
        return InfraCheckResult(False, f"{len(failures)} answer(s) wrong: {failures[0]}", sent,
                                tuple(failures))
    return InfraCheckResult(True, f"{sent} requests ({len(instances)} canned instances) answered "
                                  "as Recommender.recommend does; malformed input got 400", sent)
