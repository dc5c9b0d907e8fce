"""The locked-down cluster, checked on what would be applied: the kustomize renders, the
InferenceService the deploy step renders, the PyTorchJob the train step launches, and the
compiled pipelines.

- NetworkPolicies are evaluated, not just listed: a small evaluator of the NetworkPolicy rules
  (pod selectors, ports; same-namespace peers) answers "may pod A open port P on pod B" for the
  real labels each workload carries.
- Containers: no privilege escalation, every capability dropped, RuntimeDefault seccomp, a
  read-only root with an emptyDir at /tmp, non-root, CPU and memory requests and limits.
- Accounts: one per job; only the training pipeline's runner may create InferenceServices.
- Secrets: the prediction log's salt and Redis's passwords come from Secrets, never from the
  command line, and the transformer refuses to start on a cluster without the salt.
- GPU steps name the CUDA image, never the CPU one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubernetes.test_manifests import OVERLAYS, REPO, by_kind, needs_kustomize, render

SECURITY_KEYS = ("allowPrivilegeEscalation", "capabilities", "readOnlyRootFilesystem")


# ---------------------------------------------------------------------------------------------
# What runs: every pod template with its labels, account and containers.

def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> {labels, pod (spec-level fields), containers, volumes} for every pod shoprec runs:
    Deployments, both InferenceService components (the predictor's container merged from the
    ServingRuntime and the model spec, as KServe merges them) and the PyTorchJob."""
    from shoprec.kfp.training_job import render_pytorch_job

    found: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            template = doc["spec"]["template"]
            found[doc["metadata"]["name"]] = {"labels": template["metadata"]["labels"], "pod": template["spec"],
                                              "containers": template["spec"]["containers"],
                                              "volumes": template["spec"].get("volumes", [])}
    isvc = by_kind(docs, "InferenceService", "shoprec")
    runtime = by_kind(docs, "ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
    predictor = isvc["spec"]["predictor"]
    merged = {**runtime["spec"]["containers"][0], **{k: v for k, v in predictor["model"].items()
                                                    if k in ("securityContext", "resources")}}
    found["predictor"] = {"labels": predictor["labels"], "pod": predictor, "containers": [merged],
                          "volumes": runtime["spec"].get("volumes", []) + predictor.get("volumes", [])}
    transformer = isvc["spec"]["transformer"]
    found["transformer"] = {"labels": transformer["labels"], "pod": transformer,
                            "containers": transformer["containers"], "volumes": transformer["volumes"]}
    job = render_pytorch_job("shoprec-train", "/d", "/o", workers=1, namespace=isvc["metadata"]["namespace"])
    template = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    found["pytorchjob"] = {"labels": template["metadata"]["labels"], "pod": template["spec"],
                           "containers": template["spec"]["containers"], "volumes": template["spec"]["volumes"]}
    return found


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down_and_bounded(overlay: str) -> None:
    docs = render(overlay)
    found = workloads(docs)
    assert set(found) >= {"redis", "shoprec-feature-server", "predictor", "transformer", "pytorchjob"}
    for name, pod in found.items():
        pod_context = pod["pod"].get("securityContext", {})
        assert pod["pod"]["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["readOnlyRootFilesystem"] is True, where
            seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where} {kind}"
            # A read-only root needs somewhere to write: an emptyDir, or the data volume (Redis).
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            scratch = mounts.get("/tmp") or mounts.get("/data")
            assert scratch, where
            volume = next(v for v in pod["volumes"] if v["name"] == scratch)
            assert "emptyDir" in volume or "persistentVolumeClaim" in volume, where


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_carries_pod_security_labels(overlay: str) -> None:
    [namespace] = [d for d in render(overlay) if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    # Our pods meet `restricted` (test above); admission warns and audits at that level and
    # refuses anything below `baseline` (containers other controllers inject are not ours).
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"


# ---------------------------------------------------------------------------------------------
# NetworkPolicies, evaluated.

def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels, matchExpressions In/NotIn/Exists)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def allowed(policies: list[dict[str, Any]], source: dict[str, str], target: dict[str, str], port: int) -> bool:
    """May a pod labelled `source` (same namespace) connect to `port` of a pod labelled `target`?
    Not selected by any ingress policy: yes; otherwise only when some rule admits it."""
    applying = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                and selects(p["spec"]["podSelector"], target)]
    if not applying:
        return True
    for policy in applying:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            peer_ok = peers is None or any(
                "podSelector" in peer and "namespaceSelector" not in peer and selects(peer["podSelector"], source)
                for peer in peers)
            ports = rule.get("ports")
            port_ok = ports is None or any(p.get("port") == port for p in ports)
            if peer_ok and port_ok:
                return True
    return False


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The pipelines compiled now (not the committed YAML): executor name -> (container spec,
    Kubernetes platform config), for a custom image name, with no GPU image configured."""
    from shoprec.pipelines.compile import compile_all

    out = tmp_path_factory.mktemp("compiled")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SHOPREC_GPU_IMAGE", raising=False)
        paths = compile_all(out, image="registry.example/shoprec:9")
    return executors_of(paths)


def executors_of(paths: list[Path]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        pipeline, platform = yaml.safe_load_all(path.read_text())
        configs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for name, executor in pipeline["deploymentSpec"]["executors"].items():
            found[f"{path.stem}/{name}"] = {"container": executor["container"], "k8s": configs.get(name, {})}
    return found


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_the_intended_callers(overlay: str,
                                                          compiled: dict[str, dict[str, Any]]) -> None:
    docs = render(overlay)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    found = workloads(docs)
    pods = {name: found[key]["labels"] for name, key in (
        ("transformer", "transformer"), ("predictor", "predictor"), ("feature-server", "shoprec-feature-server"),
        ("redis", "redis"), ("trainer", "pytorchjob"))}
    steps = {name.split("exec-")[-1]: e["k8s"]["podMetadata"]["labels"] for name, e in compiled.items()}
    pods.update({"materialize": steps["materialize"], "train-step": steps["train"], "deploy-step": steps["deploy"],
                 "stranger": {"app": "someone-else"}})
    feast_port = next(p["containerPort"] for p in found["shoprec-feature-server"]["containers"][0]["ports"])

    def reachable(target: str, port: int) -> set[str]:
        return {source for source in pods if source != target and allowed(policies, pods[source], pods[target], port)}

    everyone = set(pods) - {"transformer"}
    assert reachable("transformer", 8080) == everyone  # the public entry point
    assert reachable("predictor", 8080) == {"transformer"}
    assert reachable("feature-server", feast_port) == {"transformer"}
    assert reachable("redis", 6379) == {"feature-server", "materialize"}
    assert reachable("trainer", 29500) == set()  # only other trainer pods (rendezvous, NCCL)
    assert allowed(policies, pods["trainer"], pods["trainer"], 29500)
    for step in ("materialize", "train-step", "deploy-step"):
        assert reachable(step, 8080) == set()  # pipeline pods serve nothing
    # A pod that copies the Redis-client label without being a pipeline step stays out.
    assert not allowed(policies, {"shoprec.io/redis-client": "true"}, pods["redis"], 6379)
    # The evaluator can say yes to a wrong rule: without the default deny, strangers get in.
    open_policies = [p for p in policies if p["metadata"]["name"] != "default-deny-ingress"]
    assert allowed(open_policies, pods["stranger"], pods["materialize"], 8080)


def test_only_the_materialize_step_carries_the_redis_client_label(compiled: dict[str, dict[str, Any]]) -> None:
    from shoprec.pipelines.platform import PIPELINE_LABEL, REDIS_CLIENT_LABEL

    with_label = {name for name, e in compiled.items()
                  if e["k8s"]["podMetadata"]["labels"].get(REDIS_CLIENT_LABEL[0]) == REDIS_CLIENT_LABEL[1]}
    # Both pipelines that load the online store: training and churn (pipelines/churn.py).
    assert with_label == {"training_pipeline/exec-materialize", "churn_pipeline/exec-materialize"}
    for name, executor in compiled.items():
        assert executor["k8s"]["podMetadata"]["labels"][PIPELINE_LABEL[0]] == PIPELINE_LABEL[1], name


# ---------------------------------------------------------------------------------------------
# Compiled pipelines: resources, user, images.

def check_gpu_steps_name_the_cuda_image(executors: dict[str, dict[str, Any]], cpu: str, gpu: str) -> None:
    gpu_steps = {name for name, e in executors.items() if "accelerator" in e["container"].get("resources", {})}
    assert gpu_steps == {"training_pipeline/exec-train"}
    for name, executor in executors.items():
        image = executor["container"]["image"]
        assert image == (gpu if name in gpu_steps else cpu), name
        if name in gpu_steps:
            assert image != cpu, f"{name} requests a GPU but names the CPU image {cpu}"


def test_compiled_steps_have_requests_limits_and_a_non_root_user(compiled: dict[str, dict[str, Any]]) -> None:
    assert len(compiled) == 20  # training 9, monitoring 3, churn 8
    for name, executor in compiled.items():
        resources = executor["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert resources.get(key), f"{name}: {key}"
        assert executor["k8s"]["securityContext"] == {"runAsNonRoot": True, "runAsUser": "10001"}, name
    # The CUDA image follows the CPU one's name unless SHOPREC_GPU_IMAGE says otherwise.
    check_gpu_steps_name_the_cuda_image(compiled, "registry.example/shoprec:9", "registry.example/shoprec:9-gpu")


def test_gpu_image_setting_reaches_the_compiled_train_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.pipelines.compile import compile_all

    monkeypatch.setenv("SHOPREC_GPU_IMAGE", "registry.example/shoprec-cuda:7")
    executors = executors_of(compile_all(tmp_path, image="registry.example/shoprec:7"))
    check_gpu_steps_name_the_cuda_image(executors, "registry.example/shoprec:7", "registry.example/shoprec-cuda:7")


def test_committed_compiled_pipelines_put_gpu_steps_on_the_cuda_image() -> None:
    """The YAML a cluster runs (`shoprec compile`): fails when a step requesting a GPU names the
    CPU image, and when any step runs without CPU and memory requests and limits."""
    from shoprec.config import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE

    committed = executors_of([REPO / "pipelines/compiled/training_pipeline.yaml",
                              REPO / "pipelines/compiled/monitoring_pipeline.yaml"])
    check_gpu_steps_name_the_cuda_image(committed, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)
    for name, executor in committed.items():
        resources = executor["container"]["resources"]
        assert resources.get("resourceCpuLimit") and resources.get("resourceMemoryLimit"), name


def test_makefile_builds_the_gpu_image_from_the_cuda_wheel_under_the_configured_name() -> None:
    from shoprec.config import GPU_TAG_SUFFIX

    makefile = (REPO / "Makefile").read_text()
    target = makefile[makefile.index("\nimage-gpu:"):].split("\n\n")[0]
    assert "TORCH_INDEX_URL=$(CUDA_TORCH_INDEX)" in target and "REQUIRE_CUDA=1" in target
    assert "-t $(GPU_IMAGE)" in target
    assert f"GPU_IMAGE ?= $(or $(SHOPREC_GPU_IMAGE),$(IMAGE){GPU_TAG_SUFFIX})" in makefile
    assert "/whl/cu" in makefile.split("CUDA_TORCH_INDEX ?=")[1].splitlines()[0]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG REQUIRE_CUDA=0" in dockerfile and "torch.version.cuda" in dockerfile
    assert "SHOPREC_GPU_IMAGE=$GPU_IMAGE_REF" in dockerfile

def test_gpu_image_name_follows_the_cpu_image_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.config import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE, resolve_gpu_image

    monkeypatch.delenv("SHOPREC_GPU_IMAGE", raising=False)
    monkeypatch.delenv("SHOPREC_IMAGE", raising=False)
    assert resolve_gpu_image() == DEFAULT_GPU_IMAGE == DEFAULT_IMAGE + "-gpu"
    assert resolve_gpu_image(cpu_image="x/y:1") == "x/y:1-gpu"
    monkeypatch.setenv("SHOPREC_IMAGE", "x/y:2")
    assert resolve_gpu_image() == "x/y:2-gpu"
    monkeypatch.setenv("SHOPREC_GPU_IMAGE", "x/cuda:2")
    assert resolve_gpu_image() == "x/cuda:2" and resolve_gpu_image("x/z:3") == "x/z:3"


# ---------------------------------------------------------------------------------------------
# Accounts and secrets.

def rules_of(docs: list[dict[str, Any]], account: str) -> list[dict[str, Any]]:
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    bound = [b["roleRef"]["name"] for b in docs if b["kind"] == "RoleBinding"
             if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    return [rule for name in bound for rule in roles[name]["rules"]]


def can(rules: list[dict[str, Any]], verb: str, group: str, resource: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


@needs_kustomize
def test_one_account_per_job_and_only_the_pipeline_runner_deploys() -> None:
    from shoprec.kfp.training_job import TRAINER_SERVICE_ACCOUNT

    docs = render("production")
    found = workloads(docs)
    accounts = {name: pod["pod"]["serviceAccountName"] for name, pod in found.items()}
    assert len(set(accounts.values())) == len(accounts), accounts  # no two jobs share one
    assert accounts["pytorchjob"] == TRAINER_SERVICE_ACCOUNT
    declared = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert set(accounts.values()) <= set(declared)
    for name, account in accounts.items():
        assert declared[account]["automountServiceAccountToken"] is False, name
        assert not can(rules_of(docs, account), "create", "serving.kserve.io", "inferenceservices"), name
        assert rules_of(docs, account) == [], name  # servers and the trainer need no API at all
    assert can(rules_of(docs, "shoprec-pipeline-runner"), "create", "serving.kserve.io", "inferenceservices")
    assert can(rules_of(docs, "shoprec-pipeline-runner"), "delete", "kubeflow.org", "pytorchjobs")
    monitoring = rules_of(docs, "shoprec-monitoring-runner")
    assert not can(monitoring, "create", "serving.kserve.io", "inferenceservices")
    assert not can(monitoring, "create", "kubeflow.org", "pytorchjobs")


@needs_kustomize
def test_redis_passwords_and_the_log_salt_come_from_secrets_only() -> None:
    docs = render("production")
    found = workloads(docs)
    redis = found["redis"]["containers"][0]
    command_line = " ".join(redis.get("command", []) + redis.get("args", []))
    assert "pass" not in command_line.lower() and "$(" not in command_line
    [acl] = [v for v in found["redis"]["volumes"] if v["name"] == "acl"]
    assert acl["secret"]["secretName"] == "shoprec-feature-store"
    assert acl["secret"]["items"] == [{"key": "redis-acl", "path": "users.acl"}]
    assert "/etc/redis/acl/users.acl" in command_line
    # The feature server reads as the read-only Redis user; the writer key is for materialize.
    feast_env = {e["name"]: e for e in found["shoprec-feature-server"]["containers"][0]["env"]}
    assert feast_env["SHOPREC_REDIS"]["valueFrom"]["secretKeyRef"] == {"name": "shoprec-feature-store",
                                                                      "key": "redis-reader"}
    transformer_env = {e["name"]: e for e in found["transformer"]["containers"][0]["env"]}
    assert transformer_env["SHOPREC_LOG_SALT"] == {"name": "SHOPREC_LOG_SALT", "valueFrom": {
        "secretKeyRef": {"name": "shoprec-prediction-log", "key": "log-salt"}}}
    # No literal value of any container anywhere looks like a credential.
    for name, pod in found.items():
        for container in pod["containers"]:
            for entry in container.get("env", []):
                if "value" in entry:
                    assert not any(w in entry["name"].lower() for w in ("pass", "salt", "secret", "key")), name
    template = list(yaml.safe_load_all((REPO / "manifests/base/secrets.template.yaml").read_text()))
    acl_help = (REPO / "manifests/base/secrets.template.yaml").read_text()
    assert "user default off" in acl_help and "feast-reader on" in acl_help and "-@all +@read" in acl_help
    assert {s["metadata"]["name"] for s in template} >= {"shoprec-prediction-log"}


def test_monitoring_reports_read_the_salt_from_the_secret(compiled: dict[str, dict[str, Any]]) -> None:
    from shoprec.pipelines.platform import LOG_SALT

    reports = compiled["monitoring_pipeline/exec-drift-reports"]["k8s"]["secretAsEnv"]
    [salt] = [s for s in reports if s["secretName"] == LOG_SALT.name]
    assert salt["keyToEnv"] == [{"secretKey": "log-salt", "envVar": "SHOPREC_LOG_SALT"}]


def transformer_args(**extra: Any) -> argparse.Namespace:
    return argparse.Namespace(no_prediction_log=False, **extra)


def test_transformer_refuses_to_start_on_a_cluster_without_the_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.kserve.transformer import __main__ as entry

    cluster = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    with pytest.raises(SystemExit, match="SHOPREC_LOG_SALT is not set"):
        entry.require_log_salt_on_cluster(transformer_args(), cluster)
    with pytest.raises(SystemExit, match="SHOPREC_LOG_SALT"):
        entry.require_log_salt_on_cluster(transformer_args(), {**cluster, "SHOPREC_LOG_SALT": "  "})
    entry.require_log_salt_on_cluster(transformer_args(), {**cluster, "SHOPREC_LOG_SALT": "s3cr3t"})
    entry.require_log_salt_on_cluster(transformer_args(), {})  # a laptop: the log stays usable
    entry.require_log_salt_on_cluster(argparse.Namespace(no_prediction_log=True), cluster)  # nothing hashed

    # main() checks first: nothing is opened or served without the salt.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("SHOPREC_LOG_SALT", raising=False)

    def reached(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the transformer went on starting without the salt")

    monkeypatch.setattr(entry.Home, "at", reached)
    with pytest.raises(SystemExit, match="SHOPREC_LOG_SALT"):
        entry.main(["--predictor_host", "predictor:80"])
