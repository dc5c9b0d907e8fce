"""promote and deploy as KFP components: under kfp.local with dsl.If, and the cluster manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from shoprec.data.dataset import EventData
from shoprec.kserve.manifests import render_inference_service
from shoprec.lifecycle.deployment import deploy_gitops
from shoprec.errors import RegistryError
from shoprec.lifecycle.registry import Registry
from shoprec.sequences import build_vocab
from tests.registry.conftest import make_bundle, sequences_frame

# ../shared/schemas lies beside the checkout (the team's and CI's), not inside it.
CRD = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml"


def chain_data(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A data set whose users walk an item chain, and two bundles fit on its training part:
    Markov-1 (learns the chain) and MostPop (cannot)."""
    events = sequences_frame()
    data_dir = EventData(events, source="test").write(tmp_path / "data")
    vocab = build_vocab(events)
    # Training part of the leave-one-out split: all but each user's last item.
    train = [vocab.index(list(s)) for s in
             events.groupby("user_id", sort=True)["item_id"].apply(lambda s: list(s)[:-1])]
    markov = make_bundle(tmp_path / "markov1", "markov1", sequences=train, vocab=vocab)
    mostpop = make_bundle(tmp_path / "mostpop", "mostpop", sequences=train, vocab=vocab)
    return data_dir, markov, mostpop


@pytest.mark.integration
def test_promote_then_deploy_under_dsl_if_moves_the_alias_only_when_the_gate_passes(tmp_path):
    from shoprec.kfp.local import run_locally
    from tests.registry.gate_pipeline import gate_pipeline

    data_dir, markov, mostpop = chain_data(tmp_path)
    registry = Registry(tmp_path / "registry")
    champion = registry.register(mostpop).version
    registry.promote(champion, reason="champion")
    args = {"candidate_uri": str(markov), "data_uri": str(data_dir), "registry_uri": registry.uri}

    passed = run_locally(gate_pipeline, args, tmp_path / "runs")

    assert passed.succeeded, passed.error
    decision = json.loads(passed.output("promote", "decision").read_text())
    assert decision["promote"] is True, decision["reasons"]
    assert decision["champion"] == f"champion {champion}"
    assert any(r.startswith("PASS infra check") for r in decision["reasons"])
    assert passed.output("promote", "decision_report").read_text().startswith(
        "# Promotion decision: PROMOTE")
    assert registry.production() == decision["version"] != champion
    event = registry.history()[-1]
    assert event.actor == "pipeline" and event.decision["promote"] is True
    assert event.reason.startswith("promotion gate passed: PASS NDCG@10 margin")

    # The same candidate again, now against itself as champion: rejected, deploy skipped.
    again = run_locally(gate_pipeline, args, tmp_path / "runs")
    assert again.succeeded, again.error
    second = json.loads(again.output("promote", "decision").read_text())
    assert second["promote"] is False and second["reasons"][0].startswith("FAIL NDCG@10 margin")
    assert not again.ran("deploy")
    assert registry.production() == decision["version"]
    assert [v.note for v in registry.versions()] == ["", "gate: promote", "gate: reject"]


def test_the_gitops_manifest_points_at_the_version_with_a_canary(tmp_path, bundle_factory):
    registry = Registry(f"memory://shoprec-deploy-{tmp_path.name}/registry")
    version = registry.register(bundle_factory()).version

    event = deploy_gitops(registry, version, tmp_path / "isvc.yaml", reason="gate passed",
                           render=render_inference_service, namespace="recs",
                           canary_traffic_percent=10)

    manifest = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService" and manifest["metadata"]["namespace"] == "recs"
    predictor = manifest["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == registry.version_uri(version)
    assert predictor["model"]["storageUri"].startswith("memory://")
    assert registry.production() == version and event.reason == "gate passed (GitOps: rendered, not applied; canary 10%)"


def test_a_cluster_deploy_from_a_local_registry_is_refused(registry, bundle_factory, tmp_path):
    version = registry.register(bundle_factory()).version
    with pytest.raises(RegistryError, match="object-store"):
        deploy_gitops(registry, version, tmp_path / "isvc.yaml", reason="x",
                       render=render_inference_service)
    assert registry.production() is None


def test_the_manifest_validates_against_the_kserve_crd_schema():
    if not CRD.exists():
        pytest.skip(f"KServe CRD schema not found at {CRD}")
    import jsonschema

    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 39k lines
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]
    manifest = render_inference_service("s3://models/registry/versions/v1", canary_traffic_percent=25,
                                        version="v1")
    validator = jsonschema.Draft7Validator(schema)  # (validating the 39k-line schema itself is slow)
    assert list(validator.iter_errors(manifest)) == []
    broken = {**manifest, "spec": {"predictor": {**manifest["spec"]["predictor"],
                                                 "canaryTrafficPercent": "ten"}}}
    assert [e.message for e in validator.iter_errors(broken)] == ["'ten' is not of type 'integer'"]
