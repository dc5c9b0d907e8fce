"""The churn pipeline's deploy step (`churn_deploy`, the KFP component's own function) on a
cluster: the real `shoprec.lifecycle.deployment` rollout and the real `kubernetes` client against
FakeKServe (tests/kubernetes/fake_api.py), the stand-in Kubernetes API the recommender's deploy
contract tests use, with real churn versions in an object-store registry (fsspec memory://)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from shoprec.churn.bundle import churn_registry
from shoprec.churn.steps import gate_and_register
from shoprec.churn.train import ChurnOutcome
from shoprec.lifecycle.deployment import DEPLOY_FAILED, DeployError
from tests.churn.conftest import shifted_copy
from tests.kubernetes.fake_api import APPLY_PATCH, FakeKServe, running
from tests.kubernetes.test_deploy_contract import OOM, kubeconfig
from tests.kubernetes.test_manifests import SCHEMAS, crd_validator, errors_of

CHURN_ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/shoprec/inferenceservices/shoprec-churn"


@pytest.fixture
def serverless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKServe]:
    """A stand-in KServe API, reached through a kube config as the step's client reads it."""
    server = FakeKServe("Serverless")
    with running(server):
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", server)))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        for name, value in (("SHOPREC_CANARY_HOLD_S", "0"), ("SHOPREC_DEPLOY_TIMEOUT_S", "30"),
                            ("SHOPREC_DEPLOY_POLL_S", "0.01")):
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
def root(tmp_path: Path) -> str:
    """The platform's registry root in an object store (a cluster cannot read a local folder)."""
    return f"memory://churn-deploy-{tmp_path.name}/registry"


def decide(bundle_dir: Path, root: str, tmp_path: Path) -> Any:
    """`churn_register`'s decision for a bundle, as the artifact the deploy step reads."""
    from kfp.dsl import Artifact

    decision = gate_and_register(bundle_dir, root)
    artifact = Artifact(uri=str(tmp_path / f"decision-{decision['version']}.json"))
    Path(artifact.path).write_text(json.dumps(decision))
    return artifact, decision


def deploy_step(root: str, decision: Any, tmp_path: Path, target: str = "cluster", canary: int = 10) -> tuple[str, Path]:
    from kfp.dsl import Artifact, Metrics

    from shoprec.components.churn_deploy import churn_deploy

    out = Artifact(uri=str(tmp_path / f"deployment-{target}-{len(list(tmp_path.iterdir()))}"))
    production = churn_deploy.python_func(registry_uri=root, home=str(tmp_path / "home"), decision=decision,
                                          target=target, namespace="shoprec", canary_traffic_percent=canary,
                                          deployment=out, metrics=Metrics(uri=str(tmp_path / "metrics.json")))
    return production, Path(out.path)


def applied(server: FakeKServe) -> list[dict[str, Any]]:
    patches = server.calls("PATCH")
    for call in patches:  # server-side apply of shoprec-churn, never of the recommender's service
        assert call["content_type"] == APPLY_PATCH and call["path"] == CHURN_ISVC
    return [call["body"] for call in patches]


def test_each_promoted_churn_version_is_rolled_out_as_shoprec_churn_then_the_alias_moves(
        serverless: FakeKServe, root: str, trained: ChurnOutcome, tmp_path: Path) -> None:
    registry = churn_registry(root)
    first, decision = decide(trained.bundle_dir, root, tmp_path)
    assert decision["promote"] is True and registry.production() is None

    production, record = deploy_step(root, first, tmp_path)

    v1 = decision["version"]
    assert production == v1 == registry.production()
    [body] = applied(serverless)  # the first deploy creates the service: no canary
    predictor = body["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == registry.version_uri(v1) and v1 in registry.version_uri(v1)
    assert registry.version_uri(v1).endswith(f"/registry/shoprec-churn/versions/{v1}/")
    assert predictor["model"]["runtime"] == "shoprec-churn" and "canaryTrafficPercent" not in predictor
    assert body["metadata"]["annotations"] == {"shoprec.io/model-version": v1}
    assert serverless.serving("shoprec-churn") == {registry.version_uri(v1): 100}
    assert ("shoprec", "shoprec") not in serverless.objects  # the recommender's service is not touched
    assert json.loads(record.read_text())["rollout"]["name"] == "shoprec-churn"

    second, decision = decide(shifted_copy(trained.bundle_dir, tmp_path / "b2", 1.0), root, tmp_path)
    production, record = deploy_step(root, second, tmp_path)

    v2 = decision["version"]
    assert production == v2 == registry.production()
    assert [b["spec"]["predictor"].get("canaryTrafficPercent") for b in applied(serverless)[1:]] == [10, 100]
    assert serverless.serving("shoprec-churn") == {registry.version_uri(v2): 100}
    done = json.loads(record.read_text())
    assert done["event"]["reason"].startswith("churn gate passed: ")
    assert done["rollout"]["steps"][-1] == "revision shoprec-churn-predictor-00002 promoted to 100% of the traffic"
    validator = crd_validator(SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    for body in applied(serverless):
        assert errors_of(validator, body) == []


def test_a_failed_churn_rollout_is_undone_and_production_stays(
        serverless: FakeKServe, root: str, trained: ChurnOutcome, tmp_path: Path) -> None:
    registry = churn_registry(root)
    first, decision = decide(trained.bundle_dir, root, tmp_path)
    deploy_step(root, first, tmp_path)
    second, failing = decide(shifted_copy(trained.bundle_dir, tmp_path / "b2", 1.0), root, tmp_path)
    serverless.failing[registry.version_uri(failing["version"])] = OOM

    with pytest.raises(DeployError, match=OOM) as raised:
        deploy_step(root, second, tmp_path)

    assert f"production stays {decision['version']}" in str(raised.value)
    assert registry.production() == decision["version"]
    assert serverless.storage_uri("shoprec-churn") == registry.version_uri(decision["version"])  # restored
    [failed] = [e for e in registry.history() if e.action == DEPLOY_FAILED]
    assert failed.version == failing["version"]


def test_a_rejected_churn_version_is_never_deployed(
        serverless: FakeKServe, root: str, trained: ChurnOutcome, tmp_path: Path) -> None:
    rejected = tmp_path / "rejected"
    shifted_copy(trained.bundle_dir, rejected, 0.5)
    metrics = json.loads((rejected / "metrics.json").read_text())
    metrics["paired"]["recency"]["pr_auc"].update(delta=0.001, low=-0.01, high=0.02)
    (rejected / "metrics.json").write_text(json.dumps(metrics))
    decision, verdict = decide(rejected, root, tmp_path)
    assert verdict["promote"] is False

    with pytest.raises(ValueError, match="nothing to deploy"):
        deploy_step(root, decision, tmp_path)

    assert serverless.requests == [] and churn_registry(root).production() is None


def test_gitops_renders_the_churn_service_and_moves_the_alias(
        serverless: FakeKServe, root: str, trained: ChurnOutcome, tmp_path: Path) -> None:
    decision, verdict = decide(trained.bundle_dir, root, tmp_path)
    production, manifest = deploy_step(root, decision, tmp_path, target="gitops", canary=100)

    rendered = yaml.safe_load(manifest.read_text())
    assert rendered["metadata"]["name"] == "shoprec-churn"
    assert rendered["spec"]["predictor"]["model"]["storageUri"] == churn_registry(root).version_uri(verdict["version"])
    assert "canaryTrafficPercent" not in rendered["spec"]["predictor"]
    assert production == verdict["version"] and serverless.requests == []  # rendered, not applied


def test_local_deploy_moves_the_alias_a_churn_server_follows(trained: ChurnOutcome, tmp_path: Path) -> None:
    root = str(tmp_path / "home" / "registry")  # the home's registry folder, as `churn-run` passes it
    decision, verdict = decide(trained.bundle_dir, root, tmp_path)

    production, record = deploy_step(root, decision, tmp_path, target="local")

    assert production == verdict["version"] == churn_registry(root).production()
    done = json.loads(record.read_text())
    assert done["target"] == "local" and done["event"]["action"] == "promote"
    assert "rollout" not in done  # nothing was applied anywhere
