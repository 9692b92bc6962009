"""Architecture configuration of a tri-plane generator (EG3D, Chan et al. 2022).

Each component has a frozen dataclass whose fields document one hyperparameter; they compose into
:class:`GeneratorConfig`. The official checkpoints carry these values as ``init_kwargs`` and
``rendering_kwargs``; :mod:`demo.weights.convert` reads them into this form, so nothing about FFHQ
is hard-coded in the networks. ``GeneratorConfig.tiny()`` is a small random model for tests and for
trying the tools without weights.

This module imports only the standard library (layer 0).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

#: Feature channels per plane. Hard-coded to 32 in the official generator (3 planes x 32 = 96).
PLANE_CHANNELS = 32

#: Importance sampling reads the interior D - 3 smoothed coarse weights, so it needs D >= 4.
MIN_DEPTH_SAMPLES_FOR_IMPORTANCE = 4

SuperResVariant = Literal["2X", "4X", "8X", "8XDC"]
NoiseMode = Literal["const", "random", "none"]

# Official super-resolution classes: (upsamples in block0, block channels, input = output / factor,
# resize rule, registers a ``resample_filter`` buffer on the module itself).
_SUPERRES_VARIANTS: dict[str, tuple[bool, tuple[int, int], int, str, bool]] = {
    "2X": (False, (128, 64), 2, "mismatch", True),
    "4X": (False, (128, 64), 2, "smaller", True),
    "8X": (True, (128, 64), 4, "mismatch", True),
    "8XDC": (True, (256, 128), 4, "mismatch", False),
}


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{name}: {message}")


def _within(value: Any, name: str, low: float, high: float, *, integer: bool = True) -> None:
    """A number (an int where ``integer``) in [low, high]: checked before anything is built from a config, so a
    checkpoint cannot ask for a model that exhausts memory."""
    kinds = (int,) if integer else (int, float)
    _check(isinstance(value, kinds) and not isinstance(value, bool), name, f"must be a{'n integer' if integer else ' number'}, got {value!r}")
    _check(math.isfinite(value) and low <= value <= high, name, f"must be from {low:g} to {high:g}, got {value!r}")


@dataclass(frozen=True)
class MappingConfig:
    """StyleGAN2 mapping network z (+ camera label c) -> w."""

    z_dim: int = 512
    """Latent size; official checkpoints use 512."""
    c_dim: int = 25
    """Conditioning label size (16 cam2world + 9 intrinsics); 0 disables the camera embedding."""
    w_dim: int = 512
    """Intermediate latent size."""
    num_layers: int = 2
    """Fully connected layers after the [z, embed(c)] concatenation (EG3D uses 2, StyleGAN2 8)."""
    embed_features: int | None = None
    """Width of the label embedding; None means w_dim (0 when c_dim is 0)."""
    layer_features: int | None = None
    """Width of the hidden layers; None means w_dim."""
    lr_multiplier: float = 0.01
    """Equalized-learning-rate multiplier of the fc layers (scales weights and biases)."""
    w_avg_beta: float | None = 0.998
    """Decay of the tracked w average (training only; kept for provenance)."""
    last_linear: bool = False
    """The last fc layer has no activation (PanoHead's camera-offset mapping)."""

    def __post_init__(self) -> None:
        _within(self.z_dim, "z_dim", 0, 4096)
        _within(self.c_dim, "c_dim", 0, 1024)
        _within(self.w_dim, "w_dim", 1, 4096)
        _within(self.num_layers, "num_layers", 1, 64)
        for name in ("embed_features", "layer_features"):
            if getattr(self, name) is not None:
                _within(getattr(self, name), name, 1, 4096)
        _check(self.z_dim + self.c_dim > 0, "z_dim", "z_dim and c_dim cannot both be 0")

    @property
    def resolved_embed_features(self) -> int:
        if self.c_dim == 0:
            return 0
        return self.w_dim if self.embed_features is None else self.embed_features

    @property
    def resolved_layer_features(self) -> int:
        return self.w_dim if self.layer_features is None else self.layer_features


@dataclass(frozen=True)
class SynthesisConfig:
    """StyleGAN2 synthesis network ('skip' architecture) that outputs the three feature planes."""

    resolution: int = 256
    """Side of each feature plane (the official TriPlaneGenerator fixes 256)."""
    channel_base: int = 32768
    """Channels at resolution r are min(channel_base // r, channel_max)."""
    channel_max: int = 512
    num_fp16_res: int = 0
    """Number of highest resolutions that run in float16 on CUDA (official EG3D: 0)."""
    conv_clamp: float | None = None
    """Clamp of conv outputs (times the activation gain); None disables it."""

    def __post_init__(self) -> None:
        _within(self.resolution, "resolution", 4, 2048)
        _check(
            2 ** int(math.log2(self.resolution)) == self.resolution, "resolution", f"must be a power of two >= 4, got {self.resolution}"
        )
        _within(self.channel_base, "channel_base", 1, 1 << 20)
        _within(self.channel_max, "channel_max", 1, 4096)
        _within(self.num_fp16_res, "num_fp16_res", 0, 16)

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    def channels_at(self, resolution: int) -> int:
        return min(self.channel_base // resolution, self.channel_max)

    @property
    def fp16_resolution(self) -> int:
        return max(2 ** (int(math.log2(self.resolution)) + 1 - self.num_fp16_res), 8)

    @property
    def num_ws(self) -> int:
        """ws consumed: one conv at 4x4, two per later block, plus the last block's ToRGB."""
        return 1 + 2 * (len(self.block_resolutions) - 1) + 1


@dataclass(frozen=True)
class RenderConfig:
    """Tri-plane decoder, ray sampling and volume rendering (``rendering_kwargs`` officially)."""

    neural_rendering_resolution: int = 128
    """Rays per image side; the feature image the super-resolution module upsamples."""
    depth_samples: int = 48
    """Stratified samples per ray (``depth_resolution``)."""
    importance_samples: int = 48
    """Extra samples per ray drawn from the coarse weights (``depth_resolution_importance``)."""
    ray_start: float | Literal["auto"] = 2.25
    """Near bound along each unit ray, world units; 'auto' (with ray_end) uses the box's entry."""
    ray_end: float | Literal["auto"] = 3.3
    """Far bound along each unit ray, world units; 'auto' uses the box's exit."""
    box_warp: float = 1.0
    """Side of the cube the planes span, world units; coordinates are scaled by 2 / box_warp."""
    disparity_space_sampling: bool = False
    """Stratify in inverse depth instead of depth."""
    clamp_mode: Literal["softplus"] = "softplus"
    """Density activation: softplus(sigma - 1), the only mode of the official renderer."""
    white_background: bool = False
    """Composite over white (1 - accumulated weight is added to the features)."""
    density_noise: float = 0.0
    """Std of Gaussian noise added to raw sigma (training regulariser; 0 at inference)."""
    decoder_hidden: int = 64
    """Hidden width of the tri-plane decoder MLP."""
    decoder_lr_multiplier: float = 1.0
    """Equalized-lr multiplier of the decoder layers."""

    def __post_init__(self) -> None:
        _within(self.neural_rendering_resolution, "neural_rendering_resolution", 1, 2048)
        _within(self.depth_samples, "depth_samples", 2, 4096)
        _within(self.importance_samples, "importance_samples", 0, 4096)
        _within(self.box_warp, "box_warp", 1e-6, 1e6, integer=False)
        _check(
            self.importance_samples == 0 or self.depth_samples >= MIN_DEPTH_SAMPLES_FOR_IMPORTANCE,
            "depth_samples",
            f"must be >= {MIN_DEPTH_SAMPLES_FOR_IMPORTANCE} when importance_samples > 0",
        )
        _check(self.importance_samples >= 0, "importance_samples", "must be >= 0")
        _check(self.box_warp > 0, "box_warp", "must be > 0")
        auto = (self.ray_start == "auto", self.ray_end == "auto")
        _check(auto[0] == auto[1], "ray_start", "ray_start and ray_end must both be 'auto' or both numbers")
        if not auto[0]:
            _within(self.ray_start, "ray_start", 0, 1e6, integer=False)
            _within(self.ray_end, "ray_end", 0, 1e6, integer=False)
            _check(float(self.ray_end) > float(self.ray_start), "ray_end", "must be greater than ray_start")
        _check(self.clamp_mode == "softplus", "clamp_mode", "only 'softplus' exists in EG3D")

    @property
    def uses_box_limits(self) -> bool:
        return self.ray_start == "auto"


@dataclass(frozen=True)
class SuperResConfig:
    """Style-modulated super-resolution head: feature image -> final image."""

    variant: SuperResVariant = "8XDC"
    """Official class: SuperresolutionHybrid2X, 4X, 8X or 8XDC."""
    image_resolution: int = 512
    """Output side."""
    in_channels: int = PLANE_CHANNELS
    """Channels of the feature image."""
    block_channels: tuple[int, int] | None = None
    """Output channels of the two blocks; None means the official values of the variant."""
    w_dim: int = 512
    """Style size (the official classes fix 512)."""
    num_fp16_res: int = 4
    """Official ``sr_num_fp16_res``: any value > 0 runs both blocks in fp16 on CUDA and clamps at 256."""
    antialias: bool = True
    """Antialias of the bilinear resize when the feature image is not at the input resolution."""
    noise_mode: NoiseMode = "none"
    """Noise of the SR layers (official ``superresolution_noise_mode``)."""

    def __post_init__(self) -> None:
        _check(self.variant in _SUPERRES_VARIANTS, "variant", f"unknown {self.variant!r}; use one of {sorted(_SUPERRES_VARIANTS)}")
        _within(self.image_resolution, "image_resolution", 1, 4096)
        _check(self.image_resolution % self.upsample_factor == 0, "image_resolution", f"must be divisible by {self.upsample_factor}")
        _check(self.noise_mode in ("const", "random", "none"), "noise_mode", f"unknown {self.noise_mode!r}")
        if self.block_channels is not None:
            object.__setattr__(self, "block_channels", tuple(int(c) for c in self.block_channels))

    @property
    def upsample_factor(self) -> int:
        return _SUPERRES_VARIANTS[self.variant][2]

    @property
    def input_resolution(self) -> int:
        return self.image_resolution // self.upsample_factor

    @property
    def first_block_upsamples(self) -> bool:
        return _SUPERRES_VARIANTS[self.variant][0]

    @property
    def channels(self) -> tuple[int, int]:
        return self.block_channels or _SUPERRES_VARIANTS[self.variant][1]

    @property
    def resizes_only_when_smaller(self) -> bool:
        """4X resizes only a smaller feature image; the others resize on any mismatch."""
        return _SUPERRES_VARIANTS[self.variant][3] == "smaller"

    @property
    def has_resample_filter(self) -> bool:
        return _SUPERRES_VARIANTS[self.variant][4]

    @property
    def use_fp16(self) -> bool:
        return self.num_fp16_res > 0

    @property
    def conv_clamp(self) -> float | None:
        return 256.0 if self.use_fp16 else None


DecoderActivation = Literal["sigmoid", "none", "lrelu"]


@dataclass(frozen=True)
class PanoHeadConfig:
    """What PanoHead (An et al. 2023) adds to EG3D: tri-grid, background, raw ToRGB, camera offset."""

    triplane_depth: int = 3
    """Depth slices D of each tri-grid plane (1 for the ablation model; still a 3-D lookup)."""
    decoder_activation: DecoderActivation = "none"
    """Activation of the 32 decoder features: 'none' (PanoHead), 'sigmoid' (EG3D) or 'lrelu'."""
    use_torgb_raw: bool = True
    """``image_raw`` from a modulated 1x1 conv of the feature image (else its first 3 channels)."""
    use_background: bool = True
    """A second StyleGAN2 synthesis network paints the background behind the head."""
    background_resolution: int = 128
    """Side of the background feature image (official: 128)."""
    background_channel_base: int = 16384
    """channel_base of the background network (official: half the backbone's)."""
    background_channel_max: int = 512
    density_crop: float | None = 0.4
    """Renders force density -1000 where |x| or |z| exceeds this (official: box_warp / 2 - 0.1)."""
    use_camera_offset: bool = True
    """A small mapping network (t_mapping) predicts a camera translation offset used by ``forward``."""

    def __post_init__(self) -> None:
        _within(self.triplane_depth, "triplane_depth", 1, 256)
        _check(self.decoder_activation in ("sigmoid", "none", "lrelu"), "decoder_activation", f"unknown {self.decoder_activation!r}")

    @property
    def background_synthesis(self) -> SynthesisConfig:
        return SynthesisConfig(
            resolution=self.background_resolution,
            channel_base=self.background_channel_base,
            channel_max=self.background_channel_max,
            num_fp16_res=0,
        )


@dataclass(frozen=True)
class GeneratorConfig:
    """A whole tri-plane generator: mapping -> backbone -> planes -> rendering -> super-resolution."""

    mapping: MappingConfig = field(default_factory=MappingConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    superres: SuperResConfig = field(default_factory=SuperResConfig)
    conditioning_zero: bool = False
    """Official ``c_gen_conditioning_zero``: the mapping sees an all-zero camera label."""
    c_scale: float = 1.0
    """The camera label is multiplied by this before the mapping."""
    avg_camera_radius: float = 2.7
    """Distance of the camera from the world origin in training, world units."""
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    """Point the training cameras look at, world units."""
    focal_length: float = 4.2647
    """Normalised focal length of the training cameras (4.2647 FFHQ/AFHQ, 1.7074 ShapeNet)."""
    panohead: PanoHeadConfig | None = None
    """PanoHead's additions; None for EG3D."""
    extras: dict[str, Any] = field(default_factory=dict, compare=False)
    """Training-only rendering options carried for provenance (gpc_reg_prob, density_reg, ...)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "avg_camera_pivot", tuple(float(v) for v in self.avg_camera_pivot))
        _check(len(self.avg_camera_pivot) == 3, "avg_camera_pivot", "must have 3 numbers")
        _check(self.superres.w_dim == self.mapping.w_dim, "superres.w_dim", f"must equal mapping.w_dim ({self.mapping.w_dim})")
        _within(self.focal_length, "focal_length", 1e-6, 1e3, integer=False)
        _within(self.avg_camera_radius, "avg_camera_radius", 1e-6, 1e6, integer=False)
        _check(all(math.isfinite(v) for v in self.avg_camera_pivot), "avg_camera_pivot", "must be finite")

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    @property
    def family(self) -> str:
        return "panohead" if self.panohead is not None else "eg3d"

    @property
    def is_full_head(self) -> bool:
        """Trained on 360-degree views (back of the head included)."""
        return self.panohead is not None

    @property
    def image_resolution(self) -> int:
        return self.superres.image_resolution

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        parts = {
            "mapping": MappingConfig,
            "synthesis": SynthesisConfig,
            "render": RenderConfig,
            "superres": SuperResConfig,
            "panohead": PanoHeadConfig,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"GeneratorConfig: unknown keys {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts and value is None:
                kwargs[key] = None
            elif key in parts:
                sub_known = {f.name for f in dataclasses.fields(parts[key])}
                sub_unknown = set(value) - sub_known
                if sub_unknown:
                    raise ValueError(f"GeneratorConfig.{key}: unknown keys {sorted(sub_unknown)}")
                kwargs[key] = parts[key](**value)
            else:
                kwargs[key] = value
        if "avg_camera_pivot" in kwargs:
            kwargs["avg_camera_pivot"] = tuple(kwargs["avg_camera_pivot"])
        return cls(**kwargs)

    # --- presets -------------------------------------------------------------------------------

    @classmethod
    def tiny(cls) -> GeneratorConfig:
        """A small random-weight model: 32 px output from 16 px rendering, channels capped at 16.

        A forward pass takes well under a second on a CPU. Not a face model: for tests, smoke runs
        and interface previews.
        """
        return cls(
            mapping=MappingConfig(z_dim=16, c_dim=25, w_dim=16, num_layers=2),
            synthesis=SynthesisConfig(resolution=32, channel_base=256, channel_max=16),
            render=RenderConfig(neural_rendering_resolution=16, depth_samples=6, importance_samples=6),
            superres=SuperResConfig(variant="2X", image_resolution=32, block_channels=(16, 16), w_dim=16),
        )

    @classmethod
    def ffhq512(cls) -> GeneratorConfig:
        """The official FFHQ / FFHQ-rebalanced 512 generator (neural rendering at 128)."""
        return cls(extras={"gpc_reg_prob": 0.5, "density_reg": 0.25, "density_reg_p_dist": 0.004, "reg_type": "l1"})

    @classmethod
    def afhq512(cls) -> GeneratorConfig:
        """The official AFHQv2 cats 512 generator."""
        return dataclasses.replace(cls.ffhq512(), avg_camera_pivot=(0.0, 0.0, -0.06), extras={"gpc_reg_prob": 0.8})

    @classmethod
    def panohead512(cls) -> GeneratorConfig:
        """The released PanoHead generator (easy-khair-180): tri-grid depth 3, background, 8XDC SR, rendering at 64."""
        return cls(
            render=RenderConfig(neural_rendering_resolution=64),
            avg_camera_pivot=(0.0, 0.0, 0.2),
            panohead=PanoHeadConfig(),
            extras={"gpc_reg_prob": 0.7, "density_reg": 0.0, "density_reg_p_dist": 0.004, "reg_type": "l1", "trans_reg": 10.0},
        )

    @classmethod
    def tiny_panohead(cls) -> GeneratorConfig:
        """A small random PanoHead-style model (tri-grid depth 2, background, camera offset) for tests."""
        tiny = cls.tiny()
        return dataclasses.replace(
            tiny,
            panohead=PanoHeadConfig(
                triplane_depth=2, background_resolution=16, background_channel_base=128, background_channel_max=16,
            ),
        )

    @classmethod
    def shapenet128(cls) -> GeneratorConfig:
        """The official ShapeNet cars 128 generator (white background, zeroed conditioning)."""
        return cls(
            render=RenderConfig(
                neural_rendering_resolution=64,
                depth_samples=64,
                importance_samples=64,
                ray_start=0.1,
                ray_end=2.6,
                box_warp=1.6,
                white_background=True,
            ),
            superres=SuperResConfig(variant="2X", image_resolution=128),
            conditioning_zero=True,
            avg_camera_radius=1.7,
            avg_camera_pivot=(0.0, 0.0, 0.0),
            focal_length=1.7074,
        )
