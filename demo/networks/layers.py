"""StyleGAN2 building blocks (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Equalized learning rate (weights stored at unit scale and multiplied by ``lr / sqrt(fan_in)`` at run
time), style modulation with weight demodulation (paper section 2.2), per-pixel noise, and FIR
resampling with the [1, 3, 3, 1] binomial filter (upsample: zero insertion, padding, 4x4 filter).
Parameter and buffer names mirror the official checkpoints so conversion is an identity copy.

Everything here is plain PyTorch: the same code runs on CPU and CUDA, in float32 or float16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from demo.rng import Rng, draw

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def binomial_filter(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """The 2-D resampling filter: the outer product of ``taps``, normalised to sum 1. Shape (4, 4)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def fir_filter_2d(
    x: torch.Tensor, f: torch.Tensor, *, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0
) -> torch.Tensor:
    """Upsample by zero insertion, pad, then convolve each channel with ``f`` (the upfirdn2d semantics).

    Args:
        x: (B, C, H, W).
        f: (kh, kw) filter; convolution (not correlation), so it is flipped before ``conv2d``.
        up: integer upsampling factor; zeros are inserted after every input sample.
        pad: (left, right, top, bottom) padding after upsampling; negative values crop.
        gain: the filter is scaled by this (``up**2`` keeps the mean for upsampling).
    """
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    left, right, top, bottom = pad
    x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
    x = x[:, :, max(-top, 0) : x.shape[2] - max(-bottom, 0), max(-left, 0) : x.shape[3] - max(-right, 0)]
    weight = (f * gain).to(x.dtype).flip([0, 1])
    weight = weight[None, None].repeat(channels, 1, 1, 1)
    return F.conv2d(x, weight, groups=channels)


def upsample_2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """FIR upsampling by 2 (the skip path of 'skip' generators): output (B, C, 2H, 2W)."""
    kh = f.shape[0]
    return fir_filter_2d(x, f, up=2, pad=((kh + 1) // 2, (kh - 2) // 2, (kh + 1) // 2, (kh - 2) // 2), gain=4.0)


def bias_activation(
    x: torch.Tensor, bias: torch.Tensor | None, *, activation: str = "linear", gain: float = 1.0, clamp: float | None = None
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by ``gain``, clamp to +-``clamp``."""
    if bias is not None:
        x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif activation != "linear":
        raise ValueError(f"activation: unknown {activation!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


class FullyConnectedLayer(nn.Module):
    """Equalized-lr linear layer: y = act(x @ (W * lr / sqrt(in)).T + b * lr)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = self.bias
        if bias is not None:
            bias = bias.to(x.dtype)
            if self.bias_gain != 1:
                bias = bias * self.bias_gain
        if self.activation == "linear" and bias is not None:
            return torch.addmm(bias.unsqueeze(0), x, weight.t())
        x = x.matmul(weight.t())
        return bias_activation(x, bias, activation=self.activation, gain=LRELU_GAIN if self.activation == "lrelu" else 1.0)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm over the feature dimension: x / sqrt(mean(x^2) + eps)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    up: bool = False,
    resample_filter: torch.Tensor | None = None,
) -> torch.Tensor:
    """Style-modulated 3x3 (or 1x1) convolution, one weight per sample (a grouped convolution).

    Args:
        x: (B, I, H, W) activations.
        weight: (O, I, k, k) base weight, already multiplied by nothing (equalized gain cancels under
            demodulation; ToRGB passes pre-scaled styles instead).
        styles: (B, I) per-sample input-channel scales from the affine layer.
        demodulate: scale each output channel to unit expected norm, rsqrt(sum (w*s)^2 + 1e-8).
        up: upsample by 2 with a stride-2 transposed convolution followed by the FIR filter.
    Returns:
        (B, O, H', W') with H' = 2H when ``up`` else H.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Keep fp16 in range; the scale cancels after demodulation.
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.to(x.dtype)
    if not up:
        x = F.conv2d(x, w.reshape(-1, in_channels, kh, kw), padding=kh // 2, groups=batch)
    else:
        assert resample_filter is not None
        # conv_transpose2d wants (in, out/groups, k, k) per group: swap in/out inside each sample.
        w = w.transpose(1, 2).reshape(batch * in_channels, out_channels, kh, kw)
        assert kh == 3 and kw == 3, "upsampling convolutions are 3x3"
        # The transposed conv gives 2H + 1 samples; the 4x4 FIR with one pixel of padding gives 2H.
        x = F.conv_transpose2d(x, w, stride=2, groups=batch)
        x = fir_filter_2d(x, resample_filter, pad=(1, 1, 1, 1), gain=4.0)
    return x.reshape(batch, -1, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv -> noise -> bias -> lrelu (optionally upsampling by 2 first)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        w_dim: int,
        resolution: int,
        up: bool = False,
        conv_clamp: float | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("resample_filter", binomial_filter())
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "const", rng: Rng = None
    ) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, resample_filter=self.resample_filter)
        if noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        elif noise_mode == "random":
            noise = draw([x.shape[0], 1, self.resolution, self.resolution], rng, device=x.device, normal=True)
            x = x + (noise * self.noise_strength).to(x.dtype)
        elif noise_mode != "none":
            raise ValueError(f"noise_mode: unknown {noise_mode!r}; use 'const', 'random' or 'none'")
        clamp = self.conv_clamp * LRELU_GAIN if self.conv_clamp is not None else None
        return bias_activation(x, self.bias, activation="lrelu", gain=LRELU_GAIN, clamp=clamp)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation: features -> output channels (planes or RGB)."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_activation(x, self.bias, clamp=self.conv_clamp)
