"""The real transformer over HTTP: a read-only prediction-log folder costs no answer (200s, the
failed writes counted on /metrics), and fallback answers carry the lineage of the model that
would have answered."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoprec.config import MODEL_NAME
from shoprec.kserve.process import free_port, running_predictor, stop, transformer_command, wait_ready
from shoprec.serving.prediction_log import read_predictions

from tests.serving.conftest import predict

FAILED = re.compile(r'^shoprec_prediction_log_records_total\{outcome="failed"\} (\S+)$', re.M)


def read_only(directory: Path, command: list[str]) -> list[str]:
    """`command` run with `directory` read-only. As root (who writes through mode bits) the
    process gets its own mount namespace with a read-only tmpfs over the folder."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return command
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             f"mount -t tmpfs -o ro,size=1m shoprec-ro {directory}"], capture_output=True).returncode:
        pytest.skip("needs unshare and mount to make a folder read-only for root")
    script = 'mount -t tmpfs -o ro,size=1m shoprec-ro "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
            str(directory), *command]


@contextlib.contextmanager
def transformer(predictor: str, home: Path, command_wrapper=lambda c: c,
                extra: tuple[str, ...] = ()) -> Iterator[str]:
    port = free_port()
    command = command_wrapper(transformer_command(predictor.removeprefix("http://"), port, home=home,
                                                  extra=list(extra)))
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(process, f"{base}/v1/models/{MODEL_NAME}", 90, log, "the transformer")
            yield base
        finally:
            stop(process)


def failed_writes(base: str) -> float:
    found = FAILED.search(httpx.get(f"{base}/metrics", timeout=10).text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.integration
def test_a_transformer_whose_log_directory_is_read_only_still_answers_200_and_counts_failed_writes(
        demo, tmp_path):
    logs = tmp_path / "read-only-logs"
    logs.mkdir()
    with running_predictor(["--model_dir", str(demo.bundle_dir)]) as predictor, \
            transformer(predictor, demo.home.root, lambda c: read_only(logs, c),
                        extra=("--log_dir", str(logs))) as base:
        known = demo.vocab.ids[:3]
        statuses = []
        for n in range(10):
            instances = [{"items": list(known), "k": 3}, {"user_id": f"nobody-{n}", "k": 2}]
            response = predict(base, instances)
            statuses.append(response.status_code)
            assert len(response.json()["predictions"]) == 2
        assert statuses == [200] * 10
        deadline = time.monotonic() + 20
        while failed_writes(base) < 20:  # two records per request, written in the background
            assert time.monotonic() < deadline, f"failed writes counted: {failed_writes(base)}"
            time.sleep(0.1)
    assert not list(logs.glob("*.jsonl"))


@pytest.mark.integration
def test_fallback_answers_carry_the_lineage_of_the_model_that_would_have_answered(demo, tmp_path):
    logs = tmp_path / "logs"
    with running_predictor(["--model_dir", str(demo.bundle_dir)]) as predictor, \
            transformer(predictor, demo.home.root, extra=("--log_dir", str(logs))) as base:
        # The very first request: only a fallback answers, the model was never asked.
        response = predict(base, [{"user_id": "never-seen-shopper", "k": 2}], headers={"x-request-id": "fb-1"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"][0]["fallback"] == "unknown_user"
        version = demo.bundle_dir.name
        assert body["predictions"][0]["model_version"] == version
        assert body["lineage"]["model_version"] == version and body["lineage"]["data_snapshot"]
        assert response.headers["x-shoprec-model-version"] == version
        deadline = time.monotonic() + 20
        while not len(frame := read_predictions(logs)):
            assert time.monotonic() < deadline, "the record never reached the log"
            time.sleep(0.1)
    assert frame.iloc[0]["model_version"] == version and frame.iloc[0]["fallback"] == "unknown_user"
