"""Volume rendering by alpha compositing (Mip-NeRF style midpoint quadrature, as in EG3D).

For consecutive samples k, k+1 along a ray with depths t, densities sigma and features c:

    delta_k = t_{k+1} - t_k,   sigma'_k = softplus((sigma_k + sigma_{k+1}) / 2 - 1)
    alpha_k = 1 - exp(-sigma'_k * delta_k)
    T_k     = prod_{j<k} (1 - alpha_j + 1e-10)
    w_k     = alpha_k * T_k
    C       = sum_k w_k * (c_k + c_{k+1}) / 2          (+ (1 - sum_k w_k) on a white background)
    depth   = sum_k w_k * (t_k + t_{k+1}) / 2 / sum_k w_k

C is then mapped from [0, 1] to [-1, 1] (C * 2 - 1). depth is the expected distance along the unit
ray direction (not camera z); rays with no weight (NaN) become +inf and every depth is clamped to
[min t, max t] taken over the whole batch, as the official renderer does. That couples the items
of a batch (a ray with no weight gets the batch's largest depth); ``per_sample_clamp=True`` takes
min t and max t over each batch item's own samples instead, so an item's depth does not depend on
what else is in its batch (datasets use it; rendered alone, both give the same result).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _exp(x: torch.Tensor) -> torch.Tensor:
    """exp, correctly rounded on CPU.

    On nearly transparent rays alpha = 1 - exp(-x) is a few float32 ulps, so the depth there
    depends on how exp rounds. torch's CPU exp goes through MKL, whose float32 rounding changes with
    the CPU's instruction set (AVX-512 kernels differ from AVX2 ones by ~4e-4 in those depths).
    Computing it in float64 and rounding once gives the same result on every CPU, equal to the
    official code run on AVX2 machines. CUDA's expf does not depend on the GPU model.
    """
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return torch.exp(x.double()).to(x.dtype)
    return torch.exp(x)


def ray_weights(sigmas: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """The compositing weights (B, M, S - 1, 1) of the intervals between samples (see the module docstring)."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    density = F.softplus((sigmas[:, :, :-1] + sigmas[:, :, 1:]) / 2 - 1)
    return _weights(1 - _exp(-density * deltas))


def _weights(alpha: torch.Tensor) -> torch.Tensor:
    """w_k = alpha_k * prod_{j<k} (1 - alpha_j + 1e-10)."""
    shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    return alpha * torch.cumprod(shifted, -2)[:, :, :-1]


def composite(
    colors: torch.Tensor,
    sigmas: torch.Tensor,
    depths: torch.Tensor,
    *,
    white_background: bool = False,
    signed: bool = True,
    per_sample_clamp: bool = False,
    clamp_depth: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite samples along rays.

    Args:
        colors: (B, M, S, C) features per sample.
        sigmas: (B, M, S, 1) raw densities (before softplus(x - 1)).
        depths: (B, M, S, 1) sorted sample depths.
        signed: map the features from [0, 1] to [-1, 1] (EG3D); PanoHead keeps raw decoder features.
        per_sample_clamp: clamp each batch item's depth to its own sample range, not the batch's.
        clamp_depth: False leaves the depth unclamped (rays with no weight at +inf), for a caller
            that composites slices of rays and clamps to the range of all of them at the end.
    Returns:
        features (B, M, C) in [-1, 1] (roughly), depth (B, M, 1), weights (B, M, S - 1, 1).
    """
    weights = ray_weights(sigmas, depths)
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    features = torch.sum(weights * colors_mid, -2)
    total = weights.sum(2)
    depth = torch.sum(weights * depths_mid, -2) / total
    depth = torch.nan_to_num(depth, float("inf"))
    if clamp_depth and per_sample_clamp:
        flat = depths.flatten(1)
        depth = torch.clamp(depth, flat.amin(1).view(-1, 1, 1), flat.amax(1).view(-1, 1, 1))
    elif clamp_depth:
        depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if white_background:
        features = features + 1 - total
    return (features * 2 - 1 if signed else features), depth, weights


def composite_merged(
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    second: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    white_background: bool = False,
    signed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`composite` of two sample sets merged and sorted by depth, without reordering colours.

    ``first`` and ``second`` are (depths (B, M, S_i, 1), sigmas (B, M, S_i, 1), colors (B, M, S_i, C)),
    as ``merge_samples`` takes them. Only depths and densities are sorted; since
    sum_k w_k (c_k + c_{k+1}) / 2 = sum_k c_k (w_{k-1} + w_k) / 2, each sample's colour is weighted
    by half of the two intervals it bounds, mapped back to where the sample came from. The colours,
    the largest arrays of a render, are never copied. Returns unclamped depth, like
    ``composite(..., clamp_depth=False)``.
    """
    depths, order = torch.sort(torch.cat([first[0], second[0]], dim=-2), dim=-2)
    sigmas = torch.gather(torch.cat([first[1], second[1]], dim=-2), -2, order)
    weights = ray_weights(sigmas, depths)
    total = weights.sum(2)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    depth = torch.nan_to_num(torch.sum(weights * depths_mid, -2) / total, float("inf"))
    share = (F.pad(weights, (0, 0, 1, 0)) + F.pad(weights, (0, 0, 0, 1))) / 2  # (B, M, S, 1), sorted order
    share = torch.empty_like(share).scatter_(-2, order, share)
    count = first[2].shape[-2]
    features = share[:, :, :count].transpose(-1, -2) @ first[2] + share[:, :, count:].transpose(-1, -2) @ second[2]
    features = features.squeeze(-2)
    if white_background:
        features = features + 1 - total
    return (features * 2 - 1 if signed else features), depth, weights
