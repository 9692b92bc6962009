"""PanoHead (An et al. 2023, "PanoHead: Geometry-Aware 3D Full-Head Synthesis in 360°") on top of EG3D.

What it changes, each an override of :class:`~demo.networks.eg3d.TriplaneGenerator`:

- **Tri-grid.** The backbone draws 3 x 32 x D channels; each plane is a thin volume of D slices
  (channel = feature x D + slice) sampled trilinearly (``demo.render.planes.sample_trigrid``).
- **Density crop.** Renders force density -1000 where |x| or |z| > box_warp / 2 - 0.1 (both passes);
  ``sample``/``sample_mixed`` do not crop.
- **Raw decoder features.** With decoder activation 'none' the 32 features are not squashed and the
  compositor does not map them to [-1, 1] (only a sigmoid decoder gets that).
- **Background.** A second StyleGAN2 synthesis network paints 32 feature channels from the first
  ws; resized to the render resolution, it fills in where the head is transparent:
  features + (1 - alpha) x background.
- **Raw image by ToRGB.** ``image_raw`` is a modulated 1x1 conv of the feature image with the last w.
- **Mask.** ``image_mask`` = alpha x 1.002 - 0.001.
- **Camera offset.** ``t_mapping`` predicts a translation offset from (z, c); ``forward`` adds it to the
  render camera, ``mapping`` + ``synthesis`` (what the sampling and video scripts use) do not.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from demo.cameras import Camera
from demo.config import PLANE_CHANNELS, GeneratorConfig, MappingConfig
from demo.networks.eg3d import TriplaneGenerator
from demo.networks.layers import ToRGBLayer
from demo.networks.stylegan2 import MappingNetwork, SynthesisNetwork
from demo.rng import Rng

#: Entries of the 25-number label holding the camera translation (row-major cam2world).
TRANSLATION_ENTRIES = (3, 7, 11)


class PanoHeadGenerator(TriplaneGenerator):
    """A 360-degree full-head generator; see the module docstring for what differs from EG3D."""

    def __init__(self, config: GeneratorConfig) -> None:
        if config.panohead is None:
            raise ValueError("config.panohead: a PanoHead generator needs PanoHead options")
        super().__init__(config)
        options = config.panohead
        w_dim = config.mapping.w_dim
        if options.use_torgb_raw:
            self.torgb = ToRGBLayer(PLANE_CHANNELS, 3, w_dim=w_dim)
        if options.use_background:
            self.bcg_synthesis = SynthesisNetwork(options.background_synthesis, w_dim=w_dim, img_channels=PLANE_CHANNELS)
        if options.use_camera_offset:
            offset = MappingConfig(
                z_dim=config.mapping.z_dim, c_dim=config.mapping.c_dim, w_dim=3, num_layers=2, lr_multiplier=1.0, last_linear=True
            )
            self.t_mapping = MappingNetwork(offset, num_ws=1)

    @property
    def has_separable_planes(self) -> bool:
        return False

    def planes(self, ws: torch.Tensor, *, noise_mode: str = "const", rng: Rng = None, fast: bool = True) -> torch.Tensor:
        """Backbone: ws -> tri-grids (B, 3, 32, D, R, R); ``fast`` as in ``TriplaneGenerator.planes``."""
        self._check_ws(ws)
        raw = self.backbone.synthesis(ws.to(self.device), noise_mode=noise_mode, rng=rng, fast=fast, dtype=self.compute_dtype)
        depth = self.config.panohead.triplane_depth
        return raw.view(len(raw), 3, PLANE_CHANNELS, depth, raw.shape[-2], raw.shape[-1])

    def _render_options(self) -> dict[str, Any]:
        return {"density_crop": self.config.panohead.density_crop, "signed": self.config.panohead.decoder_activation == "sigmoid"}

    def _images_from_features(self, feature_image, alpha_image, ws, *, noise_mode: str, rng: Rng):
        options = self.config.panohead
        if options.use_background:
            background = self.background(ws, noise_mode=noise_mode, rng=rng)
            size = feature_image.shape[-1]
            background = F.interpolate(
                background, size=(size, size), mode="bilinear", align_corners=False, antialias=self.config.superres.antialias
            )
            feature_image = feature_image + (1 - alpha_image) * background
        rgb_image = self.torgb(feature_image, ws[:, -1]) if options.use_torgb_raw else feature_image[:, :3]
        return feature_image, rgb_image, {"image_mask": alpha_image * (1 + 2 * 0.001) - 0.001}

    def background(self, ws: torch.Tensor, *, noise_mode: str = "const", rng: Rng = None) -> torch.Tensor:
        """The background network's 32-channel feature image from the first ws: (B, 32, r_bg, r_bg)."""
        return self.bcg_synthesis(ws[:, : self.bcg_synthesis.num_ws], noise_mode=noise_mode, rng=rng)

    def camera_offset(
        self, z: torch.Tensor, c: torch.Tensor | Camera, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        """t_mapping: the learned translation offset (B, 3) for latents z seen from camera c.

        Truncation works as in :meth:`mapping` (towards t_mapping's own average); ``forward`` passes
        its truncation on, the official projector uses none.
        """
        if not self.config.panohead.use_camera_offset:
            return torch.zeros(len(z), 3, device=self.device)
        label = self._label(c, len(z))
        offset = self.t_mapping(
            z.to(self.device), label * self.config.c_scale, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff
        )
        return offset[:, 0]

    def offset_camera(
        self, z: torch.Tensor, c: torch.Tensor | Camera, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        """The render label with :meth:`camera_offset` added to its translation, (B, 25)."""
        label = self._as_label(c, len(z), 25).clone()
        label[:, list(TRANSLATION_ENTRIES)] += self.camera_offset(z, label, truncation_psi, truncation_cutoff)
        return label

    def forward(self, z, c, truncation_psi=1.0, truncation_cutoff=None, neural_rendering_resolution=None, **kwargs):
        """mapping with c, then synthesis from c shifted by the learned camera offset (the official forward)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        camera = self.offset_camera(z, c, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, camera, neural_rendering_resolution, **kwargs)


def build_generator(config: GeneratorConfig) -> TriplaneGenerator:
    """The generator class for a config: PanoHead when it has PanoHead options, else EG3D."""
    return PanoHeadGenerator(config) if config.panohead is not None else TriplaneGenerator(config)


__all__ = ["PanoHeadGenerator", "build_generator"]
