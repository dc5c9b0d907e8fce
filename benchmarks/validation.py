"""Benchmark: the validation gate over 1M events (the real Instacart sample replicated with fresh ids).

Target on the 2-core development machine: 1M events through the whole gate, quarantine
included, in under 3 s. Prints a table; run with `make benchmark` or
`.venv/bin/python benchmarks/validation.py [--rows N]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.dataset import EventData
from shoprec.data.gate import run_gate
from shoprec.data.report import ReportPaths
from shoprec.data.loaders import load_instacart
from shoprec.data.validation import validate


def replicate(data: EventData, rows: int) -> EventData:
    """Copies of the sample with fresh user and session ids until `rows` events."""
    copies = []
    total = 0
    copy = 0
    while total < rows:
        part = data.events.copy()
        part[S.USER_ID] = part[S.USER_ID] + f"-{copy}"
        part[S.SESSION_ID] = part[S.SESSION_ID] + f"-{copy}"
        copies.append(part)
        total += len(part)
        copy += 1
    events = pd.concat(copies, ignore_index=True).iloc[:rows]
    # Plant the noise the gate exists for, so the quarantine does real work: 1% exact
    # duplicates and one bot with 2,000 events on one day (rows replaced, the count stays).
    noise = max(rows // 100, 1)
    duplicates = events.sample(noise, random_state=0)
    bot = events.iloc[:min(2000, rows // 10)].assign(**{S.USER_ID: "bot", S.TIMESTAMP: events[S.TIMESTAMP].iloc[0]})
    events = pd.concat([events.iloc[: rows - noise - len(bot)], duplicates, bot], ignore_index=True)
    return EventData(events, data.items, None, f"instacart x{copy} + noise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    data = replicate(load_instacart(), args.rows)
    validate(EventData(data.events.head(1000), data.items))  # warm up imports, not the data
    config = ValidationConfig()

    start = time.perf_counter()
    outcome = validate(data, config)
    checked = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = ReportPaths(Path(tmp) / "report.json", Path(tmp) / "report.md")
        run_gate(data, config, Path(tmp) / "clean", Path(tmp) / "quarantine", report)
        whole = time.perf_counter() - start

    table = Table(title=f"Validation gate, {len(data.events):,} events")
    for column in ("stage", "seconds", "rows/s", "target"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    table.add_row("checks + quarantine (in memory)", f"{checked:.2f}", f"{len(data.events) / checked:,.0f}", "")
    table.add_row("whole gate, outputs written", f"{whole:.2f}", f"{len(data.events) / whole:,.0f}", "< 3 s")
    Console().print(table)
    print(f"clean={outcome.report.rows_clean:,} quarantined={outcome.report.quarantined}")


if __name__ == "__main__":
    main()
