"""`shoprec serve`, `shoprec recommend` (single user, cart, batch) and `shoprec demo` end to end."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from shoprec.cli import cli
from shoprec.features import names as N
from shoprec.home import Home
from shoprec.kserve.process import free_port
from shoprec.kserve.process import stop, wait_ready
from shoprec.lifecycle.registry import Registry
from tests.serving.conftest import predict

pytestmark = pytest.mark.integration


def test_recommend_user_and_cart_print_a_table(servers, demo):
    user = str(demo.sequences.users[0])
    result = CliRunner().invoke(cli, ["recommend", "--user", user, "--k", "3", "--url", servers.transformer])
    assert result.exit_code == 0, result.output
    first = predict(servers.transformer, [{"user_id": user, "k": 3}]).json()["predictions"][0]["items"][0]
    assert f"Top 3 for user {user}" in result.output and first["item_id"] in result.output
    assert "because you bought" in result.output

    cart = CliRunner().invoke(cli, ["recommend", "--items", "50,181", "--url", servers.transformer])
    assert cart.exit_code == 0 and "in your cart" in cart.output

    down = CliRunner().invoke(cli, ["recommend", "--user", user, "--url", f"http://127.0.0.1:{free_port()}"])
    assert down.exit_code != 0 and "shoprec serve" in str(down.exception)


def test_recommend_batch_writes_the_endpoints_answers(servers, demo, tmp_path):
    users = [str(u) for u in demo.sequences.users[:5]] + ["never-seen-shopper"]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n")
    out = tmp_path / "recs.parquet"

    result = CliRunner().invoke(cli, ["recommend", "--batch", str(tmp_path / "users.txt"), "--out", str(out),
                                      "--k", "4", "--home", str(demo.home.root)])

    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) == 4 * len(users) and frame["model_version"].eq(demo.version).all()
    served = predict(servers.transformer, [{"user_id": u, "k": 4} for u in users]).json()["predictions"]
    for user, prediction in zip(users, served):
        mine = frame[frame["user_id"] == user].sort_values("rank")
        assert mine["item_id"].tolist() == [i["item_id"] for i in prediction["items"]], user
        assert set(mine["fallback"].fillna("none")) == {prediction["fallback"] or "none"}
    assert "unknown_user 1" in result.output


def test_serve_starts_both_servers_and_stops_on_sigterm(demo):
    port, predictor_port = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "shoprec"), "serve", "--home", str(demo.home.root), "--port", str(port),
               "--predictor-port", str(predictor_port), "--items", str(demo.items_path)]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(process, f"http://127.0.0.1:{port}/v1/models/shoprec", 90, log)
            response = predict(f"http://127.0.0.1:{port}", [{"user_id": str(demo.sequences.users[0]), "k": 2}])
            assert response.status_code == 200 and response.json()["predictions"][0]["fallback"] is None
            assert predict(f"http://127.0.0.1:{predictor_port}", [{"items": ["50"], "k": 2}]).status_code == 200
        finally:
            code = stop(process, timeout_s=30)
        log.seek(0)
        output = log.read()
    assert code == 0, output[-2000:]
    assert "stopped" in output


def test_demo_builds_a_home_to_serve_and_says_what_next(tmp_path):
    home = Home.at(tmp_path / "demo-home")

    result = CliRunner().invoke(cli, ["demo", "--home", str(home.root), "--users", "6", "--epochs", "1"])

    assert result.exit_code == 0, result.output
    production = Registry.from_home(home).production()
    assert production is not None and f"model {production} in production" in result.output
    assert home.features_manifest.exists() and home.item_stats.exists()
    assert home.feature_table(N.USER_STATS).exists() and home.feature_table(N.USER_RECENT_ITEMS).exists()
    assert f"shoprec serve --home {home.root}" in result.output and "curl" in result.output

    again = CliRunner().invoke(cli, ["demo", "--home", str(home.root)])
    assert again.exit_code != 0 and "not empty" in str(again.exception)
