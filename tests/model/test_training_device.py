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
def test_freed_memory_is_kept_for_reuse_under_glibc():
    # In a fresh process: after the call, a freed 64 MB block stays in the process (its
    # resident size does not drop back), where by default glibc unmaps it at once.
    script = """
import torch
from shoprec.training.device import keep_freed_cpu_memory

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

def after_free():
    block = torch.ones(16 * 2**20)  # 64 MB, touched
    del block
    return resident_mb()

base = resident_mb()
default = after_free() - base
assert keep_freed_cpu_memory() is True and keep_freed_cpu_memory() is True
base = resident_mb()
kept = after_free() - base
print(f"{default:.0f} {kept:.0f}")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    default, kept = float(out[0]), float(out[1])
    assert default < 16  # glibc's default: the 64 MB went back to the OS
    assert kept > 48  # now it stays for the next step's matrices
