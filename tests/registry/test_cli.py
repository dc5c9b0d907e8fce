"""`shoprec models list | promote | rollback | history` through the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shoprec.lifecycle.registry import Registry

SHOPREC = str(Path(sys.executable).with_name("shoprec"))


def shoprec(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SHOPREC, "models", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_models_commands_list_promote_and_roll_back(tmp_path, bundle_factory):
    registry = Registry(tmp_path / "home" / "registry")  # the home's default registry
    first = registry.register(bundle_factory("mostpop"), metrics={"NDCG@10": 0.1234}).version
    second = registry.register(bundle_factory("markov1"), note="gate: reject").version
    registry.promote(first, reason="first model")
    home = ["--home", str(tmp_path / "home")]

    listed = shoprec("list", *home, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("│")[2].strip(): line for line in listed.stdout.splitlines() if "│" in line
            and (first in line or second in line)}
    assert "production" in rows[first] and "0.1234" in rows[first]
    assert "production" not in rows[second] and "gate: reject" in rows[second]

    promoted = shoprec("promote", second, "--reason", "gate too strict for this data", *home, cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == (f"production: {first} -> {second} "
                                       "(gate too strict for this data)")
    assert registry.production() == second
    assert registry.history()[-1].actor == "manual (shoprec models promote)"

    rolled = shoprec("rollback", "--reason", "conversion fell", "--registry", registry.uri, cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.strip() == f"production: {second} -> {first} (rolled back: conversion fell)"
    assert registry.production() == first

    again = shoprec("rollback", *home, cwd=tmp_path)  # nothing before the first version
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.startswith("error: production version") and "no earlier version" in again.stderr
    assert registry.production() == first

    history = shoprec("history", *home, cwd=tmp_path)
    lines = history.stdout.strip().splitlines()
    assert [line.split()[2] for line in lines] == ["promote", "promote", "rollback"]
    assert lines[-1].endswith("by manual (shoprec models rollback): conversion fell")


def test_promoting_an_unknown_version_names_the_known_ones(tmp_path, bundle_factory):
    registry = Registry(tmp_path / "registry")
    known = registry.register(bundle_factory()).version

    done = shoprec("promote", "nope", "--reason", "x", "--registry", registry.uri, cwd=tmp_path)

    assert done.returncode == 2
    assert f"no version 'nope'" in done.stderr and known in done.stderr
    assert registry.production() is None
