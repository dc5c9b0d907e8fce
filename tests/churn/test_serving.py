"""`shoprec-churn` served by a real KServe ModelServer over HTTP (V1 and V2), following the churn
registry's production alias, and the `shoprec churn` command, on a home whose churn model came
through Feast and the registry."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from shoprec.churn.bundle import churn_registry, load_churn_bundle, load_registered, register_churn
from shoprec.churn.scoring import score_users
from shoprec.cli import cli
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import open_store
from shoprec.home import Home
from shoprec.kserve.churn.process import running_churn_server
from shoprec.models.bundle import WEIGHTS_FILE
from tests.churn.conftest import shifted_copy

pytestmark = pytest.mark.integration
URL_V1 = "/v1/models/shoprec-churn:predict"
URL_V2 = "/v2/models/shoprec-churn/infer"


@pytest.fixture(scope="module")
def server(churn_home_built):
    home = Home(churn_home_built.root)
    with running_churn_server(home.registry, home.root, env={"OMP_NUM_THREADS": "1"}) as base:
        yield base


def library_answers(churn_home_built, users: list[str]) -> list[dict]:
    home = Home(churn_home_built.root)
    bundle, _ = load_registered(churn_registry(home.registry))
    settings = FeatureStoreSettings(home=home)
    return score_users(bundle, open_store(settings), users, settings)


def test_v1_single_user_answers_probability_and_drivers(server, churn_home_built) -> None:
    user = churn_home_built.users[0]
    answer = httpx.post(server + URL_V1, json={"user_id": user}, timeout=30).json()
    assert 0.0 <= answer["churn_probability"] <= 1.0 and answer["known"] is True
    assert answer["model_version"] == churn_home_built.version
    for driver in answer["drivers"]:
        assert driver["contribution"] > 0 and {"feature", "value", "typical"} <= set(driver)
    # What the server says is what the library computes from the same online store.
    expected = library_answers(churn_home_built, [user])[0]
    assert answer["churn_probability"] == pytest.approx(expected["churn_probability"], abs=1e-6)
    assert [d["feature"] for d in answer["drivers"]] == [d["feature"] for d in expected["drivers"]]


def test_v1_instances_and_an_unknown_user(server, churn_home_built) -> None:
    users = churn_home_built.users[:3] + ["no-such-user"]
    body = httpx.post(server + URL_V1, json={"instances": [{"user_id": u} for u in users]}, timeout=30).json()
    answers = body["predictions"]
    assert [a["user_id"] for a in answers] == users
    assert answers[-1]["known"] is False and answers[-1]["churn_probability"] is None
    assert all(a["known"] for a in answers[:3])


def test_v2_infer(server, churn_home_built) -> None:
    users = churn_home_built.users[:2] + ["no-such-user"]
    request = {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [3], "data": users}]}
    response = httpx.post(server + URL_V2, json=request, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    expected = library_answers(churn_home_built, users[:2])
    probabilities = outputs["churn_probability"]["data"]
    assert probabilities[:2] == pytest.approx([e["churn_probability"] for e in expected], abs=1e-6)
    assert probabilities[2] is None or math.isnan(probabilities[2])
    assert outputs["known"]["data"] == [True, True, False]
    assert [d["feature"] for d in json.loads(outputs["drivers"]["data"][0])] == \
        [d["feature"] for d in expected[0]["drivers"]]


def test_a_malformed_request_is_a_400(server) -> None:
    assert httpx.post(server + URL_V1, json={"users": ["x"]}, timeout=30).status_code == 400
    request = {"inputs": [{"name": "item_id", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
    assert httpx.post(server + URL_V2, json=request, timeout=30).status_code == 400


def test_cli_user_and_batch(churn_home_built, tmp_path: Path) -> None:
    home = str(churn_home_built.root)
    users = churn_home_built.users[:4]
    result = CliRunner().invoke(cli, ["churn", "--user", users[0], "--home", home])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["user_id"] == users[0] and line["model_version"] == churn_home_built.version
    campaign = tmp_path / "campaign.csv"
    campaign.write_text("user_id\n" + "\n".join(users + ["no-such-user"]) + "\n")
    out = tmp_path / "scored.csv"
    result = CliRunner().invoke(cli, ["churn", "--batch", str(campaign), "--out", str(out), "--home", home])
    assert result.exit_code == 0, result.output
    import pandas as pd

    scored = pd.read_csv(out, dtype={"user_id": str})
    assert sorted(scored["user_id"]) == sorted(users + ["no-such-user"])
    known = scored.dropna(subset=["churn_probability"])
    assert list(known["churn_probability"]) == sorted(known["churn_probability"], reverse=True)  # riskiest first
    assert scored.iloc[-1]["user_id"] == "no-such-user"


def test_cli_without_users_is_a_usage_error(churn_home_built) -> None:
    result = CliRunner().invoke(cli, ["churn", "--home", str(churn_home_built.root)])
    assert result.exit_code != 0 and "--user" in result.output


def ask(base: str, user: str) -> dict:
    response = httpx.post(base + URL_V1, json={"user_id": user}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_version(base: str, user: str, version: str, timeout_s: float = 60.0) -> dict:
    """The first answer that came from `version` (the server polls the alias)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = ask(base, user)
        if answer["model_version"] == version or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_the_server_follows_the_alias_to_each_promoted_version(churn_home_built, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(churn_home_built.root)
    root = tmp_path / "registry"  # its own registry: the module's server keeps the fixture's
    registry = churn_registry(root)
    first = churn_home_built.root / "bundle"  # the fixture's trained bundle
    second = shifted_copy(first, tmp_path / "second", 2.0)
    broken = shifted_copy(first, tmp_path / "broken", -2.0)
    metrics = {"pr_auc": 0.5}
    v1, v2, v3 = (register_churn(registry, b, metrics).version for b in (first, second, broken))
    registry.promote(v1, reason="first", actor="test")
    settings = FeatureStoreSettings(home=home)
    user = churn_home_built.users[0]

    def expected(bundle_dir: Path) -> float:
        return score_users(load_churn_bundle(bundle_dir), open_store(settings), [user], settings)[0]["churn_probability"]

    with running_churn_server(root, home.root, env={"OMP_NUM_THREADS": "1"},
                              extra=["--poll_seconds", "0.2"]) as base:
        answer = ask(base, user)
        assert answer["model_version"] == v1
        assert answer["churn_probability"] == pytest.approx(expected(first), abs=1e-6)

        registry.promote(v2, reason="second", actor="test")
        answer = wait_for_version(base, user, v2)
        assert answer["model_version"] == v2  # no restart
        assert answer["churn_probability"] == pytest.approx(expected(second), abs=1e-6)
        assert answer["churn_probability"] != pytest.approx(expected(first), abs=1e-3)
        v2_answer = httpx.post(base + URL_V2, json={"inputs": [{"name": "user_id", "datatype": "BYTES",
                                                                 "shape": [1], "data": [user]}]}, timeout=30).json()
        assert v2_answer["model_version"] == v2

        # A version whose weights changed in the registry after it was checked (promote checks
        # them: the check is skipped here so the alias names it already broken, with no race
        # against the server's polls) is never served.
        weights = Path(registry.version_uri(v3)) / WEIGHTS_FILE
        weights.chmod(0o644)
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        monkeypatch.setattr(type(registry), "verify", lambda self, version: self.get(version))
        registry.promote(v3, reason="third", actor="test")
        monkeypatch.undo()
        time.sleep(1.5)  # several polls
        assert ask(base, user)["model_version"] == v2
        # Rolled back: the server follows the alias back.
        registry.rollback(reason="the broken one", actor="test")
        registry.rollback(reason="back to the first", actor="test")
        assert wait_for_version(base, user, v1)["model_version"] == v1
