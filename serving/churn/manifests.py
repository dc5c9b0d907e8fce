"""The `shoprec-churn` InferenceService the churn pipeline's deploy step applies for each promoted
version (`shoprec.lifecycle.deployment.deploy_cluster` with `name="shoprec-churn"`): the predictor
pinned to the version's immutable `storageUri`, run by the `shoprec-churn` ServingRuntime
(manifests/base/churn-service.yaml: `python -m shoprec.kserve.churn --model_dir=/mnt/models`).
A new version is a new spec, so KServe rolls out a new revision and the deploy waits for it.
Built with the kserve SDK's typed models, as `shoprec.kserve.manifests` builds the recommender's."""

from __future__ import annotations

from typing import Any

from kserve import ApiClient, V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1PredictorSpec, constants
from kubernetes.client import V1ObjectMeta

from shoprec.churn.bundle import CHURN_MODEL_NAME
from shoprec.errors import RegistryError
from shoprec.kserve.manifests import ROLE_LABEL, model_spec, pod_security

RUNTIME_NAME = "shoprec-churn"  # the ServingRuntime in manifests/base/churn-service.yaml
MODEL_FORMAT = "shoprec-churn-bundle"
SERVICE_ACCOUNT = "shoprec-churn"  # its own: the object-store Secret for the download, no API rights
ROLE = "churn"  # the pod label its NetworkPolicies select on
RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}


def render_churn_service(
    storage_uri: str,
    *,
    name: str = CHURN_MODEL_NAME,
    namespace: str = "shoprec",
    canary_traffic_percent: int | None = None,
    version: str = "",
) -> dict[str, Any]:
    """The whole `shoprec-churn` InferenceService (a plain dict) serving the churn bundle at
    `storage_uri` (the churn registry's versions/<version>/ URL). canary_traffic_percent: that
    share to the new revision, the rest on the last ready one (None: all traffic); version: the
    registry version, recorded as an annotation."""
    if not storage_uri:
        raise RegistryError("the churn InferenceService needs the version's storage URI")
    if canary_traffic_percent is not None and not 0 <= canary_traffic_percent <= 100:
        raise ValueError(f"canary_traffic_percent must be 0..100, got {canary_traffic_percent}")
    isvc = V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=V1ObjectMeta(name=name, namespace=namespace,
                              annotations={"shoprec.io/model-version": version} if version else None,
                              labels={"app.kubernetes.io/part-of": "shoprec"}),
        spec=V1beta1InferenceServiceSpec(predictor=V1beta1PredictorSpec(
            canary_traffic_percent=canary_traffic_percent,
            service_account_name=SERVICE_ACCOUNT,
            automount_service_account_token=False,
            labels={ROLE_LABEL: ROLE},
            security_context=pod_security(),
            model=model_spec(storage_uri, model_format=MODEL_FORMAT, runtime=RUNTIME_NAME, resources=RESOURCES,
                             model_name=name),
        )),
    )
    return ApiClient().sanitize_for_serialization(isvc)
