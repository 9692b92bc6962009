"""Tri-plane feature lookup (EG3D section 3.2).

A point is projected onto three axis-aligned planes and the bilinearly interpolated features are
averaged by the decoder. The official layout is kept exactly, including its quirk: plane 0 is
indexed by (x, y), plane 1 by (x, z) and plane 2 by (z, x) -- not (y, z). The first coordinate is
the plane's width axis (grid_sample's x), the second its height axis. Coordinates are scaled by
2 / box_warp so the cube of side box_warp maps to [-1, 1]; points outside get zero features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: For each plane, the world axes read as (width, height).
PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (2, 0))
#: PanoHead's tri-grid: for each plane, the world axes read as (width, height, depth slice).
TRIGRID_AXES: tuple[tuple[int, int, int], ...] = ((0, 1, 2), (0, 2, 1), (1, 2, 0))


def sample_planes(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Look up features of points in the tri-planes (or PanoHead tri-grids).

    Args:
        planes: (B, 3, C, H, W) plane features, or (B, 3, C, D, H, W) tri-grid features.
        coordinates: (B, M, 3) world points.
        box_warp: side of the cube the planes span.
    Returns:
        (B, 3, M, C) features per plane (zeros outside the cube), same dtype as ``planes``.
    """
    if planes.ndim == 6:
        return sample_trigrid(planes, coordinates, box_warp)
    batch, num_planes, channels, height, width = planes.shape
    points = (2 / box_warp) * coordinates
    grids = torch.stack([points[..., list(axes)] for axes in PLANE_AXES], dim=1)  # (B, 3, M, 2)
    grids = grids.reshape(batch * num_planes, 1, -1, 2).to(planes.dtype)
    features = F.grid_sample(
        planes.reshape(batch * num_planes, channels, height, width),
        grids,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B*3, C, 1, M)
    return features.permute(0, 3, 2, 1).reshape(batch, num_planes, -1, channels)


def sample_trigrid(grids: torch.Tensor, coordinates: torch.Tensor, box_warp: float) -> torch.Tensor:
    """PanoHead's tri-grid lookup: each plane is a thin volume of D slices, sampled trilinearly.

    Plane 0 reads (x, y, z) as (width, height, depth), plane 1 (x, z, y), plane 2 (y, z, x). Zero
    padding applies on the depth axis too, so even D = 1 fades features away from the plane.

    Args:
        grids: (B, 3, C, D, H, W).
        coordinates: (B, M, 3) world points.
    Returns:
        (B, 3, M, C).
    """
    batch, num_planes, channels, depth, height, width = grids.shape
    points = (2 / box_warp) * coordinates
    lookup = torch.stack([points[..., list(axes)] for axes in TRIGRID_AXES], dim=1)  # (B, 3, M, 3)
    lookup = lookup.reshape(batch * num_planes, 1, 1, -1, 3).to(grids.dtype)
    features = F.grid_sample(
        grids.reshape(batch * num_planes, channels, depth, height, width),
        lookup,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B*3, C, 1, 1, M)
    return features.reshape(batch, num_planes, channels, -1).permute(0, 1, 3, 2)
