"""Kubernetes manifests for the KServe side, built with the kserve SDK's typed models and
serialised with `ApiClient().sanitize_for_serialization` (kept out of the library, which never
imports KServe)."""

from __future__ import annotations

from typing import Any

from kserve import (ApiClient, V1beta1InferenceService, V1beta1InferenceServiceSpec,
                    V1beta1ModelFormat, V1beta1ModelSpec, V1beta1PredictorSpec, constants)
from kubernetes.client import V1ObjectMeta

from shoprec.errors import RegistryError

INFERENCE_SERVICE_NAME = "shoprec"
RUNTIME_NAME = "shoprec-predictor"  # the ServingRuntime running serving/predictor (our image)
MODEL_FORMAT = "shoprec-bundle"


def render_inference_service(
    storage_uri: str,
    *,
    name: str = INFERENCE_SERVICE_NAME,
    namespace: str = "shoprec",
    canary_traffic_percent: int | None = None,
    runtime: str = RUNTIME_NAME,
    version: str = "",
    service_account: str | None = None,
) -> dict[str, Any]:
    """The InferenceService manifest (a plain dict) serving the bundle at `storage_uri`.

    canary_traffic_percent: route that share of traffic to this revision and keep the rest on
    the last ready one (None: all traffic, i.e. a full rollout)."""
    if not storage_uri:
        raise RegistryError("an InferenceService needs the version's storage URI")
    if canary_traffic_percent is not None and not 0 <= canary_traffic_percent <= 100:
        raise ValueError(f"canary_traffic_percent must be 0..100, got {canary_traffic_percent}")
    annotations = {"shoprec.io/model-version": version} if version else None
    isvc = V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=V1ObjectMeta(name=name, namespace=namespace, annotations=annotations,
                              labels={"app.kubernetes.io/part-of": "shoprec"}),
        spec=V1beta1InferenceServiceSpec(
            predictor=V1beta1PredictorSpec(
                canary_traffic_percent=canary_traffic_percent,
                service_account_name=service_account,
                model=V1beta1ModelSpec(
                    name="kserve-container",
                    model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
                    runtime=runtime,
                    protocol_version="v1",
                    storage_uri=storage_uri,
                ),
            )
        ),
    )
    return ApiClient().sanitize_for_serialization(isvc)
