"""The transformer's production feature path: a real Feast feature server (Feast's own
`start_server`, as `feast serve` runs it) over HTTP answers exactly what the SDK reads."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx

from shoprec.features.online import online_user_rows
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import open_store
from shoprec.kserve.process import free_port
from shoprec.serving.feature_sources import USER_FEATURE_REFS, FeastHTTPSource

SERVE = """
import sys
from feast.feature_server import start_server
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import open_store
store = open_store(FeatureStoreSettings.from_env(sys.argv[1]))
start_server(store, "127.0.0.1", int(sys.argv[2]), True, 1, 1000, 0, 0, 5, 60, "", "", False)
"""


def test_feature_server_over_http_answers_like_the_sdk(demo):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(demo.home.root), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Feast feature server did not start"
            time.sleep(0.5)
        users = [str(demo.sequences.users[0]), str(demo.sequences.users[1]), "no-such-user"]

        async def read():
            source = FeastHTTPSource(url)
            try:
                return await source.read(users)
            finally:
                await source.close()

        over_http = asyncio.run(read())
        settings = FeatureStoreSettings.from_env(demo.home.root)
        direct = online_user_rows(open_store(settings), users, list(USER_FEATURE_REFS), settings)
        assert over_http == direct
        assert over_http[0]["recent_items"] and not over_http[0]["missing"]
        assert over_http[2]["missing"] and over_http[2]["recent_items"] == []
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_named_feature_store_yaml_gets_the_redis_timeouts(demo, tmp_path, hanging_port):
    """The production path (SHOPREC_FEAST_YAML): a Redis that accepts and never answers fails a
    read after the library's timeouts, instead of holding the reading thread forever."""
    import threading

    from shoprec.errors import FeatureStoreUnavailable
    from shoprec.features.settings import repo_config

    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text(
        "project: shoprec\nprovider: local\n"
        f"registry: {{registry_type: file, path: {demo.home.features / 'registry.db'}, cache_ttl_seconds: 60}}\n"
        "offline_store: {type: duckdb}\n"
        f"online_store: {{type: redis, connection_string: '127.0.0.1:{hanging_port}'}}\n"
        "entity_key_serialization_version: 3\n")
    settings = FeatureStoreSettings.from_env(demo.home.root, feature_store_yaml=yaml)
    assert "socket_timeout=1" in repo_config(settings).online_store.connection_string

    outcome: list[BaseException | object] = []
    thread = threading.Thread(target=lambda: outcome.append(_read_or_error(settings)), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(timeout=15)
    assert not thread.is_alive(), "the read from a hung Redis never gave up"
    assert isinstance(outcome[0], FeatureStoreUnavailable), outcome
    assert time.monotonic() - started < 10


def _read_or_error(settings: FeatureStoreSettings) -> object:
    try:
        return online_user_rows(open_store(settings), ["1"], list(USER_FEATURE_REFS), settings)
    except Exception as exc:
        return exc


def test_the_feature_servers_health_checks_the_online_store(demo, closed_port):
    import os

    def health(env: dict[str, str]) -> httpx.Response:
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "shoprec.kserve.feature_server", "--home",
                                   str(demo.home.root), "--port", str(port)],
                                  env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the feature server did not start"
                    time.sleep(0.5)
        finally:
            server.terminate()
            server.wait(timeout=30)

    assert health({}).status_code == 200  # the home's SQLite online store answers
    down = health({"SHOPREC_FEAST_ONLINE_STORE": "redis", "SHOPREC_REDIS": f"127.0.0.1:{closed_port}"})
    assert down.status_code == 503 and f"redis at 127.0.0.1:{closed_port}" in down.text
