"""Choosing a torch device, and the torchrun process group of multi-GPU runs (layer 1, torch only)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from demo.errors import InputError, ResourceError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA if available, else CPU; 'cpu', 'cuda', 'cuda:1' as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ResourceError(f"Unknown device {name!r}; use 'auto', 'cpu' or 'cuda'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError("CUDA was requested but no CUDA GPU is available here; use --device cpu.")
    return device


#: where Linux describes the CPU
CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_field(name: str) -> str:
    """The first CPU's ``name`` line in /proc/cpuinfo (e.g. ``vendor_id``, ``flags``); '' when absent."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def cpu_is_intel() -> bool:
    """True on Intel CPUs, where MKL's vectorised math (torch's CPU ``exp`` and ``log``) takes its fast
    code; on other vendors MKL runs a generic path (measured on an AMD EPYC: ``exp`` twice as slow as
    the ``exp`` inside ``sigmoid``)."""
    return cpu_field("vendor_id") == "GenuineIntel"


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_cpu_memory() -> bool:
    """Let the process reuse freed memory for large CPU tensors instead of returning it to the system.

    glibc serves each allocation above 32 MB with a fresh ``mmap`` and unmaps it on free, so every
    large intermediate tensor (a 512x512x128 float32 feature map is 134 MB) is page-faulted in
    again, zero-filled by the kernel, on every frame: measured on 2 cores, about a quarter of the
    full-size CPU frame with the Winograd convolutions (2.06 s -> 1.52 s). Serving them from the heap and never trimming it
    keeps freed pages for the next frame; the process's resident memory then stays at its peak.
    Process-wide and idempotent; returns False where the C library has no ``mallopt`` (not glibc),
    leaving the default.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def torchrun_device(name: str, local_rank: int) -> str:
    """The device of one torchrun process: ``cuda:<local_rank>`` for 'auto'/'cuda' when CUDA exists, else ``name``."""
    if name in ("auto", "cuda") and (name == "cuda" or torch.cuda.is_available()):
        return f"cuda:{local_rank}"
    return "cpu" if name == "auto" else name


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world, local_rank) when launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK set), else None."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    if not all(name in os.environ for name in names):
        return None
    try:
        rank, world, local_rank = (int(os.environ[name]) for name in names)
    except ValueError:
        raise InputError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun).") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"torchrun's RANK {rank} and WORLD_SIZE {world} do not fit: need 0 <= RANK < WORLD_SIZE.")
    return rank, world, local_rank


@contextlib.contextmanager
def process_group(world: int, device: torch.device | str) -> Iterator[None]:
    """Join the torchrun process group for a sharded run (gloo on CPU, nccl on CUDA); no-op for one process.

    Reads the rendezvous from torchrun's environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE).
    """
    import torch.distributed as dist

    if world <= 1 or not dist.is_available() or dist.is_initialized():
        yield
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()
