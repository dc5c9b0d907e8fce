"""The report index: one static HTML page in the home's reports listing every drift report
(time, windows, verdict, drifted columns, link), newest first. Plain HTML, no scripts: it
opens from disk anywhere."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

from shoprec.home import Home
from shoprec.monitoring.drift import NO_DRIFT, RUN_FILE, ReportSummary


@dataclass
class IndexEntry:
    summary: ReportSummary
    html_path: Path
    json_path: Path


def list_reports(home: Home) -> list[IndexEntry]:
    """Every report under `<home>/reports/monitoring/<run>/`, newest first."""
    root = home.monitoring
    entries: list[IndexEntry] = []
    if not root.is_dir():
        return entries
    for run in sorted(p for p in root.iterdir() if p.is_dir() and p != home.monitoring_reference):
        for path in sorted(run.glob("*.json")):
            if path.name == RUN_FILE:
                continue
            try:
                summary = ReportSummary.from_dict(json.loads(path.read_text()))
            except (ValueError, TypeError, KeyError):
                continue  # a report being written right now, or not a report at all
            entries.append(IndexEntry(summary, run / summary.html, path))
    entries.sort(key=lambda e: (e.summary.created_at, e.summary.report_id), reverse=True)
    return entries


def write_index(home: Home) -> Path:
    """(Re)write `<home>/reports/index.html`; returns its path."""
    entries = list_reports(home)
    out = home.reports_index
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in entries:
        s = e.summary
        colour = "#1b5e20" if s.verdict == NO_DRIFT else "#b71c1c"
        link = os.path.relpath(e.html_path, out.parent)
        drifted = ", ".join(s.drifted_columns) or "-"
        rows.append(
            "<tr>"
            f"<td>{_e(s.created_at.replace('T', ' '))}</td><td>{_e(s.report_id)}</td><td>{_e(s.kind)}</td>"
            f"<td>{_e(s.reference_window)}</td><td>{_e(s.current_window)}</td>"
            f'<td class="verdict" style="color:{colour}"><b>{_e(s.verdict.upper())}</b></td>'
            f"<td>{s.drift_share:.0%}</td><td>{_e(drifted)}</td>"
            f'<td><a href="{_e(link)}">{_e(s.html)}</a></td></tr>'
        )
    body = "\n".join(rows) or '<tr><td colspan="9">no reports yet</td></tr>'
    out.write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>shoprec drift reports</title>
<style>body{{font-family:sans-serif;margin:24px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}}th{{background:#eee}}</style>
</head><body><h1>shoprec drift reports</h1>
<p>{len(entries)} report(s), newest first. Reference = the training window; current = the checked window.</p>
<table><thead><tr><th>time (UTC)</th><th>report</th><th>kind</th><th>reference window</th>
<th>current window</th><th>verdict</th><th>drift share</th><th>drifted columns</th><th>report</th></tr></thead>
<tbody>
{body}
</tbody></table></body></html>
""", encoding="utf-8")
    return out


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
