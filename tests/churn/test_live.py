"""`LiveChurn`: the churn server's model follows the churn registry's alias with the recommender's
mechanism (`shoprec.serving.predictor.LiveModel`): a new version is verified then swapped in, a
broken one is never served and waits out a back-off, a fixed folder names its registry version."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shoprec.churn.bundle import churn_registry, register_churn
from shoprec.churn.evaluate import headline
from shoprec.churn.live import LiveChurn
from shoprec.churn.train import ChurnOutcome
from shoprec.errors import BundleIntegrityError, RegistryError
from shoprec.models.bundle import WEIGHTS_FILE
from tests.churn.conftest import shifted_copy


def probability(live: LiveChurn, x: np.ndarray) -> tuple[str, float]:
    version, bundle = live.current()
    return version, float(bundle.model.probability(x)[0])


def test_follows_the_alias_and_never_serves_a_broken_version(trained: ChurnOutcome, tmp_path: Path) -> None:
    registry = churn_registry(tmp_path / "registry")
    metrics = headline(trained.evaluation)
    v1 = register_churn(registry, trained.bundle_dir, metrics).version
    v2 = register_churn(registry, shifted_copy(trained.bundle_dir, tmp_path / "b2", 3.0), metrics).version
    v3 = register_churn(registry, shifted_copy(trained.bundle_dir, tmp_path / "b3", -3.0), metrics).version
    live = LiveChurn(registry=registry, poll_seconds=1.0)
    with pytest.raises(RegistryError, match="no production version"):
        live.load()

    registry.promote(v1, reason="first", actor="test")
    assert live.load() == v1 and live.refresh() is False  # nothing new
    x = np.full((1, len(live.current()[1].features)), 2.0)
    _, p1 = probability(live, x)
    registry.promote(v2, reason="second", actor="test")
    assert live.refresh() is True
    version, p2 = probability(live, x)
    assert version == v2 and p2 > p1  # the shifted logit: the answer comes from v2's weights

    # v3 promoted, then its weights change in the registry: refused, v2 keeps answering, and it
    # is not read again before its back-off has passed.
    registry.promote(v3, reason="third", actor="test")
    weights = Path(registry.version_uri(v3)) / WEIGHTS_FILE
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 0xFF]))
    with pytest.raises(BundleIntegrityError):
        live.refresh()
    assert live.current()[0] == v2
    assert 0.0 < live.retry_in(v3) <= 1.0
    assert live.refresh() is False  # within the back-off: not loaded (nor raised) again
    assert live.current()[0] == v2

    # A rollback to v1 is followed like any other move of the alias.
    registry.rollback(reason="back", actor="test")
    registry.rollback(reason="back again", actor="test")
    assert live.refresh() is True and live.current()[0] == v1


def test_a_fixed_folder_serves_its_registry_version_and_checks_every_file(
        trained: ChurnOutcome, tmp_path: Path) -> None:
    registry = churn_registry(tmp_path / "registry")
    version = register_churn(registry, trained.bundle_dir, headline(trained.evaluation)).version
    copy = tmp_path / "mnt-models"  # what KServe's storage initializer downloads: version.json too
    shutil.copytree(registry.bundle_dir(version), copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    live = LiveChurn(bundle_dir=copy)
    assert live.load() == version
    assert LiveChurn(bundle_dir=trained.bundle_dir).load() == trained.bundle_dir.name  # a plain bundle
    (copy / "metrics.json").write_text("{}")  # any recorded file, not only the weights
    with pytest.raises(Exception, match="metrics.json"):
        LiveChurn(bundle_dir=copy).load()


def test_answers_carry_the_version_that_gave_them(trained: ChurnOutcome, tmp_path: Path) -> None:
    registry = churn_registry(tmp_path / "registry")
    version = register_churn(registry, trained.bundle_dir, headline(trained.evaluation)).version
    registry.promote(version, reason="first", actor="test")
    live = LiveChurn(registry=registry)
    live.load()
    answers = live.answer(["a", "b"], lambda bundle, ids: [{"user_id": u, "n": len(bundle.features)} for u in ids])
    assert [a["model_version"] for a in answers] == [version, version]
    assert [a["user_id"] for a in answers] == ["a", "b"]
