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
perceptual distance (``demo/tasks/losses.py``: the offline MS-SSIM distance by default, or any
LPIPS-like callable passed as ``perceptual=``). With a foreground ``mask`` (PanoHead photos, whose
background the model paints itself) only the foreground counts.

Presets
-------
=============  ===========  =====  ==========  ===========================================
preset         projection   PTI    patience    intended for
=============  ===========  =====  ==========  ===========================================
``none``       100          0      -           no generator tuning: the pivot alone
``fast``       100          100    15          a 60 s GPU slot (ZeroGPU) with the 512 model
``balanced``   300          250    25          a few minutes on a GPU
``best``       500          350    40          the seed projects' settings (500 + 350)
=============  ===========  =====  ==========  ===========================================

:class:`InversionSettings` holds every setting (``InversionSettings.from_preset("fast", w_steps=20)``);
``w_steps=0`` keeps the start (with an encoder, ``none`` plus ``w_steps=0`` is the encoder's answer
alone). ``time_budget_s`` stops early when time runs out, keeping what was reached. The stages are
:func:`project` and :func:`tune`; :func:`invert` runs both and measures PSNR before and after.

Timing (``benchmarks/bench_invert.py``, full-size FFHQ-512 config): on a 2-core CPU (AMD EPYC, Zen 4)
a render takes about 1.7 s, a projection step 5.0 s (3.9 s in bf16, 2.8 s with ``raw_projection``) and
a tuning step 8.4 s, so ``fast`` takes about 20 minutes there (README, "Photo -> 3D", has the table).
No GPU was available to measure; EG3D's plain-PyTorch forward pass runs at 33-40 ms on an RTX 3090
(``../shared/docs/field.md``), so with the CPU's ratios (a projection step costs about three renders,
a tuning step five) the steps take ~0.1 s and ~0.17 s there and ``fast`` ~27 s plus ~2 s of fixed costs
(w_avg, fingerprint, three PSNR renders): within a 60 s ZeroGPU slot with room for the model transfer
and a preview. ``balanced`` (~75 s there) is for a 120 s slot, ``best`` (~110 s) for local GPUs.
Replace these estimates with the script's output on the target GPU.

Results
-------
:class:`InversionResult` holds CPU data: the pivot ws, the camera label, the loss histories, the
PSNR of the start, of the pivot and after tuning, and the tuned weights as a **weight delta**
(``tuned - base`` of the tensors tuning changed). ``to_face(name)`` makes it a
:class:`~demo.tasks.face.Face`, which every task renders and which saves as one file;
``apply_to(model)`` returns a tuned copy (the caller's model is never changed). The end-to-end
recipe from a photo (alignment, encoder, inversion) is ``demo.tasks.photo.reconstruct_photo``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from demo.cameras import Camera
from demo.errors import InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.networks.encoder import ImageEncoder
from demo.progress import ProgressFn, report, scaled
from demo.tasks.face import Face, apply_delta
from demo.tasks.losses import PerceptualFn, image_loss, psnr
from demo.tasks.sample import W_AVG_SAMPLES, estimate_w_avg, view_camera
from demo.weights.store import model_fingerprint

logger = logging.getLogger(__name__)

SPACES = ("w", "w+")
LR_RAMPUP = 0.05
LR_RAMPDOWN = 0.25
NOISE_SCALE = 0.05
NOISE_RAMP = 0.75
EVAL_SEED = 0  # renderer seed of the PSNR renders: before and after are comparable


@dataclass(frozen=True)
class InversionPreset:
    w_steps: int
    pti_steps: int
    patience: int
    """PTI stops after this many steps without improvement of the smoothed loss."""


PRESETS: dict[str, InversionPreset] = {
    "none": InversionPreset(w_steps=100, pti_steps=0, patience=15),
    "fast": InversionPreset(w_steps=100, pti_steps=100, patience=15),
    "balanced": InversionPreset(w_steps=300, pti_steps=250, patience=25),
    "best": InversionPreset(w_steps=500, pti_steps=350, patience=40),
}


@dataclass(frozen=True)
class InversionSettings:
    """Everything that decides an inversion's result, in one place (the CLI and the app build one each)."""

    preset: str = "fast"
    """The preset the step counts came from ('none', 'fast', 'balanced', 'best'), for the record."""
    w_steps: int = 100
    """Projection steps (0: keep the start, the encoder's answer or w_avg)."""
    pti_steps: int = 100
    """Pivotal tuning steps (0: no generator tuning)."""
    patience: int = 15
    """Tuning stops after this many steps without improvement of the smoothed loss."""
    space: str = "w"
    """'w' (one w for every layer) or 'w+'."""
    w_lr: float = 0.01
    pti_lr: float = 3e-4
    perceptual_weight: float = 1.0
    plateau_tolerance: float = 0.005
    """Relative improvement of the smoothed tuning loss that counts as progress."""
    neural_rendering_resolution: int | None = None
    """Rays per side while optimising (default the model's; lower is faster and coarser)."""
    raw_projection: bool = False
    """Projection compares the raw neural render (``image_raw``, before the super-resolution) with the
    target downsampled to it: no super-resolution in the loop, several times faster per step on a
    CPU (``benchmarks/bench_invert.py``); tuning still compares the final images."""
    time_budget_s: float | None = None
    """Stop early (keeping the result so far) once this many seconds have passed."""
    w_avg_samples: int = W_AVG_SAMPLES
    seed: int = 0
    """Seed of the w noise and the renderer's jitter."""
    use_mask: bool = True
    """Count only the foreground when a mask is given (PanoHead photos: the background is the model's own)."""

    def __post_init__(self) -> None:
        for name in ("w_steps", "pti_steps", "patience", "w_avg_samples", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(f"{name} must be a non-negative integer; got {value!r}.")
        if self.space not in SPACES:
            raise InputError(f"Unknown latent space {self.space!r}; choose 'w' or 'w+'.")
        if self.w_avg_samples < 2:
            raise InputError("w_avg_samples must be at least 2.")
        for name in ("w_lr", "pti_lr"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise InputError(f"{name} must be a positive number; got {getattr(self, name)!r}.")
        if self.time_budget_s is not None and not self.time_budget_s >= 0:
            raise InputError(f"time_budget_s must be a non-negative number of seconds; got {self.time_budget_s!r}.")

    @classmethod
    def from_preset(cls, preset: str = "fast", **overrides: Any) -> InversionSettings:
        """The preset's step counts with ``overrides`` (any field; None keeps the preset's value) applied."""
        if preset not in PRESETS:
            raise InputError(f"Unknown inversion preset {preset!r}; choose one of {', '.join(PRESETS)}.")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown inversion settings: {unknown}")
        base = PRESETS[preset]
        values = {"preset": preset, "w_steps": base.w_steps, "pti_steps": base.pti_steps, "patience": base.patience}
        values.update({key: value for key, value in overrides.items() if value is not None})
        settings = cls(**values)
        return dataclasses.replace(settings, patience=max(1, settings.patience))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def mask_tensor(mask: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """A foreground mask (H, W) in [0, 1] (or uint8 0-255) -> (1, 1, resolution, resolution) float32 on the CPU."""
    array = torch.as_tensor(np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask))
    if array.dtype == torch.uint8:
        array = array.float() / 255
    array = array.float().squeeze()
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise InputError(f"The mask must be one square (H, W) array; got shape {tuple(np.shape(mask))}.")
    if not bool(torch.isfinite(array).all()):
        raise InputError("The mask holds NaN or infinite values.")
    array = array.clamp(0, 1)[None, None]
    if array.shape[-1] != resolution:
        array = F.interpolate(array, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return array


# --- helpers -------------------------------------------------------------------------------------


def _lr_ramp(t: float) -> float:
    """The StyleGAN2 projector schedule at step fraction t: warm-up, flat, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / LR_RAMPUP)


def _render(
    model: TriplaneGenerator, ws: torch.Tensor, label: torch.Tensor, resolution: int | None, rng, *, raw: bool = False
) -> torch.Tensor:
    """The image an optimisation step compares: the final one, or (``raw``) the neural render alone."""
    if raw:
        return model.synthesis(ws, label, resolution, rng=rng, superresolution=False)["image_raw"]
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
    target = target_tensor(image, model.img_resolution).to(next(encoder.parameters()).device)
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
    settings: InversionSettings
    weight_delta: dict[str, torch.Tensor] = field(repr=False)
    """tuned - base (float32, CPU) of every tensor tuning changed; empty without tuning."""
    base_fingerprint: dict[str, str] = field(repr=False)
    """sha256 of the base model's config and weights (``demo.weights.store.model_fingerprint``)."""

    @property
    def space(self) -> str:
        return self.settings.space

    def summary(self) -> dict[str, Any]:
        """JSON-ready record: PSNRs, how tuning stopped, time, settings (no arrays)."""
        return {
            "start": self.start, "psnr_start": self.psnr_start, "psnr_projected": self.psnr_projected,
            "psnr_tuned": self.psnr_tuned, "stopped": self.stopped, "seconds": round(self.seconds, 3),
            "w_steps_run": len(self.w_losses), "pti_steps_run": len(self.pti_losses), "settings": self.settings.to_json(),
        }

    def to_face(self, name: str, source: dict[str, Any] | None = None) -> Face:
        """The reconstructed identity as a :class:`~demo.tasks.face.Face` (pivot ws, camera, delta)."""
        summary = {key: value for key, value in self.summary().items() if key != "seconds"}  # files stay reproducible
        return Face(
            ws=self.ws, name=name, camera=self.camera, weight_delta=self.weight_delta, base_fingerprint=self.base_fingerprint,
            source={"kind": "photo", **(source or {}), **summary},
        )

    def apply_to(self, model: TriplaneGenerator, *, check: bool = True) -> TriplaneGenerator:
        """A tuned copy of ``model`` (base + delta; ``model`` itself when nothing was tuned)."""
        return self.to_face("inversion").generator(model, check=check)


# --- the two stages -------------------------------------------------------------------------------


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimiser step on ``loss``; returns its value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def projection_objective(
    model: TriplaneGenerator, settings: InversionSettings, target_image, mask, perceptual: PerceptualFn | None
) -> Objective:
    """The raw projection's objective: target (and mask) at the neural rendering resolution."""
    resolution = settings.neural_rendering_resolution or model.neural_rendering_resolution
    target = target_tensor(target_image, resolution).to(model.device)
    mask_t = mask_tensor(mask, resolution).to(model.device) if mask is not None and settings.use_mask else None
    return Objective(target, mask_t, perceptual, settings.perceptual_weight)


class Objective:
    """The loss of a render against the target, counting only the foreground when a mask is given."""

    def __init__(self, target: torch.Tensor, mask: torch.Tensor | None, perceptual: PerceptualFn | None, weight: float):
        # Both images are multiplied by the mask: the background is the same constant in both, so neither
        # the target's background nor the model's own reaches the loss (or its windows, for MS-SSIM).
        self.target = target if mask is None else target * mask
        self.mask, self.perceptual, self.weight = mask, perceptual, weight

    def __call__(self, pred: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            pred = pred * self.mask
        return image_loss(pred, self.target, perceptual=self.perceptual, perceptual_weight=self.weight)


@dataclass(frozen=True, eq=False)
class ProjectionResult:
    ws: torch.Tensor
    """(1, num_ws, w_dim) pivot on the model's device (no gradient)."""
    losses: tuple[float, ...]


@torch.inference_mode(False)
@torch.enable_grad()
def project(
    model: TriplaneGenerator,
    objective: Objective,
    label: torch.Tensor,
    start_ws: torch.Tensor,
    settings: InversionSettings,
    *,
    w_std: float,
    rng: torch.Generator,
    deadline: float | None = None,
    progress: ProgressFn | None = None,
) -> ProjectionResult:
    """Stage 1: optimise w (or w+) from ``start_ws`` with the StyleGAN2 projector schedule and w noise.

    With ``settings.raw_projection`` the ``objective``'s target is at the neural rendering resolution
    (see :func:`projection_objective`).
    """
    w_opt = (start_ws.mean(dim=1, keepdim=True) if settings.space == "w" else start_ws).detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt], lr=settings.w_lr, betas=(0.9, 0.999))
    losses: list[float] = []
    for step in range(settings.w_steps):
        if deadline is not None and time.perf_counter() > deadline:
            break
        t = step / settings.w_steps
        for group in optimizer.param_groups:
            group["lr"] = settings.w_lr * _lr_ramp(t)
        noise_scale = w_std * NOISE_SCALE * max(0.0, 1.0 - t / NOISE_RAMP) ** 2
        noise = torch.randn(w_opt.shape, generator=rng, device=rng.device).to(w_opt.device) * noise_scale
        ws = (w_opt + noise).expand(-1, model.num_ws, -1)
        image = _render(model, ws, label, settings.neural_rendering_resolution, rng, raw=settings.raw_projection)
        losses.append(_step(optimizer, objective(image)))
        report(progress, (step + 1) / settings.w_steps, f"projection {step + 1}/{settings.w_steps}: loss {losses[-1]:.4f}")
    pivot = w_opt.detach().expand(-1, model.num_ws, -1).contiguous()
    return ProjectionResult(ws=pivot, losses=tuple(losses))


@dataclass(frozen=True, eq=False)
class TuningResult:
    delta: dict[str, torch.Tensor]
    """tuned - base (float32, CPU) of every tensor that changed."""
    losses: tuple[float, ...]
    stopped: str
    """'steps', 'plateau', 'time' or 'skipped'."""


@torch.inference_mode(False)
@torch.enable_grad()
def tune(
    model: TriplaneGenerator,
    objective: Objective,
    label: torch.Tensor,
    pivot: torch.Tensor,
    settings: InversionSettings,
    *,
    rng: torch.Generator,
    deadline: float | None = None,
    progress: ProgressFn | None = None,
) -> TuningResult:
    """Stage 2 (PTI): tune a copy of the generator on the fixed pivot until the steps end or the loss plateaus."""
    if settings.pti_steps == 0 or (deadline is not None and time.perf_counter() > deadline):
        return TuningResult(delta={}, losses=(), stopped="skipped")
    tuned = copy.deepcopy(model).requires_grad_(True)
    optimizer = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=settings.pti_lr, betas=(0.9, 0.999))
    smoothed = best = math.inf
    since_best = 0
    stopped = "steps"
    losses: list[float] = []
    for step in range(settings.pti_steps):
        if deadline is not None and time.perf_counter() > deadline:
            stopped = "time"
            break
        value = _step(optimizer, objective(_render(tuned, pivot, label, settings.neural_rendering_resolution, rng)))
        losses.append(value)
        smoothed = value if math.isinf(smoothed) else 0.9 * smoothed + 0.1 * value
        if smoothed < best * (1 - settings.plateau_tolerance):
            best, since_best = smoothed, 0
        else:
            since_best += 1
        report(progress, (step + 1) / settings.pti_steps, f"tuning {step + 1}/{settings.pti_steps}: loss {value:.4f}")
        if since_best >= settings.patience:
            stopped = "plateau"
            break
    base_state = model.state_dict()
    delta: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in tuned.state_dict().items():
            difference = (tensor - base_state[name]).to("cpu", torch.float32)
            if bool(difference.ne(0).any()):
                delta[name] = difference
    return TuningResult(delta=delta, losses=tuple(losses), stopped=stopped)


@torch.inference_mode(False)
@torch.enable_grad()
def invert(
    model: TriplaneGenerator,
    target_image: np.ndarray | torch.Tensor,
    camera: Camera | np.ndarray | torch.Tensor | None = None,
    *,
    encoder: ImageEncoder | None = None,
    settings: InversionSettings | str = "fast",
    mask: np.ndarray | torch.Tensor | None = None,
    perceptual: PerceptualFn | None = None,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> InversionResult:
    """Invert one aligned face crop: projection (W or W+) then pivotal tuning.

    Args:
        model: the generator; never modified (tuning works on a copy).
        target_image: uint8 (H, W, 3) aligned crop (512x512 for the FFHQ models; other square sizes
            are resized) or a float tensor (3, H, W) / (1, 3, H, W) in [-1, 1].
        camera: the crop's camera (a ``Camera`` or a 25-number label); None takes the encoder's
            predicted yaw/pitch, or the frontal view without an encoder.
        encoder: start from its prediction instead of w_avg.
        settings: an :class:`InversionSettings`, or a preset name; ``overrides`` (any settings field,
            e.g. ``w_steps=0``) replace its values.
        mask: optional foreground mask of the crop, (H, W) in [0, 1] (uint8 0-255 accepted); with
            ``settings.use_mask`` only the foreground counts in the loss.
        perceptual: an LPIPS-like distance; default :func:`demo.tasks.losses.ms_ssim_distance`.
    """
    started = time.perf_counter()
    if isinstance(settings, str):
        settings = InversionSettings.from_preset(settings, **overrides)
    elif overrides:
        settings = dataclasses.replace(settings, **overrides)
    if encoder is not None:
        _check_encoder(encoder, model)
    device = model.device
    target = target_tensor(target_image, model.img_resolution).to(device)
    mask_t = mask_tensor(mask, model.img_resolution).to(device) if mask is not None and settings.use_mask else None
    label = camera_label(camera).to(device) if camera is not None else None
    rng = torch.Generator(device=device).manual_seed(settings.seed)
    deadline = None if settings.time_budget_s is None else started + settings.time_budget_s
    total = max(1, settings.w_steps + settings.pti_steps)

    report(progress, 0.0, "w_avg")
    w_avg, w_std = estimate_w_avg(model, num_samples=settings.w_avg_samples)
    w_avg = w_avg.to(device)
    if encoder is not None:
        predicted = encode(encoder, target, model)
        start_ws = torch.from_numpy(predicted.ws).to(device)
        if label is None and predicted.camera is not None:
            label = torch.from_numpy(predicted.camera)[None].to(device)
    else:
        start_ws = w_avg.expand(1, model.num_ws, -1).clone()
    if label is None:
        logger.warning("no camera given and no encoder camera: inverting with the frontal view")
        label = view_camera(model).to_label().to(device)
    psnr_start = psnr(_eval_render(model, start_ws, label), target.cpu())

    objective = Objective(target, mask_t, perceptual, settings.perceptual_weight)
    projection = project(
        model, projection_objective(model, settings, target_image, mask, perceptual) if settings.raw_projection else objective, label, start_ws, settings, w_std=w_std, rng=rng, deadline=deadline,
        progress=scaled(progress, 0.0, settings.w_steps / total),
    )
    psnr_projected = psnr(_eval_render(model, projection.ws, label), target.cpu())
    tuning = tune(
        model, objective, label, projection.ws, settings, rng=rng, deadline=deadline,
        progress=scaled(progress, settings.w_steps / total, 1.0),
    )
    psnr_tuned = psnr_projected
    if tuning.delta:
        psnr_tuned = psnr(_eval_render(apply_delta(model, tuning.delta), projection.ws, label), target.cpu())
    report(progress, 1.0, "done")
    return InversionResult(
        ws=projection.ws.float().cpu().numpy(),
        camera=label[0].float().cpu().numpy(),
        start="encoder" if encoder is not None else "w_avg",
        w_losses=projection.losses,
        pti_losses=tuning.losses,
        psnr_start=psnr_start,
        psnr_projected=psnr_projected,
        psnr_tuned=psnr_tuned,
        stopped=tuning.stopped,
        seconds=time.perf_counter() - started,
        settings=settings,
        weight_delta=tuning.delta,
        base_fingerprint=model_fingerprint(model),
    )
