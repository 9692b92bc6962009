"""EG3D's super-resolution module (Chan et al. 2022, section 3.3 and appendix).

Two style-modulated StyleGAN2 blocks turn the 32-channel volume-rendered feature image (and its
first three channels, the raw RGB) into the final image. All layers are modulated by the last w
only, repeated for the three layers of each block. The official variants differ only in whether
the first block upsamples and in their channel counts (see ``demo.config.SuperResConfig``):

- 2X / 4X: block0 keeps the resolution, block1 upsamples by 2 (input = output / 2);
- 8X / 8XDC: both blocks upsample by 2 (input = output / 4).

If the feature image is not at the input resolution it is resized bilinearly first (8X, 8XDC and 2X
on any mismatch, 4X only when it is smaller).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from demo.config import SuperResConfig
from demo.networks.layers import binomial_filter
from demo.networks.stylegan2 import SynthesisBlock
from demo.rng import Rng


class SuperResolution(nn.Module):
    """Feature image (B, 32, r, r) + raw rgb (B, 3, r, r) -> image (B, 3, R, R)."""

    def __init__(self, config: SuperResConfig) -> None:
        super().__init__()
        self.config = config
        out_resolution = config.image_resolution
        c0, c1 = config.channels
        common = dict(w_dim=config.w_dim, img_channels=3, use_fp16=config.use_fp16, conv_clamp=config.conv_clamp)
        self.block0 = SynthesisBlock(
            config.in_channels, c0, resolution=out_resolution // 2, up=config.first_block_upsamples, **common
        )
        self.block1 = SynthesisBlock(c0, c1, resolution=out_resolution, up=True, **common)
        if config.has_resample_filter:
            # Registered (unused) by the official 2X/4X/8X classes; kept so state dicts match.
            self.register_buffer("resample_filter", binomial_filter())

    def forward(
        self,
        rgb: torch.Tensor,
        features: torch.Tensor,
        ws: torch.Tensor,
        *,
        noise_mode: str | None = None,
        rng: Rng = None,
        fast: bool = False,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Args: rgb (B, 3, r, r), features (B, C, r, r), ws (B, num_ws, w_dim); noise_mode defaults to the config's.

        ``fast``: the layers' fast path (see ``demo.networks.layers.modulated_conv2d_fast``).
        ``dtype``: the blocks' activation dtype (``demo.precision``); None = the official rule.
        """
        noise_mode = self.config.noise_mode if noise_mode is None else noise_mode
        size = self.config.input_resolution
        current = features.shape[-1]
        if current < size or (current != size and not self.config.resizes_only_when_smaller):
            resize = dict(size=(size, size), mode="bilinear", align_corners=False, antialias=self.config.antialias)
            features = F.interpolate(features, **resize)
            rgb = F.interpolate(rgb, **resize)
        block_ws = ws[:, -1:, :].repeat(1, 3, 1)
        blocks = dict(noise_mode=noise_mode, rng=rng, fast=fast, dtype=dtype)
        x, img = self.block0(features, rgb, block_ws, **blocks)
        _, img = self.block1(x, img, block_ws, **blocks)
        return img.contiguous()
