"""demo.render: invariants on hand-made tensors (no network weights).

Each test builds its inputs by hand (ramps, slabs, impulses, seeded generators) and checks a number
or an invariant that follows from EG3D's rendering semantics (docs/eg3d.md sections 3-4).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from demo.cameras import camera_from_angles
from demo.config import RenderConfig
from demo.render.compositing import composite
from demo.render.grid import grid_points, official_border_pad, official_density_volume
from demo.render.planes import sample_planes
from demo.render.rays import box_intersection, pixel_rays
from demo.render.renderer import render_rays
from demo.render.sampling import importance_depths, merge_samples, stratified_depths

FOCAL = 4.2647


pytestmark = pytest.mark.usefixtures("single_thread")


def frontal_camera(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    cam2world = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    cam2world[2, 3] = 2.7
    intrinsics = torch.tensor([[FOCAL, 0.0, 0.5], [0.0, FOCAL, 0.5], [0.0, 0.0, 1.0]])
    return cam2world.expand(batch, 4, 4).clone(), intrinsics.expand(batch, 3, 3).clone()


def linear_depths(batch: int, rays: int, samples: int, start: float = 1.0, end: float = 2.0) -> torch.Tensor:
    return torch.linspace(start, end, samples).reshape(1, 1, samples, 1).repeat(batch, rays, 1, 1)


# --- compositing ----------------------------------------------------------------------------------


def test_composite_empty_volume_is_black_or_white_background():
    depths = linear_depths(2, 3, 8)
    colors = torch.rand(2, 3, 8, 5)
    sigmas = torch.full((2, 3, 8, 1), -1e4)
    features, depth, weights = composite(colors, sigmas, depths)
    assert features.shape == (2, 3, 5) and depth.shape == (2, 3, 1) and weights.shape == (2, 3, 7, 1)
    assert torch.all(weights == 0)
    assert torch.all(features == -1.0)
    white, _, _ = composite(colors, sigmas, depths, white_background=True)
    assert torch.all(white == 1.0)
    # Zero weight -> 0/0 = NaN -> +inf -> clamped to the largest depth.
    assert torch.all(depth == 2.0)


def test_composite_opaque_slab_depth_at_first_slab_midpoint():
    samples, first = 10, 4
    depths = linear_depths(1, 2, samples, 2.0, 3.0)
    sigmas = torch.full((1, 2, samples, 1), -1e6)
    sigmas[:, :, first:] = 1e4
    colors = torch.arange(samples, dtype=torch.float32).reshape(1, 1, samples, 1).repeat(1, 2, 1, 3) / samples
    features, depth, weights = composite(colors, sigmas, depths)
    t = depths[0, 0, :, 0]
    expected_depth = (t[first] + t[first + 1]) / 2
    torch.testing.assert_close(depth, torch.full_like(depth, expected_depth.item()))
    torch.testing.assert_close(weights.sum(2), torch.ones(1, 2, 1))
    assert torch.all(weights[:, :, :first] == 0)
    # Behind an opaque interval the transmittance is the official 1e-10 epsilon, not 0.
    torch.testing.assert_close(weights[:, :, first + 1], torch.full((1, 2, 1), 1e-10), rtol=1e-3, atol=0)
    # The colour is the midpoint colour of the first opaque interval, then mapped to [-1, 1].
    expected_color = (colors[0, 0, first] + colors[0, 0, first + 1]) / 2 * 2 - 1
    torch.testing.assert_close(features, expected_color.expand(1, 2, 3))


def test_composite_hand_computed_weights():
    # Two intervals of length 0.5 and 1.0; midpoint sigmas 1 + log(e - 1) -> softplus(. - 1) = 1, and 1 + log(e^2 - 1) -> 2.
    s1 = 1 + math.log(math.e - 1)
    s2 = 1 + math.log(math.e**2 - 1)
    # sigma_mid_0 = (a + b) / 2 = s1, sigma_mid_1 = (b + c) / 2 = s2 with b = s1.
    sigmas = torch.tensor([s1, s1, 2 * s2 - s1]).reshape(1, 1, 3, 1)
    depths = torch.tensor([1.0, 1.5, 2.5]).reshape(1, 1, 3, 1)
    colors = torch.tensor([0.0, 1.0, 0.5]).reshape(1, 1, 3, 1)
    features, depth, weights = composite(colors, sigmas, depths)
    a0 = 1 - math.exp(-1 * 0.5)
    a1 = 1 - math.exp(-2 * 1.0)
    w0 = a0
    w1 = a1 * (1 - a0 + 1e-10)
    torch.testing.assert_close(weights.flatten(), torch.tensor([w0, w1]))
    rgb = w0 * 0.5 + w1 * 0.75
    torch.testing.assert_close(features.flatten(), torch.tensor([rgb * 2 - 1]))
    torch.testing.assert_close(depth.flatten(), torch.tensor([(w0 * 1.25 + w1 * 2.0) / (w0 + w1)]))
    white, _, _ = composite(colors, sigmas, depths, white_background=True)
    torch.testing.assert_close(white.flatten(), torch.tensor([(rgb + 1 - w0 - w1) * 2 - 1]))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_composite_weights_are_a_partition_of_at_most_one(seed):
    gen = torch.Generator().manual_seed(seed)
    depths = torch.sort(torch.rand(3, 17, 12, 1, generator=gen) * 4 + 1, dim=2).values
    sigmas = torch.randn(3, 17, 12, 1, generator=gen) * 10
    colors = torch.rand(3, 17, 12, 4, generator=gen)
    features, depth, weights = composite(colors, sigmas, depths)
    total = weights.sum(2)
    assert torch.all(weights >= 0)
    assert torch.all(total <= 1 + 1e-6)
    # Colours in [0, 1] -> features in [-1, 1]; depth inside the sampled range.
    assert torch.all(features >= -1 - 1e-6) and torch.all(features <= 1 + 1e-6)
    assert torch.all(depth >= depths.min()) and torch.all(depth <= depths.max())
    # Sum of weights = 1 - transmittance after the last interval (telescoping product).
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    density = torch.nn.functional.softplus((sigmas[:, :, 1:] + sigmas[:, :, :-1]) / 2 - 1)
    transmittance = torch.exp(-(density * deltas).sum(2))
    torch.testing.assert_close(total, 1 - transmittance, atol=1e-5, rtol=0)


def test_composite_nan_depth_clamped_to_batch_max():
    # Ray 0 (batch 0) is empty over [2, 3]; ray 1 (batch 1) has density over [1, 5].
    depths = torch.stack([torch.linspace(2, 3, 6), torch.linspace(1, 5, 6)]).reshape(2, 1, 6, 1)
    sigmas = torch.stack([torch.full((6,), -1e4), torch.full((6,), 2.0)]).reshape(2, 1, 6, 1)
    colors = torch.zeros(2, 1, 6, 3)
    _, depth, weights = composite(colors, sigmas, depths)
    assert depth[0, 0, 0].item() == 5.0  # max over the whole tensor, not the ray's own 3.0
    mids = (depths[1, 0, 1:] + depths[1, 0, :-1]) / 2
    w = weights[1, 0]
    torch.testing.assert_close(depth[1, 0], (w * mids).sum(0) / w.sum())
    # The same empty ray alone is clamped to its own maximum: the clamp is batch-global.
    _, alone, _ = composite(colors[:1], sigmas[:1], depths[:1])
    assert alone.item() == 3.0


# --- rays -----------------------------------------------------------------------------------------


def test_pixel_rays_frontal_camera():
    resolution = 4
    cam2world, intrinsics = frontal_camera()
    origins, directions = pixel_rays(cam2world, intrinsics, resolution)
    assert origins.shape == (1, 16, 3) and directions.shape == (1, 16, 3)
    torch.testing.assert_close(origins, torch.tensor([0.0, 0.0, 2.7]).expand(1, 16, 3))
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(1, 16))
    grid = directions[0].reshape(resolution, resolution, 3)  # [row, col]
    # Centre pixels of an even grid: mirror images in x (columns) and y (rows) about -z.
    left, right = grid[1, 1], grid[1, 2]
    torch.testing.assert_close(left * torch.tensor([-1.0, 1.0, 1.0]), right)
    top, bottom = grid[1, 1], grid[2, 1]
    torch.testing.assert_close(top * torch.tensor([1.0, -1.0, 1.0]), bottom)
    centre = grid[1:3, 1:3].reshape(4, 3).mean(0)
    torch.testing.assert_close(centre / centre.norm(), torch.tensor([0.0, 0.0, -1.0]))
    # Pixel (row 0, col 0) is the image top-left: world x < 0 and y > 0 (y up), looking along -z.
    d00 = directions[0, 0]
    assert d00[0] < 0 and d00[1] > 0 and d00[2] < 0
    # Exact values: camera-space (u - 0.5, v - 0.5, f) / f, flipped in y and z by cam2world.
    steps = (torch.arange(resolution) + 0.5) / resolution
    v, u = torch.meshgrid(steps, steps, indexing="ij")
    expected = torch.stack([(u - 0.5) / FOCAL, -(v - 0.5) / FOCAL, -torch.ones_like(u)], -1).reshape(-1, 3)
    torch.testing.assert_close(directions[0], expected / expected.norm(dim=-1, keepdim=True))


def test_pixel_rays_row_major_order():
    resolution = 5
    cam2world, intrinsics = frontal_camera()
    _, directions = pixel_rays(cam2world, intrinsics, resolution)
    d = directions[0] / -directions[0, :, 2:]  # on the image plane z = -1 (normalisation mixes x and y)
    for row in range(resolution):
        for col in range(resolution):
            index = row * resolution + col
            if col + 1 < resolution:  # next column: same height, further right (+x)
                torch.testing.assert_close(d[index + 1, 1], d[index, 1])
                assert d[index + 1, 0] > d[index, 0]
            if row + 1 < resolution:  # next row: same x, lower (-y)
                torch.testing.assert_close(d[index + resolution, 0], d[index, 0])
                assert d[index + resolution, 1] < d[index, 1]


def test_pixel_rays_reproject_to_pixel_centres_with_skew_and_rotation():
    resolution = 6
    camera = camera_from_angles(yaw=torch.tensor([0.3, -0.5]), pitch=torch.tensor([-0.2, 0.1]), focal=2.0)
    intrinsics = camera.intrinsics.clone()
    intrinsics[:, 0, 1] = torch.tensor([0.1, -0.3])  # skew
    intrinsics[:, 0, 2] = torch.tensor([0.45, 0.55])
    intrinsics[:, 1, 1] = torch.tensor([2.5, 1.5])
    origins, directions = pixel_rays(camera.cam2world, intrinsics, resolution)
    torch.testing.assert_close(origins, camera.position[:, None].expand(-1, resolution**2, -1))
    rotation = camera.cam2world[:, :3, :3]
    d_cam = torch.einsum("bji,bmj->bmi", rotation, directions)  # R^T d
    assert torch.all(d_cam[..., 2] > 0)  # in front of the camera
    projected = torch.einsum("bij,bmj->bmi", intrinsics, d_cam / d_cam[..., 2:])
    steps = (torch.arange(resolution) + 0.5) / resolution
    v, u = torch.meshgrid(steps, steps, indexing="ij")
    expected = torch.stack([u.flatten(), v.flatten()], -1).expand(2, -1, -1)
    torch.testing.assert_close(projected[..., :2], expected, atol=1e-5, rtol=0)


def test_box_intersection_axis_rays_and_miss():
    origins = torch.tensor(
        [
            [0.0, 0.0, 2.7],  # along -z from the front
            [-3.0, 0.1, 0.2],  # along +x from the left
            [0.0, -2.0, 0.0],  # along +y from below
            [0.0, 0.0, 0.0],  # from the centre along +x
            [2.0, 0.0, 2.7],  # along -z, beside the box: miss
        ]
    )
    directions = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    near, far = box_intersection(origins, directions, 1.0)
    assert near.shape == (5, 1) and far.shape == (5, 1)
    torch.testing.assert_close(near.flatten(), torch.tensor([2.2, 2.5, 1.5, -0.5, -1.0]))
    torch.testing.assert_close(far.flatten(), torch.tensor([3.2, 3.5, 2.5, 0.5, -2.0]))
    # Box side scales the distances; leading dims are kept.
    near2, far2 = box_intersection(origins[:1].reshape(1, 1, 3), directions[:1].reshape(1, 1, 3), 1.6)
    assert near2.shape == (1, 1, 1)
    torch.testing.assert_close(near2.flatten(), torch.tensor([1.9]))
    torch.testing.assert_close(far2.flatten(), torch.tensor([3.5]))


def test_box_intersection_diagonal_ray():
    direction = torch.tensor([[1.0, 1.0, 1.0]]) / math.sqrt(3)
    near, far = box_intersection(torch.tensor([[-1.0, -1.0, -1.0]]), direction, 1.0)
    torch.testing.assert_close(near.flatten(), torch.tensor([0.5 * math.sqrt(3)]))
    torch.testing.assert_close(far.flatten(), torch.tensor([1.5 * math.sqrt(3)]))


# --- tri-plane lookup -----------------------------------------------------------------------------


def ramp_planes(batch: int = 1, height: int = 6, width: int = 10) -> torch.Tensor:
    """Channel 0 of every plane = its grid_sample x coordinate (width), channel 1 = y (height)."""
    xs = (2 * torch.arange(width) + 1) / width - 1  # pixel centres, align_corners=False
    ys = (2 * torch.arange(height) + 1) / height - 1
    planes = torch.zeros(batch, 3, 2, height, width)
    planes[:, :, 0] = xs.reshape(1, width)
    planes[:, :, 1] = ys.reshape(height, 1)
    return planes


@pytest.mark.parametrize("box_warp", [1.0, 1.6, 2.0])
def test_sample_planes_axes_and_box_warp(box_warp):
    planes = ramp_planes(batch=2)
    gen = torch.Generator().manual_seed(0)
    # Stay where both bilinear ramps are exact: |g| <= 1 - 1/size for the smaller side (6).
    points = (torch.rand(2, 50, 3, generator=gen) * 2 - 1) * 0.8 * box_warp / 2
    features = sample_planes(planes, points, box_warp)
    assert features.shape == (2, 3, 50, 2)
    g = points * 2 / box_warp
    x, y, z = g[..., 0], g[..., 1], g[..., 2]
    expected = torch.stack(
        [torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([z, x], -1)], dim=1
    )  # plane 0 (x, y), plane 1 (x, z), plane 2 (z, x): the official quirk, not (y, z)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_sample_planes_box_warp_scales_coordinates():
    planes = ramp_planes()
    points = torch.tensor([[[0.2, -0.1, 0.3]]])
    torch.testing.assert_close(sample_planes(planes, points, 2.0), sample_planes(planes, points / 2, 1.0))
    torch.testing.assert_close(
        sample_planes(planes, points, 2.0), sample_planes(planes, points, 1.0) / 2, atol=1e-6, rtol=0
    )


def test_sample_planes_outside_box_is_zero():
    box_warp = 1.0
    planes = ramp_planes() + 1.0  # strictly positive inside so zeros can only come from padding
    points = torch.tensor(
        [
            [
                [1.0, 1.0, 1.0],  # outside on all axes
                [0.1, 0.8, -0.2],  # outside in y only
                [-0.9, 0.0, 0.0],  # outside in x only
                [0.0, 0.0, 0.6],  # just outside in z (beyond half a pixel)
            ]
        ]
    )
    features = sample_planes(planes, points, box_warp)
    assert torch.all(features[0, :, 0] == 0)
    # y outside: plane 0 (x, y) is empty, planes 1 (x, z) and 2 (z, x) are not.
    assert torch.all(features[0, 0, 1] == 0)
    assert torch.all(features[0, 1:, 1] > 0)
    # x outside: every plane reads x.
    assert torch.all(features[0, :, 2] == 0)
    # z outside: planes 1 and 2 read z, plane 0 does not.
    assert torch.all(features[0, 1:, 3] == 0)
    assert torch.all(features[0, 0, 3] > 0)


# --- stratified sampling --------------------------------------------------------------------------


def test_stratified_depths_formula_range_order_and_draw_count():
    batch, rays, samples, start, end = 2, 7, 6, 2.25, 3.3
    rng = torch.Generator().manual_seed(3)
    depths = stratified_depths(batch, rays, samples, start, end, rng=rng)
    assert depths.shape == (batch, rays, samples, 1)
    reference_rng = torch.Generator().manual_seed(3)
    uniform = torch.rand(batch, rays, samples, 1, generator=reference_rng)
    delta = (end - start) / (samples - 1)
    expected = torch.linspace(start, end, samples).reshape(1, 1, samples, 1) + uniform * delta
    torch.testing.assert_close(depths, expected, atol=1e-6, rtol=0)
    # Exactly B*M*D uniforms consumed: the generator states now agree.
    assert torch.equal(rng.get_state(), reference_rng.get_state())
    assert torch.all(depths >= start) and torch.all(depths <= end + delta)
    assert depths[..., -1, 0].max() > end  # the jitter can pass ray_end (official behaviour)
    assert torch.all(depths[:, :, 1:] - depths[:, :, :-1] >= -1e-6)


def test_stratified_depths_default_generator_matches_manual_seed():
    torch.manual_seed(11)
    from_default = stratified_depths(1, 4, 5, 1.0, 2.0)
    from_rng = stratified_depths(1, 4, 5, 1.0, 2.0, rng=torch.Generator().manual_seed(11))
    torch.testing.assert_close(from_default, from_rng)


def test_stratified_depths_tensor_limits_equal_float_limits():
    batch, rays, samples = 2, 5, 8
    start = torch.full((batch, rays, 1), 2.25)
    end = torch.full((batch, rays, 1), 3.3)
    from_tensors = stratified_depths(batch, rays, samples, start, end, rng=torch.Generator().manual_seed(5))
    from_floats = stratified_depths(batch, rays, samples, 2.25, 3.3, rng=torch.Generator().manual_seed(5))
    torch.testing.assert_close(from_tensors, from_floats, atol=1e-6, rtol=0)


def test_stratified_depths_per_ray_tensor_limits():
    start = torch.tensor([[[1.0], [2.0]]])
    end = torch.tensor([[[2.0], [5.0]]])
    depths = stratified_depths(1, 2, 4, start, end, rng=torch.Generator().manual_seed(0))
    uniform = torch.rand(1, 2, 4, 1, generator=torch.Generator().manual_seed(0))
    base = torch.tensor([[1.0, 4 / 3, 5 / 3, 2.0], [2.0, 3.0, 4.0, 5.0]]).reshape(1, 2, 4, 1)
    delta = torch.tensor([1 / 3, 1.0]).reshape(1, 2, 1, 1)
    torch.testing.assert_close(depths, base + uniform * delta)


def test_stratified_depths_disparity_space():
    start, end, samples = 2.0, 4.0, 6
    depths = stratified_depths(3, 4, samples, start, end, disparity_space=True, rng=torch.Generator().manual_seed(1))
    uniform = torch.rand(3, 4, samples, 1, generator=torch.Generator().manual_seed(1))
    s = torch.linspace(0, 1, samples).reshape(1, 1, samples, 1) + uniform / (samples - 1)
    torch.testing.assert_close(depths, 1 / ((1 - s) / start + s / end))
    assert torch.all(depths >= start)
    assert torch.all(depths[:, :, :-1] <= end + 1e-5)  # only the last jittered sample may pass ray_end
    delta = 1 / (samples - 1)
    assert torch.all(depths[:, :, -1] <= 1 / (-delta / start + (1 + delta) / end) + 1e-5)
    assert torch.all(depths[:, :, 1:] >= depths[:, :, :-1])


# --- importance sampling --------------------------------------------------------------------------


def _reference_inverse_cdf(depths: np.ndarray, weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """NumPy transcription of EG3D's sample_importance for one ray (docs/eg3d.md section 4, step 5)."""
    w = np.concatenate([[-np.inf], weights, [-np.inf]])
    w = np.maximum(w[:-1], w[1:])  # max-pool kernel 2, stride 1, padding 1
    w = (w[:-1] + w[1:]) / 2 + 0.01  # avg-pool kernel 2, stride 1
    w = w[1:-1] + 1e-5
    pdf = w / w.sum()
    cdf = np.concatenate([[0.0], np.cumsum(pdf)])
    mids = (depths[:-1] + depths[1:]) / 2
    return np.interp(u, cdf, mids[: len(cdf)])


def test_importance_depths_follow_weight_spike_and_inverse_cdf():
    batch, rays, coarse, fine, spike = 1, 3, 12, 4000, 6
    depths = torch.arange(coarse, dtype=torch.float32).reshape(1, 1, coarse, 1).repeat(batch, rays, 1, 1)
    weights = torch.zeros(batch, rays, coarse - 1, 1)
    weights[:, :, spike] = 1.0
    rng = torch.Generator().manual_seed(0)
    samples = importance_depths(depths, weights, fine, rng=rng)
    assert samples.shape == (batch, rays, fine, 1)
    reference_rng = torch.Generator().manual_seed(0)
    u = torch.rand(batch * rays, fine, generator=reference_rng)
    assert torch.equal(rng.get_state(), reference_rng.get_state())  # exactly B*M*N uniforms
    for ray in range(rays):
        expected = _reference_inverse_cdf(depths[0, ray, :, 0].numpy(), weights[0, ray, :, 0].numpy(), u[ray].numpy())
        np.testing.assert_allclose(samples[0, ray, :, 0].numpy(), expected, atol=1e-4)
    # Most samples land around the spiked interval [t_6, t_7] (smoothing spreads it by one interval).
    near = (samples >= spike - 1.5) & (samples <= spike + 1.5)
    assert near.float().mean() > 0.9
    inside = (samples >= 0.5) & (samples <= coarse - 2.5)  # within the interior midpoints
    assert torch.all(inside)


def test_importance_depths_uniform_weights_cover_the_interior():
    depths = torch.linspace(2.0, 3.0, 9).reshape(1, 1, 9, 1).repeat(2, 2, 1, 1)
    weights = torch.full((2, 2, 8, 1), 0.1)
    samples = importance_depths(depths, weights, 2000, rng=torch.Generator().manual_seed(2))
    mids = (depths[0, 0, 1:, 0] + depths[0, 0, :-1, 0]) / 2
    assert torch.all(samples >= mids[0]) and torch.all(samples <= mids[-2])
    # Uniform pdf over [mids[0], mids[-2]] -> mean at its centre.
    assert abs(samples.mean().item() - (mids[0] + mids[-2]).item() / 2) < 0.01


# --- merging --------------------------------------------------------------------------------------


def test_merge_samples_sorted_and_attributes_follow_depths():
    gen = torch.Generator().manual_seed(0)
    depths_a = torch.sort(torch.rand(2, 3, 5, 1, generator=gen), dim=2).values
    depths_b = torch.rand(2, 3, 4, 1, generator=gen)  # unsorted, like fine samples

    def attributes(d):
        return torch.cat([d * 10, d * -3 + 1], dim=-1), torch.sin(d * 7)

    colors_a, sigmas_a = attributes(depths_a)
    colors_b, sigmas_b = attributes(depths_b)
    depths, colors, sigmas = merge_samples(depths_a, colors_a, sigmas_a, depths_b, colors_b, sigmas_b)
    assert depths.shape == (2, 3, 9, 1) and colors.shape == (2, 3, 9, 2) and sigmas.shape == (2, 3, 9, 1)
    assert torch.all(depths[:, :, 1:] >= depths[:, :, :-1])
    expected_colors, expected_sigmas = attributes(depths)
    torch.testing.assert_close(colors, expected_colors)
    torch.testing.assert_close(sigmas, expected_sigmas)
    # The merged set is a permutation of the inputs.
    torch.testing.assert_close(depths, torch.sort(torch.cat([depths_a, depths_b], 2), dim=2).values)


# --- the renderer on an analytic field ------------------------------------------------------------


def _slab_decoder(features: torch.Tensor):
    """A field read from ramp planes: opaque (colour 0.25) where world z < 0, empty elsewhere."""
    z = features[:, 1, :, 1]  # plane 1 is (x, z): its height channel holds z * 2 / box_warp
    inside_box = features[:, 0, :, 0] != 0  # zero padding outside the box
    sigma = torch.where((z < 0) & inside_box, 1e3, -1e5).unsqueeze(-1)
    rgb = torch.full((*sigma.shape[:2], 4), 0.25)
    return sigma, rgb


@pytest.mark.parametrize("limits", [(2.25, 3.3), ("auto", "auto")])
def test_render_rays_depth_of_an_opaque_half_space(limits):
    planes = ramp_planes(height=16, width=16)
    planes[:, :, 0] += 2.0  # keep channel 0 non-zero inside so the decoder can tell the box apart
    options = RenderConfig(depth_samples=24, importance_samples=24, ray_start=limits[0], ray_end=limits[1])
    cam2world, intrinsics = frontal_camera()
    origins, directions = pixel_rays(cam2world, intrinsics, 4)
    result = render_rays(planes, _slab_decoder, origins, directions, options, rng=torch.Generator().manual_seed(0))
    assert result.features.shape == (1, 16, 4) and result.depth.shape == (1, 16, 1) and result.alpha.shape == (1, 16, 1)
    expected_depth = 2.7 / directions[..., 2:].abs()  # the ray reaches z = 0
    torch.testing.assert_close(result.depth, expected_depth, atol=0.03, rtol=0)
    torch.testing.assert_close(result.alpha, torch.ones(1, 16, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(result.features, torch.full((1, 16, 4), -0.5), atol=1e-3, rtol=0)


def test_render_rays_rng_is_deterministic_and_matches_default_generator():
    planes = ramp_planes(height=8, width=8)
    planes[:, :, 0] += 2.0
    options = RenderConfig(depth_samples=6, importance_samples=5)
    cam2world, intrinsics = frontal_camera()
    origins, directions = pixel_rays(cam2world, intrinsics, 3)
    a = render_rays(planes, _slab_decoder, origins, directions, options, rng=torch.Generator().manual_seed(4))
    torch.manual_seed(4)
    b = render_rays(planes, _slab_decoder, origins, directions, options)
    torch.testing.assert_close(a.depth, b.depth, rtol=0, atol=0)
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)


# --- grids ----------------------------------------------------------------------------------------


def test_grid_points_regular():
    n, box_warp = 5, 1.6
    points = grid_points(n, box_warp)
    assert points.shape == (n**3, 3) and points.dtype == torch.float32
    axis = torch.linspace(-0.8, 0.8, n)
    torch.testing.assert_close(points[0], torch.full((3,), -0.8))
    torch.testing.assert_close(points[-1], torch.full((3,), 0.8))
    cube = points.reshape(n, n, n, 3)
    i, j, k = 1, 3, 2
    torch.testing.assert_close(cube[i, j, k], torch.stack([axis[i], axis[j], axis[k]]))
    # x slowest, z fastest.
    torch.testing.assert_close(points[1], torch.stack([axis[0], axis[0], axis[1]]))
    torch.testing.assert_close(points[n], torch.stack([axis[0], axis[1], axis[0]]))
    torch.testing.assert_close(points[n * n], torch.stack([axis[1], axis[0], axis[0]]))
    with pytest.raises(ValueError, match="resolution"):
        grid_points(1, 1.0)


def test_grid_points_official_quirk():
    n, box_warp = 6, 1.0
    spacing = box_warp / (n - 1)
    regular = grid_points(n, box_warp)
    quirk = grid_points(n, box_warp, official_quirk=True)
    assert quirk.shape == regular.shape
    torch.testing.assert_close(quirk[0], regular[0])
    difference = quirk - regular
    assert torch.all(difference >= -1e-6) and torch.all(difference < spacing)
    torch.testing.assert_close(difference[:, 2], torch.zeros(n**3))  # z exact
    assert difference.abs().max() > 0.1 * spacing  # the quirk is real, not a no-op
    # Exact formula: y index j + k / N, x index i + (j + k / N) / N (float division of the flat index).
    idx = torch.arange(n)
    i, j, k = torch.meshgrid(idx, idx, idx, indexing="ij")
    i, j, k = (t.reshape(-1).double() for t in (i, j, k))
    expected = torch.stack([i + (j + k / n) / n, j + k / n, k], -1) * spacing - box_warp / 2
    torch.testing.assert_close(quirk.double(), expected, atol=1e-5, rtol=0)


def test_official_density_volume_flip_and_border():
    n = 32
    pad = official_border_pad(n)
    assert pad == int(30 * n / 256) == 3
    sigma = torch.arange(n**3, dtype=torch.float32)
    original = sigma.clone()
    volume = official_density_volume(sigma, n)
    assert volume.shape == (n, n, n)
    assert torch.equal(sigma, original)  # input untouched
    flipped = original.reshape(n, n, n).flip(0)
    inner = (slice(pad, n - pad),) * 3
    assert torch.equal(volume[inner], flipped[inner])
    assert (
        volume[pad, pad, pad].item()
        == flipped[pad, pad, pad].item()
        == original.reshape(n, n, n)[n - 1 - pad, pad, pad].item()
    )
    mask = torch.ones(n, n, n, dtype=torch.bool)
    mask[inner] = False
    assert torch.all(volume[mask] == -1000.0)
    assert int((volume != -1000).sum()) == (n - 2 * pad) ** 3
    custom = official_density_volume(sigma, n, empty_value=0.0)
    assert torch.all(custom[mask] == 0.0)


def test_official_density_volume_small_grid_is_only_flipped():
    n = 8  # int(30 * 8 / 256) == 0: no border
    sigma = torch.randn(n**3)
    assert official_border_pad(n) == 0
    assert torch.equal(official_density_volume(sigma, n), sigma.reshape(n, n, n).flip(0))


def test_alpha_uses_correctly_rounded_exp():
    """Near-transparent depth depends on exp's last bit; ours must not depend on the CPU's MKL kernel."""
    from demo.render.compositing import composite

    x = torch.logspace(-9, -2, 4096, dtype=torch.float64).to(torch.float32)
    depths = torch.stack([torch.zeros_like(x), torch.ones_like(x)], dim=-1).reshape(1, -1, 2, 1)
    # softplus(s - 1) == x  <=>  s = 1 + log(expm1(x)); build sigmas so both samples have that density.
    sigma = (1 + torch.log(torch.expm1(x.double()))).to(torch.float32).reshape(1, -1, 1, 1).expand(-1, -1, 2, -1)
    _, _, weights = composite(torch.zeros(1, x.numel(), 2, 3), sigma.contiguous(), depths)
    density = torch.nn.functional.softplus(sigma[:, :, :1] - 1)
    expected = 1 - torch.exp(-(density * 1.0).double()).to(torch.float32)
    assert torch.equal(weights, expected)
