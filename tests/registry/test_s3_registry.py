"""The registry on a real S3-protocol server (moto's threaded server on localhost): register,
promote, rollback, download-and-verify, compare-and-swap between concurrent writers, and KServe's
own storage initializer downloading a version that the real predictor then serves over HTTP.

Credentials and the endpoint reach s3fs, boto3 and KServe through the environment
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), as on a cluster: nothing in the code names them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoprec.errors import BundleIntegrityError, InfraCheckError
from shoprec.kserve.infra_check import predict
from shoprec.kserve.process import running_predictor
from shoprec.lifecycle.alias_store import Conflict, S3Store, conditional_store
from shoprec.lifecycle.registry import COMMITTED, CONFLICT, Registry, RegistryConflict
from shoprec.models.bundle import VOCAB_FILE, WEIGHTS_FILE, BundleFileIntegrityError
from shoprec.serving.predictor import answer
from shoprec.serving.requests import parse_v1

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

INSTANCES = [{"items": ["i4"], "k": 3}, {"items": ["i9", "i10"], "k": 5}]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free localhost port, for this module."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment a pod gets from its S3 Secret (test credentials for the local server)."""
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "shoprec-test",
           "AWS_SECRET_ACCESS_KEY": "shoprec-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    return env


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> str:
    name = f"shoprec-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_registry(bucket: str, tmp_path: Path) -> Registry:
    return Registry(f"s3://{bucket}/shoprec/registry", cache_dir=tmp_path / "cache")


def keys(bucket: str, prefix: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def top(recommender, history: list[str]) -> list[str]:
    return [r.item_id for r in recommender.recommend(history, k=5)]


def test_register_promote_rollback_and_load_on_s3(s3_registry, bucket, bundle_factory):
    first = s3_registry.register(bundle_factory("mostpop"))
    second = s3_registry.register(bundle_factory("markov1"))

    assert first.uri == f"s3://{bucket}/shoprec/registry/versions/{first.version}/"
    stored = keys(bucket, f"shoprec/registry/versions/{first.version}/")
    record = json.loads(boto3.client("s3").get_object(
        Bucket=bucket, Key=f"shoprec/registry/versions/{first.version}/version.json")["Body"].read())
    # Every bundle file is in the store and hashed in the version record.
    assert {Path(k).name for k in stored} == set(record["files"]) | {"version.json"}
    assert {WEIGHTS_FILE, "config.json", VOCAB_FILE, "metrics.json"} <= set(record["files"])

    s3_registry.promote(first.version, reason="first")
    s3_registry.promote(second.version, reason="second")
    fresh = Registry(s3_registry.uri, cache_dir=s3_registry._cache_dir)  # as another process sees it
    assert fresh.production() == second.version
    assert fresh.load().bundle.config["kind"] == "markov1"
    fresh.rollback(reason="undo")
    assert s3_registry.production() == first.version
    assert s3_registry.alias().previous == ()
    history = s3_registry.history()
    assert [(e.action, e.version, e.status) for e in history] == [
        ("promote", first.version, COMMITTED), ("promote", second.version, COMMITTED),
        ("rollback", first.version, COMMITTED)]
    assert top(s3_registry.load(), ["i4"]) == top(s3_registry.load(first.version), ["i4"])


def test_a_tampered_items_json_in_the_store_or_the_download_is_refused_by_name(
        s3_registry, bucket, bundle_factory, tmp_path):
    version = s3_registry.register(bundle_factory("markov1")).version
    s3_registry.promote(version, reason="champion")
    # Download-and-verify: the bundle comes down whole and checked.
    local = s3_registry.bundle_dir(version)
    assert (local / VOCAB_FILE).exists() and (local / "version.json").exists()

    # Someone edits items.json in the bucket (the weights are untouched).
    key = f"shoprec/registry/versions/{version}/{VOCAB_FILE}"
    client = boto3.client("s3")
    items = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=items.replace(b'"i1"', b'"i999"'))

    with pytest.raises(BundleFileIntegrityError, match=r"items\.json"):
        s3_registry.verify(version)
    other = Registry(s3_registry.uri, cache_dir=tmp_path / "fresh-cache")
    with pytest.raises(BundleFileIntegrityError, match=r"bundle file items\.json .*refusing to load"):
        other.load(version)
    # A tampered local copy is refused too.
    (local / VOCAB_FILE).write_bytes(items.replace(b'"i1"', b'"i999"'))
    with pytest.raises(BundleIntegrityError, match=r"items\.json"):
        s3_registry.load(version)


def test_the_conditional_put_refuses_a_write_over_an_object_changed_since_it_was_read(s3_registry):
    store = conditional_store(s3_registry.fs, s3_registry.root, local=False)
    assert isinstance(store, S3Store)
    path = f"{s3_registry.root}/aliases/cas-test.json"
    absent = store.read(path)
    store.write(path, b"one", absent)
    with pytest.raises(Conflict):
        store.write(path, b"two", absent)  # it exists now: If-None-Match refuses
    seen = store.read(path)
    store.write(path, b"three", seen)
    with pytest.raises(Conflict):
        store.write(path, b"four", seen)  # changed since `seen`: If-Match refuses
    assert s3_registry.fs.cat_file(path) == b"three"


def promote_together(registry: Registry, versions: list[str], expected=...) -> dict[str, object]:
    """Each version promoted by its own thread and registry client, released at one instant."""
    barrier = threading.Barrier(len(versions))
    outcome: dict[str, object] = {}

    def run(version: str) -> None:
        mine = Registry(registry.uri, cache_dir=registry._cache_dir)
        barrier.wait()
        try:
            kwargs = {} if expected is ... else {"expected": expected}
            outcome[version] = mine.promote(version, reason=f"race {version}", **kwargs)
        except RegistryConflict as exc:
            outcome[version] = exc

    threads = [threading.Thread(target=run, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcome


@pytest.mark.integration
def test_two_concurrent_promotions_exactly_one_wins_and_the_history_keeps_both(
        s3_registry, bundle_factory):
    champion, *challengers = [s3_registry.register(bundle_factory(kind)).version
                              for kind in ("mostpop", "markov1", "itemknn")]
    s3_registry.promote(champion, reason="champion")

    outcome = promote_together(s3_registry, challengers, expected=champion)

    winners = [v for v, r in outcome.items() if not isinstance(r, Exception)]
    losers = [v for v, r in outcome.items() if isinstance(r, RegistryConflict)]
    assert len(winners) == 1 and len(losers) == 1, outcome
    message = str(outcome[losers[0]])
    assert "nothing was changed" in message and champion in message
    assert s3_registry.production() == winners[0]
    assert s3_registry.alias().previous == (champion,)  # the champion is not lost from the stack
    committed = s3_registry.history()
    assert [(e.version, e.previous) for e in committed] == [(champion, None), (winners[0], champion)]
    everything = s3_registry.history(include_uncommitted=True)
    assert {e.id for e in committed} <= {e.id for e in everything}
    # A loser that got past the first check has its intent kept, marked as a conflict.
    assert all(e.status in (COMMITTED, CONFLICT) for e in everything)


@pytest.mark.integration
def test_racing_promotions_without_an_expected_version_never_lose_an_update(s3_registry, bundle_factory):
    """Each writer expects what it read: whoever lands, the committed history stays one chain
    (every promotion's `previous` is the version before it), which two blind writes would break."""
    champion, *others = [s3_registry.register(bundle_factory(kind)).version
                         for kind in ("mostpop", "markov1", "itemknn", "buyagain", "decayfreq", "tifuknn")]
    s3_registry.promote(champion, reason="champion")

    outcome = promote_together(s3_registry, others)

    assert all(isinstance(r, RegistryConflict) or r.status == COMMITTED for r in outcome.values())
    committed = s3_registry.history()
    for before, after in zip(committed, committed[1:]):
        assert after.previous == before.version, [(e.version, e.previous) for e in committed]
    pointer = s3_registry.alias()
    assert pointer.version == committed[-1].version
    assert list(pointer.previous) == [e.version for e in committed[:-1]]


def storage_initializer(uri: str, out_dir: Path, env: dict[str, str]) -> None:
    """KServe's storage initializer, as its init container runs it: Storage.download_files
    from kserve[storage] (kserve 0.21 ships it as the kserve_storage package), in a process of
    its own with only the environment a pod gets."""
    code = ("import sys; from kserve_storage import Storage; "
            "Storage.download_files([sys.argv[1]], [sys.argv[2]])")
    done = subprocess.run([sys.executable, "-c", code, uri, str(out_dir)], env={**env, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.integration
def test_kserve_storage_initializer_downloads_a_version_the_predictor_serves(
        s3_registry, s3_env, bundle_factory, tmp_path):
    pytest.importorskip("kserve_storage")
    new = s3_registry.register(bundle_factory("markov1"))
    # The same weights again within the second get id "<new>-2": the URL's "/" keeps its files out.
    s3_registry.register(bundle_factory("markov1"))
    s3_registry.promote(new.version, reason="champion")
    models = tmp_path / "mnt" / "models"

    storage_initializer(s3_registry.version_uri(new.version), models, s3_env)

    assert sorted(p.name for p in models.iterdir()) == sorted([*new.files, "version.json"])
    expected = answer(s3_registry.load(new.version), parse_v1({"instances": INSTANCES}))
    with running_predictor(["--model_dir", str(models)]) as base:
        status, body = predict(base, INSTANCES)
    assert status == 200, body
    assert body["predictions"] == expected
    assert body["model_version"] == new.version  # the registry version, not "models"

    # A downloaded copy whose items.json was changed is refused at start, naming the file.
    vocab = models / VOCAB_FILE
    vocab.write_bytes(vocab.read_bytes().replace(b'"i1"', b'"i999"'))
    with pytest.raises(InfraCheckError, match=r"items\.json"):
        with running_predictor(["--model_dir", str(models)]):
            pass


@pytest.mark.integration
def test_the_predictor_follows_an_s3_registry_alias(s3_registry, bundle_factory, tmp_path):
    """The predictor's own load from s3:// (credentials from the inherited environment)."""
    old = s3_registry.register(bundle_factory("mostpop")).version
    new = s3_registry.register(bundle_factory("markov1")).version
    s3_registry.promote(old, reason="champion")
    with running_predictor(["--registry", s3_registry.uri, "--poll_seconds", "0.2"]) as base:
        assert predict(base, INSTANCES)[1]["model_version"] == old
        s3_registry.promote(new, reason="better")
        deadline = time.monotonic() + 30
        while predict(base, INSTANCES)[1]["model_version"] != new:
            assert time.monotonic() < deadline, "the predictor did not follow the alias"
            time.sleep(0.1)
