"""Training-memory probe: train SASRec through `shoprec.training.loop.train` on synthetic
sequences and report the process's peak and per-epoch resident memory (and step times).

Run it in a fresh process (peak RSS is per process), e.g.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python tests/model/memory_probe.py \
        --items 50000 --events 300000 --max-len 200 --epochs 3 [--allocator keep]

It prints one JSON object. `tests/model/test_training_memory.py` runs it as a child process
and fails when the child's peak RSS (its VmHWM) passes a limit: the memory-regression check.
`run_probe_in_child` is that check as a function, for other slices.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_mb() -> float:
    """This process's own high-water resident memory (VmHWM). Not ru_maxrss: Linux carries a
    forked parent's size into the child's ru_maxrss across exec, so a probe started from a
    large pytest process would report the parent's memory, not its own."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # no /proc: KiB on Linux


def synthetic_sequences(n_items: int, n_events: int, mean_length: int, seed: int = 0) -> list:
    """Per-user item sequences (indices 1..n_items) with a learnable pattern: the next item is
    the previous one + 1 (mod the catalogue) with probability 0.6, else a Zipf-popular item."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    popularity = 1.0 / ranks
    popularity /= popularity.sum()
    shuffled = rng.permutation(n_items) + 1  # which item has which popularity rank
    sequences, total = [], 0
    while total < n_events:
        length = int(min(n_events - total, max(3, rng.poisson(mean_length))))
        noise = shuffled[rng.choice(n_items, size=length, p=popularity)]
        follow = rng.random(length) < 0.6
        seq = np.empty(length, dtype=np.int64)
        seq[0] = noise[0]
        for i in range(1, length):
            seq[i] = seq[i - 1] % n_items + 1 if follow[i] else noise[i]
        sequences.append(seq)
        total += length
    return sequences


def probe(
    items: int, events: int, max_len: int, batch: int = 128, epochs: int = 2, allocator: str = "default",
    loss: str = "auto", amp: str = "off", hidden: int = 64, mean_length: int = 0, valid_users: int = 256,
    threads: int = 2, max_steps: int = 0,
) -> dict[str, Any]:
    """Train and measure. allocator: "default" (glibc as it comes), "keep" (whatever the training
    loop's `tune_cpu_allocator` does now), "legacy" (its settings before the Scale issue) or
    "mallopt:<mmap threshold MiB>:<trim threshold MiB>".
    loss: "auto" (the model's catalogue-size switch), "full" or "sampled". max_steps > 0 cuts
    each epoch short (a slice) by truncating the training data."""
    import numpy as np
    import torch

    from shoprec.evaluation.splits import EvalSet
    from shoprec.models.sasrec import SASRec
    from shoprec.training import loop as loop_module
    from shoprec.training.loop import TrainConfig, train

    torch.set_num_threads(threads)
    started_rss = _rss_mb()
    if allocator in ("default", "legacy"):
        # As before the Scale issue: nothing handed back between epochs either.
        loop_module.release_freed_cpu_memory = lambda: False  # type: ignore[assignment]
    if allocator == "default":
        loop_module.tune_cpu_allocator = lambda: False  # type: ignore[assignment]
    elif allocator in ("legacy",) or allocator.startswith("mallopt:"):
        # legacy: the settings the loop used before the Scale issue (blocks up to 1 GiB from
        # the heap, never trimmed, 256 MiB top pad); mallopt:<mmap MiB>:<trim MiB>: those two.
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if allocator == "legacy":
            settings = {-3: 1 << 30, -1: 2**31 - 1, -2: 1 << 28}
        else:
            mmap_mib, trim_mib = (int(x) for x in allocator.split(":")[1:3])
            settings = {-3: mmap_mib << 20, -1: trim_mib << 20}
        loop_module.tune_cpu_allocator = (  # type: ignore[assignment]
            lambda: all(libc.mallopt(key, value) == 1 for key, value in settings.items()))
    elif allocator != "keep":
        raise ValueError(f"allocator must be default, keep, legacy or mallopt:<MiB>:<MiB>, not {allocator!r}")
    sequences = synthetic_sequences(items, events, mean_length or max(8, max_len), seed=0)
    train_seqs = [s[:-1] for s in sequences]
    chosen = np.random.default_rng(1).choice(len(sequences), size=min(valid_users, len(sequences)), replace=False)
    valid = EvalSet(np.arange(len(chosen)), [sequences[i][:-1] for i in chosen],
                    np.array([sequences[i][-1] for i in chosen], dtype=np.int64))
    kwargs: dict[str, Any] = {"max_len": max_len, "hidden": hidden, "blocks": 2, "heads": 1, "dropout": 0.2}
    if loss != "auto":
        kwargs["loss"] = loss
    model = SASRec(items, **kwargs)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_mb()))
            stop.wait(0.05)

    # Per-epoch peaks: the sampler's maximum between epoch boundaries (epoch ends are taken
    # from the loop's history after the fact).
    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    config = TrainConfig(max_epochs=epochs, batch_size=batch, learning_rate=1e-3, patience=epochs + 1,
                         progress=False, seed=0, amp=amp, device="cpu")
    if max_steps:
        from shoprec.training.batches import training_windows

        keep = max_steps * batch
        windows = training_windows(train_seqs, max_len, config.crops)
        if len(windows) > keep:
            # Fewer users, so that an epoch is about max_steps batches.
            share = keep / len(windows)
            train_seqs = train_seqs[: max(1, int(len(train_seqs) * share))]
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = train(model, train_seqs, valid, config, exclude_seen=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    sampler.join()
    boundaries, acc = [], t0
    for entry in result.history:
        acc += entry["seconds"]
        boundaries.append(acc)
    per_epoch, start = [], t0
    for end in boundaries:
        window = [rss for t, rss in samples if start <= t <= end]
        per_epoch.append({"max_rss_mb": round(max(window), 1) if window else None,
                          "end_rss_mb": round(window[-1], 1) if window else None})
        start = end
    return {
        "items": items, "events": events, "max_len": max_len, "batch": batch, "epochs": result.epochs,
        "allocator": allocator, "loss": getattr(model, "loss_kind", "full"), "amp": amp,
        "start_rss_mb": round(started_rss, 1), "peak_rss_mb": round(_peak_mb(), 1),
        "final_rss_mb": round(_rss_mb(), 1), "per_epoch": per_epoch,
        "train_seconds_per_epoch": round(result.seconds_per_epoch, 2),
        "epoch_seconds": [round(h["train_seconds"], 2) for h in result.history],
        "valid_ndcg": round(result.best_valid_ndcg, 4), "users": len(train_seqs),
        # CPU time is steadier than wall time on a shared machine; page faults and system time
        # are what an allocator that hands memory back costs (the kernel zeroes each new page).
        "train_cpu_user_s": round(after.ru_utime - before.ru_utime, 2),
        "train_cpu_sys_s": round(after.ru_stime - before.ru_stime, 2),
        "train_minor_faults": after.ru_minflt - before.ru_minflt,
    }


def run_probe_in_child(timeout: float = 600.0, **arguments: Any) -> dict[str, Any]:
    """`probe(**arguments)` in a fresh Python process; its JSON result plus "child_peak_rss_mb"
    (the child's own peak resident memory)."""
    command = [sys.executable, str(Path(__file__).resolve())]
    for name, value in arguments.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The child's own high-water mark (VmHWM, see _peak_mb): the parent's RUSAGE_CHILDREN
    # would include the parent's size at fork time.
    result["child_peak_rss_mb"] = result["peak_rss_mb"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--allocator", default="default")
    parser.add_argument("--loss", default="auto")
    parser.add_argument("--amp", default="off")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--mean-length", type=int, default=0)
    parser.add_argument("--valid-users", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(probe(**{k.replace("-", "_"): v for k, v in vars(args).items()})))


if __name__ == "__main__":
    main()
