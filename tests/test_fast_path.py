"""The fast path (``fast=True``, the default) against the plain PyTorch reference (``fast=False``).

Each fast piece is compared with the plain code it replaces, on small random inputs chosen to reach
its edge cases (gsplat's ``_torch_impl`` tests): the fused plane lookup with grid_sample, the
colour-free merge with merge + composite, the sliced renderer with the all-rays renderer, the
in-place decoder with its ``forward``, the channels-last convolutions with the grouped ones, and
whole tiny generators, values and gradients. The paths differ only in the order of float32
additions, so tolerances are a few ulps of the values compared.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from demo.cameras import camera_from_angles
from demo.config import RenderConfig
from demo.networks.eg3d import TriplaneDecoder
from demo.networks.layers import (
    SynthesisLayer,
    ToRGBLayer,
    binomial_filter,
    modulated_conv2d,
    modulated_conv2d_fast,
    to_memory_format,
    upsample_2x,
    upsample_2x_fast,
    winograd_available,
    winograd_conv3x3,
)
from demo.render import renderer
from demo.render.compositing import composite, composite_merged
from demo.render.planes import PlaneTable, sample_planes
from demo.render.rays import pixel_rays
from demo.render.renderer import RayBundleResult, render_rays
from demo.render.sampling import merge_samples
from demo.weights.store import build_tiny_generator
from tests.test_networks import labels, latents

pytestmark = pytest.mark.usefixtures("single_thread")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, msg: str = "") -> None:
    """Close relative to the largest entry of ``expected`` (gradients mix large and tiny entries)."""
    assert expected.abs().max() > 0, f"{msg}: a zero reference proves nothing"
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * float(expected.abs().max()), msg=msg or None)


# --- fused plane lookup ---------------------------------------------------------------------------


def lookup_points(box_warp: float, spatial: tuple[int, ...], count: int, seed: int) -> torch.Tensor:
    """(count + edge cases, 3) world points: random ones inside and outside the box, then points on
    texel centres and texel borders, on the box faces, where the padding clamp starts, and far away."""
    g = seeded(seed)
    points = [(torch.rand(count, 3, generator=g) * 2 - 1) * 0.7 * box_warp]  # ~1/3 outside the box
    # Per axis of n texels, normalised coordinates u whose grid_sample source (u + 1) * n / 2 - 0.5
    # is an integer (texel centre), an integer + 1/2 (texel border; u = +-1 are the box faces),
    # -1 or n (where the lookup's clamp starts), a quarter texel outside the box, or far away.
    special = [-3.0, 3.0, 0.0]
    for n in sorted(set(spatial)):
        special += [(2 * i + 1) / n - 1 for i in range(n)]  # texel centres
        special += [2 * i / n - 1 for i in range(n + 1)]  # texel borders, box faces included
        special += [-1 - 1 / n, 1 + 1 / n, -1 - 0.5 / n, 1 + 0.5 / n]  # clamp limits, a quarter texel out
    special = torch.tensor(special) * box_warp / 2
    choice = torch.randint(len(special), (4 * len(special), 3), generator=g)
    points.append(special[choice])
    points.append(special.unsqueeze(1).expand(-1, 3))  # every value on all axes at once
    return torch.cat(points)


PLANE_SHAPES = {
    "triplane": (2, 3, 8, 16, 16),
    "triplane-nonsquare": (2, 3, 8, 12, 20),
    "trigrid": (2, 3, 8, 3, 10, 14),
    "trigrid-one-slice": (1, 3, 8, 1, 16, 16),
}


@pytest.mark.parametrize("box_warp", [1.0, 1.6])
@pytest.mark.parametrize("shape", list(PLANE_SHAPES.values()), ids=list(PLANE_SHAPES))
def test_plane_table_equals_sample_planes_mean(shape, box_warp):
    planes = torch.randn(shape, generator=seeded(0))
    batch = shape[0]
    points = lookup_points(box_warp, shape[3:], 200, seed=1)
    coordinates = torch.stack([points.roll(i, 0) for i in range(batch)])  # items differ
    expected = sample_planes(planes, coordinates, box_warp).mean(1)
    actual = PlaneTable(planes, box_warp).mean_features(coordinates)
    assert actual.shape == expected.shape == (batch, len(points), shape[2])
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    # The edge cases are reached: points that read only padding, and points inside.
    assert (expected == 0).all(-1).any() and (expected != 0).all(-1).any()


def test_plane_table_items_read_their_own_planes():
    planes = torch.randn(2, 3, 8, 16, 16, generator=seeded(2))
    coordinates = lookup_points(1.0, (16,), 50, seed=3).expand(2, -1, -1)
    table = PlaneTable(planes, 1.0).mean_features(coordinates)
    for i in range(2):
        alone = PlaneTable(planes[i : i + 1], 1.0).mean_features(coordinates[i : i + 1])
        torch.testing.assert_close(table[i : i + 1], alone, rtol=0, atol=0)
    assert not torch.allclose(table[0], table[1])


@pytest.mark.parametrize("name", ["triplane-nonsquare", "trigrid"])
def test_plane_table_gradients_equal_sample_planes(name):
    shape = PLANE_SHAPES[name]
    planes = torch.randn(shape, generator=seeded(4))
    coordinates = torch.stack([lookup_points(1.6, shape[3:], 200, seed=5 + i) for i in range(shape[0])])
    upstream = torch.randn(shape[0], coordinates.shape[1], shape[2], generator=seeded(6))
    grads = []
    for lookup in (
        lambda p: PlaneTable(p, 1.6).mean_features(coordinates),
        lambda p: sample_planes(p, coordinates, 1.6).mean(1),
    ):
        p = planes.clone().requires_grad_(True)
        (lookup(p) * upstream).sum().backward()
        grads.append(p.grad)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["triplane-nonsquare", "trigrid"])
def test_plane_table_coordinate_gradients_equal_sample_planes(name):
    """Gradients for the points too (random points inside the box, off texel borders, where the
    bilinear weights are differentiable)."""
    shape = PLANE_SHAPES[name]
    planes = torch.randn(shape, generator=seeded(7))
    coordinates = (torch.rand(shape[0], 300, 3, generator=seeded(8)) - 0.5) * 1.5
    upstream = torch.randn(shape[0], 300, shape[2], generator=seeded(9))
    grads = []
    for lookup in (
        lambda p, c: PlaneTable(p, 1.6).mean_features(c),
        lambda p, c: sample_planes(p, c, 1.6).mean(1),
    ):
        p, c = planes.clone().requires_grad_(True), coordinates.clone().requires_grad_(True)
        grads.append(torch.autograd.grad((lookup(p, c) * upstream).sum(), [p, c]))
    for fast, plain in zip(*grads):
        assert plain.abs().sum() > 0
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


# --- colour-free merge ----------------------------------------------------------------------------


def sample_set(batch: int, rays: int, samples: int, channels: int, seed: int):
    g = seeded(seed)
    depths = torch.sort(2.25 + torch.rand(batch, rays, samples, 1, generator=g), dim=2).values
    sigmas = torch.randn(batch, rays, samples, 1, generator=g) * 20
    colors = torch.rand(batch, rays, samples, channels, generator=g)
    return depths, sigmas, colors


@pytest.mark.parametrize("white_background", [False, True])
@pytest.mark.parametrize("signed", [True, False])
def test_composite_merged_equals_merge_then_composite(white_background, signed):
    first, second = sample_set(2, 60, 7, 5, seed=7), sample_set(2, 60, 5, 5, seed=8)
    # Ties: some fine depths equal coarse ones (and each other), with different colours.
    second[0][:, :20, :3] = first[0][:, :20, 2:5]
    second[0][:, 20:30, 1] = second[0][:, 20:30, 0]
    # Rays with no weight at all: depth NaN -> +inf in both.
    first[1][:, 50:] = -1e5
    second[1][:, 50:] = -1e5
    depths, colors, sigmas = merge_samples(first[0], first[2], first[1], second[0], second[2], second[1])
    expected = composite(colors, sigmas, depths, white_background=white_background, signed=signed, clamp_depth=False)
    actual = composite_merged(first, second, white_background=white_background, signed=signed)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    assert torch.isinf(expected[1][:, 50:]).all() and torch.isfinite(expected[1][:, :50]).all()


# --- the renderer ---------------------------------------------------------------------------------


def make_decoder(channels: int, activation: str = "sigmoid") -> TriplaneDecoder:
    """The real decoder, its density head scaled so that random planes give opaque and empty rays
    (zero features, outside the box, give density about -3)."""
    with torch.random.fork_rng():
        torch.manual_seed(9)
        decoder = TriplaneDecoder(hidden=16, lr_multiplier=1.0, in_features=channels, activation=activation)
        with torch.no_grad():
            decoder.net[2].weight[0] *= -20.0
            decoder.net[2].bias[0] = -22.0
    return decoder.eval().requires_grad_(False)


def wide_rays(batch: int = 2, resolution: int = 14):
    """Rays of a wide camera (some miss the box), a different view per item: (B, R*R, 3) each."""
    yaw, pitch = torch.tensor([0.0, 0.6, -0.4][:batch]), torch.tensor([0.0, -0.2, 0.3][:batch])
    camera = camera_from_angles(yaw=yaw, pitch=pitch, focal=1.6)
    return pixel_rays(camera.cam2world, camera.intrinsics, resolution)


def per_plane_only(decoder):
    """A generic decoder callable (no ``decode_mean``) that checks it gets per-plane features."""

    def decode(features):
        assert features.ndim == 4 and features.shape[1] == 3, features.shape
        return decoder(features)

    return decode


BASE = RenderConfig(depth_samples=12, importance_samples=10)
BOX = dataclasses.replace(BASE, ray_start="auto", ray_end="auto")
#: PanoHead's renderer options: tri-grids, raw features, density crop.
PANOHEAD = {"trigrid": True, "activation": "none", "density_crop": 0.4, "signed": False}
PER_ITEM = {"per_sample_clamp": True, "rng": "per-item"}
RENDER_CASES = {
    "fixed-range": {},
    "box-limits": {"options": BOX},
    "disparity": {"options": dataclasses.replace(BASE, disparity_space_sampling=True)},
    "no-importance": {"options": dataclasses.replace(BASE, importance_samples=0)},
    "white-background": {"options": dataclasses.replace(BASE, white_background=True, box_warp=1.6)},
    "per-sample-clamp": PER_ITEM,
    "per-sample-clamp-box": {**PER_ITEM, "options": BOX},
    "panohead": PANOHEAD,
    "panohead-box": {**PANOHEAD, "options": BOX},
    "panohead-per-sample-clamp-box": {**PANOHEAD, **PER_ITEM, "options": BOX},
    "generic-decoder": {"generic": True},
    "generic-decoder-trigrid": {"generic": True, "trigrid": True, "density_crop": 0.4},
}


def render_case(case: dict, *, fast: bool, rng_seeds: tuple[int, int] = (10, 11), items: slice = slice(None)):
    """Render a case of RENDER_CASES (``items``: a part of its batch of 2, with its own generators)."""
    shape = (2, 3, 8, 2, 16, 16) if case.get("trigrid") else (2, 3, 8, 16, 16)
    planes = torch.randn(shape, generator=seeded(11)) * 2
    decoder = make_decoder(8, case.get("activation", "sigmoid"))
    if case.get("generic"):
        decoder = per_plane_only(decoder)
    origins, directions = wide_rays()
    generators = [seeded(s) for s in rng_seeds][items]
    rng = generators if case.get("rng") == "per-item" else generators[0]
    return render_rays(
        planes[items], decoder, origins[items], directions[items], case.get("options", BASE),
        density_crop=case.get("density_crop"), signed=case.get("signed", True), rng=rng,
        per_sample_clamp=case.get("per_sample_clamp", False), fast=fast,
    )


def assert_same_render(actual, expected, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    for name in ("features", "depth", "alpha"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("slice_rays", [None, 37], ids=["one-slice", "slices-of-37"])
@pytest.mark.parametrize("case", list(RENDER_CASES.values()), ids=list(RENDER_CASES))
def test_render_rays_fast_equals_plain(monkeypatch, case, slice_rays):
    if slice_rays is not None:  # 196 rays: five full slices and a partial one
        monkeypatch.setattr(renderer, "SLICE_RAYS", slice_rays)
    with torch.no_grad():
        fast = render_case(case, fast=True)
        plain = render_case(case, fast=False)
    assert_same_render(fast, plain)
    # The render is informative: some rays nearly opaque, some nearly empty, depths differ; with
    # PanoHead's crop some rays are empty (depth +inf before the final clamp).
    assert plain.alpha.max() > 0.9 and plain.alpha.min() < 0.1
    assert plain.depth.std() > 0.01
    assert (plain.alpha == 0).any() == (case.get("density_crop") is not None)


@pytest.mark.parametrize("case", ["per-sample-clamp-box", "panohead-per-sample-clamp-box"])
def test_render_rays_per_item_rngs_make_items_independent_on_fast_path(monkeypatch, case):
    monkeypatch.setattr(renderer, "SLICE_RAYS", 37)
    with torch.no_grad():
        both = render_case(RENDER_CASES[case], fast=True)
        for i in range(2):
            item = slice(i, i + 1)
            alone = render_case(RENDER_CASES[case], fast=True, items=item)
            assert_same_render(RayBundleResult(both.features[item], both.depth[item], both.alpha[item]), alone)


def test_render_rays_fast_path_default_generator_equals_explicit_generator(monkeypatch):
    monkeypatch.setattr(renderer, "SLICE_RAYS", 37)
    planes = torch.randn(2, 3, 8, 16, 16, generator=seeded(11)) * 2
    decoder = make_decoder(8)
    origins, directions = wide_rays()
    with torch.no_grad():
        explicit = render_rays(planes, decoder, origins, directions, BASE, rng=seeded(12))
        torch.manual_seed(12)
        default = render_rays(planes, decoder, origins, directions, BASE, rng=None)
    assert_same_render(default, explicit, rtol=0, atol=0)


# --- decoder --------------------------------------------------------------------------------------


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("activation", ["sigmoid", "none", "lrelu"])
def test_decode_mean_equals_forward(activation, grad):
    decoder = make_decoder(8, activation).requires_grad_(grad)
    per_plane = torch.randn(2, 3, 50, 8, generator=seeded(13)).requires_grad_(grad)
    mean = per_plane.mean(1)
    kept = mean.detach().clone()
    with torch.set_grad_enabled(grad):
        sigma_ref, rgb_ref = decoder(per_plane)
        sigma, rgb = decoder.decode_mean(mean)
    torch.testing.assert_close(mean, kept, rtol=0, atol=0)  # the input is never written in place
    torch.testing.assert_close(sigma, sigma_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rgb, rgb_ref, rtol=1e-5, atol=1e-6)
    if activation == "sigmoid":
        assert rgb.min() >= -0.001 and rgb.max() <= 1.001
    else:
        assert rgb.min() < 0
    if not grad:
        return
    upstream = torch.randn(2, 50, 33, generator=seeded(14))
    grads = []
    for s, c in ((sigma, rgb), (sigma_ref, rgb_ref)):
        loss = (torch.cat([s, c], -1) * upstream).sum()
        grads.append(torch.autograd.grad(loss, [per_plane, *decoder.parameters()]))
    for fast_grad, plain_grad in zip(*grads):
        assert_relative_close(fast_grad, plain_grad, rtol=1e-5)


# --- StyleGAN2 layers -----------------------------------------------------------------------------


def conv_inputs(batch: int, kernel: int, seed: int = 15):
    g = seeded(seed)
    x = torch.randn(batch, 6, 5, 7, generator=g)
    weight = torch.randn(4, 6, kernel, kernel, generator=g)
    styles = torch.randn(batch, 6, generator=g) + 1
    bias = torch.randn(4, generator=g)
    return x, weight, styles, bias


CONV_CASES = [(3, False), (3, True), (1, False)]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize(("kernel", "up"), CONV_CASES, ids=["3x3", "3x3-up", "1x1"])
def test_modulated_conv2d_fast_equals_plain(kernel, up, demodulate, batch):
    x, weight, styles, bias = conv_inputs(batch, kernel)
    gain = 2**0.5
    kwargs = {"demodulate": demodulate, "up": up, "resample_filter": binomial_filter()}
    with torch.no_grad():
        expected = modulated_conv2d(x, weight, styles, **kwargs) * gain + bias.view(1, -1, 1, 1)
        actual = modulated_conv2d_fast(x, weight, styles, gain=gain, bias=bias, **kwargs)
    assert actual.shape == expected.shape == (batch, 4, 10 if up else 5, 14 if up else 7)
    # 3x3 (oneDNN) outputs are channels-last; a 1x1 on contiguous (NCHW) input is a matrix product that keeps it
    assert actual.is_contiguous(memory_format=torch.channels_last if kernel == 3 else torch.contiguous_format)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # With gradients recorded (a different weight construction), values and gradients agree.
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, styles, bias)]
    upstream = torch.randn(expected.shape, generator=seeded(16))
    grads = []
    for fast in (True, False):
        xs, ws, ss, bs = leaves
        if fast:
            y = modulated_conv2d_fast(xs, ws, ss, gain=gain, bias=bs, **kwargs)
            torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        else:
            y = modulated_conv2d(xs, ws, ss, **kwargs) * gain + bs.view(1, -1, 1, 1)
        grads.append(torch.autograd.grad((y * upstream).sum(), leaves))
    for name, fast_grad, plain_grad in zip(("x", "weight", "styles", "bias"), *grads):
        assert_relative_close(fast_grad, plain_grad, rtol=1e-5, msg=name)


@pytest.mark.parametrize("size", [(5, 7), (64, 66)], ids=["small", "winograd-size"])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize(("kernel", "up"), CONV_CASES, ids=["3x3", "3x3-up", "1x1"])
def test_frozen_weight_route_gives_the_plain_values_and_gradients(kernel, up, demodulate, size):
    """With a frozen weight and gradients recorded (projection into W) the styles scale the
    activations instead of the weights: the same values, and the same gradients for the
    activations, styles and bias, as the plain per-sample convolution."""
    g = seeded(32)
    x = torch.randn(2, 6, *size, generator=g)
    weight = torch.randn(4, 6, kernel, kernel, generator=g)
    styles, bias = torch.randn(2, 6, generator=g) + 1, torch.randn(4, generator=g)
    kwargs = {"demodulate": demodulate, "up": up, "resample_filter": binomial_filter()}
    upstream = None
    grads = []
    for fast in (True, False):
        leaves = [t.clone().requires_grad_(True) for t in (x, styles, bias)]
        xs, ss, bs = leaves
        if fast:
            y = modulated_conv2d_fast(xs, weight, ss, gain=1.5, bias=bs, **kwargs)
            assert y.grad_fn is not None and not weight.requires_grad
        else:
            y = modulated_conv2d(xs.double(), weight.double(), ss.double(), **kwargs) * 1.5
            y = y + bs.double().view(1, -1, 1, 1)
        upstream = torch.randn(y.shape, generator=seeded(33), dtype=y.dtype) if upstream is None else upstream.double()
        grads.append(torch.autograd.grad((y * upstream).sum(), leaves))
        if fast:
            actual = y.detach()
        else:
            assert_relative_close(actual.double(), y.detach(), rtol=2e-5)
    for name, fast_grad, plain_grad in zip(("x", "styles", "bias"), *grads):
        assert_relative_close(fast_grad.double(), plain_grad.double(), rtol=5e-5, msg=name)


@pytest.mark.skipif(not winograd_available(), reason="torch was built without NNPACK")
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_winograd_route_matches_direct_convolution(batch, layout):
    """From 64x64 up, float32 3x3 convolutions take NNPACK's Winograd route: NCHW output, within
    Winograd's rounding (~1e-5 relative) of the float64 direct convolution; with gradients recorded
    the gradients agree with the direct convolution's (the input gradient is a Winograd
    convolution too)."""
    g = seeded(30)
    x = torch.randn(batch, 16, 64, 72, generator=g).contiguous(memory_format=layout)
    weight, styles, bias = torch.randn(8, 16, 3, 3, generator=g), torch.randn(batch, 16, generator=g) + 1, torch.randn(8, generator=g)
    with torch.no_grad():
        expected = modulated_conv2d(x.double(), weight.double(), styles.double()) * 1.5 + bias.double().view(1, -1, 1, 1)
        actual = modulated_conv2d_fast(x, weight, styles, gain=1.5, bias=bias)
        small = modulated_conv2d_fast(x[..., :32, :32], weight, styles, gain=1.5, bias=bias)
    assert actual.is_contiguous() and not actual.is_contiguous(memory_format=torch.channels_last)
    assert small.is_contiguous(memory_format=torch.channels_last)  # below WINOGRAD_MIN_PIXELS: oneDNN
    error = (actual.double() - expected).abs().max() / expected.abs().max()
    assert 0 < error < 2e-5  # not bit-equal to the direct convolution (it is another algorithm), but close

    leaves = [t.clone().requires_grad_(True) for t in (x, weight, styles, bias)]
    upstream = torch.randn(expected.shape, generator=g)
    grads = []
    for fast in (True, False):
        xs, ws, ss, bs = leaves
        y = modulated_conv2d_fast(xs, ws, ss, gain=1.5, bias=bs) if fast else modulated_conv2d(xs, ws, ss) * 1.5 + bs.view(1, -1, 1, 1)
        if fast:  # the route is taken with gradients recorded too
            assert y.is_contiguous() and not y.is_contiguous(memory_format=torch.channels_last)
        grads.append(torch.autograd.grad((y * upstream).sum(), leaves))
    for name, fast_grad, plain_grad in zip(("x", "weight", "styles", "bias"), *grads):
        assert_relative_close(fast_grad, plain_grad, rtol=1e-4, msg=name)


@pytest.mark.skipif(not winograd_available(), reason="torch was built without NNPACK")
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("needs", ["x", "weight", "all"])
def test_winograd_conv3x3_is_conv2d_with_its_gradients(needs, with_bias):
    """Values and whichever gradients are asked for, against the float64 direct convolution."""
    g = seeded(34)
    tensors = [torch.randn(2, 5, 17, 23, generator=g), torch.randn(7, 5, 3, 3, generator=g), torch.randn(7, generator=g)]
    wants = [needs in ("x", "all"), needs in ("weight", "all"), with_bias and needs == "all"]
    upstream = torch.randn(2, 7, 17, 23, generator=g)
    results = []
    for dtype in (torch.float32, torch.float64):
        leaves = [t.to(dtype).requires_grad_(want) for t, want in zip(tensors, wants)]
        x, weight, bias = leaves[0], leaves[1], leaves[2] if with_bias else None
        y = winograd_conv3x3(x, weight, bias) if dtype == torch.float32 else F.conv2d(x, weight, bias, padding=1)
        grads = torch.autograd.grad((y * upstream.to(dtype)).sum(), [t for t, want in zip(leaves, wants) if want])
        results.append((y, grads))
    (y, grads), (expected, expected_grads) = results
    assert y.dtype == torch.float32 and y.is_contiguous() and y.shape == expected.shape
    assert_relative_close(y.double(), expected.detach(), rtol=2e-5)
    assert len(grads) == sum(wants)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_relative_close(grad.double(), expected_grad, rtol=2e-5)


@pytest.mark.parametrize("target", [torch.contiguous_format, torch.channels_last], ids=["to-nchw", "to-nhwc"])
def test_to_memory_format_is_an_exact_relayout(target):
    source = torch.contiguous_format if target == torch.channels_last else torch.channels_last
    x = torch.randn(2, 5, 33, 47, generator=seeded(31))  # pixels not a multiple of the block
    y = to_memory_format(x.contiguous(memory_format=source), target)
    assert y.is_contiguous(memory_format=target)
    assert torch.equal(y, x)
    leaf = x.clone().contiguous(memory_format=source).requires_grad_(True)
    y = to_memory_format(leaf, target)
    # Differentiable in one step (recorded block by block, the backward pass would add a full-size
    # gradient per block): the gradient is the upstream, back in the input's layout.
    assert y.is_contiguous(memory_format=target) and type(y.grad_fn).__name__ == "_RelayoutBackward"
    assert y.grad_fn.next_functions[0][0] is not None and "AccumulateGrad" in y.grad_fn.next_functions[0][0].name()
    (y * x).sum().backward()
    assert torch.equal(leaf.grad, x) and leaf.grad.is_contiguous(memory_format=source)


def test_upsample_2x_fast_equals_plain():
    x = torch.randn(2, 5, 6, 9, generator=seeded(17))
    actual = upsample_2x_fast(x, binomial_filter())
    expected = upsample_2x(x, binomial_filter())
    assert actual.shape == expected.shape == (2, 5, 12, 18)
    assert actual.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def randomised(layer: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-zero biases and noise strength (both start at zero), so every term is exercised."""
    g = seeded(seed)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.fill_(0.7)
    return layer


def compare_layer_paths(layer, x, w, grad, **kwargs):
    """Run ``layer`` on both paths (fresh generators for 'random' noise); compare values and gradients."""
    outputs, grads = [], []
    for fast in (True, False):
        xs, ws = x.clone().requires_grad_(grad), w.clone().requires_grad_(grad)
        extra = {"rng": seeded(18)} if kwargs.get("noise_mode") == "random" else {}
        with torch.set_grad_enabled(grad):
            y = layer(xs, ws, fast=fast, **kwargs, **extra)
            if grad:
                upstream = torch.randn(y.shape, generator=seeded(19))
                grads.append(torch.autograd.grad((y * upstream).sum(), [xs, ws, layer.weight, layer.bias]))
        outputs.append(y.detach())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    for fast_grad, plain_grad in zip(*grads):
        assert_relative_close(fast_grad, plain_grad, rtol=1e-5)
    return outputs[1]


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("conv_clamp", [None, 0.5])
@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("noise_mode", ["const", "none", "random"])
def test_synthesis_layer_fast_equals_plain(noise_mode, up, conv_clamp, grad):
    with torch.random.fork_rng():
        torch.manual_seed(20)
        layer = SynthesisLayer(6, 4, w_dim=8, resolution=10 if up else 5, up=up, conv_clamp=conv_clamp)
    layer = randomised(layer, 21).requires_grad_(grad)
    x = torch.randn(2, 6, 5, 5, generator=seeded(22))
    w = torch.randn(2, 8, generator=seeded(23))
    out = compare_layer_paths(layer, x, w, grad, noise_mode=noise_mode)
    if conv_clamp is not None:  # the clamp is reached
        assert out.abs().max() == pytest.approx(conv_clamp * 2**0.5)


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("conv_clamp", [None, 0.3])
def test_torgb_layer_fast_equals_plain(conv_clamp, grad):
    with torch.random.fork_rng():
        torch.manual_seed(24)
        layer = ToRGBLayer(6, 4, w_dim=8, conv_clamp=conv_clamp)
    layer = randomised(layer, 25).requires_grad_(grad)
    x = torch.randn(3, 6, 5, 7, generator=seeded(26))
    w = torch.randn(3, 8, generator=seeded(27))
    out = compare_layer_paths(layer, x, w, grad)
    if conv_clamp is not None:
        assert out.abs().max() == pytest.approx(conv_clamp)


# --- whole generators -----------------------------------------------------------------------------


@pytest.fixture(params=["eg3d", "panohead"])
def generator(request):
    """The tiny EG3D generator of conftest, or the tiny PanoHead one (as in test_panohead.py)."""
    if request.param == "eg3d":
        return request.getfixturevalue("tiny_generator")
    return build_tiny_generator(panohead=True)


def image_keys(model) -> tuple[str, ...]:
    return ("image", "image_raw", "image_depth") + (("image_mask",) if model.config.panohead is not None else ())


@pytest.mark.parametrize("slice_rays", [None, 100], ids=["one-slice", "slices-of-100"])
@pytest.mark.parametrize("noise_mode", ["const", "random"])
def test_synthesis_fast_equals_plain(monkeypatch, generator, noise_mode, slice_rays):
    if slice_rays is not None:  # 16 x 16 rays
        monkeypatch.setattr(renderer, "SLICE_RAYS", slice_rays)
    with torch.no_grad():
        ws = generator.mapping(latents(2), labels(2), truncation_psi=0.7)
        fast = generator.synthesis(ws, labels(2), noise_mode=noise_mode, rng=seeded(28), fast=True)
        plain = generator.synthesis(ws, labels(2), noise_mode=noise_mode, rng=seeded(28), fast=False)
    assert set(fast) == set(plain) == set(image_keys(generator))
    for key in image_keys(generator):
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-5, atol=1e-5, msg=key)
    assert plain["image_depth"].std() > 1e-3


def test_planes_fast_equals_plain(generator):
    with torch.no_grad():
        ws = generator.mapping(latents(2), labels(2))
        fast = generator.planes(ws, fast=True)
        plain = generator.planes(ws, fast=False)
    assert fast.shape == plain.shape
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_batch_with_per_item_rngs_equals_singles_on_fast_path(generator):
    with torch.no_grad():
        ws = generator.mapping(latents(2), labels(2))
        options = {"noise_mode": "random", "per_sample_clamp": True}
        both = generator.synthesis(ws, labels(2), rng=[seeded(1), seeded(2)], **options)
        for i, seed in enumerate((1, 2)):
            alone = generator.synthesis(ws[i : i + 1], labels(2)[i : i + 1], rng=seeded(seed), **options)
            for key in image_keys(generator):
                torch.testing.assert_close(both[key][i : i + 1], alone[key], rtol=1e-5, atol=1e-5, msg=key)


def test_gradients_for_inversion_match_between_paths(generator):
    """What PTI differentiates: a loss on the image w.r.t. ws and w.r.t. a backbone weight."""
    weight = generator.backbone.synthesis.b8.conv0.weight
    with torch.no_grad():
        start = generator.mapping(latents(1, seed=3), labels(1))
        target = torch.randn(1, 3, 32, 32, generator=seeded(29)) * 0.5
    weight.requires_grad_(True)
    try:
        grads = []
        for fast in (True, False):
            ws = start.clone().requires_grad_(True)
            out = generator.synthesis(ws, labels(1), rng=seeded(30), fast=fast)
            loss = (out["image"] - target).square().mean() + (out["image_raw"] - target[:, :, ::2, ::2]).square().mean()
            grads.append(torch.autograd.grad(loss, [ws, weight]))
    finally:
        weight.requires_grad_(False)
    for name, fast_grad, plain_grad in zip(("ws", "weight"), *grads):
        assert_relative_close(fast_grad, plain_grad, rtol=1e-4, msg=name)
