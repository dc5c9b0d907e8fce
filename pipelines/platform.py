"""Cluster settings of pipeline tasks, through kfp-kubernetes.

The settings land in the compiled YAML's platform spec (Kubernetes only). kfp.local runs every
task as a subprocess of this interpreter and ignores them, so one pipeline definition serves both;
retries are the exception (kfp.local honours them too), so only steps whose failures are usually
transient (a store, a registry, the network) get them.
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask

from shoprec.config import ClusterSettings, SecretRef

CLUSTER = ClusterSettings()
# Two more tries, 15 s then 30 s later: enough for a Redis fail-over or an object-store hiccup.
RETRIES = 2
RETRY_BACKOFF = "15s"


def with_secrets(task: PipelineTask, *secrets: SecretRef) -> PipelineTask:
    """Each Secret's keys become the task's environment variables (never pipeline parameters)."""
    for secret in secrets:
        kubernetes.use_secret_as_env(task, secret_name=secret.name, secret_key_to_env=dict(secret.env))
    return task


def with_shared_home(task: PipelineTask, settings: ClusterSettings = CLUSTER) -> PipelineTask:
    """Mount the shared home volume and read the non-secret settings (SHOPREC_HOME, ...) from the
    ConfigMap, so every task of a run sees the same features, registry and reports."""
    kubernetes.mount_pvc(task, pvc_name=settings.home_claim, mount_path=settings.home_mount)
    kubernetes.use_config_map_as_env(task, config_map_name=settings.settings_config_map,
                                     config_map_key_to_env={key: key for key in settings.settings_keys})
    return with_secrets(task, settings.object_store)


def on_gpu_node(task: PipelineTask, settings: ClusterSettings = CLUSTER) -> PipelineTask:
    """One NVIDIA GPU, on a node of the GPU pool, tolerating the pool's taint."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    key, value = settings.gpu_node_label
    kubernetes.add_node_selector(task, label_key=key, label_value=value)
    kubernetes.add_toleration(task, key=settings.gpu_taint, operator="Exists", effect="NoSchedule")
    return task


def retry_transient(task: PipelineTask) -> PipelineTask:
    """Retry a step that talks to an outside service (store, registry, object store)."""
    return task.set_retry(num_retries=RETRIES, backoff_duration=RETRY_BACKOFF, backoff_factor=2.0)
