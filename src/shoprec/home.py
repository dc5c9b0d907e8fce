"""The home folder layout: one place holds runs, reports, the registry, features and logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    """Paths inside a shoprec home folder. Creating a `Home` touches nothing on disk."""

    root: Path

    @property
    def runs(self) -> Path:
        """Pipeline runs: kfp.local's pipeline root, one folder per run and task."""
        return self.root / "runs"

    @property
    def reports(self) -> Path:
        """Reports people read: validation reports from `shoprec validate`, later drift reports."""
        return self.root / "reports"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> "Home":
        """Create the folders (called by entry points, never at import)."""
        for path in (self.runs, self.reports):
            path.mkdir(parents=True, exist_ok=True)
        return self
