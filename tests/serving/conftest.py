"""A real serving home (ML-100K slice -> feature tables -> SQLite online store; a small SASRec
trained on the same events, registered and promoted) and the real servers on free ports."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily below: collecting the tests must not need httpx
    import httpx

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from shoprec.kserve.process import free_port
from shoprec.cli.demo import DemoHome, build_demo_home
from shoprec.kserve.process import ServingURLs, running_servers


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    import torch

    torch.set_num_threads(1)
    # Histories of up to 400 items: a user with more than the window (200) is served more
    # than the model's transformer reads (seen items excluded over all of it, as evaluation does).
    return build_demo_home(tmp_path_factory.mktemp("serving-home"), users=40, max_len=200, epochs=2, history_len=400)


@pytest.fixture(scope="session")
def servers(demo: DemoHome) -> Iterator[ServingURLs]:
    with running_servers(demo.home.root, items=demo.items_path,
                         env={"SHOPREC_LOG_SALT": "test-salt", "OMP_NUM_THREADS": "1"}) as urls:
        yield urls


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (Feast 'down')."""
    return free_port()


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port that accepts connections and never answers (Feast 'slow')."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def predict(base: str, instances: list, **kwargs) -> "httpx.Response":
    import httpx

    return httpx.post(f"{base}/v1/models/shoprec:predict", json={"instances": instances}, timeout=30, **kwargs)


def feast_redis_env(port: int) -> dict[str, str]:
    return {"SHOPREC_FEAST_ONLINE_STORE": "redis", "SHOPREC_REDIS": f"127.0.0.1:{port}"}


def home_of(demo: DemoHome) -> Path:
    return demo.home.root
