"""Every drift report also goes into a local Evidently workspace, `<home>/reports/evidently/`,
beside the HTML files: one Evidently project per report kind (user features, item features,
predictions, quality), one snapshot per monitoring run, and a dashboard of the drift share per
run. `evidently ui --workspace <home>/reports/evidently` browses it (projects, snapshots, the
dashboards over time) with Evidently's own UI.

Evidently 0.7 API: `evidently.ui.workspace.Workspace(path)`, `create_project` / `list_projects`,
`add_run(project_id, snapshot, name=...)`, `list_runs` / `get_run`; dashboards are
`project.dashboard.add_panel(...)` of `evidently.sdk.panels` with `PanelMetric`s.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoprec.home import Home

WORKSPACE_DIR = "evidently"
PROJECT_PREFIX = "shoprec "
# Evidently's dataset-level drift metric; its "share" label is the share of drifted columns.
DRIFTED_COLUMNS = "evidently:metric_v2:DriftedColumnsCount"


def workspace_dir(home: Home) -> Path:
    """Where a home's Evidently workspace lives: `<home>/reports/evidently/`."""
    return home.reports / WORKSPACE_DIR


@dataclass(frozen=True)
class WorkspaceRun:
    """One snapshot in the workspace, as the monitoring code knows it."""

    project: str  # the project's name ("shoprec user_features")
    project_id: str
    snapshot_id: str
    name: str  # the report id ("<run id>/<kind>")
    tags: tuple[str, ...]
    metadata: dict[str, str]


class DriftWorkspace:
    """A local Evidently workspace holding the shoprec drift reports (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, home: Home) -> "DriftWorkspace":
        """The workspace of a home (created on first use)."""
        return cls(workspace_dir(home))

    def add(self, snapshot: Any, kind: str, name: str) -> dict[str, str]:
        """Store an Evidently `Snapshot` (the result of `Report.run`, its tags and metadata set
        there) in the project of `kind` under `name`; returns {"project_id", "snapshot_id"}
        for the report's summary."""
        with self._locked() as workspace:
            project = self._project(workspace, kind)
            ref = workspace.add_run(project.id, snapshot, name=name)
        return {"project_id": str(ref.project_id), "snapshot_id": str(ref.id)}

    def runs(self) -> list[WorkspaceRun]:
        """Every shoprec snapshot in the workspace, read back through Evidently's API."""
        if not self.path.is_dir():
            return []
        workspace = self._open()
        found: list[WorkspaceRun] = []
        for project in workspace.list_projects():
            if project is None or not project.name.startswith(PROJECT_PREFIX):
                continue
            for snapshot_id in workspace.list_runs(project.id):
                model = workspace.get_run(project.id, snapshot_id)
                if model is None:
                    continue
                found.append(WorkspaceRun(project.name, str(project.id), str(snapshot_id), model.name or "",
                                          tuple(model.tags or ()), {k: str(v) for k, v in (model.metadata or {}).items()}))
        return found

    def _open(self) -> Any:
        from evidently.ui.workspace import Workspace

        return Workspace(str(self.path))

    def _project(self, workspace: Any, kind: str) -> Any:
        """The project of one report kind, made with its dashboard the first time."""
        name = f"{PROJECT_PREFIX}{kind}"
        existing = workspace.search_project(name)
        if existing:
            return existing[0]
        from evidently.sdk.models import PanelMetric
        from evidently.sdk.panels import counter_panel, line_plot_panel

        project = workspace.create_project(name, description=f"shoprec {kind} drift reports, one snapshot per monitoring run")
        project.dashboard.add_panel(line_plot_panel(
            title="Share of drifted columns per run",
            values=[PanelMetric(legend="drift share", metric=DRIFTED_COLUMNS, metric_labels={"value_type": "share"})],
            size="full"))
        project.dashboard.add_panel(counter_panel(
            title="Drifted columns, last run",
            values=[PanelMetric(legend="count", metric=DRIFTED_COLUMNS, metric_labels={"value_type": "count"})],
            size="half", aggregation="last"))
        project.save()
        return project

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """The workspace under a file lock: two checks at once must not both create a project."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".shoprec.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._open()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
