"""The model bundle: one directory holding everything needed to serve and audit a model.

    model.safetensors   the weights (safetensors only: no pickle is ever loaded)
    weights.sha256      "<sha256>  model.safetensors" (also in config.json); checked on load
    config.json         model kind and constructor arguments, the model's window (max_len,
                        when it has one), seen-items policy, Feast feature service,
                        training-data snapshot id, training facts (among them "split":
                        the SplitSpec dict that evaluation and the gate reproduce), and
                        "user_context" when the model reads user_stats features (the
                        columns and standardization statistics: `features.user_context`)
    items.json          the item vocabulary (index i+1 <-> item id)
    metrics.json        test metrics of the model and of every baseline, with intervals
    MODEL_CARD.md       data, metrics against the baselines, segments, intended use

A bundle served from a registry version also holds the registry's version.json, whose "files"
map (every file's sha256, recorded at registration) is checked on load: the copy KServe's
storage initializer downloads into /mnt/models is verified file by file before it is served.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from shoprec import __version__
from shoprec.errors import BundleError, BundleIntegrityError
from shoprec.features.user_context import UserContextTransform
from shoprec.models.base import Recommender
from shoprec.models.baselines import BASELINES
from shoprec.models.sasrec import SASRec
from shoprec.sequences import ItemVocab

WEIGHTS_FILE = "model.safetensors"
SHA_FILE = "weights.sha256"
CONFIG_FILE = "config.json"
VOCAB_FILE = "items.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
# The registry's record of a version (shoprec.lifecycle.registry writes it next to the bundle
# files). Only its name is known here: the record is read as plain JSON, never imported.
RECORD_FILE = "version.json"
DEFAULT_FEATURE_SERVICE = "recommender_v1"

MODEL_CLASSES: dict[str, type[Recommender]] = {SASRec.kind: SASRec, **BASELINES}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class BundleFileIntegrityError(BundleIntegrityError):
    """A bundle file (any of them, not only the weights) is not the one recorded: refused."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        BundleError.__init__(
            self,
            f"bundle file {path.name} ({path}) fails the integrity check: sha256 {actual[:16]}... "
            f"but {expected[:16]}... was recorded; refusing to load")


def file_digests(directory: str | Path, *, skip: tuple[str, ...] = (RECORD_FILE,)) -> dict[str, str]:
    """sha256 of every regular file directly in `directory` (name -> hex), except `skip`."""
    root = Path(directory)
    return {p.name: sha256_of(p) for p in sorted(root.iterdir())
            if p.is_file() and p.name not in skip and not p.name.startswith(".")}


def verify_files(directory: str | Path, expected: Mapping[str, str]) -> None:
    """Every file named in `expected` exists in `directory` with that sha256: else BundleError
    naming the missing file, or BundleFileIntegrityError naming the changed one. Files not in
    `expected` are ignored (nothing reads them)."""
    root = Path(directory)
    for name, digest in sorted(expected.items()):
        path = root / name
        if not path.is_file():
            raise BundleError(f"model bundle {root} has no {name} (recorded with sha256 {digest[:16]}...)")
        actual = sha256_of(path)
        if actual != digest:
            # The weights keep their long-standing error; any other file is named as such.
            error = BundleIntegrityError if name == WEIGHTS_FILE else BundleFileIntegrityError
            raise error(path, digest, actual)


def read_record(directory: str | Path) -> dict[str, Any]:
    """The registry's version.json in a bundle folder ({} for a plain bundle folder)."""
    root = Path(directory)
    if not (root / RECORD_FILE).is_file():
        return {}
    try:
        return dict(json.loads((root / RECORD_FILE).read_text()))
    except ValueError as exc:
        raise BundleError(f"model bundle {root}: {RECORD_FILE} is unreadable: {exc}") from exc


def recorded_digests(directory: str | Path) -> dict[str, str]:
    """The sha256 of every file as the registry recorded it, when the folder is a registry
    version (its version.json, e.g. downloaded with it by KServe's storage initializer); {} for
    a plain bundle folder, whose weights are still checked against config.json."""
    return dict(read_record(directory).get("files") or {})


@dataclass
class Bundle:
    """A loaded bundle: the model (eval mode, CPU), its vocabulary, config and metrics."""

    path: Path
    model: Recommender
    vocab: ItemVocab
    config: dict[str, Any]
    metrics: dict[str, Any]
    # The registry version this folder is a copy of (its version.json), e.g. in /mnt/models.
    version: str | None = None

    @property
    def exclude_seen(self) -> bool:
        return bool(self.config["exclude_seen"])

    @property
    def max_len(self) -> int | None:
        """The model's window: how many newest history items it reads (None: no window, as
        for the baselines). Recorded in config.json; older bundles have it in model_config."""
        value = self.config.get("max_len", self.config.get("model_config", {}).get("max_len"))
        return None if value is None else int(value)

    @property
    def user_context(self) -> UserContextTransform | None:
        """The transform from user_stats rows to the model's user-context input, when the model
        reads one (None: it reads item ids only, as every bundle written before it did)."""
        value = self.config.get("user_context")
        return None if not value else UserContextTransform.from_dict(value)


def save_bundle(
    directory: str | Path,
    model: Recommender,
    vocab: ItemVocab,
    *,
    exclude_seen: bool,
    metrics: dict[str, Any],
    feature_service: str = DEFAULT_FEATURE_SERVICE,
    snapshot_id: str | None = None,
    training: dict[str, Any] | None = None,
    model_card: str = "",
    user_context: UserContextTransform | None = None,
) -> Path:
    """Write a bundle directory; returns it. The sha256 is taken from the written file.
    user_context: the transform of the user_stats features the model reads (serving applies it)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"kind": model.kind})
    digest = sha256_of(out / WEIGHTS_FILE)
    (out / SHA_FILE).write_text(f"{digest}  {WEIGHTS_FILE}\n")
    model_config = model.config()
    config = {
        "kind": model.kind,
        "model_config": model_config,
        "exclude_seen": exclude_seen,
        "feature_service": feature_service,
        "snapshot_id": snapshot_id,
        "weights_sha256": digest,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "shoprec_version": __version__,
        "training": training or {},
    }
    if model_config.get("max_len") is not None:
        config["max_len"] = int(model_config["max_len"])  # the window serving checks features against
    if user_context is not None:
        config["user_context"] = user_context.to_dict()
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
    vocab.write(out / VOCAB_FILE)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str))
    (out / CARD_FILE).write_text(model_card or f"# Model card\n\nModel: {model.kind}\n")
    return out


def load_bundle(directory: str | Path, expected_files: Mapping[str, str] | None = None) -> Bundle:
    """Read a bundle, refusing any file whose sha256 differs from the recorded one.

    expected_files: name -> sha256 to check (the registry passes its version record); default:
    what the folder records itself (version.json's "files" in a registry version).
    Either way the weights must also match config.json's weights_sha256."""
    root = Path(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE):
        if not (root / name).exists():
            raise BundleError(f"model bundle {root} has no {name}")
    checked = dict(expected_files) if expected_files is not None else recorded_digests(root)
    verify_files(root, checked)
    config = json.loads((root / CONFIG_FILE).read_text())
    expected = config.get("weights_sha256")
    if not expected:
        raise BundleError(f"model bundle {root}: config.json records no weights_sha256")
    if (root / SHA_FILE).exists():
        recorded = (root / SHA_FILE).read_text().split()[0]
        if recorded != expected:
            raise BundleIntegrityError(root / WEIGHTS_FILE, expected, recorded)
    # The weights were just hashed when a record covers them: compare, do not read them again.
    actual = checked[WEIGHTS_FILE] if WEIGHTS_FILE in checked else sha256_of(root / WEIGHTS_FILE)
    if actual != expected:
        raise BundleIntegrityError(root / WEIGHTS_FILE, expected, actual)
    kind = config.get("kind")
    if kind not in MODEL_CLASSES:
        raise BundleError(f"model bundle {root}: unknown model kind {kind!r}")
    model = MODEL_CLASSES[kind].from_state(config["model_config"], load_file(str(root / WEIGHTS_FILE)))
    metrics_path = root / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    version = read_record(root).get("version")
    return Bundle(root, model, ItemVocab.read(root / VOCAB_FILE), config, metrics,
                  str(version) if version else None)
