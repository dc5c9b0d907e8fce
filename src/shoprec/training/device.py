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
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Blocks up to this size come from malloc's heap, so a freed one is reused by the next step
# instead of being mapped afresh (and zeroed page by page by the kernel on first touch): above
# the output layer's per-step chunks (at most models.sasrec.CHUNK_BYTES = 128 MiB). Larger
# blocks are mapped and unmapped as by default; the largest per-step matrix, the kept softmax
# (up to 512 MiB), has its own reused buffer (models.sasrec.KeptSoftmax).
REUSED_BLOCK_BYTES = 192 << 20
# At most this much free memory stays at the top of the heap between steps (glibc's default
# hands it back once 128 KiB-64 MiB are free, to be re-faulted by the next step). 256 MiB
# still re-faulted a 20,000-item step's matrices (system time 15 s of 90); 512 MiB: 6 s.
KEPT_FREE_BYTES = 512 << 20
_allocator_tuned = False


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt / malloc_trim), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def tune_cpu_allocator() -> bool:
    """Let glibc's malloc reuse the training step's freed matrices, within a fixed bound.

    Each CPU training step allocates and frees tens of [rows, items] matrices of 1-128 MB; by
    default glibc maps the ones above its adaptive mmap threshold (at most 32 MiB) afresh and
    the kernel zeroes every page on first touch. Here blocks up to `REUSED_BLOCK_BYTES` come
    from the heap and up to `KEPT_FREE_BYTES` of free heap stay for the next step; the
    training loop hands the rest back after every epoch (`release_freed_cpu_memory`), so
    memory does not grow with epochs. (The first version kept every freed block up to 1 GiB
    and never trimmed: faster, but its resident memory grew epoch after epoch and with the
    catalogue: see benchmarks/RESULTS.md, "Training memory".)
    A no-op (False) where the C library is not glibc. Idempotent; call it at a training
    entry point, not at import."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    libc = _glibc()
    if libc is None:
        return False
    mapped = libc.mallopt(_M_MMAP_THRESHOLD, REUSED_BLOCK_BYTES) == 1 or \
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1  # a glibc that caps it at 32 MiB
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES) == 1
    _allocator_tuned = mapped and trimmed
    return _allocator_tuned


def release_freed_cpu_memory() -> bool:
    """Return the heap's free memory to the OS now (glibc's malloc_trim(0), which also
    releases free pages in the middle of the heap): the training loop calls it after each
    epoch. False where the C library is not glibc."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True
