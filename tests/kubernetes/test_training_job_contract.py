"""Contract test of the train step's multi-node path (shoprec/kfp/training_job.py): the real launch
function and the real `kubernetes` client against a small local HTTP server that speaks the few
endpoints of the Kubernetes API the launcher calls (create, get and delete a kubeflow.org/v1
PyTorchJob).

The server is a test double at the Kubernetes API boundary: no cluster, Training Operator or GPU
can exist on this machine. It plays the operator's part too: after a GET or two it flips the job
to Succeeded (writing a tiny real bundle where the master would) or to Failed, or leaves it
Running for ever (a job that outlives its step).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest
import yaml

from shoprec.models.bundle import load_bundle, save_bundle
from shoprec.models.baselines import BASELINES
from shoprec.sequences import ItemVocab

from tests.kubernetes.fake_api import JsonHandler, LocalApiServer, running

REPO = Path(__file__).resolve().parents[2]
CRD = REPO.parent / "shared" / "schemas" / "kubeflow-training" / "kubeflow.org_pytorchjobs.yaml"
JOBS = "/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs"
GETS_BEFORE_DONE = 2
FAILURE_MESSAGE = "PyTorchJob shoprec-train-x is failed because 1 Worker replica(s) failed: OOMKilled"


def write_master_bundle(out_dir: Path) -> None:
    """What the master's `save_outcome` leaves: a real (tiny, MostPop) bundle with train facts."""
    vocab = ItemVocab(("i1", "i2", "i3", "i4"))
    model = BASELINES["mostpop"](vocab.n_items).fit([np.array(s, dtype=np.int64) for s in ([1, 2, 3], [1, 2], [1, 4])])
    metrics = {"primary": "mostpop",
               "models": {"mostpop": {"model": "mostpop", "metrics": {"HR@10": 0.5, "NDCG@10": 0.25}}},
               "train": {"seconds": 12.34, "best_epoch": 3, "device": "cuda"}}
    save_bundle(out_dir, model, vocab, exclude_seen=True, metrics=metrics, snapshot_id="snap-1",
                training={"split": "leave-one-out", "source": "test"}, model_card="# Model card\n\nfake\n")


class FakeKubernetes(LocalApiServer):
    """Records requests; keeps created PyTorchJobs and moves them to `final_state` after GETs."""

    def __init__(self, final_state: str = "Succeeded") -> None:
        super().__init__(_Handler)
        self.final_state = final_state
        self.requests: list[dict[str, Any]] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.gets: dict[tuple[str, str], int] = {}

    def finish(self, job: dict[str, Any]) -> None:
        if self.final_state == "Running":  # still training (it would hold its GPUs)
            job["status"] = {"conditions": [{"type": "Running", "status": "True", "message": "running"}]}
            return
        if self.final_state == "Succeeded":
            command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
            write_master_bundle(Path(command[command.index("--out") + 1]))
            message = "PyTorchJob succeeded"
        else:
            message = FAILURE_MESSAGE
        job["status"] = {"conditions": [
            {"type": "Created", "status": "True", "message": "created"},
            {"type": "Running", "status": "False", "message": "was running"},
            {"type": self.final_state, "status": "True", "reason": f"PyTorchJob{self.final_state}",
             "message": message}]}


class _Handler(JsonHandler):
    server: FakeKubernetes

    def _route(self) -> tuple[str, str | None] | None:
        """(namespace, job name or None) of a pytorchjobs path, else None."""
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:4] == ["apis", "kubeflow.org", "v1", "namespaces"] and len(parts) in (6, 7) \
                and parts[5] == "pytorchjobs":
            return parts[4], parts[6] if len(parts) == 7 else None
        return None

    def do_POST(self) -> None:
        body = self._body()
        self.server.requests.append({"method": "POST", "path": self.path, "body": body})
        route = self._route()
        if route is None or route[1] is not None:
            return self._answer(404, {"kind": "Status", "message": f"fake has no POST {self.path}"})
        key = (route[0], body["metadata"]["name"])
        if key in self.server.jobs:
            return self._answer(409, {"kind": "Status", "reason": "AlreadyExists"})
        self.server.jobs[key] = json.loads(json.dumps(body))
        self._answer(201, body)

    def do_GET(self) -> None:
        self.server.requests.append({"method": "GET", "path": self.path, "body": None})
        route = self._route()
        if route is None or route[1] is None or route[:2] not in self.server.jobs:
            return self._answer(404, {"kind": "Status", "reason": "NotFound", "message": self.path})
        key = (route[0], route[1])
        self.server.gets[key] = self.server.gets.get(key, 0) + 1
        job = self.server.jobs[key]
        if self.server.gets[key] == GETS_BEFORE_DONE:
            self.server.finish(job)
        self._answer(200, job)

    def do_DELETE(self) -> None:
        self.server.requests.append({"method": "DELETE", "path": self.path, "body": self._body()})
        route = self._route()
        if route is None or route[1] is None or route[:2] not in self.server.jobs:
            return self._answer(404, {"kind": "Status", "reason": "NotFound", "message": self.path})
        del self.server.jobs[(route[0], route[1])]
        self._answer(200, {"kind": "Status", "status": "Success"})


def serve(final_state: str) -> Iterator[FakeKubernetes]:
    server = FakeKubernetes(final_state)
    with running(server):
        yield server


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    yield from serve("Succeeded")


@pytest.fixture
def failing_cluster() -> Iterator[FakeKubernetes]:
    yield from serve("Failed")


@pytest.fixture
def endless_cluster() -> Iterator[FakeKubernetes]:
    yield from serve("Running")


def deletes(server: FakeKubernetes) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["method"] == "DELETE"]


def api_client(server: FakeKubernetes) -> Any:
    from kubernetes import client

    configuration = client.Configuration(host=server.url)
    return client.ApiClient(configuration)


@pytest.fixture
def clean_dir(tmp_path: Path) -> Path:
    clean = tmp_path / "artifacts" / "clean"
    clean.mkdir(parents=True)
    (clean / "dataset.json").write_text(json.dumps({"source": "test", "snapshot_id": "snap-1"}))
    return clean


TRAINING_SET = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["i1", "i2", "i3"],
                             "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True)})


def test_contract_launch_creates_a_valid_job_waits_for_success_and_returns_the_bundle(
        cluster: FakeKubernetes, clean_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.config import DEFAULT_IMAGE
    from shoprec.kfp.training_job import (TRAINER_SERVICE_ACCOUNT, bundle_summary, ddp_args,
                                          job_timeout_s, train_with_pytorch_job)

    monkeypatch.delenv("SHOPREC_GPU_IMAGE", raising=False)
    monkeypatch.setenv("SHOPREC_IMAGE", "registry.example/shoprec:3")
    home = tmp_path / "home"
    args = ddp_args(max_epochs=7, learning_rate=0.002, hidden=32, max_len=20, dropout=0.1, budget_minutes=5,
                    split="temporal", cutoff="2024-01-01", feature_service="recommender_v1")
    bundle = train_with_pytorch_job(clean_dir, workers=3, train_args=args, home=home, namespace="team-a",
                                    name="shoprec-train-x", api_client=api_client(cluster), poll_s=0.01,
                                    timeout_s=job_timeout_s(5), training_set=TRAINING_SET)

    [post] = [r for r in cluster.requests if r["method"] == "POST"]
    assert post["path"] == JOBS.format(namespace="team-a")
    job = post["body"]
    assert job["kind"] == "PyTorchJob" and job["metadata"] == {
        "name": "shoprec-train-x", "namespace": "team-a", "labels": {"app.kubernetes.io/part-of": "shoprec"}}
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 3
    work = home.resolve() / "jobs" / "shoprec-train-x"
    command = specs["Worker"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["torchrun", "-m", "shoprec.training.ddp", "--data", str(work / "data"),
                       "--out", str(work / "bundle"), "--epochs", "7", "--lr", "0.002", "--hidden", "32",
                       "--max-len", "20", "--dropout", "0.1", "--split", "temporal",
                       "--cutoff", "2024-01-01", "--feature-service", "recommender_v1",
                       "--budget-minutes", "5", "--training-set", str(work / "training_set.parquet")]
    assert specs["Master"]["template"] == specs["Worker"]["template"]  # same image, same entry point
    # The Feast point-in-time training set travelled on the shared home, as the step built it.
    pd.testing.assert_frame_equal(pd.read_parquet(work / "training_set.parquet"), TRAINING_SET)
    # The CUDA build of the configured image, never the CPU one; its own account, no API token.
    pod = specs["Worker"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/shoprec:3-gpu" != DEFAULT_IMAGE
    assert pod["serviceAccountName"] == TRAINER_SERVICE_ACCOUNT and pod["automountServiceAccountToken"] is False
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == job_timeout_s(5)
    # The clean data went onto the shared home, where the job's pods read it.
    assert json.loads((work / "data" / "dataset.json").read_text())["snapshot_id"] == "snap-1"
    if CRD.exists():  # ../shared/schemas is only beside the team's checkout
        import jsonschema

        crd = yaml.safe_load(CRD.read_text())
        [served] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        errors = list(jsonschema.Draft7Validator(served["schema"]["openAPIV3Schema"]).iter_errors(job))
        assert errors == []

    # It polled until the fake operator flipped the job, then stopped.
    gets = [r for r in cluster.requests if r["method"] == "GET"]
    assert [r["path"] for r in gets] == [JOBS.format(namespace="team-a") + "/shoprec-train-x"] * GETS_BEFORE_DONE
    assert bundle == work / "bundle"
    assert deletes(cluster) == []  # a finished job is kept (its pods' logs); its pods hold no GPU
    loaded = load_bundle(bundle)  # a real bundle, sha256-checked
    assert loaded is not None
    logged, metadata = bundle_summary(bundle)
    assert logged == {"mostpop_HR_at_10": 0.5, "mostpop_NDCG_at_10": 0.25, "train_seconds": 12.3,
                      "best_epoch": 3}
    config = json.loads((bundle / "config.json").read_text())
    assert metadata["weights_sha256"] == config["weights_sha256"] and metadata["kind"] == "mostpop"
    assert (metadata["snapshot_id"], metadata["device"], metadata["split"]) == ("snap-1", "cuda", "leave-one-out")


def test_contract_failed_job_raises_naming_the_job_and_the_operator_message(
        failing_cluster: FakeKubernetes, clean_dir: Path, tmp_path: Path) -> None:
    from shoprec.kfp.training_job import TrainingJobError, train_with_pytorch_job

    with pytest.raises(TrainingJobError) as caught:
        train_with_pytorch_job(clean_dir, workers=1, train_args=[], home=tmp_path / "home", namespace="team-a",
                               name="shoprec-train-x", api_client=api_client(failing_cluster), poll_s=0.01)

    assert "team-a/shoprec-train-x" in str(caught.value)
    assert FAILURE_MESSAGE in str(caught.value)
    assert not (tmp_path / "home" / "jobs" / "shoprec-train-x" / "bundle").exists()
    # Deleted with its pods (Background propagation), so no replica keeps a GPU.
    [delete] = deletes(failing_cluster)
    assert delete["path"] == JOBS.format(namespace="team-a") + "/shoprec-train-x"
    assert delete["body"]["propagationPolicy"] == "Background"
    assert failing_cluster.jobs == {}


def test_contract_job_still_running_at_the_deadline_is_deleted(
        endless_cluster: FakeKubernetes, tmp_path: Path) -> None:
    from shoprec.kfp.training_job import TrainingJobError, render_pytorch_job, run_pytorch_job

    job = render_pytorch_job("shoprec-train-slow", "/d", "/o", workers=1, namespace="team-a")
    with pytest.raises(TrainingJobError, match="team-a/shoprec-train-slow: not finished after 0 s; deleted"):
        run_pytorch_job(job, api_client=api_client(endless_cluster), timeout_s=0, poll_s=0.01)
    assert len([r for r in endless_cluster.requests if r["method"] == "GET"]) == 1
    assert [d["path"] for d in deletes(endless_cluster)] == [JOBS.format(namespace="team-a") + "/shoprec-train-slow"]
    assert endless_cluster.jobs == {}


class _NotOurHandler(Exception):
    """Raised by the test's own SIGTERM handler: the launcher did not install its own."""


def test_contract_step_terminated_while_waiting_deletes_the_job_and_restores_the_handler(
        endless_cluster: FakeKubernetes) -> None:
    """KFP's step timeout (or a cancelled run) sends SIGTERM to the step: the job goes too."""
    from shoprec.kfp.training_job import StepTerminated, render_pytorch_job, run_pytorch_job

    def ours(signum: int, frame: Any) -> None:
        raise _NotOurHandler()

    previous = signal.signal(signal.SIGTERM, ours)  # a stray SIGTERM never kills pytest
    try:
        job = render_pytorch_job("shoprec-train-cut", "/d", "/o", workers=1, namespace="team-a")
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        with pytest.raises(StepTerminated):
            run_pytorch_job(job, api_client=api_client(endless_cluster), timeout_s=60, poll_s=0.02)
        timer.join()
        assert signal.getsignal(signal.SIGTERM) is ours  # put back after the wait
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [d["path"] for d in deletes(endless_cluster)] == [JOBS.format(namespace="team-a") + "/shoprec-train-cut"]
    assert endless_cluster.jobs == {}


def test_ddp_entry_point_trains_on_the_training_set_and_records_the_service(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What every rank runs: the Parquet training set reaches `fit_and_evaluate` exactly as the
    in-pod train step passes it, and the bundle names the Feast service it came from."""
    import shoprec.training.ddp as ddp

    path = tmp_path / "training_set.parquet"
    TRAINING_SET.to_parquet(path, index=False)
    seen: dict[str, Any] = {}

    class Data:
        source, info = "test", {"snapshot_id": "snap-2"}

    monkeypatch.setattr(ddp.EventData, "read", staticmethod(lambda folder: Data()))
    monkeypatch.setattr(ddp, "fit_and_evaluate",
                        lambda data, config, training_set=None: seen.update(training_set=training_set) or "outcome")
    monkeypatch.setattr(ddp, "save_outcome", lambda outcome, out, **kw: seen.update(saved=(outcome, out, kw)))
    monkeypatch.delenv("WORLD_SIZE", raising=False)

    assert ddp.main(["--data", str(tmp_path), "--out", str(tmp_path / "bundle"), "--training-set", str(path),
                     "--feature-service", "recommender_v2"]) == 0
    pd.testing.assert_frame_equal(seen["training_set"], TRAINING_SET)
    assert seen["saved"] == ("outcome", tmp_path / "bundle",
                             {"source": "test", "snapshot_id": "snap-2", "feature_service": "recommender_v2"})


def test_the_train_step_hands_its_validation_and_repeat_head_settings_to_the_job(
        cluster: FakeKubernetes, clean_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The train component with `workers` > 0 (its real body, the cluster behind the fake API):
    the job trains as the pod would, on session openings with the repeat head and the feature
    store's history length for the repeat side, and tests on the same sessions."""
    from kfp import dsl

    import shoprec.kfp.training_job as training_job
    from shoprec import schema as S
    from shoprec.components.train import train
    from shoprec.config import DEFAULT_HISTORY_LEN

    monkeypatch.setattr(training_job, "in_cluster_api_client", lambda: api_client(cluster))
    launch = training_job.train_with_pytorch_job  # the step imports it at call time: poll fast
    monkeypatch.setattr(training_job, "train_with_pytorch_job", lambda *a, **k: launch(*a, **k, poll_s=0.01))
    monkeypatch.setenv("SHOPREC_HOME", str(tmp_path / "home"))
    store = dsl.Artifact(name="feature_store", uri=str(tmp_path / "store.json"))
    Path(store.path).write_text(json.dumps({"feature_service": "recommender_v1"}))
    model = dsl.Model(name="model", uri=str(tmp_path / "model"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    card = dsl.Markdown(name="card", uri=str(tmp_path / "card.md"))
    TRAINING_SET.to_parquet(clean_dir / S.EVENTS_FILE, index=False)
    clean = dsl.Dataset(name="clean", uri=str(clean_dir))
    kwargs = dict(clean=clean, feature_store=store, home="", use_feature_store=False, cutoff="", max_epochs=3,
                  budget_minutes=0.0, learning_rate=1e-3, hidden=16, max_len=20, dropout=0.1,
                  model=model, metrics=metrics, model_card=card, workers=1)
    train.python_func(split="temporal", test_sessions=10, **kwargs)
    command = [r for r in cluster.requests if r["method"] == "POST"][-1]["body"]["spec"][
        "pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--validation"):command.index("--validation") + 5] == [
        "--validation", "opening", "--repeat-head", "--repeat-history", str(DEFAULT_HISTORY_LEN)]
    assert command[command.index("--test-sessions") + 1] == "10"
    assert model.metadata["workers"] == 1 and load_bundle(model.path).config["weights_sha256"]

    train.python_func(split="leave-one-out", validate_on_openings=False, repeat_head=False, test_sessions=10,
                      **{**kwargs, "model": dsl.Model(name="model", uri=str(tmp_path / "model2"))})
    command = [r for r in cluster.requests if r["method"] == "POST"][-1]["body"]["spec"][
        "pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert not {"--validation", "--repeat-head", "--test-sessions"} & set(command)  # leave-one-out: none apply
