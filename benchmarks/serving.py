"""Serving latency over loopback: 2,000 requests at concurrency 1 and 16, through the
transformer (Feast read + predictor + metadata/reasons/log) and to the predictor alone, with
the in-process scoring time of the same requests as the floor.

    python benchmarks/serving.py --demo /tmp/shoprec-bench     # build a demo home, start both servers
    python benchmarks/serving.py --transformer http://127.0.0.1:8080 --predictor http://127.0.0.1:8081 \
        --home HOME                                            # servers already running (shoprec serve)

Targets on this machine: transformer p50 < 5 ms and p99 < 25 ms at concurrency 1; predictor
alone p50 < 2 ms; zero errors at concurrency 16."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], int, float]:
    """Send every body once with `concurrency` workers; (latencies ms, errors, seconds)."""
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker() -> None:
            nonlocal errors
            while queue:
                body = queue.pop()
                began = time.perf_counter()
                try:
                    response = await client.post(url, json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - began) * 1000)
                errors += not ok

        for body in bodies[:20]:  # warm-up, not counted
            await client.post(url, json=body)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def floor_ms(home: Path, histories: list[list[str]], repeats: int = 300) -> float:
    """Median in-process time of the predictor's work for one request (scoring + reasons)."""
    from shoprec.registry import Registry
    from shoprec.serving import Query, answer

    recommender = Registry(home / "registry").load()
    times = []
    for n in range(repeats):
        query = Query(tuple(histories[n % len(histories)]), 10, reasons=True)
        began = time.perf_counter()
        answer(recommender, [query])
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="Build a demo home here and start both servers.")
    parser.add_argument("--transformer", help="Transformer base URL (servers already running).")
    parser.add_argument("--predictor", help="Predictor base URL.")
    parser.add_argument("--home", type=Path, help="The servers' home (for users and the floor).")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from shoprec.training.data import build_sequences, build_vocab

    with contextlib.ExitStack() as stack:
        if args.demo:
            from shoprec.serving_demo import build_demo_home
            from shoprec.serving_process import running_servers

            if not (args.demo / "registry").exists():
                print(f"building the demo home in {args.demo} ...", flush=True)
                build_demo_home(args.demo)
            home = args.demo
            urls = stack.enter_context(running_servers(home, items=home / "data" / "items.parquet",
                                                       env={"OMP_NUM_THREADS": "1"}))
            transformer, predictor = urls.transformer, urls.predictor
        else:
            if not (args.transformer and args.predictor and args.home):
                parser.error("give --demo DIR, or --transformer, --predictor and --home")
            home, transformer, predictor = args.home, args.transformer, args.predictor
        import pandas as pd

        from shoprec.data.dataset import EventData

        data = EventData.read(home / "data")
        vocab = build_vocab(data.events, data.items)
        sequences = build_sequences(data.events, vocab)
        users = [str(u) for u in sequences.users]
        histories = [vocab.item_ids(s[-200:]) for s in sequences.items]
        rng = np.random.default_rng(0)
        picks = rng.integers(0, len(users), size=args.requests)
        user_bodies = [{"instances": [{"user_id": users[i], "k": 10}]} for i in picks]
        item_bodies = [{"instances": [{"items": histories[i], "k": 10, "reasons": True}]} for i in picks]
        floor = floor_ms(home, histories)
        rows = []
        for target, url, bodies in (("transformer", f"{transformer}/v1/models/shoprec:predict", user_bodies),
                                    ("predictor", f"{predictor}/v1/models/shoprec:predict", item_bodies)):
            for concurrency in (1, 16):
                latencies, errors, seconds = asyncio.run(load(url, bodies, concurrency))
                rows.append((target, concurrency, percentile(latencies, 50), percentile(latencies, 95),
                             percentile(latencies, 99), len(bodies) / seconds, errors))
        del pd
    print(f"\nin-process floor (predictor work per request: top-10 + reasons, median): {floor:.2f} ms\n")
    print(f"| target | concurrency | p50 ms | p95 ms | p99 ms | req/s | errors | p50 / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for target, concurrency, p50, p95, p99, rps, errors in rows:
        print(f"| {target} | {concurrency} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {rps:.0f} | {errors} | {p50 / floor:.1f}x |")


if __name__ == "__main__":
    main()
