"""`EventData`: the canonical events / items / users tables travelling together, and their files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow.parquet as pq

from shoprec import schema as S
from shoprec.errors import DataSourceError


@dataclass
class EventData:
    """One data set in the canonical model.

    Attributes:
        events: one row per event (see `shoprec.schema`).
        items: one row per item, or None when the source has no item table.
        users: one row per user, or None when the source has no user table.
        source: where the data came from ("instacart", "ml-100k" or a path).
        info: free facts about the source (anchor date, counts), kept in the manifest.
    """

    events: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    source: str = "unknown"
    info: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: str | Path) -> Path:
        """Write the tables as Parquet plus a `dataset.json` manifest; returns the directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.events.to_parquet(out / S.EVENTS_FILE, index=False)
        return finish_dataset(out, len(self.events), self.items, self.users, self.source, self.info)

    @staticmethod
    def read(directory: str | Path, columns: Sequence[str] | None = None) -> "EventData":
        """Read a directory written by `write`; `columns` (those present of them) limits the
        events to what the reader uses: a training step needs three of a log's columns, and
        every text column costs tens of bytes per event in memory."""
        events_path = events_file(directory)
        items, users, source, info = read_companions(directory)
        if columns is not None:
            present = set(pq.ParquetFile(events_path).schema_arrow.names)
            columns = [name for name in columns if name in present]
        return EventData(events=pd.read_parquet(events_path, columns=columns), items=items, users=users,
                         source=source, info=info)


def events_file(directory: str | Path) -> Path:
    """The events Parquet file of a dataset directory (its biggest table: read it in batches)."""
    path = Path(directory) / S.EVENTS_FILE
    if not path.exists():
        raise DataSourceError(f"no {S.EVENTS_FILE} in dataset directory {Path(directory)}")
    return path


def read_companions(
    directory: str | Path,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str, dict[str, Any]]:
    """A dataset directory's items and users tables (None when absent), source and info (with
    the events file's snapshot id), everything `read` returns but the events."""
    root = Path(directory)
    manifest_path = root / S.DATASET_MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    optional = {
        name: pd.read_parquet(root / name) if (root / name).exists() else None
        for name in (S.ITEMS_FILE, S.USERS_FILE)
    }
    info = {**manifest.get("info", {}), "snapshot_id": manifest.get("snapshot_id")}
    return optional[S.ITEMS_FILE], optional[S.USERS_FILE], manifest.get("source", str(root)), info


def finish_dataset(
    directory: str | Path,
    events: int,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    source: str,
    info: dict[str, Any],
) -> Path:
    """Complete a dataset directory whose events file (`events` rows) is already written: the
    items and users tables and the manifest. Returns the directory."""
    out = Path(directory)
    # The snapshot id names this exact events file in the lineage of everything built on it.
    snapshot = _sha256(out / S.EVENTS_FILE)[:16]
    for table, name in ((items, S.ITEMS_FILE), (users, S.USERS_FILE)):
        if table is not None:
            table.to_parquet(out / name, index=False)
        elif (out / name).exists():
            (out / name).unlink()
    manifest = {
        "source": source,
        "snapshot_id": snapshot,
        "events": int(events),
        "items": None if items is None else len(items),
        "users": None if users is None else len(users),
        "info": info,
    }
    (out / S.DATASET_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
