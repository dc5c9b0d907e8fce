"""Device, precision and allocator choices made at training entry points."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from shoprec.training.device import choose_device, use_bf16


def test_device_and_precision_choices():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cpu = torch.device("cpu")
    assert use_bf16(cpu, "auto") is False  # auto: bf16 only on CUDA
    assert use_bf16(cpu, "bf16") is True and use_bf16(cpu, "off") is False
    with pytest.raises(ValueError, match="amp must be 'auto', 'bf16' or 'off', not 'fp8'"):
        use_bf16(cpu, "fp8")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_kept_for_reuse_within_a_bound_and_released_on_request():
    # In a fresh process, after tune_cpu_allocator: a freed 64 MB block stays in the process
    # for the next step (glibc's default unmaps it at once); a freed block above
    # REUSED_BLOCK_BYTES goes back at once (no unbounded keeping); release_freed_cpu_memory
    # hands the kept memory back.
    script = """
import torch
from shoprec.training.device import REUSED_BLOCK_BYTES, release_freed_cpu_memory, tune_cpu_allocator

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

def after_free(mb):
    block = torch.ones(mb * 2**18)  # mb MB, touched
    del block
    return resident_mb()

base = resident_mb()
default = after_free(64) - base
assert tune_cpu_allocator() is True and tune_cpu_allocator() is True
base = resident_mb()
kept = after_free(64) - base
large = after_free(REUSED_BLOCK_BYTES // 2**20 + 64) - base
assert release_freed_cpu_memory() is True
released = resident_mb() - base
print(f"{default:.0f} {kept:.0f} {large:.0f} {released:.0f}")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    default, kept, large, released = (float(x) for x in out)
    assert default < 16  # glibc's default: the 64 MB went back to the OS
    assert kept > 48  # now it stays for the next step's matrices
    assert large < kept + 16  # a block above the bound is not kept
    assert released < 16  # and the epoch's end hands everything back
