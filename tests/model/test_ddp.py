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


@pytest.mark.timeout(300)
def test_a_job_validates_on_session_openings_and_keeps_the_repeat_head_as_the_pod_does(tmp_path):
    """The PyTorchJob path (`ddp_args` -> `shoprec.training.ddp`) takes the train step's
    validation target, repeat head and repeat-side history length, under two processes."""
    from shoprec.kfp.training_job import ddp_args

    from .test_repeat_head_wiring import habit_log

    data = habit_log(users=30, sessions=8, seed=2).write(tmp_path / "data")
    step = ddp_args(max_epochs=2, learning_rate=1e-3, hidden=16, max_len=20, dropout=0.1, budget_minutes=0,
                    split="temporal", validation="opening", repeat_head=True, repeat_history=30, test_sessions=3)
    assert step[-7:] == ["--validation", "opening", "--repeat-head", "--repeat-history", "30", "--test-sessions", "3"]
    result = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "shoprec.training.ddp", "--data", str(data), "--out", str(tmp_path / "bundle"),
               "--result-json", str(result), "--batch-size", "32", "--no-content", "--amp", "off", *step]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.config["training"]["split"]["validation"] == "opening"
    assert bundle.config["training"]["split"]["test_sessions"] == 3
    model_config = bundle.config["model_config"]
    # The staple opens every session of this log: validation on the openings keeps the head.
    assert model_config["repeat_head_hidden"] > 0 and model_config["repeat_history"] == 30
    side = bundle.metrics["repeat_side"]
    assert max(v for k, v in side.items() if k != "bonus") > side["bonus"]
    assert "repeat head" in (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    assert json.loads(result.read_text())["train"]["world_size"] == 2
