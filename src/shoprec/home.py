"""The home folder layout: one place holds runs, reports, the registry, features and logs.

`Home` is the only way to a path inside the home: code asks it for a folder or file by name
instead of joining strings, so a layout change is made here once. The home is chosen at entry
points (`--home`, else $SHOPREC_HOME, else ./shoprec-home: `config.resolve_home`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoprec.config import resolve_home
from shoprec import schema as S

FEATURES_MANIFEST = "features.json"
MONITORING_DIR = "monitoring"
REFERENCE_DIR = "reference"
INDEX_FILE = "index.html"
TRIGGER_STATE_FILE = "trigger_state.json"


@dataclass(frozen=True)
class Home:
    """Paths inside a shoprec home folder. Creating a `Home` touches nothing on disk."""

    root: Path

    @staticmethod
    def at(home: "str | Path | Home | None" = None) -> "Home":
        """The home an entry point was given: a folder, else $SHOPREC_HOME, else ./shoprec-home
        ('' counts as not given, as pipeline parameters carry it)."""
        return home if isinstance(home, Home) else Home(resolve_home(home or None))

    @property
    def runs(self) -> Path:
        """Pipeline runs: kfp.local's pipeline root, one folder per run and task."""
        return self.root / "runs"

    @property
    def reports(self) -> Path:
        """Reports people read: validation reports from `shoprec validate`, drift reports."""
        return self.root / "reports"

    @property
    def registry(self) -> Path:
        """The local model registry (a cluster names an object-store URL instead)."""
        return self.root / "registry"

    @property
    def features(self) -> Path:
        """Feature tables, their manifest, the Feast file registry and SQLite online store."""
        return self.root / "features"

    @property
    def data(self) -> Path:
        """Event data kept in the home (`shoprec demo` writes its events and items here)."""
        return self.root / "data"

    @property
    def bundles(self) -> Path:
        """Model bundles trained outside a pipeline run (`shoprec demo`); runs keep theirs."""
        return self.root / "bundles"

    @property
    def jobs(self) -> Path:
        """Work folders of PyTorchJob training runs on the shared volume: jobs/<name>/{data,bundle}."""
        return self.root / "jobs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def embeddings(self) -> Path:
        """Title embeddings computed so far, one row per distinct title
        (`models.content.title_embeddings`): a retraining embeds only new titles."""
        return self.root / "embeddings"

    @property
    def predictions(self) -> Path:
        """The servers' prediction log (one JSON-lines file per server process)."""
        return self.logs / "predictions"

    @property
    def features_manifest(self) -> Path:
        """What the feature tables were built from: as-of time, window (`max_len`), row counts."""
        return self.features / FEATURES_MANIFEST

    def feature_table(self, view: str) -> Path:
        """The Parquet table of a feature view (`schema.USER_STATS`, `ITEM_STATS`, ...)."""
        return self.features / S.TABLE_FILES[view]

    @property
    def item_stats(self) -> Path:
        """The item table the serving catalogue reads (categories, popularity, prices)."""
        return self.feature_table(S.ITEM_STATS)

    @property
    def monitoring(self) -> Path:
        """Drift report runs, one folder each, beside the saved reference."""
        return self.reports / MONITORING_DIR

    @property
    def monitoring_reference(self) -> Path:
        """The training window (and the model's answers on it) that drift is measured against."""
        return self.monitoring / REFERENCE_DIR

    def monitoring_run(self, run_id: str) -> Path:
        return self.monitoring / run_id

    @property
    def trigger_state(self) -> Path:
        """When the retraining trigger last fired, and why (kept under a file lock)."""
        return self.monitoring / TRIGGER_STATE_FILE

    @property
    def reports_index(self) -> Path:
        """The page that lists every drift report."""
        return self.reports / INDEX_FILE

    def validation_report(self, stamp: str) -> Path:
        """The folder of one `shoprec validate` report."""
        return self.reports / f"validation-{stamp}"

    def ensure(self) -> "Home":
        """Create the folders (called by entry points, never at import)."""
        for path in (self.runs, self.reports):
            path.mkdir(parents=True, exist_ok=True)
        return self
