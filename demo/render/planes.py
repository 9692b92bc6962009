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


# --- fast lookup ----------------------------------------------------------------------------------
#
# grid_sample reads each of the 32 channels of a texel from a different place in memory (the planes
# are channel-first) and the decoder then averages the three planes in another pass. The fast path
# stores the planes once as a channel-last table with a border of zero texels and gathers the
# 4 (tri-grid: 8) corners of all three planes of a point in one fused weighted sum
# (``embedding_bag``), already divided by 3: the plane average the decoder reads. The source index
# and bilinear weights follow grid_sample's own arithmetic (align_corners=False, zero padding), so
# the result equals ``sample_planes(...).mean(1)`` up to the order of the float32 additions.

#: texels of zero padding before (and, plus one, after) each axis of the lookup table
_PAD = 1


class PlaneTable:
    """Tri-planes (or tri-grids) laid out for :func:`sample_planes_mean`: build once per render."""

    def __init__(self, planes: torch.Tensor, box_warp: float) -> None:
        if planes.ndim not in (5, 6):
            raise ValueError(f"planes: expected (B, 3, C, H, W) or (B, 3, C, D, H, W), got shape {tuple(planes.shape)}")
        batch, num_planes, channels = planes.shape[:3]
        spatial = planes.shape[3:]  # (H, W) or (D, H, W)
        padded = tuple(size + 2 * _PAD + 1 for size in spatial)
        table = planes.new_zeros(batch, num_planes, *padded, channels)
        interior = table[(slice(None), slice(None), *[slice(_PAD, _PAD + size) for size in spatial])]
        interior.copy_(planes.permute(0, 1, *range(3, 3 + len(spatial)), 2))
        self.table = table.view(-1, channels)  # (B*3*prod(padded), C), channel-last
        self.batch, self.channels, self.box_warp = batch, channels, box_warp
        self.axes = PLANE_AXES if len(spatial) == 2 else TRIGRID_AXES
        # Per lookup axis (grid_sample's x, y[, z] = width, height[, depth]): size and table stride.
        sizes = tuple(reversed(spatial))
        strides, step = [], 1
        for size in reversed(padded):
            strides.append(step)
            step *= size
        plane_size = step
        device = planes.device
        k = len(sizes)
        self.sizes = torch.tensor(sizes, dtype=planes.dtype, device=device).view(1, k, 1)
        self.half_sizes = self.sizes / 2
        # int32 rows halve the index traffic; a table past 2^31 rows (never in practice) needs int64.
        self.index_dtype = torch.int32 if batch * num_planes * plane_size < 2**31 else torch.int64
        self.strides = torch.tensor(strides, dtype=self.index_dtype, device=device).view(1, k, 1)
        # Offsets of the 2^k corners: corner j takes the upper neighbour on axis a when bit a of j
        # is set, so axis 0 (width) varies fastest -- the order the weights are built in.
        bits = torch.tensor([[(j >> a) & 1 for a in range(k)] for j in range(1 << k)], device=device)
        self.corner_offsets = (bits * self.strides.view(1, k)).sum(1).view(-1, 1)  # (2^k, 1)
        # First row of each (item, plane) table, plus the padding offset: (3, B).
        base = torch.arange(batch * num_planes, device=device) * plane_size + _PAD * int(self.strides.sum())
        self.bases = base.view(batch, num_planes).t().to(self.index_dtype).contiguous()
        self.flat_axes = torch.tensor([axis for plane in self.axes for axis in plane], device=device)

    def mean_features(self, coordinates: torch.Tensor) -> torch.Tensor:
        """The plane-averaged features at world points: (B, M, 3) -> (B, M, C)."""
        batch, num_points, _ = coordinates.shape
        num_planes, k = len(self.axes), len(self.axes[0])
        count = batch * num_points
        # Work axis-major ((axis, point) rows): every elementwise op then runs over long rows.
        points = coordinates.to(self.table.dtype).reshape(count, 3).t() * (2 / self.box_warp)
        grid = points.index_select(0, self.flat_axes).view(num_planes, k, count)
        # grid_sample's unnormalisation (align_corners=False); clamping only moves points that
        # read nothing but zero padding, keeping them inside the padded table.
        source = ((grid + 1) * self.half_sizes - 0.5).clamp_(min=-1.0)
        source = torch.minimum(source, self.sizes)
        lower = source.floor()
        frac = source - lower
        # Row of the lower corner in the table, per plane: (3, count), item and plane bases added.
        row = (lower.to(self.index_dtype) * self.strides).sum(1, dtype=self.index_dtype)
        row += self.bases.repeat_interleave(num_points, dim=1)
        corners = 1 << k
        index = torch.empty(count, num_planes, corners, dtype=self.index_dtype, device=row.device)
        torch.add(row.unsqueeze(1), self.corner_offsets, out=index.permute(1, 2, 0))
        # Bilinear (trilinear) weights: product over axes of (1 - f, f), the first also divided by 3.
        pair = torch.stack([1 - frac, frac], dim=2)  # (3, k, 2, count)
        weights = pair[:, 0] * (1 / num_planes)
        for axis in range(1, k):
            weights = (pair[:, axis].unsqueeze(2) * weights.unsqueeze(1)).flatten(1, 2)
        per_point = torch.empty(count, num_planes, corners, dtype=weights.dtype, device=weights.device)
        per_point.permute(1, 2, 0).copy_(weights)
        features = weighted_row_sum(self.table, index.view(count, -1), per_point.view(count, -1))
        return features.view(batch, num_points, self.channels)


def weighted_row_sum(table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """out[n] = sum_j weights[n, j] * table[index[n, j]]: (R, C), (N, K), (N, K) -> (N, C).

    ``embedding_bag`` in sum mode; differentiable, with the table's gradient scattered one corner
    column at a time (``index_add_``): torch's own embedding_bag backward sorts every index first,
    about twice as slow on CPU.
    """
    if torch.is_grad_enabled() and (table.requires_grad or weights.requires_grad):
        return _WeightedRowSum.apply(table, index, weights)
    return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")


class _WeightedRowSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table if ctx.needs_input_grad[2] else None, index, weights)
        ctx.table_shape = table.shape
        return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, torch.Tensor | None]:
        table, index, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_table = grad.new_zeros(ctx.table_shape)
            for column in range(index.shape[1]):  # int64 indices: index_add_ is several times slower with int32
                grad_table.index_add_(0, index[:, column].long(), grad * weights[:, column : column + 1])
        if ctx.needs_input_grad[2]:
            grad_weights = (table[index.long()] * grad.unsqueeze(1)).sum(-1)
        return grad_table, None, grad_weights
