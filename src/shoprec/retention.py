"""Retention for folders that grow on every run or request (prediction logs, training-job work
folders): keep the newest entries, delete the rest by age and by count.

Pruning is called where those entries are written (the prediction log when it opens a file,
the training-job launcher before it makes a job folder), so a shared volume does not fill up
with nobody watching. It never raises: a file another replica deleted first, or one that cannot
be deleted, is skipped (and logged), because retention must not fail the write it rides on.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DAY_S = 24 * 3600


@dataclass(frozen=True)
class Retention:
    """Keep at most `max_count` entries and none older than `max_age_s` (None: no limit)."""

    max_age_s: float | None = 30 * DAY_S
    max_count: int | None = 1000

    @classmethod
    def from_env(cls, prefix: str, default: "Retention") -> "Retention":
        """`{prefix}_RETENTION_DAYS` and `{prefix}_MAX_FILES` override the default (0: no limit)."""
        days = os.environ.get(f"{prefix}_RETENTION_DAYS")
        count = os.environ.get(f"{prefix}_MAX_FILES")
        return cls(
            max_age_s=default.max_age_s if days is None else (float(days) * DAY_S or None),
            max_count=default.max_count if count is None else (int(count) or None),
        )


def prune(folder: str | Path, retention: Retention, *, pattern: str = "*",
          keep: Iterable[str | Path] = (), now: float | None = None) -> list[Path]:
    """Delete the entries of `folder` matching `pattern` that are older than the retention's
    max age or beyond its newest `max_count` (by modification time); never those in `keep`.
    Files are unlinked, folders removed whole. Returns what was deleted."""
    root = Path(folder)
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    kept = {Path(p).resolve() for p in keep}
    entries = []
    for path in root.glob(pattern):
        try:
            entries.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue  # deleted by another replica meanwhile
    entries.sort(reverse=True)  # newest first
    doomed = []
    for rank, (mtime, path) in enumerate(entries):
        too_old = retention.max_age_s is not None and now - mtime > retention.max_age_s
        too_many = retention.max_count is not None and rank >= retention.max_count
        if (too_old or too_many) and path.resolve() not in kept:
            doomed.append(path)
    removed = []
    for path in doomed:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("retention: could not delete %s: %s", path, exc)
    if removed:
        logger.info("retention: deleted %d old entr%s of %s", len(removed),
                    "y" if len(removed) == 1 else "ies", root)
    return removed


__all__ = ["DAY_S", "Retention", "prune"]
