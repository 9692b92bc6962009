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

import torch


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
