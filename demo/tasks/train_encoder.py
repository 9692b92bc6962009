"""Train the image -> ws (+ camera) encoder on renders made on the fly by the generator.

The library side of ``python -m demo train-encoder``. No dataset on disk: every step draws a batch of
identities and views, renders them with the generator, and teaches the encoder
(:class:`demo.networks.encoder.ImageEncoder`) to recover the latents and the camera. Unlike the
seed regressor (a fixed 50k-image set, w only, val L1 about 0.27) every sample is new, and the
camera is predicted too.

Usage
-----
::

    python -m demo train-encoder --model eg3d-ffhqrebalanced512-128 --steps 200000 --batch 16 --kind conv
    torchrun --nproc_per_node 8 -m demo train-encoder --model ... --steps 100000 --batch 8   # DDP, one GPU each
    python -m demo train-encoder --model tiny --steps 200 --batch 8 --out /tmp/enc             # try it on a CPU

From Python::

    from demo.networks.encoder import EncoderConfig
    from demo.tasks.train_encoder import train_encoder, load_encoder
    result = train_encoder(model, EncoderConfig.for_generator(model.num_ws, model.w_dim), steps=1000,
                           batch_size=8, out_dir="checkpoints/eg3d-ffhqrebalanced512-128")
    encoder = load_encoder("checkpoints/eg3d-ffhqrebalanced512-128")

Samples
-------
Step ``s`` of process ``r`` draws its batch from ``SeedSequence([0x454E43, seed, s, r])`` (PCG64):
z ~ N(0, I); a truncation psi per sample, uniform in ``truncation_range`` (pulling towards the
model's ``w_avg`` as the mapping does); a view from :func:`demo.tasks.views.draw_view` (the
dataset's ``mix`` by default: 70 % frontal, 12 % yaw within +-70 degrees, 6 % beyond, 12 % frontal with
a 1.5x wider field of view), plus a pitch uniform in +-``pitch_jitter_deg`` (the mix has no pitch,
photos do). The mapping is conditioned on the frontal camera, as in the dataset. Because a batch
depends only on (seed, step, rank), a resumed run sees exactly the batches an uninterrupted run
would; on a CPU it reproduces it bit for bit (tested).

Losses
------
``w_weight * L1(ws_pred, ws)`` (the seed regressor's loss) ``+ image_weight * (MSE + MS-SSIM distance)``
between the predicted ws and the true ws, both rendered from the **true** camera at a reduced
neural rendering resolution (``image_resolution``, default half the model's; only the prediction
carries gradients) ``+ camera_weight * (|yaw error| + |pitch error|)`` in radians, wrapped to
(-pi, pi]. Adam (betas 0.9/0.999), linear warm-up then a constant learning rate; the schedule does
not depend on ``steps``, so a run can be extended by resuming with a larger ``steps`` (and, for a
final polish, a lower ``lr``). On the tiny random generator (whose renders saturate far outside
[-1, 1]) the image term slowed the latent fit without improving PSNR (300 steps without it: latent
L1 0.19, PSNR 20.8 dB; 600 steps with it: 0.36, 20.8 dB); image-space losses are the norm for real
face generators (pSp/e4e), so it stays on by default; ``image_weight=0`` is the cheap alternative.

Checkpoints
-----------
In ``out_dir`` (``checkpoints/<id>/`` by default in the CLI), every ``checkpoint_every`` steps and at
the end, each file written to ``<name>.part`` and renamed:

- ``encoder.safetensors``: the encoder's state dict (including its ``w_avg`` buffer);
- ``encoder_optimizer.safetensors``: Adam's state (``state.<param index>.<key>``; the param groups
  as JSON in the file's metadata), needed only to resume;
- ``encoder.json`` (written last): format, :class:`EncoderConfig`, the step, the generator's
  fingerprint (config and weights sha256), the training settings and the recent losses.

``resume=True`` continues from these files (the encoder config, the generator and the step must
agree; the file set must be consistent: every file records its step). Under ``torchrun`` the
command joins a process group (gloo on CPU, nccl on CUDA), wraps the encoder in
``DistributedDataParallel`` (gradients averaged over ranks; ``batch_size`` is per process) and rank
0 writes the checkpoints. Tested on a CPU with two processes (``tests/test_encoder.py``, gloo).

Compute for the real FFHQ model (estimate)
------------------------------------------
One step renders the batch at 512 (no grad), the loss targets at neural resolution 64 (no grad),
and the predictions at 64 with gradients through the generator: roughly 1 + 1 + 3 = 5 generator
forward-equivalents of about 0.3 TFLOP each (``../shared/docs/field.md`` section 6: 305 GFLOP per
512 image, 65 % of it super-resolution, which a lower neural resolution does not shrink), so about
1.5 TFLOP per sample plus the encoder (a few GFLOP). At the 8-9 TFLOP/s that EG3D's plain PyTorch
reaches on an RTX 3090 (25-30 images/s) that is ~0.17 s per sample; on an A100/H100 in float32 with
TF32 convolutions, perhaps 3-4x faster, ~0.05 s per sample. The seed regressor saw 20 epochs of
47,500 images (~1M samples) and still generalised poorly; budgeting 2-4M samples (e.g. 200k steps
of batch 16) gives ~30-60 GPU-hours on one H100, or 4-8 hours on 8 GPUs with ``torchrun``
(``benchmarks/bench_invert.py`` measures the encoder and the generator passes on the current
device; the CPU numbers in the README are a floor, not a GPU measurement). ``image_weight=0``
removes the two extra renders and the backward through the generator, about 4x cheaper per
sample, at the cost of the image-space signal.

Publishing weights
------------------
Copy ``encoder.safetensors`` and ``encoder.json`` (not the optimizer file) of a finished run into
the model's folder, ``checkpoints/<id>/``, where :func:`find_encoder` and ``python -m demo invert``
pick them up. To publish them, upload those two files (for example to a Hugging Face model repo
``<you>/<name>`` as ``<id>/encoder.safetensors`` + ``<id>/encoder.json``), under the generator's
licence (the EG3D weights are non-commercial), with the training command and the held-out numbers
of :func:`evaluate_encoder`; then add the location to :data:`PUBLISHED_ENCODERS` below (the field
the registry's download would read; no encoder is published yet, so it is empty) and record the
sha256 of both files there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from demo import media
from demo.cameras import Camera
from demo.errors import CheckpointError, InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.networks.encoder import ENCODER_KINDS, EncoderConfig, ImageEncoder
from demo.progress import ProgressFn, report
from demo.tasks.losses import image_loss, psnr
from demo.tasks.sample import default_conditioning, estimate_w_avg
from demo.tasks.views import VIEW_PRESETS, draw_view
from demo.weights import registry
from demo.weights.store import model_fingerprint

logger = logging.getLogger(__name__)

FORMAT_NAME = "3d-face-studio-encoder"
FORMAT_VERSION = 1
WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "encoder.json"
OPTIMIZER_FILE = "encoder_optimizer.safetensors"
TRAIN_STREAM = 0x454E43  # "ENC": keeps training draws apart from any other use of the seed
EVAL_STREAM = 0x4556414C  # "EVAL": held-out samples never coincide with training ones
MAX_PITCH_JITTER_DEG = 45.0
HISTORY_KEPT = 1000

#: Published encoder weights per generator id: ``{"<checkpoint id>": {"url": ..., "sha256": ...}}`` for
#: ``encoder.safetensors`` and ``encoder.json``. Empty: no encoder has been trained on real weights and
#: published yet. See "Publishing weights" in the module docstring.
PUBLISHED_ENCODERS: dict[str, dict[str, str]] = {}


@dataclass(frozen=True)
class TrainResult:
    """What one training call did (this process)."""

    encoder: ImageEncoder
    """The trained encoder, unwrapped from DDP, in eval mode, on the CPU."""
    step: int
    """Steps done in total (including resumed ones)."""
    start_step: int
    """Step the run resumed from (0 for a fresh run)."""
    losses: tuple[float, ...]
    """Total loss per step of this call."""
    w_losses: tuple[float, ...]
    image_losses: tuple[float, ...]
    camera_losses: tuple[float, ...]
    checkpoint: Path | None
    """``encoder.safetensors`` when ``out_dir`` was given."""
    rank: int
    world: int
    seconds: float


@dataclass(frozen=True)
class Batch:
    """One step's training samples (on the generator's device)."""

    images: torch.Tensor
    """(B, 3, R, R) renders in about [-1, 1]: the encoder's input."""
    ws: torch.Tensor
    """(B, num_ws, w_dim) latents that made them."""
    labels: torch.Tensor
    """(B, 25) render cameras."""
    yaw: torch.Tensor
    """(B,) radians."""
    pitch: torch.Tensor
    """(B,) radians."""
    render_seed: int


# --- options -------------------------------------------------------------------------------------


def check_options(
    *,
    steps: int,
    batch_size: int,
    lr: float,
    views: str,
    truncation_range: tuple[float, float],
    pitch_jitter_deg: float,
    checkpoint_every: int,
) -> None:
    """Validate the model-independent options (raises ``InputError``)."""
    for name, value, minimum in (("steps", steps, 1), ("batch size", batch_size, 1), ("checkpoint interval", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise InputError(f"The {name} must be an integer >= {minimum}; got {value!r}.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"The learning rate must be a positive number; got {lr!r}.")
    if views not in VIEW_PRESETS:
        raise InputError(f"Unknown view preset {views!r}; choose one of {', '.join(VIEW_PRESETS)}.")
    try:
        low, high = (float(v) for v in truncation_range)
    except (TypeError, ValueError):
        raise InputError(f"The truncation range must be two numbers (low, high); got {truncation_range!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high <= 2):
        raise InputError(f"The truncation range must satisfy 0 <= low <= high <= 2; got {truncation_range!r}.")
    if not (math.isfinite(pitch_jitter_deg) and 0 <= pitch_jitter_deg <= MAX_PITCH_JITTER_DEG):
        raise InputError(f"The pitch jitter must be between 0 and {MAX_PITCH_JITTER_DEG:g} degrees; got {pitch_jitter_deg!r}.")


# --- samples -------------------------------------------------------------------------------------


def draw_batch(
    model: TriplaneGenerator,
    stream: Sequence[int],
    batch_size: int,
    *,
    views: str = "mix",
    yaw_range_deg: float = 60.0,
    pitch_range_deg: float = 20.0,
    pitch_jitter_deg: float = 10.0,
    truncation_range: tuple[float, float] = (0.5, 1.0),
) -> Batch:
    """Render ``batch_size`` random samples drawn from ``SeedSequence(stream)`` (no gradients)."""
    generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(v) for v in stream])))
    z = generator.standard_normal((batch_size, model.z_dim))
    psi = generator.uniform(truncation_range[0], truncation_range[1], batch_size)
    view_seeds = generator.integers(0, 2**32 - 1, batch_size)
    jitter = generator.uniform(-pitch_jitter_deg, pitch_jitter_deg, batch_size)
    render_seed = int(generator.integers(0, 2**62))
    cameras = []
    yaw_deg, pitch_deg = [], []
    for view_seed, extra_pitch in zip(view_seeds, jitter):
        view = draw_view(int(view_seed), model, views=views, yaw_range_deg=yaw_range_deg, pitch_range_deg=pitch_range_deg)
        view = dataclasses.replace(view, pitch_deg=view.pitch_deg + float(extra_pitch))
        cameras.append(view.camera(model.config.avg_camera_pivot))
        yaw_deg.append(view.yaw_deg)
        pitch_deg.append(view.pitch_deg)
    device = model.device
    labels = Camera.cat(cameras).to_label().to(device)
    with torch.no_grad():
        ws = model.mapping(torch.from_numpy(z).to(device), default_conditioning(model).to(device))
        psi_t = torch.from_numpy(psi).to(device, torch.float32).view(-1, 1, 1)
        ws = model.backbone.mapping.w_avg.lerp(ws, psi_t)  # per-sample truncation, as the mapping does it
        images = model.synthesis(ws, labels, rng=torch.Generator(device=device).manual_seed(render_seed))["image"]
    return Batch(
        images=images, ws=ws, labels=labels,
        yaw=torch.tensor(np.radians(yaw_deg), dtype=torch.float32, device=device),
        pitch=torch.tensor(np.radians(pitch_deg), dtype=torch.float32, device=device),
        render_seed=render_seed,
    )


def _wrapped(angle: torch.Tensor) -> torch.Tensor:
    return torch.atan2(torch.sin(angle), torch.cos(angle))


# --- checkpoints -------------------------------------------------------------------------------


def save_encoder(
    encoder: ImageEncoder,
    out_dir: str | Path,
    *,
    step: int = 0,
    generator: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    history: dict[str, list[float]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write ``encoder.safetensors`` (+ ``encoder_optimizer.safetensors``) and, last, ``encoder.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"format": FORMAT_NAME, "step": str(int(step))}
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in encoder.state_dict().items()}
    media.write_atomic(out / WEIGHTS_FILE, lambda part: save_file(tensors, str(part), metadata=stamp))
    if optimizer is not None:
        state, groups = _optimizer_tensors(optimizer)
        meta = {**stamp, "param_groups": json.dumps(groups)}
        media.write_atomic(out / OPTIMIZER_FILE, lambda part: save_file(state, str(part), metadata=meta))
    record = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": encoder.config.to_dict(),
        "step": int(step),
        "generator": generator or {},
        "training": training or {},
        "history": history or {},
    }
    media.write_atomic(out / CONFIG_FILE, lambda part: part.write_text(json.dumps(record, indent=2)))
    return out / WEIGHTS_FILE


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{index}.{key}"] = tensor.detach().to("cpu").contiguous()
    return tensors, state_dict["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, path: Path, *, step: int) -> None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        tensors = load_file(str(path))
        groups = json.loads(meta["param_groups"])
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: cannot read the optimizer state ({error}). Delete the folder's encoder files or pass --no-resume.") from None
    if meta.get("step") != str(step):
        raise CheckpointError(
            f"{path} is from step {meta.get('step')} but encoder.json says {step}: the run stopped while saving. "
            "Delete the encoder files in the folder (or pass --no-resume) to start over."
        )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    device = next(iter(optimizer.param_groups[0]["params"])).device
    for values in state.values():
        for key, tensor in values.items():
            if key != "step":
                values[key] = tensor.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: an encoder is a folder with {WEIGHTS_FILE} and {CONFIG_FILE}.") from None
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: cannot read it ({error}).") from None
    if record.get("format") != FORMAT_NAME or record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a {FORMAT_NAME} file of version {FORMAT_VERSION}.")
    return record


def _encoder_folder(source: str | Path) -> Path:
    path = Path(source)
    if path.is_file() and path.suffix == ".safetensors":
        return path.parent
    if path.is_dir():
        return path
    if os.sep not in str(source) and not path.suffix:
        try:
            return registry.checkpoints_dir() / registry.get_entry(str(source)).id
        except CheckpointError:
            pass  # not a registry id either: the error below says what was expected
    raise CheckpointError(f"{source} is neither an encoder folder, an {WEIGHTS_FILE} file nor a known model id.")


def load_encoder(
    source: str | Path, *, device: torch.device | str = "cpu", model: TriplaneGenerator | None = None
) -> ImageEncoder:
    """Load an encoder: a folder with ``encoder.safetensors`` + ``encoder.json``, the .safetensors file, or a model id.

    With ``model``, the encoder must fit it (num_ws, w_dim); training on other weights only logs a warning.
    """
    folder = _encoder_folder(source)
    record = _read_record(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing.")
    try:
        config = EncoderConfig.from_dict(record["config"])
        state = load_file(str(weights))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{folder / CONFIG_FILE}: invalid encoder config ({error}).") from None
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{weights}: cannot read the weights ({error}); the file may be incomplete.") from None
    encoder = ImageEncoder(config)
    result = encoder.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{weights} does not fit its config: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}."
        )
    if model is not None:
        if (config.num_ws, config.w_dim) != (model.num_ws, model.w_dim):
            raise CheckpointError(
                f"The encoder in {folder} predicts {config.num_ws} ws of {config.w_dim}, but the generator takes "
                f"{model.num_ws} of {model.w_dim}: it belongs to another model."
            )
        trained_on = record.get("generator", {}).get("weights_sha256")
        if trained_on and trained_on != model_fingerprint(model)["weights_sha256"]:
            logger.warning("the encoder in %s was trained on other generator weights; its predictions may be off", folder)
    return encoder.eval().requires_grad_(False).to(device)


def find_encoder(model_id: str) -> Path | None:
    """``checkpoints/<id>/encoder.safetensors`` if an encoder for this registry id (or folder) is there."""
    for folder in (Path(model_id), registry.checkpoints_dir() / str(model_id)):
        if (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            return folder / WEIGHTS_FILE
    return None


# --- training ------------------------------------------------------------------------------------


def _distributed_context() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _learning_rate(step: int, lr: float, warmup_steps: int) -> float:
    return lr * min(1.0, (step + 1) / max(1, warmup_steps))


@torch.inference_mode(False)
@torch.enable_grad()
def train_encoder(
    model: TriplaneGenerator,
    config: EncoderConfig,
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-4,
    warmup_steps: int = 500,
    views: str = "mix",
    yaw_range_deg: float = 60.0,
    pitch_range_deg: float = 20.0,
    pitch_jitter_deg: float = 10.0,
    truncation_range: tuple[float, float] = (0.5, 1.0),
    w_weight: float = 1.0,
    image_weight: float = 1.0,
    camera_weight: float = 5.0,
    perceptual_weight: float = 1.0,
    image_resolution: int | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    checkpoint_every: int = 500,
    progress: ProgressFn | None = None,
    seed: int = 0,
) -> TrainResult:
    """Train an encoder for ``model`` to ``steps`` total steps (see the module docstring).

    Args:
        model: the generator (frozen; its device is used).
        config: the encoder architecture; ``num_ws``/``w_dim`` must match the model.
        steps: total steps to reach (a resumed run does the remainder).
        batch_size: samples per step and process.
        lr, warmup_steps: Adam learning rate after a linear warm-up.
        views, yaw_range_deg, pitch_range_deg: the view preset of :func:`demo.tasks.views.draw_view`.
        pitch_jitter_deg: extra pitch, uniform in +- this.
        truncation_range: psi uniform in (low, high) per sample.
        w_weight, image_weight, camera_weight: loss weights (0 turns a term off; ``image_weight=0``
            skips the renders through the generator).
        perceptual_weight: weight of the MS-SSIM distance inside the image term.
        image_resolution: neural rendering resolution of the image term (default half the model's).
        out_dir: checkpoint folder; None trains in memory only.
        resume: continue from ``out_dir``'s checkpoint when there is one.
        checkpoint_every: steps between checkpoints.
        seed: the run's seed; batches depend on (seed, step, rank) only.
    """
    started = time.perf_counter()
    check_options(
        steps=steps, batch_size=batch_size, lr=lr, views=views, truncation_range=truncation_range,
        pitch_jitter_deg=pitch_jitter_deg, checkpoint_every=checkpoint_every,
    )
    if config.kind not in ENCODER_KINDS:
        raise InputError(f"Unknown encoder kind {config.kind!r}.")
    if (config.num_ws, config.w_dim) != (model.num_ws, model.w_dim):
        raise InputError(
            f"The encoder config predicts {config.num_ws} ws of {config.w_dim}; the generator takes {model.num_ws} of {model.w_dim}."
        )
    rank, world = _distributed_context()
    device = model.device
    resolution = image_resolution or max(8, model.neural_rendering_resolution // 2)
    fingerprint = model_fingerprint(model)
    training = {
        "seed": int(seed), "batch_size": int(batch_size), "world": world, "lr": lr, "warmup_steps": warmup_steps,
        "views": views, "yaw_range_deg": yaw_range_deg, "pitch_range_deg": pitch_range_deg,
        "pitch_jitter_deg": pitch_jitter_deg, "truncation_range": list(truncation_range), "w_weight": w_weight,
        "image_weight": image_weight, "camera_weight": camera_weight, "perceptual_weight": perceptual_weight,
        "image_resolution": resolution,
    }

    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
        torch.manual_seed(seed)
        encoder = ImageEncoder(config).to(device)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr, betas=(0.9, 0.999))
    out = Path(out_dir) if out_dir is not None else None
    start_step = 0
    history: dict[str, list[float]] = {"loss": [], "w": [], "image": [], "camera": []}
    if out is not None and resume and (out / CONFIG_FILE).is_file():
        start_step, history = _resume(encoder, optimizer, out, config, fingerprint)
        logger.info("resuming %s at step %d", out, start_step)
    else:
        w_avg, _ = estimate_w_avg(model)
        encoder.set_w_avg(w_avg)
    trainable = encoder
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trainable = DistributedDataParallel(encoder, device_ids=[device] if device.type == "cuda" else None)
    encoder.train()

    losses, w_losses, image_losses, camera_losses = [], [], [], []
    step = start_step
    for step in range(start_step, steps):
        batch = draw_batch(
            model, (TRAIN_STREAM, seed, step, rank), batch_size, views=views, yaw_range_deg=yaw_range_deg,
            pitch_range_deg=pitch_range_deg, pitch_jitter_deg=pitch_jitter_deg, truncation_range=truncation_range,
        )
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, lr, warmup_steps)
        predicted = trainable(batch.images)
        w_term = (predicted["ws"] - batch.ws).abs().mean()
        loss = w_weight * w_term
        image_term = camera_term = torch.zeros((), device=device)
        if image_weight:
            rng_seed = batch.render_seed + 1
            with torch.no_grad():
                target = model.synthesis(
                    batch.ws, batch.labels, resolution, rng=torch.Generator(device=device).manual_seed(rng_seed)
                )["image"]
            rendered = model.synthesis(
                predicted["ws"], batch.labels, resolution, rng=torch.Generator(device=device).manual_seed(rng_seed)
            )["image"]
            image_term = image_loss(rendered, target, perceptual_weight=perceptual_weight)
            loss = loss + image_weight * image_term
        if config.predicts_camera and camera_weight:
            yaw_error, pitch_error = _wrapped(predicted["yaw"] - batch.yaw), _wrapped(predicted["pitch"] - batch.pitch)
            camera_term = (yaw_error.square() + pitch_error.square()).mean()
            loss = loss + camera_weight * camera_term
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        values = [float(v.detach()) for v in (loss, w_term, image_term, camera_term)]
        for series, value in zip((losses, w_losses, image_losses, camera_losses), values):
            series.append(value)
        for key, value in zip(("loss", "w", "image", "camera"), values):
            history[key] = (history[key] + [value])[-HISTORY_KEPT:]
        done = step + 1
        report(progress, done / steps, f"step {done}/{steps}: loss {values[0]:.4f} (w {values[1]:.4f}, camera {values[3]:.3f})")
        if out is not None and (done % checkpoint_every == 0 or done == steps):
            if rank == 0:
                save_encoder(
                    encoder, out, step=done, generator=fingerprint, training=training, history=history, optimizer=optimizer
                )
            _barrier(world)
    final_step = max(start_step, steps)
    encoder.eval()
    return TrainResult(
        encoder=encoder.to("cpu").requires_grad_(False),
        step=final_step,
        start_step=start_step,
        losses=tuple(losses),
        w_losses=tuple(w_losses),
        image_losses=tuple(image_losses),
        camera_losses=tuple(camera_losses),
        checkpoint=out / WEIGHTS_FILE if out is not None else None,
        rank=rank,
        world=world,
        seconds=time.perf_counter() - started,
    )


def _resume(
    encoder: ImageEncoder, optimizer: torch.optim.Optimizer, out: Path, config: EncoderConfig, fingerprint: dict[str, str]
) -> tuple[int, dict[str, list[float]]]:
    record = _read_record(out)
    saved = record.get("config")
    if saved != config.to_dict():
        raise InputError(
            f"{out} holds an encoder with another architecture ({saved}); pass the same --kind/settings, "
            "another --out, or --no-resume to start over."
        )
    trained_on = record.get("generator", {})
    if trained_on and trained_on.get("weights_sha256") != fingerprint["weights_sha256"]:
        raise InputError(f"{out} holds an encoder trained on other generator weights; use another --out or --no-resume.")
    step = int(record["step"])
    weights = out / WEIGHTS_FILE
    try:
        with safe_open(str(weights), framework="pt") as handle:
            weights_step = (handle.metadata() or {}).get("step")
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{weights}: cannot read the weights ({error}). Pass --no-resume to start over.") from None
    if weights_step != str(step):
        raise CheckpointError(
            f"{weights} is from step {weights_step} but {CONFIG_FILE} says {step}: the run stopped while saving. "
            "Delete the encoder files in the folder (or pass --no-resume) to start over."
        )
    encoder.load_state_dict(state)
    optimizer_path = out / OPTIMIZER_FILE
    if optimizer_path.is_file():
        _load_optimizer(optimizer, optimizer_path, step=step)
    else:
        logger.warning("%s is missing: resuming with a fresh optimizer state", optimizer_path)
    history = {key: list(record.get("history", {}).get(key, [])) for key in ("loss", "w", "image", "camera")}
    return step, history


# --- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderEvaluation:
    """Held-out comparison of an encoder against constant baselines (means over ``num`` samples)."""

    num: int
    latent_l1: float
    """Mean |ws_pred - ws|."""
    latent_l1_w_avg: float
    """The same for the constant w_avg (the PTI start without an encoder)."""
    latent_l1_mean: float
    """The same for the best constant in hindsight: the mean of the held-out ws."""
    psnr: float
    """dB, prediction rendered from the true camera vs the sample."""
    psnr_w_avg: float
    yaw_error_deg: float | None
    """Mean |yaw error|; None without a camera head."""
    yaw_error_constant_deg: float
    """Mean |yaw error| of the best constant (the held-out median yaw)."""
    pitch_error_deg: float | None
    pitch_error_constant_deg: float


def evaluate_encoder(
    encoder: ImageEncoder,
    model: TriplaneGenerator,
    *,
    num: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    views: str = "mix",
    pitch_jitter_deg: float = 10.0,
    truncation_range: tuple[float, float] = (0.5, 1.0),
) -> EncoderEvaluation:
    """Compare the encoder with the w_avg and best-constant baselines on ``num`` held-out renders."""
    encoder = encoder.to(model.device).eval()
    w_avg, _ = estimate_w_avg(model)
    w_avg = w_avg.to(model.device)
    ws_true, ws_pred, yaw_true, yaw_pred, pitch_true, pitch_pred = [], [], [], [], [], []
    psnr_pred, psnr_avg = [], []
    with torch.inference_mode():
        for start in range(0, num, batch_size):
            count = min(batch_size, num - start)
            batch = draw_batch(
                model, (EVAL_STREAM, seed, start), count, views=views, pitch_jitter_deg=pitch_jitter_deg,
                truncation_range=truncation_range,
            )
            out = encoder(batch.images)
            ws_true.append(batch.ws.cpu())
            ws_pred.append(out["ws"].cpu())
            yaw_true.append(batch.yaw.cpu())
            pitch_true.append(batch.pitch.cpu())
            if "yaw" in out:
                yaw_pred.append(out["yaw"].cpu())
                pitch_pred.append(out["pitch"].cpu())
            for index in range(count):
                label = batch.labels[index : index + 1]
                rng = torch.Generator(device=model.device).manual_seed(batch.render_seed)
                target = batch.images[index : index + 1].cpu()
                rendered = model.synthesis(out["ws"][index : index + 1], label, rng=rng)["image"].cpu()
                rng = torch.Generator(device=model.device).manual_seed(batch.render_seed)
                baseline = model.synthesis(w_avg.expand(1, model.num_ws, -1), label, rng=rng)["image"].cpu()
                psnr_pred.append(psnr(rendered, target))
                psnr_avg.append(psnr(baseline, target))
    truth, pred = torch.cat(ws_true), torch.cat(ws_pred)
    yaw, pitch = torch.cat(yaw_true), torch.cat(pitch_true)

    def degrees(error: torch.Tensor) -> float:
        return float(torch.rad2deg(_wrapped(error).abs()).mean())

    return EncoderEvaluation(
        num=num,
        latent_l1=float((pred - truth).abs().mean()),
        latent_l1_w_avg=float((w_avg.cpu() - truth).abs().mean()),
        latent_l1_mean=float((truth.mean(0, keepdim=True) - truth).abs().mean()),
        psnr=float(np.mean(psnr_pred)),
        psnr_w_avg=float(np.mean(psnr_avg)),
        yaw_error_deg=degrees(torch.cat(yaw_pred) - yaw) if yaw_pred else None,
        yaw_error_constant_deg=degrees(yaw - yaw.median()),
        pitch_error_deg=degrees(torch.cat(pitch_pred) - pitch) if pitch_pred else None,
        pitch_error_constant_deg=degrees(pitch - pitch.median()),
    )
