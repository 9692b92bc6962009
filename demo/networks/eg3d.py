"""EG3D's tri-plane generator (Chan et al. 2022, "Efficient Geometry-aware 3D Generative Adversarial Networks").

mapping (z, camera label -> ws) -> StyleGAN2 backbone (ws -> three 32-channel planes) -> rays ->
stratified + importance samples -> tri-plane decoder (sigma, 32 features) -> compositing (a 32-channel
feature image and a depth image at the neural rendering resolution) -> super-resolution (final image).

The public methods mirror the official ``TriPlaneGenerator`` so scripts port with few changes:
``mapping``, ``synthesis`` (returns ``image``, ``image_raw``, ``image_depth``), ``sample``,
``sample_mixed`` and ``__call__``. Differences, on purpose: the backbone noise defaults to
``'const'``; overrides such as ``neural_rendering_resolution`` are arguments and never change the
module; randomness can come from an explicit ``rng``; cameras may be given as ``Camera`` objects.
Parameter names are those of the official checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from demo.cameras import Camera
from demo.config import PLANE_CHANNELS, GeneratorConfig
from demo.devices import cpu_is_intel
from demo.networks.layers import FullyConnectedLayer
from demo.networks.stylegan2 import TriplaneBackbone
from demo.networks.superres import SuperResolution
from demo.precision import compute_dtype, resolve_precision
from demo.render.rays import pixel_rays
from demo.render.renderer import query_field, render_rays
from demo.rng import Rng

# Keyword arguments of the official methods that have no effect at inference; accepted so ported
# scripts run unchanged.
_IGNORED_OFFICIAL_KWARGS = frozenset({"update_emas", "fused_modconv", "force_fp32", "cache_backbone", "use_cached_backbone"})


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    unknown = set(kwargs) - _IGNORED_OFFICIAL_KWARGS
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")


def softplus_(x: torch.Tensor) -> torch.Tensor:
    """``F.softplus(x)`` (beta 1, threshold 20), in place where that is faster.

    On Intel CPUs as log(1 + exp(x)) in place: there torch's ``exp`` and ``log`` run MKL's vectorised
    math and its softplus (through ``log1p``) is about 3x slower. Equal within 1e-6 (the rounding of
    1 + exp(x) is below float32's spacing at the result); inputs beyond the threshold take torch's own
    path. Elsewhere (other CPU vendors, where MKL's math is slower, and GPUs) torch's softplus.
    """
    if x.device.type != "cpu" or not cpu_is_intel() or x.numel() == 0 or bool(x.amax() > 20):
        return torch.nn.functional.softplus(x)
    return x.exp_().add_(1).log_()


class TriplaneDecoder(nn.Module):
    """The small MLP that reads averaged plane features: softplus hidden layer, 1 density + 32 features.

    Features go through sigmoid(x) * 1.002 - 0.001 (Mip-NeRF's widened sigmoid); density stays raw
    (the renderer applies softplus(x - 1)). The view direction is not an input.
    """

    def __init__(self, *, hidden: int, lr_multiplier: float, in_features: int = PLANE_CHANNELS, activation: str = "sigmoid") -> None:
        super().__init__()
        if activation not in ("sigmoid", "none", "lrelu"):
            raise ValueError(f"activation: unknown {activation!r}")
        self.activation = activation
        self.net = nn.Sequential(
            FullyConnectedLayer(in_features, hidden, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + PLANE_CHANNELS, lr_multiplier=lr_multiplier),
        )

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The first layer's linear map without its bias: (..., C) -> (..., hidden).

        The first layer is linear in the plane features, so for points on a regular grid the
        projection of each plane can be computed once per plane texel and summed (see
        ``demo.render.grid.density_grid``).
        """
        layer = self.net[0]
        return features @ (layer.weight.to(features.dtype) * layer.weight_gain).t()

    @property
    def hidden_bias(self) -> torch.Tensor:
        layer = self.net[0]
        return layer.bias * layer.bias_gain

    def sigma_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Raw sigma from the first layer's pre-activation (..., hidden) -> (...); skips the 32 features."""
        layer = self.net[2]
        weight = layer.weight[0].to(hidden.dtype) * layer.weight_gain
        return self.net[1](hidden) @ weight + layer.bias[0] * layer.bias_gain

    def forward(self, plane_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """plane_features (B, 3, M, C) -> sigma (B, M, 1), rgb (B, M, 32), in the official order of operations."""
        x = plane_features.mean(1)
        batch, num_points, channels = x.shape
        x = self.net(x.reshape(batch * num_points, channels)).reshape(batch, num_points, -1)
        return x[..., 0:1], self._activate(x[..., 1:], inplace=False)

    def decode_mean(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` from the plane average (B, M, C), as the fast renderer gathers it.

        The same layers with fewer passes over memory: biases added in place after each matrix
        product (``addmm`` broadcasts the bias into a fresh array first), activations in place when
        no gradient is recorded. Equal to ``forward`` up to float32 rounding.
        """
        batch, num_points, channels = x.shape
        first, second = self.net[0], self.net[2]
        hidden = x.reshape(-1, channels) @ (first.weight.to(x.dtype) * first.weight_gain).t()
        hidden = hidden.add_(first.bias.to(x.dtype) * first.bias_gain)
        hidden = self.net[1](hidden) if torch.is_grad_enabled() else softplus_(hidden)
        out = hidden @ (second.weight.to(x.dtype) * second.weight_gain).t()
        out = out.add_(second.bias.to(x.dtype) * second.bias_gain).view(batch, num_points, -1)
        return out[..., 0:1], self._activate(out[..., 1:], inplace=not torch.is_grad_enabled())

    def _activate(self, rgb: torch.Tensor, *, inplace: bool) -> torch.Tensor:
        """The feature activation (sigmoid widened to [-0.001, 1.001], lrelu or none)."""
        if self.activation == "sigmoid":
            if inplace:
                return rgb.sigmoid_().mul_(1 + 2 * 0.001).sub_(0.001)
            return torch.sigmoid(rgb) * (1 + 2 * 0.001) - 0.001
        if self.activation == "lrelu":
            if inplace:
                return torch.nn.functional.leaky_relu_(rgb, 0.2).mul_(math.sqrt(2))
            return torch.nn.functional.leaky_relu(rgb, 0.2) * math.sqrt(2)
        return rgb


class TriplaneGenerator(nn.Module):
    """EG3D generator built from a :class:`GeneratorConfig`; see the module docstring."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        depth = config.panohead.triplane_depth if config.panohead is not None else 1
        self.backbone = TriplaneBackbone(config.mapping, config.synthesis, img_channels=3 * PLANE_CHANNELS * depth)
        self.superresolution = SuperResolution(config.superres)
        self.decoder = TriplaneDecoder(
            hidden=config.render.decoder_hidden,
            lr_multiplier=config.render.decoder_lr_multiplier,
            activation=config.panohead.decoder_activation if config.panohead is not None else "sigmoid",
        )
        # Label statistics the official training loop registers; unused at inference.
        self.register_buffer("dataset_label_std", torch.ones([config.mapping.c_dim]))
        #: numeric precision of the backbone, decoder and super-resolution (``demo.precision``)
        self.precision = "fp32"

    def set_precision(self, precision: str) -> TriplaneGenerator:
        """Run the heavy layers at ``precision`` ("auto", "fp32", "bf16" or "fp16") on this model's device.

        Like ``.to()``, it changes how the model computes (weights stay float32) and returns the model.
        Raises InputError for a precision the device does not run natively (see ``demo.precision``).
        """
        self.precision = resolve_precision(precision, self.device)
        return self

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """The heavy layers' dtype; None at fp32 (the official rule: fp32, official fp16 SR blocks on CUDA)."""
        return None if self.precision == "fp32" else compute_dtype(self.precision)

    # --- official-style attributes -------------------------------------------------------------

    @property
    def z_dim(self) -> int:
        return self.config.mapping.z_dim

    @property
    def c_dim(self) -> int:
        return self.config.mapping.c_dim

    @property
    def w_dim(self) -> int:
        return self.config.mapping.w_dim

    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    @property
    def img_resolution(self) -> int:
        return self.config.superres.image_resolution

    @property
    def neural_rendering_resolution(self) -> int:
        return self.config.render.neural_rendering_resolution

    @property
    def rendering_kwargs(self) -> dict[str, Any]:
        """The official ``rendering_kwargs`` view of the config (a fresh dict; editing it changes nothing)."""
        render, superres = self.config.render, self.config.superres
        return {
            "image_resolution": superres.image_resolution,
            "superresolution_module": f"training.superresolution.SuperresolutionHybrid{superres.variant}",
            "superresolution_noise_mode": superres.noise_mode,
            "sr_antialias": superres.antialias,
            "c_gen_conditioning_zero": self.config.conditioning_zero,
            "c_scale": self.config.c_scale,
            "depth_resolution": render.depth_samples,
            "depth_resolution_importance": render.importance_samples,
            "ray_start": render.ray_start,
            "ray_end": render.ray_end,
            "box_warp": render.box_warp,
            "disparity_space_sampling": render.disparity_space_sampling,
            "clamp_mode": render.clamp_mode,
            "white_back": render.white_background,
            "density_noise": render.density_noise,
            "decoder_lr_mul": render.decoder_lr_multiplier,
            "avg_camera_radius": self.config.avg_camera_radius,
            "avg_camera_pivot": list(self.config.avg_camera_pivot),
            **self.config.extras,
        }

    @property
    def device(self) -> torch.device:
        return self.dataset_label_std.device

    # --- mapping -------------------------------------------------------------------------------

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | Camera,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """z (B, z_dim) and conditioning camera -> ws (B, num_ws, w_dim).

        The label is zeroed when the model was trained with zeroed conditioning and scaled by
        ``c_scale``. ``truncation_cutoff=None`` truncates every w.
        """
        _check_kwargs(kwargs)
        label = self._label(c, len(z))
        if self.config.conditioning_zero:
            label = torch.zeros_like(label)
        return self.backbone.mapping(
            z.to(self.device), label * self.config.c_scale, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff
        )

    # --- synthesis -----------------------------------------------------------------------------

    def planes(self, ws: torch.Tensor, *, noise_mode: str = "const", rng: Rng = None, fast: bool = True) -> torch.Tensor:
        """Backbone: ws -> tri-planes (B, 3, 32, R, R). Compute once per identity, render many views.

        ``fast`` (default): the backbone's fast path; the planes then have channel-last strides.
        """
        self._check_ws(ws)
        planes = self.backbone.synthesis(ws.to(self.device), noise_mode=noise_mode, rng=rng, fast=fast, dtype=self.compute_dtype)
        return planes.view(len(planes), 3, PLANE_CHANNELS, planes.shape[-2], planes.shape[-1])

    @property
    def has_separable_planes(self) -> bool:
        """Tri-plane features depend on two coordinates each, which fast regular-grid queries exploit."""
        return True

    def _render_options(self) -> dict[str, Any]:
        """Extra renderer options of this family (PanoHead crops density and keeps raw features)."""
        return {}

    def _images_from_features(
        self, feature_image: torch.Tensor, alpha_image: torch.Tensor, ws: torch.Tensor, *, noise_mode: str, rng: Rng
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Composited features -> (features for the SR, raw RGB image, extra outputs). EG3D: RGB = first 3 channels."""
        return feature_image, feature_image[:, :3], {}

    def synthesis(
        self,
        ws: torch.Tensor,
        c: torch.Tensor | Camera,
        neural_rendering_resolution: int | None = None,
        *,
        noise_mode: str = "const",
        rng: Rng = None,
        depth_samples: int | None = None,
        importance_samples: int | None = None,
        planes: torch.Tensor | None = None,
        return_extras: bool = False,
        per_sample_clamp: bool = False,
        fast: bool = True,
        superresolution: bool = True,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Render ws from the camera ``c``.

        Args:
            ws: (B, num_ws, w_dim).
            c: (B, 25) label or a :class:`Camera` of batch B (or 1, broadcast).
            neural_rendering_resolution: rays per side; default from the config. The feature image
                is resized to the super-resolution input when it differs.
            noise_mode: backbone noise, 'const' (default), 'random' or 'none'.
            rng: generator for every random draw; None uses torch's default one (official order).
            depth_samples, importance_samples: override the per-ray sample counts.
            planes: precomputed ``self.planes(ws)`` to skip the backbone.
            return_extras: also return ``feature_image`` (B, 32, r, r), ``image_alpha`` (B, 1, r, r)
                and ``planes``.
            per_sample_clamp: clamp each item's depth to its own ray samples instead of the whole
                batch's (see :func:`demo.render.renderer.render_rays`); off = official.
            fast: the fast path of backbone, renderer and super-resolution (default): the same
                random draws and the same result up to float32 rounding. False runs the plain path,
                which keeps the official code's order of operations (the reference for tests and
                benchmarks).
            superresolution: False skips the super-resolution: no ``image`` in the result (the raw
                render alone, e.g. for optimising against a downsampled target).
        Returns:
            ``image`` (B, 3, H, W) roughly in [-1, 1] (not clamped), ``image_raw`` (B, 3, r, r) and
            ``image_depth`` (B, 1, r, r), the expected distance along each ray.
        """
        _check_kwargs(kwargs)
        self._check_ws(ws)
        ws = ws.to(self.device)
        resolution = self.neural_rendering_resolution if neural_rendering_resolution is None else int(neural_rendering_resolution)
        camera = self._camera(c, len(ws))
        origins, directions = pixel_rays(camera.cam2world, camera.intrinsics, resolution)
        if planes is None:
            planes = self.planes(ws, noise_mode=noise_mode, rng=rng, fast=fast)
        result = render_rays(
            planes, self.decoder, origins, directions, self.config.render,
            depth_samples=depth_samples, importance_samples=importance_samples, rng=rng,
            per_sample_clamp=per_sample_clamp, fast=fast, **self._render_options(),
        )
        batch = len(ws)
        feature_image = result.features.permute(0, 2, 1).reshape(batch, -1, resolution, resolution).contiguous()
        depth_image = result.depth.permute(0, 2, 1).reshape(batch, 1, resolution, resolution)
        alpha_image = result.alpha.permute(0, 2, 1).reshape(batch, 1, resolution, resolution)
        feature_image, rgb_image, family_outputs = self._images_from_features(
            feature_image, alpha_image, ws, noise_mode=noise_mode, rng=rng
        )
        out = {"image_raw": rgb_image, "image_depth": depth_image, **family_outputs}
        if superresolution:
            out["image"] = self.superresolution(rgb_image, feature_image, ws, rng=rng, fast=fast, dtype=self.compute_dtype)
        if return_extras:
            out["feature_image"] = feature_image
            out["image_alpha"] = alpha_image
            out["planes"] = planes
        return out

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | Camera,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        neural_rendering_resolution: int | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """mapping then synthesis, both with camera ``c`` (as the official ``G(z, c)``)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, neural_rendering_resolution, **kwargs)

    # --- density queries -----------------------------------------------------------------------

    def sample(
        self,
        coordinates: torch.Tensor,
        directions: torch.Tensor,
        z: torch.Tensor,
        c: torch.Tensor | Camera,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        *,
        noise_mode: str = "const",
        rng: Rng = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Raw ``sigma`` (B, M, 1) and ``rgb`` features (B, M, 32) at world points (B, M, 3) for latents z."""
        _check_kwargs(kwargs)
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.sample_mixed(coordinates, directions, ws, noise_mode=noise_mode, rng=rng)

    def sample_mixed(
        self,
        coordinates: torch.Tensor,
        directions: torch.Tensor | None,
        ws: torch.Tensor,
        *,
        noise_mode: str = "const",
        rng: Rng = None,
        planes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Like :meth:`sample` from ws. ``directions`` is accepted for compatibility and ignored."""
        _check_kwargs(kwargs)
        if planes is None:
            planes = self.planes(ws, noise_mode=noise_mode, rng=rng)
        sigma, rgb = query_field(planes, self.decoder, coordinates.to(planes.device, planes.dtype), self.config.render, rng=rng)
        return {"sigma": sigma, "rgb": rgb}

    # --- helpers -------------------------------------------------------------------------------

    def _as_label(self, c: torch.Tensor | Camera, batch: int, width: int) -> torch.Tensor:
        """Camera or label-like -> (batch, width) float32 label on the model's device (a batch of 1 broadcasts)."""
        label = c.to_label() if isinstance(c, Camera) else torch.as_tensor(c)
        label = label.to(self.device, torch.float32)
        if label.ndim == 1:
            label = label.unsqueeze(0)
        if label.ndim != 2 or label.shape[1] != width:
            raise ValueError(f"c: expected a (B, {width}) camera label, got shape {tuple(label.shape)}")
        if label.shape[0] == 1 and batch > 1:
            label = label.expand(batch, -1)
        if label.shape[0] != batch:
            raise ValueError(f"c: batch {label.shape[0]} does not match the latent batch {batch}")
        return label

    def _label(self, c: torch.Tensor | Camera, batch: int) -> torch.Tensor:
        if self.c_dim == 0:
            return torch.zeros([batch, 0], device=self.device)
        return self._as_label(c, batch, self.c_dim)

    def _camera(self, c: torch.Tensor | Camera, batch: int) -> Camera:
        label = self._as_label(c, batch, 25)
        return Camera(cam2world=label[:, :16].reshape(-1, 4, 4), intrinsics=label[:, 16:25].reshape(-1, 3, 3))

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws: expected shape (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
