"""Random draws from an optional generator, or one generator per batch item (layer 1, torch only).

Every random number the generator uses goes through :func:`draw`:

- ``rng=None``: torch's default generator of the target device, drawing the whole shape at once --
  the official order, so ``torch.manual_seed(s)`` before a call reproduces the official result;
- one ``torch.Generator``: the same draw from that generator;
- a sequence of generators, one per batch item: the first dimension is split into equal parts and
  each part is drawn from its own generator, so a seed renders the same whether it is alone or in a
  batch (the draws are row-major over batch first, like the single-generator case).

A generator on another device than the target draws there and the numbers are moved, so a CPU
generator gives the same numbers to a CUDA render.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Rng = torch.Generator | Sequence[torch.Generator] | None


def draw(
    shape: tuple[int, ...] | torch.Size,
    rng: Rng,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    normal: bool = False,
) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) numbers of ``shape`` on ``device``."""
    shape = tuple(shape)
    if rng is None or isinstance(rng, torch.Generator):
        return _draw_one(shape, rng, device, dtype, normal)
    generators = list(rng)
    if not generators or shape[0] % len(generators) != 0:
        raise ValueError(f"rng: {len(generators)} generators cannot split a draw of shape {shape}")
    part = (shape[0] // len(generators), *shape[1:])
    return torch.cat([_draw_one(part, g, device, dtype, normal) for g in generators], dim=0)


def _draw_one(shape, generator, device, dtype, normal) -> torch.Tensor:
    fn = torch.randn if normal else torch.rand
    if generator is None:
        return fn(shape, device=device, dtype=dtype)
    values = fn(shape, generator=generator, device=generator.device, dtype=dtype)
    return values.to(device)


def batch_size_of(rng: Rng) -> int | None:
    """Number of per-item generators, or None for a single/default generator."""
    if rng is None or isinstance(rng, torch.Generator):
        return None
    return len(list(rng))
