"""`EventData`: the canonical events / items / users tables travelling together, and their files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

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
        # The snapshot id names this exact events file in the lineage of everything built on it.
        snapshot = hashlib.sha256((out / S.EVENTS_FILE).read_bytes()).hexdigest()[:16]
        for table, name in ((self.items, S.ITEMS_FILE), (self.users, S.USERS_FILE)):
            if table is not None:
                table.to_parquet(out / name, index=False)
            elif (out / name).exists():
                (out / name).unlink()
        manifest = {
            "source": self.source,
            "snapshot_id": snapshot,
            "events": len(self.events),
            "items": None if self.items is None else len(self.items),
            "users": None if self.users is None else len(self.users),
            "info": self.info,
        }
        (out / S.DATASET_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        return out

    @staticmethod
    def read(directory: str | Path) -> "EventData":
        """Read a directory written by `write`."""
        root = Path(directory)
        events_path = root / S.EVENTS_FILE
        if not events_path.exists():
            raise DataSourceError(f"no {S.EVENTS_FILE} in dataset directory {root}")
        manifest_path = root / S.DATASET_MANIFEST
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        optional = {
            name: pd.read_parquet(root / name) if (root / name).exists() else None
            for name in (S.ITEMS_FILE, S.USERS_FILE)
        }
        return EventData(
            events=pd.read_parquet(events_path),
            items=optional[S.ITEMS_FILE],
            users=optional[S.USERS_FILE],
            source=manifest.get("source", str(root)),
            info={**manifest.get("info", {}), "snapshot_id": manifest.get("snapshot_id")},
        )
