"""The churn bundle (safetensors weights + sha256, config, metrics, report) and its registry.

    model.safetensors   ChurnNet weights and input scaling (safetensors: no pickle is loaded)
    weights.sha256      "<sha256>  model.safetensors" (also in config.json); checked on load
    config.json         kind, model name, features (in input order), reference values for the
                        drivers, horizon, snapshots, training facts, weights_sha256
    metrics.json        the evaluation (model and baselines, paired intervals, reliability) and gate
    MODEL_CARD.md       the Markdown report;  report.html: the same with the reliability plot

The churn model is registered in the platform's registry under its own model name: the
registry layout (versions / aliases / history) rooted at `<registry>/shoprec-churn`, so its
versions and production alias never mix with the recommender's. `ChurnRegistry` is that
registry whose versions load as churn bundles (every file checked against the sha256 recorded at
registration), which is what lets a churn server follow its alias with the recommender's
mechanism (`shoprec.churn.live`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from shoprec import __version__
from shoprec.churn.model import KIND, ChurnNet
from shoprec.errors import BundleError, BundleIntegrityError
from shoprec.lifecycle.registry import PRODUCTION, ModelVersion, Registry
from shoprec.models.bundle import CARD_FILE, CONFIG_FILE, METRICS_FILE, SHA_FILE, WEIGHTS_FILE, read_record, sha256_of

CHURN_MODEL_NAME = "shoprec-churn"
REPORT_FILE = "report.html"


@dataclass
class ChurnBundle:
    """A loaded churn bundle (model on the CPU, eval mode)."""

    path: Path
    model: ChurnNet
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return list(self.config["features"])

    @property
    def reference(self) -> np.ndarray:
        """Each feature's typical value (training median): what a driver is measured against."""
        return np.asarray([self.config["reference"][name] for name in self.features], dtype=np.float64)


def save_churn_bundle(
    directory: str | Path, model: ChurnNet, features: list[str], reference: dict[str, float], *,
    metrics: dict[str, Any], training: dict[str, Any], card: str = "", report_html: str = "",
) -> Path:
    """Write a churn bundle; the sha256 is taken from the written weights file."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"kind": KIND})
    digest = sha256_of(out / WEIGHTS_FILE)
    (out / SHA_FILE).write_text(f"{digest}  {WEIGHTS_FILE}\n")
    config = {"kind": KIND, "model_name": CHURN_MODEL_NAME, "model_config": model.config(),
              "features": features, "reference": reference, "weights_sha256": digest,
              "created_at": datetime.now(timezone.utc).isoformat(), "shoprec_version": __version__,
              "training": training}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str))
    (out / CARD_FILE).write_text(card or "# shoprec-churn\n")
    if report_html:
        (out / REPORT_FILE).write_text(report_html)
    return out


def load_churn_bundle(directory: str | Path, expected_sha256: str | None = None) -> ChurnBundle:
    """Read a churn bundle, refusing weights whose sha256 differs from the one recorded in the
    bundle (config.json and weights.sha256) or from `expected_sha256` (the registry's record).

    Raises:
        BundleError: a file is missing or the bundle is not a churn model.
        BundleIntegrityError: the weights do not match a recorded sha256.
    """
    root = Path(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (root / name).exists():
            raise BundleError(f"churn bundle {root} has no {name}")
    config = json.loads((root / CONFIG_FILE).read_text())
    if config.get("kind") != KIND:
        raise BundleError(f"{root} is not a churn bundle (kind {config.get('kind')!r}, expected {KIND!r})")
    recorded = config.get("weights_sha256")
    if not recorded:
        raise BundleError(f"churn bundle {root}: config.json records no weights_sha256")
    if (root / SHA_FILE).exists() and (root / SHA_FILE).read_text().split()[0] != recorded:
        raise BundleIntegrityError(root / WEIGHTS_FILE, recorded, (root / SHA_FILE).read_text().split()[0])
    actual = sha256_of(root / WEIGHTS_FILE)
    for expected in (recorded, expected_sha256):
        if expected is not None and actual != expected:
            raise BundleIntegrityError(root / WEIGHTS_FILE, expected, actual)
    model = ChurnNet.from_state(config["model_config"], load_file(str(root / WEIGHTS_FILE)))
    metrics = json.loads((root / METRICS_FILE).read_text()) if (root / METRICS_FILE).exists() else {}
    return ChurnBundle(root, model, config, metrics)


class ChurnRegistry(Registry):
    """The platform's registry layout for the churn model: its versions load as churn bundles."""

    def load(self, version: str | None = None) -> ChurnBundle:  # type: ignore[override]
        """The churn bundle of `version` (default: production), every file checked against the
        sha256 recorded at registration and the weights against the bundle's own record."""
        version = version or self._require_production()
        record = self.get(version)
        return load_churn_bundle(self.bundle_dir(version), expected_sha256=record.weights_sha256)


def churn_registry(registry_uri: str | Path) -> ChurnRegistry:
    """The churn model's registry under the platform's registry root (a folder or fsspec URL)."""
    return ChurnRegistry(f"{str(registry_uri).rstrip('/')}/{CHURN_MODEL_NAME}")


def bundle_version(bundle: ChurnBundle) -> str:
    """The registry version a bundle folder is a copy of (its version.json, e.g. in /mnt/models
    after KServe's storage initializer), else the folder's name."""
    return str(read_record(bundle.path).get("version") or bundle.path.name)


def register_churn(registry: Registry, bundle_dir: str | Path, metrics: dict[str, float], note: str = "") -> ModelVersion:
    """Register a churn bundle as a new immutable version (verified by `load_churn_bundle`)."""
    return registry.register(bundle_dir, metrics=metrics, note=note, reader=load_churn_bundle)


def load_registered(registry: ChurnRegistry, version: str | None = None,
                    alias: str = PRODUCTION) -> tuple[ChurnBundle, str]:
    """The churn bundle of `version` (default: the alias's), checked against the sha256 the
    registry recorded at registration; returns (bundle, version).

    Raises:
        RegistryError: no such version, or nothing promoted to the alias yet.
    """
    from shoprec.errors import RegistryError

    pointer = registry.alias(alias) if version is None else None
    chosen = version or (pointer.version if pointer else None)
    if chosen is None:
        raise RegistryError(f"registry {registry.uri} has no {alias} version of {CHURN_MODEL_NAME} yet")
    return registry.load(chosen), chosen
