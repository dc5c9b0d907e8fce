"""The Kubernetes side without a cluster: kustomize renders each overlay (kubectl's built-in
kustomize), every core object passes `kubernetes-validate --strict`, the InferenceService and the
PyTorchJob validate against their CRD schemas in shared/schemas/, the Dockerfile has the shape
the components and servers rely on, and compiled pipelines carry the cluster settings.

What these checks need is looked for, not assumed: the CRD schemas in $SHOPREC_SCHEMAS, else in
a `shared/schemas` in the checkout or beside it or any folder above it (CI puts a copy of shared/
beside the clone); kubectl in $KUBECTL, else on PATH. When one is missing the check is skipped
with a reason that starts "infrastructure check skipped", and tests/conftest.py lists every
such skip in the terminal summary; with SHOPREC_REQUIRE_INFRA=1 it fails instead."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA_SKIP = "infrastructure check skipped"  # tests/conftest.py reports skips that start so


def find_schemas() -> Path:
    """The shared CRD schemas: $SHOPREC_SCHEMAS, else the first `shared/schemas` holding the
    KServe CRD in the checkout, beside it or beside a folder above it (else the usual place,
    ../shared/schemas, where the checks then report what is missing)."""
    candidates = [Path(os.environ["SHOPREC_SCHEMAS"])] if os.environ.get("SHOPREC_SCHEMAS") else []
    candidates += [folder / "shared" / "schemas" for folder in (REPO, *REPO.parents)]
    return next((c for c in candidates if (c / "kserve").is_dir()), REPO.parent / "shared" / "schemas")


def missing_infrastructure(what: str) -> None:
    """Skip loudly (or fail, with SHOPREC_REQUIRE_INFRA=1) a check whose tool or file is absent."""
    message = f"{INFRA_SKIP}: {what}"
    if os.environ.get("SHOPREC_REQUIRE_INFRA") == "1":
        pytest.fail(f"{message} (SHOPREC_REQUIRE_INFRA=1)", pytrace=False)
    pytest.skip(message)


SCHEMAS = find_schemas()
OVERLAYS = ("dev", "production")
CORE_GROUPS = ("v1", "apps/v1", "rbac.authorization.k8s.io/v1", "networking.k8s.io/v1")
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl")


def kubectl_path() -> str:
    """kubectl, whose built-in kustomize renders the overlays (the `kustomize` fixture of
    tests/kubernetes/conftest.py); skips loudly when it is absent."""
    if KUBECTL is None or not Path(KUBECTL).exists():
        missing_infrastructure("kubectl (with kustomize) is not installed: put it on PATH or set $KUBECTL")
    return str(KUBECTL)


needs_kustomize = pytest.mark.usefixtures("kustomize")


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run([KUBECTL, "kustomize", str(REPO / "manifests" / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def crd_validator(path: Path, version: str) -> Any:
    import jsonschema

    if not path.exists():
        missing_infrastructure(f"the CRD schema {path} is absent (looked in $SHOPREC_SCHEMAS and shared/schemas "
                               f"in and above {REPO}): put a copy of shared/ beside the checkout")
    crd = yaml.safe_load(path.read_text())
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(served["schema"]["openAPIV3Schema"])


def errors_of(validator: Any, manifest: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_manifest_passes_strict_validation(overlay: str) -> None:
    import kubernetes_validate

    docs = render(overlay)
    core = [d for d in docs if d["apiVersion"] in CORE_GROUPS]
    assert {d["kind"] for d in core} >= {"Namespace", "ConfigMap", "PersistentVolumeClaim", "ServiceAccount",
                                         "Role", "RoleBinding", "Deployment", "Service", "NetworkPolicy"}
    for doc in core:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    namespace = "shoprec-dev" if overlay == "dev" else "shoprec"
    assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs} == {namespace}
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets must never be applied by kustomize"


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The check above can fail: a typo in a Deployment is an error, not a silent no-op."""
    import kubernetes_validate

    deployment = next(d for d in yaml.safe_load_all((REPO / "manifests/base/redis.yaml").read_text())
                      if d["kind"] == "Deployment")
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_secret_templates_are_valid_and_hold_no_values() -> None:
    import kubernetes_validate

    secrets = list(yaml.safe_load_all((REPO / "manifests/base/secrets.template.yaml").read_text()))
    from shoprec.config import ClusterSettings

    from shoprec.pipelines.platform import LOG_SALT

    settings = ClusterSettings()
    wanted = {settings.object_store.name: settings.object_store.env, settings.feature_store.name: settings.feature_store.env,
              LOG_SALT.name: LOG_SALT.env}
    # The keys the manifests read besides: the feature server's read-only user, Redis's ACL file.
    wanted[settings.feature_store.name] = {**settings.feature_store.env, "redis-reader": "", "redis-acl": ""}
    assert {s["metadata"]["name"] for s in secrets} == set(wanted)
    for secret in secrets:
        kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)
        assert set(secret["stringData"].values()) == {""}, secret["metadata"]["name"]
        # Every key a pipeline task reads as an environment variable is in the template.
        assert set(wanted[secret["metadata"]["name"]]) <= set(secret["stringData"])


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_service_validates_against_the_kserve_crd(overlay: str) -> None:
    validator = crd_validator(SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    isvc = by_kind(render(overlay), "InferenceService", "shoprec")

    assert errors_of(validator, isvc) == []
    predictor, transformer = isvc["spec"]["predictor"], isvc["spec"]["transformer"]
    assert predictor["model"]["storageUri"].startswith("s3://shoprec/registry/versions/")
    assert predictor["model"]["readinessProbe"] and transformer["containers"][0]["readinessProbe"]
    assert transformer["containers"][0]["command"] == ["python", "-m", "shoprec.kserve.transformer"]
    if overlay == "production":
        assert predictor["canaryTrafficPercent"] == 10 and predictor["minReplicas"] == 2
    else:
        assert "canaryTrafficPercent" not in predictor and predictor["minReplicas"] == 0
    # A wrong type is caught: the schema check can fail.
    broken = {**isvc, "spec": {**isvc["spec"], "predictor": {**predictor, "minReplicas": "two"}}}
    assert any("minReplicas" in e for e in errors_of(validator, broken))


@needs_kustomize
def test_base_serving_matches_what_the_deploy_step_renders() -> None:
    """The committed InferenceService and the one the pipeline's deploy step renders agree on the
    model format, runtime and protocol; the runtime it names exists, running our predictor."""
    from shoprec.kserve.manifests import render_inference_service

    docs = render("production")
    whole = render_inference_service("s3://shoprec/registry/versions/v1", image="registry.example/shoprec:2")
    rendered = whole["spec"]["predictor"]["model"]
    committed_isvc = by_kind(docs, "InferenceService", "shoprec")
    committed = committed_isvc["spec"]["predictor"]["model"]
    for key in ("modelFormat", "runtime", "protocolVersion", "name", "readinessProbe"):
        assert committed[key] == rendered[key], key
    # The transformer too: `kubectl apply` of a service without it would remove the running one.
    ours, theirs = whole["spec"]["transformer"], committed_isvc["spec"]["transformer"]
    mine, base = ours["containers"][0], theirs["containers"][0]
    for key in ("command", "args", "env", "volumeMounts", "readinessProbe", "securityContext", "resources"):
        assert mine[key] == base[key], key
    assert mine["image"] == "registry.example/shoprec:2" and ours["volumes"] == theirs["volumes"]
    # The pod-level settings too: what the NetworkPolicies select on, the account, seccomp.
    for key in ("labels", "serviceAccountName", "automountServiceAccountToken", "securityContext"):
        assert ours[key] == theirs[key], key
        assert whole["spec"]["predictor"][key] == committed_isvc["spec"]["predictor"][key], key
    for key in ("securityContext", "resources"):
        assert rendered[key] == committed[key], key
    assert "logger" not in ours
    logged = render_inference_service("s3://x/v1", logger_url="http://broker.example")["spec"]["transformer"]
    assert logged["logger"] == {"mode": "all", "url": "http://broker.example"}
    runtime = by_kind(docs, "ServingRuntime", rendered["runtime"])
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == rendered["modelFormat"]["name"]
    assert runtime["spec"]["containers"][0]["command"] == ["python", "-m", "shoprec.kserve.predictor"]


def test_the_predictor_gets_a_campaigns_table_only_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHOPREC_CAMPAIGNS on the predictor's container when a table is configured (an object-store
    URL with the store's keys from its Secret, which KServe hands only to the storage
    initializer), absent otherwise; the rendered service still passes the CRD schema."""
    from shoprec.kserve.manifests import render_inference_service

    def model_of(**settings: Any) -> dict[str, Any]:
        return render_inference_service("s3://shoprec/registry/versions/v1", **settings)["spec"]["predictor"]["model"]

    monkeypatch.delenv("SHOPREC_CAMPAIGNS", raising=False)
    assert "env" not in model_of()
    validator = crd_validator(SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    remote = render_inference_service("s3://shoprec/registry/versions/v1", campaigns="s3://shop/campaigns.parquet")
    assert errors_of(validator, remote) == []
    env = remote["spec"]["predictor"]["model"]["env"]
    assert env[0] == {"name": "SHOPREC_CAMPAIGNS", "value": "s3://shop/campaigns.parquet"}
    assert env[1:] == [{"name": key, "valueFrom": {"secretKeyRef": {"name": "shoprec-object-store", "key": key}}}
                       for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")]
    # The keys the Secret template holds, so the references resolve.
    [store] = [s for s in yaml.safe_load_all((REPO / "manifests/base/secrets.template.yaml").read_text())
               if s["metadata"]["name"] == "shoprec-object-store"]
    assert {e["name"] for e in env[1:]} <= set(store["stringData"])
    assert "volumeMounts" not in remote["spec"]["predictor"]["model"]  # nothing to mount for a URL
    # A file on the shared home needs no keys: the predictor mounts the home, read-only.
    local = render_inference_service("s3://shoprec/registry/versions/v1", campaigns="/var/lib/shoprec/campaigns.csv")
    assert errors_of(validator, local) == []
    predictor = local["spec"]["predictor"]
    assert predictor["model"]["env"] == [{"name": "SHOPREC_CAMPAIGNS", "value": "/var/lib/shoprec/campaigns.csv"}]
    assert predictor["model"]["volumeMounts"] == [{"name": "home", "mountPath": "/var/lib/shoprec", "readOnly": True}]
    assert predictor["volumes"] == [{"name": "home", "persistentVolumeClaim": {"claimName": "shoprec-home",
                                                                               "readOnly": True}}]
    # A path of the machine that renders the service names nothing in the pod: refused, clearly.
    for elsewhere in ("/home/me/campaigns.csv", "campaigns.csv", "/var/lib/shoprec/../etc/campaigns.csv"):
        with pytest.raises(ValueError, match="object-store URL .* shared home under /var/lib/shoprec/"):
            model_of(campaigns=elsewhere)
    monkeypatch.setenv("SHOPREC_CAMPAIGNS", "/tmp/left-from-a-local-demo.csv")
    with pytest.raises(ValueError, match="does not exist in the predictor's pod"):
        model_of()
    # The deploy setting: $SHOPREC_CAMPAIGNS where the service is rendered; "" renders none.
    monkeypatch.setenv("SHOPREC_CAMPAIGNS", "s3://shop/spring.csv")
    assert model_of()["env"][0] == {"name": "SHOPREC_CAMPAIGNS", "value": "s3://shop/spring.csv"}
    assert "env" not in model_of(campaigns="")


def test_pytorch_job_validates_against_the_training_operator_crd() -> None:
    from shoprec.kfp.training_job import render_pytorch_job

    validator = crd_validator(SCHEMAS / "kubeflow-training" / "kubeflow.org_pytorchjobs.yaml", "v1")
    job = render_pytorch_job("shoprec-train", "/var/lib/shoprec/data/clean", "/var/lib/shoprec/bundles/x",
                             workers=3, gpus_per_node=2, image="registry.example/shoprec:1.2-gpu",
                             active_deadline_s=5400)

    assert errors_of(validator, job) == []
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 3)
    container = specs["Worker"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["torchrun", "-m", "shoprec.training.ddp"]
    assert container["image"] == "registry.example/shoprec:1.2-gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2 and job["spec"]["nprocPerNode"] == "2"
    # The operator itself stops the job at the deadline, whether or not the launcher still waits.
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 5400
    with pytest.raises(ValueError, match="at least 1 worker"):
        render_pytorch_job("x", "a", "b", workers=0)
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "three"
    assert errors_of(validator, job)


def test_dockerfile_shape() -> None:
    text = (REPO / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert instructions[:2] == ["ARG", "FROM"] and "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "FROM ${BASE_IMAGE}" in text
    torch_at = text.index('"torch==${TORCH_VERSION}"')
    assert "ARG TORCH_VERSION=2.13.0" in text and torch_at < text.index("pip install .")
    assert re.search(r"^USER 10001", text, re.M) and text.rindex("USER") > text.rindex("RUN")
    assert "SHOPREC_FEATURE_REPO=/app/feature_repo" in text and "COPY feature_repo/" in text
    # The entry points the image promises exist in the project.
    for module in ("serving/predictor/__main__.py", "serving/transformer/__main__.py",
                   "src/shoprec/training/ddp.py"):
        assert (REPO / module).exists(), module
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "**" in ignored  # an allow-list: nothing goes in unless named
    assert not any(line.startswith("!") and ("home" in line or "data" in line or ".env" in line) for line in ignored)


def test_compiled_pipelines_record_the_image_and_cluster_settings() -> None:
    from shoprec.config import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE, ClusterSettings

    settings = ClusterSettings()
    pipeline, platform = yaml.safe_load_all((REPO / "pipelines/compiled/training_pipeline.yaml").read_text())
    images = {name: e["container"]["image"] for name, e in pipeline["deploymentSpec"]["executors"].items()}
    # Both images are recorded: the CUDA one on the train step, the CPU one everywhere else.
    assert images.pop("exec-train") == DEFAULT_GPU_IMAGE
    assert set(images.values()) == {DEFAULT_IMAGE}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train = executors["exec-train"]
    assert train["nodeSelector"]["labels"] == dict([settings.gpu_node_label])
    assert train["tolerations"] == [{"key": settings.gpu_taint, "operator": "Exists", "effect": "NoSchedule"}]
    assert pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["accelerator"][
        "resourceCount"] == "1"
    # Every step has a platform config now (user, labels); those that share the home get the settings.
    shared = {name: executor for name, executor in executors.items() if "pvcMount" in executor}
    assert set(shared) >= {"exec-ingest", "exec-materialize", "exec-train", "exec-promote", "exec-deploy",
                           "exec-monitor"}
    for name, executor in shared.items():
        secrets = {s["secretName"] for s in executor["secretAsEnv"]}
        assert settings.object_store.name in secrets, name
        assert executor["pvcMount"][0]["mountPath"] == settings.home_mount
    assert {s["secretName"] for s in executors["exec-materialize"]["secretAsEnv"]} >= {settings.feature_store.name}
    # Secrets never become pipeline parameters.
    params = set(pipeline["root"]["inputDefinitions"]["parameters"])
    assert not {p for p in params if re.search("password|secret|token|key", p)}
    tasks = pipeline["root"]["dag"]["tasks"]
    assert tasks["materialize"]["retryPolicy"]["maxRetryCount"] == 2
    assert "retryPolicy" not in tasks["validate"]  # a data error is not retried
    assert tasks["ingest"]["cachingOptions"] == {}  # reads external data: never cached


def test_the_infrastructure_the_checks_need_is_found() -> None:
    """Where shared/ and kubectl are (this machine, CI) the checks above find them and run."""
    if not (SCHEMAS / "kserve").is_dir() or KUBECTL is None or not Path(KUBECTL).exists():
        missing_infrastructure(f"schemas at {SCHEMAS}, kubectl at {KUBECTL}")
    assert (SCHEMAS / "kubeflow-training" / "kubeflow.org_pytorchjobs.yaml").exists()
    assert subprocess.run([KUBECTL, "version", "--client"], capture_output=True).returncode == 0


def test_every_setting_of_the_config_map_reaches_the_pipeline_tasks() -> None:
    """A key in the shoprec-settings ConfigMap that `ClusterSettings.settings_keys` does not map
    never reaches a task (the deploy step once missed the payload logger and campaigns keys)."""
    from shoprec.config import ClusterSettings

    config_map = yaml.safe_load((REPO / "manifests/base/settings.yaml").read_text())
    assert set(config_map["data"]) == set(ClusterSettings().settings_keys)
    compiled = (REPO / "pipelines/compiled/training_pipeline.yaml").read_text()
    for key in ("SHOPREC_CAMPAIGNS", "SHOPREC_PAYLOAD_LOGGER_URL"):
        assert f"configMapKey: {key}\n              envVar: {key}" in compiled
