"""Multi-node training: a Kubeflow Training Operator PyTorchJob (kubeflow.org/v1) running the same
entry point as in-pod training, `torchrun -m shoprec.training.ddp` (one master, N workers, NCCL).

The operator sets PET_NNODES / PET_NODE_RANK / PET_MASTER_ADDR / PET_MASTER_PORT and, from
`nprocPerNode`, PET_NPROC_PER_NODE on every pod; torchrun reads its arguments from those, so the
command is identical on every replica. Data and bundle paths live on the shared home volume.

The job runs the CUDA image (`resolve_gpu_image`), under its own service account with no API
rights and no token (it trains; it cannot create InferenceServices or other jobs), and carries
`activeDeadlineSeconds`: the operator stops it even when the launching step dies without a word.
The launcher deletes it when the step fails, times out or is terminated, so no GPU stays held.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoprec.config import ClusterSettings, resolve_gpu_image
from shoprec.home import Home
from shoprec.errors import TrainingJobError

if TYPE_CHECKING:
    import pandas as pd

CONTAINER = "pytorch"  # the operator finds the training container by this name
# The job's own account (manifests/base/rbac.yaml): no Role is bound to it and no token is
# mounted, so code running in the job cannot reach the Kubernetes API at all.
TRAINER_SERVICE_ACCOUNT = "shoprec-trainer"
# Pods of a job carry this label: the NetworkPolicy lets them reach each other (rendezvous, NCCL)
# and nothing else in the namespace reach them.
ROLE_LABEL = ("shoprec.io/role", "trainer")
# The point-in-time training set the train step built from Feast, beside the clean data.
TRAINING_SET_FILE = "training_set.parquet"
# Per replica, besides its GPUs: data loading and the Python process (cluster-sized, not tuned).
REPLICA_RESOURCES = {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "8", "memory": "32Gi"}}


def render_pytorch_job(
    name: str,
    data_dir: str,
    out_dir: str,
    *,
    workers: int,
    gpus_per_node: int = 1,
    image: str | None = None,
    namespace: str = "shoprec",
    train_args: list[str] | None = None,
    active_deadline_s: float | None = None,
    settings: ClusterSettings = ClusterSettings(),
) -> dict[str, Any]:
    """The PyTorchJob manifest (a plain dict): 1 master + `workers` workers, `gpus_per_node` each.

    image: the CUDA image (default: $SHOPREC_GPU_IMAGE, else the CPU image's -gpu build).
    active_deadline_s: the operator fails the job (and stops its pods) after this long, whether
    or not anyone is still waiting for it (default: the launcher's own wait without a budget)."""
    if workers < 1:
        raise ValueError(f"a multi-node job needs at least 1 worker besides the master, got {workers}")
    if gpus_per_node < 1:
        raise ValueError(f"gpus_per_node must be at least 1, got {gpus_per_node}")
    key, value = settings.gpu_node_label
    container = {
        "name": CONTAINER,
        "image": resolve_gpu_image(image),
        "command": ["torchrun", "-m", "shoprec.training.ddp", "--data", data_dir, "--out", out_dir,
                    *(train_args or [])],
        "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
        "envFrom": [{"configMapRef": {"name": settings.settings_config_map}},
                    {"secretRef": {"name": settings.object_store.name}}],
        "resources": {"requests": {**REPLICA_RESOURCES["requests"], "nvidia.com/gpu": gpus_per_node},
                      "limits": {**REPLICA_RESOURCES["limits"], "nvidia.com/gpu": gpus_per_node}},
        "volumeMounts": [{"name": "home", "mountPath": settings.home_mount},
                         # NCCL needs more shared memory than a container's default 64 MiB.
                         {"name": "dshm", "mountPath": "/dev/shm"},
                         # The root filesystem is read-only: torchrun's error files, caches.
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": container_security_context(),
    }
    pod = {
        "metadata": {"labels": {ROLE_LABEL[0]: ROLE_LABEL[1], "app.kubernetes.io/part-of": "shoprec"}},
        "spec": {
            "serviceAccountName": TRAINER_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "nodeSelector": {key: value},
            "tolerations": [{"key": settings.gpu_taint, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [container],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": settings.home_claim}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                        {"name": "tmp", "emptyDir": {}}],
        }
    }

    def replicas(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "OnFailure", "template": pod}

    deadline = int(active_deadline_s if active_deadline_s is not None else NO_BUDGET_TIMEOUT_S)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "shoprec"}},
        "spec": {
            "nprocPerNode": str(gpus_per_node),
            # Running: when the job ends, pods still running (holding GPUs) go; finished pods stay
            # for their logs until the launcher deletes the job.
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 2,
                          "activeDeadlineSeconds": max(1, deadline)},
            "pytorchReplicaSpecs": {"Master": replicas(1), "Worker": replicas(workers)},
        },
    }


def container_security_context() -> dict[str, Any]:
    """What Pod Security's `restricted` level asks of a container, plus a read-only root."""
    return {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


# ---------------------------------------------------------------------------------------------
# Launching: the train step's `workers > 0` path (entry side: the library never imports kubernetes).

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NO_BUDGET_TIMEOUT_S = 6 * 3600.0
# Scheduling, image pull and rendezvous on top of the training budget itself.
STARTUP_ALLOWANCE_S = 30 * 60.0


def ddp_args(*, max_epochs: int, learning_rate: float, hidden: int, max_len: int, dropout: float,
             budget_minutes: float, split: str = "leave-one-out", cutoff: str = "",
             feature_service: str = "", validation: str = "newest", repeat_head: bool = False,
             repeat_history: int = 0, test_sessions: int = 1) -> list[str]:
    """The train step's settings as arguments of `shoprec.training.ddp` (budget 0 = no limit).
    feature_service: the Feast service the training set came from, recorded in the bundle.
    validation / repeat_head / repeat_history / test_sessions: as the in-pod step's
    (`SplitSpec.validation`, `FitConfig.repeat_head`, the repeat side's history length,
    `SplitSpec.test_sessions`); defaults add no argument."""
    args = ["--epochs", str(max_epochs), "--lr", str(learning_rate), "--hidden", str(hidden),
            "--max-len", str(max_len), "--dropout", str(dropout), "--split", split]
    args += ["--cutoff", cutoff] if cutoff else []
    args += ["--validation", validation] if validation != "newest" else []
    args += ["--repeat-head"] if repeat_head else []
    args += ["--repeat-history", str(repeat_history)] if repeat_history else []
    args += ["--test-sessions", str(test_sessions)] if test_sessions != 1 else []
    args += ["--feature-service", feature_service] if feature_service else []
    return args + (["--budget-minutes", str(budget_minutes)] if budget_minutes else [])


def job_timeout_s(budget_minutes: float) -> float:
    """How long to wait for a job: its training budget plus start-up, or 6 h without a budget."""
    return budget_minutes * 60.0 + STARTUP_ALLOWANCE_S if budget_minutes else NO_BUDGET_TIMEOUT_S


def job_outcome(job: dict[str, Any]) -> tuple[str | None, str]:
    """("Succeeded" | "Failed" | None while running, the condition's message) of a PyTorchJob."""
    for condition in reversed(job.get("status", {}).get("conditions") or []):
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return condition["type"], condition.get("message") or condition.get("reason") or ""
    return None, ""


def in_cluster_api_client() -> Any:
    """A kubernetes ApiClient from the pod's service account (the train task's)."""
    from kubernetes import client, config

    config.load_incluster_config()
    return client.ApiClient()


class StepTerminated(BaseException):
    """SIGTERM reached the launching step (KFP's timeout, a cancelled run, a drained node).

    A BaseException like KeyboardInterrupt: nothing on the way may swallow it before the job
    is deleted."""


@contextmanager
def _terminate_raises() -> Iterator[None]:
    """Turn SIGTERM into StepTerminated while waiting, so cleanup runs before the pod dies
    (Kubernetes sends SIGTERM, then SIGKILL after the grace period). Main thread only: Python
    delivers signals there; elsewhere (tests, threads) the handler is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise StepTerminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def delete_pytorch_job(api: Any, name: str, namespace: str) -> bool:
    """Delete a job and its pods (Background propagation: the call returns at once and the
    garbage collector removes the pods, freeing their GPUs). False when it was already gone."""
    from kubernetes.client import V1DeleteOptions
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                            body=V1DeleteOptions(propagation_policy="Background"))
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def run_pytorch_job(job: dict[str, Any], *, api_client: Any = None, timeout_s: float = NO_BUDGET_TIMEOUT_S,
                    poll_s: float = 15.0) -> dict[str, Any]:
    """Create `job` and poll it until Succeeded (returns the last read object); Failed or
    `timeout_s` raises TrainingJobError naming the job and the operator's message.

    Whatever ends the wait other than success (failure, timeout, SIGTERM, an API error) deletes
    the job, so its pods never hold GPUs for a step that has already given up."""
    from kubernetes import client

    api = client.CustomObjectsApi(api_client if api_client is not None else in_cluster_api_client())
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    deadline = time.monotonic() + timeout_s
    succeeded = False
    try:
        with _terminate_raises():
            while True:
                current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                state, message = job_outcome(current)
                if state == "Succeeded":
                    succeeded = True
                    return current
                if state == "Failed":
                    raise TrainingJobError(name, namespace, f"failed: {message or 'no message from the operator'}; "
                                                            "deleted (its GPUs are free)")
                if time.monotonic() >= deadline:
                    raise TrainingJobError(name, namespace, f"not finished after {timeout_s:.0f} s; deleted "
                                                            "(its GPUs are free)")
                time.sleep(poll_s)
    finally:
        if not succeeded:
            delete_pytorch_job(api, name, namespace)


def current_namespace(default: str = "shoprec") -> str:
    """The namespace of the pod this runs in (its service account's), else `default`."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or default
    except OSError:
        return default


def train_with_pytorch_job(
    clean_dir: str | Path,
    *,
    workers: int,
    train_args: list[str],
    home: str | Path | None = None,
    namespace: str | None = None,
    name: str | None = None,
    api_client: Any = None,
    timeout_s: float = NO_BUDGET_TIMEOUT_S,
    poll_s: float = 15.0,
    training_set: "pd.DataFrame | None" = None,
    image: str | None = None,
) -> Path:
    """Train on 1 master + `workers` workers and return the bundle folder the master wrote.

    The clean data is copied to <home>/jobs/<name>/data on the shared home volume (the job's pods
    mount the same claim at the same path, and read SHOPREC_HOME from the same ConfigMap); the
    master writes the bundle to <home>/jobs/<name>/bundle.

    training_set: the point-in-time training set the step built from Feast (as the in-pod path
    trains on it), written to <home>/jobs/<name>/training_set.parquet and read by every rank, so
    the job's pods need neither the feature store's credentials nor a network path to it.
    timeout_s: how long to wait; also the job's activeDeadlineSeconds.
    """
    name = name or f"shoprec-train-{uuid.uuid4().hex[:10]}"
    namespace = namespace or current_namespace()
    # Retention where job folders are written: each holds a copy of the data, so old runs' folders
    # would fill the shared volume (14 days / 50 folders; SHOPREC_JOBS_RETENTION_DAYS, _MAX_FILES).
    from shoprec.retention import DAY_S, Retention, prune
    prune(Home.at(home).jobs, Retention.from_env("SHOPREC_JOBS", Retention(14 * DAY_S, 50)))
    work = Home.at(home).jobs / name
    data_dir, out_dir = work / "data", work / "bundle"
    shutil.copytree(clean_dir, data_dir)
    args = list(train_args)
    if training_set is not None:
        training_path = work / TRAINING_SET_FILE
        training_set.to_parquet(training_path, index=False)
        args += ["--training-set", str(training_path)]
    job = render_pytorch_job(name, str(data_dir), str(out_dir), workers=workers, namespace=namespace,
                             train_args=args, image=image, active_deadline_s=timeout_s)
    run_pytorch_job(job, api_client=api_client, timeout_s=timeout_s, poll_s=poll_s)
    if not (out_dir / "config.json").is_file():
        raise TrainingJobError(name, namespace, f"succeeded but its master wrote no bundle at {out_dir}")
    return out_dir


def bundle_summary(bundle: str | Path) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics to log, model metadata) from a bundle folder, as the in-pod train step logs them."""
    from shoprec.evaluation.splits import SplitSpec

    root = Path(bundle)
    config = json.loads((root / "config.json").read_text())
    report = json.loads((root / "metrics.json").read_text())
    logged: dict[str, float] = {}
    for model_name, row in report.get("models", {}).items():
        for metric in ("HR@10", "NDCG@10"):
            if metric in row.get("metrics", {}):
                logged[f"{model_name}_{metric.replace('@', '_at_')}"] = round(row["metrics"][metric], 6)
    train = report.get("train", {})
    if "seconds" in train:
        logged["train_seconds"] = round(train["seconds"], 1)
    if "best_epoch" in train:
        logged["best_epoch"] = train["best_epoch"]
    metadata = {
        "framework": "pytorch", "kind": config["kind"], "weights_sha256": config["weights_sha256"],
        "snapshot_id": config.get("snapshot_id"), "feature_service": config.get("feature_service"),
        "device": train.get("device", ""),
        "split": SplitSpec.from_dict(config.get("training", {}).get("split")).label,
        "training_rows": 0,
    }
    return logged, metadata
