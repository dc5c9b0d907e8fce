"""What the pipelines share: the data steps with their parameters, and the cluster settings of
pipeline tasks, through kfp-kubernetes.

`data_steps` wires ingest -> validate -> build_features -> materialize, the same components
with the same settings in every pipeline that trains on the shop's data (training, churn), and
`with_data_parameters` gives such a pipeline their parameters: one definition of each.

The settings land in the compiled YAML's platform spec (Kubernetes only). kfp.local runs every
task as a subprocess of this interpreter and ignores them, so one pipeline definition serves both;
retries are the exception (kfp.local honours them too), so only steps whose failures are usually
transient (a store, a registry, the network) get them.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields

from kfp import kubernetes
from kfp.dsl import PipelineTask

from shoprec.components.build_features import build_features
from shoprec.components.ingest import ingest
from shoprec.components.materialize import materialize
from shoprec.components.validate import validate
from shoprec.config import DEFAULT_GPU_IMAGE, DEFAULT_MAX_LEN, ClusterSettings, SecretRef

CLUSTER = ClusterSettings()
# The prediction log's user-id hash key (manifests/base/secrets.template.yaml): the transformer
# hashes with it, the monitoring reports hash the events with the same key to join the log.
LOG_SALT = SecretRef("shoprec-prediction-log", {"log-salt": "SHOPREC_LOG_SALT"})
# Every step runs as the image's non-root user (Dockerfile: USER 10001); KFP's backend adds
# allowPrivilegeEscalation false, dropped capabilities and RuntimeDefault seccomp on its own.
RUN_AS_USER = 10001
# Pod labels the NetworkPolicies select on (manifests/base/network-policies.yaml).
PIPELINE_LABEL = ("shoprec.io/role", "pipeline")
REDIS_CLIENT_LABEL = ("shoprec.io/redis-client", "true")


@dataclass(frozen=True)
class Resources:
    """A step's CPU and memory: requests (what the scheduler reserves) and limits (where the
    kernel throttles or kills it). Sized from benchmarks/RESULTS.md's per-step peaks with room
    for larger shops; raise them per deployment rather than leaving any step unbounded."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


SMALL = Resources("250m", "512Mi", "1", "1Gi")          # a decision over a small JSON
LIGHT = Resources("500m", "1Gi", "2", "2Gi")            # a client of an API (deploy, trigger)
MEDIUM = Resources("1", "2Gi", "2", "4Gi")              # streamed data steps (< 1 GB at 30M events)
HEAVY = Resources("2", "4Gi", "4", "8Gi")               # DuckDB / evaluation over whole frames
# The Feast point-in-time join and the training loop: 7 GB on the Instacart sample at max_len 200.
TRAIN = Resources("4", "16Gi", "8", "32Gi")
STEP_RESOURCES: dict[str, Resources] = {
    "ingest": MEDIUM, "validate": MEDIUM, "build_features": HEAVY, "materialize": MEDIUM,
    "train": TRAIN, "evaluate": HEAVY, "promote": MEDIUM, "deploy": LIGHT, "monitor": HEAVY,
    "drift_reports": HEAVY, "drift_decide": SMALL, "drift_trigger": LIGHT,
    # The churn pipeline (pipelines/churn.py): a small MLP over user_stats rows, CPU only.
    "churn_train": HEAVY, "churn_register": MEDIUM, "churn_deploy": LIGHT, "churn_monitor": HEAVY,
}
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
    """One NVIDIA GPU, on a node of the GPU pool, tolerating the pool's taint, on the CUDA image
    (the CPU image's torch cannot use the GPU). DEFAULT_GPU_IMAGE is a placeholder the compiler
    replaces with the configured one (pipelines/compile.py), as DEFAULT_IMAGE is for CPU steps."""
    task.set_container_image(DEFAULT_GPU_IMAGE)
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    key, value = settings.gpu_node_label
    kubernetes.add_node_selector(task, label_key=key, label_value=value)
    kubernetes.add_toleration(task, key=settings.gpu_taint, operator="Exists", effect="NoSchedule")
    return task


def retry_transient(task: PipelineTask) -> PipelineTask:
    """Retry a step that talks to an outside service (store, registry, object store)."""
    return task.set_retry(num_retries=RETRIES, backoff_duration=RETRY_BACKOFF, backoff_factor=2.0)


def on_cluster(task: PipelineTask, name: str) -> PipelineTask:
    """What every step gets on a cluster: its display name, its CPU and memory requests and
    limits (STEP_RESOURCES: a step without an entry is a KeyError at compile time, not an
    unbounded pod), the non-root user, and the pipeline label the NetworkPolicies select on."""
    size = STEP_RESOURCES[name]
    task.set_display_name(name)
    task.set_cpu_request(size.cpu_request).set_cpu_limit(size.cpu_limit)
    task.set_memory_request(size.memory_request).set_memory_limit(size.memory_limit)
    kubernetes.set_security_context(task, run_as_user=RUN_AS_USER, run_as_non_root=True)
    kubernetes.add_pod_label(task, label_key=PIPELINE_LABEL[0], label_value=PIPELINE_LABEL[1])
    return task


def as_deploy_step(task: PipelineTask, name: str) -> PipelineTask:
    """What a deploy step gets (it runs under the gate's `dsl.If`): `on_cluster`, never from
    cache (the registry and the cluster change outside the run), the shared home, and no retry:
    a failed rollout has already been undone and recorded, and a retry would start a second
    canary and record a second failure for the same decision."""
    on_cluster(task, name)
    task.set_caching_options(enable_caching=False)
    return with_shared_home(task)


def reaches_redis(task: PipelineTask) -> PipelineTask:
    """Label a step that writes the online store: the only pipeline pods Redis admits."""
    kubernetes.add_pod_label(task, label_key=REDIS_CLIENT_LABEL[0], label_value=REDIS_CLIENT_LABEL[1])
    return task


# --- the data steps, shared by the training and churn pipelines ----------------------------------

@dataclass(frozen=True)
class DataParameters:
    """The data steps' pipeline parameters (inside a pipeline function: their channels).

    dataset: instacart, ml-100k, or the path of an events file (items_path: its items file).
    limit_users: only the first N users (0 = all). The validation gate's settings:
    max_events_per_user_day, window_start / window_end, max_quarantine_share, timestamp_unit.
    features_as_of: the feature tables' as-of time ('' = the last clean event). max_len: the
    window of recent items kept per user (the model's too). home: '' = $SHOPREC_HOME or
    ./shoprec-home (its Feast store is applied and materialized)."""

    dataset: str = "instacart"
    items_path: str = ""
    limit_users: int = 0
    max_events_per_user_day: int = 1000
    window_start: str = "1995-01-01"
    window_end: str = ""
    max_quarantine_share: float = 0.01
    timestamp_unit: str = "auto"
    features_as_of: str = ""
    max_len: int = DEFAULT_MAX_LEN
    home: str = ""


def with_data_parameters(body: Callable[..., None]) -> Callable[..., None]:
    """A pipeline function taking DataParameters' fields as its first parameters, then `body`'s
    own (those after its first, `data`): what `dsl.pipeline` compiles. `body(data, ...)` gets them
    gathered in one DataParameters, so each pipeline declares only the parameters of its model."""
    types = typing.get_type_hints(DataParameters)
    shared = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default,
                                annotation=types[f.name]) for f in fields(DataParameters)]
    own = list(inspect.signature(body).parameters.values())[1:]
    signature = inspect.Signature([*shared, *own])

    @functools.wraps(body)
    def pipeline(*args: typing.Any, **kwargs: typing.Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        data = DataParameters(**{f.name: values.pop(f.name) for f in fields(DataParameters)})
        return body(data, **values)

    pipeline.__signature__ = signature  # type: ignore[attr-defined]  # what kfp reads
    return pipeline


@dataclass(frozen=True)
class DataSteps:
    """The data steps' tasks, whose outputs the model steps consume."""

    ingest: PipelineTask
    validate: PipelineTask
    build_features: PipelineTask
    materialize: PipelineTask


def data_steps(data: DataParameters) -> DataSteps:
    """ingest -> validate -> build_features -> materialize, with their cluster settings. A failed
    validation stops everything after it; the online store materialized here is the one the
    servers read per request."""
    ingest_task = ingest(dataset=data.dataset, items_path=data.items_path, limit_users=data.limit_users)
    # Name, CPU/memory requests and limits, non-root user, pipeline label (cluster only).
    on_cluster(ingest_task, "ingest")
    # The source may change between runs under the same parameters: never serve it from cache.
    ingest_task.set_caching_options(enable_caching=False)
    # Cluster only (kfp.local ignores these): the shared home volume, settings and object-store keys.
    with_shared_home(ingest_task)

    validate_task = validate(
        raw=ingest_task.outputs["raw"],
        max_events_per_user_day=data.max_events_per_user_day,
        window_start=data.window_start,
        window_end=data.window_end,
        max_quarantine_share=data.max_quarantine_share,
        timestamp_unit=data.timestamp_unit,
    )
    on_cluster(validate_task, "validate")

    # Feature tables as of `features_as_of`, then the Feast store of `home` is applied and materialized.
    features_task = build_features(clean=validate_task.outputs["clean"], as_of=data.features_as_of,
                                   max_len=data.max_len)
    on_cluster(features_task, "build_features")
    materialize_task = materialize(features=features_task.outputs["features"], home=data.home)
    on_cluster(materialize_task, "materialize")
    # It writes to a store outside the run (the home's online store): never skip it from cache.
    materialize_task.set_caching_options(enable_caching=False)
    # The only pipeline step Redis admits (NetworkPolicy redis-from-feature-server-and-materialize).
    with_secrets(retry_transient(with_shared_home(reaches_redis(materialize_task))), CLUSTER.feature_store)
    return DataSteps(ingest_task, validate_task, features_task, materialize_task)
