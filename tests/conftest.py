"""Shared test helpers: small canonical frames built by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from shoprec import schema as S


def events_frame(rows: list[tuple], extra: dict | None = None) -> pd.DataFrame:
    """Events from (user, item, event_type, timestamp text, price) tuples."""
    frame = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP, S.PRICE])
    frame[S.TIMESTAMP] = pd.to_datetime(frame[S.TIMESTAMP], utc=True)
    for column, values in (extra or {}).items():
        frame[column] = values
    return frame


@pytest.fixture
def good_events() -> pd.DataFrame:
    """Six valid events of two users."""
    return events_frame([
        ("u1", "i1", "view", "2024-03-01T10:00:00Z", 5.0),
        ("u1", "i1", "cart", "2024-03-01T10:01:00Z", 5.0),
        ("u1", "i1", "purchase", "2024-03-01T10:02:00Z", 5.0),
        ("u2", "i2", "view", "2024-03-02T09:00:00Z", 12.5),
        ("u2", "i3", "view", "2024-03-02T09:05:00Z", 3.0),
        ("u2", "i3", "purchase", "2024-03-03T18:00:00Z", 3.0),
    ])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say loudly which infrastructure checks did not run (tests/kubernetes: CRD schemas,
    kubectl), so a missing tool is seen in CI instead of passing as a quiet skip."""
    skipped = []
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "infrastructure check skipped" in reason:
            skipped.append(f"{report.nodeid}: {reason.removeprefix('Skipped: ')}")
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} infrastructure check(s) skipped", red=True, bold=True)
        for line in skipped:
            terminalreporter.write_line(line, red=True)
