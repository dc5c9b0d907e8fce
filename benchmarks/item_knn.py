"""Benchmark (issue 15): ItemKNN's fit on clean event logs of growing size.

The baseline is fitted in the train step and again in evaluate, so a fit that grows faster
than the events shows up in both. For each clean dataset folder given (an `events.parquet`,
e.g. the scale benchmark's `<work>/<size>/home/runs/*/validate/clean`) it builds the users'
sequences and prints the fit's CPU seconds, wall seconds and the peak memory it added (VmHWM,
this process's own high-water mark), and each one's CPU ratio to the first.

    .venv/bin/python benchmarks/item_knn.py /work/scale/5M/home/runs/*/validate/clean \
        /work/scale/30M/home/runs/*/validate/clean
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from shoprec import schema as S
from shoprec.models.baselines import ItemKNN
from shoprec.sequences import build_sequences, build_vocab


def peak_mb() -> int:
    """This process's resident high-water mark (VmHWM), in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) // 1024


def fit_once(clean: Path) -> dict[str, float]:
    """Build the sequences of `clean`'s events and time one ItemKNN fit on them."""
    events = pd.read_parquet(clean / S.EVENTS_FILE, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP])
    vocab = build_vocab(events, None)
    sequences = build_sequences(events, vocab).items
    n_events = len(events)
    del events
    before = peak_mb()
    cpu, wall = time.process_time(), time.perf_counter()
    ItemKNN(vocab.n_items).fit(sequences)
    return {"events": n_events, "items": vocab.n_items, "users": len(sequences),
            "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
            "added_mb": peak_mb() - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", nargs="+", type=Path, help="clean dataset folders, smallest first")
    args = parser.parse_args()
    table = Table(title="ItemKNN fit by log size")
    for column in ("events", "users", "items", "CPU s", "wall s", "peak MB added", "events x", "CPU x"):
        table.add_column(column, justify="right")
    first: dict[str, float] | None = None
    for folder in args.clean:
        # A fresh high-water mark would need a fresh process; sizes go smallest first, so each
        # larger fit's peak is its own.
        row = fit_once(folder)
        first = first or row
        table.add_row(f"{row['events']:,}", f"{row['users']:,}", f"{row['items']:,}", f"{row['cpu_s']:.1f}",
                      f"{row['wall_s']:.1f}", f"{row['added_mb']:,}", f"{row['events'] / first['events']:.1f}",
                      f"{row['cpu_s'] / first['cpu_s']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
