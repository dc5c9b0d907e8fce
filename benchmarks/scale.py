"""Benchmark: the whole training pipeline on a synthetic shop log of growing size, through kfp.local.

For each size it writes a seeded synthetic log (`shoprec.data.synthetic`: heavy-tailed users,
Zipf items, sessions, a view -> cart -> purchase funnel, one year; 5M events -> 100k users,
50k items), runs `shoprec run --dataset events.parquet --items items.parquet --train-minutes M`
on it with a fresh home, and prints per step: wall seconds (kfp.local's log, the step's process
start included), the peak resident memory of the step's own process (the `peak_rss_mb` metric
every step logs, read from `<run>/<step>/executor_output.json`; "children MB" is the largest
subprocess it waited for, an upper bound: a child forked from the step counts the step's size at
the fork), rows/s (input events / step
seconds) and the time and memory ratios to the first size. Cost must grow linearly or better:
a step whose CPU-time ratio (wall time where no CPU time was logged: CPU time is the fair
figure on a shared machine) exceeds the size ratio by more than 15% is marked SUPERLINEAR.
`train` runs for the --train-minutes budget (or until early stopping), so its time says little.

    .venv/bin/python benchmarks/scale.py [--sizes 1M 5M] [--train-minutes 5] [--work DIR] [--seed 0]
    .venv/bin/python benchmarks/scale.py --sizes 1M 5M 30M --work /data/scale   # the 30M run too
    .venv/bin/python benchmarks/scale.py --sizes 30k --train-minutes 0.2       # a smoke run

Sizes take k / M suffixes. With --work the logs, homes and run folders stay there (a log already
generated with the same shape is reused); without it they go to a temporary folder, removed at
the end. With --work and --reuse, a size whose finished run is already there (its `result.json`)
is read back instead of run again: `--sizes 5M 30M --reuse` compares the 30M run with the
stored 5M one without paying for 5M twice.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shoprec.data.synthetic import ShopShape, SyntheticLog, format_count, parse_count, write_shop_log
from shoprec.kfp.local import step_metrics

SHOPREC = str(Path(sys.executable).with_name("shoprec"))
RESULT_FILE = "result.json"  # a size's finished run, read back by --reuse
LINEAR_SLACK = 1.15  # a step's time ratio may exceed the size ratio by this much before it is flagged
_STAMP = r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) - \w+ - "
_STARTED = re.compile(_STAMP + r"Executing task '([^']+)'")
_FINISHED = re.compile(_STAMP + r"Task '([^']+)' finished with status (\w+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Step:
    name: str
    seconds: float | None = None
    status: str = "not run"
    peak_rss_mb: float | None = None
    children_rss_mb: float | None = None
    cpu_seconds: float | None = None


@dataclass
class SizeRun:
    events: int
    log: SyntheticLog
    generate_s: float
    run_s: float
    returncode: int
    tree_peak_mb: float  # the largest process of the whole run (driver and every step)
    folder: Path | None
    steps: dict[str, Step] = field(default_factory=dict)

    def max_step_rss(self) -> float | None:
        values = [s.peak_rss_mb for s in self.steps.values() if s.peak_rss_mb is not None]
        return max(values) if values else None


def step_names() -> list[str]:
    from shoprec.kfp.spec import step_order
    from shoprec.pipelines.training import training_pipeline

    return [name.rstrip("?") for name in step_order(training_pipeline)]


def generate(events: int, seed: int, folder: Path) -> tuple[SyntheticLog, float]:
    """The synthetic log of `events` rows in `folder`, reused when already written for this shape."""
    shape = ShopShape.scaled(events, seed=seed)
    marker = folder / "shape.json"
    if marker.is_file() and json.loads(marker.read_text()).get("shape") == shape.__dict__:
        stored = json.loads(marker.read_text())
        log = SyntheticLog(folder / "events.parquet", folder / "items.parquet", shape, stored["rows"],
                           stored["sessions"], stored["chunks"], stored["seconds"])
        if log.events_path.is_file() and log.items_path.is_file():
            return log, 0.0
    log = write_shop_log(folder, shape)
    marker.write_text(json.dumps({"shape": shape.__dict__, "rows": log.rows, "sessions": log.sessions,
                                  "chunks": log.chunks, "seconds": log.seconds}))
    return log, log.seconds


def run_pipeline(log: SyntheticLog, home: Path, train_minutes: float, output: Path,
                 console: Console) -> tuple[int, float, float]:
    """`shoprec run` on the log with `home`: (exit code, wall seconds, the run's largest process MB).

    The command's output goes to `output`; its progress lines are echoed as they come."""
    command = [SHOPREC, "run", "--dataset", str(log.events_path), "--items", str(log.items_path),
               "--train-minutes", f"{train_minutes:g}", "--home", str(home)]
    began = time.perf_counter()
    with open(output, "w", encoding="utf-8") as out:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "COLUMNS": "160"})
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if re.match(r"\s*\[\d+/\d+\]", line):
                console.print(f"    {line.rstrip()}", highlight=False)
        # wait4, not wait: its rusage is the largest process of the tree (the waited-for ones).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - began, usage.ru_maxrss / 1024


def read_steps(run: Path, names: list[str]) -> dict[str, Step]:
    """Each step's wall seconds (kfp.local's log) and logged peak memory (its Metrics)."""
    steps = {name: Step(name) for name in names}
    started: dict[str, float] = {}
    day = previous = 0.0
    log = run / "pipeline.log"
    for line in (log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []):
        line = _ANSI.sub("", line)
        found = _STARTED.match(line) or _FINISHED.match(line)
        if not found:
            continue
        h, m, s, ms = (int(g) for g in found.groups()[:4])
        at = h * 3600 + m * 60 + s + ms / 1000
        if at + day < previous - 3600:  # the clock passed midnight
            day += 86400
        at += day
        previous = at
        task = found.group(5)
        step = steps.setdefault(task, Step(task))
        if found.re is _STARTED:
            started[task] = at
        else:
            step.status = found.group(6)
            if task in started:
                step.seconds = at - started[task]
    for name, step in steps.items():
        if step.status == "not run" and name in started:
            step.status = "unfinished"
        metrics = step_metrics(run / name / "executor_output.json")
        step.peak_rss_mb = metrics.get("peak_rss_mb")
        step.children_rss_mb = metrics.get("peak_rss_children_mb")
        step.cpu_seconds = metrics.get("cpu_seconds")
    return steps


def stored_result(folder: Path, events: int, log: SyntheticLog) -> SizeRun | None:
    """The finished run of this size kept in `folder` (its `result.json`), or None when there is
    none for this log's shape."""
    path = folder / RESULT_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    run = Path(stored["run"]) if stored.get("run") else None
    if stored.get("shape") != log.shape.__dict__ or run is None or not run.is_dir():
        return None
    return SizeRun(events, log, stored["generate_s"], stored["run_s"], stored["returncode"],
                   stored["tree_peak_mb"], run, read_steps(run, step_names()))


def only_run(home: Path) -> Path | None:
    runs = sorted((p for p in (home / "runs").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value is not None and base else "-"


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_size(console: Console, result: SizeRun, base: SizeRun) -> None:
    grow = result.events / base.events
    shape = result.log.shape
    table = Table(title=f"{format_count(result.events)} events ({shape.users:,} users, {shape.items:,} items, "
                        f"{result.log.sessions:,} sessions); x{grow:g} the {format_count(base.events)} run")
    for column in ("step", "status", "seconds", "CPU s", "peak RSS MB", "children MB", "rows/s", "time x",
                   "CPU x", "RSS x", "scaling"):
        table.add_column(column, justify="left" if column in ("step", "status", "scaling") else "right")
    for name, step in result.steps.items():
        before = base.steps.get(name)
        time_ratio = step.seconds / before.seconds if step.seconds and before and before.seconds else None
        cpu_ratio = step.cpu_seconds / before.cpu_seconds if step.cpu_seconds and before and before.cpu_seconds \
            else None
        # CPU time is the fairer cost on a shared machine (wall time grows with others' load).
        time_ratio = cpu_ratio if cpu_ratio is not None else time_ratio
        verdict = ""
        if time_ratio is not None and result is not base:
            verdict = "SUPERLINEAR" if time_ratio > grow * LINEAR_SLACK else "linear or better"
            verdict += " (budget)" if name == "train" else ""
        table.add_row(
            name, step.status, number(step.seconds), number(step.cpu_seconds), number(step.peak_rss_mb, 0),
            number(step.children_rss_mb, 0),
            f"{result.events / step.seconds:,.0f}" if step.seconds else "-",
            ratio(step.seconds, before.seconds if before else None),
            ratio(step.cpu_seconds, before.cpu_seconds if before else None),
            ratio(step.peak_rss_mb, before.peak_rss_mb if before else None), verdict,
        )
    console.print(table)
    state = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
    console.print(f"  whole run {result.run_s:,.1f} s ({state}); max step RSS {number(result.max_step_rss(), 0)} MB; "
                  f"largest process of the run {result.tree_peak_mb:,.0f} MB; log generated in "
                  f"{result.generate_s:.1f} s; run folder {result.folder}", highlight=False)


def print_summary(console: Console, results: list[SizeRun]) -> None:
    base = results[0]
    table = Table(title="Scale: the whole pipeline by size")
    for column in ("events", "users", "items", "generate s", "run s", "max step RSS MB", "largest process MB",
                   "size x", "run time x", "max RSS x", "status"):
        table.add_column(column, justify="right" if column != "status" else "left")
    for result in results:
        table.add_row(
            format_count(result.events), f"{result.log.shape.users:,}", f"{result.log.shape.items:,}",
            f"{result.generate_s:.1f}", f"{result.run_s:,.1f}", number(result.max_step_rss(), 0),
            f"{result.tree_peak_mb:,.0f}", f"{result.events / base.events:g}", ratio(result.run_s, base.run_s),
            ratio(result.max_step_rss(), base.max_step_rss()),
            "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=parse_count, default=[1_000_000, 5_000_000],
                        help="events per run, with k/M suffixes (default: 1M 5M; add 30M for the big one)")
    parser.add_argument("--train-minutes", type=float, default=5.0, help="training budget of each run [5]")
    parser.add_argument("--work", type=Path, default=None, help="keep logs, homes and runs here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="with --work: read back a size's finished run instead of running it again")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)  # piped: wide enough for the tables
    sizes = sorted(set(args.sizes))
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="shoprec-scale-"))
    names = step_names()
    console.print(f"sizes {', '.join(format_count(n) for n in sizes)}; train budget {args.train_minutes:g} min; "
                  f"seed {args.seed}; work {work}; {os.cpu_count()} CPUs", highlight=False)
    results: list[SizeRun] = []
    try:
        for events in sizes:
            folder = work / format_count(events)
            console.print(f"[bold]{format_count(events)}[/]: generating the log ...")
            log, generate_s = generate(events, args.seed, folder / "data")
            home = folder / "home"
            stored = stored_result(folder, events, log) if args.reuse and args.work else None
            if stored is not None:
                console.print(f"[bold]{format_count(events)}[/]: read back the finished run in {folder}")
                results.append(stored)
                print_size(console, stored, results[0])
                continue
            if home.exists():
                shutil.rmtree(home)  # a fresh home: no champion, an empty store
            console.print(f"[bold]{format_count(events)}[/]: running the pipeline ({log.events_path})")
            rc, run_s, tree_mb = run_pipeline(log, home, args.train_minutes, folder / "run.out", console)
            run = only_run(home)
            result = SizeRun(events, log, generate_s, run_s, rc, tree_mb, run,
                             read_steps(run, names) if run else {n: Step(n) for n in names})
            results.append(result)
            (folder / RESULT_FILE).write_text(json.dumps(
                {"shape": log.shape.__dict__, "returncode": rc, "run_s": run_s, "tree_peak_mb": tree_mb,
                 "generate_s": generate_s, "run": str(run) if run else None}))
            if rc != 0:
                tail = (folder / "run.out").read_text(errors="replace").strip().splitlines()[-15:]
                console.print("[red]the run failed[/]; its output ends:\n" + "\n".join(tail), highlight=False)
            print_size(console, result, results[0])
        if len(results) > 1:
            print_summary(console, results)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
