"""The EG3D volume renderer: planes + decoder + rays -> composited features, depth and alpha.

Order of operations (EG3D section 3.2 / appendix): stratified depths along each ray, a coarse
pass of the decoder, compositing weights of the coarse samples, importance depths drawn from them,
a fine pass, then one composite over the merged, sorted coarse + fine samples. This module owns no
parameters: the decoder (an ``nn.Module`` from ``demo.networks``) is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from demo.config import MIN_DEPTH_SAMPLES_FOR_IMPORTANCE, RenderConfig
from demo.render.compositing import composite, composite_merged, ray_weights
from demo.render.planes import PlaneTable, sample_planes
from demo.render.rays import box_intersection
from demo.render.sampling import draw_sampling_noise, importance_depths, merge_samples, stratified_depths
from demo.rng import Rng, draw

#: decoder(features (B, 3, M, C)) -> (sigma (B, M, 1), rgb (B, M, F)). A decoder whose first step is
#: the average of the three planes (EG3D's and PanoHead's) may also offer ``decode_mean(features
#: (B, M, C))``: the fast renderer then gathers that average directly (``PlaneTable``).
Decoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: Rays per slice in the fast renderer on CPU: small enough that a slice's samples stay in the
#: caches and its temporaries are reused by the allocator (measured best of 256-4096 on 2 cores).
#: A GPU takes all rays at once (slices would only add kernel launches).
SLICE_RAYS = 1024


@dataclass(frozen=True)
class RayBundleResult:
    """Per-ray outputs of one render."""

    features: torch.Tensor
    """(B, M, F) composited decoder features, mapped to [-1, 1] (the first three are RGB)."""
    depth: torch.Tensor
    """(B, M, 1) expected distance along the unit ray direction."""
    alpha: torch.Tensor
    """(B, M, 1) accumulated ray weight (foreground opacity) in [0, 1]."""


def query_field(
    planes: torch.Tensor,
    decoder: Decoder,
    coordinates: torch.Tensor,
    options: RenderConfig,
    *,
    rng: Rng = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw density and features at points: (B, M, 3) -> sigma (B, M, 1), rgb (B, M, F)."""
    sigma, rgb = decoder(sample_planes(planes, coordinates, options.box_warp))
    if options.density_noise > 0:
        sigma = sigma + draw(sigma.shape, rng, device=sigma.device, dtype=sigma.dtype, normal=True) * options.density_noise
    return sigma, rgb


def render_rays(
    planes: torch.Tensor,
    decoder: Decoder,
    origins: torch.Tensor,
    directions: torch.Tensor,
    options: RenderConfig,
    *,
    depth_samples: int | None = None,
    importance_samples: int | None = None,
    density_crop: float | None = None,
    signed: bool = True,
    rng: Rng = None,
    per_sample_clamp: bool = False,
    fast: bool = True,
) -> RayBundleResult:
    """Volume-render rays through the tri-plane field.

    Args:
        planes: (B, 3, C, H, W).
        origins, directions: (B, M, 3); directions unit length.
        options: ray range, sample counts, box size, background.
        depth_samples, importance_samples: override the config's counts (e.g. denser video depth).
        density_crop: PanoHead's crop: samples with |x| or |z| beyond it get density -1000.
        signed: map composited features from [0, 1] to [-1, 1] (EG3D; PanoHead only for sigmoid decoders).
        rng: generator for the two random draws; None uses torch's default generator (official order).
        per_sample_clamp: take the depth clamp range (and, with box limits, the range given to rays
            that miss the box) from each batch item's own rays instead of the whole batch, so an
            item renders the same whatever else is in its batch. Off by default (official behaviour).
        fast: render slices of rays one after another with the fused plane lookup (same random
            draws, same result up to float32 rounding); False runs the plain path, which keeps the
            official code's order of operations over all rays at once (the reference in tests and
            benchmarks). Density noise (a training option) always takes the plain path.
    """
    num_coarse = options.depth_samples if depth_samples is None else depth_samples
    num_fine = options.importance_samples if importance_samples is None else importance_samples
    if num_coarse < 2 or num_fine < 0 or (num_fine > 0 and num_coarse < MIN_DEPTH_SAMPLES_FOR_IMPORTANCE):
        raise ValueError(
            f"depth_samples: got {num_coarse} with importance_samples {num_fine}; need >= 2, "
            f"and >= {MIN_DEPTH_SAMPLES_FOR_IMPORTANCE} when importance_samples > 0"
        )
    batch, num_rays, _ = origins.shape
    if options.uses_box_limits:
        ray_start, ray_end = box_intersection(origins, directions, options.box_warp)
        hit = ray_end > ray_start
        if per_sample_clamp:
            ray_start, ray_end = _fill_missed_rays_per_sample(ray_start, ray_end, hit)
        elif torch.any(hit).item():
            # Rays that miss the box get the range of the hits (the official code uses the largest
            # entry distance as their far bound).
            ray_start = torch.where(hit, ray_start, ray_start[hit].min())
            ray_end = torch.where(hit, ray_end, ray_start[hit].max())
    else:
        ray_start, ray_end = float(options.ray_start), float(options.ray_end)
    if fast and options.density_noise == 0:
        return _render_in_slices(
            planes, decoder, origins, directions, options, num_coarse, num_fine, ray_start, ray_end,
            density_crop=density_crop, signed=signed, rng=rng, per_sample_clamp=per_sample_clamp,
        )
    depths = stratified_depths(
        batch, num_rays, num_coarse, ray_start, ray_end,
        device=origins.device, disparity_space=options.disparity_space_sampling, rng=rng,
    )
    query = (lambda points: query_field(planes, decoder, points, options, rng=rng), origins, directions, density_crop)
    sigmas, colors = _field_along_rays(depths, *query)
    if num_fine > 0:
        _, _, weights = composite(colors, sigmas, depths, white_background=options.white_background, signed=signed)
        depths_fine = importance_depths(depths, weights, num_fine, rng=rng)
        sigmas_fine, colors_fine = _field_along_rays(depths_fine, *query)
        depths, colors, sigmas = merge_samples(depths, colors, sigmas, depths_fine, colors_fine, sigmas_fine)
    features, depth, weights = composite(
        colors, sigmas, depths, white_background=options.white_background, signed=signed, per_sample_clamp=per_sample_clamp
    )
    return RayBundleResult(features=features, depth=depth, alpha=weights.sum(2))


def _render_in_slices(
    planes, decoder, origins, directions, options, num_coarse, num_fine, ray_start, ray_end,
    *, density_crop, signed, rng, per_sample_clamp,
) -> RayBundleResult:
    """The fast path of :func:`render_rays`: the same steps, SLICE_RAYS rays at a time on CPU, the
    slices spread over single-threaded workers (one per intra-op thread).

    Both random draws are made up front with the plain path's shapes and order, so the samples are
    the same; every later step is per ray except the final depth clamp, which uses the range of all
    samples (of the batch, or of each item) and so runs once at the end.
    """
    batch, num_rays, _ = origins.shape
    device = origins.device
    jitter, uniform = draw_sampling_noise(batch, num_rays, num_coarse, num_fine, device=device, rng=rng)
    if uniform is not None:
        uniform = uniform.view(batch, num_rays, num_fine)
    if hasattr(decoder, "decode_mean"):
        table = PlaneTable(planes, options.box_warp)
        def field(points):
            return decoder.decode_mean(table.mean_features(points))
    else:
        def field(points):
            return decoder(sample_planes(planes, points, options.box_warp))
    per_ray_range = isinstance(ray_start, torch.Tensor)

    def render_slice(start: int) -> tuple[torch.Tensor, ...]:
        rays = slice(start, start + step)
        count = min(step, num_rays - start)
        query = (field, origins[:, rays], directions[:, rays], density_crop)
        depths = stratified_depths(
            batch, count, num_coarse,
            ray_start[:, rays] if per_ray_range else ray_start, ray_end[:, rays] if per_ray_range else ray_end,
            device=device, disparity_space=options.disparity_space_sampling, jitter=jitter[:, rays],
        )
        sigmas, colors = _field_along_rays(depths, *query)
        if num_fine > 0:
            weights = ray_weights(sigmas, depths)
            depths_fine = importance_depths(depths, weights, num_fine, uniform=uniform[:, rays].reshape(batch * count, num_fine))
            sigmas_fine, colors_fine = _field_along_rays(depths_fine, *query)
            part_features, part_depth, weights = composite_merged(
                (depths, sigmas, colors), (depths_fine, sigmas_fine, colors_fine),
                white_background=options.white_background, signed=signed,
            )
            depths = torch.cat([depths, depths_fine], dim=-2)
        else:
            part_features, part_depth, weights = composite(
                colors, sigmas, depths, white_background=options.white_background, signed=signed, clamp_depth=False
            )
        flat = depths.reshape(batch, -1)
        return part_features, part_depth, weights.sum(2), flat.amin(1), flat.amax(1)

    step = SLICE_RAYS if device.type == "cpu" else num_rays
    starts = range(0, num_rays, step)
    parts = _map_on_cpu_workers(render_slice, starts) if device.type == "cpu" else [render_slice(s) for s in starts]
    features, depth, alpha = (torch.cat([part[i] for part in parts], dim=1) for i in range(3))
    low = torch.stack([part[3] for part in parts]).amin(0)
    high = torch.stack([part[4] for part in parts]).amax(0)
    if per_sample_clamp:
        depth = torch.clamp(depth, low.view(-1, 1, 1), high.view(-1, 1, 1))
    else:
        depth = torch.clamp(depth, low.min(), high.max())
    return RayBundleResult(features=features, depth=depth, alpha=alpha)


def _map_on_cpu_workers(fn: Callable[[int], tuple[torch.Tensor, ...]], items) -> list[tuple[torch.Tensor, ...]]:
    """``[fn(i) for i in items]`` on as many worker threads as torch has intra-op threads, each single-threaded.

    A slice of rays is many small operations; run with 2+ intra-op threads each one ends in a barrier,
    and on a shared machine a preempted thread stalls every barrier. One slice per single-threaded
    worker needs no barriers (measured in benchmarks/run.py). Grad and inference modes are thread-local,
    so the caller's are set in each worker.
    """
    items = list(items)
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(item: int) -> tuple[torch.Tensor, ...]:
        torch.set_num_threads(1)  # this worker thread's own setting
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(item)

    with ThreadPoolExecutor(workers, thread_name_prefix="render") as pool:
        return list(pool.map(run, items))


def _field_along_rays(depths, field, origins, directions, density_crop):
    """Field values at the samples (B, M, S, 1) of the rays: sigma (B, M, S, 1), rgb (B, M, S, F)."""
    batch, num_rays, num_samples, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(batch, -1, 3)
    sigma, rgb = field(points)
    if density_crop is not None:
        outside = (points[..., 0].abs() > density_crop) | (points[..., 2].abs() > density_crop)
        sigma = sigma.masked_fill(outside.unsqueeze(-1), -1000.0)
    return sigma.reshape(batch, num_rays, num_samples, 1), rgb.reshape(batch, num_rays, num_samples, rgb.shape[-1])


def _fill_missed_rays_per_sample(ray_start: torch.Tensor, ray_end: torch.Tensor, hit: torch.Tensor):
    """The official fallback for rays that miss the box, computed per batch item: (B, M, 1) each."""
    inf = torch.full_like(ray_start, float("inf"))
    first = torch.where(hit, ray_start, inf).amin(dim=(1, 2), keepdim=True)
    last = torch.where(hit, ray_start, -inf).amax(dim=(1, 2), keepdim=True)
    keep = hit | ~hit.any(dim=1, keepdim=True)  # an item with no hit at all keeps its values, as alone
    return torch.where(keep, ray_start, first), torch.where(keep, ray_end, last)
