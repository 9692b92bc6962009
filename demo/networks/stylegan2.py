"""The StyleGAN2 backbone of EG3D: mapping network and the synthesis network that draws the tri-planes.

EG3D (Chan et al. 2022, section 3.1) keeps StyleGAN2's generator but reads its 96-channel output as
three 32-channel feature planes, and conditions the mapping network on the camera label (the
"generator pose conditioning" of section 4.2). The synthesis network uses StyleGAN2's 'skip'
architecture: every block adds its ToRGB output to the FIR-upsampled running image.

ws indexing follows StyleGAN2: the 4x4 block uses ws[0] (conv) and ws[1] (ToRGB); each later block
uses three consecutive ws starting where the previous block's convolutions ended, so a block's
first conv shares its w with the previous block's ToRGB.
"""

from __future__ import annotations

import torch
from torch import nn

from demo.config import PLANE_CHANNELS, MappingConfig, SynthesisConfig
from demo.networks.layers import (
    FullyConnectedLayer,
    SynthesisLayer,
    ToRGBLayer,
    binomial_filter,
    normalize_2nd_moment,
    upsample_2x,
    upsample_2x_fast,
)
from demo.rng import Rng


class MappingNetwork(nn.Module):
    """z (+ embedded camera label) -> w, broadcast to ``num_ws`` copies, then truncated."""

    def __init__(self, config: MappingConfig, num_ws: int) -> None:
        super().__init__()
        self.config = config
        self.num_ws = num_ws
        embed_features = config.resolved_embed_features
        hidden = config.resolved_layer_features
        if config.c_dim > 0:
            self.embed = FullyConnectedLayer(config.c_dim, embed_features)
        features = [config.z_dim + embed_features] + [hidden] * (config.num_layers - 1) + [config.w_dim]
        for index in range(config.num_layers):
            is_last = index == config.num_layers - 1
            activation = "linear" if is_last and config.last_linear else "lrelu"
            layer = FullyConnectedLayer(features[index], features[index + 1], activation=activation, lr_multiplier=config.lr_multiplier)
            setattr(self, f"fc{index}", layer)
        self.register_buffer("w_avg", torch.zeros([config.w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        *,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Map latents to ws.

        Args:
            z: (B, z_dim); any float dtype, computed in float32.
            c: (B, c_dim) conditioning label (already zeroed/scaled by the caller).
            truncation_psi: ws are pulled towards ``w_avg``: w_avg + psi * (w - w_avg).
            truncation_cutoff: truncate only ws[:, :cutoff]; None truncates all of them.
        Returns:
            ws: (B, num_ws, w_dim) float32.
        """
        parts = []
        if self.config.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.config.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for index in range(self.config.num_layers):
            x = getattr(self, f"fc{index}")(x)
        ws = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


class SynthesisBlock(nn.Module):
    """One resolution of a 'skip' generator: [conv0 (up)] -> conv1 -> ToRGB added to the running image.

    ``in_channels == 0`` makes the 4x4 block with a learned constant input and a single conv.
    ``up=False`` keeps the resolution (the super-resolution module's first block in 2X and 4X).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        w_dim: int,
        resolution: int,
        img_channels: int,
        up: bool = True,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.up = up
        self.use_fp16 = use_fp16
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        self.register_buffer("resample_filter", binomial_filter())
        if in_channels != 0:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=up, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        *,
        noise_mode: str = "const",
        rng: Rng = None,
        fast: bool = False,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x (B, C, r', r') or None for the 4x4 block; img the running output; ws (B, num_conv + 1, w_dim).

        ``fast``: the layers' fast path (channels-last outputs, same values up to float32 rounding).
        ``dtype``: the activations' dtype (see ``demo.precision``); None = the official rule.
        """
        if dtype is None:
            # The official code runs fp16 blocks in fp16 only on CUDA; elsewhere it forces fp32.
            dtype = torch.float16 if self.use_fp16 and ws.device.type == "cuda" else torch.float32
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, rng=rng, fast=fast)
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, rng=rng, fast=fast)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, rng=rng, fast=fast)
        if img is not None and self.up:
            img = (upsample_2x_fast if fast else upsample_2x)(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fast=fast).to(torch.float32)
        img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws -> (B, img_channels, R, R), blocks from 4x4 up to the resolution (EG3D: 3 x 32 plane channels)."""

    def __init__(self, config: SynthesisConfig, *, w_dim: int, img_channels: int = 3 * PLANE_CHANNELS) -> None:
        super().__init__()
        self.config = config
        self.block_resolutions = config.block_resolutions
        for resolution in self.block_resolutions:
            in_channels = config.channels_at(resolution // 2) if resolution > 4 else 0
            block = SynthesisBlock(
                in_channels,
                config.channels_at(resolution),
                w_dim=w_dim,
                resolution=resolution,
                img_channels=img_channels,
                use_fp16=resolution >= config.fp16_resolution,
                conv_clamp=config.conv_clamp,
            )
            setattr(self, f"b{resolution}", block)
        self.num_ws = config.num_ws

    def forward(
        self, ws: torch.Tensor, *, noise_mode: str = "const", rng: Rng = None, fast: bool = False, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """ws -> image (float32); ``fast`` returns it in channels-last memory format; ``dtype`` as in the blocks."""
        ws = ws.to(torch.float32)
        x = img = None
        w_index = 0
        for resolution in self.block_resolutions:
            block = getattr(self, f"b{resolution}")
            block_ws = ws.narrow(1, w_index, block.num_conv + block.num_torgb)
            w_index += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, rng=rng, fast=fast, dtype=dtype)
        return img


class TriplaneBackbone(nn.Module):
    """The StyleGAN2 generator used as EG3D's backbone (``backbone.mapping`` + ``backbone.synthesis``)."""

    def __init__(self, mapping: MappingConfig, synthesis: SynthesisConfig, *, img_channels: int = 3 * PLANE_CHANNELS) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(synthesis, w_dim=mapping.w_dim, img_channels=img_channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(mapping, num_ws=self.num_ws)
