"""Contract tests of the cluster deploy (issue 16, "Deploy applies"): the real deploy and rollback
code, the real `kubernetes` client (shoprec.kserve.cluster) and real registry versions, against
FakeKServe (tests/kubernetes/fake_api.py), a local HTTP server that answers the InferenceService
and Deployment endpoints and plays KServe's controller. No cluster, KServe or Knative can run
here: what is checked is what a cluster would receive and how the code reacts to the statuses
KServe reports (a Ready revision, a failed one, one that never becomes Ready)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from shoprec.kserve.cluster import FIELD_MANAGER, KubernetesInferenceServices
from shoprec.kserve.manifests import render_inference_service
from shoprec.lifecycle.deployment import (DEPLOY_FAILED, DeployError, RolloutPolicy, deploy_cluster,
                                          rollback_cluster)
from shoprec.lifecycle.registry import Registry

from tests.kubernetes.fake_api import APPLY_PATCH, FakeKServe, running
from tests.registry.conftest import make_bundle

REPO = Path(__file__).resolve().parents[2]
CRD = REPO.parent / "shared" / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/shoprec/inferenceservices/shoprec"
OOM = "Container kserve-container was OOMKilled while loading the model"


class Clock:
    """Time for the waits without waiting: each sleep moves it on (the fake answers at once)."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += 1


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """An object-store registry (fsspec memory://: no local folder, as a cluster needs)."""
    return Registry(f"memory://deploy-{tmp_path.name}/registry")


@pytest.fixture
def versions(registry: Registry, tmp_path: Path) -> list[str]:
    """Three registered versions; the first is production."""
    found = [registry.register(make_bundle(tmp_path / f"b{n}", kind)).version
             for n, kind in enumerate(("mostpop", "markov1", "itemknn"))]
    registry.promote(found[0], reason="first", actor="test")
    return found


def serve(mode: str) -> Iterator[FakeKServe]:
    server = FakeKServe(mode)
    with running(server):
        yield server


@pytest.fixture
def serverless() -> Iterator[FakeKServe]:
    yield from serve("Serverless")


@pytest.fixture
def raw() -> Iterator[FakeKServe]:
    yield from serve("RawDeployment")


def api(server: FakeKServe) -> KubernetesInferenceServices:
    from kubernetes import client

    return KubernetesInferenceServices(client.ApiClient(client.Configuration(host=server.url)))


def seed_production(server: FakeKServe, registry: Registry, version: str) -> dict[str, Any]:
    """The service as `kubectl apply` left it, serving `version` (Ready, all traffic)."""
    return server.seed(render_inference_service(registry.version_uri(version), version=version))


def deploy(server: FakeKServe, registry: Registry, version: str, clock: Clock, **policy: Any) -> Any:
    settings = {"timeout_s": 60.0, "poll_s": 1.0, "canary_hold_s": 3.0, **policy}
    return deploy_cluster(registry, version, reason="gate passed", render=render_inference_service,
                          api=api(server), policy=RolloutPolicy(**settings), sleep=clock.sleep, clock=clock)


def applied_bodies(server: FakeKServe) -> list[dict[str, Any]]:
    patches = server.calls("PATCH")
    for call in patches:  # server-side apply, owned by shoprec's field manager, forced
        assert call["content_type"] == APPLY_PATCH and call["path"] == ISVC
        assert call["query"] == {"fieldManager": [FIELD_MANAGER], "force": ["True"]}
    return [call["body"] for call in patches]


def predictor(body: dict[str, Any]) -> dict[str, Any]:
    return body["spec"]["predictor"]


def last_event(registry: Registry) -> Any:
    return registry.history()[-1]


def test_serverless_deploy_goes_through_a_canary_then_100_percent_and_only_then_moves_the_alias(
        serverless: FakeKServe, registry: Registry, versions: list[str]) -> None:
    seed_production(serverless, registry, versions[0])
    clock = Clock()

    done = deploy(serverless, registry, versions[1], clock, canary_traffic_percent=10)

    new_uri = registry.version_uri(versions[1])
    canary, full = applied_bodies(serverless)
    assert predictor(canary)["model"]["storageUri"] == new_uri and predictor(canary)["canaryTrafficPercent"] == 10
    assert canary["metadata"]["annotations"] == {"shoprec.io/model-version": versions[1]}
    # Promotion: the same spec at an explicit 100 (a kubectl-owned 10 could not override it).
    assert predictor(full)["model"]["storageUri"] == new_uri and predictor(full)["canaryTrafficPercent"] == 100
    assert serverless.serving() == {new_uri: 100}
    assert registry.production() == versions[1]
    assert done.event.reason == "gate passed (serverless mode, canary 10% then 100%)"
    assert done.rollout.revision == "shoprec-predictor-00002" and done.rollout.mode == "serverless"
    assert done.rollout.steps[1] == "canary revision shoprec-predictor-00002 is Ready with 10% of the traffic"
    assert done.rollout.steps[-1] == "revision shoprec-predictor-00002 promoted to 100% of the traffic"
    # It waited on the status: KServe's first answer after each apply is the old status.
    assert len(serverless.calls("GET")) >= 6 and clock.now >= 3.0
    assert not serverless.calls("PUT") and not serverless.calls("DELETE")


def test_first_deploy_creates_the_service_without_a_canary(
        serverless: FakeKServe, registry: Registry, versions: list[str]) -> None:
    done = deploy(serverless, registry, versions[1], Clock(), canary_traffic_percent=10)

    [body] = applied_bodies(serverless)
    assert "canaryTrafficPercent" not in predictor(body)  # no earlier revision to keep traffic on
    assert predictor(body)["model"]["storageUri"] == registry.version_uri(versions[1])
    assert serverless.serving() == {registry.version_uri(versions[1]): 100}
    assert registry.production() == versions[1] and done.rollout.mode == "serverless"


def test_a_failed_revision_restores_the_previous_spec_keeps_the_champion_and_is_recorded(
        serverless: FakeKServe, registry: Registry, versions: list[str]) -> None:
    before = seed_production(serverless, registry, versions[0])
    old_uri, new_uri = registry.version_uri(versions[0]), registry.version_uri(versions[1])
    serverless.failing[new_uri] = OOM

    with pytest.raises(DeployError) as caught:
        deploy(serverless, registry, versions[1], Clock(), canary_traffic_percent=10)

    message = str(caught.value)
    assert "the new revision failed: PredictorReady RevisionFailed" in message and OOM in message
    assert "the previous spec was restored and is Ready" in message
    assert f"production stays {versions[0]}" in message
    [canary] = applied_bodies(serverless)  # never promoted to 100%
    assert predictor(canary)["model"]["storageUri"] == new_uri
    # The restore: a PUT of the previous spec at the current resourceVersion.
    [put] = serverless.calls("PUT")
    assert put["path"] == ISVC and put["body"]["spec"] == before["spec"]
    assert put["body"]["metadata"]["resourceVersion"]
    assert serverless.storage_uri() == old_uri and serverless.serving() == {old_uri: 100}
    assert registry.production() == versions[0]
    event = last_event(registry)
    assert (event.action, event.version, event.previous) == (DEPLOY_FAILED, versions[1], versions[0])
    assert OOM in event.reason and event.actor == "pipeline"


def test_a_revision_never_ready_times_out_restores_and_fails(
        serverless: FakeKServe, registry: Registry, versions: list[str]) -> None:
    seed_production(serverless, registry, versions[0])
    new_uri = registry.version_uri(versions[1])
    serverless.stuck.add(new_uri)
    clock = Clock()

    with pytest.raises(DeployError, match=r"the new revision is not Ready after 20 s: "
                                          r"revision shoprec-predictor-00002 is not Ready"):
        deploy(serverless, registry, versions[1], clock, timeout_s=20.0, canary_traffic_percent=None)

    [body] = applied_bodies(serverless)
    assert predictor(body)["canaryTrafficPercent"] == 100  # --canary 100: straight to full traffic
    assert serverless.storage_uri() == registry.version_uri(versions[0])
    assert registry.production() == versions[0]
    assert last_event(registry).action == DEPLOY_FAILED and "not Ready after 20 s" in last_event(registry).reason
    assert 20.0 <= clock.now < 60.0  # bounded: the deadline, then the restore's own wait


def test_first_deploy_that_fails_deletes_what_it_created(
        serverless: FakeKServe, registry: Registry, versions: list[str]) -> None:
    serverless.failing[registry.version_uri(versions[1])] = OOM
    with pytest.raises(DeployError, match="it created was deleted"):
        deploy(serverless, registry, versions[1], Clock())
    assert [c["path"] for c in serverless.calls("DELETE")] == [ISVC]
    assert serverless.objects == {} and registry.production() == versions[0]


def test_raw_mode_is_a_rolling_update_waited_on_through_the_predictor_deployment(
        raw: FakeKServe, registry: Registry, versions: list[str]) -> None:
    seed_production(raw, registry, versions[0])

    done = deploy(raw, registry, versions[1], Clock(), canary_traffic_percent=10)

    [body] = applied_bodies(raw)
    assert "canaryTrafficPercent" not in predictor(body)  # KServe has no canary in raw mode
    assert predictor(body)["model"]["storageUri"] == registry.version_uri(versions[1])
    # The service stayed Ready (old pods) while the Deployment rolled: the wait read the Deployment.
    reads = [c["path"] for c in raw.calls("GET", "deployments")]
    assert len(reads) >= 2 and set(reads) == {"/apis/apps/v1/namespaces/shoprec/deployments/shoprec-predictor"}
    assert raw.serving() == {registry.version_uri(versions[1]): 100}
    assert registry.production() == versions[1]
    assert done.event.reason == "gate passed (raw mode, full rollout)" and done.rollout.mode == "raw"


def test_raw_mode_failed_model_load_restores_the_previous_spec(
        raw: FakeKServe, registry: Registry, versions: list[str]) -> None:
    seed_production(raw, registry, versions[0])
    raw.failing[registry.version_uri(versions[1])] = OOM

    with pytest.raises(DeployError, match=f"model BlockedByFailedLoad: ModelLoadFailed {OOM}"):
        deploy(raw, registry, versions[1], Clock())

    assert raw.storage_uri() == registry.version_uri(versions[0])
    assert raw.serving() == {registry.version_uri(versions[0]): 100}
    assert registry.production() == versions[0] and last_event(registry).action == DEPLOY_FAILED


def test_rollback_applies_the_previous_version_and_then_moves_the_alias_back(
        serverless: FakeKServe, registry: Registry, versions: list[str]) -> None:
    seed_production(serverless, registry, versions[0])
    deploy(serverless, registry, versions[1], Clock(), canary_traffic_percent=10)
    before = len(serverless.calls("PATCH"))

    done = rollback_cluster(registry, reason="bad clicks", render=render_inference_service,
                            api=api(serverless), policy=RolloutPolicy(timeout_s=60, poll_s=1),
                            sleep=Clock().sleep, clock=Clock())

    [body] = applied_bodies(serverless)[before:]  # no canary for a rollback
    old_uri = registry.version_uri(versions[0])
    assert predictor(body)["model"]["storageUri"] == old_uri and predictor(body)["canaryTrafficPercent"] == 100
    assert serverless.serving() == {old_uri: 100}
    assert registry.production() == versions[0]
    assert (done.event.action, done.event.version, done.event.previous) == ("rollback", versions[0], versions[1])


def test_a_failed_rollback_restores_the_spec_and_leaves_the_alias(
        serverless: FakeKServe, registry: Registry, versions: list[str]) -> None:
    seed_production(serverless, registry, versions[0])
    deploy(serverless, registry, versions[1], Clock(), canary_traffic_percent=None)
    serverless.failing[registry.version_uri(versions[0])] = "storage-initializer: 403 Forbidden"

    with pytest.raises(DeployError, match="rollback of .* failed: .*403 Forbidden"):
        rollback_cluster(registry, reason="x", render=render_inference_service, api=api(serverless),
                         policy=RolloutPolicy(timeout_s=60, poll_s=1), sleep=Clock().sleep, clock=Clock())
    assert serverless.storage_uri() == registry.version_uri(versions[1])
    assert registry.production() == versions[1] and last_event(registry).action == DEPLOY_FAILED


def test_the_applied_bodies_and_the_fakes_status_validate_against_the_kserve_crd(
        serverless: FakeKServe, registry: Registry, versions: list[str]) -> None:
    if not CRD.exists():
        pytest.skip(f"{CRD} is absent (../shared/schemas is only beside the team's checkout)")
    import jsonschema

    seed_production(serverless, registry, versions[0])
    deploy(serverless, registry, versions[1], Clock(), canary_traffic_percent=25)
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft7Validator(schema)
    for body in applied_bodies(serverless):
        assert list(validator.iter_errors(body)) == []
    # The stand-in's status has KServe's shape, so the code reads what a cluster reports.
    stored = serverless.objects[("shoprec", "shoprec")]
    assert [e.message for e in validator.iter_errors(stored)] == []


# --- the command line: `shoprec models promote/rollback --cluster`, credentials from kube config ---

def kubeconfig(path: Path, server: FakeKServe) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
        "users": [{"name": "me", "user": {"token": "from-kubeconfig"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}]}))
    return path


def test_cli_promote_and_rollback_with_cluster_apply_through_the_kube_config(
        serverless: FakeKServe, registry: Registry, versions: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from shoprec.cli import cli

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", serverless)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    seed_production(serverless, registry, versions[0])
    common = ["--cluster", "--registry", registry.uri, "--poll", "0.01", "--timeout", "10"]

    promoted = CliRunner().invoke(cli, ["models", "promote", versions[1], "--reason", "by hand",
                                        "--canary", "20", "--canary-hold", "0", *common])
    assert promoted.exit_code == 0, promoted.output
    assert f"production: {versions[0]} -> {versions[1]}" in promoted.output
    assert "shoprec/shoprec: revision shoprec-predictor-00002 promoted to 100% of the traffic" in promoted.output
    assert [predictor(b)["canaryTrafficPercent"] for b in applied_bodies(serverless)] == [20, 100]
    assert serverless.serving() == {registry.version_uri(versions[1]): 100}

    rolled = CliRunner().invoke(cli, ["models", "rollback", "--reason", "regret", *common])
    assert rolled.exit_code == 0, rolled.output
    assert f"production: {versions[1]} -> {versions[0]}" in rolled.output
    assert serverless.serving() == {registry.version_uri(versions[0]): 100}
    assert registry.production() == versions[0]

    serverless.failing[registry.version_uri(versions[2])] = OOM
    failed = CliRunner().invoke(cli, ["models", "promote", versions[2], "--reason", "x", *common])
    assert failed.exit_code != 0 and OOM in str(failed.exception)
    assert registry.production() == versions[0]
    assert serverless.storage_uri() == registry.version_uri(versions[0])


def test_the_deploy_step_applies_on_a_cluster(serverless: FakeKServe, registry: Registry, versions: list[str],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The KFP component's own function (what the compiled step runs), target "cluster"."""
    from kfp.dsl import Artifact, Metrics

    from shoprec.components.deploy import deploy as deploy_step

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", serverless)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("SHOPREC_CANARY_HOLD_S", "0")
    monkeypatch.setenv("SHOPREC_DEPLOY_TIMEOUT_S", "30")
    seed_production(serverless, registry, versions[0])
    monkeypatch.setenv("SHOPREC_DEPLOY_POLL_S", "0.01")
    decision = Artifact(uri=str(tmp_path / "decision.json"))
    Path(decision.path).write_text(json.dumps({"version": versions[1], "promote": True, "reasons": ["PASS"]}))
    out = Artifact(uri=str(tmp_path / "deployment.json"))
    metrics = Metrics(uri=str(tmp_path / "metrics.json"))

    production = deploy_step.python_func(registry_uri=registry.uri, decision=decision, target="cluster",
                                         namespace="shoprec", canary_traffic_percent=10,
                                         deployment=out, metrics=metrics)

    assert production == versions[1]
    assert [predictor(b)["canaryTrafficPercent"] for b in applied_bodies(serverless)] == [10, 100]
    record = json.loads(Path(out.path).read_text())
    assert record["rollout"]["storage_uri"] == registry.version_uri(versions[1])
    assert record["event"]["version"] == versions[1]
