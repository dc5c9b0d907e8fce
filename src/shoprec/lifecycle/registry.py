"""The model registry: immutable versions (each a verified model bundle), a `production`
alias switched by compare-and-swap, and an append-only history of every promotion and rollback.

Layout, in a local folder (`Home(root).registry` by default) or under any fsspec URL such as
`s3://bucket/shoprec/registry` (credentials and endpoint come from the environment, as
s3fs/botocore read them: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for MinIO or
another S3-protocol server; never from code):

    versions/<version>/          the bundle files, then version.json (written last: a version
                                 exists only once its version.json does). version.json records
                                 the sha256 of every bundle file; each is checked at load.
    aliases/production.json      {"version", "previous": [...], "updated_at", "event"}
    history/<time>-<id>.json     one file per promotion or rollback, written once, never changed:
                                 the intent, written BEFORE the alias moves
    outcomes/<time>-<id>.json    how that intent ended: committed, conflict or failed

The alias file is the single commit point, and it is written only if it is still the one the
writer read (`shoprec.lifecycle.alias_store`: a conditional PUT on S3, an flock-guarded
`os.replace` in a folder). Two concurrent promotions therefore cannot overwrite each other:
exactly one wins, the other gets RegistryConflict naming the winner, and both intents stay in
the history (the loser's with outcome "conflict"). `history()` lists the committed events; an
intent whose writer died after the alias moved but before its outcome was written still counts
as committed (the alias names its event, and the next switch writes the missing outcome).
`previous` is the stack of earlier productions, so `rollback` needs nothing but the alias file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from shoprec.errors import BundleIntegrityError, RegistryError
from shoprec.home import Home
from shoprec.lifecycle.alias_store import Conflict, Versioned, conditional_store
from shoprec.models.bundle import (
    METRICS_FILE,
    RECORD_FILE,
    WEIGHTS_FILE,
    BundleFileIntegrityError,
    file_digests,
    load_bundle,
    verify_files,
)
from shoprec.models.inference import BundleRecommender

logger = logging.getLogger(__name__)

PRODUCTION = "production"
VERSION_FILE = RECORD_FILE
HEADLINE_METRICS = ("NDCG@10", "HR@10", "MRR@10", "coverage")
# How an event ended (HistoryEvent.status).
COMMITTED, CONFLICT, FAILED, INTENT, PENDING = "committed", "conflict", "failed", "intent", "pending"
_ANY = object()  # promote(expected=...) not given: expect what the alias holds when read


class RegistryConflict(RegistryError):
    """Another writer moved the alias between this writer's read and its write: nothing was
    changed by this one (its intent stays in the history with outcome "conflict")."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered, immutable bundle and the facts recorded when it was registered.

    files: sha256 of every bundle file (name -> hex), checked whenever the version is loaded;
    empty for versions registered before it was recorded (then only the weights are checked)."""

    version: str
    uri: str
    registered_at: str
    weights_sha256: str
    kind: str
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    note: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def expected_files(self) -> dict[str, str]:
        """What a load checks: every recorded file, or at least the weights."""
        return dict(self.files) or {WEIGHTS_FILE: self.weights_sha256}


@dataclass(frozen=True)
class AliasPointer:
    """Where an alias points now, and the stack of versions it pointed to before (newest last)."""

    alias: str
    version: str
    previous: tuple[str, ...]
    updated_at: str
    event: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "previous": list(self.previous)}


@dataclass(frozen=True)
class HistoryEvent:
    """One promotion or rollback: when, which version, from which, why, by whom, with what
    metrics, and how it ended (status: committed, conflict, failed; pending while unknown)."""

    id: str
    at: str
    action: str  # "promote" | "rollback" | what record_event was given
    alias: str
    version: str
    previous: str | None
    reason: str
    actor: str
    metrics: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    status: str = COMMITTED  # files written before intents existed are committed events
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def headline_metrics(bundle_metrics: dict[str, Any]) -> dict[str, float]:
    """The primary model's test metrics from a bundle's metrics.json (empty when it has none)."""
    primary = bundle_metrics.get("primary")
    row = bundle_metrics.get("models", {}).get(primary, {}) if primary else {}
    found = row.get("metrics", {})
    return {name: float(found[name]) for name in HEADLINE_METRICS if name in found}


class _Taken(Exception):
    """A version id was taken by a concurrent registration: pick the next one."""


class Registry:
    """Versions, aliases and history under one root (a local path or an fsspec URL)."""

    def __init__(self, uri: str | Path, *, cache_dir: str | Path | None = None,
                 **storage_options: Any) -> None:
        self.uri = str(uri)
        protocol = fsspec.core.split_protocol(self.uri)[0]
        if protocol in ("s3", "s3a"):
            # Other processes write aliases and history: a cached listing would hide them.
            storage_options.setdefault("use_listings_cache", False)
        self.fs, root = fsspec.core.url_to_fs(self.uri, **storage_options)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).resolve()) if self.local else root.rstrip("/")
        # Bundles from an object store are downloaded here before loading (and checked again).
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._cas = None

    @classmethod
    def from_home(cls, home: Home) -> "Registry":
        """The default registry: the `registry/` folder of a shoprec home."""
        return cls(home.registry)

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    @property
    def _store(self):
        if self._cas is None:  # lazily: reading a registry needs no conditional writes
            self._cas = conditional_store(self.fs, self.root, local=self.local)
        return self._cas

    # --- paths -----------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def version_uri(self, version: str) -> str:
        """Where a version's bundle lives (a path, or the object-store URL a cluster downloads).

        An object-store URL ends with "/": KServe's storage initializer downloads every object
        whose key starts with the URL's path, and without the slash version X would also pull
        in version X-2's files."""
        path = self._path("versions", version)
        return path if self.local else self.fs.unstrip_protocol(path) + "/"

    # --- versions --------------------------------------------------------------------------
    def register(self, bundle_dir: str | Path, *, metrics: dict[str, Any] | None = None,
                 note: str = "", reader: Any = None) -> ModelVersion:
        """Verify a bundle (sha256 of its weights, and that it loads), copy it in as a new
        immutable version recording the sha256 of every file, and return it. Nothing becomes
        visible until the copy is complete and checked.

        metrics: what to record with the version (default: the bundle's headline test metrics).
        reader: another model family's loader (churn), returning an object with `.config`
            ("weights_sha256", "kind") and `.metrics`; default: the recommender's `load_bundle`."""
        source = Path(bundle_dir)
        # raises BundleIntegrityError on a weights/sha256 mismatch
        bundle = reader(source) if reader is not None else load_bundle(source, expected_files={})
        digest = bundle.config["weights_sha256"]
        files = sorted(p for p in source.iterdir() if p.is_file() and p.name != VERSION_FILE)
        digests = file_digests(source)
        for _ in range(100):
            version = self._new_version_id(digest)
            record = ModelVersion(
                version=version,
                uri=self.version_uri(version),
                registered_at=_now(),
                weights_sha256=digest,
                kind=str(bundle.config.get("kind")),
                metrics=metrics if metrics is not None else headline_metrics(bundle.metrics),
                source=str(source.resolve()),
                note=note,
                files=digests,
            )
            try:
                if self.local:
                    self._register_local(files, record)
                else:
                    self._register_remote(files, record)
                return record
            except _Taken:
                continue
        raise RegistryError(f"could not find a free version id for {digest[:8]} in {self.uri}")

    def _register_local(self, files: list[Path], record: ModelVersion) -> None:
        versions = Path(self._path("versions"))
        versions.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=versions))
        try:
            for path in files:
                shutil.copyfile(path, staging / path.name)
            verify_files(staging, record.files)  # the copy is what was checked
            (staging / VERSION_FILE).write_text(json.dumps(record.to_dict(), indent=2))
            for path in staging.iterdir():
                path.chmod(0o444)  # immutable: a version is never edited in place
            staging.chmod(0o755)
            # A rename inside one folder is atomic: the version appears whole or not at all.
            try:
                os.rename(staging, versions / record.version)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise _Taken(record.version) from exc
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _register_remote(self, files: list[Path], record: ModelVersion) -> None:
        # Claim the id first (exclusive create): two registrations never share a folder.
        if not self._store.create(self._path("claims", record.version), record.registered_at.encode()):
            raise _Taken(record.version)
        target = self._path("versions", record.version)
        for path in files:
            self.fs.put_file(str(path), f"{target}/{path.name}")
        for name, expected in record.files.items():  # read back: the stored bytes are checked
            with self.fs.open(f"{target}/{name}", "rb") as handle:
                actual = _sha256_stream(handle)
            if actual != expected:
                error = BundleIntegrityError if name == WEIGHTS_FILE else BundleFileIntegrityError
                raise error(Path(f"{target}/{name}"), expected, actual)
        # version.json last: until it exists, readers do not see the version.
        if not self._store.create(f"{target}/{VERSION_FILE}", json.dumps(record.to_dict(), indent=2).encode()):
            raise RegistryError(f"version {record.version} in {self.uri} already has a {VERSION_FILE}")

    def _new_version_id(self, digest: str) -> str:
        """Sortable and readable: registration time (UTC) and the first 8 hex of the weights' sha256."""
        base = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{digest[:8]}"
        candidate, n = base, 1
        while self.fs.exists(self._path("versions", candidate)) or (
                not self.local and self.fs.exists(self._path("claims", candidate))):
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        folder = self._path("versions")
        if not self.fs.exists(folder):
            return []
        found = []
        for entry in self.fs.ls(folder, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("."):
                continue  # an unfinished registration
            info = f"{self._path('versions', name)}/{VERSION_FILE}"
            if self.fs.exists(info):
                found.append(_version(json.loads(self.fs.cat_file(info))))
        return sorted(found, key=lambda v: (v.registered_at, v.version))

    def get(self, version: str) -> ModelVersion:
        """One version's record; a RegistryError names the known versions when it is unknown."""
        info = f"{self._path('versions', version)}/{VERSION_FILE}"
        if not version or "/" in version or not self.fs.exists(info):
            known = ", ".join(v.version for v in self.versions()) or "none"
            raise RegistryError(f"no version {version!r} in registry {self.uri} (versions: {known})")
        return _version(json.loads(self.fs.cat_file(info)))

    def _local_copy(self, record: ModelVersion) -> Path:
        """A local directory holding the version's files (downloaded once from an object store;
        not yet checked)."""
        if self.local:
            return Path(self._path("versions", record.version))
        cache = self._cache_dir or Path(tempfile.gettempdir()) / "shoprec-registry-cache"
        target = cache / record.version
        if not (target / VERSION_FILE).exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{record.version}-", dir=_mkdir(cache)))
            remote = self._path("versions", record.version)
            # Exactly the recorded files (and the record): nothing else in the folder is trusted.
            names = [*record.files, VERSION_FILE] if record.files else [
                p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(remote, detail=False)]
            for name in names:
                self.fs.get_file(f"{remote}/{name}", str(staging / name))
            try:
                os.rename(staging, target)
            except OSError:  # another process finished the same download first
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def bundle_dir(self, version: str) -> Path:
        """A local directory holding the version's bundle (downloaded first from an object
        store), every file checked against the sha256 recorded at registration."""
        record = self.get(version)
        directory = self._local_copy(record)
        verify_files(directory, record.expected_files)
        return directory

    def load(self, version: str | None = None) -> BundleRecommender:
        """The recommender of `version` (default: production), every file checked against the
        sha256 recorded at registration (and the weights against the bundle's own record)
        before anything is used; a changed file is refused by name."""
        version = version or self._require_production()
        record = self.get(version)
        directory = self._local_copy(record)
        return BundleRecommender(load_bundle(directory, expected_files=record.expected_files))

    def verify(self, version: str) -> ModelVersion:
        """Check every file of a version, where it is stored, against its recorded sha256."""
        record = self.get(version)
        if self.local:
            verify_files(Path(self._path("versions", version)), record.expected_files)
            return record
        for name, expected in record.expected_files.items():
            path = self._path("versions", version, name)
            try:
                with self.fs.open(path, "rb") as handle:
                    actual = _sha256_stream(handle)
            except FileNotFoundError as exc:
                raise RegistryError(f"version {version} in {self.uri} has lost its {name}") from exc
            if actual != expected:
                error = BundleIntegrityError if name == WEIGHTS_FILE else BundleFileIntegrityError
                raise error(Path(f"{self.version_uri(version)}{name}"), expected, actual)
        return record

    def bundle_metrics(self, version: str) -> dict[str, Any]:
        """The full metrics.json of a version's bundle (every model, intervals, segments)."""
        path = self._path("versions", version, METRICS_FILE)
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else {}

    # --- aliases ---------------------------------------------------------------------------
    def _alias_path(self, name: str) -> str:
        return self._path("aliases", f"{name}.json")

    def _read_alias(self, name: str) -> tuple[AliasPointer | None, Versioned]:
        seen = self._store.read(self._alias_path(name))
        return _pointer(self._alias_path(name), seen.data), seen

    def alias(self, name: str = PRODUCTION) -> AliasPointer | None:
        """Where `name` points (None before the first promotion)."""
        path = self._alias_path(name)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        return _pointer(path, data)

    def production(self) -> str | None:
        """The production version, or None when nothing was promoted yet."""
        pointer = self.alias(PRODUCTION)
        return pointer.version if pointer else None

    def _require_production(self) -> str:
        version = self.production()
        if version is None:
            raise RegistryError(f"registry {self.uri} has no production version yet")
        return version

    def promote(self, version: str, *, reason: str, actor: str = "gate",
                metrics: dict[str, Any] | None = None, decision: dict[str, Any] | None = None,
                alias: str = PRODUCTION, expected: Any = _ANY) -> HistoryEvent:
        """Point `alias` at `version` and record why in the history (intent first).

        The version must exist and every file must still match its registered sha256. The
        switch is a compare-and-swap: if another writer moves the alias after this one read it,
        RegistryConflict and nothing changes. expected: the version the alias must point to now
        (None: not promoted yet), e.g. the champion a gate compared against; default: whatever
        the alias held when this call read it."""
        if not reason.strip():
            raise RegistryError("a promotion needs a reason (it is kept in the history)")
        record = self.verify(version)
        current, seen = self._read_alias(alias)
        self._check_expected(alias, current, expected, f"promotion of {version}")
        if current is not None and current.version == version:
            raise RegistryError(f"version {version} is already {alias} in registry {self.uri}")
        stack = (*current.previous, current.version) if current else ()
        event = self._event("promote", alias, version, current.version if current else None,
                            reason, actor, metrics if metrics is not None else record.metrics, decision)
        return self._switch(event, stack, current, seen)

    def rollback(self, *, reason: str = "manual rollback", actor: str = "manual",
                 alias: str = PRODUCTION, expected: Any = _ANY) -> HistoryEvent:
        """Point `alias` back at the version it pointed to before the current one (a
        compare-and-swap like `promote`; expected: the version being rolled back)."""
        current, seen = self._read_alias(alias)
        if current is None:
            raise RegistryError(f"registry {self.uri} has no {alias} version: nothing to roll back")
        self._check_expected(alias, current, expected, "rollback")
        if not current.previous:
            raise RegistryError(
                f"{alias} version {current.version} is the first one in registry {self.uri}: "
                "there is no earlier version to roll back to"
            )
        target = current.previous[-1]
        record = self.verify(target)
        event = self._event("rollback", alias, target, current.version, reason, actor,
                            record.metrics, None)
        return self._switch(event, current.previous[:-1], current, seen)

    def _check_expected(self, alias: str, current: AliasPointer | None, expected: Any, what: str) -> None:
        if expected is _ANY:
            return
        now = current.version if current else None
        if now != expected:
            raise RegistryConflict(
                f"{what} expected {alias} to be {expected or 'unset'} but it is {now or 'unset'} in "
                f"registry {self.uri} (moved by event {current.event if current else '-'}): nothing "
                "was changed; decide again against the current version")

    def _switch(self, event: HistoryEvent, stack: tuple[str, ...], current: AliasPointer | None,
                seen: Versioned) -> HistoryEvent:
        """Write the intent, then the alias if it is still `seen`, then the outcome."""
        self._settle(current)
        self._write_event(event)  # the intent: the history knows before the alias moves
        pointer = AliasPointer(event.alias, event.version, stack, event.at, event.id)
        data = json.dumps(pointer.to_dict(), indent=2).encode()
        try:
            self._store.write(self._alias_path(event.alias), data, seen)
        except Conflict:
            winner = self.alias(event.alias)
            if winner is None or winner.event != event.id:  # else: ours landed, its answer was lost
                detail = (f"{event.alias} moved to {winner.version if winner else 'nothing'} "
                          f"(event {winner.event if winner else '-'}) while this {event.action} "
                          "was being committed")
                self._write_outcome(event.id, CONFLICT, detail)
                raise RegistryConflict(
                    f"{event.action} of version {event.version} lost a race in registry {self.uri}: "
                    f"{detail} (it read {current.version if current else 'unset'}); nothing was "
                    f"changed by this {event.action}. Run it again if it still applies.") from None
        except BaseException as exc:
            self._write_outcome(event.id, FAILED, f"{type(exc).__name__}: {exc}")
            raise
        self._write_outcome(event.id, COMMITTED, "")
        return _with_status(event, COMMITTED, "")

    def _settle(self, current: AliasPointer | None) -> None:
        """The event the alias names is committed: write its outcome if its writer could not."""
        if current is not None and current.event and self.fs.exists(self._path("history", f"{current.event}.json")):
            self._write_outcome(current.event, COMMITTED, "settled by the next switch")

    # --- history ---------------------------------------------------------------------------
    def _event(self, action: str, alias: str, version: str, previous: str | None, reason: str,
               actor: str, metrics: dict[str, Any], decision: dict[str, Any] | None) -> HistoryEvent:
        return HistoryEvent(f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}",
                            _now(), action, alias, version, previous, reason, actor, metrics, decision,
                            INTENT, "")

    def _write_event(self, event: HistoryEvent) -> None:
        data = json.dumps(event.to_dict(), indent=2, default=str).encode()
        # Created once, never replaced: the history is append-only.
        if not self._store.create(self._path("history", f"{event.id}.json"), data):
            raise RegistryError(f"history event {event.id} already exists in {self.uri}")

    def _write_outcome(self, event_id: str, status: str, detail: str) -> None:
        """Best effort: a lost outcome is recovered from the alias (see `_settle`, `history`)."""
        data = json.dumps({"status": status, "detail": detail, "at": _now()}).encode()
        try:
            self._store.create(self._path("outcomes", f"{event_id}.json"), data)
        except Exception:
            logger.exception("could not record outcome %s of event %s in %s", status, event_id, self.uri)

    def record_event(self, action: str, version: str, *, reason: str, actor: str = "pipeline",
                     detail: str = "", alias: str = PRODUCTION, metrics: dict[str, Any] | None = None,
                     decision: dict[str, Any] | None = None) -> HistoryEvent:
        """Add an event that moves no alias (e.g. a failed deploy) to the history, committed."""
        current = self.alias(alias)
        event = self._event(action, alias, version, current.version if current else None, reason,
                            actor, metrics or {}, decision)
        event = _with_status(event, COMMITTED, detail)
        self._write_event(event)
        return event

    def history(self, *, include_uncommitted: bool = False) -> list[HistoryEvent]:
        """Every committed promotion and rollback (and recorded event), oldest first.

        include_uncommitted: also the attempts that did not move the alias (status "conflict"
        or "failed"), and "pending" ones (in flight, or their writer died before the switch)."""
        folder = self._path("history")
        if not self.fs.exists(folder):
            return []
        names = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".json"))
        pointers: dict[str, AliasPointer | None] = {}
        out = []
        for path in names:
            event = HistoryEvent(**json.loads(self.fs.cat_file(path)))
            if event.status == INTENT:
                event = self._resolve(event, pointers)
            if include_uncommitted or event.status == COMMITTED:
                out.append(event)
        return out

    def _resolve(self, event: HistoryEvent, pointers: dict[str, AliasPointer | None]) -> HistoryEvent:
        try:
            outcome = json.loads(self.fs.cat_file(self._path("outcomes", f"{event.id}.json")))
            return _with_status(event, outcome["status"], outcome.get("detail", ""))
        except FileNotFoundError:
            pass
        if event.alias not in pointers:
            pointers[event.alias] = self.alias(event.alias)
        pointer = pointers[event.alias]
        if pointer is not None and pointer.event == event.id:
            return _with_status(event, COMMITTED, "")  # the alias names it: it landed
        return _with_status(event, PENDING, "no outcome recorded and the alias does not name it")


def _with_status(event: HistoryEvent, status: str, detail: str) -> HistoryEvent:
    return HistoryEvent(**{**event.to_dict(), "status": status, "detail": detail})


def _version(data: dict[str, Any]) -> ModelVersion:
    known = ModelVersion.__dataclass_fields__
    return ModelVersion(**{k: v for k, v in data.items() if k in known})


def _pointer(path: str, data: bytes | None) -> AliasPointer | None:
    if data is None:
        return None
    try:
        found = json.loads(data)
        return AliasPointer(found["alias"], found["version"], tuple(found["previous"]),
                            found["updated_at"], found["event"])
    except (ValueError, KeyError) as exc:
        raise RegistryError(f"alias file {path} is unreadable: {exc}") from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256_stream(handle: Any) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


__all__ = ["PRODUCTION", "AliasPointer", "HistoryEvent", "ModelVersion", "Registry",
           "RegistryConflict", "headline_metrics"]
