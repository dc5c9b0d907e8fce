"""What the contract tests' stand-in API servers share: a loopback HTTP server on a free port,
a quiet JSON handler, and running the server for the length of a test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse


class LocalApiServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 and a free port."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class JsonHandler(BaseHTTPRequestHandler):
    """Answers JSON and reads JSON bodies; logs nothing (pytest's output stays clean)."""

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else {}


Server = TypeVar("Server", bound=LocalApiServer)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    """Serve in a background thread until the block ends, then close the port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# KServe: the InferenceService API (and the raw-mode predictor Deployment) as a cluster with the
# KServe controller would answer it. A test double at the Kubernetes API boundary: no cluster,
# KServe or Knative can run here.

ISVC_PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/"
DEPLOYMENT_PREFIX = "/apis/apps/v1/namespaces/"
APPLY_PATCH = "application/apply-patch+yaml"
REPLICAS = 2


def _merged(old: Any, new: Any) -> Any:
    """Server-side apply of a sole field manager, approximated: maps merge key by key, lists and
    scalars are replaced. (Real SSA also drops fields this manager set before and now omits; the
    deploy code never relies on an omission.)"""
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for key, value in new.items():
            out[key] = _merged(old.get(key), value)
        return out
    return json.loads(json.dumps(new))


def _condition(kind: str, status: bool | None, reason: str = "", message: str = "") -> dict[str, Any]:
    found = {"type": kind, "status": {True: "True", False: "False", None: "Unknown"}[status],
             "lastTransitionTime": "2024-01-01T00:00:00Z"}
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


class _Revision:
    def __init__(self, name: str, template: str, storage_uri: str, outcome: str) -> None:
        self.name, self.template, self.storage_uri, self.outcome = name, template, storage_uri, outcome


class _Controller:
    """KServe's (and Knative's) reconcile of one InferenceService, one step per GET: the first
    GET after a change still shows the old status, the next ones move it along."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.revisions: list[_Revision] = []
        self.ready: _Revision | None = None      # latestReadyRevision
        self.rolled: _Revision | None = None     # latestRolledoutRevision (serving 100%, or the canary's rest)
        self.previous_rolled: _Revision | None = None
        self.dirty = False
        self.gets_since_change = 0


class FakeKServe(LocalApiServer):
    """Keeps InferenceServices (and, in raw mode, their predictor Deployments), answers
    GET/PATCH (server-side apply)/PUT/POST/DELETE, and plays the controller: a storageUri listed
    in `failing` gets a revision that fails (`failing[uri]` is the container's message), one in
    `stuck` a revision that never becomes Ready; any other becomes Ready with the traffic split
    its spec asks for."""

    def __init__(self, mode: str = "Serverless") -> None:
        super().__init__(_KServeHandler)
        self.mode = mode
        self.requests: list[dict[str, Any]] = []
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.controllers: dict[tuple[str, str], _Controller] = {}
        self.failing: dict[str, str] = {}
        self.stuck: set[str] = set()
        self.lock = threading.Lock()
        self._resource_version = 100

    # --- what tests read -------------------------------------------------------------------
    def calls(self, method: str, kind: str = "inferenceservices") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and f"/{kind}" in r["path"]]

    def storage_uri(self, name: str = "shoprec", namespace: str = "shoprec") -> str | None:
        found = self.objects.get((namespace, name))
        return found["spec"]["predictor"]["model"]["storageUri"] if found else None

    def serving(self, name: str = "shoprec", namespace: str = "shoprec") -> dict[str, int]:
        """storageUri -> share of the traffic, as the data plane would route it now."""
        control = self.controllers.get((namespace, name))
        if control is None:
            return {}
        status = self.objects[(namespace, name)].get("status", {})
        if self.mode != "Serverless":
            return {control.rolled.storage_uri: 100} if control.rolled else {}
        by_name = {r.name: r.storage_uri for r in control.revisions}
        return {by_name[t["revisionName"]]: t["percent"]
                for t in status.get("components", {}).get("predictor", {}).get("traffic", [])}

    def seed(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """An InferenceService applied earlier (by kubectl) and fully reconciled."""
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        with self.lock:
            self._store(key, json.loads(json.dumps(manifest)))
            while self.controllers[key].dirty:
                self.controllers[key].gets_since_change = 99
                self._reconcile(key)
            return self.objects[key]

    # --- storage ----------------------------------------------------------------------------
    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _store(self, key: tuple[str, str], obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        metadata = obj.setdefault("metadata", {})
        metadata.pop("resourceVersion", None)
        if old is None:
            metadata.update(generation=1, uid=f"uid-{key[1]}", creationTimestamp="2024-01-01T00:00:00Z")
            obj["status"] = {}
            self.controllers[key] = _Controller(self.mode)
            changed = True
        else:
            changed = obj.get("spec") != old.get("spec")
            metadata.update(generation=old["metadata"]["generation"] + int(changed),
                            uid=old["metadata"]["uid"], creationTimestamp=old["metadata"]["creationTimestamp"])
            obj["status"] = old.get("status", {})
        metadata["resourceVersion"] = self._next_version()
        self.objects[key] = obj
        if changed:
            self.controllers[key].dirty = True
            self.controllers[key].gets_since_change = 0

    # --- the controller ---------------------------------------------------------------------
    def _outcome(self, storage_uri: str) -> str:
        return "failed" if storage_uri in self.failing else "stuck" if storage_uri in self.stuck else "ready"

    def _reconcile(self, key: tuple[str, str]) -> None:
        control, obj = self.controllers[key], self.objects[key]
        control.gets_since_change += 1
        if not control.dirty or control.gets_since_change < 2:
            return
        predictor = obj["spec"]["predictor"]
        template = json.dumps({k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}, sort_keys=True)
        uri = predictor["model"]["storageUri"]
        latest = control.revisions[-1] if control.revisions else None
        status = obj["status"]
        status["observedGeneration"] = obj["metadata"]["generation"]
        status["deploymentMode"] = self.mode
        if latest is None or latest.template != template:
            # Knative (or the Deployment) picks up the new template: a new revision, not Ready yet.
            latest = _Revision(f"{key[1]}-predictor-{len(control.revisions) + 1:05d}", template, uri,
                               self._outcome(uri))
            control.revisions.append(latest)
            self._publish(key, latest, rolling=True)
            return
        self._publish(key, latest, rolling=False)
        control.dirty = latest.outcome == "stuck"

    def _publish(self, key: tuple[str, str], latest: _Revision, *, rolling: bool) -> None:
        control, obj = self.controllers[key], self.objects[key]
        status, name = obj["status"], key[1]
        canary = obj["spec"]["predictor"].get("canaryTrafficPercent")
        failed = latest.outcome == "failed" and not rolling
        if not rolling and latest.outcome == "ready":
            control.ready = latest
            if canary is None or canary >= 100 or control.rolled is None or control.rolled is latest:
                if control.rolled is not latest:
                    control.previous_rolled, control.rolled = control.rolled, latest
        serving_ok = control.rolled is not None and control.rolled.outcome == "ready"
        if self.mode == "Serverless":
            traffic = []
            if control.ready is latest and control.rolled is not latest and canary is not None and canary < 100:
                traffic = [{"revisionName": latest.name, "percent": canary, "latestRevision": True, "tag": "latest"},
                           {"revisionName": control.rolled.name, "percent": 100 - canary, "latestRevision": False,
                            "tag": "prev"}]
            elif control.rolled is not None:
                traffic = [{"revisionName": control.rolled.name, "percent": 100,
                            "latestRevision": control.rolled is latest}]
            predictor = {"latestCreatedRevision": latest.name, "traffic": traffic,
                         "url": f"http://{name}-predictor.{key[0]}.example.com"}
            if control.ready is not None:
                predictor["latestReadyRevision"] = control.ready.name
            if control.rolled is not None:
                predictor["latestRolledoutRevision"] = control.rolled.name
            if control.previous_rolled is not None:
                predictor["previousRolledoutRevision"] = control.previous_rolled.name
            status["components"] = {"predictor": predictor}
            if failed:
                message = f'Revision "{latest.name}" failed with message: {self.failing[latest.storage_uri]}.'
                predictor_condition = _condition("PredictorReady", False, "RevisionFailed", message)
                ready = _condition("Ready", False, "RevisionFailed", message)
            elif control.ready is latest:
                predictor_condition, ready = _condition("PredictorReady", True), _condition("Ready", True)
            else:
                predictor_condition = _condition("PredictorReady", None, "RevisionMissing",
                                                 "Configuration is waiting for a Revision to become ready.")
                ready = _condition("Ready", None, "RevisionMissing")
            status["conditions"] = [_condition("IngressReady", serving_ok), predictor_condition, ready]
            status["url"] = f"http://{name}.{key[0]}.example.com"
        else:
            self._publish_raw(key, latest, rolling=rolling, failed=failed, serving_ok=serving_ok)
        status["modelStatus"] = self._model_status(latest, rolling=rolling, failed=failed)

    def _publish_raw(self, key: tuple[str, str], latest: _Revision, *, rolling: bool, failed: bool,
                     serving_ok: bool) -> None:
        """Raw mode: the predictor Deployment rolls its pods; the old pods keep the service Ready."""
        name = f"{key[1]}-predictor"
        deployment = self.deployments.get((key[0], name))
        if deployment is None:
            deployment = self.deployments[(key[0], name)] = {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": key[0], "generation": 0},
                "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "kserve-container", "image": "runtime"}]}}},
                "status": {}}
        if rolling:
            deployment["metadata"]["generation"] += 1
            deployment["status"] = {**deployment["status"], "observedGeneration": deployment["metadata"]["generation"],
                                    "updatedReplicas": 1, "replicas": REPLICAS + 1}
        elif latest.outcome == "ready":
            deployment["status"] = {"observedGeneration": deployment["metadata"]["generation"], "replicas": REPLICAS,
                                    "updatedReplicas": REPLICAS, "readyReplicas": REPLICAS,
                                    "availableReplicas": REPLICAS,
                                    "conditions": [{"type": "Available", "status": "True"},
                                                   {"type": "Progressing", "status": "True",
                                                    "reason": "NewReplicaSetAvailable"}]}
        elif failed:
            deployment["status"]["conditions"] = [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": f'ReplicaSet "{name}-7f9c" has timed out progressing.'}]
        status = self.objects[key]["status"]
        status["components"] = {"predictor": {"url": f"http://{name}.{key[0]}.svc.cluster.local"}}
        status["conditions"] = [_condition("IngressReady", True), _condition("PredictorReady", serving_ok),
                                _condition("Ready", serving_ok)]

    def _model_status(self, latest: _Revision, *, rolling: bool, failed: bool) -> dict[str, Any]:
        if failed and self.mode != "Serverless":  # raw mode: KServe reads the new pods' container states
            return {"transitionStatus": "BlockedByFailedLoad",
                    "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": self.failing[latest.storage_uri]}}
        if rolling or latest.outcome != "ready":
            return {"transitionStatus": "InProgress", "states": {"activeModelState": "Loaded",
                                                                  "targetModelState": "Loading"}}
        return {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded",
                                                            "targetModelState": "Loaded"}}


class _KServeHandler(JsonHandler):
    server: FakeKServe

    def _route(self) -> tuple[str, tuple[str, str | None]] | None:
        path = self.path.split("?")[0]
        for kind, prefix in (("inferenceservices", ISVC_PREFIX), ("deployments", DEPLOYMENT_PREFIX)):
            if path.startswith(prefix):
                parts = path[len(prefix):].strip("/").split("/")
                if len(parts) in (2, 3) and parts[1] == kind:
                    return kind, (parts[0], parts[2] if len(parts) == 3 else None)
        return None

    def _record(self) -> tuple[tuple[str, tuple[str, str | None]] | None, dict[str, Any] | None]:
        body = self._body() if self.command in ("POST", "PUT", "PATCH") else None
        query = parse_qs(urlparse(self.path).query)
        self.server.requests.append({"method": self.command, "path": self.path.split("?")[0], "query": query,
                                     "content_type": self.headers.get("Content-Type"), "body": body})
        return self._route(), body

    def _missing(self) -> None:
        self._answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                           "code": 404, "message": f"{self.path} not found"})

    def do_GET(self) -> None:
        route, _ = self._record()
        with self.server.lock:
            if route and route[0] == "inferenceservices" and route[1] in self.server.objects:
                self.server._reconcile(route[1])  # type: ignore[arg-type]
                return self._answer(200, self.server.objects[route[1]])  # type: ignore[index]
            if route and route[0] == "deployments" and route[1] in self.server.deployments:
                return self._answer(200, self.server.deployments[route[1]])  # type: ignore[index]
        self._missing()

    def do_PATCH(self) -> None:
        route, body = self._record()
        if not route or route[0] != "inferenceservices" or route[1][1] is None:
            return self._missing()
        query = parse_qs(urlparse(self.path).query)
        if self.headers.get("Content-Type") != APPLY_PATCH or "fieldManager" not in query:
            return self._answer(415, {"kind": "Status", "code": 415,
                                      "message": "this fake speaks server-side apply only"})
        key = route[1]
        with self.server.lock:
            old = self.server.objects.get(key)  # type: ignore[arg-type]
            if body.get("metadata", {}).get("name") != key[1] or body.get("kind") != "InferenceService":
                return self._answer(400, {"kind": "Status", "code": 400, "message": "name or kind mismatch"})
            applied = _merged({k: v for k, v in (old or {}).items() if k != "status"}, body)
            self.server._store(key, applied, old)  # type: ignore[arg-type]
            self._answer(200 if old else 201, self.server.objects[key])  # type: ignore[index]

    def do_PUT(self) -> None:
        route, body = self._record()
        if not route or route[0] != "inferenceservices" or route[1] not in self.server.objects:
            return self._missing()
        key = route[1]
        with self.server.lock:
            old = self.server.objects[key]  # type: ignore[index]
            if body.get("metadata", {}).get("resourceVersion") != old["metadata"]["resourceVersion"]:
                return self._answer(409, {"kind": "Status", "code": 409, "reason": "Conflict",
                                          "message": "the object has been modified"})
            self.server._store(key, json.loads(json.dumps(body)), old)  # type: ignore[arg-type]
            self._answer(200, self.server.objects[key])  # type: ignore[index]

    def do_POST(self) -> None:
        route, body = self._record()
        if not route or route[0] != "inferenceservices" or route[1][1] is not None:
            return self._missing()
        key = (route[1][0], body["metadata"]["name"])
        with self.server.lock:
            if key in self.server.objects:
                return self._answer(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
            self.server._store(key, json.loads(json.dumps(body)))
            self._answer(201, self.server.objects[key])

    def do_DELETE(self) -> None:
        route, _ = self._record()
        with self.server.lock:
            if not route or route[0] != "inferenceservices" or route[1] not in self.server.objects:
                return self._missing()
            self.server.objects.pop(route[1])  # type: ignore[arg-type]
            self.server.controllers.pop(route[1])  # type: ignore[arg-type]
            self.server.deployments.pop((route[1][0], f"{route[1][1]}-predictor"), None)
            self._answer(200, {"kind": "Status", "status": "Success"})
