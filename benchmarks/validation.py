"""Benchmark: the validation gate over 1M events (the real Instacart sample replicated with fresh ids).

Target on the 2-core development machine: 1M events through the whole gate, quarantine
included, in under 3 s. Each stage runs in a fresh process, which reports its seconds (imports
and reading the tables excluded) and its peak resident memory (ru_maxrss: imports and, for
the in-memory stages, the tables read into memory included): the streamed gate, what the
pipeline's validate step runs, holds one batch at a time. Prints a table; run with
`make benchmark` or `.venv/bin/python benchmarks/validation.py [--rows N] [--batch-rows N]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from shoprec import schema as S
from shoprec.config import ValidationConfig
from shoprec.data.batches import DEFAULT_BATCH_ROWS, ParquetEvents
from shoprec.data.dataset import EventData, events_file, read_companions
from shoprec.data.gate import run_gate
from shoprec.data.loaders import load_instacart
from shoprec.data.report import ReportPaths
from shoprec.data.validation import validate

STAGES = {
    "checks": "checks + quarantine (in memory)",
    "gate": "whole gate, in memory, outputs written",
    "streamed": "whole gate, streamed from the dataset directory",
}


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


def run_stage(stage: str, source: str, batch_rows: int, answer: multiprocessing.Queue) -> None:
    """One stage in this (fresh) process: its seconds, peak memory and the report's counts."""
    config = ValidationConfig()
    head = next(ParquetEvents(events_file(source)).batches(1000))
    validate(EventData(head, read_companions(source)[0]))  # warm up imports, not the data
    data = EventData.read(source) if stage != "streamed" else None
    with tempfile.TemporaryDirectory() as tmp:
        report = ReportPaths(Path(tmp) / "report.json", Path(tmp) / "report.md")
        start = time.perf_counter()
        if stage == "checks":
            summary = validate(data, config, batch_rows=batch_rows).report
        else:
            summary = run_gate(data if stage == "gate" else source, config, Path(tmp) / "clean",
                               Path(tmp) / "quarantine", report, batch_rows=batch_rows).report
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    answer.put((seconds, peak, summary.rows_clean, summary.quarantined))


def measure(stage: str, source: str, batch_rows: int) -> tuple[float, int, int, dict]:
    context = multiprocessing.get_context("spawn")
    answer = context.Queue()
    process = context.Process(target=run_stage, args=(stage, source, batch_rows, answer))
    process.start()
    result = answer.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = str(replicate(load_instacart(), args.rows).write(Path(tmp) / "raw"))
        results = {stage: measure(stage, source, args.batch_rows) for stage in STAGES}

    table = Table(title=f"Validation gate, {args.rows:,} events, batches of {args.batch_rows:,}")
    for column in ("stage", "seconds", "rows/s", "peak RSS", "target"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for stage, label in STAGES.items():
        seconds, peak, _, _ = results[stage]
        table.add_row(label, f"{seconds:.2f}", f"{args.rows / seconds:,.0f}", f"{peak / 2**20:,.0f} MB",
                      "< 3 s" if stage == "streamed" else "")
    Console().print(table)
    _, _, clean, quarantined = results["streamed"]
    print(f"clean={clean:,} quarantined={quarantined}")


if __name__ == "__main__":
    main()
