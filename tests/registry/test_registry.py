"""The registry: immutable verified versions, an atomically switched alias, history, rollback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shoprec.lifecycle import registry as registry_module
from shoprec.models.bundle import WEIGHTS_FILE
from shoprec.errors import BundleIntegrityError, RegistryError
from shoprec.home import Home
from shoprec.models.inference import BundleRecommender
from shoprec.lifecycle.registry import PRODUCTION, Registry


def flip_last_byte(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def top_items(recommender: BundleRecommender, history: list[str]) -> list[str]:
    return [r.item_id for r in recommender.recommend(history, k=5)]


def test_register_copies_a_verified_bundle_as_an_immutable_version(registry, bundle_factory):
    source = bundle_factory("markov1")

    version = registry.register(source, note="first try")

    stored = Path(version.uri)
    assert stored.parent == Path(registry.root) / "versions"
    assert sorted(p.name for p in stored.iterdir()) == sorted(
        [p.name for p in source.iterdir()] + ["version.json"])
    assert all(p.stat().st_mode & 0o222 == 0 for p in stored.iterdir())  # read-only files
    assert version.kind == "markov1" and version.metrics == {"NDCG@10": 0.1, "coverage": 0.5}
    assert json.loads((source / "config.json").read_text())["weights_sha256"] == version.weights_sha256
    assert registry.versions() == [version] and registry.get(version.version) == version
    # The stored copy serves the same answers as the source bundle.
    assert top_items(registry.load(version.version), ["i4"]) == top_items(
        BundleRecommender.from_bundle(source), ["i4"])
    assert registry.production() is None and registry.history() == []


def test_a_bundle_whose_weights_do_not_match_their_sha256_is_refused_at_registration(
        registry, bundle_factory):
    source = bundle_factory()
    flip_last_byte(source / WEIGHTS_FILE)

    with pytest.raises(BundleIntegrityError, match="integrity check"):
        registry.register(source)

    assert registry.versions() == []
    assert not Path(registry.root).exists()  # nothing written at all


def test_weights_changed_after_registration_are_refused_at_load_and_promotion(registry, bundle_factory):
    version = registry.register(bundle_factory()).version
    flip_last_byte(Path(registry.version_uri(version)) / WEIGHTS_FILE)

    with pytest.raises(BundleIntegrityError, match="refusing to load"):
        registry.load(version)
    with pytest.raises(BundleIntegrityError):
        registry.promote(version, reason="should not happen")
    assert registry.production() is None


def test_a_tampered_config_that_matches_tampered_weights_is_still_refused(registry, bundle_factory):
    """Rewriting config.json's sha256 to fit new weights does not pass: the registry keeps its own."""
    version = registry.register(bundle_factory()).version
    stored = Path(registry.version_uri(version))
    other = bundle_factory("markov1")
    for name in (WEIGHTS_FILE, "config.json", "weights.sha256"):
        (stored / name).chmod(0o644)
        shutil.copyfile(other / name, stored / name)

    with pytest.raises(BundleIntegrityError):
        registry.load(version)


def test_promote_switches_the_alias_and_records_history(registry, bundle_factory):
    first = registry.register(bundle_factory("mostpop")).version
    second = registry.register(bundle_factory("markov1")).version

    registry.promote(first, reason="first model", metrics={"NDCG@10": 0.2})
    event = registry.promote(second, reason="beats the champion", actor="gate",
                             decision={"promote": True})

    assert registry.production() == second
    pointer = registry.alias(PRODUCTION)
    assert pointer.previous == (first,) and pointer.event == event.id
    history = registry.history()
    assert [(e.action, e.version, e.previous, e.reason) for e in history] == [
        ("promote", first, None, "first model"),
        ("promote", second, first, "beats the champion"),
    ]
    assert history[0].metrics == {"NDCG@10": 0.2} and history[1].decision == {"promote": True}
    assert history[1].metrics == {"NDCG@10": 0.1, "coverage": 0.5}  # the version's own metrics
    assert registry.load().bundle.config["kind"] == "markov1"


def test_rollback_restores_the_previous_version_step_by_step(registry, bundle_factory):
    versions = [registry.register(bundle_factory(kind)).version
                for kind in ("mostpop", "markov1", "itemknn")]
    for version in versions:
        registry.promote(version, reason=f"promote {version}")

    event = registry.rollback(reason="bad clicks")
    assert registry.production() == versions[1]
    assert (event.action, event.version, event.previous, event.reason) == (
        "rollback", versions[1], versions[2], "bad clicks")
    assert registry.load().bundle.config["kind"] == "markov1"

    registry.rollback()
    assert registry.production() == versions[0]
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback()
    assert registry.production() == versions[0]
    assert [e.action for e in registry.history()] == ["promote"] * 3 + ["rollback"] * 2


def test_rollback_and_load_with_nothing_promoted_name_the_problem(registry, bundle_factory):
    registry.register(bundle_factory())
    with pytest.raises(RegistryError, match="no production version"):
        registry.rollback()
    with pytest.raises(RegistryError, match="no production version"):
        registry.load()
    with pytest.raises(RegistryError, match=r"no version 'v-missing'.*versions: 2"):
        registry.promote("v-missing", reason="typo")


def test_promotion_needs_a_reason_and_a_new_version(registry, bundle_factory):
    version = registry.register(bundle_factory()).version
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.promote(version, reason="  ")
    registry.promote(version, reason="ok")
    with pytest.raises(RegistryError, match="already production"):
        registry.promote(version, reason="again")
    assert len(registry.history()) == 1


def test_a_failure_between_writing_a_bundle_and_switching_the_alias_keeps_the_old_production(
        registry, bundle_factory, monkeypatch):
    old = registry.register(bundle_factory("mostpop")).version
    registry.promote(old, reason="champion")
    before = top_items(registry.load(), ["i4"])
    new = registry.register(bundle_factory("markov1")).version  # the bundle is written ...

    def crash(*args, **kwargs):
        raise OSError("simulated crash at the alias switch")

    monkeypatch.setattr(registry_module.os, "replace", crash)  # ... the switch fails
    with pytest.raises(OSError, match="simulated crash"):
        registry.promote(new, reason="never lands")
    monkeypatch.undo()

    fresh = Registry(registry.uri)  # as a new process would see it
    assert fresh.production() == old
    assert top_items(fresh.load(), ["i4"]) == before
    assert [e.version for e in fresh.history()] == [old]
    assert [p.name for p in Path(registry.root, "aliases").iterdir()] == ["production.json"]
    fresh.promote(new, reason="retry")  # the registry is still usable
    assert fresh.production() == new


def test_a_failure_while_copying_a_bundle_leaves_no_version_and_production_intact(
        registry, bundle_factory, monkeypatch):
    old = registry.register(bundle_factory("mostpop")).version
    registry.promote(old, reason="champion")
    copied = []

    def copy_then_crash(src, dst, *args, **kwargs):
        if copied:
            raise OSError("disk full")
        copied.append(src)
        return shutil.copy2(src, dst)

    monkeypatch.setattr(registry_module.shutil, "copyfile", copy_then_crash)
    with pytest.raises(OSError, match="disk full"):
        registry.register(bundle_factory("markov1"))
    monkeypatch.undo()

    assert [v.version for v in registry.versions()] == [old]
    assert [p.name for p in Path(registry.root, "versions").iterdir()] == [old]
    assert registry.production() == old and registry.load().bundle.config["kind"] == "mostpop"


def test_default_registry_lives_in_the_home(tmp_path, bundle_factory):
    home = Home(tmp_path / "home")
    registry = Registry.from_home(home)
    version = registry.register(bundle_factory())
    assert Path(version.uri).parent == home.registry / "versions"


def test_an_object_store_registry_through_fsspec(tmp_path, bundle_factory):
    """fsspec's in-memory filesystem stands in for s3:// (same code path: no local renames)."""
    registry = Registry(f"memory://shoprec-test-{tmp_path.name}/registry", cache_dir=tmp_path / "cache")
    first = registry.register(bundle_factory("mostpop"))
    second = registry.register(bundle_factory("markov1"))
    assert first.uri.startswith("memory://") and not registry.local

    registry.promote(first.version, reason="first")
    registry.promote(second.version, reason="second")
    assert registry.load().bundle.config["kind"] == "markov1"
    registry.rollback(reason="undo")
    assert registry.production() == first.version
    assert [e.action for e in registry.history()] == ["promote", "promote", "rollback"]
    assert (tmp_path / "cache" / second.version / WEIGHTS_FILE).exists()  # downloaded to load

    # Tampered weights in the store are refused when downloaded.
    registry.fs.pipe_file(f"{registry.root}/versions/{second.version}/{WEIGHTS_FILE}", b"junk")
    with pytest.raises(BundleIntegrityError):
        registry.promote(second.version, reason="tampered")
