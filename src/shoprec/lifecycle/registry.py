"""The model registry: immutable versions (each a verified model bundle), a `production`
alias switched atomically, and an append-only history of every promotion and rollback.

Layout, in a local folder (`Home(root).registry` by default) or under any fsspec URL such as
`s3://bucket/shoprec/registry` (credentials come from the environment, as fsspec/s3fs read them):

    versions/<version>/          the bundle files, then version.json (written last: a version
                                 exists only once its version.json does)
    aliases/production.json      {"version", "previous": [...], "updated_at", "event"}
    history/<time>-<id>.json     one file per promotion or rollback, written once, never changed

The alias file is the single commit point: it is replaced in one step (`os.replace` locally, one
object PUT on an object store), so a reader sees the old production or the new one, never a mix,
and a failure before that step leaves the old production serving. `previous` is the stack of
earlier productions, so `rollback` needs nothing but the alias file.
"""

from __future__ import annotations

import hashlib
import json
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

from shoprec.models.bundle import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, load_bundle, sha256_of
from shoprec.errors import BundleIntegrityError, RegistryError
from shoprec.home import Home
from shoprec.models.inference import BundleRecommender

PRODUCTION = "production"
VERSION_FILE = "version.json"
HEADLINE_METRICS = ("NDCG@10", "HR@10", "MRR@10", "coverage")


@dataclass(frozen=True)
class ModelVersion:
    """One registered, immutable bundle and the facts recorded when it was registered."""

    version: str
    uri: str
    registered_at: str
    weights_sha256: str
    kind: str
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """One promotion or rollback: when, which version, from which, why, by whom, with what metrics."""

    id: str
    at: str
    action: str  # "promote" | "rollback"
    alias: str
    version: str
    previous: str | None
    reason: str
    actor: str
    metrics: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def headline_metrics(bundle_metrics: dict[str, Any]) -> dict[str, float]:
    """The primary model's test metrics from a bundle's metrics.json (empty when it has none)."""
    primary = bundle_metrics.get("primary")
    row = bundle_metrics.get("models", {}).get(primary, {}) if primary else {}
    found = row.get("metrics", {})
    return {name: float(found[name]) for name in HEADLINE_METRICS if name in found}


class Registry:
    """Versions, aliases and history under one root (a local path or an fsspec URL)."""

    def __init__(self, uri: str | Path, *, cache_dir: str | Path | None = None,
                 **storage_options: Any) -> None:
        self.uri = str(uri)
        self.fs, root = fsspec.core.url_to_fs(self.uri, **storage_options)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).resolve()) if self.local else root.rstrip("/")
        # Bundles from an object store are downloaded here before loading (and checked again).
        self._cache_dir = Path(cache_dir) if cache_dir else None

    @classmethod
    def from_home(cls, home: Home) -> "Registry":
        """The default registry: the `registry/` folder of a shoprec home."""
        return cls(home.registry)

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    # --- paths -----------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def version_uri(self, version: str) -> str:
        """Where a version's bundle lives (a path, or the object-store URL a cluster downloads)."""
        path = self._path("versions", version)
        return path if self.local else self.fs.unstrip_protocol(path)

    # --- versions --------------------------------------------------------------------------
    def register(self, bundle_dir: str | Path, *, metrics: dict[str, Any] | None = None,
                 note: str = "") -> ModelVersion:
        """Verify a bundle (sha256 of its weights, and that it loads), copy it in as a new
        immutable version and return it. Nothing becomes visible until the copy is complete.

        metrics: what to record with the version (default: the bundle's headline test metrics)."""
        source = Path(bundle_dir)
        bundle = load_bundle(source)  # raises BundleIntegrityError on a weights/sha256 mismatch
        digest = bundle.config["weights_sha256"]
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
        )
        files = sorted(p for p in source.iterdir() if p.is_file() and p.name != VERSION_FILE)
        if self.local:
            self._register_local(files, record)
        else:
            self._register_remote(files, record)
        return record

    def _register_local(self, files: list[Path], record: ModelVersion) -> None:
        versions = Path(self._path("versions"))
        versions.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=versions))
        try:
            for path in files:
                shutil.copyfile(path, staging / path.name)
            self._check_copy(staging / WEIGHTS_FILE, record)
            (staging / VERSION_FILE).write_text(json.dumps(record.to_dict(), indent=2))
            for path in staging.iterdir():
                path.chmod(0o444)  # immutable: a version is never edited in place
            staging.chmod(0o755)
            # A rename inside one folder is atomic: the version appears whole or not at all.
            os.rename(staging, versions / record.version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _register_remote(self, files: list[Path], record: ModelVersion) -> None:
        target = self._path("versions", record.version)
        for path in files:
            self.fs.put_file(str(path), f"{target}/{path.name}")
        with self.fs.open(f"{target}/{WEIGHTS_FILE}", "rb") as handle:
            actual = _sha256_stream(handle)
        if actual != record.weights_sha256:
            raise BundleIntegrityError(Path(f"{target}/{WEIGHTS_FILE}"), record.weights_sha256, actual)
        # version.json last: until it exists, readers do not see the version.
        self.fs.pipe_file(f"{target}/{VERSION_FILE}", json.dumps(record.to_dict(), indent=2).encode())

    @staticmethod
    def _check_copy(weights: Path, record: ModelVersion) -> None:
        actual = sha256_of(weights)
        if actual != record.weights_sha256:
            raise BundleIntegrityError(weights, record.weights_sha256, actual)

    def _new_version_id(self, digest: str) -> str:
        """Sortable and readable: registration time (UTC) and the first 8 hex of the weights' sha256."""
        base = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{digest[:8]}"
        candidate, n = base, 1
        while self.fs.exists(self._path("versions", candidate)):
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
                found.append(ModelVersion(**json.loads(self.fs.cat_file(info))))
        return sorted(found, key=lambda v: (v.registered_at, v.version))

    def get(self, version: str) -> ModelVersion:
        """One version's record; a RegistryError names the known versions when it is unknown."""
        info = f"{self._path('versions', version)}/{VERSION_FILE}"
        if not version or "/" in version or not self.fs.exists(info):
            known = ", ".join(v.version for v in self.versions()) or "none"
            raise RegistryError(f"no version {version!r} in registry {self.uri} (versions: {known})")
        return ModelVersion(**json.loads(self.fs.cat_file(info)))

    def bundle_dir(self, version: str) -> Path:
        """A local directory holding the version's bundle (downloaded first from an object store)."""
        record = self.get(version)
        if self.local:
            return Path(self._path("versions", version))
        cache = self._cache_dir or Path(tempfile.gettempdir()) / "shoprec-registry-cache"
        target = cache / version
        if not (target / VERSION_FILE).exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=_mkdir(cache)))
            for path in self.fs.ls(self._path("versions", version), detail=False):
                self.fs.get_file(path, str(staging / path.rstrip("/").rsplit("/", 1)[-1]))
            try:
                os.rename(staging, target)
            except OSError:  # another process finished the same download first
                shutil.rmtree(staging, ignore_errors=True)
        self._check_copy(target / WEIGHTS_FILE, record)
        return target

    def load(self, version: str | None = None) -> BundleRecommender:
        """The recommender of `version` (default: production), its weights checked against the
        sha256 recorded at registration (and the bundle's own record) before anything is used."""
        version = version or self._require_production()
        record = self.get(version)
        directory = self.bundle_dir(version)
        config = json.loads((directory / CONFIG_FILE).read_text())
        if config.get("weights_sha256") != record.weights_sha256:
            raise BundleIntegrityError(directory / WEIGHTS_FILE, record.weights_sha256,
                                       str(config.get("weights_sha256")))
        return BundleRecommender.from_bundle(directory)

    def verify(self, version: str) -> ModelVersion:
        """Check a version's weights against the sha256 recorded at registration."""
        record = self.get(version)
        if self.local:
            self._check_copy(Path(self._path("versions", version, WEIGHTS_FILE)), record)
        else:
            with self.fs.open(self._path("versions", version, WEIGHTS_FILE), "rb") as handle:
                actual = _sha256_stream(handle)
            if actual != record.weights_sha256:
                raise BundleIntegrityError(Path(self.version_uri(version)), record.weights_sha256, actual)
        return record

    def bundle_metrics(self, version: str) -> dict[str, Any]:
        """The full metrics.json of a version's bundle (every model, intervals, segments)."""
        path = self._path("versions", version, METRICS_FILE)
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else {}

    # --- aliases ---------------------------------------------------------------------------
    def alias(self, name: str = PRODUCTION) -> AliasPointer | None:
        """Where `name` points (None before the first promotion)."""
        path = self._path("aliases", f"{name}.json")
        if not self.fs.exists(path):
            return None
        try:
            data = json.loads(self.fs.cat_file(path))
            return AliasPointer(data["alias"], data["version"], tuple(data["previous"]),
                                data["updated_at"], data["event"])
        except (ValueError, KeyError) as exc:
            raise RegistryError(f"alias file {path} is unreadable: {exc}") from exc

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
                alias: str = PRODUCTION) -> HistoryEvent:
        """Point `alias` at `version` (atomically) and record why in the history.

        The version must exist and its weights must still match their registered sha256."""
        if not reason.strip():
            raise RegistryError("a promotion needs a reason (it is kept in the history)")
        record = self.verify(version)
        current = self.alias(alias)
        if current is not None and current.version == version:
            raise RegistryError(f"version {version} is already {alias} in registry {self.uri}")
        stack = (*current.previous, current.version) if current else ()
        event = self._event("promote", alias, version, current.version if current else None,
                            reason, actor, metrics if metrics is not None else record.metrics, decision)
        self._write_alias(AliasPointer(alias, version, stack, event.at, event.id))
        self._append_history(event)
        return event

    def rollback(self, *, reason: str = "manual rollback", actor: str = "manual",
                 alias: str = PRODUCTION) -> HistoryEvent:
        """Point `alias` back at the version it pointed to before the current one."""
        current = self.alias(alias)
        if current is None:
            raise RegistryError(f"registry {self.uri} has no {alias} version: nothing to roll back")
        if not current.previous:
            raise RegistryError(
                f"{alias} version {current.version} is the first one in registry {self.uri}: "
                "there is no earlier version to roll back to"
            )
        target = current.previous[-1]
        record = self.verify(target)
        event = self._event("rollback", alias, target, current.version, reason, actor,
                            record.metrics, None)
        self._write_alias(AliasPointer(alias, target, current.previous[:-1], event.at, event.id))
        self._append_history(event)
        return event

    def _write_alias(self, pointer: AliasPointer) -> None:
        path = self._path("aliases", f"{pointer.alias}.json")
        data = json.dumps(pointer.to_dict(), indent=2).encode()
        if not self.local:
            self.fs.pipe_file(path, data)  # one PUT: readers see the old object or the new one
            return
        folder = _mkdir(Path(path).parent)
        handle, tmp = tempfile.mkstemp(prefix=f".{pointer.alias}-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)  # the commit point
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(folder)

    # --- history ---------------------------------------------------------------------------
    def _event(self, action: str, alias: str, version: str, previous: str | None, reason: str,
               actor: str, metrics: dict[str, Any], decision: dict[str, Any] | None) -> HistoryEvent:
        return HistoryEvent(f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}",
                            _now(), action, alias, version, previous, reason, actor, metrics, decision)

    def _append_history(self, event: HistoryEvent) -> None:
        path = self._path("history", f"{event.id}.json")
        data = json.dumps(event.to_dict(), indent=2, default=str).encode()
        if self.local:
            _mkdir(Path(path).parent)
            with open(path, "xb") as out:  # "x": an event file is written once, never replaced
                out.write(data)
        else:
            self.fs.pipe_file(path, data)

    def history(self) -> list[HistoryEvent]:
        """Every promotion and rollback, oldest first."""
        folder = self._path("history")
        if not self.fs.exists(folder):
            return []
        names = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".json"))
        return [HistoryEvent(**json.loads(self.fs.cat_file(p))) for p in names]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def _sha256_stream(handle: Any) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


__all__ = ["PRODUCTION", "AliasPointer", "HistoryEvent", "ModelVersion", "Registry",
           "headline_metrics"]
