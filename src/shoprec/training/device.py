"""Device, precision and thread choices, made once at an entry point."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def choose_device(requested: str | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16(device: torch.device, amp: str = "auto") -> bool:
    """Whether to train under bf16 autocast: amp="auto" means on CUDA (when supported);
    "bf16" forces it (also on CPUs with AMX/AVX512-BF16, ~19% faster here); "off" never."""
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    if amp != "auto":
        raise ValueError(f"amp must be 'auto', 'bf16' or 'off', not {amp!r}")
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on `device` when enabled, else nothing."""
    if enabled:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (all devices) from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_cpu_threads(threads: int | None = None) -> int:
    """Use `threads` (default: $SHOPREC_THREADS, else all cores) intra-op threads.

    OMP_WAIT_POLICY=PASSIVE must be in the environment before torch starts: with spinning
    OpenMP threads, one run on the shared 2-core machine slowed 3-15x. Entry points set it."""
    chosen = threads or int(os.environ.get("SHOPREC_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(chosen)
    return chosen


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_allocator_tuned = False


def keep_freed_cpu_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    Each CPU training step allocates and frees tens of [rows, items] matrices of 1-30 MB;
    by default glibc maps each one afresh (mmap above 128 KB-32 MB) and the kernel zeroes
    every page on first touch: about a sixth of a step on the 2-core machine (ML-1M,
    measured 272 -> 238 ms). The cost is that the process keeps its peak memory until it
    exits, which suits a training process. A no-op (False) where the C library is not glibc.
    Idempotent; call it at a training entry point, not at import."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    # Blocks up to 1 GiB come from the heap (a glibc that caps the threshold at 32 MiB gets
    # that), freed memory is never trimmed, and the heap grows 256 MiB at a time.
    mapped = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 or mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    kept = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    padded = mallopt(_M_TOP_PAD, 1 << 28) == 1
    _allocator_tuned = mapped and kept and padded
    return _allocator_tuned
