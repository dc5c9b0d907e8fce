"""Contract test of `shoprec submit`: the real command and the real kfp.Client against a small
local HTTP server that speaks the part of the KFP v2beta1 REST API the client calls (healthz,
experiments, runs, recurring runs). It checks what a cluster would receive: the compiled
pipeline spec (with its Kubernetes platform spec), typed parameters, the bearer token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.kubernetes.fake_api import JsonHandler, LocalApiServer, running

REPO = Path(__file__).resolve().parents[2]
SHOPREC = str(Path(sys.executable).with_name("shoprec"))
TRAINING = REPO / "pipelines" / "compiled" / "training_pipeline.yaml"
MONITORING = REPO / "pipelines" / "compiled" / "monitoring_pipeline.yaml"
API = "/apis/v2beta1"
TOKEN = "contract-test-token"


class FakeKfp(LocalApiServer):
    """Records every request; answers the calls kfp.Client makes to create and watch runs."""

    def __init__(self, final_state: str = "SUCCEEDED") -> None:
        super().__init__(_Handler)
        self.requests: list[dict[str, Any]] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.final_state = final_state

    def bodies(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["method"] == method and r["path"] == path]


class _Handler(JsonHandler):
    server: FakeKfp

    def _record(self) -> tuple[str, dict[str, list[str]], dict[str, Any]]:
        url = urlparse(self.path)
        body = self._body()
        self.server.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                     "body": body, "authorization": self.headers.get("Authorization")})
        return url.path, parse_qs(url.query), body

    def do_GET(self) -> None:
        path, query, _ = self._record()
        if path == f"{API}/healthz":
            return self._answer(200, {"multi_user": False})
        if path == f"{API}/experiments":
            wanted = json.loads(query["filter"][0])["predicates"][0]["stringValue"] if "filter" in query else None
            found = [e for e in self.server.experiments.values() if wanted in (None, e["display_name"])]
            return self._answer(200, {"experiments": found, "total_size": len(found)})
        if path.startswith(f"{API}/runs/"):
            run_id = path.rsplit("/", 1)[1]
            return self._answer(200, {"run_id": run_id, "state": self.server.final_state})
        self._answer(404, {"error": f"fake KFP does not implement GET {path}"})

    def do_POST(self) -> None:
        path, _, body = self._record()
        if path == f"{API}/experiments":
            experiment = {**body, "experiment_id": f"exp-{len(self.server.experiments) + 1}"}
            self.server.experiments[experiment["experiment_id"]] = experiment
            return self._answer(200, experiment)
        if path == f"{API}/runs":
            return self._answer(200, {**body, "run_id": "run-1", "state": "PENDING"})
        if path == f"{API}/recurringruns":
            return self._answer(200, {**body, "recurring_run_id": "rr-1", "status": "ENABLED"})
        self._answer(404, {"error": f"fake KFP does not implement POST {path}"})


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    server = FakeKfp()
    with running(server):
        yield server


def shoprec(*args: str, home: Path) -> subprocess.CompletedProcess:
    # A clean HOME: no kfp context file or kube config of the developer leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF_PIPELINES")}
    env.update(HOME=str(home), KF_PIPELINES_TOKEN=TOKEN)
    return subprocess.run([SHOPREC, *args], capture_output=True, text=True, timeout=120, env=env)


def compiled(package: Path) -> dict[str, Any]:
    """The compiled YAML as the client sends it (JSON types: what json_format produces)."""
    pipeline, *platform = yaml.safe_load_all(package.read_text())
    return json.loads(json.dumps({"pipeline_spec": pipeline, "platform_spec": platform[0]}))


def test_contract_submit_creates_a_run_with_the_compiled_spec_and_typed_parameters(
        kfp_server: FakeKfp, tmp_path: Path) -> None:
    done = shoprec("submit", "--host", kfp_server.url, "--experiment", "nightly",
                   "--param", "dataset=ml-100k", "--param", "limit_users=40",
                   "--param", "budget_minutes=2.5", "--param", "use_feature_store=false",
                   "--param", "registry_uri=s3://shoprec/registry", "--wait", home=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"run run-1 SUCCEEDED: {kfp_server.url}/#/runs/details/run-1" in done.stdout
    [experiment] = kfp_server.bodies("POST", f"{API}/experiments")
    assert experiment["display_name"] == "nightly"
    [run] = kfp_server.bodies("POST", f"{API}/runs")
    assert run["experiment_id"] == "exp-1"
    sent = run["pipeline_spec"]
    expected = compiled(TRAINING)
    assert sent["pipeline_spec"]["pipelineInfo"]["name"] == "shoprec-training"
    assert sent["pipeline_spec"]["root"] == expected["pipeline_spec"]["root"]
    assert sent["pipeline_spec"]["deploymentSpec"] == expected["pipeline_spec"]["deploymentSpec"]
    # The cluster settings travel with the spec: the GPU placement of the train step and the
    # Secret *names* (their values never appear in a request).
    train = sent["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert {s["secretName"] for s in train["secretAsEnv"]} == {"shoprec-object-store", "shoprec-feature-store"}
    assert sent["platform_spec"] == expected["platform_spec"]
    assert run["runtime_config"]["parameters"] == {
        "dataset": "ml-100k", "limit_users": 40, "budget_minutes": 2.5, "use_feature_store": False,
        "registry_uri": "s3://shoprec/registry"}
    assert [r["path"] for r in kfp_server.requests if r["method"] == "GET"][-1] == f"{API}/runs/run-1"
    assert {r["authorization"] for r in kfp_server.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in done.stdout + done.stderr


def test_contract_wait_reports_a_failed_run_with_its_page(kfp_server: FakeKfp, tmp_path: Path) -> None:
    kfp_server.final_state = "FAILED"
    done = shoprec("submit", "--host", kfp_server.url, "--wait", home=tmp_path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert f"run run-1 ended FAILED: {kfp_server.url}/#/runs/details/run-1" in done.stderr
    [run] = kfp_server.bodies("POST", f"{API}/runs")
    assert run["runtime_config"].get("parameters", {}) == {}  # the compiled defaults apply


def test_contract_schedule_creates_a_recurring_monitoring_run(kfp_server: FakeKfp, tmp_path: Path) -> None:
    done = shoprec("submit", "--host", kfp_server.url, "--schedule", "0 6 * * *",
                   "--param", "trigger_mode=kfp", "--param", "window_days=1", home=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"recurring run rr-1: {kfp_server.url}/#/recurringrun/details/rr-1" in done.stdout
    [recurring] = kfp_server.bodies("POST", f"{API}/recurringruns")
    assert recurring["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "shoprec-monitoring"
    assert recurring["pipeline_spec"]["pipeline_spec"]["root"] == compiled(MONITORING)["pipeline_spec"]["root"]
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * *"  # KFP's six fields
    assert recurring["max_concurrency"] == "1" or recurring["max_concurrency"] == 1
    assert recurring["runtime_config"]["parameters"] == {"trigger_mode": "kfp", "window_days": 1.0}
    assert not kfp_server.bodies("POST", f"{API}/runs")


def test_a_bad_parameter_is_refused_before_anything_is_sent(kfp_server: FakeKfp, tmp_path: Path) -> None:
    unknown = shoprec("submit", "--host", kfp_server.url, "--param", "datset=ml-100k", home=tmp_path)
    wrong_type = shoprec("submit", "--host", kfp_server.url, "--param", "limit_users=forty", home=tmp_path)

    assert unknown.returncode == 2 and "training_pipeline.yaml has no parameter 'datset'" in unknown.stderr
    assert "dataset" in unknown.stderr  # the list of real parameters
    assert wrong_type.returncode == 2 and "parameter 'limit_users' is NUMBER_INTEGER, got 'forty'" in wrong_type.stderr
    assert kfp_server.requests == []
