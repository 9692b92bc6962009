"""Image losses of inversion and encoder training: MSE, the offline MS-SSIM distance, PSNR.

LPIPS needs VGG/AlexNet ImageNet weights that cannot be downloaded at run time here, so the default
perceptual term is the offline **MS-SSIM distance** ``1 - MS-SSIM`` (Wang et al. 2003; Gaussian
window 11, sigma 1.5, the five published scale weights, computed on images area-downsampled to at
most 256 px like the projectors' LPIPS input; fewer scales for small images, weights renormalised).
Any LPIPS-like callable ``(pred, target) -> distance`` whose weights you have locally can be passed
as ``perceptual=`` instead. Images are (B, 3, H, W) in [-1, 1] throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(pred, target), both (B, 3, H, W) in [-1, 1] -> distance, (B,) or a scalar; lower is closer."""

PERCEPTUAL_MAX_SIZE = 256
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image, valid (unpadded) Gaussian windows."""
    channels, size = x.shape[1], len(window)
    horizontal = window.view(1, 1, 1, size).repeat(channels, 1, 1, 1)
    vertical = window.view(1, 1, size, 1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, horizontal, groups=channels), vertical, groups=channels)

    c1, c2 = 0.01**2, 0.03**2  # data range 1
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, *, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) of images (B, C, H, W) in [-1, 1]; returns (B,), 1 = identical.

    Up to five scales with the published weights; images too small for five scales use as many
    as fit a window (weights renormalised). Negative terms are clamped to a small positive value
    so that the fractional powers stay differentiable.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"ms_ssim: expected two (B, C, H, W) tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    x, y = (pred + 1) / 2, (target + 1) / 2
    side = min(x.shape[-2:])
    size = min(window_size, side - (1 - side % 2))  # odd and no larger than the image
    levels = 1
    while levels < len(MS_SSIM_WEIGHTS) and side // 2**levels >= size:
        levels += 1
    window = _gaussian_window(size, sigma, x.device, x.dtype)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], device=x.device, dtype=x.dtype)
    weights = weights / weights.sum()
    terms = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, window)
        if level == levels - 1:
            terms.append(ssim)
        else:
            terms.append(cs)
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(terms, dim=1).clamp(min=1e-6)
    return torch.prod(stacked**weights, dim=1)


def ms_ssim_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The default offline perceptual distance: 1 - MS-SSIM on images area-downsampled to <= 256 px; (B,)."""
    side = pred.shape[-1]
    if side > PERCEPTUAL_MAX_SIZE:
        size = (PERCEPTUAL_MAX_SIZE, PERCEPTUAL_MAX_SIZE)
        pred, target = F.interpolate(pred, size=size, mode="area"), F.interpolate(target, size=size, mode="area")
    return 1 - ms_ssim(pred, target)


def image_loss(
    pred: torch.Tensor, target: torch.Tensor, *, perceptual: PerceptualFn | None = None, perceptual_weight: float = 1.0
) -> torch.Tensor:
    """MSE (images in [-1, 1]) + perceptual_weight x perceptual distance, averaged over the batch."""
    loss = F.mse_loss(pred, target)
    if perceptual_weight:
        distance = (perceptual or ms_ssim_distance)(pred, target)
        loss = loss + perceptual_weight * distance.mean()
    return loss


def psnr(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """PSNR in dB of images in [-1, 1] (both clamped to it; the peak-to-peak range is 2)."""
    pred_t = torch.as_tensor(pred, dtype=torch.float32).clamp(-1, 1)
    target_t = torch.as_tensor(target, dtype=torch.float32).to(pred_t.device).clamp(-1, 1)
    mse = float(F.mse_loss(pred_t, target_t))
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)
