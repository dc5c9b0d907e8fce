"""Benchmark: the feature store, in-process. Online read latency (p50 / p99) for 1 and 100 users
on SQLite and Redis, and the materialization time of the whole data set.

Targets on the 2-core development machine: one user's read p99 under 2 ms on SQLite and under
3 ms on Redis. Redis: --redis host:port, else $SHOPREC_TEST_REDIS or tests/.services.env (run
`bash tests/services.sh start` first); without one the Redis rows are left out, said so.

    .venv/bin/python benchmarks/features.py [--dataset ml-100k|instacart] [--reads 1000]

Scale mode (`--clean DIR`, a clean events folder such as `python -m shoprec.data.synthetic DIR
--events 1M` writes): the pipeline's two feature steps, `build_features` and
`publish_and_materialize` (SQLite, or Redis with --online redis), each in a fresh child process,
with its wall time and peak RSS (ru_maxrss of the child: imports included).

    .venv/bin/python benchmarks/features.py --clean /tmp/shop-1m [--max-len 50] [--online sqlite] [--memory-limit 512MB]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from shoprec.data.loaders import load_dataset
from shoprec.features.online import online_user_features, user_feature_refs
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import apply_definitions, materialize
from shoprec.features.tables import build_feature_tables

SERVICES_ENV = Path(__file__).resolve().parents[1] / "tests" / ".services.env"


def redis_address(given: str | None) -> str | None:
    if given or os.environ.get("SHOPREC_TEST_REDIS"):
        return given or os.environ["SHOPREC_TEST_REDIS"]
    if SERVICES_ENV.is_file():
        return SERVICES_ENV.read_text().strip().split("=", 1)[1]
    return None


def latencies_ms(read, batches: list[list[str]]) -> np.ndarray:
    for batch in batches[:20]:  # warm the registry cache and connections
        read(batch)
    out = np.empty(len(batches))
    for i, batch in enumerate(batches):
        began = time.perf_counter()
        read(batch)
        out[i] = (time.perf_counter() - began) * 1000
    return out


def _step(name: str, args: dict, answer) -> None:
    """One measured step, run in a child process: (seconds, peak RSS in MiB, facts with CPU seconds)."""
    began = time.perf_counter()
    if name == "build_features":
        from shoprec.features.tables import build_features

        extra = {"memory_limit": args["memory_limit"]} if args["memory_limit"] else {}
        build_features(args["clean"], args["out"], None, args["max_len"], **extra)
        facts = {"rows": json.loads((Path(args["out"]) / "features.json").read_text())["rows"]}
    else:
        from shoprec.features.store import publish_and_materialize

        settings = FeatureStoreSettings(home=args["home"], online_store=args["online"], redis=args["redis"] or "")
        extra = {"memory_limit": args["memory_limit"]} if args["memory_limit"] else {}
        summary = publish_and_materialize(args["out"], settings, **extra)
        facts = {"views": summary.views}
    seconds = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_SELF)
    facts["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # the machine may be shared: wall time is not all
    answer.send((seconds, usage.ru_maxrss / 1024, facts))


def measured(name: str, args: dict) -> tuple[float, float, dict]:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_step, args=(name, args, send))
    child.start()
    result = receive.recv()
    child.join()
    return result


def scale(args: argparse.Namespace, console: Console) -> None:
    """Time and peak memory of build_features and publish_and_materialize on a clean events folder."""
    if args.online == "redis" and not redis_address(args.redis):
        raise SystemExit("--online redis needs a Redis (--redis or `bash tests/services.sh start`)")
    result = Table(title=f"Feature steps on {args.clean} (max_len {args.max_len}, online {args.online})")
    for column in ("step", "seconds", "peak RSS MiB", "facts"):
        result.add_column(column, justify="right")
    with tempfile.TemporaryDirectory(dir=args.tmp) as work:
        step_args = {"clean": str(args.clean), "out": f"{work}/tables", "home": f"{work}/home",
                     "max_len": args.max_len, "online": args.online, "redis": redis_address(args.redis),
                     "memory_limit": args.memory_limit}
        if args.online == "redis":
            import redis

            host, port = step_args["redis"].split(":")
            redis.Redis(host=host, port=int(port)).flushall()
        for name in ("build_features", "publish_and_materialize"):
            seconds, peak, facts = measured(name, step_args)
            result.add_row(name, f"{seconds:.1f}", f"{peak:,.0f}", json.dumps(facts))
            print(f"{name}: {seconds:.1f} s, peak RSS {peak:,.0f} MiB, {json.dumps(facts)}", flush=True)
    console.print(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--reads", type=int, default=1000, help="reads per measurement")
    parser.add_argument("--redis", default=None, help="host:port of a Redis to use")
    parser.add_argument("--clean", type=Path, default=None, help="scale mode: a clean events folder")
    parser.add_argument("--max-len", type=int, default=50, help="scale mode: the window [50]")
    parser.add_argument("--online", choices=("sqlite", "redis"), default="sqlite", help="scale mode [sqlite]")
    parser.add_argument("--memory-limit", default=None, help="scale mode: DuckDB's memory limit [the library's]")
    parser.add_argument("--tmp", default=None, help="scale mode: where the work folder goes [system temp]")
    args = parser.parse_args()
    console = Console()
    if args.clean is not None:
        scale(args, console)
        return

    data = load_dataset(args.dataset)
    began = time.perf_counter()
    tables = build_feature_tables(data.events, data.items)
    build_s = time.perf_counter() - began
    users = sorted(tables.user_stats["user_id"].unique())
    rng = np.random.default_rng(0)
    one = [[str(u)] for u in rng.choice(users, args.reads)]
    hundred = [[str(u) for u in rng.choice(users, 100)] for _ in range(max(args.reads // 5, 50))]

    stores = ["sqlite"]
    address = redis_address(args.redis)
    if address:
        stores.append("redis")
    result = Table(title=f"Feature store on {args.dataset} ({len(data.events):,} events, {len(users):,} users)")
    for column in ("store", "materialize s", "1 user p50 ms", "1 user p99 ms", "100 users p50 ms", "100 users p99 ms"):
        result.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as home:
        for kind in stores:
            settings = FeatureStoreSettings(home=Path(home) / kind, online_store=kind, redis=address or "")
            tables.write(settings.features_dir)
            if kind == "redis":
                import redis

                host, port = address.split(":")
                redis.Redis(host=host, port=int(port)).flushall()
            store = apply_definitions(settings)
            summary = materialize(store, settings)
            refs = user_feature_refs(store)
            read = lambda batch: online_user_features(store, batch, refs)  # noqa: E731
            single = latencies_ms(read, one)
            many = latencies_ms(read, hundred)
            result.add_row(
                kind, f"{summary.seconds:.2f}",
                f"{np.percentile(single, 50):.2f}", f"{np.percentile(single, 99):.2f}",
                f"{np.percentile(many, 50):.2f}", f"{np.percentile(many, 99):.2f}",
            )
    console.print(f"feature tables built in {build_s:.2f} s: "
                  + ", ".join(f"{name} {len(frame):,} rows" for name, frame in tables.frames().items()))
    console.print(result)
    console.print("targets: 1 user p99 < 2 ms (SQLite), < 3 ms (Redis)")
    if not address:
        console.print("[yellow]no Redis given: run `bash tests/services.sh start` or pass --redis[/]")


if __name__ == "__main__":
    main()
