"""Deploy a promoted version.

Three ways, named by the deploy step's `target`:

- local: move the registry's `production` alias (a predictor started with `--registry`
  follows it without a restart).
- cluster: apply the KServe InferenceService pointing at the version's immutable `storageUri`
  through the Kubernetes API, wait (bounded) until the new revision is Ready, and only then move
  the alias. Serverless (Knative) mode: the new revision first gets `canaryTrafficPercent`, must
  stay Ready for a hold period, then gets 100%. Raw (Standard) mode: KServe has no canary there;
  the predictor's Deployment rolls its pods and the wait lasts until that rollout completes.
  On a failed or timed-out rollout the previous spec is restored (or the service deleted when
  there was none), the alias stays on the champion, the failure goes to the registry history,
  and DeployError says why.
- gitops: render the manifest to a file (for `kubectl apply` or a GitOps repo) and move the
  alias; nothing is applied, so the cluster serves the new model only once someone applies it.

The manifest comes from `shoprec.kserve.manifests.render_inference_service` and the API calls
from `shoprec.kserve.cluster.KubernetesInferenceServices`; both are passed in, so this module
never imports KServe or the Kubernetes client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import yaml

from shoprec.errors import RegistryError, ShoprecError
from shoprec.lifecycle.registry import PRODUCTION, HistoryEvent, Registry

# Renders the InferenceService manifest for a storage URI (serving.manifests.render_inference_service).
ManifestRenderer = Callable[..., dict[str, Any]]

INFERENCE_SERVICE = "shoprec"
FULL_TRAFFIC = 100
DEPLOY_FAILED = "deploy-failed"  # the history action of a rollout that was undone
# KServe's names for its modes: the old ones, and the ones since 0.15 ("Knative", "Standard").
SERVERLESS_MODES = frozenset({"Serverless", "Knative"})
RAW_MODES = frozenset({"RawDeployment", "Standard"})
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# Condition reasons after which waiting longer cannot help: the revision or rollout is dead.
TERMINAL_REASONS = frozenset({"RevisionFailed", "ProgressDeadlineExceeded", "ContainerMissing",
                              "ExitCode", "ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff"})
FAILED_MODEL_STATES = frozenset({"BlockedByFailedLoad", "InvalidSpec"})


class DeployError(ShoprecError):
    """A cluster rollout failed or timed out; the previous spec was restored."""


class InferenceServiceApi(Protocol):
    """The few Kubernetes API calls a rollout needs (shoprec.kserve.cluster implements them)."""

    def read(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The InferenceService as the API returns it (status included), or None when absent."""

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create or update the service from `manifest` (server-side apply); the stored object."""

    def restore(self, name: str, namespace: str, previous: dict[str, Any] | None) -> dict[str, Any] | None:
        """Put `previous`'s spec, labels and annotations back (delete the service when None)."""

    def predictor_deployment(self, name: str, namespace: str) -> dict[str, Any] | None:
        """Raw mode: the predictor's apps/v1 Deployment (None when absent)."""


@dataclass(frozen=True)
class RolloutPolicy:
    """How a cluster rollout waits and shifts traffic.

    canary_traffic_percent: the new revision's share while it is on probation (serverless mode
    only; None or 100: straight to full traffic). canary_hold_s: how long the canary must stay
    Ready before it gets 100%. mode: KServe's deployment mode; None reads it from the live service.
    """

    timeout_s: float = 600.0
    poll_s: float = 5.0
    canary_traffic_percent: int | None = 10
    canary_hold_s: float = 60.0
    mode: str | None = None


@dataclass
class RolloutReport:
    """What a cluster rollout did, step by step (kept as the deploy step's artifact)."""

    name: str
    namespace: str
    version: str
    storage_uri: str
    mode: str
    canary_traffic_percent: int | None
    revision: str | None = None
    steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "version": self.version,
                "storage_uri": self.storage_uri, "mode": self.mode,
                "canary_traffic_percent": self.canary_traffic_percent, "revision": self.revision,
                "steps": list(self.steps)}


@dataclass(frozen=True)
class ClusterDeploy:
    """A finished cluster deploy: the registry event and the rollout that preceded it."""

    event: HistoryEvent
    rollout: RolloutReport


# --- reading KServe's status ---------------------------------------------------------------------

def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _condition_true(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and str(c.get("status")).lower() == "true" for c in _conditions(obj))


def _predictor_status(isvc: dict[str, Any]) -> dict[str, Any]:
    return ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}


def deployment_mode(isvc: dict[str, Any] | None, configured: str | None = None) -> str:
    """'serverless' or 'raw': the configured mode, else what KServe reports (status, then the
    annotation), else 'serverless' when the predictor has Knative revisions, else 'raw'."""
    found = configured
    if not found and isvc:
        found = (isvc.get("status") or {}).get("deploymentMode") \
            or ((isvc.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION)
    if found in SERVERLESS_MODES:
        return "serverless"
    if found in RAW_MODES:
        return "raw"
    if found:
        raise DeployError(f"KServe deployment mode {found!r} is not one shoprec rolls out "
                          f"(known: {sorted(SERVERLESS_MODES | RAW_MODES)})")
    return "serverless" if isvc and _predictor_status(isvc).get("latestCreatedRevision") else "raw"


def _failure(isvc: dict[str, Any]) -> str | None:
    """Why the service's latest spec cannot become Ready, when KServe already says so."""
    status = isvc.get("status") or {}
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in FAILED_MODEL_STATES:
        info = model.get("lastFailureInfo") or {}
        return (f"model {model['transitionStatus']}: {info.get('reason', '')} "
                f"{info.get('message', '')}".strip())
    for condition in _conditions(isvc):
        if str(condition.get("status")).lower() == "false" and condition.get("reason") in TERMINAL_REASONS:
            return f"{condition.get('type')} {condition['reason']}: {condition.get('message', '')}".strip()
    return None


@dataclass(frozen=True)
class _Target:
    """What 'done' means for one wait.

    generation: KServe must have reconciled at least this one. mode: 'serverless' / 'raw', or
    None to read it from the service on each poll (a service created just now reports it only once
    reconciled). percent: the traffic share the new revision must hold (None: any). old_revision:
    the new revision must differ from it; revision: or be exactly it (promoting a canary).
    fail_fast: stop at a terminal failure (off while restoring: the failed revision's condition
    lingers until Knative has reconciled the restored spec)."""

    generation: int
    mode: str | None
    percent: int | None = FULL_TRAFFIC
    old_revision: str | None = None
    revision: str | None = None
    fail_fast: bool = True


def rollout_state(isvc: dict[str, Any] | None, target: _Target,
                  deployment: dict[str, Any] | None = None) -> tuple[str, str]:
    """("ready" | "failed" | "pending", why) of an InferenceService against `target`;
    `deployment` is the predictor's Deployment in raw mode."""
    if isvc is None:
        return "failed", "the InferenceService disappeared"
    status = isvc.get("status") or {}
    if int(status.get("observedGeneration") or 0) < target.generation:
        return "pending", f"KServe has not reconciled generation {target.generation} yet"
    failure = _failure(isvc)
    if failure and target.fail_fast:
        return "failed", failure
    if (target.mode or deployment_mode(isvc)) == "serverless":
        predictor = _predictor_status(isvc)
        created = predictor.get("latestCreatedRevision")
        # Until Knative creates the new revision the old one is the latest, and Ready: not ours.
        if not created or (target.revision and created != target.revision) \
                or (target.revision is None and created == target.old_revision):
            return "pending", "the new revision is not created yet"
        if predictor.get("latestReadyRevision") != created:
            return "pending", f"revision {created} is not Ready"
        if target.percent is not None:
            share = sum(int(t.get("percent") or 0) for t in predictor.get("traffic") or []
                        if t.get("revisionName") == created)
            if share != target.percent:
                return "pending", f"revision {created} has {share}% of the traffic, not {target.percent}%"
    else:
        waiting = _deployment_waiting(deployment)
        if waiting is not None:
            state, why = waiting
            return ("failed" if state == "failed" and target.fail_fast else "pending"), why
    if not _condition_true(isvc, "Ready"):
        return "pending", failure or "the InferenceService is not Ready"
    return "ready", "Ready"


def _deployment_waiting(deployment: dict[str, Any] | None) -> tuple[str, str] | None:
    """Raw mode: `kubectl rollout status`'s test on the predictor's Deployment (None: rolled out)."""
    if deployment is None:
        return "pending", "the predictor Deployment does not exist yet"
    metadata, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    name = metadata.get("name", "predictor")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"Deployment {name}: {condition.get('message') or 'progress deadline exceeded'}"
    if int(status.get("observedGeneration") or 0) < int(metadata.get("generation") or 0):
        return "pending", f"Deployment {name} has not seen its new spec yet"
    wanted, updated = int(spec.get("replicas", 1)), int(status.get("updatedReplicas") or 0)
    if updated < wanted:
        return "pending", f"Deployment {name}: {updated}/{wanted} pods updated"
    if int(status.get("replicas") or 0) > updated:
        return "pending", f"Deployment {name}: old pods are still running"
    if int(status.get("availableReplicas") or 0) < wanted:
        return "pending", f"Deployment {name}: {status.get('availableReplicas') or 0}/{wanted} pods available"
    return None


def _generation(obj: dict[str, Any] | None) -> int:
    return int(((obj or {}).get("metadata") or {}).get("generation") or 0)


class Rollout:
    """One apply-and-wait against the API. It reads the service first and keeps that object, so
    `undo` can put the previous spec back whatever happened after."""

    def __init__(self, api: InferenceServiceApi, *, name: str = INFERENCE_SERVICE, namespace: str = "shoprec",
                 policy: RolloutPolicy = RolloutPolicy(), sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self.name, self.namespace, self.policy = api, name, namespace, policy
        self.sleep, self.clock = sleep, clock
        self.previous = api.read(name, namespace)
        self.report: RolloutReport | None = None

    def _deployment(self, mode: str | None, isvc: dict[str, Any] | None) -> dict[str, Any] | None:
        if (mode or deployment_mode(isvc, self.policy.mode)) != "raw":
            return None
        # KServe names the raw-mode predictor Deployment "<service>-predictor".
        return self.api.predictor_deployment(f"{self.name}-predictor", self.namespace)

    def wait(self, target: _Target, what: str) -> dict[str, Any]:
        """Poll until `target` holds; DeployError on a terminal failure or after `timeout_s`."""
        deadline = self.clock() + self.policy.timeout_s
        while True:
            current = self.api.read(self.name, self.namespace)
            state, why = rollout_state(current, target, self._deployment(target.mode, current))
            if state == "ready":
                return current or {}
            if state == "failed":
                raise DeployError(f"{what} failed: {why}")
            if self.clock() >= deadline:
                raise DeployError(f"{what} is not Ready after {self.policy.timeout_s:.0f} s: {why}")
            self.sleep(self.policy.poll_s)

    def hold(self, target: _Target) -> None:
        """Watch the canary for `canary_hold_s`: it must stay Ready with its share all along."""
        deadline = self.clock() + self.policy.canary_hold_s
        while self.clock() < deadline:
            self.sleep(max(min(self.policy.poll_s, deadline - self.clock()), 0.0))
            state, why = rollout_state(self.api.read(self.name, self.namespace), target)
            if state != "ready":
                raise DeployError(f"the canary stopped being healthy during its "
                                  f"{self.policy.canary_hold_s:.0f} s hold: {why}")

    def run(self, storage_uri: str, version: str, render: ManifestRenderer, *, canary: bool = True) -> RolloutReport:
        """Apply the service for `storage_uri` and wait until its revision serves all traffic
        (through a canary when `canary`, the mode is serverless and a Ready revision exists)."""
        previous = self.previous
        mode = deployment_mode(previous, self.policy.mode) if previous or self.policy.mode else None
        percent = self.policy.canary_traffic_percent
        # A canary needs a healthy revision to keep the rest of the traffic on.
        use_canary = (canary and mode == "serverless" and percent is not None and 0 < percent < FULL_TRAFFIC
                      and previous is not None and _condition_true(previous, "Ready"))
        # Serverless: an explicit 100, not an omitted field, so that a canaryTrafficPercent another
        # field manager owns (the production overlay's, applied with kubectl) cannot keep the share low.
        full = FULL_TRAFFIC if mode == "serverless" and previous is not None else None
        report = self.report = RolloutReport(self.name, self.namespace, version, storage_uri, mode or "unknown",
                                             percent if use_canary else None)

        def manifest(share: int | None) -> dict[str, Any]:
            return render(storage_uri, name=self.name, namespace=self.namespace,
                          canary_traffic_percent=share, version=version)

        applied = self.api.apply(manifest(percent if use_canary else full))
        report.steps.append(f"applied generation {_generation(applied)}, storageUri {storage_uri}"
                            + (f", as a {percent}% canary" if use_canary else ""))
        old_revision = _predictor_status(previous).get("latestCreatedRevision") if previous else None
        current = self.wait(_Target(_generation(applied), mode, percent if use_canary else FULL_TRAFFIC,
                                    old_revision=old_revision), "the new revision")
        report.mode = mode or deployment_mode(current)
        revision = _predictor_status(current).get("latestCreatedRevision") if report.mode == "serverless" else None
        report.revision = revision
        if not use_canary:
            report.steps.append(f"{f'revision {revision}' if revision else 'the predictor rollout'} "
                                "is Ready with all the traffic")
            return report
        report.steps.append(f"canary revision {revision} is Ready with {percent}% of the traffic")
        self.hold(_Target(_generation(applied), mode, percent, revision=revision))
        report.steps.append(f"the canary stayed Ready for {self.policy.canary_hold_s:.0f} s")
        promoted = self.api.apply(manifest(FULL_TRAFFIC))
        self.wait(_Target(_generation(promoted), mode, FULL_TRAFFIC, revision=revision),
                  f"promoting canary revision {revision} to 100%")
        report.steps.append(f"revision {revision} promoted to 100% of the traffic")
        return report

    def undo(self) -> str:
        """Put the previous spec back (delete the service when there was none); say how it went."""
        try:
            restored = self.api.restore(self.name, self.namespace, self.previous)
        except Exception as exc:  # the rollout already failed: report both, mask neither
            return f"restoring the previous spec FAILED too ({exc}): fix it by hand"
        if self.previous is None:
            return "the InferenceService it created was deleted (there was none before)"
        # Any revision may serve the restored spec (Knative makes a fresh one from the old template).
        target = _Target(_generation(restored), deployment_mode(self.previous, self.policy.mode),
                         percent=None, fail_fast=False)
        try:
            self.wait(target, "the restored spec")
        except DeployError as exc:
            return f"the previous spec was restored, but {exc}"
        return "the previous spec was restored and is Ready"


# --- the deploy step, promote/rollback --cluster, the GitOps path ---------------------------------

def _require_object_store(registry: Registry) -> None:
    if registry.local:
        raise RegistryError(f"a cluster deploy needs a registry the cluster can read (an object-store "
                            f"URL such as s3://...), not the local folder {registry.uri}")


def _fail(registry: Registry, version: str, rollout: Rollout, exc: Exception, *, what: str, actor: str,
          decision: dict[str, Any] | None) -> DeployError:
    """Undo the rollout, record the failure in the history, and build the error to raise."""
    reason = f"{what} of {version} to {rollout.namespace}/{rollout.name} failed: {exc}; {rollout.undo()}"
    try:
        registry.record_event(DEPLOY_FAILED, version, reason=reason, actor=actor, decision=decision,
                              detail=f"{what} undone on the cluster")
    except Exception as record_error:  # the history is best effort here: the step fails anyway
        reason += f" (and recording this in the registry history failed: {record_error})"
    production = registry.production()
    return DeployError(f"{reason}; production stays {production or 'unset'}")


def deploy_cluster(registry: Registry, version: str, *, reason: str, render: ManifestRenderer,
                   api: InferenceServiceApi, actor: str = "pipeline", name: str = INFERENCE_SERVICE,
                   namespace: str = "shoprec", policy: RolloutPolicy = RolloutPolicy(),
                   decision: dict[str, Any] | None = None, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> ClusterDeploy:
    """Roll `version` out on the cluster, then move the production alias to it.

    The alias moves only after the new revision serves all the traffic; any failure before that
    (or of the alias move itself) restores the previous spec, records a "deploy-failed" event
    and raises DeployError with the reason."""
    _require_object_store(registry)
    registry.verify(version)  # unknown or corrupted: refuse before touching the cluster
    champion = registry.production()
    if champion == version:
        raise RegistryError(f"version {version} is already {PRODUCTION} in registry {registry.uri}")
    rollout = Rollout(api, name=name, namespace=namespace, policy=policy, sleep=sleep, clock=clock)
    try:
        report = rollout.run(registry.version_uri(version), version, render, canary=True)
        share = (f"canary {report.canary_traffic_percent}% then 100%" if report.canary_traffic_percent
                 else "full rollout")
        metrics = (decision or {}).get("metrics") or None
        # Compare-and-swap against the champion read before the rollout: if another writer moved
        # the alias meanwhile, this promotion loses, and the cluster is put back below.
        event = registry.promote(version, reason=f"{reason} ({report.mode} mode, {share})", actor=actor,
                                 metrics=metrics, decision=decision, expected=champion)
    except Exception as exc:
        raise _fail(registry, version, rollout, exc, what="deploy", actor=actor, decision=decision) from exc
    return ClusterDeploy(event, report)


def rollback_cluster(registry: Registry, *, reason: str, render: ManifestRenderer, api: InferenceServiceApi,
                     actor: str = "manual", name: str = INFERENCE_SERVICE, namespace: str = "shoprec",
                     policy: RolloutPolicy = RolloutPolicy(), sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> ClusterDeploy:
    """Serve the version before the current production again (no canary: a rollback is urgent),
    then move the alias back; a failed rollout is undone and recorded like a failed deploy."""
    _require_object_store(registry)
    pointer = registry.alias(PRODUCTION)
    if pointer is None or not pointer.previous:
        raise RegistryError(f"registry {registry.uri} has no earlier {PRODUCTION} version to roll back to")
    target = pointer.previous[-1]
    registry.verify(target)
    rollout = Rollout(api, name=name, namespace=namespace, policy=policy, sleep=sleep, clock=clock)
    try:
        report = rollout.run(registry.version_uri(target), target, render, canary=False)
        event = registry.rollback(reason=f"{reason} ({report.mode} mode, full rollout)", actor=actor,
                                  expected=pointer.version)
    except Exception as exc:
        raise _fail(registry, target, rollout, exc, what="rollback", actor=actor, decision=None) from exc
    return ClusterDeploy(event, report)


def write_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    Path(path).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return Path(path)


def deploy_local(registry: Registry, version: str, *, reason: str, actor: str = "pipeline",
                 decision: dict[str, Any] | None = None) -> HistoryEvent:
    """Move the production alias to `version` (recorded in the history with the decision)."""
    metrics = (decision or {}).get("metrics") or None
    return registry.promote(version, reason=reason, actor=actor, metrics=metrics, decision=decision)


def deploy_gitops(registry: Registry, version: str, manifest_path: str | Path, *, reason: str,
                  render: ManifestRenderer, namespace: str = "shoprec",
                  canary_traffic_percent: int | None = 10,
                  decision: dict[str, Any] | None = None) -> HistoryEvent:
    """The GitOps path (render only): write the InferenceService for `version` to
    `manifest_path` for `kubectl apply` or a GitOps repo, and move the alias. Nothing is applied
    here: the cluster serves the new version only once that manifest is applied."""
    _require_object_store(registry)
    storage_uri = registry.version_uri(version)
    manifest = render(storage_uri, namespace=namespace,
                      canary_traffic_percent=canary_traffic_percent, version=version)
    write_manifest(manifest, manifest_path)
    share = "full rollout" if canary_traffic_percent is None else f"canary {canary_traffic_percent}%"
    return deploy_local(registry, version, reason=f"{reason} (GitOps: rendered, not applied; {share})",
                        decision=decision)
