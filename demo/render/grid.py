"""Regular grids of points in the tri-plane cube, for density volumes and meshes.

The official ``gen_samples.py`` convention: N points per side over the cube of side ``box_warp``
centred at the origin (corner -box_warp/2, spacing box_warp/(N-1)); x is the slowest index and z the
fastest, so ``points.reshape(N, N, N, 3)[i, j, k]`` is (x_i, y_j, z_k).

Quirk of the official grid: it derives the y and x indices with *float* division of the flat index
(index / N % N), not integer division, so y is shifted by k / N of a voxel and x by (j + k / N) / N
of a voxel, and the last points lie slightly outside the cube. ``official_quirk=True`` reproduces
that exactly (for parity with ``gen_samples.py`` volumes); the default is the regular grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from demo.render.planes import PLANE_AXES, sample_planes


class SeparableDecoder(Protocol):
    """What :func:`density_grid` needs from a tri-plane decoder whose first layer is linear."""

    def project(self, features: torch.Tensor) -> torch.Tensor: ...

    @property
    def hidden_bias(self) -> torch.Tensor: ...

    def sigma_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor: ...


def grid_points(
    resolution: int, box_warp: float, *, official_quirk: bool = False, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(N**3, 3) float32 grid points, x slowest and z fastest (see the module docstring for the quirk)."""
    if resolution < 2:
        raise ValueError(f"resolution: must be >= 2, got {resolution}")
    spacing = box_warp / (resolution - 1)
    if official_quirk:
        flat = torch.arange(resolution**3, device=device)
        z_index = (flat % resolution).to(torch.float32)
        y_index = (flat.to(torch.float32) / resolution) % resolution
        x_index = ((flat.to(torch.float32) / resolution) / resolution) % resolution
        indices = torch.stack([x_index, y_index, z_index], dim=-1)
        return indices * spacing + (-box_warp / 2)
    axis = torch.arange(resolution, dtype=torch.float32, device=device) * spacing - box_warp / 2
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1).reshape(-1, 3)


def official_border_pad(resolution: int) -> int:
    """Voxels forced empty on every face of ``gen_samples.py`` volumes: int(30 N / 256)."""
    return int(30 * resolution / 256)


def official_density_volume(sigma: torch.Tensor, resolution: int, *, empty_value: float = -1000.0) -> torch.Tensor:
    """Raw sigma on :func:`grid_points` -> the ``gen_samples.py`` volume: (x, y, z) grid flipped on x, border emptied."""
    volume = sigma.reshape(resolution, resolution, resolution).flip(0).clone()
    pad = official_border_pad(resolution)
    if pad > 0:
        volume[:pad] = empty_value
        volume[-pad:] = empty_value
        volume[:, :pad] = empty_value
        volume[:, -pad:] = empty_value
        volume[:, :, :pad] = empty_value
        volume[:, :, -pad:] = empty_value
    return volume


def density_grid(
    planes: torch.Tensor,
    decoder: SeparableDecoder,
    resolution: int,
    box_warp: float,
    *,
    max_slab_elements: int = 1 << 25,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Raw sigma on the regular :func:`grid_points` grid, (N, N, N) indexed (x, y, z), for one identity.

    On a regular grid each plane is sampled at only N x N distinct positions, and the decoder's
    first layer is linear, so ``W (f_xy + f_xz + f_zx) / 3 + b`` is the sum of three projected
    N x N maps broadcast over the third axis. That replaces N^3 x 3 bilinear lookups and an N^3 x 32
    x 64 matmul by three N^2 ones; only softplus and the 64-wide sigma row remain per point. The
    result equals ``decoder`` applied to ``sample_planes`` at the grid points up to float32 rounding.

    Args:
        planes: (1, 3, C, H, W) tri-planes of one identity.
        decoder: the tri-plane decoder (see :class:`SeparableDecoder`).
        max_slab_elements: bound on the hidden activations held at once (memory knob).
        progress: called with the fraction done.
    """
    if planes.shape[0] != 1:
        raise ValueError(f"planes: one identity at a time, got batch {planes.shape[0]}")
    n = resolution
    axis = torch.arange(n, dtype=torch.float32, device=planes.device) * (box_warp / (n - 1)) - box_warp / 2
    u, v = torch.meshgrid(axis, axis, indexing="ij")
    projected = []
    for index, (first, second) in enumerate(PLANE_AXES):
        points = torch.zeros(n * n, 3, device=planes.device)
        points[:, first] = u.reshape(-1)
        points[:, second] = v.reshape(-1)
        features = sample_planes(planes, points[None], box_warp)[0, index]  # (N*N, C), [first index, second index]
        projected.append(decoder.project(features.to(planes.dtype)).reshape(n, n, -1) / 3)
    xy, xz, zx = projected  # xy[i, j], xz[i, k], zx[k, i]
    xy = xy + decoder.hidden_bias.to(xy.dtype)
    xz_zx = xz + zx.transpose(0, 1)  # both depend on (i, k) only: one broadcast add per slab remains
    hidden = xy.shape[-1]
    slab = max(1, min(n, max_slab_elements // (n * n * hidden)))
    sigma = torch.empty(n, n, n, dtype=xy.dtype, device=planes.device)
    buffer = torch.empty(slab, n, n, hidden, dtype=xy.dtype, device=planes.device)
    for start in range(0, n, slab):
        stop = min(n, start + slab)
        pre = buffer[: stop - start]
        # Writing into a preallocated buffer is ~4x faster than allocating the broadcast sum.
        torch.add(xy[start:stop, :, None, :], xz_zx[start:stop, None, :, :], out=pre)
        sigma[start:stop] = decoder.sigma_from_hidden(pre)
        if progress is not None:
            progress(stop / n)
    return sigma
