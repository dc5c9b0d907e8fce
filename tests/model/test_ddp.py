"""torchrun with 2 CPU processes (DDP, gloo) trains a model as good as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoprec.models.bundle import load_bundle

ARGS = ["--epochs", "30", "--batch-size", "32", "--lr", "5e-3", "--patience", "5", "--hidden", "32",
        "--max-len", "20", "--dropout", "0.1", "--no-content", "--amp", "off"]


def run_training(data: Path, out: Path, processes: int) -> dict:
    result = out / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "shoprec.training.ddp",
               "--data", str(data), "--out", str(out / "bundle"), "--result-json", str(result), *ARGS]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.mark.timeout(300)
def test_two_process_ddp_matches_one_process(planted, tmp_path):
    data = planted.write(tmp_path / "data")
    one = run_training(data, tmp_path / "one", 1)
    two = run_training(data, tmp_path / "two", 2)
    assert one["train"]["world_size"] == 1 and two["train"]["world_size"] == 2
    ndcg = {name: {row["model"]: row["metrics"]["NDCG@10"] for row in run["results"]}
            for name, run in (("one", one), ("two", two))}
    assert ndcg["two"]["sasrec"] > 0.7 and ndcg["two"]["sasrec"] > 3 * ndcg["two"]["mostpop"]
    assert abs(ndcg["two"]["sasrec"] - ndcg["one"]["sasrec"]) < 0.05
    bundle = load_bundle(tmp_path / "two" / "bundle")  # rank 0 wrote a valid bundle
    assert bundle.config["training"]["train_config"]["max_epochs"] == 30
