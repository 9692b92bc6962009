"""Choosing a torch device, and the torchrun process group of multi-GPU runs (layer 1, torch only)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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
