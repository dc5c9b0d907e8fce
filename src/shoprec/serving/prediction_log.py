"""The prediction log: every answered request, appended by serving, read by monitoring.

One JSON object per line in rolling files
`<home>/logs/predictions/predictions-YYYYMMDD-<host>_<pid>-NNN.jsonl` (a new file each UTC day and
whenever the current one passes `max_bytes`; one set per pod and process, so replicas sharing a
volume never interleave). Serving queues records for a background writer (`PredictionLog.submit`):
a failed or slow write is counted and logged, never a failed or slowed answer. Files older than
the retention (30 days, 2000 files by default) are pruned whenever a file is opened. JSON Lines keeps
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
import logging
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from shoprec.retention import DAY_S, Retention, prune

logger = logging.getLogger(__name__)

SALT_ENV = "SHOPREC_LOG_SALT"
FILE_PREFIX = "predictions-"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 10_000  # ~10 s of traffic at 1k answers/s; past it records are dropped
DEFAULT_SLOW_WRITE_S = 1.0
DEFAULT_RETENTION = Retention(max_age_s=30 * DAY_S, max_count=2000)
RETENTION_ENV = "SHOPREC_PREDICTION_LOG"  # SHOPREC_PREDICTION_LOG_RETENTION_DAYS / _MAX_FILES
WRITE_BATCH = 512
WARN_INTERVAL_S = 60.0


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
        sponsored: per item, whether it is a paid placement (same order; records written
            before this field read back as missing).
        campaign: the campaign the request named for its sponsored items, or None.
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
    sponsored: list[bool] = field(default_factory=list)
    campaign: str | None = None
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


def hash_user(user_id: str, salt: str | None = None) -> str:
    """Keyed hash of a user id (16 hex chars): stable across servers sharing the salt."""
    key = (salt if salt is not None else os.environ.get(SALT_ENV, "")).encode()
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass
class LogStats:
    """What became of the records given to a log: written, failed (the write raised), dropped
    (the queue was full: the disk is slower than the traffic, or stalled), slow (batches whose
    write took longer than `slow_write_s`)."""

    written: int = 0
    failed: int = 0
    dropped: int = 0
    slow: int = 0


class PredictionLog:
    """Appends records to this process's own rolling JSONL files under `directory`.

    Serving calls `submit`: the record is queued (bounded) and a background thread writes it,
    so a full, read-only or stalled volume never fails or slows an answer; such records are
    counted (`stats`, and the Prometheus counter shoprec_prediction_log_records_total{outcome}
    on the server's /metrics) and logged. `append` writes synchronously (batch tools, tests).

    Files are named `predictions-YYYYMMDD-<host>_<pid>-NNN.jsonl`: each pod (hostname) and each
    process in it appends only to its own files, so replicas on a shared volume never interleave
    lines. Old files (any writer's) are pruned by `retention` whenever a file is opened.
    """

    def __init__(self, directory: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, *,
                 queue_size: int = DEFAULT_QUEUE_SIZE, writer_id: str | None = None,
                 retention: Retention | None = None, slow_write_s: float = DEFAULT_SLOW_WRITE_S) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.writer_id = writer_id or default_writer_id()
        self.retention = retention if retention is not None else Retention.from_env(RETENTION_ENV, DEFAULT_RETENTION)
        self.slow_write_s = slow_write_s
        self.stats = LogStats()
        self._stats_lock = threading.Lock()
        self._lock = threading.Lock()
        # The open file, its day and size: re-listing the folder per request cost more than
        # the write (this runs on every served request), so it happens only on a roll.
        self._out: Any = None
        self._path: Path | None = None
        self._day = ""
        self._size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._done = threading.Condition()
        self._submitted = 0
        self._handled = 0
        self._thread: threading.Thread | None = None
        self._last_warning = 0.0

    # --- serving: queued, never raising, never blocking ------------------------------------
    def submit(self, record: PredictionRecord) -> bool:
        """Queue one record for the background writer; False (counted as dropped) when the
        queue is full. Never raises, never waits."""
        try:
            data = _line(record)
            if self._thread is None:
                self._start()
            self._queue.put_nowait(data)
        except queue.Full:
            self._count("dropped", 1)
            self._warn("prediction log queue full (%d records): record dropped; the log volume "
                       "is slower than the traffic or stalled", self._queue.maxsize)
            return False
        except Exception:  # serialising or starting the thread: still never the request's problem
            self._count("failed", 1)
            logger.exception("prediction log: could not queue a record")
            return False
        with self._done:
            self._submitted += 1
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record submitted so far was handled (written or failed); False on
        timeout (a stalled volume)."""
        deadline = time.monotonic() + timeout
        with self._done:
            target = self._submitted
            while self._handled < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shoprec-prediction-log",
                                                daemon=True)  # a stalled write must not block exit
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < WRITE_BATCH:  # whatever queued meanwhile: one write, one flush
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write_batch(batch)
                    return
                batch.append(more)
            self._write_batch(batch)

    def _write_batch(self, batch: list[bytes]) -> None:
        started = time.monotonic()
        try:
            with self._lock:
                self._write(b"".join(batch))
            self._count("written", len(batch))
        except Exception as exc:
            self._count("failed", len(batch))
            self._warn("prediction log: %d record(s) not written to %s: %s: %s", len(batch),
                       self.directory, type(exc).__name__, exc)
            with self._lock:
                self._drop_file()  # reopen next time: the volume may come back
        elapsed = time.monotonic() - started
        if elapsed > self.slow_write_s:
            self._count("slow", 1)
            self._warn("prediction log: a write of %d record(s) took %.1f s", len(batch), elapsed)
        with self._done:
            self._handled += len(batch)
            self._done.notify_all()

    def _count(self, outcome: str, n: int) -> None:
        with self._stats_lock:  # the request thread counts drops, the writer thread the rest
            setattr(self.stats, outcome, getattr(self.stats, outcome) + n)
        if _RECORDS is not None:
            _RECORDS.labels(outcome=outcome).inc(n)

    def _warn(self, message: str, *args: Any) -> None:
        # At most one line per interval: a dead volume under load must not flood the log.
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL_S or self._last_warning == 0.0:
            self._last_warning = now
            logger.warning(message + " [so far: %s]", *args, self.stats)

    # --- synchronous ---------------------------------------------------------------------
    def append(self, record: PredictionRecord) -> Path:
        """Write one record as one line now (flushed: readers see it at once); returns its
        file. Raises what the write raises: serving uses `submit`."""
        with self._lock:
            return self._write(_line(record))

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most `timeout`), stop the writer, close the file."""
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass  # stalled: the daemon thread is abandoned
            self._thread.join(timeout=timeout)
            self._thread = None
        with self._lock:
            self._drop_file()

    def _write(self, data: bytes) -> Path:
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        if self._out is None or day != self._day or self._size >= self.max_bytes \
                or self._path is None or not self._path.exists():
            self._open(day)
        self._out.write(data)
        self._out.flush()
        self._size += len(data)
        assert self._path is not None
        return self._path

    def _drop_file(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass
            self._out = None

    def _open(self, day: str) -> None:
        self._drop_file()
        self._path = self._current_file(day)
        self._out = open(self._path, "ab")
        self._day, self._size = day, self._path.stat().st_size
        # Retention where the logs are written: any writer's files, never the one just opened.
        prune(self.directory, self.retention, pattern=f"{FILE_PREFIX}*.jsonl", keep=[self._path])

    def _current_file(self, day: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        mine = re.compile(rf"^{FILE_PREFIX}{day}-{re.escape(self.writer_id)}-(\d+)\.jsonl$")
        numbered = sorted((int(m.group(1)), p) for p in self.directory.glob(f"{FILE_PREFIX}{day}-*.jsonl")
                          if (m := mine.match(p.name)))
        if numbered and numbered[-1][1].stat().st_size < self.max_bytes:
            return numbered[-1][1]
        number = numbered[-1][0] + 1 if numbered else 0
        return self.directory / f"{FILE_PREFIX}{day}-{self.writer_id}-{number:03d}.jsonl"


def default_writer_id() -> str:
    """`<host>_<pid>`: the pod's hostname (unique per replica on Kubernetes) and the process,
    the host part with anything but letters, digits and '-' replaced, so the '_' is unambiguous."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host") or "host"
    return f"{host}_{os.getpid()}"


def _line(record: PredictionRecord) -> bytes:
    # vars(), not asdict(): the fields are flat, and asdict deep-copies every list.
    return (json.dumps(vars(record), separators=(",", ":"), default=str) + "\n").encode("utf-8")


def _counter() -> Any:
    """The Prometheus counter, when prometheus_client is installed (it is with KServe)."""
    try:
        from prometheus_client import Counter
    except ImportError:
        return None
    try:
        return Counter("shoprec_prediction_log_records", "Prediction-log records by outcome "
                       "(written, failed, dropped) and slow write batches", ["outcome"])
    except ValueError:  # already registered (module reloaded)
        return None


_RECORDS = _counter()


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
