"""AliasFollower, the mechanism the predictor and the churn server share, with the smallest
subclass: what is served is the text of a version's file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from shoprec.errors import RegistryError
from shoprec.serving.alias_follower import AliasFollower, ServingUnavailable


@dataclass
class Pointer:
    version: str


class FolderRegistry:
    """A registry as a follower reads it: versions are files, the alias a file naming one."""

    def __init__(self, root: Path) -> None:
        self.root, self.uri = root, str(root)

    def alias(self, name: str) -> Pointer | None:
        path = self.root / f"{name}.alias"
        return Pointer(path.read_text()) if path.exists() else None


class TextFollower(AliasFollower[str]):
    what = "text"

    def open_folder(self, folder: Path) -> tuple[str, str]:
        return folder.name, (folder / "text").read_text()

    def open_version(self, version: str) -> str:
        text = (Path(self.registry.uri) / version).read_text()  # type: ignore[union-attr]
        if text == "broken":
            raise ValueError(f"version {version} does not open")
        return text


def test_a_fixed_folder_is_served_and_never_polled(tmp_path: Path) -> None:
    (tmp_path / "v7").mkdir()
    (tmp_path / "v7" / "text").write_text("seven")
    follower = TextFollower(bundle_dir=tmp_path / "v7")
    with pytest.raises(ServingUnavailable, match="the text is not loaded yet"):
        follower.current()
    assert follower.load() == "v7" and follower.current() == ("v7", "seven")
    assert follower.refresh() is False
    with pytest.raises(ValueError, match="exactly one of bundle_dir"):
        TextFollower(bundle_dir=tmp_path, registry=FolderRegistry(tmp_path))
    with pytest.raises(ValueError, match="exactly one of bundle_dir"):
        TextFollower()


def test_the_alias_is_followed_and_a_broken_version_waits_its_back_off(tmp_path: Path) -> None:
    registry = FolderRegistry(tmp_path)
    follower = TextFollower(registry=registry, alias="production", poll_seconds=1.0)
    with pytest.raises(RegistryError, match="has no production version"):
        follower.load()
    (tmp_path / "v1").write_text("one")
    (tmp_path / "production.alias").write_text("v1")
    assert follower.load() == "v1" and follower.current() == ("v1", "one")
    assert follower.refresh() is False  # the alias still names v1

    (tmp_path / "v2").write_text("broken")
    (tmp_path / "production.alias").write_text("v2")
    with pytest.raises(ValueError, match="v2 does not open"):
        follower.refresh()
    assert follower.current() == ("v1", "one")  # still serving the last good one
    assert 0.0 < (follower.retry_in("v2") or 0.0) <= 1.0
    (tmp_path / "v2").write_text("two")  # mended, but the back-off has not passed
    assert follower.refresh() is False and follower.version == "v1"
    follower._failed["v2"] = (1, 0.0)  # the back-off passed
    assert follower.refresh() is True and follower.current() == ("v2", "two")
    assert follower.retry_in("v2") is None

    (tmp_path / "production.alias").write_text("v1")  # a rollback is followed too
    assert follower.refresh() is True and follower.version == "v1"
