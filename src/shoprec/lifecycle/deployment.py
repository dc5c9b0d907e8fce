"""Deploy a promoted version: locally by moving the registry's `production` alias (a running
predictor started with `--registry` follows it without a restart); for a cluster by rendering
the KServe InferenceService that points at the version's `storageUri`, with a canary share.

The manifest itself is rendered by `shoprec.kserve.manifests.render_inference_service` (the kserve SDK's
typed models); the caller passes that renderer in, so the library never imports KServe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from shoprec.errors import RegistryError
from shoprec.lifecycle.registry import HistoryEvent, Registry

# Renders the InferenceService manifest for a storage URI (serving.manifests.render_inference_service).
ManifestRenderer = Callable[..., dict[str, Any]]


def write_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    Path(path).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return Path(path)


def deploy_local(registry: Registry, version: str, *, reason: str, actor: str = "pipeline",
                 decision: dict[str, Any] | None = None) -> HistoryEvent:
    """Move the production alias to `version` (recorded in the history with the decision)."""
    metrics = (decision or {}).get("metrics") or None
    return registry.promote(version, reason=reason, actor=actor, metrics=metrics, decision=decision)


def deploy_cluster(registry: Registry, version: str, manifest_path: str | Path, *, reason: str,
                   render: ManifestRenderer, namespace: str = "shoprec",
                   canary_traffic_percent: int | None = 10,
                   decision: dict[str, Any] | None = None) -> HistoryEvent:
    """Render the InferenceService for `version` (written to `manifest_path`, for `kubectl apply`
    or a GitOps repo) and record the promotion in the registry."""
    if registry.local:
        raise RegistryError(f"a cluster deploy needs a registry the cluster can read (an object-store "
                            f"URL such as s3://...), not the local folder {registry.uri}")
    storage_uri = registry.version_uri(version)
    manifest = render(storage_uri, namespace=namespace,
                      canary_traffic_percent=canary_traffic_percent, version=version)
    write_manifest(manifest, manifest_path)
    share = "full rollout" if canary_traffic_percent is None else f"canary {canary_traffic_percent}%"
    return deploy_local(registry, version, reason=f"{reason} ({share})", decision=decision)
