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
