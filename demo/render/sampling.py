"""Where to evaluate the radiance field along each ray: stratified, then importance sampling.

Stratified (coarse) samples: D evenly spaced depths from ray_start to ray_end, each jittered
forward by U[0, 1) x (ray_end - ray_start) / (D - 1), so the last sample can pass ray_end. With
disparity-space sampling the same jitter is applied in [0, 1] and mapped to inverse depth.

Importance (fine) samples follow the coarse weights, smoothed as in Mip-NeRF (max-pool then
avg-pool over neighbours, plus 0.01), by inverse-transform sampling of the piecewise-constant pdf
over the coarse midpoints. Coarse and fine samples are then merged and sorted by depth.

Random numbers: exactly two draws per render -- ``rand`` of shape (B, M, D, 1) for the jitter,
then ``rand`` of shape (B*M, D_imp) for the inverse CDF -- from ``rng`` or, when it is None, torch's
default generator of the device. That is the official order and shape, so
``torch.manual_seed(s)`` before a render reproduces the official draws on the same device. ``rng``
may also be one generator per batch item (see ``demo.rng``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from demo.rng import Rng, draw


def _uniform(shape: tuple[int, ...], like: torch.Tensor, rng: Rng) -> torch.Tensor:
    return draw(shape, rng, device=like.device, dtype=like.dtype)


def draw_sampling_noise(
    batch: int, num_rays: int, num_coarse: int, num_fine: int, *, device: torch.device | str, rng: Rng = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Both draws of a render at once, in the official order and shapes: the jitter (B, M, D, 1)
    for :func:`stratified_depths` and, when ``num_fine`` > 0, the (B*M, num_fine) uniforms for
    :func:`importance_depths`. For renderers that process the rays in slices."""
    like = torch.empty(0, device=device)
    jitter = _uniform((batch, num_rays, num_coarse, 1), like, rng)
    uniform = _uniform((batch * num_rays, num_fine), like, rng) if num_fine > 0 else None
    return jitter, uniform


def stratified_depths(
    batch: int,
    num_rays: int,
    num_samples: int,
    ray_start: float | torch.Tensor,
    ray_end: float | torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    disparity_space: bool = False,
    rng: Rng = None,
    jitter: torch.Tensor | None = None,
) -> torch.Tensor:
    """Jittered depths (B, M, D, 1). ``ray_start``/``ray_end`` are floats or (B, M, 1) tensors.

    ``jitter``: the (B, M, D, 1) uniform draw to use instead of drawing it from ``rng`` (a renderer
    that works on slices of rays draws once for all of them, in the official order).
    """
    if jitter is None:
        jitter = _uniform((batch, num_rays, num_samples, 1), torch.empty(0, device=device), rng)
    if disparity_space:
        depths = torch.linspace(0, 1, num_samples, device=device).reshape(1, 1, num_samples, 1).repeat(batch, num_rays, 1, 1)
        depths = depths + jitter * (1.0 / (num_samples - 1))
        if isinstance(ray_start, torch.Tensor):
            # Per-ray limits (B, M, 1) broadcast over samples; the official code mis-broadcasts here.
            ray_start, ray_end = ray_start.unsqueeze(2), ray_end.unsqueeze(2)
        return 1.0 / (1.0 / ray_start * (1.0 - depths) + 1.0 / ray_end * depths)
    if isinstance(ray_start, torch.Tensor):
        steps = torch.arange(num_samples, dtype=torch.float32, device=device) / (num_samples - 1)
        depths = ray_start.unsqueeze(2) + steps.reshape(1, 1, -1, 1) * (ray_end - ray_start).unsqueeze(2)
        delta = ((ray_end - ray_start) / (num_samples - 1)).unsqueeze(2)
        return depths + jitter * delta
    depths = torch.linspace(ray_start, ray_end, num_samples, device=device)
    depths = depths.reshape(1, 1, num_samples, 1).repeat(batch, num_rays, 1, 1)
    delta = (ray_end - ray_start) / (num_samples - 1)
    return depths + jitter * delta


def importance_depths(
    depths: torch.Tensor, weights: torch.Tensor, num_samples: int, *, rng: Rng = None, uniform: torch.Tensor | None = None
) -> torch.Tensor:
    """Draw ``num_samples`` new depths per ray from the coarse weights.

    Args:
        depths: (B, M, D, 1) coarse depths.
        weights: (B, M, D - 1, 1) compositing weights of the coarse intervals.
        uniform: the (B*M, num_samples) draw to use instead of drawing it from ``rng``.
    Returns:
        (B, M, num_samples, 1), unsorted.
    """
    batch, num_rays, num_coarse, _ = depths.shape
    with torch.no_grad():
        z = depths.reshape(batch * num_rays, num_coarse)
        w = weights.reshape(batch * num_rays, 1, -1).float()
        w = F.max_pool1d(w, 2, 1, padding=1)
        w = F.avg_pool1d(w, 2, 1).squeeze(1) + 0.01
        midpoints = 0.5 * (z[:, :-1] + z[:, 1:])
        if uniform is None:
            uniform = _uniform((batch * num_rays, num_samples), z, rng)
        samples = _sample_pdf(midpoints, w[:, 1:-1], uniform.contiguous())
    return samples.reshape(batch, num_rays, num_samples, 1)


def _sample_pdf(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-transform sampling of a piecewise-constant pdf at uniform draws u (N, S).

    bins (N, K+1 or more), weights (N, K).
    """
    num_rays, num_bins = weights.shape
    num_samples = u.shape[1]
    weights = weights + eps
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    index = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(index - 1, 0)
    above = torch.clamp_max(index, num_bins)
    pairs = torch.stack([below, above], -1).view(num_rays, 2 * num_samples)
    cdf_pairs = torch.gather(cdf, 1, pairs).view(num_rays, num_samples, 2)
    bin_pairs = torch.gather(bins, 1, pairs).view(num_rays, num_samples, 2)
    denom = cdf_pairs[..., 1] - cdf_pairs[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bin_pairs[..., 0] + (u - cdf_pairs[..., 0]) / denom * (bin_pairs[..., 1] - bin_pairs[..., 0])


def merge_samples(
    depths_a: torch.Tensor, colors_a: torch.Tensor, sigmas_a: torch.Tensor,
    depths_b: torch.Tensor, colors_b: torch.Tensor, sigmas_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate two sample sets along the sample axis (dim 2) and sort them by depth."""
    depths = torch.cat([depths_a, depths_b], dim=-2)
    colors = torch.cat([colors_a, colors_b], dim=-2)
    sigmas = torch.cat([sigmas_a, sigmas_b], dim=-2)
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    sigmas = torch.gather(sigmas, -2, order)
    return depths, colors, sigmas
