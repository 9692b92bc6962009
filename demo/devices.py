"""Choosing a torch device (layer 1, torch only)."""

from __future__ import annotations

import torch

from demo.errors import ResourceError


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
