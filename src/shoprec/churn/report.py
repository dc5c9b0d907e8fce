"""The churn report: metric table, paired intervals, gate, and a reliability plot, as Markdown
(the model card) and HTML (the plot as inline SVG: no plotting library, opens anywhere)."""

from __future__ import annotations

import html
from typing import Any

_COLOURS = {"churn_mlp": "#1f77b4", "recency": "#d62728", "frequency": "#2ca02c"}


def markdown_report(evaluation: dict[str, Any], gate: dict[str, Any], facts: dict[str, Any]) -> str:
    lines = ["# Churn model: shoprec-churn", "",
             f"Label: no purchase in the {facts.get('horizon_days')} days after a snapshot, for users "
             "active by it. Features: user_stats as of each snapshot (Feast historical retrieval).", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += ["", "## Test snapshot", "", "| model | ROC-AUC | PR-AUC | Brier | rows | churn rate |",
              "|---|---|---|---|---|---|"]
    for name, row in evaluation["models"].items():
        lines.append(f"| {name} | {row['roc_auc']:.4f} | {row['pr_auc']:.4f} | {row['brier']:.4f} "
                     f"| {row['rows']} | {row['churn_rate']:.3f} |")
    lines += ["", "## Model minus baseline (paired bootstrap, 95 %)", "",
              "| baseline | metric | delta | interval |", "|---|---|---|---|"]
    for baseline, metrics in evaluation["paired"].items():
        for metric, iv in metrics.items():
            lines.append(f"| {baseline} | {metric} | {iv['delta']:+.4f} | [{iv['low']:+.4f}, {iv['high']:+.4f}] |")
    lines += ["", "## Gate", "", f"{'PASSED' if gate['passed'] else 'REJECTED'}: {gate['reason']}", "",
              "## Reliability (predicted vs observed churn rate per probability bin)", ""]
    for name, rows in evaluation["reliability"].items():
        lines += [f"### {name}", "", "| bin | rows | predicted | observed |", "|---|---|---|---|"]
        lines += [f"| {r['bin']} | {r['rows']} | {r['predicted']:.3f} | {r['observed']:.3f} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def reliability_svg(reliability: dict[str, list[dict[str, Any]]], size: int = 320) -> str:
    """Predicted (x) against observed (y) churn rate per bin, one polyline per model, the
    diagonal for perfect calibration; marker area follows the bin's rows."""
    pad = 40
    span = size - 2 * pad

    def xy(p: float, o: float) -> tuple[float, float]:
        return pad + p * span, size - pad - o * span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 120}" height="{size}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#999"/>',
             f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#bbb" stroke-dasharray="4"/>',
             f'<text x="{size / 2 - 30}" y="{size - 8}">predicted</text>',
             f'<text x="4" y="{pad - 8}">observed</text>']
    for i, (name, rows) in enumerate(reliability.items()):
        colour = _COLOURS.get(name, "#555")
        total = sum(r["rows"] for r in rows) or 1
        points = [xy(r["predicted"], r["observed"]) for r in rows]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}"/>')
        for (x, y), r in zip(points, rows):
            radius = 2 + 8 * (r["rows"] / total) ** 0.5
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{colour}" fill-opacity="0.5"/>')
        parts.append(f'<text x="{size - pad + 10}" y="{pad + 14 * (i + 1)}" fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(evaluation: dict[str, Any], gate: dict[str, Any], facts: dict[str, Any]) -> str:
    """The Markdown report's tables as preformatted text, with the reliability plot above them."""
    body = html.escape(markdown_report(evaluation, gate, facts))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>shoprec-churn</title></head><body>"
            "<h1>shoprec-churn</h1><h2>Reliability</h2>" + reliability_svg(evaluation["reliability"])
            + f"<pre>{body}</pre></body></html>")
