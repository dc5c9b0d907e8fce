"""The validation report on disk: JSON for machines, Markdown for the person reviewing the run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shoprec.data.validation import CheckResult, ValidationReport


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    markdown: Path


def write_report_files(report: ValidationReport, paths: ReportPaths) -> ReportPaths:
    """Write the report's JSON and Markdown to the given paths (each caller names its own)."""
    for path in (paths.json, paths.markdown):
        path.parent.mkdir(parents=True, exist_ok=True)
    paths.json.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    paths.markdown.write_text(render_markdown(report))
    return paths


def render_markdown(report: ValidationReport) -> str:
    """A page a person reads: verdict, row accounting, every check, samples of what failed."""
    verdict = "PASSED" if report.passed else "FAILED: " + ", ".join(report.failed_hard)
    quarantined = sum(report.quarantined.values())
    lines = [
        f"# Data validation report: {report.source}",
        "",
        f"**Verdict: {verdict}**",
        "",
        f"Checked at {report.created_at}. Hard checks stop the run; soft checks quarantine rows.",
        "",
        "| rows in | clean | quarantined |",
        "|---:|---:|---:|",
        f"| {report.rows_in:,} | {report.rows_clean:,} | {quarantined:,} |",
        "",
    ]
    if report.quarantined:
        lines += ["| quarantine reason | rows |", "|---|---:|"]
        lines += [f"| {reason} | {count:,} |" for reason, count in report.quarantined.items()]
        lines.append("")
    if report.notes:
        lines += ["## How the input was read", ""]
        lines += [f"- {note}" for note in report.notes]
        lines.append("")
    lines += [
        "## Checks",
        "",
        "| | severity | table | check | column | unexpected | of | expectation |",
        "|---|---|---|---|---|---:|---:|---|",
    ]
    for check in report.checks:
        lines.append(
            f"| {_mark(check)} | {_severity(check)} | {check.table} | {check.description} | "
            f"{check.column or ''} | {check.unexpected_count:,} | {check.element_count:,} | "
            f"`{check.expectation}` |"
        )
    # A tolerant check that passed with rows quarantined is shown beside the failed ones.
    failed = [c for c in report.checks if not c.skipped and (not c.success or _quarantined(c))]
    if failed:
        lines += ["", "## What failed", ""]
    for check in failed:
        lines += [f"### {check.name} ({_severity(check)})", "", check.description + "."]
        if check.tolerance is not None:
            share = check.unexpected_count / max(check.element_count, 1)
            verdict = "over" if not check.success else "within"
            lines += ["", f"{check.unexpected_count:,} of {check.element_count:,} events ({share:.2%}) "
                          f"fail it, {verdict} the {check.tolerance:.2%} the run tolerates."]
        if check.error:
            lines += ["", f"Error: `{check.error}`"]
        if check.sample_rows:
            columns = list(check.sample_rows[0])
            lines += ["", "Sample rows:", "", "| " + " | ".join(columns) + " |",
                      "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(r.get(c)) for c in columns) + " |" for r in check.sample_rows]
        lines.append("")
    lines += ["## Settings", "", "```json", json.dumps(report.config, indent=2), "```", ""]
    return "\n".join(lines)


def _mark(check: CheckResult) -> str:
    if check.skipped:
        return "skipped"
    if not check.success:
        return "**FAIL**"
    return "quarantined" if _quarantined(check) else "pass"


def _severity(check: CheckResult) -> str:
    """A tolerant hard check says at which share it stops the run."""
    if check.tolerance is None:
        return check.severity
    return f"{check.severity} above {check.tolerance * 100:g}%"


def _quarantined(check: CheckResult) -> bool:
    """A tolerant check that passed though some rows failed it: those rows went to quarantine."""
    return check.tolerance is not None and check.success and check.unexpected_count > 0
