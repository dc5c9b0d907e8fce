"""Compare-and-swap for the registry's small mutable objects (the alias files).

A promotion reads the alias, decides, and writes the alias back. Two writers doing that at the
same time must not both win: the write succeeds only if the object is still the one that was
read, else `Conflict` (and the caller reports who won). How "still the one" is checked depends
on the storage:

- a local folder (or a shared POSIX volume): an exclusive `flock` on a lock file held only for
  the compare and the `os.replace` (the kernel drops it if the writer dies: no stale locks);
  the token is the sha256 of the bytes read;
- S3 and S3-protocol servers (MinIO, Ceph, moto): a conditional PUT, `If-Match: <ETag>` for an
  existing object and `If-None-Match: *` for a new one; the server refuses a write whose
  condition fails, so there is no lock to leave behind;
- fsspec's in-memory filesystem (tests, one process): a process-wide lock around the compare
  and the write, which is exact because that filesystem lives in one process.

Any other filesystem is refused with a clear error rather than written without a guarantee.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoprec.errors import RegistryError

LOCK_TIMEOUT_S = 30.0


class Conflict(Exception):
    """The object changed between the read and the conditional write."""


@dataclass(frozen=True)
class Versioned:
    """An object's bytes as read (None: absent) and the token its conditional write checks."""

    data: bytes | None
    token: str | None


class ConditionalStore:
    """read / write-if-unchanged / create-if-absent for small objects of one filesystem."""

    def read(self, path: str) -> Versioned:
        raise NotImplementedError

    def write(self, path: str, data: bytes, seen: Versioned) -> None:
        """Replace the object with `data` only if it is still what `seen` read; else Conflict."""
        raise NotImplementedError

    def create(self, path: str, data: bytes) -> bool:
        """Write the object only if it does not exist; False (nothing written) when it does."""
        raise NotImplementedError


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


class LocalStore(ConditionalStore):
    """A POSIX folder: flock-guarded compare, then an atomic, fsynced os.replace."""

    def __init__(self, lock_dir: str | Path) -> None:
        self.lock_dir = Path(lock_dir)

    def read(self, path: str) -> Versioned:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            data = None
        return Versioned(data, _digest(data))

    def write(self, path: str, data: bytes, seen: Versioned) -> None:
        target = Path(path)
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_dir / f"{target.name}.lock", "a+b") as lock:
            _flock(lock, self.lock_dir / f"{target.name}.lock")
            try:
                if self.read(path).token != seen.token:
                    raise Conflict(path)
                _replace_atomically(target, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def create(self, path: str, data: bytes) -> bool:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(target, "xb") as out:  # O_EXCL: exactly one creator wins
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except FileExistsError:
            return False
        return True


class S3Store(ConditionalStore):
    """S3 conditional writes (If-Match / If-None-Match) through s3fs."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def _etag(self, path: str) -> str | None:
        bucket, key, _ = self.fs.split_path(path)
        try:
            return str(self.fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"])
        except FileNotFoundError:
            return None

    def read(self, path: str) -> Versioned:
        # The ETag first, then the bytes: if another writer lands in between, the bytes are newer
        # than the token and the later If-Match fails (a spurious conflict, never a lost write).
        etag = self._etag(path)
        if etag is None:
            return Versioned(None, None)
        try:
            return Versioned(self.fs.cat_file(path), etag)
        except FileNotFoundError:
            return Versioned(None, None)

    def write(self, path: str, data: bytes, seen: Versioned) -> None:
        try:
            if seen.token is None:
                self.fs.pipe_file(path, data, mode="create")
            else:
                self.fs.pipe_file(path, data, IfMatch=seen.token)
        except OSError as exc:
            # s3fs turns 412 PreconditionFailed (and 409 ConditionalRequestConflict) into an
            # OSError; tell them from a real failure by looking at the object again.
            if self._etag(path) != seen.token:
                raise Conflict(path) from exc
            raise

    def create(self, path: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True


_MEMORY_LOCK = threading.Lock()


class MemoryStore(ConditionalStore):
    """fsspec's memory filesystem: one process, so a process-wide lock is exact."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def read(self, path: str) -> Versioned:
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            data = None
        return Versioned(data, _digest(data))

    def write(self, path: str, data: bytes, seen: Versioned) -> None:
        with _MEMORY_LOCK:
            if self.read(path).token != seen.token:
                raise Conflict(path)
            self.fs.pipe_file(path, data)

    def create(self, path: str, data: bytes) -> bool:
        with _MEMORY_LOCK:
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True


def conditional_store(fs: Any, root: str, *, local: bool) -> ConditionalStore:
    """The store for a registry rooted at `root` on `fs`; RegistryError for a filesystem on which
    no conditional write is known (promotions there could overwrite each other)."""
    if local:
        return LocalStore(Path(root) / "locks")
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if {"s3", "s3a"} & set(protocols):
        return S3Store(fs)
    if "memory" in protocols:
        return MemoryStore(fs)
    raise RegistryError(
        f"the registry cannot switch aliases safely on {protocols[0]}:// (no conditional write "
        "known for it): use a local or shared folder, or s3:// (AWS S3, MinIO, Ceph...)")


def _flock(handle: Any, path: Path) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() > deadline:
            raise RegistryError(f"registry lock {path} was held for more than {LOCK_TIMEOUT_S:.0f} s")
        time.sleep(0.01)


def _replace_atomically(target: Path, data: bytes) -> None:
    """Write a temporary file beside `target`, fsync it, os.replace it over `target` (the commit
    point: readers see the old bytes or the new ones), then fsync the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["Conflict", "ConditionalStore", "LocalStore", "MemoryStore", "S3Store", "Versioned",
           "conditional_store"]
