"""The prediction log: every answered request, appended by serving, read by monitoring.

One JSON object per line in rolling files `<home>/logs/predictions/predictions-YYYYMMDD-NNN.jsonl`
(a new file each UTC day and whenever the current one passes `max_bytes`). JSON Lines keeps
appends cheap and crash-safe (a torn last line is skipped on read, never fatal) and needs no
writer process; `read_predictions` turns a window of it into a frame for Evidently.

User ids are never stored: `user_hash` is a keyed SHA-256 (`SHOPREC_LOG_SALT` from the
environment or a Kubernetes Secret), so a log can be shared for monitoring without exposing
who asked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

SALT_ENV = "SHOPREC_LOG_SALT"
FILE_PREFIX = "predictions-"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class PredictionRecord:
    """One answer, as monitoring needs it.

    Attributes:
        time: when the answer left (UTC, ISO 8601).
        request_id: the request's id (KServe's, or one made up by the server).
        user_hash: keyed hash of the user id ('' for a cart / anonymous request).
        kind: "user" (by user id) or "items" (a cart or anonymous session).
        model_version: the registry version (or bundle sha) that answered.
        fallback: None when the model answered, else which fallback did
            ("unknown_user", "empty_history", "features_unavailable", ...).
        features_used: names of the online features read for this answer.
        history_length: how many history items went into the model.
        items / scores: the recommendations, best first.
        categories: each recommended item's category where known (same order).
        latency_ms: server-side time to answer.
    """

    request_id: str
    user_hash: str
    kind: str
    model_version: str | None
    fallback: str | None
    items: list[str]
    scores: list[float]
    history_length: int = 0
    features_used: list[str] = field(default_factory=list)
    categories: list[str | None] = field(default_factory=list)
    latency_ms: float | None = None
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


def hash_user(user_id: str, salt: str | None = None) -> str:
    """Keyed hash of a user id (16 hex chars): stable across servers sharing the salt."""
    key = (salt if salt is not None else os.environ.get(SALT_ENV, "")).encode()
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:16]


class PredictionLog:
    """Appends records to rolling JSONL files under `directory`; safe across threads."""

    def __init__(self, directory: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # The open file, its day and size: re-listing the folder per request cost more than
        # the write (this runs on every served request), so it happens only on a roll.
        self._out: Any = None
        self._path: Path | None = None
        self._day = ""
        self._size = 0

    def append(self, record: PredictionRecord) -> Path:
        """Write one record as one line (flushed: readers see it at once); returns its file."""
        # vars(), not asdict(): the fields are flat, and asdict deep-copies every list.
        line = json.dumps(vars(record), separators=(",", ":"), default=str) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            day = datetime.now(timezone.utc).strftime("%Y%m%d")
            if self._out is None or day != self._day or self._size >= self.max_bytes \
                    or self._path is None or not self._path.exists():
                self._open(day)
            self._out.write(data)
            self._out.flush()
            self._size += len(data)
            assert self._path is not None
            return self._path

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None

    def _open(self, day: str) -> None:
        if self._out is not None:
            self._out.close()
        self._path = self._current_file()
        self._out = open(self._path, "ab")
        self._day, self._size = day, self._path.stat().st_size

    def _current_file(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        existing = sorted(self.directory.glob(f"{FILE_PREFIX}{day}-*.jsonl"))
        if existing and existing[-1].stat().st_size < self.max_bytes:
            return existing[-1]
        number = int(existing[-1].stem.rsplit("-", 1)[-1]) + 1 if existing else 0
        return self.directory / f"{FILE_PREFIX}{day}-{number:03d}.jsonl"


def read_predictions(
    directory: str | Path,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """All records with `start <= time < end` as a frame (one row per answer), oldest first.

    Lines that do not parse (a write torn by a crash) are skipped.
    """
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob(f"{FILE_PREFIX}*.jsonl")):
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    columns = list(PredictionRecord.__dataclass_fields__)
    frame = pd.DataFrame(rows, columns=columns)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    if start is not None:
        frame = frame[frame["time"] >= start]
    if end is not None:
        frame = frame[frame["time"] < end]
    return frame.sort_values("time", kind="stable", ignore_index=True)
