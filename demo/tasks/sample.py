"""Seeds or latents + cameras -> images, raw images, depth, alpha (the library side of ``generate``).

z comes from a seed exactly as the official scripts make it
(``np.random.RandomState(seed).randn(1, z_dim)``, float64), so seed 42 here is seed 42 there. The
renderer's random draws come from one generator per sample seeded with the sample's seed, so a
seed gives the same result alone or in a batch and across runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from demo.cameras import Camera, camera_from_angles, conditioning_camera
from demo.errors import InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.progress import ProgressFn, report

MAX_SEEDS = 100_000
_SEED_MAX = 2**32 - 1  # numpy's RandomState accepts seeds in [0, 2**32)


@dataclass(frozen=True)
class SampleResult:
    """CPU arrays for a batch of generated faces (B samples)."""

    seeds: tuple[int | None, ...]
    """The seed of each sample (None when ws/z were given directly)."""
    z: np.ndarray | None
    """(B, z_dim) float64 latents, or None when ws were given."""
    ws: np.ndarray
    """(B, num_ws, w_dim) float32 intermediate latents (after truncation)."""
    cameras: np.ndarray
    """(B, 25) float32 render camera labels."""
    images: np.ndarray
    """(B, 3, H, W) float32, roughly [-1, 1] (not clamped)."""
    images_raw: np.ndarray
    """(B, 3, r, r) float32 volume-rendered RGB at the neural rendering resolution."""
    depth: np.ndarray
    """(B, 1, r, r) float32 expected distance along each unit ray, world units."""
    alpha: np.ndarray
    """(B, 1, r, r) float32 accumulated ray weight (foreground opacity) in [0, 1]."""
    truncation_psi: float
    truncation_cutoff: int | None


def z_from_seed(seed: int, z_dim: int) -> np.ndarray:
    """(1, z_dim) float64, as ``gen_samples.py``: ``np.random.RandomState(seed).randn(1, z_dim)``."""
    return np.random.RandomState(_check_seed(seed)).randn(1, z_dim)


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]. Raises InputError on malformed ranges."""
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise InputError(f"Cannot read seeds {text!r}: use numbers and ranges such as '0-3,7'.")
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise InputError(f"Seed range {part!r} runs backwards; write it as {stop}-{start}.")
        if stop > _SEED_MAX:
            raise InputError(f"Seed {stop} is too large; seeds go from 0 to {_SEED_MAX}.")
        if len(seeds) + stop - start + 1 > MAX_SEEDS:
            raise InputError(f"Too many seeds in {text!r}: at most {MAX_SEEDS} per run.")
        seeds.extend(range(start, stop + 1))
    return seeds


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= _SEED_MAX:
        raise InputError(f"Seed {seed!r} is not valid: seeds are integers from 0 to {_SEED_MAX}.")
    return int(seed)


def default_conditioning(model: TriplaneGenerator) -> Camera:
    """The frontal conditioning camera at the model's training radius, pivot and focal."""
    config = model.config
    return conditioning_camera(radius=config.avg_camera_radius, pivot=config.avg_camera_pivot, focal=config.focal_length)


def ws_from_z(
    model: TriplaneGenerator,
    z: np.ndarray,
    *,
    truncation_psi: float = 0.7,
    truncation_cutoff: int | None = None,
    conditioning: Camera | None = None,
) -> np.ndarray:
    """ws (N, num_ws, w_dim) float32 on the CPU for latents z (N, z_dim), conditioned on the frontal camera."""
    conditioning = conditioning if conditioning is not None else default_conditioning(model)
    with torch.inference_mode():
        ws = model.mapping(
            torch.from_numpy(np.asarray(z)).to(model.device), conditioning,
            truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
        )
    return ws.float().cpu().numpy()


def ws_from_seeds(
    model: TriplaneGenerator, seeds: Sequence[int], *, truncation_psi: float = 0.7, truncation_cutoff: int | None = None
) -> np.ndarray:
    """ws (len(seeds), num_ws, w_dim) float32 on the CPU, z from each seed exactly as the official scripts."""
    z = np.concatenate([z_from_seed(seed, model.z_dim) for seed in seeds])
    return ws_from_z(model, z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)


def view_camera(
    model: TriplaneGenerator,
    *,
    yaw_deg: float | Sequence[float] = 0.0,
    pitch_deg: float | Sequence[float] = 0.0,
    fov_deg: float | None = None,
    radius: float | None = None,
) -> Camera:
    """A render camera around the model's pivot; FOV defaults to the training focal length."""
    config = model.config
    return camera_from_angles(
        yaw_deg=yaw_deg,
        pitch_deg=pitch_deg,
        radius=config.avg_camera_radius if radius is None else radius,
        pivot=config.avg_camera_pivot,
        focal=None if fov_deg is not None else config.focal_length,
        fov_deg=fov_deg,
    )


def sample_images(
    model: TriplaneGenerator,
    *,
    seeds: Sequence[int] | None = None,
    z: np.ndarray | torch.Tensor | None = None,
    ws: np.ndarray | torch.Tensor | None = None,
    truncation_psi: float = 0.7,
    truncation_cutoff: int | None = None,
    camera: Camera | None = None,
    conditioning: Camera | None = None,
    batch_size: int = 4,
    noise_mode: str = "const",
    per_sample_clamp: bool = True,
    progress: ProgressFn | None = None,
) -> SampleResult:
    """Generate faces from seeds, z latents or ws latents (exactly one of them).

    Args:
        model: the generator (its device is used).
        seeds: integer seeds; z as in the official scripts.
        z: (B, z_dim) latents; ws: (B, num_ws, w_dim) latents (skip the mapping and truncation).
        truncation_psi, truncation_cutoff: truncation towards the average w (cutoff None = all ws).
        camera: render camera, batch 1 (shared) or B; default frontal at the training radius.
        conditioning: mapping camera; default :func:`default_conditioning`.
        batch_size: samples per forward pass.
        per_sample_clamp: clamp each sample's depth to its own rays' range, not the batch's, so a
            sample's depth does not depend on its batch (see ``TriplaneGenerator.synthesis``). On by
            default here; rendered alone, both give the official result.
    """
    given = [name for name, value in (("seeds", seeds), ("z", z), ("ws", ws)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of seeds, z or ws (got {given or 'none'})")
    if batch_size < 1:
        raise ValueError("batch_size: must be >= 1")
    seed_list: list[int | None]
    z_all: np.ndarray | None = None
    ws_all: torch.Tensor | None = None
    if seeds is not None:
        seed_list = [_check_seed(seed) for seed in seeds]
        z_all = np.concatenate([z_from_seed(seed, model.z_dim) for seed in seed_list]) if seed_list else np.zeros((0, model.z_dim))
    elif z is not None:
        z_all = np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z, dtype=np.float64)
        if z_all.ndim != 2 or z_all.shape[1] != model.z_dim:
            raise InputError(f"z must have shape (N, {model.z_dim}); got {z_all.shape}.")
        seed_list = [None] * len(z_all)
    else:
        ws_all = torch.as_tensor(np.asarray(ws.detach().cpu() if isinstance(ws, torch.Tensor) else ws), dtype=torch.float32)
        if ws_all.ndim != 3 or tuple(ws_all.shape[1:]) != (model.num_ws, model.w_dim):
            raise InputError(f"ws must have shape (N, {model.num_ws}, {model.w_dim}); got {tuple(ws_all.shape)}.")
        seed_list = [None] * len(ws_all)
    count = len(seed_list)
    if count == 0:
        raise InputError("No samples requested.")
    camera = camera if camera is not None else view_camera(model)
    if len(camera) not in (1, count):
        raise ValueError(f"camera: batch {len(camera)} must be 1 or {count}")
    conditioning = conditioning if conditioning is not None else default_conditioning(model)

    parts: dict[str, list[torch.Tensor]] = {key: [] for key in ("ws", "cameras", "image", "image_raw", "image_depth", "image_alpha")}
    device = model.device
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            if ws_all is not None:
                ws_batch = ws_all[start:stop].to(device)
            else:
                z_batch = torch.from_numpy(z_all[start:stop]).to(device)
                ws_batch = model.mapping(z_batch, conditioning, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
            cam = camera if len(camera) == 1 else camera[start:stop]
            label = cam.to_label().expand(stop - start, -1) if len(cam) == 1 else cam.to_label()
            rngs = [torch.Generator().manual_seed(seed if seed is not None else index) for index, seed in enumerate(seed_list[start:stop], start)]
            out = model.synthesis(
                ws_batch, label, noise_mode=noise_mode, rng=rngs, return_extras=True, per_sample_clamp=per_sample_clamp
            )
            parts["ws"].append(ws_batch.float().cpu())
            parts["cameras"].append(label.cpu())
            for key in ("image", "image_raw", "image_depth", "image_alpha"):
                parts[key].append(out[key].float().cpu())
            report(progress, stop / count, f"rendered {stop}/{count}")
    arrays = {key: torch.cat(values).numpy() for key, values in parts.items()}
    return SampleResult(
        seeds=tuple(seed_list),
        z=z_all,
        ws=arrays["ws"],
        cameras=arrays["cameras"],
        images=arrays["image"],
        images_raw=arrays["image_raw"],
        depth=arrays["image_depth"],
        alpha=arrays["image_alpha"],
        truncation_psi=float(truncation_psi),
        truncation_cutoff=truncation_cutoff,
    )


# --- statistics of W ------------------------------------------------------------------------------

W_AVG_SEED = 123  # the projectors' RandomState for the w_avg estimate
W_AVG_SAMPLES = 10_000


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
