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
import contextlib
import http.client
import json
import os
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], int, float]:
    """Send every body once from `concurrency` threads, each on its own keep-alive connection
    (the standard library's client: httpx costs ~0.45 ms more per request here, which would
    be the client's time, not the server's); (latencies ms, errors, seconds)."""
    parts = urlsplit(url)
    encoded = [json.dumps(body).encode() for body in bodies]
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    queue = list(reversed(range(len(encoded))))

    def post(connection: http.client.HTTPConnection, body: bytes) -> bool:
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status == 200

    def worker() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    n = queue.pop()
                began = time.perf_counter()
                try:
                    ok = post(connection, encoded[n])
                except (OSError, http.client.HTTPException):
                    ok = False
                    connection.close()
                    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    latencies.append(elapsed)
                    errors += not ok
        finally:
            connection.close()

    warm = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    for body in encoded[:50]:  # warm-up, not counted
        post(warm, body)
    warm.close()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def floor_ms(home: Path, histories: list[list[str]], reasons: bool, repeats: int = 300) -> float:
    """Median in-process time of the predictor's work for one request (scoring [+ reasons]),
    with one torch thread as the predictor runs."""
    import torch

    from shoprec.lifecycle.registry import Registry
    from shoprec.serving.predictor import answer
    from shoprec.serving.requests import Query

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    recommender = Registry(home / "registry").load()
    times = []
    for n in range(repeats):
        query = Query(tuple(histories[n % len(histories)]), 10, reasons=reasons)
        began = time.perf_counter()
        answer(recommender, [query])
        times.append((time.perf_counter() - began) * 1000)
    torch.set_num_threads(threads)
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
    from shoprec.sequences import build_sequences, build_vocab

    with contextlib.ExitStack() as stack:
        if args.demo:
            from shoprec.cli.demo import build_demo_home
            from shoprec.kserve.process import running_servers

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
        # The predictor alone: the request (history + k), and the one the transformer
        # sends it (the same plus reasons: one more scoring batch).
        item_bodies = [{"instances": [{"items": histories[i], "k": 10}]} for i in picks]
        reason_bodies = [{"instances": [{"items": histories[i], "k": 10, "reasons": True}]} for i in picks]
        floors = {True: floor_ms(home, histories, reasons=True), False: floor_ms(home, histories, reasons=False)}
        rows = []
        for target, url, bodies, floor in (
                ("transformer (user_id)", f"{transformer}/v1/models/shoprec:predict", user_bodies, floors[True]),
                ("predictor (items, k)", f"{predictor}/v1/models/shoprec:predict", item_bodies, floors[False]),
                ("predictor + reasons", f"{predictor}/v1/models/shoprec:predict", reason_bodies, floors[True])):
            for concurrency in (1, 16):
                latencies, errors, seconds = load(url, bodies, concurrency)
                rows.append((target, concurrency, percentile(latencies, 50), percentile(latencies, 95),
                             percentile(latencies, 99), len(bodies) / seconds, errors, floor))
        del pd
    print(f"\nin-process floor (predictor work per request, median, 1 thread): top-10 {floors[False]:.2f} ms, "
          f"top-10 + reasons {floors[True]:.2f} ms\n")
    print("| target | concurrency | p50 ms | p95 ms | p99 ms | req/s | errors | p50 / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for target, concurrency, p50, p95, p99, rps, errors, floor in rows:
        print(f"| {target} | {concurrency} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {rps:.0f} | {errors} | {p50 / floor:.1f}x |")


if __name__ == "__main__":
    main()
