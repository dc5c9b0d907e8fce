"""The churn bundle a server answers with: a fixed bundle folder, or the version an alias of the
churn registry names, followed without a restart.

Following is the recommender's mechanism, not a copy of it: `LiveChurn` is a
`shoprec.serving.predictor.LiveModel` over a `ChurnRegistry` (whose `load` returns a verified
churn bundle). So the churn server gets the same guarantees: a background thread reads the alias
every `poll_seconds`; a new version is loaded and checked completely (every file against the
sha256 recorded at registration) before one reference is swapped, so each request is answered
wholly by one version; a version that fails to load is logged once, never served, and tried again
only after a back-off that doubles up to `MAX_RETRY_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shoprec.churn.bundle import ChurnBundle, ChurnRegistry, bundle_version, load_churn_bundle
from shoprec.lifecycle.registry import PRODUCTION
from shoprec.models.bundle import recorded_digests, verify_files
from shoprec.serving.predictor import LiveModel, ServingUnavailable

# Scores users with one churn bundle: (bundle, user ids) -> one answer per user, in order.
ChurnScorer = Callable[[ChurnBundle, Sequence[str]], list[dict[str, Any]]]


class LiveChurn(LiveModel):
    """The (version, churn bundle) a churn server answers with."""

    def __init__(self, *, bundle_dir: str | Path | None = None, registry: ChurnRegistry | None = None,
                 alias: str = PRODUCTION, poll_seconds: float = 1.0) -> None:
        """Exactly one of bundle_dir (a fixed bundle: a registry version's folder, /mnt/models on a
        cluster, or a plain bundle) or registry (follow `alias` there)."""
        super().__init__(bundle_dir=bundle_dir, registry=registry, alias=alias, poll_seconds=poll_seconds)

    def load(self) -> str:
        """Load the fixed bundle (or the alias's version) now; returns the version served."""
        if self.bundle_dir is None:
            return super().load()
        # A registry version's copy carries version.json: every file is checked against it.
        verify_files(self.bundle_dir, recorded_digests(self.bundle_dir))
        bundle = load_churn_bundle(self.bundle_dir)
        self._current = (bundle_version(bundle), bundle, None)  # the layout LiveModel swaps
        return self._current[0]

    def check_window(self, recommender: Any, what: str) -> Any:
        """A churn model reads no history window: nothing to check (LiveModel's load hook)."""
        return recommender

    def current(self) -> tuple[str, ChurnBundle]:
        """(version, bundle), read as one reference: a request scored with it uses one model."""
        current = self._current
        if current is None:
            raise ServingUnavailable("the churn model is not loaded yet")
        return current[0], current[1]

    def answer(self, user_ids: Sequence[str], score: ChurnScorer) -> list[dict[str, Any]]:
        """Each user's answer from the bundle served now, with the version that gave it."""
        version, bundle = self.current()
        return [{**found, "model_version": version} for found in score(bundle, user_ids)]
