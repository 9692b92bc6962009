"""demo.networks and demo.config: layer references, invariants and the tiny random generator.

Fast paths are compared with plain PyTorch references written here (the official 'non-fused'
modulated convolution, transposed-conv FIR upsampling); the generator is checked for shapes,
ranges, determinism, batch independence and the semantics of its options.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from demo.cameras import Camera, camera_from_angles
from demo.config import GeneratorConfig, MappingConfig, RenderConfig, SuperResConfig, SynthesisConfig
from demo.networks import eg3d
from demo.networks.eg3d import TriplaneDecoder, TriplaneGenerator
from demo.networks.layers import (
    FullyConnectedLayer,
    binomial_filter,
    fir_filter_2d,
    modulated_conv2d,
    normalize_2nd_moment,
    upsample_2x,
)
from demo.networks.stylegan2 import MappingNetwork
from demo.render import sampling
from demo.render.compositing import composite
from demo.render.rays import pixel_rays
from demo.render.sampling import stratified_depths

# --- helpers --------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("single_thread")


def labels(batch: int = 1) -> torch.Tensor:
    yaws = torch.tensor([0.0, 0.4, -0.3, 0.2][:batch])
    pitches = torch.tensor([0.0, -0.2, 0.1, 0.15][:batch])
    return camera_from_angles(yaw=yaws, pitch=pitches).to_label()


def latents(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 16, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same_weights(config: GeneratorConfig, source: TriplaneGenerator) -> TriplaneGenerator:
    model = TriplaneGenerator(config)
    model.load_state_dict(source.state_dict())
    return model.eval().requires_grad_(False)


@pytest.fixture
def constant_jitter(monkeypatch):
    """Replace every uniform draw of the renderer by 0.5, so renders do not depend on the RNG order."""

    def uniform(shape, like, rng):
        return torch.full(shape, 0.5, device=like.device, dtype=like.dtype)

    monkeypatch.setattr(sampling, "_uniform", uniform)


def reference_fir(x: torch.Tensor, f: torch.Tensor, pad: int, gain: float) -> torch.Tensor:
    """Depthwise 'same-ish' FIR (f symmetric): zero-pad by ``pad`` then correlate with gain * f."""
    channels = x.shape[1]
    kernel = (f * gain).flip([0, 1])[None, None].repeat(channels, 1, 1, 1)
    return F.conv2d(F.pad(x, [pad] * 4), kernel, groups=channels)


def reference_modulated_conv(x, weight, styles, *, demodulate=True, up=False):
    """The official non-fused path: scale the input, plain convolution, scale the output."""
    x = x * styles[:, :, None, None]
    if up:
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # in/out swapped, not flipped
        x = reference_fir(x, binomial_filter(), pad=1, gain=4.0)
    else:
        x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:
        w = weight[None] * styles[:, None, :, None, None]
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        x = x * dcoefs[:, :, None, None]
    return x


# --- FIR resampling -------------------------------------------------------------------------------


def test_binomial_filter():
    f = binomial_filter()
    expected = torch.tensor([1.0, 3.0, 3.0, 1.0])
    torch.testing.assert_close(f, torch.outer(expected, expected) / 64)


def test_upsample_2x_constant_image_and_size():
    x = torch.full((2, 3, 5, 6), 1.7)
    y = upsample_2x(x, binomial_filter())
    assert y.shape == (2, 3, 10, 12)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 1.7))
    assert not torch.allclose(y[..., 0, :], torch.full_like(y[..., 0, :], 1.7))  # zero padding at the border


def test_upsample_2x_matches_transposed_conv_reference():
    x = torch.randn(2, 3, 5, 4, generator=seeded(0))
    f = binomial_filter()
    y = upsample_2x(x, f)
    kernel = (4 * f)[None, None].repeat(3, 1, 1, 1)
    reference = F.conv_transpose2d(x, kernel, stride=2, groups=3)[..., 1 : 1 + 10, 1 : 1 + 8]
    torch.testing.assert_close(y, reference, atol=1e-6, rtol=1e-5)


def test_fir_filter_is_a_convolution_not_a_correlation():
    f = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # asymmetric
    x = torch.zeros(1, 1, 5, 7)
    x[0, 0, 2, 3] = 1.0
    y = fir_filter_2d(x, f)
    assert y.shape == (1, 1, 3, 4)
    torch.testing.assert_close(y[0, 0], f)  # the impulse response is the filter itself
    torch.testing.assert_close(fir_filter_2d(x, f, gain=3.0), 3 * y)


def test_fir_filter_negative_padding_crops():
    x = torch.randn(1, 2, 6, 7, generator=seeded(1))
    one = torch.ones(1, 1)
    torch.testing.assert_close(fir_filter_2d(x, one, pad=(-1, -2, -1, 0)), x[:, :, 1:, 1:-2])
    torch.testing.assert_close(fir_filter_2d(x, one, pad=(1, 0, 0, 2)), F.pad(x, [1, 0, 0, 2]))


def test_fir_zero_insertion_upsampling():
    x = torch.arange(4, dtype=torch.float32).reshape(1, 1, 2, 2) + 1
    y = fir_filter_2d(x, torch.ones(1, 1), up=2)
    expected = torch.tensor([[1.0, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(y[0, 0], expected)


# --- modulated convolution ------------------------------------------------------------------------


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_matches_unfused_reference(up, demodulate):
    gen = seeded(2)
    x = torch.randn(3, 4, 5, 5, generator=gen)
    weight = torch.randn(6, 4, 3, 3, generator=gen)
    styles = torch.randn(3, 4, generator=gen) + 1
    y = modulated_conv2d(
        x, weight, styles, demodulate=demodulate, up=up, resample_filter=binomial_filter() if up else None
    )
    reference = reference_modulated_conv(x, weight, styles, demodulate=demodulate, up=up)
    assert y.shape == ((3, 6, 10, 10) if up else (3, 6, 5, 5))
    torch.testing.assert_close(y, reference, atol=1e-5, rtol=1e-5)


def test_modulated_conv2d_one_by_one_without_demodulation():
    gen = seeded(3)
    x = torch.randn(2, 4, 3, 3, generator=gen)
    weight = torch.randn(5, 4, 1, 1, generator=gen)
    styles = torch.randn(2, 4, generator=gen)
    y = modulated_conv2d(x, weight, styles, demodulate=False)
    expected = torch.einsum("oi,bi,bihw->bohw", weight[:, :, 0, 0], styles, x)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("up", [False, True])
def test_modulated_conv2d_batch_items_are_independent(up):
    gen = seeded(4)
    x = torch.randn(3, 4, 6, 6, generator=gen)
    weight = torch.randn(5, 4, 3, 3, generator=gen)
    styles = torch.randn(3, 4, generator=gen)
    f = binomial_filter()
    batched = modulated_conv2d(x, weight, styles, up=up, resample_filter=f)
    for b in range(3):
        single = modulated_conv2d(x[b : b + 1], weight, styles[b : b + 1], up=up, resample_filter=f)
        torch.testing.assert_close(batched[b : b + 1], single, atol=1e-6, rtol=1e-5)


def test_modulated_conv2d_demodulated_weight_has_unit_norm():
    # Feed one impulse per input channel (same style for every item): the outputs are the flipped
    # slices of the effective per-sample weight, so their energy per output channel is ||W_eff[o]||^2.
    gen = seeded(5)
    in_channels, out_channels = 3, 4
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=gen) * 5
    style = torch.randn(1, in_channels, generator=gen) * 3
    x = torch.zeros(in_channels, in_channels, 5, 5)
    for i in range(in_channels):
        x[i, i, 2, 2] = 1.0
    styles = style.expand(in_channels, -1)
    y = modulated_conv2d(x, weight, styles)
    energy = y.square().sum(dim=[0, 2, 3])
    torch.testing.assert_close(energy, torch.ones(out_channels), atol=1e-5, rtol=1e-5)
    raw = modulated_conv2d(x, weight, styles, demodulate=False)
    torch.testing.assert_close(
        raw.square().sum(dim=[0, 2, 3]), (weight * style[:, :, None, None]).square().sum(dim=[1, 2, 3])
    )


def test_modulated_conv2d_float16_path_matches_float32():
    gen = seeded(6)
    x = torch.randn(2, 4, 6, 6, generator=gen)
    weight = torch.randn(5, 4, 3, 3, generator=gen)
    styles = torch.randn(2, 4, generator=gen) * 10
    try:
        half = modulated_conv2d(x.half(), weight, styles)
    except RuntimeError as error:  # pragma: no cover - depends on the CPU kernels of the torch build
        pytest.skip(f"float16 convolution unavailable on this build: {error}")
    assert half.dtype == torch.float16
    full = modulated_conv2d(x, weight, styles)
    torch.testing.assert_close(half.float(), full, atol=2e-2, rtol=2e-2)


# --- fully connected and mapping ------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["linear", "lrelu"])
def test_fully_connected_layer_equalized_lr(activation):
    torch.manual_seed(0)
    layer = FullyConnectedLayer(6, 3, activation=activation, lr_multiplier=0.01, bias_init=0.5)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, -2.0, 30.0]))
    x = torch.randn(4, 6, generator=seeded(7))
    pre = x @ (layer.weight * 0.01 / math.sqrt(6)).T + layer.bias * 0.01
    expected = pre if activation == "linear" else F.leaky_relu(pre, 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x), expected)
    # Initialisation: weights are N(0, 1) / lr so the effective weights are N(0, 1/in); bias_init is stored as is.
    fresh = FullyConnectedLayer(6, 3, lr_multiplier=0.01, bias_init=0.5)
    assert torch.all(fresh.bias == 0.5)


def test_fully_connected_without_bias():
    layer = FullyConnectedLayer(4, 2, bias=False, activation="lrelu")
    assert layer.bias is None
    x = torch.randn(3, 4, generator=seeded(8))
    torch.testing.assert_close(layer(x), F.leaky_relu(x @ (layer.weight / 2).T, 0.2) * math.sqrt(2))


def test_normalize_2nd_moment():
    x = torch.randn(5, 9, generator=seeded(9)) * 7
    y = normalize_2nd_moment(x)
    torch.testing.assert_close(y.square().mean(1), torch.ones(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y, x / x.norm(dim=1, keepdim=True) * 3)


def test_mapping_matches_manual_computation(tiny_generator):
    mapping = tiny_generator.backbone.mapping
    z, c = latents(2), labels(2)
    ws = tiny_generator.mapping(z, c)
    assert ws.shape == (2, tiny_generator.num_ws, 16) and ws.dtype == torch.float32
    x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(mapping.embed(c))], dim=1)
    for index in range(2):
        layer = getattr(mapping, f"fc{index}")
        x = F.leaky_relu(
            x @ (layer.weight * 0.01 / math.sqrt(layer.in_features)).T + layer.bias * 0.01, 0.2
        ) * math.sqrt(2)
    torch.testing.assert_close(ws, x[:, None].expand(-1, tiny_generator.num_ws, -1), atol=1e-5, rtol=1e-5)
    # z is cast to float32; float64 input gives the same ws.
    torch.testing.assert_close(tiny_generator.mapping(z.double(), c), ws)


def test_mapping_truncation(tiny_generator):
    mapping: MappingNetwork = tiny_generator.backbone.mapping
    z, c = latents(3), labels(3)
    w_avg = mapping.w_avg
    assert w_avg.abs().sum() > 0  # the tiny model's w_avg is random, so the checks below are informative
    plain = mapping(z, c)
    cut = mapping(z, c, truncation_psi=0.0, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], w_avg.expand(3, 3, -1))
    torch.testing.assert_close(cut[:, 3:], plain[:, 3:])
    every = mapping(z, c, truncation_psi=0.0, truncation_cutoff=None)
    torch.testing.assert_close(every, w_avg.expand_as(every))
    half = mapping(z, c, truncation_psi=0.5, truncation_cutoff=None)
    torch.testing.assert_close(half, w_avg + 0.5 * (plain - w_avg))
    torch.testing.assert_close(mapping(z, c, truncation_psi=1.0, truncation_cutoff=2), plain)
    # The generator's mapping forwards the same arguments.
    torch.testing.assert_close(tiny_generator.mapping(z, c, truncation_psi=0.0, truncation_cutoff=3), cut)


def test_mapping_without_label():
    torch.manual_seed(0)
    mapping = MappingNetwork(MappingConfig(z_dim=8, c_dim=0, w_dim=8), num_ws=4)
    assert not hasattr(mapping, "embed")
    z = torch.randn(2, 8)
    ws = mapping(z, torch.zeros(2, 0))
    assert ws.shape == (2, 4, 8)


# --- decoder --------------------------------------------------------------------------------------


def test_decoder_reference_and_range(tiny_generator):
    decoder: TriplaneDecoder = tiny_generator.decoder
    features = torch.randn(2, 3, 7, 32, generator=seeded(10)) * 3
    sigma, rgb = decoder(features)
    assert sigma.shape == (2, 7, 1) and rgb.shape == (2, 7, 32)
    fc0, fc1 = decoder.net[0], decoder.net[2]
    hidden = F.softplus(features.mean(1) @ (fc0.weight / math.sqrt(32)).T + fc0.bias)
    out = hidden @ (fc1.weight / math.sqrt(fc1.in_features)).T + fc1.bias
    torch.testing.assert_close(sigma, out[..., :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rgb, torch.sigmoid(out[..., 1:]) * 1.002 - 0.001, atol=1e-6, rtol=1e-5)
    # Planes are averaged: their order does not matter.
    sigma_perm, _ = decoder(features[:, [2, 0, 1]])
    torch.testing.assert_close(sigma_perm, sigma, atol=1e-5, rtol=1e-5)
    huge = decoder(torch.randn(1, 3, 50, 32, generator=seeded(11)) * 1e4)[1]
    assert huge.min() >= -0.001 - 1e-6 and huge.max() <= 1.001 + 1e-6


@pytest.mark.parametrize("intel", [True, False], ids=["exp-log", "torch"])
def test_inference_softplus_matches_torch_on_either_route(monkeypatch, intel):
    monkeypatch.setattr(eg3d, "cpu_is_intel", lambda: intel)
    x = torch.randn(4096, 64, generator=seeded(12)) * 6
    for values in (x, x.clamp(max=19.9), torch.empty(0, 64)):  # beyond the threshold, below it, empty
        out = eg3d.softplus_(values.clone())
        assert out.dtype == torch.float32 and out.shape == values.shape
        torch.testing.assert_close(out.double(), F.softplus(values.double()), atol=1e-6, rtol=1e-6)
    # The route taken: exp-log works in place (below the threshold), torch's softplus returns a new array.
    below = x.clamp(max=19.9)
    assert (eg3d.softplus_(below).data_ptr() == below.data_ptr()) is intel


# --- the tiny generator ---------------------------------------------------------------------------


def test_synthesis_shapes_and_ranges(tiny_generator):
    ws = tiny_generator.mapping(latents(2), labels(2))
    out = tiny_generator.synthesis(ws, labels(2), rng=seeded(0), return_extras=True)
    assert set(out) == {"image", "image_raw", "image_depth", "feature_image", "image_alpha", "planes"}
    assert out["image"].shape == (2, 3, 32, 32)
    assert out["image_raw"].shape == (2, 3, 16, 16)
    assert out["image_depth"].shape == (2, 1, 16, 16)
    assert out["feature_image"].shape == (2, 32, 16, 16)
    assert out["image_alpha"].shape == (2, 1, 16, 16)
    assert out["planes"].shape == (2, 3, 32, 32, 32)
    torch.testing.assert_close(out["image_raw"], out["feature_image"][:, :3])
    alpha = out["image_alpha"]
    assert torch.all(alpha >= 0) and torch.all(alpha <= 1)
    assert alpha.std() > 0  # neither empty nor opaque everywhere
    # Features are alpha-weighted [-0.001, 1.001] colours mapped to [-1, 1].
    features = out["feature_image"]
    assert torch.all(features >= -1.002 - 1e-5) and torch.all(features <= (1.001 * alpha) * 2 - 1 + 1e-5)
    depth = out["image_depth"]
    assert torch.all(depth >= 2.25) and torch.all(depth <= 3.3 + 1.05 / 5)
    assert torch.all(torch.isfinite(out["image"]))
    plain = tiny_generator.synthesis(ws, labels(2), rng=seeded(0), planes=out["planes"])
    assert set(plain) == {"image", "image_raw", "image_depth"}
    torch.testing.assert_close(plain["image"], out["image"])


def test_synthesis_deterministic_and_rng_equals_manual_seed(tiny_generator):
    ws = tiny_generator.mapping(latents(1), labels(1))
    c = labels(1)
    a = tiny_generator.synthesis(ws, c, rng=seeded(1))
    b = tiny_generator.synthesis(ws, c, rng=seeded(1))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    torch.manual_seed(1)
    default = tiny_generator.synthesis(ws, c)
    for key in a:
        assert torch.equal(a[key], default[key]), key
    other = tiny_generator.synthesis(ws, c, rng=seeded(2))
    assert not torch.allclose(other["image_depth"], a["image_depth"])


def test_forward_is_mapping_then_synthesis(tiny_generator):
    z, c = latents(1, seed=3), labels(1)
    out = tiny_generator(z, c, truncation_psi=0.7, truncation_cutoff=2, rng=seeded(5))
    ws = tiny_generator.mapping(z, c, truncation_psi=0.7, truncation_cutoff=2)
    expected = tiny_generator.synthesis(ws, c, rng=seeded(5))
    torch.testing.assert_close(out["image"], expected["image"], rtol=0, atol=0)


def test_camera_object_equals_label(tiny_generator):
    c = labels(1)
    ws = tiny_generator.mapping(latents(1), c)
    torch.testing.assert_close(tiny_generator.mapping(latents(1), Camera.from_label(c)), ws)
    a = tiny_generator.synthesis(ws, c, rng=seeded(0), depth_samples=4, importance_samples=2)
    b = tiny_generator.synthesis(ws, Camera.from_label(c), rng=seeded(0), depth_samples=4, importance_samples=2)
    torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)


def test_batch_equals_singles(tiny_generator, constant_jitter):
    # With real draws a batch and two singles consume the RNG in a different order (draws are
    # batch-major), so the renders differ; with a fixed jitter every item must match its single.
    c = labels(2)
    ws = tiny_generator.mapping(latents(2), c)
    counts = {"depth_samples": 5, "importance_samples": 4}
    batched = tiny_generator.synthesis(ws, c, **counts)
    for b in range(2):
        single = tiny_generator.synthesis(ws[b : b + 1], c[b : b + 1], **counts)
        for key in ("image_raw", "image", "image_depth"):
            torch.testing.assert_close(batched[key][b : b + 1], single[key], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched["image_raw"][0], batched["image_raw"][1])


def test_synthesis_does_not_mutate_the_module(tiny_generator):
    before = {key: value.clone() for key, value in tiny_generator.state_dict().items()}
    config = tiny_generator.config
    ws = tiny_generator.mapping(latents(1), labels(1))
    for resolution in (8, 24):
        out = tiny_generator.synthesis(ws, labels(1), resolution, noise_mode="random", rng=seeded(0))
        assert out["image_raw"].shape == (1, 3, resolution, resolution)
        assert out["image_depth"].shape == (1, 1, resolution, resolution)
        assert out["image"].shape == (1, 3, 32, 32)  # 2X resizes the feature image to its input (16)
    assert tiny_generator.neural_rendering_resolution == 16
    assert tiny_generator.config == config
    after = tiny_generator.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    default = tiny_generator.synthesis(ws, labels(1), rng=seeded(0), depth_samples=2, importance_samples=0)
    assert default["image_raw"].shape == (1, 3, 16, 16)  # the override did not stick


def test_noise_modes(tiny_generator):
    strengths = [
        p
        for name, p in tiny_generator.named_parameters()
        if name.startswith("backbone") and name.endswith("noise_strength")
    ]
    assert any(float(s) != 0 for s in strengths)
    ws = tiny_generator.mapping(latents(1), labels(1))
    planes = {
        mode: [tiny_generator.planes(ws, noise_mode=mode, rng=seeded(3)) for _ in range(2)]
        for mode in ("const", "random", "none")
    }
    for mode, (first, second) in planes.items():
        assert torch.equal(first, second), mode  # deterministic for a fixed rng
    assert not torch.allclose(planes["random"][0], planes["const"][0])
    assert not torch.allclose(planes["none"][0], planes["const"][0])
    assert not torch.allclose(planes["random"][0], tiny_generator.planes(ws, noise_mode="random", rng=seeded(4)))
    # With zero noise strength the three modes agree.
    quiet = same_weights(tiny_generator.config, tiny_generator)
    with torch.no_grad():
        for name, parameter in quiet.named_parameters():
            if name.endswith("noise_strength"):
                parameter.zero_()
    reference = quiet.planes(ws, noise_mode="const")
    for mode in ("random", "none"):
        torch.testing.assert_close(quiet.planes(ws, noise_mode=mode, rng=seeded(0)), reference, rtol=0, atol=0)
    with pytest.raises(ValueError, match="noise_mode"):
        tiny_generator.planes(ws, noise_mode="bogus")
    # Through synthesis: 'random' is deterministic for a seed and differs from 'const'.
    r1 = tiny_generator.synthesis(
        ws, labels(1), noise_mode="random", rng=seeded(9), depth_samples=3, importance_samples=0
    )
    r2 = tiny_generator.synthesis(
        ws, labels(1), noise_mode="random", rng=seeded(9), depth_samples=3, importance_samples=0
    )
    k = tiny_generator.synthesis(
        ws, labels(1), noise_mode="const", rng=seeded(9), depth_samples=3, importance_samples=0
    )
    assert torch.equal(r1["image"], r2["image"])
    assert not torch.allclose(r1["image"], k["image"])


def test_argument_errors(tiny_generator):
    ws = tiny_generator.mapping(latents(1), labels(1))
    with pytest.raises(TypeError, match="bogus"):
        tiny_generator.synthesis(ws, labels(1), bogus=1)
    with pytest.raises(TypeError, match="bogus"):
        tiny_generator.mapping(latents(1), labels(1), bogus=1)
    with pytest.raises(TypeError):
        tiny_generator.sample_mixed(torch.zeros(1, 4, 3), None, ws, bogus=True)
    with pytest.raises(ValueError, match="ws"):
        tiny_generator.synthesis(ws[:, :-1], labels(1))
    with pytest.raises(ValueError, match="ws"):
        tiny_generator.synthesis(ws[0], labels(1))
    with pytest.raises(ValueError, match="ws"):
        tiny_generator.planes(torch.zeros(1, tiny_generator.num_ws, 8))
    with pytest.raises(ValueError, match="c"):
        tiny_generator.synthesis(ws, torch.zeros(1, 24))
    with pytest.raises(ValueError, match="batch"):
        tiny_generator.synthesis(ws.repeat(3, 1, 1), labels(2))
    # Official keyword arguments without effect at inference are accepted.
    tiny_generator.mapping(latents(1), labels(1), update_emas=False)
    tiny_generator.synthesis(ws, labels(1), 8, force_fp32=True, depth_samples=2, importance_samples=0)


def test_conditioning_zero_ignores_the_label(tiny_generator):
    config = dataclasses.replace(tiny_generator.config, conditioning_zero=True)
    model = same_weights(config, tiny_generator)
    z = latents(2)
    a = model.mapping(z, labels(2))
    b = model.mapping(z, labels(2).flip(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, tiny_generator.mapping(z, torch.zeros(2, 25)))
    assert not torch.allclose(tiny_generator.mapping(z, labels(2)), tiny_generator.mapping(z, labels(2).flip(0)))


def test_c_scale_scales_the_label(tiny_generator):
    assert tiny_generator.backbone.mapping.embed.bias.abs().sum() > 0  # else normalisation hides the scale
    model = same_weights(dataclasses.replace(tiny_generator.config, c_scale=2.5), tiny_generator)
    z, c = latents(2), labels(2)
    torch.testing.assert_close(model.mapping(z, c), tiny_generator.mapping(z, c * 2.5))
    assert not torch.allclose(model.mapping(z, c), tiny_generator.mapping(z, c))


def test_white_background_of_an_empty_field(tiny_generator):
    config = tiny_generator.config
    white = same_weights(
        dataclasses.replace(config, render=dataclasses.replace(config.render, white_background=True)), tiny_generator
    )
    black = same_weights(config, tiny_generator)
    for model in (white, black):
        with torch.no_grad():
            model.decoder.net[2].weight[0].zero_()
            model.decoder.net[2].bias[0] = -1e4  # sigma = -1e4 everywhere: nothing to see
    ws = tiny_generator.mapping(latents(1), labels(1))
    planes = tiny_generator.planes(ws)
    counts = {"depth_samples": 5, "importance_samples": 3, "planes": planes, "return_extras": True}
    out_white = white.synthesis(ws, labels(1), **counts)
    out_black = black.synthesis(ws, labels(1), **counts)
    assert torch.all(out_white["image_raw"] == 1.0)
    assert torch.all(out_white["feature_image"] == 1.0)
    assert torch.all(out_black["image_raw"] == -1.0)
    assert torch.all(out_white["image_alpha"] == 0)
    # Empty rays get the largest sample depth (NaN -> inf -> clamp).
    assert torch.allclose(out_black["image_depth"], out_black["image_depth"].max())


def test_planes_argument_reuse_equals_fresh_render(tiny_generator):
    ws = tiny_generator.mapping(latents(1), labels(1))
    planes = tiny_generator.planes(ws)
    assert planes.shape == (1, 3, 32, 32, 32)
    fresh = tiny_generator.synthesis(ws, labels(1), rng=seeded(6), return_extras=True)
    reused = tiny_generator.synthesis(ws, labels(1), rng=seeded(6), planes=planes)
    torch.testing.assert_close(fresh["planes"], planes, rtol=0, atol=0)
    for key in ("image", "image_raw", "image_depth"):
        torch.testing.assert_close(reused[key], fresh[key], rtol=0, atol=0)


def test_sample_mixed_is_the_field_synthesis_renders(tiny_generator, constant_jitter):
    c = labels(1)
    ws = tiny_generator.mapping(latents(1), c)
    gen = torch.Generator().manual_seed(0)
    points = (torch.rand(2, 40, 3, generator=gen) - 0.5) * 1.2  # some points outside the box
    ws2 = tiny_generator.mapping(latents(2), labels(2))
    field = tiny_generator.sample_mixed(points, None, ws2)
    assert field["sigma"].shape == (2, 40, 1) and field["rgb"].shape == (2, 40, 32)
    assert field["rgb"].min() >= -0.001 - 1e-6 and field["rgb"].max() <= 1.001 + 1e-6
    torch.testing.assert_close(
        tiny_generator.sample_mixed(points, None, ws2, planes=tiny_generator.planes(ws2))["sigma"], field["sigma"]
    )
    sampled = tiny_generator.sample(points, torch.zeros_like(points), latents(2), labels(2))
    torch.testing.assert_close(sampled["sigma"], field["sigma"])
    # Composite sample_mixed along the rays synthesis casts: same raw image and depth.
    out = tiny_generator.synthesis(ws, c, importance_samples=0)
    camera = Camera.from_label(c)
    origins, directions = pixel_rays(camera.cam2world, camera.intrinsics, 16)
    depths = stratified_depths(1, 256, 6, 2.25, 3.3)
    ray_points = origins[:, :, None] + depths * directions[:, :, None]
    queried = tiny_generator.sample_mixed(ray_points.reshape(1, -1, 3), None, ws)
    features, depth, _ = composite(
        queried["rgb"].reshape(1, 256, 6, 32), queried["sigma"].reshape(1, 256, 6, 1), depths
    )
    torch.testing.assert_close(
        out["image_raw"], features[..., :3].permute(0, 2, 1).reshape(1, 3, 16, 16), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(out["image_depth"], depth.permute(0, 2, 1).reshape(1, 1, 16, 16), atol=1e-5, rtol=1e-5)


def test_superresolution_uses_only_the_last_w(tiny_generator):
    gen = seeded(12)
    features = torch.randn(1, 32, 16, 16, generator=gen)
    ws = torch.randn(1, tiny_generator.num_ws, 16, generator=gen)
    other = ws.clone()
    other[:, :-1] = torch.randn(1, tiny_generator.num_ws - 1, 16, generator=gen)
    sr = tiny_generator.superresolution
    a = sr(features[:, :3], features, ws)
    torch.testing.assert_close(sr(features[:, :3], features, other), a, rtol=0, atol=0)
    changed = ws.clone()
    changed[:, -1] += 1
    assert not torch.allclose(sr(features[:, :3], features, changed), a)


# --- super-resolution variants --------------------------------------------------------------------

SR_OUTPUT = {"2X": 32, "4X": 32, "8X": 64, "8XDC": 64}


@pytest.mark.parametrize("variant", list(SR_OUTPUT))
def test_superres_variants_build_run_and_resize(variant, monkeypatch):
    out_resolution = SR_OUTPUT[variant]
    config = dataclasses.replace(
        GeneratorConfig.tiny(),
        superres=SuperResConfig(variant=variant, image_resolution=out_resolution, block_channels=(16, 16), w_dim=16),
    )
    assert config.superres.input_resolution == 16
    torch.manual_seed(0)
    model = TriplaneGenerator(config).eval().requires_grad_(False)
    assert ("superresolution.resample_filter" in model.state_dict()) == (variant != "8XDC")
    c = labels(1)
    ws = model.mapping(latents(1), c)
    planes = model.planes(ws)

    calls = []
    original = F.interpolate

    def spy(*args, **kwargs):
        calls.append(kwargs.get("size"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", spy)
    for resolution in (16, 8, 24):
        calls.clear()
        out = model.synthesis(
            ws, c, resolution, planes=planes, rng=seeded(0), depth_samples=3, importance_samples=0, return_extras=True
        )
        resizes = resolution < 16 or (resolution != 16 and variant != "4X")
        assert calls == ([(16, 16), (16, 16)] if resizes else []), (variant, resolution)
        # 4X keeps a larger feature image, so its output grows with it (the official rule).
        expected_size = 2 * resolution if (variant == "4X" and resolution > 16) else out_resolution
        assert out["image"].shape == (1, 3, expected_size, expected_size)
        assert torch.all(torch.isfinite(out["image"]))
        # Rebuild the SR forward by hand: bilinear antialiased resize, last w for all six layers.
        features = out["feature_image"]
        if resizes:
            features = original(features, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
        block_ws = ws[:, -1:].repeat(1, 3, 1)
        sr = model.superresolution
        x, img = sr.block0(features, features[:, :3], block_ws, noise_mode="none")
        _, img = sr.block1(x, img, block_ws, noise_mode="none")
        torch.testing.assert_close(out["image"], img, atol=1e-5, rtol=1e-5)


def test_superres_resize_without_antialias():
    config = SuperResConfig(variant="2X", image_resolution=32, block_channels=(16, 16), w_dim=16, antialias=False)
    from demo.networks.superres import SuperResolution

    torch.manual_seed(0)
    sr = SuperResolution(config)
    gen = seeded(13)
    features = torch.randn(1, 32, 24, 24, generator=gen)
    ws = torch.randn(1, 8, 16, generator=gen)
    resized = F.interpolate(features, size=(16, 16), mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(sr(features[:, :3], features, ws), sr(resized[:, :3], resized, ws))
    antialiased = F.interpolate(features, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert not torch.allclose(sr(features[:, :3], features, ws), sr(antialiased[:, :3], antialiased, ws))


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "ffhq512", "afhq512", "shapenet128"])
def test_config_round_trip(preset):
    config = getattr(GeneratorConfig, preset)()
    data = config.to_dict()
    assert GeneratorConfig.from_dict(data) == config
    # Through JSON (tuples become lists) as the checkpoint folder stores it.
    again = GeneratorConfig.from_dict(json.loads(json.dumps(data)))
    assert again == config
    assert again.extras == config.extras  # extras is excluded from ==, so compare it explicitly
    assert again.to_dict() == data


def test_config_unknown_keys_are_named():
    data = GeneratorConfig.tiny().to_dict()
    with pytest.raises(ValueError, match="bogus_key"):
        GeneratorConfig.from_dict({**data, "bogus_key": 1})
    nested = json.loads(json.dumps(data))
    nested["render"]["not_a_field"] = 3
    with pytest.raises(ValueError, match="not_a_field"):
        GeneratorConfig.from_dict(nested)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RenderConfig(ray_start=3.0, ray_end=2.0), "ray_end"),
        (lambda: RenderConfig(ray_start=2.0, ray_end=2.0), "ray_end"),
        (lambda: RenderConfig(ray_start="auto", ray_end=3.3), "ray_start"),
        (lambda: RenderConfig(ray_start=2.25, ray_end="auto"), "ray_start"),
        (lambda: RenderConfig(depth_samples=1), "depth_samples"),
        (lambda: RenderConfig(box_warp=0), "box_warp"),
        (lambda: SuperResConfig(variant="16X"), "variant"),
        (lambda: SuperResConfig(variant="8X", image_resolution=30), "image_resolution"),
        (lambda: SynthesisConfig(resolution=48), "resolution"),
        (lambda: MappingConfig(num_layers=0), "num_layers"),
        (lambda: GeneratorConfig(superres=SuperResConfig(w_dim=16)), "w_dim"),
    ],
)
def test_config_invalid_fields_are_named(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_config_invalid_field_through_from_dict():
    data = json.loads(json.dumps(GeneratorConfig.tiny().to_dict()))
    data["superres"]["variant"] = "16X"
    with pytest.raises(ValueError, match="variant"):
        GeneratorConfig.from_dict(data)


def test_too_few_depth_samples_for_importance_sampling_is_a_clear_error(tiny_generator):
    ws = tiny_generator.mapping(latents(1), labels(1))
    with pytest.raises(ValueError, match="depth_samples"):
        tiny_generator.synthesis(ws, labels(1), depth_samples=3, importance_samples=2)
    with pytest.raises(ValueError, match="depth_samples"):
        RenderConfig(depth_samples=3, importance_samples=4)
    assert RenderConfig(depth_samples=3, importance_samples=0).depth_samples == 3


def test_tiny_config_and_auto_limits(tiny_config):
    config = tiny_config
    assert config.num_ws == 8 and config.image_resolution == 32
    assert config.render.neural_rendering_resolution == 16 and config.superres.input_resolution == 16
    assert RenderConfig(ray_start="auto", ray_end="auto").uses_box_limits
    assert not RenderConfig().uses_box_limits
