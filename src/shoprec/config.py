"""Typed settings, built at entry points only (CLI, components, servers); never read at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

DEFAULT_HOME_DIRNAME = "shoprec-home"
HOME_ENV = "SHOPREC_HOME"
# The one image every KFP component and both KServe servers use (see serving/Dockerfile).
DEFAULT_IMAGE = "ghcr.io/shoprec/shoprec:0.1.0"


def resolve_home(home: str | Path | None = None) -> Path:
    """The home folder: the explicit argument, else $SHOPREC_HOME, else ./shoprec-home."""
    chosen = home or os.environ.get(HOME_ENV) or Path.cwd() / DEFAULT_HOME_DIRNAME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds of the validation gate's soft checks.

    Attributes:
        max_events_per_user_day: a user with more events than this on any one UTC day is
            treated as a bot and all of their events are quarantined.
        window_start / window_end: events outside [start, end] are quarantined. The default
            start catches epoch-zero and other placeholder timestamps from broken trackers.
        now: the reference time for the hard "not in the future" check (default: the call time).
        sample_rows: how many offending rows each failed check shows in the report.
    """

    max_events_per_user_day: int = 1000
    window_start: pd.Timestamp | None = field(
        default_factory=lambda: pd.Timestamp("1995-01-01", tz="UTC")
    )
    window_end: pd.Timestamp | None = None
    now: pd.Timestamp | None = None
    sample_rows: int = 5

    @staticmethod
    def from_strings(
        max_events_per_user_day: int = 1000,
        window_start: str = "1995-01-01",
        window_end: str = "",
    ) -> "ValidationConfig":
        """Build from plain strings, as pipeline parameters and CLI options carry them ('' = open)."""
        return ValidationConfig(
            max_events_per_user_day=int(max_events_per_user_day),
            window_start=_utc_or_none(window_start),
            window_end=_utc_or_none(window_end),
        )


def _utc_or_none(value: str | None) -> pd.Timestamp | None:
    if not value:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
