"""Aligned face crop -> latent pivot -> pivotal tuning: single-image 3D inversion (PTI).

The library side of ``python -m demo invert`` and the photo tab. It follows the two stages of the
EG3D projector used by the seed projects (Roich et al. 2022, "Pivotal Tuning for Latent-based
Editing of Real Images", adapted to EG3D by the EG3D-projector and PanoHead projector scripts):

1. **Projection** into W (one w repeated ``num_ws`` times) or W+ (one w per layer). Adam
   (betas 0.9/0.999) with the StyleGAN2 projector schedule: base lr 0.01, linear warm-up over the
   first 5 % of the steps, cosine ramp-down over the last 25 %; Gaussian noise of standard
   deviation ``w_std * 0.05 * max(0, 1 - t / 0.75)**2`` is added to w at step fraction t, where
   w_std is the root of the total variance of w (the projector's scalar). The start is the
   encoder's prediction when an encoder is given, else ``w_avg``, the mean of the ws of 10,000 z
   drawn from ``RandomState(123)`` and mapped with the frontal conditioning camera (as the
   projectors do). The projectors also optimise the backbone's noise buffers; here the noise stays
   the model's constant noise (``noise_mode='const'``), which is what every render uses anyway.
2. **Pivotal tuning**: the pivot ws stay fixed and a copy of the generator is tuned (all of its
   parameters, Adam lr 3e-4 as the PTI coach) until the step budget ends or the loss plateaus:
   the exponential moving average of the loss (weight 0.1 per step) has not improved by
   ``plateau_tolerance`` (relative) for ``patience`` steps. PTI's own stop (LPIPS <= 0.06) needs
   LPIPS; the plateau rule needs no threshold tuned to a particular loss.

Loss (both stages): mean squared error of the images in [-1, 1] plus ``perceptual_weight`` times a
perceptual distance. LPIPS needs VGG/AlexNet ImageNet weights that cannot be downloaded at run
time here, so the default perceptual term is the offline **MS-SSIM distance** ``1 - MS-SSIM``
(Wang et al. 2003; Gaussian window 11, sigma 1.5, the five published scale weights, computed on
images area-downsampled to at most 256 px like the projector's LPIPS input; fewer scales for small
images, weights renormalised). Any LPIPS-like callable ``(pred, target) -> distance`` whose
weights you have locally can be passed as ``perceptual=`` instead (for instance an instance of the
``lpips`` package's ``LPIPS`` built from local weights); nothing is downloaded here.

Presets
-------
=============  ===========  =====  ==========  ===========================================
preset         projection   PTI    patience    intended for
=============  ===========  =====  ==========  ===========================================
``fast``       100          100    15          a 60 s GPU slot (ZeroGPU) with the 512 model
``balanced``   300          250    25          a few minutes on a GPU
``best``       500          350    40          the seed projects' settings (500 + 350)
=============  ===========  =====  ==========  ===========================================

``w_steps=`` and ``pti_steps=`` override a preset (0 skips a stage: ``w_steps=0, pti_steps=0``
with an encoder is the encoder-only answer). ``time_budget_s`` stops early when time runs out,
keeping what was reached.

Timing (``benchmarks/bench_invert.py``, full-size FFHQ-512 config): on a 2-core CPU a render takes
about 10 s and a projection or PTI step about 26 s (2.7 renders), so the presets are GPU-only. No
GPU was available to measure; EG3D's plain-PyTorch forward pass runs at 33-40 ms on an RTX 3090
(``../shared/docs/field.md``), so with the CPU's ratio a step is ~100 ms there and ``fast``
(200 steps) ~20 s plus ~2 s of fixed costs (w_avg, fingerprint, three PSNR renders): within a 60 s
ZeroGPU slot with room for the model transfer and a preview. ``balanced`` (~55 s there) is for a
120 s slot, ``best`` (~85 s) for local GPUs. Replace these estimates with the script's output on
the target GPU.

Results
-------
:class:`InversionResult` holds CPU data: the pivot ws, the camera label, the loss histories, the
PSNR of the start, of the pivot and after tuning, and the tuned weights as a **weight delta**
(``tuned - base`` of the tensors tuning changed). ``apply_to(model)`` returns a tuned copy (the
caller's model is never changed); the copy renders with every existing task
(``sample_images(tuned, ws=result.ws, camera=...)``, ``extract_mesh``, ``render_video``).
``save(path)`` writes ``path`` (safetensors: ``ws``, ``camera``, ``delta.<tensor name>``) and
a JSON sidecar beside it; ``InversionResult.load(path)`` reads them back.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from demo.cameras import Camera
from demo.errors import InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.networks.encoder import ImageEncoder
from demo.progress import ProgressFn, report
from demo.weights.store import model_fingerprint
from demo.tasks.sample import default_conditioning, view_camera

logger = logging.getLogger(__name__)

PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(pred, target), both (B, 3, H, W) in [-1, 1] -> distance, (B,) or a scalar; lower is closer."""

FORMAT_NAME = "3d-face-studio-inversion"
FORMAT_VERSION = 1
SPACES = ("w", "w+")
W_AVG_SEED = 123  # the projectors' RandomState for the w_avg estimate
W_AVG_SAMPLES = 10_000
LR_RAMPUP = 0.05
LR_RAMPDOWN = 0.25
NOISE_SCALE = 0.05
NOISE_RAMP = 0.75
EVAL_SEED = 0  # renderer seed of the PSNR renders: before and after are comparable
PERCEPTUAL_MAX_SIZE = 256
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class InversionPreset:
    w_steps: int
    pti_steps: int
    patience: int
    """PTI stops after this many steps without improvement of the smoothed loss."""


PRESETS: dict[str, InversionPreset] = {
    "fast": InversionPreset(w_steps=100, pti_steps=100, patience=15),
    "balanced": InversionPreset(w_steps=300, pti_steps=250, patience=25),
    "best": InversionPreset(w_steps=500, pti_steps=350, patience=40),
}


# --- losses --------------------------------------------------------------------------------------


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


# --- inputs --------------------------------------------------------------------------------------


def target_tensor(image: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """A square face crop -> (1, 3, resolution, resolution) float32 in [-1, 1] on the CPU.

    Accepts uint8 (H, W, 3) (a ``faces.align_face`` crop or a loaded PNG) or a float tensor
    (3, H, W) / (1, 3, H, W) in [-1, 1]. Square crops of another size are resized (antialiased
    bilinear); anything else raises ``InputError``.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"The target image must be an RGB array of shape (H, W, 3); got shape {image.shape}. "
                "Convert grey or RGBA images to RGB first (demo.tasks.faces.align_face does)."
            )
        if image.dtype != np.uint8:
            raise InputError(f"The target image array must be uint8 (0-255); got {image.dtype}.")
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().to("cpu", torch.float32).clone()  # a normal tensor even if made in inference mode
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4 or tensor.shape[:2] != (1, 3):
            raise InputError(f"The target tensor must be (3, H, W) or (1, 3, H, W) in [-1, 1]; got shape {tuple(image.shape)}.")
    else:
        raise InputError(f"The target image must be a uint8 array or a tensor; got {type(image).__name__}.")
    height, width = tensor.shape[-2:]
    if height != width:
        raise InputError(
            f"The target image is {width}x{height}; inversion needs a square, aligned face crop "
            f"({resolution}x{resolution} for this model). Align the photo first (python -m demo invert does this for photos)."
        )
    if height < 16:
        raise InputError(f"The target image is only {width}x{height} pixels; give an aligned crop of at least 16x16 (ideally {resolution}x{resolution}).")
    if not bool(torch.isfinite(tensor).all()):
        raise InputError("The target image holds NaN or infinite values.")
    if height != resolution:
        tensor = F.interpolate(tensor, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return tensor


def camera_label(camera: Camera | np.ndarray | torch.Tensor | list | tuple) -> torch.Tensor:
    """A camera or 25-number label -> (1, 25) float32 on the CPU; ``InputError`` on anything else."""
    if isinstance(camera, Camera):
        label = camera.to_label().detach().to("cpu", torch.float32).clone()
    else:
        try:
            label = torch.as_tensor(np.asarray(camera, dtype=np.float32))
        except (TypeError, ValueError):
            raise InputError(f"The camera must be a Camera or 25 numbers; got {type(camera).__name__}.") from None
    if label.ndim == 1:
        label = label[None]
    if tuple(label.shape) != (1, 25):
        raise InputError(
            f"The camera must be one EG3D label of 25 numbers (16 cam2world + 9 intrinsics), shape (25,) or (1, 25); "
            f"got shape {tuple(label.shape)}."
        )
    if not bool(torch.isfinite(label).all()):
        raise InputError("The camera label holds NaN or infinite values.")
    return label


# --- helpers -------------------------------------------------------------------------------------


def estimate_w_avg(
    model: TriplaneGenerator, *, num_samples: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED, batch_size: int = 2000
) -> tuple[torch.Tensor, float]:
    """(w_avg (w_dim,), w_std) from ``num_samples`` z of ``RandomState(seed)`` mapped with the frontal camera.

    w_std is the projectors' scalar: the root of the summed per-dimension variance of w.
    """
    if num_samples < 2:
        raise ValueError("num_samples: need at least 2")
    z_all = np.random.RandomState(seed).randn(num_samples, model.z_dim)
    conditioning = default_conditioning(model).to(model.device)
    parts = []
    with torch.no_grad():
        for start in range(0, num_samples, batch_size):
            z = torch.from_numpy(z_all[start : start + batch_size]).to(model.device)
            parts.append(model.mapping(z, conditioning)[:, 0].to(torch.float64))
    w = torch.cat(parts)
    w_avg = w.mean(0)
    w_std = float(((w - w_avg) ** 2).sum() / num_samples) ** 0.5
    return w_avg.to(torch.float32), w_std


def _lr_ramp(t: float) -> float:
    """The StyleGAN2 projector schedule at step fraction t: warm-up, flat, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / LR_RAMPUP)


def _render(model: TriplaneGenerator, ws: torch.Tensor, label: torch.Tensor, resolution: int | None, rng) -> torch.Tensor:
    return model.synthesis(ws, label, resolution, rng=rng)["image"]


def _eval_render(model: TriplaneGenerator, ws: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        generator = torch.Generator(device=model.device).manual_seed(EVAL_SEED)
        return model.synthesis(ws, label, rng=generator)["image"].float().cpu()


def _check_encoder(encoder: ImageEncoder, model: TriplaneGenerator) -> None:
    config = encoder.config
    if (config.num_ws, config.w_dim) != (model.num_ws, model.w_dim):
        raise InputError(
            f"The encoder predicts {config.num_ws} ws of {config.w_dim} but the generator takes {model.num_ws} of "
            f"{model.w_dim}: it was trained for another model. Train one with `python -m demo train-encoder --model ...`."
        )


# --- the fast path: encoder only ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EncoderPrediction:
    """What an encoder says about one crop (CPU data)."""

    ws: np.ndarray
    """(1, num_ws, w_dim) float32."""
    yaw_deg: float | None
    pitch_deg: float | None
    camera: np.ndarray | None
    """(25,) float32 label at the predicted yaw/pitch (training radius, pivot, focal), or None."""


def encode(encoder: ImageEncoder, image: np.ndarray | torch.Tensor, model: TriplaneGenerator) -> EncoderPrediction:
    """One forward pass: an aligned crop -> ws and, if the encoder predicts it, the camera."""
    _check_encoder(encoder, model)
    target = target_tensor(image, model.img_resolution)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            out = encoder(target)
    finally:
        encoder.train(was_training)
    yaw_deg = pitch_deg = camera = None
    if "yaw" in out:
        yaw_deg, pitch_deg = math.degrees(float(out["yaw"][0])), math.degrees(float(out["pitch"][0]))
        camera = view_camera(model, yaw_deg=yaw_deg, pitch_deg=pitch_deg).to_label()[0].numpy().astype(np.float32)
    return EncoderPrediction(ws=out["ws"].float().cpu().numpy(), yaw_deg=yaw_deg, pitch_deg=pitch_deg, camera=camera)


# --- the result ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class InversionResult:
    """Pivot latents, camera, histories and the tuned weights as a delta; all on the CPU."""

    ws: np.ndarray
    """(1, num_ws, w_dim) float32 pivot latents."""
    camera: np.ndarray
    """(25,) float32 camera label the crop was inverted with."""
    space: str
    """'w' or 'w+'."""
    start: str
    """Where projection started: 'encoder' or 'w_avg'."""
    w_losses: tuple[float, ...]
    """Projection loss per step."""
    pti_losses: tuple[float, ...]
    """Tuning loss per step."""
    psnr_start: float
    """PSNR (dB) of the starting latents rendered with the base model."""
    psnr_projected: float
    """PSNR of the pivot with the base model."""
    psnr_tuned: float
    """PSNR of the pivot with the tuned model (= psnr_projected without tuning)."""
    stopped: str
    """Why tuning ended: 'steps', 'plateau', 'time' or 'skipped'."""
    seconds: float
    weight_delta: dict[str, torch.Tensor] = field(repr=False)
    """tuned - base (float32, CPU) of every tensor tuning changed; empty without tuning."""
    base_fingerprint: dict[str, str] = field(repr=False)
    """sha256 of the base model's config and weights (``demo.weights.store.model_fingerprint``)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Preset, steps, learning rates and the perceptual term used."""

    @property
    def psnr_before(self) -> float:
        return self.psnr_start

    @property
    def psnr_after(self) -> float:
        return self.psnr_tuned

    @property
    def delta_numel(self) -> int:
        return sum(t.numel() for t in self.weight_delta.values())

    def apply_to(self, model: TriplaneGenerator, *, check: bool = True) -> TriplaneGenerator:
        """A tuned copy of ``model`` (base + delta); ``model`` itself is not changed.

        ``check`` verifies that ``model`` has the weights the delta was computed from.
        """
        if check:
            fingerprint = model_fingerprint(model)
            if fingerprint["weights_sha256"] != self.base_fingerprint.get("weights_sha256"):
                raise InputError(
                    "These tuned weights were computed from another generator (the weights' sha256 differs). "
                    "Load the checkpoint the inversion was run with."
                )
        tuned = copy.deepcopy(model)
        state = tuned.state_dict()
        missing = [name for name in self.weight_delta if name not in state]
        if missing:
            raise InputError(f"The weight delta names tensors this generator does not have: {missing[:5]}.")
        with torch.no_grad():
            for name, delta in self.weight_delta.items():
                if tuple(delta.shape) != tuple(state[name].shape):
                    raise InputError(f"Weight delta {name}: shape {tuple(delta.shape)} does not fit {tuple(state[name].shape)}.")
                state[name].add_(delta.to(state[name].device, state[name].dtype))
        return tuned.eval().requires_grad_(False)

    def save(self, path: str | Path, *, dtype: torch.dtype = torch.float32) -> Path:
        """Write ``path`` (.safetensors: ws, camera, delta.*) and ``path`` with suffix .json; atomically.

        ``dtype=torch.float16`` halves the file; PTI deltas are small, so the rounding is ~1e-3 of
        the delta, far below the weights' own precision needs.
        """
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        tensors = {"ws": torch.from_numpy(self.ws).contiguous(), "camera": torch.from_numpy(self.camera).contiguous()}
        for name, delta in self.weight_delta.items():
            tensors[f"delta.{name}"] = delta.to(dtype).contiguous()
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "space": self.space,
            "start": self.start,
            "psnr_start": self.psnr_start,
            "psnr_projected": self.psnr_projected,
            "psnr_tuned": self.psnr_tuned,
            "stopped": self.stopped,
            "seconds": self.seconds,
            "delta_dtype": str(dtype).removeprefix("torch."),
            "delta_tensors": len(self.weight_delta),
            "delta_numel": self.delta_numel,
            "base_fingerprint": self.base_fingerprint,
            "settings": self.settings,
            "w_losses": list(self.w_losses),
            "pti_losses": list(self.pti_losses),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic(path, lambda part: save_file(tensors, str(part), metadata={"format": FORMAT_NAME}))
        _atomic(path.with_suffix(".json"), lambda part: part.write_text(json.dumps(meta, indent=2, default=str)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> InversionResult:
        """Read a result written by :meth:`save` (the .safetensors path or its stem)."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        meta_path = path.with_suffix(".json")
        for needed in (path, meta_path):
            if not needed.is_file():
                raise InputError(f"{needed} does not exist; an inversion is saved as a .safetensors file with a .json beside it.")
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(str(path))
        except Exception as error:  # safetensors raises its own types for corrupt files
            raise InputError(f"Cannot read the inversion {path} ({error}).") from None
        if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{meta_path} is not a {FORMAT_NAME} file of version {FORMAT_VERSION}.")
        delta = {name.removeprefix("delta."): t.to(torch.float32) for name, t in tensors.items() if name.startswith("delta.")}
        return cls(
            ws=tensors["ws"].numpy().astype(np.float32), camera=tensors["camera"].numpy().astype(np.float32),
            space=meta["space"], start=meta["start"], w_losses=tuple(meta["w_losses"]), pti_losses=tuple(meta["pti_losses"]),
            psnr_start=float(meta["psnr_start"]), psnr_projected=float(meta["psnr_projected"]),
            psnr_tuned=float(meta["psnr_tuned"]), stopped=meta["stopped"], seconds=float(meta["seconds"]),
            weight_delta=delta, base_fingerprint=dict(meta["base_fingerprint"]), settings=dict(meta.get("settings", {})),
        )


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    part = path.with_name(path.name + ".part")
    try:
        write(part)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)


# --- inversion -----------------------------------------------------------------------------------


def _check_steps(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} must be a non-negative integer; got {value!r}.")
    return int(value)


def resolve_preset(
    preset: str, *, w_steps: int | None = None, pti_steps: int | None = None, patience: int | None = None
) -> InversionPreset:
    """The preset's settings with explicit overrides applied; ``InputError`` for unknown names."""
    if preset not in PRESETS:
        raise InputError(f"Unknown inversion preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    base = PRESETS[preset]
    return InversionPreset(
        w_steps=base.w_steps if w_steps is None else _check_steps(w_steps, "w_steps"),
        pti_steps=base.pti_steps if pti_steps is None else _check_steps(pti_steps, "pti_steps"),
        patience=base.patience if patience is None else max(1, _check_steps(patience, "patience")),
    )


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimiser step on ``loss``; returns its value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.inference_mode(False)
@torch.enable_grad()
def invert(
    model: TriplaneGenerator,
    target_image: np.ndarray | torch.Tensor,
    camera: Camera | np.ndarray | torch.Tensor | None = None,
    *,
    encoder: ImageEncoder | None = None,
    preset: str = "fast",
    w_steps: int | None = None,
    pti_steps: int | None = None,
    patience: int | None = None,
    space: str = "w",
    w_lr: float = 0.01,
    pti_lr: float = 3e-4,
    perceptual: PerceptualFn | None = None,
    perceptual_weight: float = 1.0,
    plateau_tolerance: float = 0.005,
    neural_rendering_resolution: int | None = None,
    time_budget_s: float | None = None,
    w_avg_samples: int = W_AVG_SAMPLES,
    progress: ProgressFn | None = None,
    rng: torch.Generator | None = None,
) -> InversionResult:
    """Invert one aligned face crop: projection (W or W+) then pivotal tuning.

    Args:
        model: the generator; never modified (tuning works on a copy).
        target_image: uint8 (H, W, 3) aligned crop (512x512 for the FFHQ models; other square sizes
            are resized) or a float tensor (3, H, W) / (1, 3, H, W) in [-1, 1].
        camera: the crop's camera (a ``Camera`` or a 25-number label); None takes the encoder's
            predicted yaw/pitch, or the frontal view without an encoder.
        encoder: start from its prediction instead of w_avg.
        preset: 'fast', 'balanced' or 'best' (see the module docstring).
        w_steps, pti_steps: override the preset's step counts (0 skips that stage).
        patience: override the preset's plateau patience (PTI steps without improvement).
        plateau_tolerance: relative improvement of the smoothed PTI loss that counts as progress.
        space: 'w' (one w for all layers) or 'w+'.
        w_lr, pti_lr: base learning rates of the two stages.
        perceptual: an LPIPS-like distance; default :func:`ms_ssim_distance`.
        neural_rendering_resolution: rays per side during optimisation (default the model's; lower
            is faster and coarser). The PSNR renders always use the model's.
        time_budget_s: stop early (keeping the result so far) once this many seconds have passed.
        w_avg_samples: z samples for the w_avg estimate.
        rng: generator for the w noise and the renderer's jitter (default: seeded with 0).
    Returns:
        :class:`InversionResult`.
    """
    started = time.perf_counter()
    settings = resolve_preset(preset, w_steps=w_steps, pti_steps=pti_steps, patience=patience)
    if space not in SPACES:
        raise InputError(f"Unknown latent space {space!r}; choose 'w' or 'w+'.")
    if encoder is not None:
        _check_encoder(encoder, model)
    device = model.device
    target = target_tensor(target_image, model.img_resolution).to(device)
    label = camera_label(camera).to(device) if camera is not None else None
    rng = rng if rng is not None else torch.Generator(device=device).manual_seed(0)
    total_steps = max(1, settings.w_steps + settings.pti_steps)

    def out_of_time() -> bool:
        return time_budget_s is not None and time.perf_counter() - started > time_budget_s

    report(progress, 0.0, "w_avg")
    w_avg, w_std = estimate_w_avg(model, num_samples=w_avg_samples)
    w_avg = w_avg.to(device)
    if encoder is not None:
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            predicted = encoder(target)
        encoder.train(was_training)
        start_ws = predicted["ws"].detach().to(device, torch.float32)
        if label is None and "yaw" in predicted:
            label = view_camera(
                model, yaw_deg=math.degrees(float(predicted["yaw"][0])), pitch_deg=math.degrees(float(predicted["pitch"][0]))
            ).to_label().to(device)
    else:
        start_ws = w_avg.expand(1, model.num_ws, -1).clone()
    if label is None:
        logger.warning("no camera given and no encoder camera: inverting with the frontal view")
        label = view_camera(model).to_label().to(device)
    psnr_start = psnr(_eval_render(model, start_ws, label), target.cpu())

    # Stage 1: projection.
    w_opt = (start_ws.mean(dim=1, keepdim=True) if space == "w" else start_ws).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt], lr=w_lr, betas=(0.9, 0.999))
    w_losses: list[float] = []
    for step in range(settings.w_steps):
        if out_of_time():
            break
        t = step / settings.w_steps
        for group in optimizer.param_groups:
            group["lr"] = w_lr * _lr_ramp(t)
        noise_scale = w_std * NOISE_SCALE * max(0.0, 1.0 - t / NOISE_RAMP) ** 2
        noise = torch.randn(w_opt.shape, generator=rng, device=rng.device).to(device) * noise_scale
        ws = (w_opt + noise).expand(-1, model.num_ws, -1)
        loss = image_loss(
            _render(model, ws, label, neural_rendering_resolution, rng), target,
            perceptual=perceptual, perceptual_weight=perceptual_weight,
        )
        w_losses.append(_step(optimizer, loss))
        report(progress, (step + 1) / total_steps, f"projection {step + 1}/{settings.w_steps}: loss {w_losses[-1]:.4f}")
    pivot = w_opt.detach().expand(-1, model.num_ws, -1).contiguous()
    psnr_projected = psnr(_eval_render(model, pivot, label), target.cpu())

    # Stage 2: pivotal tuning of a copy.
    pti_losses: list[float] = []
    delta: dict[str, torch.Tensor] = {}
    stopped = "skipped"
    psnr_tuned = psnr_projected
    if settings.pti_steps > 0 and not out_of_time():
        tuned = copy.deepcopy(model).requires_grad_(True)
        parameters = [p for p in tuned.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=pti_lr, betas=(0.9, 0.999))
        smoothed = best = math.inf
        since_best = 0
        stopped = "steps"
        for step in range(settings.pti_steps):
            if out_of_time():
                stopped = "time"
                break
            loss = image_loss(
                _render(tuned, pivot, label, neural_rendering_resolution, rng), target,
                perceptual=perceptual, perceptual_weight=perceptual_weight,
            )
            value = _step(optimizer, loss)
            pti_losses.append(value)
            smoothed = value if math.isinf(smoothed) else 0.9 * smoothed + 0.1 * value
            if smoothed < best * (1 - plateau_tolerance):
                best, since_best = smoothed, 0
            else:
                since_best += 1
            report(
                progress, (settings.w_steps + step + 1) / total_steps,
                f"tuning {step + 1}/{settings.pti_steps}: loss {value:.4f}",
            )
            if since_best >= settings.patience:
                stopped = "plateau"
                break
        tuned.requires_grad_(False).eval()
        base_state = model.state_dict()
        with torch.no_grad():
            for name, tensor in tuned.state_dict().items():
                difference = (tensor - base_state[name]).to("cpu", torch.float32)
                if bool(difference.ne(0).any()):
                    delta[name] = difference
        psnr_tuned = psnr(_eval_render(tuned, pivot, label), target.cpu())
        del tuned, optimizer
    report(progress, 1.0, "done")
    return InversionResult(
        ws=pivot.float().cpu().numpy(),
        camera=label[0].float().cpu().numpy(),
        space=space,
        start="encoder" if encoder is not None else "w_avg",
        w_losses=tuple(w_losses),
        pti_losses=tuple(pti_losses),
        psnr_start=psnr_start,
        psnr_projected=psnr_projected,
        psnr_tuned=psnr_tuned,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        weight_delta=delta,
        base_fingerprint=model_fingerprint(model),
        settings={
            "preset": preset, "w_steps": settings.w_steps, "pti_steps": settings.pti_steps, "patience": settings.patience,
            "w_lr": w_lr, "pti_lr": pti_lr, "space": space, "perceptual": "ms-ssim" if perceptual is None else "custom",
            "perceptual_weight": perceptual_weight, "neural_rendering_resolution": neural_rendering_resolution,
            "w_avg_samples": w_avg_samples,
        },
    )
