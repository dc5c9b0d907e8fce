"""Multi-node training: a Kubeflow Training Operator PyTorchJob (kubeflow.org/v1) running the same
entry point as in-pod training, `torchrun -m shoprec.training.ddp` (one master, N workers, NCCL).

The operator sets PET_NNODES / PET_NODE_RANK / PET_MASTER_ADDR / PET_MASTER_PORT and, from
`nprocPerNode`, PET_NPROC_PER_NODE on every pod; torchrun reads its arguments from those, so the
command is identical on every replica. Data and bundle paths live on the shared home volume.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from shoprec.config import ClusterSettings, resolve_image
from shoprec.home import Home
from shoprec.errors import TrainingJobError

CONTAINER = "pytorch"  # the operator finds the training container by this name


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
    settings: ClusterSettings = ClusterSettings(),
) -> dict[str, Any]:
    """The PyTorchJob manifest (a plain dict): 1 master + `workers` workers, `gpus_per_node` each."""
    if workers < 1:
        raise ValueError(f"a multi-node job needs at least 1 worker besides the master, got {workers}")
    if gpus_per_node < 1:
        raise ValueError(f"gpus_per_node must be at least 1, got {gpus_per_node}")
    key, value = settings.gpu_node_label
    container = {
        "name": CONTAINER,
        "image": resolve_image(image),
        "command": ["torchrun", "-m", "shoprec.training.ddp", "--data", data_dir, "--out", out_dir,
                    *(train_args or [])],
        "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
        "envFrom": [{"configMapRef": {"name": settings.settings_config_map}},
                    {"secretRef": {"name": settings.object_store.name}}],
        "resources": {"limits": {"nvidia.com/gpu": gpus_per_node}},
        "volumeMounts": [{"name": "home", "mountPath": settings.home_mount},
                         # NCCL needs more shared memory than a container's default 64 MiB.
                         {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
    }
    pod = {
        "spec": {
            "serviceAccountName": settings.service_account,
            "nodeSelector": {key: value},
            "tolerations": [{"key": settings.gpu_taint, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [container],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": settings.home_claim}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
        }
    }

    def replicas(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "OnFailure", "template": pod}

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "shoprec"}},
        "spec": {
            "nprocPerNode": str(gpus_per_node),
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 2},
            "pytorchReplicaSpecs": {"Master": replicas(1), "Worker": replicas(workers)},
        },
    }


# ---------------------------------------------------------------------------------------------
# Launching: the train step's `workers > 0` path (entry side: the library never imports kubernetes).

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NO_BUDGET_TIMEOUT_S = 6 * 3600.0
# Scheduling, image pull and rendezvous on top of the training budget itself.
STARTUP_ALLOWANCE_S = 30 * 60.0


def ddp_args(*, max_epochs: int, learning_rate: float, hidden: int, max_len: int, dropout: float,
             budget_minutes: float, split: str = "leave-one-out", cutoff: str = "") -> list[str]:
    """The train step's settings as arguments of `shoprec.training.ddp` (budget 0 = no limit)."""
    args = ["--epochs", str(max_epochs), "--lr", str(learning_rate), "--hidden", str(hidden),
            "--max-len", str(max_len), "--dropout", str(dropout), "--split", split]
    args += ["--cutoff", cutoff] if cutoff else []
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


def run_pytorch_job(job: dict[str, Any], *, api_client: Any = None, timeout_s: float = NO_BUDGET_TIMEOUT_S,
                    poll_s: float = 15.0) -> dict[str, Any]:
    """Create `job` and poll it until Succeeded (returns the last read object); Failed or
    `timeout_s` raises TrainingJobError naming the job and the operator's message."""
    from kubernetes import client

    api = client.CustomObjectsApi(api_client if api_client is not None else in_cluster_api_client())
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    deadline = time.monotonic() + timeout_s
    while True:
        current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state, message = job_outcome(current)
        if state == "Succeeded":
            return current
        if state == "Failed":
            raise TrainingJobError(name, namespace, f"failed: {message or 'no message from the operator'}")
        if time.monotonic() >= deadline:
            # Left in place (cleanPodPolicy None) so its pods' logs can be read; it still holds GPUs.
            raise TrainingJobError(name, namespace, f"not finished after {timeout_s:.0f} s; delete it with "
                                                    f"`kubectl delete pytorchjob {name} -n {namespace}`")
        time.sleep(poll_s)


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
) -> Path:
    """Train on 1 master + `workers` workers and return the bundle folder the master wrote.

    The clean data is copied to <home>/jobs/<name>/data on the shared home volume (the job's pods
    mount the same claim at the same path, and read SHOPREC_HOME from the same ConfigMap); the
    master writes the bundle to <home>/jobs/<name>/bundle.
    """
    name = name or f"shoprec-train-{uuid.uuid4().hex[:10]}"
    namespace = namespace or current_namespace()
    work = Home.at(home).jobs / name
    data_dir, out_dir = work / "data", work / "bundle"
    shutil.copytree(clean_dir, data_dir)
    job = render_pytorch_job(name, str(data_dir), str(out_dir), workers=workers, namespace=namespace,
                             train_args=train_args)
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
