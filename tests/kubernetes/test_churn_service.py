"""`shoprec-churn` on Kubernetes, checked on what kustomize renders: the InferenceService against
the KServe CRD, the same lock-down as the other servers, its NetworkPolicies evaluated, its own
account without API rights, arguments the real server entry point accepts, and the service the
churn pipeline's deploy step renders agreeing with the committed one."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.kubernetes.test_manifests import (OVERLAYS, REPO, SCHEMAS, by_kind, crd_validator, errors_of,
                                             needs_kustomize, render)
from tests.kubernetes.test_security import allowed, rules_of, workloads

pytestmark = needs_kustomize


def churn_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The predictor's pod: the InferenceService's predictor with the runtime's container merged
    with the model spec's settings, as KServe merges them."""
    predictor = by_kind(docs, "InferenceService", "shoprec-churn")["spec"]["predictor"]
    runtime = by_kind(docs, "ServingRuntime", predictor["model"]["runtime"])["spec"]
    container = {**runtime["containers"][0], **{k: v for k, v in predictor["model"].items()
                                               if k in ("securityContext", "resources")}}
    return {**predictor, "containers": [container], "volumes": runtime.get("volumes", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_churn_service_validates_against_the_kserve_crd(overlay: str) -> None:
    validator = crd_validator(SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    docs = render(overlay)
    isvc = by_kind(docs, "InferenceService", "shoprec-churn")
    assert errors_of(validator, isvc) == []
    assert isvc["metadata"]["namespace"] == ("shoprec-dev" if overlay == "dev" else "shoprec")
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"].startswith("s3://shoprec/registry/shoprec-churn/versions/")
    assert model["readinessProbe"]["httpGet"]["path"] == "/v1/models/shoprec-churn"
    runtime = by_kind(docs, "ServingRuntime", model["runtime"])["spec"]
    assert runtime["supportedModelFormats"][0]["name"] == model["modelFormat"]["name"]
    assert runtime["containers"][0]["command"] == ["python", "-m", "shoprec.kserve.churn"]
    broken = {**isvc, "spec": {"predictor": {**isvc["spec"]["predictor"], "minReplicas": "two"}}}
    assert any("minReplicas" in e for e in errors_of(validator, broken))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_churn_server_is_locked_down_like_the_others(overlay: str) -> None:
    docs = render(overlay)
    pod = churn_pod(docs)
    context = pod["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}
    # The same container settings as the recommender's transformer, field for field.
    transformer = workloads(docs)["transformer"]["containers"][0]
    [container] = pod["containers"]
    assert container["securityContext"] == transformer["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/var/lib/shoprec"]["readOnly"] is True  # it reads the home, never writes it
    # Credentials come from Secrets only, and only keys the secret template defines.
    template = {s["metadata"]["name"]: s for s in
                yaml.safe_load_all((REPO / "manifests/base/secrets.template.yaml").read_text())}
    for entry in container["env"]:
        if "value" in entry:
            assert not any(w in entry["name"].lower() for w in ("pass", "secret", "key", "redis")), entry
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in template[ref["name"]]["stringData"], ref
    env = {e["name"]: e for e in container["env"]}
    assert env["SHOPREC_REDIS"]["valueFrom"]["secretKeyRef"]["key"] == "redis-reader"  # read-only user


def test_churn_account_is_its_own_and_has_no_api_rights() -> None:
    docs = render("production")
    account = churn_pod(docs)["serviceAccountName"]
    others = {pod["pod"]["serviceAccountName"] for pod in workloads(docs).values()}
    assert account not in others
    [declared] = [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account]
    assert declared["automountServiceAccountToken"] is False
    # Only the object-store Secret its storage initializer reads to download the version.
    assert declared["secrets"] == [{"name": "shoprec-object-store"}]
    assert rules_of(docs, account) == []


def test_network_policies_let_callers_in_and_the_churn_server_read_redis_only() -> None:
    docs = render("production")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    found = workloads(docs)
    churn = churn_pod(docs)["labels"]
    redis, predictor = found["redis"]["labels"], found["predictor"]["labels"]
    feature_server = found["shoprec-feature-server"]["labels"]
    stranger = {"app": "someone-else"}
    assert allowed(policies, stranger, churn, 8080)  # a public API, as the transformer
    assert not allowed(policies, stranger, churn, 9000)  # only the server's port
    assert allowed(policies, churn, redis, 6379)  # it reads user_stats online itself
    assert not allowed(policies, stranger, redis, 6379)
    assert not allowed(policies, churn, predictor, 8080) and not allowed(policies, churn, feature_server, 6566)
    # The evaluator can say no: without its policy the churn server cannot reach Redis.
    assert not allowed([p for p in policies if p["metadata"]["name"] != "redis-from-churn"], churn, redis, 6379)


def test_the_server_entry_point_accepts_the_manifest_arguments() -> None:
    from shoprec.kserve.churn.__main__ import parse_args

    [container] = churn_pod(render("production"))["containers"]
    # KServe puts the InferenceService's name where the runtime says {{.Name}}.
    args = parse_args([a.replace("{{.Name}}", "shoprec-churn") for a in container["args"]])
    assert args.model_name == "shoprec-churn" and args.http_port == 8080
    assert args.model_dir == "/mnt/models" and args.home == "/var/lib/shoprec"  # the version KServe downloaded


def test_base_churn_service_matches_what_the_deploy_step_renders() -> None:
    from shoprec.kserve.churn.manifests import render_churn_service

    committed = by_kind(render("production"), "InferenceService", "shoprec-churn")
    rendered = render_churn_service("s3://shoprec/registry/shoprec-churn/versions/v1/", version="v1")
    assert rendered["metadata"]["name"] == committed["metadata"]["name"]
    mine, base = rendered["spec"]["predictor"], committed["spec"]["predictor"]
    for key in ("labels", "serviceAccountName", "automountServiceAccountToken", "securityContext"):
        assert mine[key] == base[key], key
    for key in ("name", "modelFormat", "runtime", "protocolVersion", "securityContext", "resources",
                "readinessProbe"):
        assert mine["model"][key] == base["model"][key], key
    validator = crd_validator(SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    assert errors_of(validator, rendered) == []
