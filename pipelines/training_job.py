"""Multi-node training: a Kubeflow Training Operator PyTorchJob (kubeflow.org/v1) running the same
entry point as in-pod training, `torchrun -m shoprec.training.ddp` (one master, N workers, NCCL).

The operator sets PET_NNODES / PET_NODE_RANK / PET_MASTER_ADDR / PET_MASTER_PORT and, from
`nprocPerNode`, PET_NPROC_PER_NODE on every pod; torchrun reads its arguments from those, so the
command is identical on every replica. Data and bundle paths live on the shared home volume.
"""

from __future__ import annotations

from typing import Any

from shoprec.config import ClusterSettings, resolve_image

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
