"""StyleGAN2 building blocks (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Equalized learning rate (weights stored at unit scale and multiplied by ``lr / sqrt(fan_in)`` at run
time), style modulation with weight demodulation (paper section 2.2), per-pixel noise, and FIR
resampling with the [1, 3, 3, 1] binomial filter (upsample: zero insertion, padding, 4x4 filter).
Parameter and buffer names mirror the official checkpoints so conversion is an identity copy.

Everything here is plain PyTorch: the same code runs on CPU and CUDA, in float32 or float16.
"""

from __future__ import annotations

import functools
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


def upsample_2x_fast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """:func:`upsample_2x` as one depthwise stride-2 transposed convolution (zero insertion, padding
    and the filter in one op; the filter is symmetric, so no flip is needed). Channels-last."""
    channels = x.shape[1]
    weight = (f * 4).to(x.dtype)[None, None].repeat(channels, 1, 1, 1)
    x = x.contiguous(memory_format=torch.channels_last)
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=channels)


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


#: fewest rows a fully connected layer hands to the CPU matrix product (see FullyConnectedLayer.forward)
MIN_CPU_GEMM_ROWS = 16


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
        rows = x.shape[0] if x.ndim == 2 else 0
        if x.device.type == "cpu" and 0 < rows < MIN_CPU_GEMM_ROWS:
            # BLAS libraries take other kernels for a few rows, which may round a row differently
            # with the batch size (MKL on AMD CPUs does): pad to the kernel every batch then uses.
            return self(torch.cat([x, x.new_zeros(MIN_CPU_GEMM_ROWS - rows, x.shape[1])]))[:rows]
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


def _fp16_prescale(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep fp16 in range before modulation; the scale cancels after demodulation."""
    _, in_channels, kh, kw = weight.shape
    weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    return weight, styles / styles.norm(float("inf"), dim=1, keepdim=True)


def _modulate(weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool, half: bool) -> torch.Tensor:
    """Per-sample weights (B, O, I, k, k): ``weight`` scaled by the styles, then demodulated."""
    batch = styles.shape[0]
    if half and demodulate:
        weight, styles = _fp16_prescale(weight, styles)
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    return w


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
    w = _modulate(weight, styles, demodulate=demodulate, half=x.dtype == torch.float16)
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


def demodulation(styles: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The demodulation coefficients (B, O) of ``weight`` (O, I, k, k) under ``styles`` (B, I):
    rsqrt(sum_{i,k} (W_oik s_i)^2 + 1e-8), via sum_i s_i^2 sum_k W_oik^2.

    One matrix-vector product per sample, so a sample's coefficients do not depend on the batch it
    is in (a small matrix product may round a row differently with the number of rows).
    """
    energy = weight.square().sum(dim=[2, 3])  # (O, I)
    return (torch.stack([energy @ row for row in styles.square()]) + 1e-8).rsqrt()


def _modulate_channels_last(
    weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool, gain: float, dtype: torch.dtype, transposed: bool = False
) -> list[torch.Tensor]:
    """:func:`_modulate` times ``gain``, one channels-last (O, I, k, k) weight per sample
    (``transposed``: (I, O, k, k), as ``conv_transpose2d`` takes it).

    Demodulation uses sum_{i,k} (W_oik s_i)^2 = sum_i s_i^2 sum_k W_oik^2, a small matrix product,
    so each sample's weight is written in one pass: W * (gain * d_o * s_i).
    """
    out_channels = weight.shape[0]
    if dtype == torch.float16 and demodulate:
        weight, styles = _fp16_prescale(weight, styles)
    scales = styles.unsqueeze(1).expand(-1, out_channels, -1) * gain  # (B, O, I)
    if demodulate:
        dcoefs = demodulation(styles, weight)
        scales = scales * dcoefs.unsqueeze(2)
    if transposed:
        weight, scales = weight.transpose(0, 1), scales.transpose(1, 2)  # (I, O, k, k), (B, I, O)
    source = weight.permute(0, 2, 3, 1)  # (first, k, k, second): channels-last storage order
    weights = []
    for scale in scales:
        scale = scale.reshape(scale.shape[0], 1, 1, scale.shape[1])
        if torch.is_grad_enabled():
            w = (source * scale).contiguous()
        else:
            w = torch.mul(source, scale, out=torch.empty_like(source, memory_format=torch.contiguous_format))
        weights.append(w.permute(0, 3, 1, 2).to(dtype))  # channels-last strides
    return weights


@functools.cache
def winograd_available() -> bool:
    """True when torch's NNPACK runs here: Winograd F(6x6, 3x3) float32 convolutions on x86 and ARM CPUs.

    (``is_available`` also initialises NNPACK, which its convolution needs before the first call.)
    """
    try:
        return bool(torch.backends.nnpack.is_available())
    except (AttributeError, RuntimeError):
        return False


#: the Winograd route's smallest feature map (pixels): below it NNPACK's weight transform outweighs
#: the saved multiplications (measured on 2 cores: 2.5x faster at 64x64 and up, slower at 16x16)
WINOGRAD_MIN_PIXELS = 64 * 64


def _use_winograd(x: torch.Tensor, kernel_size: int) -> bool:
    """The Winograd route: a 3x3 convolution of a large float32 CPU feature map (forward and input
    gradient, :func:`winograd_conv3x3`)."""
    return (
        kernel_size == 3 and x.device.type == "cpu" and x.dtype == torch.float32
        and x.shape[-2] * x.shape[-1] >= WINOGRAD_MIN_PIXELS and winograd_available()
    )


#: pixels per block in :func:`to_memory_format` (measured best of 64-4096 on 2 cores)
_TRANSPOSE_BLOCK = 1024


def to_memory_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x.contiguous(memory_format=...)`` for a 4-D CPU tensor, in blocks of pixels that stay in cache.

    Between the two layouts each pixel's channels are transposed; torch's strided copy does it
    about 2x slower than these block transposes on large feature maps. Differentiable: the
    gradient is relaid out back the same way, in one step.
    """
    if x.is_contiguous(memory_format=memory_format) or x.device.type != "cpu" or x.ndim != 4:
        return x.contiguous(memory_format=memory_format)
    if torch.is_grad_enabled() and x.requires_grad:
        # Recorded block by block, the backward pass would add a full-size gradient per block.
        return _Relayout.apply(x, memory_format)
    return _block_relayout(x, memory_format)


def _block_relayout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    batch, channels, height, width = x.shape
    out = torch.empty_like(x, memory_format=memory_format)
    pixels = height * width
    for index in range(batch):
        source, target = x[index], out[index]
        if memory_format == torch.channels_last:
            source, target = source.reshape(channels, pixels), target.permute(1, 2, 0).view(pixels, channels).t()
        else:
            source, target = source.permute(1, 2, 0).reshape(pixels, channels).t(), target.view(channels, pixels)
        for first in range(0, pixels, _TRANSPOSE_BLOCK):
            block = slice(first, first + _TRANSPOSE_BLOCK)
            target[:, block].copy_(source[:, block])
    return out


class _Relayout(torch.autograd.Function):
    """:func:`to_memory_format` as one autograd step; the gradient goes back to the input's layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        ctx.source = next(
            (fmt for fmt in (torch.contiguous_format, torch.channels_last) if x.is_contiguous(memory_format=fmt)), None
        )
        return _block_relayout(x, memory_format)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (grad if ctx.source is None else to_memory_format(grad, ctx.source)), None


class _WinogradConv3x3(torch.autograd.Function):
    """A 3x3 convolution (stride 1, padding 1) through NNPACK's Winograd algorithm, its input
    gradient too: that gradient is the convolution of the output gradient with the kernel flipped
    and its channel axes swapped. The weight and bias gradients are torch's direct ones.
    Contiguous (NCHW) tensors in and out."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        bias = bias if bias is not None else x.new_zeros(weight.shape[0])
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip(2, 3).transpose(0, 1).contiguous()
            grad_x = torch._nnpack_spatial_convolution(grad, flipped, grad.new_zeros(flipped.shape[0]), [1, 1])
        if ctx.needs_input_grad[1]:
            grad_weight = torch.nn.grad.conv2d_weight(x, weight.shape, grad, padding=1)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for 3x3 float32 CPU tensors through NNPACK's Winograd
    algorithm, forward and input gradient (see :func:`winograd_available`); NCHW output."""
    return _WinogradConv3x3.apply(to_memory_format(x, torch.contiguous_format), weight.contiguous(), bias)


def _winograd_conv(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool, gain: float, bias: torch.Tensor | None
) -> torch.Tensor:
    """:func:`modulated_conv2d_fast` (3x3, no upsampling) through NNPACK's Winograd convolution, which
    reads and writes contiguous (NCHW) tensors."""
    x = to_memory_format(x, torch.contiguous_format)
    weights = _modulate_channels_last(weight, styles, demodulate=demodulate, gain=gain, dtype=x.dtype)
    outputs = [winograd_conv3x3(sample, w, bias) for sample, w in zip(x.split(1), weights)]
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _pointwise_conv_nchw(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool, gain: float, bias: torch.Tensor | None
) -> torch.Tensor:
    """:func:`modulated_conv2d_fast` for a 1x1 convolution of contiguous (NCHW) activations: one
    matrix product per sample, (O, I) @ (I, H*W), with no change of layout."""
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[0]
    weights = _modulate_channels_last(weight, styles, demodulate=demodulate, gain=gain, dtype=x.dtype)
    outputs = []
    for sample, sample_w in zip(x, weights):
        matrix, pixels = sample_w.reshape(out_channels, in_channels), sample.view(in_channels, -1)
        y = matrix @ pixels if bias is None else torch.addmm(bias.unsqueeze(1), matrix, pixels)
        outputs.append(y.view(1, out_channels, height, width))
    return outputs[0] if batch == 1 else torch.cat(outputs)


def _fir_weight(resample_filter: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """The upsampling FIR filter (gain 4) as a depthwise convolution weight (channels, 1, 4, 4)."""
    return (resample_filter * 4).to(dtype).flip([0, 1])[None, None].repeat(channels, 1, 1, 1)


def _channels_last_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, fir: torch.Tensor | None
) -> torch.Tensor:
    """One ordinary convolution of channels-last ``x``: 'same' padding, or with ``fir`` (the upsampling
    filter, :func:`_fir_weight`) a stride-2 transposed convolution, ``weight`` (I, O, 3, 3) as
    ``conv_transpose2d`` takes it, whose 2H + 1 samples the filter brings back to 2H."""
    if fir is None:
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
    y = F.conv_transpose2d(x, weight, stride=2)
    return F.conv2d(y, fir, bias, padding=1, groups=fir.shape[0])


def _modulated_activations_conv(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool, up: bool,
    resample_filter: torch.Tensor | None, gain: float, bias: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`modulated_conv2d_fast` for a frozen ``weight`` with gradients recorded (projection into
    W, losses through a fixed generator): one ordinary convolution by ``weight`` for the whole
    batch, the styles scaling its input channels and the demodulation its output channels,
    conv(x, W * s * d) = d * conv(x * s, W). Its backward pass needs only the convolution's input
    gradient; per-sample weights would also need the weight gradient, as costly as the convolution.
    """
    batch, in_channels = x.shape[:2]
    out_channels, _, kh, _ = weight.shape
    dtype = x.dtype
    w = weight.to(dtype)
    scale = (styles * gain).to(dtype).view(batch, in_channels, 1, 1)
    if not up and _use_winograd(x, kh):
        y = winograd_conv3x3(to_memory_format(x, torch.contiguous_format) * scale, w)
    elif kh == 1 and not up and x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last):
        y = F.conv2d(x * scale, w)
    else:
        assert not up or (resample_filter is not None and kh == 3), "upsampling convolutions are 3x3 with a filter"
        x = to_memory_format(x, torch.channels_last) * scale
        w = w.contiguous(memory_format=torch.channels_last)
        fir = _fir_weight(resample_filter, out_channels, dtype) if up else None
        y = _channels_last_conv(x, w.transpose(0, 1) if up else w, None, fir=fir)
    bias = bias.view(1, -1, 1, 1) if bias is not None else None
    if not demodulate:
        return y if bias is None else y + bias
    coefficients = demodulation(styles, weight).to(dtype).view(batch, out_channels, 1, 1)
    return y * coefficients if bias is None else torch.addcmul(bias, y, coefficients)


def modulated_conv2d_fast(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    up: bool = False,
    resample_filter: torch.Tensor | None = None,
    gain: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`modulated_conv2d` times ``gain``, plus ``bias`` (O,), laid out for speed.

    One ordinary convolution per sample instead of a grouped one, the bias fused into the
    convolution. Three routes:

    - a frozen ``weight`` (``requires_grad`` False) with gradients recorded for the activations or
      the styles, as when projecting into W: the styles scale the activations instead of the
      weights (one convolution for the batch), so the backward pass skips the weight gradient
      (:func:`_modulated_activations_conv`; large float32 maps take the Winograd convolution
      below). Not for float16, whose modulation needs the official pre-scaling of the weights.
    - 3x3 convolutions without upsampling of large float32 feature maps on a CPU run NNPACK's
      Winograd F(6x6, 3x3) algorithm (about 2.5x faster than oneDNN's direct convolution at 64x64
      and up), the input gradient too when gradients are recorded (the weight gradient is the
      direct convolution's).
      Contiguous (NCHW) output; each convolution differs from the direct one by ~1e-5 relative
      (Winograd's transforms round differently).
    - everything else: channels-last tensors (oneDNN's fast layout on CPU, tensor cores' on GPU),
      the upsampling's FIR filter as one padded depthwise convolution (no padded copy).
      Channels-last output, equal to ``modulated_conv2d(...) * gain + bias`` up to float32 rounding.
    """
    out_channels, _, kh, kw = weight.shape
    bias = bias.to(x.dtype) if bias is not None else None
    frozen = not weight.requires_grad and (x.requires_grad or styles.requires_grad)
    if frozen and torch.is_grad_enabled() and x.dtype != torch.float16:
        return _modulated_activations_conv(
            x, weight, styles, demodulate=demodulate, up=up, resample_filter=resample_filter, gain=gain, bias=bias
        )
    if not up and _use_winograd(x, kh):
        return _winograd_conv(x, weight, styles, demodulate=demodulate, gain=gain, bias=bias)
    if kh == 1 and not up and x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last):
        return _pointwise_conv_nchw(x, weight, styles, demodulate=demodulate, gain=gain, bias=bias)
    x = to_memory_format(x, torch.channels_last)
    if up:
        assert resample_filter is not None and kh == 3 and kw == 3, "upsampling convolutions are 3x3 with a filter"
    fir = _fir_weight(resample_filter, out_channels, x.dtype) if up else None
    weights = _modulate_channels_last(weight, styles, demodulate=demodulate, gain=gain, dtype=x.dtype, transposed=up)
    outputs = [_channels_last_conv(sample, sample_w, bias, fir=fir) for sample, sample_w in zip(x.split(1), weights)]
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs).contiguous(memory_format=torch.channels_last)


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
        self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "const", rng: Rng = None, fast: bool = False
    ) -> torch.Tensor:
        """x (B, I, r, r) -> (B, O, R, R). ``fast``: :func:`modulated_conv2d_fast`, channels-last output."""
        styles = self.affine(w)
        noise = self._noise(x.shape[0], noise_mode, rng, device=x.device)
        clamp = self.conv_clamp * LRELU_GAIN if self.conv_clamp is not None else None
        if fast:
            # lrelu(y) * g = lrelu(g * y) for g > 0: the gain goes into the weights and the bias.
            x = modulated_conv2d_fast(
                x, self.weight, styles, up=self.up, resample_filter=self.resample_filter,
                gain=LRELU_GAIN, bias=self.bias * LRELU_GAIN,
            )
            inplace = not torch.is_grad_enabled()
            if noise is not None:
                noise = (noise * LRELU_GAIN).to(x.dtype)
                x = x.add_(noise) if inplace else x + noise
            x = F.leaky_relu_(x, LRELU_SLOPE) if inplace else F.leaky_relu(x, LRELU_SLOPE)
            if clamp is not None and clamp >= 0:
                x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
            return x
        x = modulated_conv2d(x, self.weight, styles, up=self.up, resample_filter=self.resample_filter)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return bias_activation(x, self.bias, activation="lrelu", gain=LRELU_GAIN, clamp=clamp)

    def _noise(self, batch: int, noise_mode: str, rng: Rng, *, device: torch.device) -> torch.Tensor | None:
        """The per-pixel noise, scaled by its strength: (R, R), (B, 1, R, R) or None."""
        if noise_mode == "const":
            return self.noise_const * self.noise_strength
        if noise_mode == "random":
            noise = draw([batch, 1, self.resolution, self.resolution], rng, device=device, normal=True)
            return noise * self.noise_strength
        if noise_mode != "none":
            raise ValueError(f"noise_mode: unknown {noise_mode!r}; use 'const', 'random' or 'none'")
        return None

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

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, fast: bool = False) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        if fast:
            x = modulated_conv2d_fast(x, self.weight, styles, demodulate=False, bias=self.bias)
            if self.conv_clamp is not None and self.conv_clamp >= 0:
                clamp = self.conv_clamp
                x = x.clamp(-clamp, clamp) if torch.is_grad_enabled() else x.clamp_(-clamp, clamp)
            return x
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_activation(x, self.bias, clamp=self.conv_clamp)
