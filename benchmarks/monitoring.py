"""Benchmark: one drift report (DataDriftPreset + DataSummaryPreset, HTML + JSON summary) over
1M current rows x 10 columns (7 numerical, 3 categorical) against 200k reference rows.

    .venv/bin/python benchmarks/monitoring.py [--rows 1000000] [--no-sample]

Goal: under 20 s on this machine. Prints a table: Evidently import, frame preparation,
the report (with the default 250k-row comparison sample, and optionally on all rows)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def frames(rows: int, reference_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)

    def make(n: int, shift: bool) -> pd.DataFrame:
        data = {f"num{i}": rng.gamma(2, 5, n) * (1.5 if shift and i == 0 else 1.0) for i in range(7)}
        for i in range(3):
            data[f"cat{i}"] = rng.choice(list("abcdefgh"), n)
        return pd.DataFrame(data)

    return make(reference_rows, False), make(rows, True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-sample", action="store_true", help="also time the report on all rows")
    args = parser.parse_args()
    timings: list[tuple[str, float, str]] = []
    start = time.perf_counter()
    import evidently.metrics  # noqa: F401
    import evidently.presets  # noqa: F401

    from shoprec.monitoring.drift import drift_report

    timings.append(("import evidently", time.perf_counter() - start, ""))
    start = time.perf_counter()
    reference, current = frames(args.rows, 200_000)
    timings.append(("make frames", time.perf_counter() - start, f"{len(current):,} x {current.shape[1]}"))
    variants = [("report (250k sample/side)", 250_000)] + ([("report (all rows)", None)] if args.no_sample else [])
    for label, max_rows in variants:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = drift_report(reference, current, kind="user_features", report_id="bench/user_features",
                                   out_dir=Path(out), numerical=[f"num{i}" for i in range(7)],
                                   categorical=[f"cat{i}" for i in range(3)], max_rows=max_rows)
            seconds = time.perf_counter() - start
        timings.append((label, seconds, f"drifted {summary.drifted_columns} -> {summary.verdict}"))
    print(f"{'step':<28} {'seconds':>8}  note")
    for step, seconds, note in timings:
        print(f"{step:<28} {seconds:8.2f}  {note}")
    report = [t for t in timings if t[0].startswith("report (250k")][0][1]
    print(f"goal: report < 20 s -> {'met' if report < 20 else 'MISSED'} ({report:.1f} s)")


if __name__ == "__main__":
    main()
