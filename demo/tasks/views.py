"""Which views to render: the limits of each model and the seeded view presets of datasets and training.

Angles are offsets from the frontal view in degrees, in the conventions of ``demo/cameras.py``
(positive yaw puts the camera at +x, negative pitch puts it above the face). Front-facing EG3D
models show yaw within +-90 degrees; 360-degree models (PanoHead) all the way round; every model
pitch within +-80 degrees (:func:`check_view_range`).

:func:`draw_view` gives the view of a dataset sample or training render from its seed alone
(``SeedSequence([0x56494557, seed])``, PCG64), so it does not depend on batching or sharding. The
presets (``mix``, ``frontal``, ``uniform``) are described in ``demo/tasks/dataset.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from demo.cameras import Camera, camera_from_angles
from demo.errors import InputError
from demo.networks.eg3d import TriplaneGenerator

MAX_PITCH_DEG = 80.0
"""Pitch beyond this looks almost straight down or up; the look-at camera degenerates at 90."""
MAX_FRONT_YAW_DEG = 90.0
"""Front-facing models (EG3D, trained on faces seen from the front half) show no back of the head."""
FULL_TURN_MAX_YAW_DEG = 180.0

VIEW_PRESETS = ("mix", "frontal", "uniform")
MIX = (("frontal", 0.70), ("side", 0.12), ("profile", 0.06), ("frontal_wide", 0.12))
"""The 'mix' preset: category and share, in the order the categories are drawn."""
SIDE_MAX_YAW_DEG = 70.0
WIDE_FOV_FACTOR = 1.5
"""'frontal_wide' divides the training focal length by this (a 1.5x wider view)."""
VIEW_STREAM = 0x56494557  # "VIEW": keeps the view draws apart from any other use of the seed


def check_view_range(model: TriplaneGenerator, yaw_deg: np.ndarray | float, pitch_deg: np.ndarray | float, *, full_turn: bool = False) -> None:
    """Refuse views the model cannot show: |pitch| > 80 deg, or |yaw| > 90 deg for front-facing models.

    ``full_turn=True`` lifts the yaw limit (render_video and render_multiview set it for 360-degree
    models such as PanoHead).
    """
    pitch = np.abs(np.asarray(pitch_deg, dtype=np.float64))
    if not np.isfinite(pitch).all() or (pitch > MAX_PITCH_DEG).any():
        raise InputError(f"Pitch must stay within +-{MAX_PITCH_DEG:g} degrees; got up to {pitch.max():g}.")
    yaw = np.asarray(yaw_deg, dtype=np.float64)
    if not np.isfinite(yaw).all():
        raise InputError("Yaw angles must be finite numbers.")
    wrapped = np.abs((yaw + 180.0) % 360.0 - 180.0)
    if not full_turn and (wrapped > MAX_FRONT_YAW_DEG + 1e-9).any():
        raise InputError(
            f"This model only shows the front of the head: keep yaw within +-{MAX_FRONT_YAW_DEG:g} degrees "
            f"(got {wrapped.max():g}). Full 360-degree turns need a 360-degree model such as PanoHead."
        )


@dataclass(frozen=True)
class View:
    """One sample's camera, as drawn from its seed."""

    category: str
    yaw_deg: float
    pitch_deg: float
    focal: float
    """Normalised focal length (intrinsics fx = fy)."""
    radius: float

    def camera(self, pivot: Sequence[float]) -> Camera:
        """The render camera (batch 1)."""
        return camera_from_angles(
            yaw_deg=self.yaw_deg, pitch_deg=self.pitch_deg, radius=self.radius, pivot=tuple(pivot), focal=self.focal
        )


def draw_view(
    seed: int,
    model: TriplaneGenerator,
    *,
    views: str = "mix",
    yaw_range_deg: float = 60.0,
    pitch_range_deg: float = 20.0,
) -> View:
    """The view of the sample with this seed (deterministic; see the module docstring for the presets)."""
    config = model.config
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([VIEW_STREAM, int(seed)])))
    u = rng.random(3)  # always three draws, whatever the category
    focal, radius = float(config.focal_length), float(config.avg_camera_radius)
    if views == "frontal":
        return View("frontal", 0.0, 0.0, focal, radius)
    if views == "uniform":
        return View("uniform", float((2 * u[1] - 1) * yaw_range_deg), float((2 * u[2] - 1) * pitch_range_deg), focal, radius)
    if views != "mix":
        raise InputError(f"Unknown view preset {views!r}; choose one of {', '.join(VIEW_PRESETS)}.")
    edges = np.cumsum([share for _, share in MIX])
    category = MIX[min(int(np.searchsorted(edges, u[0], side="right")), len(MIX) - 1)][0]
    if category == "side":
        return View(category, float((2 * u[1] - 1) * SIDE_MAX_YAW_DEG), 0.0, focal, radius)
    if category == "profile":
        max_yaw = FULL_TURN_MAX_YAW_DEG if config.is_full_head else MAX_FRONT_YAW_DEG
        magnitude = SIDE_MAX_YAW_DEG + (1.0 - u[1]) * (max_yaw - SIDE_MAX_YAW_DEG)  # in (70, max]
        return View(category, float(magnitude if u[2] < 0.5 else -magnitude), 0.0, focal, radius)
    if category == "frontal_wide":
        return View(category, 0.0, 0.0, focal / WIDE_FOV_FACTOR, radius)
    return View("frontal", 0.0, 0.0, focal, radius)


def views_settings(views: str, yaw_range_deg: float, pitch_range_deg: float) -> dict[str, Any]:
    if views == "mix":
        return {"preset": "mix", "shares": dict(MIX), "side_max_yaw_deg": SIDE_MAX_YAW_DEG, "wide_fov_factor": WIDE_FOV_FACTOR}
    if views == "uniform":
        return {"preset": "uniform", "yaw_range_deg": yaw_range_deg, "pitch_range_deg": pitch_range_deg}
    return {"preset": views}
