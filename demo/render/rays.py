"""Camera rays for every pixel of the neural rendering (EG3D's ray sampler).

Pixel (row i, column j) of an R x R image sits at normalised image coordinates
u = j / R + 0.5 / R, v = i / R + 0.5 / R (row-major order, rows going down the image). With the
normalised intrinsics K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]] the camera-space direction is
the point at depth 1 that projects there; it is moved to world space by cam2world (OpenCV
convention, see ``demo.cameras``) and normalised. All rays start at the camera centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the centres of an R x R pixel grid.

    Args:
        cam2world: (B, 4, 4) camera-to-world matrices.
        intrinsics: (B, 3, 3) normalised intrinsics.
        resolution: R.
    Returns:
        origins (B, R*R, 3) and unit directions (B, R*R, 3), pixels in row-major order.
    """
    batch = cam2world.shape[0]
    device = cam2world.device
    steps = torch.arange(resolution, dtype=torch.float32, device=device) * (1.0 / resolution) + (0.5 / resolution)
    v, u = torch.meshgrid(steps, steps, indexing="ij")
    u = u.reshape(1, -1).expand(batch, -1)
    v = v.reshape(1, -1).expand(batch, -1)
    fx = intrinsics[:, 0, 0, None]
    fy = intrinsics[:, 1, 1, None]
    cx = intrinsics[:, 0, 2, None]
    cy = intrinsics[:, 1, 2, None]
    skew = intrinsics[:, 0, 1, None]
    x_cam = (u - cx + cy * skew / fy - skew * v / fy) / fx
    y_cam = (v - cy) / fy
    ones = torch.ones_like(x_cam)
    points_cam = torch.stack([x_cam, y_cam, ones, ones], dim=-1)  # (B, M, 4), homogeneous, depth 1
    points_world = torch.bmm(cam2world, points_cam.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    centres = cam2world[:, :3, 3]
    directions = F.normalize(points_world - centres[:, None, :], dim=2)
    origins = centres.unsqueeze(1).expand(-1, directions.shape[1], -1)
    return origins, directions


def box_intersection(origins: torch.Tensor, directions: torch.Tensor, box_side: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through the axis-aligned cube [-box_side/2, box_side/2]^3 (slab method).

    Returns (near, far), each (..., 1). Rays that miss get near = -1 and far = -2.
    """
    shape = origins.shape[:-1]
    o = origins.detach().reshape(-1, 3)
    inv = 1 / directions.detach().reshape(-1, 3)
    half = box_side / 2
    near_planes = torch.where(inv < 0, half, -half)
    t0 = (near_planes - o) * inv
    t1 = (-near_planes - o) * inv
    near = t0[:, 0]
    far = t1[:, 0]
    valid = torch.ones_like(near, dtype=torch.bool)
    for axis in (1, 2):
        valid &= ~((near > t1[:, axis]) | (t0[:, axis] > far))
        near = torch.maximum(near, t0[:, axis])
        far = torch.minimum(far, t1[:, axis])
    near = torch.where(valid, near, torch.full_like(near, -1.0))
    far = torch.where(valid, far, torch.full_like(far, -2.0))
    return near.reshape(*shape, 1), far.reshape(*shape, 1)
