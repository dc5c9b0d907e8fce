"""The Kubernetes API calls of a cluster deploy (`shoprec.lifecycle.deployment.InferenceServiceApi`),
with the official `kubernetes` client: read the InferenceService, server-side apply it, put a
previous spec back, read the raw-mode predictor Deployment.

Credentials come from the pod's service account (the deploy step) or the user's kube config
(`shoprec models promote --cluster`), never from code or parameters.
"""

from __future__ import annotations

import os
from typing import Any

from kserve import constants
from kubernetes import client, config
from kubernetes.client.rest import ApiException

GROUP = constants.KSERVE_GROUP
VERSION = constants.KSERVE_V1BETA1_VERSION
PLURAL = constants.KSERVE_PLURAL_INFERENCESERVICE
# Server-side apply tracks who owns which field: this name owns what the deploy step sets, and
# fields other managers set (the overlay's replicas and autoscaling) are left as they are.
FIELD_MANAGER = "shoprec-deploy"
# What a restore copies from the previous object's metadata (the rest belongs to the server).
RESTORED_METADATA = ("labels", "annotations")


def api_client_from_environment(context: str | None = None) -> client.ApiClient:
    """An ApiClient from the pod's service account when in a cluster, else from the kube config
    ($KUBECONFIG or ~/.kube/config, `context` or its current one)."""
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        # $KUBECONFIG read now: the client reads it once, at its import, for its default.
        return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG") or None, context=context)


class KubernetesInferenceServices:
    """InferenceServiceApi over the Kubernetes API (CustomObjectsApi, AppsV1Api)."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client if api_client is not None else api_client_from_environment()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)

    def read(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: creates the service or updates the fields this manager sets, in one
        request. kubernetes-client 30's patch_namespaced_custom_object always sends a JSON merge
        patch, so the apply content type goes through call_api directly."""
        metadata = manifest["metadata"]
        return self.api_client.call_api(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}", "PATCH",
            {"group": GROUP, "version": VERSION, "namespace": metadata["namespace"], "plural": PLURAL,
             "name": metadata["name"]},
            [("fieldManager", FIELD_MANAGER), ("force", True)],
            {"Accept": "application/json", "Content-Type": "application/apply-patch+yaml"},
            body=manifest, response_type="object", auth_settings=["BearerToken"],
            _return_http_data_only=True)

    def restore(self, name: str, namespace: str, previous: dict[str, Any] | None) -> dict[str, Any] | None:
        """Replace the service with `previous`'s spec, labels and annotations (a PUT at the
        current resourceVersion, so a concurrent writer is not overwritten silently; one retry
        on a conflict); delete the service when `previous` is None."""
        if previous is None:
            try:
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            return None
        for attempt in range(2):
            current = self.read(name, namespace)
            if current is None:  # gone meanwhile: create it again as it was
                body = _restorable(previous, None)
                return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            try:
                return self.custom.replace_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _restorable(previous, current))
            except ApiException as exc:
                if exc.status != 409 or attempt:
                    raise
        return None  # unreachable: the second conflict raised

    def predictor_deployment(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            deployment = self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.api_client.sanitize_for_serialization(deployment)


def _restorable(previous: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """The object to PUT: `previous`'s spec and metadata, at `current`'s resourceVersion."""
    old = previous.get("metadata") or {}
    metadata: dict[str, Any] = {"name": old["name"], "namespace": old["namespace"]}
    metadata.update({key: old[key] for key in RESTORED_METADATA if old.get(key)})
    if current is not None:
        metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
    return {"apiVersion": previous.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": previous.get("kind", constants.KSERVE_KIND_INFERENCESERVICE),
            "metadata": metadata, "spec": previous["spec"]}
