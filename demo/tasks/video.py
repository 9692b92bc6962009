"""Camera trajectories, frame rendering, rotation videos and multi-view image sets.

Trajectories are stored in the official camera-angle convention of ``LookAtPoseSampler`` (h, v in
radians, pi/2 frontal; see ``demo.cameras``) so the official ``gen_videos.py`` orbit, which writes
pi as 3.14, is reproduced exactly. At the API, angles are degrees offsets from the frontal view:
positive yaw moves the camera to the subject's left (image right), negative pitch moves it up.

Rendering: when one identity is shown (constant ws) the tri-planes are computed once and every
frame only renders; frames are rendered in batches. The renderer's random draws use the same seed
for every frame, so the stratified jitter does not flicker from frame to frame. Depth videos are
colour-mapped with one near/far range for the whole video (no per-frame flicker).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from demo import media
from demo.cameras import Camera, look_at, orbit_angles
from demo.errors import InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.progress import ProgressFn, report
from demo.tasks.views import check_view_range

RenderMode = Literal["image", "image_raw", "depth", "image+depth"]
RENDER_MODES: tuple[str, ...] = ("image", "image_raw", "depth", "image+depth")
TRAJECTORIES: tuple[str, ...] = ("orbit", "yaw", "360", "keyframes", "static")
MAX_FRAMES = 10_000


@dataclass(frozen=True)
class Trajectory:
    """A camera path: official (h, v) angles per frame."""

    h: np.ndarray
    """(T,) float64 horizontal angle, radians; pi/2 is frontal."""
    v: np.ndarray
    """(T,) float64 vertical angle, radians; pi/2 is level."""
    name: str = "custom"

    @property
    def num_frames(self) -> int:
        return len(self.h)

    @property
    def yaw_deg(self) -> np.ndarray:
        return np.degrees(self.h - math.pi / 2)

    @property
    def pitch_deg(self) -> np.ndarray:
        return np.degrees(self.v - math.pi / 2)


def _check_frames(num_frames: int) -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or not 1 <= num_frames <= MAX_FRAMES:
        raise InputError(f"The number of frames must be from 1 to {MAX_FRAMES}; got {num_frames!r}.")
    return int(num_frames)


def _from_offsets(yaw_deg: np.ndarray, pitch_deg: np.ndarray, name: str) -> Trajectory:
    return Trajectory(h=math.pi / 2 + np.radians(yaw_deg), v=math.pi / 2 + np.radians(pitch_deg), name=name)


def yaw_sweep(num_frames: int, *, yaw_range_deg: float = 35.0, pitch_deg: float = 0.0) -> Trajectory:
    """Left-right-left loop: yaw = range * sin(2 pi t / T) at a fixed pitch."""
    t = np.arange(_check_frames(num_frames)) / num_frames
    return _from_offsets(yaw_range_deg * np.sin(2 * math.pi * t), np.full(num_frames, float(pitch_deg)), "yaw")


def official_orbit(num_frames: int, *, yaw_amplitude: float = 0.35, pitch_amplitude: float = 0.25) -> Trajectory:
    """The ``gen_videos.py`` loop (amplitudes in radians, pi written as 3.14 as there)."""
    count = _check_frames(num_frames)
    angles = [orbit_angles(f, count, yaw_amplitude=yaw_amplitude, pitch_amplitude=pitch_amplitude) for f in range(count)]
    h, v = (np.array(values, dtype=np.float64) for values in zip(*angles, strict=True))
    return Trajectory(h=h, v=v, name="orbit")


def turntable(num_frames: int, *, pitch_deg: float = 0.0, start_yaw_deg: float = 0.0) -> Trajectory:
    """A full 360-degree turn; the first and last frames share a camera exactly (a closed loop)."""
    count = _check_frames(num_frames)
    # Wrapped into [0, 360) so the last frame's angle is bit-identical to the first one's.
    yaw = start_yaw_deg + np.mod(np.linspace(0.0, 360.0, count), 360.0) if count > 1 else np.full(1, float(start_yaw_deg))
    return _from_offsets(yaw, np.full(count, float(pitch_deg)), "360")


def keyframed(yaw_deg: Sequence[float], pitch_deg: Sequence[float], num_frames: int) -> Trajectory:
    """Piecewise-linear path through (yaw, pitch) keyframes; the first and last frames are the end keys."""
    yaw = np.asarray(yaw_deg, dtype=np.float64)
    pitch = np.asarray(pitch_deg, dtype=np.float64)
    if yaw.size == 0 or pitch.size == 0:
        raise InputError("Give at least one yaw and one pitch keyframe.")
    if pitch.size == 1:
        pitch = np.full(yaw.size, pitch[0])
    if yaw.size == 1:
        yaw = np.full(pitch.size, yaw[0])
    if yaw.size != pitch.size:
        raise InputError(f"Yaw and pitch keyframe lists differ in length ({yaw.size} vs {pitch.size}).")
    count = _check_frames(num_frames)
    keys = np.linspace(0.0, 1.0, yaw.size)
    t = np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(1)
    return _from_offsets(np.interp(t, keys, yaw), np.interp(t, keys, pitch), "keyframes")


def static(num_frames: int, *, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> Trajectory:
    """A fixed camera (for latent interpolation videos)."""
    count = _check_frames(num_frames)
    return _from_offsets(np.full(count, float(yaw_deg)), np.full(count, float(pitch_deg)), "static")


def make_trajectory(
    kind: str,
    num_frames: int,
    *,
    yaw_range_deg: float = 35.0,
    pitch_deg: float = 0.0,
    yaw_keys_deg: Sequence[float] = (),
    pitch_keys_deg: Sequence[float] = (),
) -> Trajectory:
    """Build a trajectory by name: 'orbit', 'yaw', '360', 'keyframes' or 'static'."""
    if kind == "orbit":
        return official_orbit(num_frames)
    if kind == "yaw":
        return yaw_sweep(num_frames, yaw_range_deg=yaw_range_deg, pitch_deg=pitch_deg)
    if kind == "360":
        return turntable(num_frames, pitch_deg=pitch_deg)
    if kind == "keyframes":
        return keyframed(yaw_keys_deg, pitch_keys_deg or [pitch_deg], num_frames)
    if kind == "static":
        return static(num_frames, pitch_deg=pitch_deg)
    raise InputError(f"Unknown trajectory {kind!r}; choose from {', '.join(TRAJECTORIES)}.")


def trajectory_cameras(
    model: TriplaneGenerator, trajectory: Trajectory, *, focal: float | None = None, radius: float | None = None
) -> Camera:
    """Cameras (T) around the model's pivot at its training radius and focal length (official look-at)."""
    config = model.config
    return look_at(
        torch.from_numpy(trajectory.h),
        torch.from_numpy(trajectory.v),
        radius=config.avg_camera_radius if radius is None else radius,
        pivot=config.avg_camera_pivot,
        focal=config.focal_length if focal is None else focal,
    )


@dataclass(frozen=True)
class FramesResult:
    """Rendered frames on the CPU."""

    frames: np.ndarray
    """(T, H, W, 3) uint8 video frames in the requested mode."""
    cameras: np.ndarray
    """(T, 25) float32 camera labels."""
    depth: np.ndarray | None = field(default=None, repr=False)
    """(T, r, r) float32 depth when the mode used it."""


def render_frames(
    model: TriplaneGenerator,
    ws: np.ndarray | torch.Tensor,
    cameras: Camera,
    *,
    mode: RenderMode = "image",
    depth_multiplier: int = 1,
    batch_size: int = 4,
    seed: int = 0,
    before_batch: Callable[[int, int], None] | None = None,
    progress: ProgressFn | None = None,
) -> FramesResult:
    """Render frames of one identity (ws (1, num_ws, w_dim)) or a latent path (ws (T, num_ws, w_dim)).

    Args:
        cameras: T cameras (or 1, held fixed).
        mode: 'image', 'image_raw', 'depth' (colour-mapped, one range per video) or 'image+depth'.
        depth_multiplier: multiplies both per-ray sample counts (``gen_videos.py``'s sample_mult).
        seed: seed of the renderer's draws, the same for every frame.
        before_batch: called with (start, stop) before frames [start, stop) render (a morph sets the
            generator's weights of those frames there).
    """
    if mode not in RENDER_MODES:
        raise InputError(f"Unknown render mode {mode!r}; choose from {', '.join(RENDER_MODES)}.")
    if not isinstance(depth_multiplier, int) or not 1 <= depth_multiplier <= 8:
        raise InputError(f"The depth sample multiplier must be an integer from 1 to 8; got {depth_multiplier!r}.")
    ws = torch.as_tensor(np.asarray(ws) if not isinstance(ws, torch.Tensor) else ws).to(model.device, torch.float32)
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (model.num_ws, model.w_dim):
        raise InputError(f"ws must have shape (N, {model.num_ws}, {model.w_dim}); got {tuple(ws.shape)}.")
    count = max(len(ws), len(cameras))
    if len(ws) not in (1, count) or len(cameras) not in (1, count):
        raise InputError(f"{len(ws)} latents and {len(cameras)} cameras cannot be paired frame by frame.")
    labels = cameras.to_label().to(model.device)
    render = model.config.render
    samples = dict(
        depth_samples=render.depth_samples * depth_multiplier, importance_samples=render.importance_samples * depth_multiplier
    )
    images, depths, alphas = [], [], []
    with torch.inference_mode():
        planes_once = model.planes(ws) if len(ws) == 1 else None
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            n = stop - start
            if before_batch is not None:
                before_batch(start, stop)
            if planes_once is not None:
                ws_batch, planes = ws.expand(n, -1, -1), planes_once.expand(n, *planes_once.shape[1:])
            else:
                ws_batch, planes = ws[start:stop], None
            label = labels.expand(n, -1) if len(labels) == 1 else labels[start:stop]
            rngs = [torch.Generator().manual_seed(seed) for _ in range(n)]
            out = model.synthesis(ws_batch, label, planes=planes, rng=rngs, return_extras=True, per_sample_clamp=True, **samples)
            key = "image_raw" if mode == "image_raw" else "image"
            images.append(out[key].float().cpu())
            depths.append(out["image_depth"].float().cpu())
            alphas.append(out["image_alpha"].float().cpu())
            report(progress, stop / count, f"frame {stop}/{count}")
    image = torch.cat(images)
    depth = torch.cat(depths)[:, 0].numpy()
    alpha = torch.cat(alphas)[:, 0].numpy()
    frames = _compose(mode, image, depth, alpha)
    all_labels = labels.expand(count, -1) if len(labels) == 1 else labels
    return FramesResult(frames=frames, cameras=all_labels.cpu().numpy(), depth=depth if mode in ("depth", "image+depth") else None)


def depth_range(depth: np.ndarray, alpha: np.ndarray) -> tuple[float, float]:
    """One near/far range for a whole video: 1st and 99th percentiles of the foreground depth."""
    foreground = depth[(alpha > 0.5) & np.isfinite(depth)]
    if foreground.size == 0:
        foreground = depth[np.isfinite(depth)]
    if foreground.size == 0:
        return 0.0, 1.0
    near, far = np.percentile(foreground, [1, 99])
    return float(near), float(max(far, near + 1e-6))


def _compose(mode: str, image: torch.Tensor, depth: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    if mode in ("image", "image_raw"):
        return media.image_to_uint8(image)
    near, far = depth_range(depth, alpha)
    colored = np.stack([media.colorize_depth(d, a, near=near, far=far) for d, a in zip(depth, alpha, strict=True)])
    if mode == "depth":
        return colored
    rgb = media.image_to_uint8(image)
    return np.stack([media.tile_frames([frame, depth_frame]) for frame, depth_frame in zip(rgb, colored, strict=True)])


@dataclass(frozen=True)
class VideoResult:
    path: Path
    num_frames: int
    fps: float
    cameras: np.ndarray
    """(T, 25) float32."""
    extra_files: tuple[Path, ...] = ()


def write_frames(
    frames: FramesResult, path: str | Path, *, fps: float = 30.0, gif: bool = False, frames_dir: str | Path | None = None
) -> VideoResult:
    """Encode frames as H.264 mp4 (plus an optional GIF beside it and PNG frames), with a cameras .npy.

    The GIF plays at ``min(fps, 25)``: GIF delays are in hundredths of a second and browsers stretch delays
    under 20 ms, so faster GIFs would not play as written; above 25 fps the GIF is slower than the mp4.
    """
    path = Path(path)
    extra = [media.save_npy(path.with_name(path.stem + "_cameras.npy"), frames.cameras)]
    media.write_video(path, frames.frames, fps=fps)
    if gif:
        extra.append(media.write_gif(path.with_suffix(".gif"), frames.frames, fps=min(fps, 25.0)))
    if frames_dir is not None:
        extra.extend(media.save_frames(frames_dir, frames.frames))
    return VideoResult(path=path, num_frames=len(frames.frames), fps=float(fps), cameras=frames.cameras, extra_files=tuple(extra))


def render_video(
    model: TriplaneGenerator,
    ws: np.ndarray | torch.Tensor,
    trajectory: Trajectory,
    path: str | Path,
    *,
    mode: RenderMode = "image",
    fps: float = 30.0,
    depth_multiplier: int = 1,
    batch_size: int = 4,
    gif: bool = False,
    frames_dir: str | Path | None = None,
    full_turn: bool = False,
    before_batch: Callable[[int, int], None] | None = None,
    progress: ProgressFn | None = None,
) -> VideoResult:
    """Render one identity (or a latent path with one ws per frame) along a camera trajectory to an mp4.

    ``before_batch`` is :func:`render_frames`'s hook (a morph sets the generator's weights per frame there).
    """
    check_view_range(model, trajectory.yaw_deg, trajectory.pitch_deg, full_turn=full_turn or model.config.is_full_head)
    if not (0 < fps <= 240):
        raise InputError(f"fps must be between 0 and 240; got {fps}.")
    frames = render_frames(
        model, ws, trajectory_cameras(model, trajectory), mode=mode, depth_multiplier=depth_multiplier,
        batch_size=batch_size, before_batch=before_batch, progress=progress,
    )
    return write_frames(frames, path, fps=fps, gif=gif, frames_dir=frames_dir)


# --- multi-view image sets --------------------------------------------------------------------------


def view_list(yaws_deg: Sequence[float], pitches_deg: Sequence[float], *, paired: bool = False) -> list[tuple[float, float]]:
    """Views as (yaw, pitch) degrees: the full grid yaw x pitch, or pairs yaw[i], pitch[i] when ``paired``."""
    yaws, pitches = [float(y) for y in yaws_deg], [float(p) for p in pitches_deg]
    if not yaws or not pitches:
        raise InputError("Give at least one yaw and one pitch angle.")
    if paired:
        if len(yaws) != len(pitches):
            raise InputError(f"Paired views need as many yaws as pitches ({len(yaws)} vs {len(pitches)}).")
        return list(zip(yaws, pitches, strict=True))
    return [(yaw, pitch) for pitch in pitches for yaw in yaws]


def view_name(stem: str, yaw_deg: float, pitch_deg: float) -> str:
    """File name with the angles: ``seed0042_yaw+030.0_pitch-010.0.png``."""
    return f"{stem}_yaw{yaw_deg:+06.1f}_pitch{pitch_deg:+06.1f}.png"


@dataclass(frozen=True)
class MultiviewResult:
    folder: Path
    images: tuple[Path, ...]
    views_json: Path


def render_multiview(
    model: TriplaneGenerator,
    ws: np.ndarray | torch.Tensor,
    views: Sequence[tuple[float, float]],
    folder: str | Path,
    *,
    stem: str,
    mode: RenderMode = "image",
    fov_deg: float | None = None,
    batch_size: int = 4,
    full_turn: bool = False,
    progress: ProgressFn | None = None,
) -> MultiviewResult:
    """One PNG per view of one identity, plus ``views.json`` with every view's angles and 25-number camera."""
    from demo.cameras import camera_from_angles

    if not views:
        raise InputError("Give at least one view.")
    yaws = np.array([v[0] for v in views])
    pitches = np.array([v[1] for v in views])
    check_view_range(model, yaws, pitches, full_turn=full_turn or model.config.is_full_head)
    config = model.config
    cameras = camera_from_angles(
        yaw_deg=yaws.tolist(), pitch_deg=pitches.tolist(), radius=config.avg_camera_radius, pivot=config.avg_camera_pivot,
        focal=None if fov_deg is not None else config.focal_length, fov_deg=fov_deg,
    )
    frames = render_frames(model, ws, cameras, mode=mode, batch_size=batch_size, progress=progress)
    folder = Path(folder)
    images, records = [], []
    for index, (yaw, pitch) in enumerate(views):
        name = view_name(stem, yaw, pitch)
        images.append(media.save_png(folder / name, frames.frames[index]))
        records.append({
            "file": name,
            "yaw_deg": yaw,
            "pitch_deg": pitch,
            "camera": [float(x) for x in frames.cameras[index]],
        })
    views_json = media.save_json(folder / f"{stem}_views.json", {
        "identity": stem,
        "mode": mode,
        "camera_format": "cam2world 4x4 (OpenCV, row-major) then normalised intrinsics 3x3",
        "radius": config.avg_camera_radius,
        "pivot": list(config.avg_camera_pivot),
        "views": records,
    })
    return MultiviewResult(folder=folder, images=tuple(images), views_json=views_json)


def frame_strip(frames: np.ndarray, count: int = 8) -> np.ndarray:
    """``count`` evenly spaced frames (first and last included) side by side: (H, count * W, 3)."""
    if count < 1:
        raise InputError("The strip needs at least one frame.")
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return media.tile_frames([frames[i] for i in picks])
