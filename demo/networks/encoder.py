"""Image -> latent encoder for inversion: a face crop to ws (and the camera's yaw and pitch).

The encoder replaces the slow first stage of GAN inversion with one forward pass, as the
regressors of the EG3D code-regressor project and the 3D-inversion encoders (pSp/e4e-style
encoders for EG3D, GOAE, TriPlaneNet) do. Two variants share one interface:

``conv``
    A convolutional contracting path (the encoder half of a UNet, without the decoder): a stem
    convolution and one residual stage per width, each halving the resolution. The last stage is
    pooled to a small grid and flattened, the two stages before it are pooled globally, and an MLP
    turns the concatenation into one feature vector.
``vit``
    A Vision Transformer (Dosovitskiy et al. 2021): non-overlapping patches, a learned position
    embedding and pre-norm transformer blocks. ``num_ws`` learned query tokens (one per w) and one
    camera token attend to the patches; each w token is read out as that w.

Output conventions
------------------
- ``ws`` (B, num_ws, w_dim) = ``w_avg + delta``: the heads are zero-initialised, so an untrained
  encoder predicts ``w_avg`` (the buffer, set by the trainer to the generator's average w).
- ``yaw``, ``pitch`` (B,) in radians, offsets from the frontal view in the conventions of
  ``demo/cameras.py`` (positive yaw puts the camera at +x, negative pitch puts it above the face).
  Each angle is predicted as an unnormalised (sin, cos) pair and read with atan2, which is smooth
  everywhere and covers the full turn of 360-degree models; untrained, both are 0.

Input: images (B, 3, H, W) in [-1, 1]; anything other than ``image_size`` is resized with
antialiased bilinear filtering. Layer 2: torch only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

EncoderKind = Literal["conv", "vit"]
ENCODER_KINDS = ("conv", "vit")


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"EncoderConfig.{name}: {message}")


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of an :class:`ImageEncoder`."""

    kind: EncoderKind = "conv"
    """'conv' (convolutional contracting path) or 'vit' (Vision Transformer)."""
    image_size: int = 256
    """Input resolution; other sizes are resized to it."""
    num_ws: int = 14
    """Number of ws of the generator (14 for EG3D at 512)."""
    w_dim: int = 512
    """Size of one w."""
    predicts_camera: bool = True
    """Also predict yaw and pitch."""
    hidden: int = 512
    """Width of the feature vector that feeds the heads (conv) / of nothing (vit uses ``width``)."""
    conv_widths: tuple[int, ...] = (32, 64, 128, 256, 512, 512)
    """conv: channels of the stem, then of each stage; every stage halves the resolution."""
    conv_pool: int = 4
    """conv: the last stage is average-pooled to conv_pool x conv_pool and flattened."""
    patch_size: int = 16
    """vit: side of a patch in pixels; image_size must be a multiple of it."""
    width: int = 512
    """vit: token width."""
    depth: int = 8
    """vit: transformer blocks."""
    heads: int = 8
    """vit: attention heads; width must be a multiple of it."""
    mlp_ratio: float = 4.0
    """vit: hidden width of each block's MLP relative to ``width``."""

    def __post_init__(self) -> None:
        _check(self.kind in ENCODER_KINDS, "kind", f"expected one of {ENCODER_KINDS}, got {self.kind!r}")
        _check(self.image_size >= 8, "image_size", f"must be >= 8, got {self.image_size}")
        _check(self.num_ws >= 1, "num_ws", f"must be >= 1, got {self.num_ws}")
        _check(self.w_dim >= 1, "w_dim", f"must be >= 1, got {self.w_dim}")
        _check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        if self.kind == "conv":
            _check(len(self.conv_widths) >= 2, "conv_widths", "needs a stem width and at least one stage")
            _check(all(w >= 1 for w in self.conv_widths), "conv_widths", "widths must be >= 1")
            stages = len(self.conv_widths) - 1
            _check(
                self.image_size % (2**stages) == 0 and self.image_size // 2**stages >= self.conv_pool,
                "conv_widths",
                f"{stages} stages halve {self.image_size} px below the pooled grid of {self.conv_pool}",
            )
            _check(self.conv_pool >= 1, "conv_pool", "must be >= 1")
        else:
            _check(self.patch_size >= 1 and self.image_size % self.patch_size == 0, "patch_size",
                   f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
            _check(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")
            _check(self.heads >= 1 and self.width % self.heads == 0, "heads",
                   f"width {self.width} must be a multiple of heads {self.heads}")
            _check(self.mlp_ratio > 0, "mlp_ratio", "must be > 0")

    @classmethod
    def tiny(cls, kind: EncoderKind = "conv", *, num_ws: int = 8, w_dim: int = 16, image_size: int = 32) -> EncoderConfig:
        """A small encoder for the tiny generator (``GeneratorConfig.tiny()``: 8 ws of 16, 32 px)."""
        return cls(
            kind=kind, image_size=image_size, num_ws=num_ws, w_dim=w_dim, hidden=64,
            conv_widths=(16, 32, 64, 64), conv_pool=4, patch_size=4, width=64, depth=2, heads=4, mlp_ratio=2.0,
        )

    @classmethod
    def for_generator(cls, num_ws: int, w_dim: int, kind: EncoderKind = "conv", **overrides: Any) -> EncoderConfig:
        """Defaults of ``kind`` sized for a generator with ``num_ws`` ws of ``w_dim``."""
        return cls(kind=kind, num_ws=num_ws, w_dim=w_dim, **overrides)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["conv_widths"] = list(self.conv_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"EncoderConfig: unknown keys {sorted(unknown)}")
        data = dict(data)
        if "conv_widths" in data:
            data["conv_widths"] = tuple(int(w) for w in data["conv_widths"])
        return cls(**data)


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(channels, 32)
    return nn.GroupNorm(groups, channels)


class ResidualDownBlock(nn.Module):
    """norm -> lrelu -> 3x3 conv, twice, then 2x average pooling; a 1x1 conv on the skip path."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm0 = _group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = _group_norm(out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.leaky_relu(self.norm0(x), 0.2))
        h = self.conv1(F.leaky_relu(self.norm1(h), 0.2))
        # Scaled sum keeps the activations' variance roughly constant with depth.
        return F.avg_pool2d(h + self.skip(x), 2) / math.sqrt(2)


class ConvBackbone(nn.Module):
    """Contracting path: image (B, 3, S, S) -> feature vector (B, hidden)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        widths = config.conv_widths
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        self.stages = nn.ModuleList(ResidualDownBlock(a, b) for a, b in itertools.pairwise(widths))
        self.pool = config.conv_pool
        self.final_norm = _group_norm(widths[-1])
        # Globally pooled features of up to two earlier stages join the last stage's grid.
        self.num_pooled = min(2, len(self.stages) - 1)
        pooled = sum(widths[-1 - k] for k in range(1, self.num_pooled + 1))
        self.fc = nn.Linear(widths[-1] * self.pool**2 + pooled, config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        last = F.adaptive_avg_pool2d(F.leaky_relu(self.final_norm(features[-1]), 0.2), self.pool).flatten(1)
        pooled = [features[-1 - k].mean(dim=(2, 3)) for k in range(1, self.num_pooled + 1)]
        return F.leaky_relu(self.fc(torch.cat([last, *pooled], dim=1)), 0.2)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm0 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width)
        hidden = max(1, round(width * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(self.norm0(x)).reshape(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, width/heads)
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, tokens, width))
        return x + self.mlp(self.norm1(x))


class VitBackbone(nn.Module):
    """Patches + learned positions + query tokens -> (B, num_ws + 1, width) query outputs."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        width = config.width
        self.patch_embed = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size)
        num_patches = (config.image_size // config.patch_size) ** 2
        self.position = nn.Parameter(torch.randn(1, num_patches, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, config.num_ws + 1, width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(width, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2) + self.position
        queries = self.queries.expand(len(x), -1, -1)
        tokens = torch.cat([queries, patches], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, : queries.shape[1]])


class ImageEncoder(nn.Module):
    """Image (B, 3, H, W) in [-1, 1] -> dict with ``ws`` and, if configured, ``yaw`` and ``pitch``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        if config.kind == "conv":
            self.backbone = ConvBackbone(config)
            self.ws_head = nn.Linear(config.hidden, config.num_ws * config.w_dim)
            feature_width = config.hidden
        else:
            self.backbone = VitBackbone(config)
            self.ws_head = nn.Linear(config.width, config.w_dim)  # shared by the w tokens
            feature_width = config.width
        self.camera_head = nn.Linear(feature_width, 4) if config.predicts_camera else None
        self.register_buffer("w_avg", torch.zeros(config.w_dim))
        self.reset_heads()

    def reset_heads(self) -> None:
        """Zero the heads: the encoder then predicts ``w_avg`` and the frontal camera."""
        with torch.no_grad():
            self.ws_head.weight.zero_()
            self.ws_head.bias.zero_()
            if self.camera_head is not None:
                self.camera_head.weight.zero_()
                self.camera_head.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0]))  # (sin, cos) of yaw, pitch

    def set_w_avg(self, w_avg: torch.Tensor) -> None:
        """Set the latent the predictions are offsets from, (w_dim,)."""
        if tuple(w_avg.shape) != (self.config.w_dim,):
            raise ValueError(f"w_avg: expected shape ({self.config.w_dim},), got {tuple(w_avg.shape)}")
        with torch.no_grad():
            self.w_avg.copy_(w_avg.to(self.w_avg))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check (B, 3, H, W) and resize to ``image_size`` (antialiased bilinear) on the encoder's device."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, H, W), got {tuple(images.shape)}")
        images = images.to(self.w_avg.device, torch.float32)
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``ws`` (B, num_ws, w_dim); ``yaw``, ``pitch`` (B,) radians when ``predicts_camera``."""
        config = self.config
        x = self.prepare(images)
        features = self.backbone(x)
        if config.kind == "conv":
            delta = self.ws_head(features).view(len(x), config.num_ws, config.w_dim)
            camera_features = features
        else:
            delta = self.ws_head(features[:, : config.num_ws])
            camera_features = features[:, config.num_ws]
        out = {"ws": self.w_avg + delta}
        if self.camera_head is not None:
            sin_yaw, cos_yaw, sin_pitch, cos_pitch = self.camera_head(camera_features).unbind(1)
            out["yaw"] = torch.atan2(sin_yaw, cos_yaw)
            out["pitch"] = torch.atan2(sin_pitch, cos_pitch)
        return out
