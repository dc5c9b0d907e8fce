"""The churn bundle a server answers with: a fixed bundle folder, or the version an alias of the
churn registry names, followed without a restart.

Following is the recommender's mechanism, not a copy of it: `LiveChurn` is a
`shoprec.serving.alias_follower.AliasFollower` over a `ChurnRegistry` (whose `load` returns a
verified churn bundle), as the recommender's `LiveModel` is over its registry. So the churn
server gets the same guarantees: a background thread reads the alias every `poll_seconds`; a new
version is loaded and checked completely (every file against the sha256 recorded at
registration) before one reference is swapped, so each request is answered wholly by one
version; a version that fails to load is logged once, never served, and tried again only after
a back-off that doubles up to `MAX_RETRY_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shoprec.churn.bundle import ChurnBundle, ChurnRegistry, bundle_version, load_churn_bundle
from shoprec.models.bundle import recorded_digests, verify_files
from shoprec.serving.alias_follower import AliasFollower

# Scores users with one churn bundle: (bundle, user ids) -> one answer per user, in order.
ChurnScorer = Callable[[ChurnBundle, Sequence[str]], list[dict[str, Any]]]


class LiveChurn(AliasFollower[ChurnBundle]):
    """The (version, churn bundle) a churn server answers with. Exactly one of bundle_dir (a
    fixed bundle: a registry version's folder, /mnt/models on a cluster, or a plain bundle) or
    registry (a `ChurnRegistry`: follow `alias` there)."""

    what = "churn model"

    def open_folder(self, folder: Path) -> tuple[str, ChurnBundle]:
        # A registry version's copy carries version.json: every file is checked against it.
        verify_files(folder, recorded_digests(folder))
        bundle = load_churn_bundle(folder)
        return bundle_version(bundle), bundle

    def open_version(self, version: str) -> ChurnBundle:
        registry = self.registry
        assert isinstance(registry, ChurnRegistry)
        return registry.load(version)  # verified against the files recorded at registration

    def answer(self, user_ids: Sequence[str], score: ChurnScorer) -> list[dict[str, Any]]:
        """Each user's answer from the bundle served now, with the version that gave it."""
        version, bundle = self.current()
        return [{**found, "model_version": version} for found in score(bundle, user_ids)]
