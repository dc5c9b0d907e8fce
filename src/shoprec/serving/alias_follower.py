"""What a model server answers with: one fixed bundle folder, or the version an alias of a
registry names, followed without a restart. The recommender's predictor
(`shoprec.serving.predictor.LiveModel`) and the churn server (`shoprec.churn.live.LiveChurn`)
are both an `AliasFollower`; each says only how it opens a bundle.

The guarantees: a background thread reads the alias every `poll_seconds`; a new version is
opened and checked completely before one reference is swapped, so each request is answered
wholly by one version; a version that fails to open is logged once, never served, and tried
again only after a back-off that doubles up to `MAX_RETRY_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from shoprec.errors import RegistryError, ShoprecError
from shoprec.lifecycle.registry import PRODUCTION
from shoprec.serving.requests import bounded

logger = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 300.0  # the longest wait before a version that failed to load is tried again
Served = TypeVar("Served")


class ServingUnavailable(ShoprecError):
    """The server cannot answer this request as it is configured or loaded: a 503 naming what
    the operator must fix, never a 400 (the request itself is fine)."""


class AliasSource(Protocol):
    """A registry as a follower reads it (the recommender's and the churn model's both are)."""

    uri: str

    def alias(self, name: str) -> Any:
        """The alias's pointer (with `.version`), or None when the alias names no version."""


class AliasFollower(Generic[Served]):
    """The (version, served thing) a server answers with. Subclasses say how a bundle opens:
    `open_folder` (a fixed folder) and `open_version` (a registry version); both must load and
    check it completely, raising when it cannot be served."""

    what = "model"  # how messages name what is served

    def __init__(self, *, bundle_dir: str | Path | None = None, registry: AliasSource | None = None,
                 alias: str = PRODUCTION, poll_seconds: float = 1.0) -> None:
        """Exactly one of bundle_dir (a fixed bundle: a registry version's folder, /mnt/models on
        a cluster, or a plain bundle) or registry (follow `alias` there)."""
        if (bundle_dir is None) == (registry is None):
            raise ValueError("give exactly one of bundle_dir (a fixed bundle) or registry (follow an alias)")
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else None
        self.registry, self.alias, self.poll_seconds = registry, alias, poll_seconds
        # (version, served): swapped as one reference, so a request never pairs two versions.
        self._current: tuple[str, Served] | None = None
        # version -> (failed attempts, monotonic time of the next try): a broken version is not
        # read and hashed again at every poll, and is logged once.
        self._failed: dict[str, tuple[int, float]] = {}
        self._last_failure: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open_folder(self, folder: Path) -> tuple[str, Served]:
        """(version, served) of the fixed bundle folder, loaded and checked."""
        raise NotImplementedError

    def open_version(self, version: str) -> Served:
        """The registry `version`, loaded and checked (`what` names it in errors)."""
        raise NotImplementedError

    def load(self) -> str:
        """Open the fixed bundle (or the alias's version) now; returns the version served."""
        if self.bundle_dir is not None:
            self._current = self.open_folder(self.bundle_dir)
        else:
            self.refresh()
            if self._current is None:
                assert self.registry is not None
                raise RegistryError(f"registry {self.registry.uri} has no {self.alias} version to serve")
        return self._current[0]

    @property
    def version(self) -> str | None:
        return self._current[0] if self._current else None

    def current(self) -> tuple[str, Served]:
        """(version, served), read as one reference: a request answered with it uses one version."""
        current = self._current
        if current is None:
            raise ServingUnavailable(f"the {self.what} is not loaded yet")
        return current

    def refresh(self) -> bool:
        """Follow the alias once: True when a new version was opened and swapped in. A version
        that failed to open raises here, then is skipped until its back-off has passed."""
        if self.registry is None:
            return False
        pointer = self.registry.alias(self.alias)
        if pointer is None or (self._current is not None and pointer.version == self._current[0]):
            return False
        attempts, next_try = self._failed.get(pointer.version, (0, 0.0))
        if time.monotonic() < next_try:
            return False
        try:
            served = self.open_version(pointer.version)  # fully loaded and checked first
        except Exception:
            self._last_failure = pointer.version
            wait = min(MAX_RETRY_SECONDS, max(self.poll_seconds, 1.0) * 2 ** attempts)
            self._failed[pointer.version] = (attempts + 1, time.monotonic() + wait)
            raise
        self._failed.pop(pointer.version, None)
        self._current = (pointer.version, served)  # one reference swap: atomic for readers
        logger.info("now serving %s version %s", self.alias, pointer.version)
        return True

    def retry_in(self, version: str) -> float | None:
        """Seconds until a version that failed to open is tried again (None: it has not failed)."""
        if version not in self._failed:
            return None
        return max(0.0, self._failed[version][1] - time.monotonic())

    def start_polling(self) -> None:
        """Follow the alias in a daemon thread (no-op for a fixed bundle)."""
        if self.registry is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name="shoprec-alias-poll", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as exc:  # a broken new version must not take the server down
                version = self._last_failure
                attempts = self._failed.get(version or "", (0, 0.0))[0]
                # One line per broken version, at its first failure, without the traceback (the
                # message names the fault); the retries after the back-off log at debug level.
                log = logger.error if attempts <= 1 else logger.debug
                log("could not load %s version %s (%s); still serving %s; next try in %.0f s",
                    self.alias, version, bounded(f"{type(exc).__name__}: {exc}", 300), self.version,
                    self.retry_in(version or "") or 0.0)
