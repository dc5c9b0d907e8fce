"""Every README line that talks to the local servers runs as written against `shoprec serve`."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shoprec.kserve.process import stop, wait_ready

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
LOCAL = re.compile(r"\b(localhost|127\.0\.0\.1):(\d+)")
# The recommender's routes (`shoprec serve`); other local servers the README shows (the churn
# model on its own port) are run and tested by their own tests.
SHOPREC_ROUTE = re.compile(r"/v1/models/shoprec:|/v2/models/shoprec/")


def readme_server_commands() -> list[str]:
    """The shell commands in README's ```bash blocks that call the recommender on a local
    server (continuation lines joined), as written."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith("curl") and LOCAL.search(command) and SHOPREC_ROUTE.search(command):
                commands.append(command.strip())
    return commands


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_the_readme_has_server_examples():
    commands = readme_server_commands()
    assert len(commands) >= 3 and all("-d" in c for c in commands)
    assert any("/v2/models/shoprec/infer" in c for c in commands)


def test_every_readme_server_command_runs_as_written(demo):
    commands = readme_server_commands()
    ports = sorted({int(m.group(2)) for c in commands for m in LOCAL.finditer(c)})
    assert ports == [8080], ports  # the transformer's port, as `shoprec serve` defaults it
    if not port_free(8080) or not port_free(8081):
        pytest.skip("ports 8080/8081 are taken on this machine: the README's commands name them")
    shoprec = Path(sys.executable).parent / "shoprec"
    command = [str(shoprec), "serve", "--home", str(demo.home.root), "--items", str(demo.items_path)]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(process, "http://127.0.0.1:8080/v1/models/shoprec", 120, log)
            for line in commands:
                run = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60)
                assert run.returncode == 0, (line, run.stderr)
                answer = json.loads(run.stdout)
                assert "error" not in answer, (line, answer)
                assert answer.get("predictions") or answer.get("outputs"), (line, answer)
        finally:
            stop(process, timeout_s=30)
