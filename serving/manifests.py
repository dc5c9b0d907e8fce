"""Kubernetes manifests for the KServe side, built with the kserve SDK's typed models and
serialised with `ApiClient().sanitize_for_serialization` (kept out of the library, which never
imports KServe)."""

from __future__ import annotations

import os
from typing import Any

import fsspec
from kserve import (ApiClient, V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1LoggerSpec,
                    V1beta1ModelFormat, V1beta1ModelSpec, V1beta1PredictorSpec, V1beta1TransformerSpec,
                    constants)
from kubernetes.client import (V1Capabilities, V1Container, V1EmptyDirVolumeSource, V1EnvVar, V1EnvVarSource,
                               V1HTTPGetAction, V1ObjectMeta, V1PersistentVolumeClaimVolumeSource,
                               V1PodSecurityContext, V1Probe, V1ResourceRequirements, V1SeccompProfile,
                               V1SecretKeySelector, V1SecurityContext, V1Volume, V1VolumeMount)

from shoprec.config import resolve_image
from shoprec.errors import RegistryError
from shoprec.serving.campaigns import CAMPAIGNS_ENV

INFERENCE_SERVICE_NAME = "shoprec"
RUNTIME_NAME = "shoprec-predictor"  # the ServingRuntime running serving/predictor (our image)
MODEL_FORMAT = "shoprec-bundle"
FEATURE_SERVER_URL = "http://shoprec-feature-server:6566"  # manifests/base/feature-server.yaml
HOME_MOUNT = "/var/lib/shoprec"  # the shared home (manifests/base/home-volume.yaml)
HOME_CLAIM = "shoprec-home"
SERVICE_ACCOUNT = "shoprec-serving"  # the predictor's: its storage initializer reads the object store
TRANSFORMER_SERVICE_ACCOUNT = "shoprec-transformer"  # no rights, no token
# The prediction log's salt (manifests/base/secrets.template.yaml): never a literal in a manifest.
LOG_SALT_SECRET, LOG_SALT_KEY, LOG_SALT_ENV = "shoprec-prediction-log", "log-salt", "SHOPREC_LOG_SALT"
# Pod labels the NetworkPolicies select on (manifests/base/network-policies.yaml).
ROLE_LABEL = "shoprec.io/role"
RUN_AS = 10001  # the image's user (Dockerfile: USER 10001)
# The object store's credentials (manifests/base/secrets.template.yaml), as environment variables
# of a container that reads the store itself (the predictor reading a campaigns table there).
OBJECT_STORE_SECRET = "shoprec-object-store"
OBJECT_STORE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
TRANSFORMER_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
PREDICTOR_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}


def container_security() -> V1SecurityContext:
    """Pod Security `restricted` for one container, and a read-only root (tmp is an emptyDir)."""
    return V1SecurityContext(run_as_non_root=True, run_as_user=RUN_AS, allow_privilege_escalation=False,
                             read_only_root_filesystem=True, capabilities=V1Capabilities(drop=["ALL"]),
                             seccomp_profile=V1SeccompProfile(type="RuntimeDefault"))


def pod_security() -> V1PodSecurityContext:
    """The pod-level half: non-root, the image's group owns mounted volumes, RuntimeDefault seccomp."""
    return V1PodSecurityContext(run_as_non_root=True, run_as_user=RUN_AS, run_as_group=RUN_AS, fs_group=RUN_AS,
                                seccomp_profile=V1SeccompProfile(type="RuntimeDefault"))


def _readiness(model_name: str = INFERENCE_SERVICE_NAME) -> V1Probe:
    return V1Probe(http_get=V1HTTPGetAction(path=f"/v1/models/{model_name}", port=8080), period_seconds=5)


def model_spec(storage_uri: str, *, model_format: str, runtime: str, resources: dict[str, Any],
               model_name: str, env: list[V1EnvVar] | None = None,
               volume_mounts: list[V1VolumeMount] | None = None) -> V1beta1ModelSpec:
    """A predictor's model: the bundle at `storage_uri` (downloaded to /mnt/models by KServe's
    storage initializer) run by `runtime`, locked down and bounded, ready once the V1 endpoint
    of `model_name` answers; `env` is added to the runtime's container environment and
    `volume_mounts` to its mounts. Shared by the recommender's and the churn model's services."""
    return V1beta1ModelSpec(
        env=env or None,
        volume_mounts=volume_mounts or None,
        name="kserve-container",
        model_format=V1beta1ModelFormat(name=model_format),
        runtime=runtime,
        protocol_version="v1",
        storage_uri=storage_uri,
        security_context=container_security(),
        resources=V1ResourceRequirements(**resources),
        readiness_probe=_readiness(model_name),
    )


def campaigns_in_home(campaigns: str) -> bool:
    """Whether a campaigns setting is a file on the shared home (the predictor then mounts it);
    False for an object-store URL. Any other local path names nothing inside the predictor's
    pod (a path of the machine that rendered the service, say): a ValueError saying so."""
    protocol, path = fsspec.core.split_protocol(campaigns)
    if protocol not in (None, "file", "local"):
        return False
    inside = os.path.normpath(path)
    if not inside.startswith(HOME_MOUNT + "/"):
        raise ValueError(f"campaigns table {campaigns!r}: on a cluster it must be an object-store URL "
                         f"(s3://...) or a file on the shared home under {HOME_MOUNT}/; a local path "
                         "elsewhere does not exist in the predictor's pod")
    return True


def campaigns_env(campaigns: str) -> list[V1EnvVar]:
    """The predictor container's environment for a campaigns table (`shoprec.serving.campaigns`):
    SHOPREC_CAMPAIGNS, and for an object-store URL the store's credentials from its Secret (KServe
    gives them to the storage initializer only, not to the container that serves)."""
    env = [V1EnvVar(name=CAMPAIGNS_ENV, value=campaigns)]
    if not campaigns_in_home(campaigns):
        env += [V1EnvVar(name=key, value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(
            name=OBJECT_STORE_SECRET, key=key))) for key in OBJECT_STORE_KEYS]
    return env


def transformer_spec(image: str, *, feature_server_url: str = FEATURE_SERVER_URL,
                     feature_timeout_ms: int = 50, logger_url: str | None = None) -> V1beta1TransformerSpec:
    """The transformer component (serving/transformer) as manifests/base/inference-service.yaml
    has it. logger_url: also send every request and answer to KServe's payload logger there
    (e.g. a Knative broker), beside the prediction log on the shared home."""
    container = V1Container(
        name="kserve-container",
        image=image,
        command=["python", "-m", "shoprec.kserve.transformer"],
        # KServe adds --model_name and --predictor_host.
        args=[f"--feature_server_url={feature_server_url}", f"--feature_timeout_ms={feature_timeout_ms}",
              f"--home={HOME_MOUNT}"],
        env=[V1EnvVar(name="SHOPREC_HOME", value=HOME_MOUNT),
             # The transformer refuses to start on a cluster without it (serving/transformer).
             V1EnvVar(name=LOG_SALT_ENV, value_from=V1EnvVarSource(
                 secret_key_ref=V1SecretKeySelector(name=LOG_SALT_SECRET, key=LOG_SALT_KEY)))],
        security_context=container_security(),
        resources=V1ResourceRequirements(**TRANSFORMER_RESOURCES),
        readiness_probe=_readiness(),
        volume_mounts=[V1VolumeMount(name="home", mount_path=HOME_MOUNT),
                       V1VolumeMount(name="tmp", mount_path="/tmp")],
    )
    return V1beta1TransformerSpec(
        service_account_name=TRANSFORMER_SERVICE_ACCOUNT,
        automount_service_account_token=False,
        labels={ROLE_LABEL: "transformer"},
        security_context=pod_security(),
        containers=[container],
        volumes=[V1Volume(name="home", persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(
            claim_name=HOME_CLAIM)), V1Volume(name="tmp", empty_dir=V1EmptyDirVolumeSource())],
        logger=V1beta1LoggerSpec(mode="all", url=logger_url) if logger_url else None,
    )


def render_inference_service(
    storage_uri: str,
    *,
    name: str = INFERENCE_SERVICE_NAME,
    namespace: str = "shoprec",
    canary_traffic_percent: int | None = None,
    runtime: str = RUNTIME_NAME,
    version: str = "",
    service_account: str | None = SERVICE_ACCOUNT,
    image: str | None = None,
    feature_server_url: str = FEATURE_SERVER_URL,
    logger_url: str | None = None,
    campaigns: str | None = None,
) -> dict[str, Any]:
    """The whole InferenceService manifest (a plain dict): the transformer (Feast features,
    fallbacks, reasons, prediction log) in front of the predictor serving the bundle at
    `storage_uri`. Whole, because `kubectl apply` of a service without its transformer
    would remove the running one.

    canary_traffic_percent: route that share of traffic to this revision and keep the rest on
    the last ready one (None: all traffic, i.e. a full rollout). image: the transformer's
    image (default: $SHOPREC_IMAGE or the release image). logger_url: see `transformer_spec`.
    campaigns: the campaigns table the predictor loads at start, an object-store URL
    (s3://...) or a file on the shared home (under HOME_MOUNT, which the predictor then mounts
    read-only; any other local path is refused, `campaigns_in_home`): passed as
    $SHOPREC_CAMPAIGNS on its container (`campaigns_env`); default: $SHOPREC_CAMPAIGNS of the
    deploying process (the deploy step, `shoprec models promote --cluster`), as the image
    defaults to $SHOPREC_IMAGE; "" or unset: no table, and the variable is absent."""
    if not storage_uri:
        raise RegistryError("an InferenceService needs the version's storage URI")
    if canary_traffic_percent is not None and not 0 <= canary_traffic_percent <= 100:
        raise ValueError(f"canary_traffic_percent must be 0..100, got {canary_traffic_percent}")
    annotations = {"shoprec.io/model-version": version} if version else None
    campaigns = (os.environ.get(CAMPAIGNS_ENV, "") if campaigns is None else campaigns).strip()
    # A table on the shared home: the predictor mounts the home, read-only (it only reads it).
    in_home = bool(campaigns) and campaigns_in_home(campaigns)
    isvc = V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=V1ObjectMeta(name=name, namespace=namespace, annotations=annotations,
                              labels={"app.kubernetes.io/part-of": "shoprec"}),
        spec=V1beta1InferenceServiceSpec(
            predictor=V1beta1PredictorSpec(
                canary_traffic_percent=canary_traffic_percent,
                service_account_name=service_account,
                automount_service_account_token=False,
                labels={ROLE_LABEL: "predictor"},
                security_context=pod_security(),
                model=model_spec(storage_uri, model_format=MODEL_FORMAT, runtime=runtime,
                                 resources=PREDICTOR_RESOURCES, model_name=INFERENCE_SERVICE_NAME,
                                 env=campaigns_env(campaigns) if campaigns else None,
                                 volume_mounts=[V1VolumeMount(name="home", mount_path=HOME_MOUNT, read_only=True)]
                                 if in_home else None),
                volumes=[V1Volume(name="home", persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(
                    claim_name=HOME_CLAIM, read_only=True))] if in_home else None,
            ),
            transformer=transformer_spec(resolve_image(image), feature_server_url=feature_server_url,
                                         logger_url=logger_url),
        ),
    )
    return ApiClient().sanitize_for_serialization(isvc)
