"""Cameras: the pose and intrinsics a tri-plane generator renders from and is conditioned on.

EG3D (Chan et al. 2022, section 4 and supplement) conditions both the mapping network and the
renderer on a camera label. This module is the one place that builds such cameras and converts
them to and from the 25-number label. It uses only torch (layer 1).

Conventions
-----------
World frame
    y is up and the subject faces +z. The frontal camera sits at (0, 0, r) and looks towards -z;
    its cam2world rotation is about diag(1, -1, -1).
Camera frame
    OpenCV: x right, y down, z forward (along the view). ``cam2world`` maps camera coordinates to
    world coordinates; its last column is the camera centre.
Intrinsics
    Normalised by the image size: fx = fy = focal, cx = cy = 0.5, so the same matrix serves every
    resolution. ``[[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]``.
Label
    25 floats: the 16 entries of cam2world in row-major order, then the 9 of the intrinsics in
    row-major order. :meth:`Camera.to_label` and :meth:`Camera.from_label` are the only
    conversions.

The official look-at sampler (``LookAtPoseSampler``) and its quirks, which :func:`look_at`
reproduces exactly:

- ``h`` is the azimuth with pi/2 frontal. ``v`` (also pi/2 frontal) is clamped to
  [1e-5, pi - 1e-5] and is **not** the polar angle: the polar angle is phi = arccos(1 - 2 v / pi),
  so for v = pi/2 + p the camera height is y = -(2 / pi) r p, linear in p.
- The camera position is r (sin phi sin(h - pi/2), cos phi, sin phi cos(h - pi/2)): the camera
  **orbits the world origin**. The pivot (``lookat``) only sets the viewing direction.
- There is no roll: right = -normalise(up x forward) with world up (0, 1, 0), the second camera axis
  is normalise(forward x right), and the rotation columns are (right, second axis, forward).
- The official sampler always makes 2 * batch ``torch.randn`` draws, even with zero spread. Ours
  makes none, so it never disturbs a seeded render.

At our API (:func:`camera_from_angles`) ``yaw`` and ``pitch`` are offsets from frontal in radians:
h = pi/2 + yaw and v = pi/2 + pitch, with the official signs. Positive yaw moves the camera to +x,
the image-right side of the frontal view; **negative pitch puts the camera above** the face.

Focal lengths
-------------
- The official ``FOV_to_intrinsics(fov)`` computes focal = 1 / (tan(fov * 3.14159 / 360) * 1.414):
  the "fov" is the *diagonal* field of view, with pi and sqrt(2) approximated.
  :func:`fov_to_focal` reproduces it; :func:`horizontal_fov_deg` gives the true horizontal FOV.
- :data:`FFHQ_FOCAL` = 4.2647 is what the FFHQ/AFHQ dataset labels, the visualizer and
  ``gen_videos.py`` use (a true horizontal FOV of 13.37 degrees). ``gen_samples.py`` uses
  ``FOV_to_intrinsics(18.837)`` = 4.263391, except that its ``--fov-deg`` option is declared as an
  int, so unless it is passed the fov becomes 18 and the focal 4.465175 (an upstream bug).
- :data:`SHAPENET_FOCAL` = 1.7074 is the ShapeNet cars value (about ``FOV_to_intrinsics(45)``).

Conditioning camera: the mapping network is conditioned on a frontal camera at the pivot and
radius of the model's rendering settings. ``gen_samples.py`` places it at h = v = pi/2,
``gen_videos.py`` and the visualizer at 3.14/2 (see :func:`conditioning_camera`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "FFHQ_FOCAL",
    "SHAPENET_FOCAL",
    "Camera",
    "angles_from_camera",
    "camera_from_angles",
    "conditioning_camera",
    "focal_to_fov_deg",
    "fov_to_focal",
    "horizontal_fov_deg",
    "intrinsics_matrix",
    "lift_points",
    "look_at",
    "orbit_angles",
    "project_points",
]

#: Normalised focal length of the FFHQ/AFHQ labels, the visualizer and ``gen_videos.py``.
FFHQ_FOCAL = 4.2647
#: Normalised focal length of the ShapeNet cars labels.
SHAPENET_FOCAL = 1.7074

# The approximations inside the official FOV_to_intrinsics.
_OFFICIAL_FOV_PI = 3.14159
_OFFICIAL_FOV_SQRT2 = 1.414
# The official sampler clamps v to [eps, pi - eps] so that the camera never sits on the pole.
_V_EPS = 1e-5

AngleLike = float | torch.Tensor | list[float] | tuple[float, ...]
PointLike = torch.Tensor | list[float] | tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Camera:
    """A batch of pinhole cameras.

    Attributes:
        cam2world: (B, 4, 4) camera-to-world matrices, OpenCV camera frame (x right, y down,
            z forward).
        intrinsics: (B, 3, 3) intrinsics normalised by the image size (cx = cy = 0.5).
    """

    cam2world: torch.Tensor
    intrinsics: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.cam2world, torch.Tensor) or not isinstance(self.intrinsics, torch.Tensor):
            raise TypeError("Camera: cam2world and intrinsics must be torch tensors")
        if self.cam2world.ndim != 3 or tuple(self.cam2world.shape[1:]) != (4, 4):
            raise ValueError(f"cam2world: expected shape (B, 4, 4), got {tuple(self.cam2world.shape)}")
        if self.intrinsics.ndim != 3 or tuple(self.intrinsics.shape[1:]) != (3, 3):
            raise ValueError(f"intrinsics: expected shape (B, 3, 3), got {tuple(self.intrinsics.shape)}")
        if self.cam2world.shape[0] != self.intrinsics.shape[0]:
            raise ValueError(
                f"Camera: batch sizes differ, cam2world has {self.cam2world.shape[0]} and intrinsics "
                f"{self.intrinsics.shape[0]}"
            )

    def to_label(self) -> torch.Tensor:
        """The EG3D camera label.

        Returns:
            (B, 25): 16 row-major cam2world entries, then 9 row-major intrinsics entries.
        """
        batch = len(self)
        return torch.cat([self.cam2world.reshape(batch, 16), self.intrinsics.reshape(batch, 9)], dim=1)

    @classmethod
    def from_label(cls, label: torch.Tensor | list | tuple) -> Camera:
        """Builds cameras from EG3D labels.

        Args:
            label: (25,) or (B, 25), a tensor or anything ``torch.as_tensor`` accepts (lists,
                numpy arrays). The result is float32 on the label's device.
        """
        tensor = torch.as_tensor(label)
        if tensor.ndim == 1:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 2 or tensor.shape[1] != 25:
            raise ValueError(f"label: expected shape (25,) or (B, 25), got {tuple(torch.as_tensor(label).shape)}")
        tensor = tensor.to(torch.float32)
        return cls(
            cam2world=tensor[:, :16].reshape(-1, 4, 4).clone(),
            intrinsics=tensor[:, 16:].reshape(-1, 3, 3).clone(),
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Camera:
        """Returns the cameras on another device and/or with another floating dtype."""
        return Camera(
            cam2world=self.cam2world.to(device=device, dtype=dtype),
            intrinsics=self.intrinsics.to(device=device, dtype=dtype),
        )

    def __len__(self) -> int:
        return self.cam2world.shape[0]

    def __getitem__(self, index: int | slice | torch.Tensor) -> Camera:
        """Selects cameras; an integer index keeps the batch dimension (batch 1)."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"camera index {index} out of range for a batch of {len(self)}")
            index = slice(index, index + 1 if index != -1 else None)
        return Camera(cam2world=self.cam2world[index], intrinsics=self.intrinsics[index])

    @staticmethod
    def cat(cameras: list[Camera] | tuple[Camera, ...]) -> Camera:
        """Concatenates camera batches along the batch dimension."""
        if len(cameras) == 0:
            raise ValueError("cameras: need at least one Camera to concatenate")
        return Camera(
            cam2world=torch.cat([camera.cam2world for camera in cameras], dim=0),
            intrinsics=torch.cat([camera.intrinsics for camera in cameras], dim=0),
        )

    @property
    def position(self) -> torch.Tensor:
        """(B, 3) camera centres in world coordinates."""
        return self.cam2world[:, :3, 3]


# --- focal length and field of view ----------------------------------------------------------


def _check_finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    return value


def _check_positive(value: float, name: str) -> float:
    value = _check_finite(value, name)
    if value <= 0:
        raise ValueError(f"{name}: must be > 0, got {value}")
    return value


def _check_fov(fov_deg: float) -> float:
    fov_deg = _check_finite(fov_deg, "fov_deg")
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg: must lie strictly between 0 and 180 degrees, got {fov_deg}")
    return fov_deg


def fov_to_focal(fov_deg: float) -> float:
    """Normalised focal length for a field of view, as the official ``FOV_to_intrinsics`` computes it.

    That function treats the angle as the diagonal FOV of a square image and approximates pi by
    3.14159 and sqrt(2) by 1.414; we keep both so that script cameras are reproduced exactly.

    Args:
        fov_deg: diagonal field of view in degrees, in (0, 180).
    """
    fov_deg = _check_fov(fov_deg)
    return 1.0 / (math.tan(fov_deg * _OFFICIAL_FOV_PI / 360) * _OFFICIAL_FOV_SQRT2)


def focal_to_fov_deg(focal: float) -> float:
    """Inverse of :func:`fov_to_focal` (same approximations): the official "fov" of a focal length."""
    focal = _check_positive(focal, "focal")
    return math.atan(1.0 / (focal * _OFFICIAL_FOV_SQRT2)) * 360 / _OFFICIAL_FOV_PI


def horizontal_fov_deg(focal: float) -> float:
    """True horizontal field of view in degrees of a normalised focal length: 2 atan(0.5 / focal)."""
    focal = _check_positive(focal, "focal")
    return math.degrees(2.0 * math.atan(0.5 / focal))


def intrinsics_matrix(focal: float, batch: int = 1) -> torch.Tensor:
    """Normalised intrinsics ``[[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]``.

    Returns:
        (batch, 3, 3) float32.
    """
    focal = _check_positive(focal, "focal")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: must be a positive integer, got {batch!r}")
    matrix = torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32)
    return matrix.unsqueeze(0).repeat(batch, 1, 1)


# --- poses -----------------------------------------------------------------------------------


def _angle_tensor(value: AngleLike, name: str) -> torch.Tensor:
    """An angle (scalar or batch) as a 1-D float64 tensor; validates finiteness and rank."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a number or a 1-D batch of numbers, got a bool")
    if isinstance(value, torch.Tensor):
        tensor = value.to(torch.float64)
    else:
        try:
            tensor = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"{name}: expected a number or a 1-D batch of numbers, got {value!r}") from error
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise ValueError(f"{name}: expected a number or a non-empty 1-D batch, got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return tensor


def _broadcast_angles(
    first: torch.Tensor, second: torch.Tensor, names: tuple[str, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    if first.numel() != second.numel():
        if first.numel() == 1:
            first = first.expand(second.numel())
        elif second.numel() == 1:
            second = second.expand(first.numel())
        else:
            raise ValueError(
                f"{names[0]} and {names[1]}: batch sizes differ ({first.numel()} vs {second.numel()})"
            )
    return first, second


def _pivot_tensor(pivot: PointLike, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(pivot, dtype=torch.float32).to(device)
    if tensor.shape != (3,):
        raise ValueError(f"pivot: expected 3 numbers (x, y, z), got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"pivot: must be finite, got {pivot!r}")
    return tensor


def _normalise(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)


def look_at(
    h: AngleLike,
    v: AngleLike,
    *,
    radius: float,
    pivot: PointLike = (0.0, 0.0, 0.0),
    focal: float = FFHQ_FOCAL,
) -> Camera:
    """The official look-at camera (``LookAtPoseSampler.sample`` with zero spread), in float32.

    The camera orbits the world origin at ``radius``; ``pivot`` only sets where it looks. No random
    numbers are drawn.

    Args:
        h: azimuth in radians, official convention (pi/2 frontal); a float or a 1-D batch.
        v: official elevation parameter in radians (pi/2 frontal, clamped to [1e-5, pi - 1e-5]);
            a float or a 1-D batch. The polar angle is arccos(1 - 2 v / pi).
        radius: distance of the camera from the world origin, > 0.
        pivot: (3,) world point the camera looks at.
        focal: normalised focal length of the intrinsics.

    Returns:
        A :class:`Camera` of batch B = max(len(h), len(v)), float32, on the device of ``h`` (or
        ``v``) if it is a tensor, else the CPU.
    """
    device = next((a.device for a in (h, v) if isinstance(a, torch.Tensor)), torch.device("cpu"))
    h64, v64 = _broadcast_angles(_angle_tensor(h, "h"), _angle_tensor(v, "v"), ("h", "v"))
    radius = _check_positive(radius, "radius")
    focal = _check_positive(focal, "focal")
    lookat = _pivot_tensor(pivot, device)

    # The official sampler holds the angles in float32 from the start; so do we.
    azimuth = h64.to(device=device, dtype=torch.float32)
    v32 = v64.to(device=device, dtype=torch.float32).clamp(_V_EPS, math.pi - _V_EPS)
    polar = torch.arccos(1 - 2 * (v32 / math.pi))

    origin = torch.stack(
        [
            radius * torch.sin(polar) * torch.sin(azimuth - math.pi / 2),
            radius * torch.cos(polar),
            radius * torch.sin(polar) * torch.cos(azimuth - math.pi / 2),
        ],
        dim=-1,
    )

    forward = _normalise(lookat - origin)
    world_up = torch.tensor([0.0, 1.0, 0.0], device=device).expand_as(forward)
    right = -_normalise(torch.linalg.cross(world_up, forward, dim=-1))
    down = _normalise(torch.linalg.cross(forward, right, dim=-1))

    batch = origin.shape[0]
    cam2world = torch.eye(4, device=device).repeat(batch, 1, 1)
    cam2world[:, :3, :3] = torch.stack([right, down, forward], dim=-1)
    cam2world[:, :3, 3] = origin
    return Camera(cam2world=cam2world, intrinsics=intrinsics_matrix(focal, batch).to(device))


def _resolve_angle(radians_value: AngleLike | None, degrees_value: AngleLike | None, name: str) -> torch.Tensor:
    if radians_value is not None and degrees_value is not None:
        raise ValueError(f"{name} and {name}_deg: give the angle in radians or in degrees, not both")
    if degrees_value is not None:
        return torch.deg2rad(_angle_tensor(degrees_value, f"{name}_deg"))
    return _angle_tensor(0.0 if radians_value is None else radians_value, name)


def camera_from_angles(
    *,
    yaw: AngleLike | None = None,
    pitch: AngleLike | None = None,
    yaw_deg: AngleLike | None = None,
    pitch_deg: AngleLike | None = None,
    radius: float = 2.7,
    pivot: PointLike = (0.0, 0.0, 0.2),
    focal: float | None = None,
    fov_deg: float | None = None,
) -> Camera:
    """A camera at a yaw/pitch offset from the frontal view, as the official scripts place them.

    h = pi/2 + yaw and v = pi/2 + pitch are passed to :func:`look_at`. Positive yaw moves the
    camera to +x (image-right of the frontal view); negative pitch moves it above the face.

    Args:
        yaw: horizontal offset from frontal in radians (default 0); a float or a 1-D batch.
        pitch: vertical offset from frontal in radians (default 0); a float or a 1-D batch.
        yaw_deg: the same as ``yaw`` in degrees; giving both ``yaw`` and ``yaw_deg`` is an error.
        pitch_deg: the same as ``pitch`` in degrees; giving both is an error.
        radius: distance from the world origin (the FFHQ average is 2.7).
        pivot: the point looked at (the FFHQ average is (0, 0, 0.2)).
        focal: normalised focal length; takes precedence over ``fov_deg``.
        fov_deg: the official diagonal "fov" (see :func:`fov_to_focal`). Neither focal nor fov_deg
            gives :data:`FFHQ_FOCAL`.

    Returns:
        A float32 :class:`Camera` whose batch is the common length of yaw and pitch (1 for scalars).
    """
    yaw_rad = _resolve_angle(yaw, yaw_deg, "yaw")
    pitch_rad = _resolve_angle(pitch, pitch_deg, "pitch")
    yaw_rad, pitch_rad = _broadcast_angles(yaw_rad, pitch_rad, ("yaw", "pitch"))
    fov_focal = fov_to_focal(fov_deg) if fov_deg is not None else None
    if focal is None:
        focal = fov_focal if fov_focal is not None else FFHQ_FOCAL
    # Offsets are added to pi/2 in double precision, as the scripts do with Python floats.
    h = math.pi / 2 + yaw_rad
    v = math.pi / 2 + pitch_rad
    device = next((a.device for a in (yaw, pitch, yaw_deg, pitch_deg) if isinstance(a, torch.Tensor)), None)
    if device is not None:
        h, v = h.to(device), v.to(device)
    return look_at(h, v, radius=radius, pivot=pivot, focal=focal)


def angles_from_camera(camera: Camera) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recovers (yaw, pitch, radius) from camera positions; the inverse of :func:`camera_from_angles`.

    Only the position is used: the pivot (the look direction) is not recovered.

    Returns:
        yaw (B,), pitch (B,) in radians (offsets from frontal, our signs) and radius (B,), in the
        camera's dtype.
    """
    position = camera.position.to(torch.float64)
    radius = torch.linalg.vector_norm(position, dim=-1)
    if bool((radius <= 0).any()):
        raise ValueError("camera: a camera sits at the world origin, so its yaw and pitch are undefined")
    # y = r cos(phi) and cos(phi) = 1 - 2 v / pi, so pitch = v - pi/2 = -(pi/2) y / r.
    pitch = -(math.pi / 2) * (position[:, 1] / radius)
    # x = r sin(phi) sin(yaw) and z = r sin(phi) cos(yaw).
    yaw = torch.atan2(position[:, 0], position[:, 2])
    dtype = camera.cam2world.dtype
    return yaw.to(dtype), pitch.to(dtype), radius.to(dtype)


def conditioning_camera(
    *,
    radius: float = 2.7,
    pivot: PointLike = (0.0, 0.0, 0.2),
    focal: float = FFHQ_FOCAL,
    official_pi: float = math.pi,
    batch: int = 1,
) -> Camera:
    """The frontal camera the mapping network is conditioned on: h = v = official_pi / 2.

    ``gen_samples.py`` uses math.pi (with the FOV_to_intrinsics focal); ``gen_videos.py`` and the
    visualizer use 3.14 and focal 4.2647, which tilts the camera by about a milliradian.
    """
    official_pi = _check_positive(official_pi, "official_pi")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: must be a positive integer, got {batch!r}")
    angle = torch.full((batch,), official_pi / 2, dtype=torch.float64)
    return look_at(angle, angle, radius=radius, pivot=pivot, focal=focal)


def orbit_angles(
    frame: float,
    num_frames: int,
    *,
    yaw_amplitude: float = 0.35,
    pitch_amplitude: float = 0.25,
    pitch_offset: float = -0.05,
    official_pi: float = 3.14,
) -> tuple[float, float]:
    """The ``gen_videos.py`` camera loop at one frame, as official (h, v) for :func:`look_at`.

    h = pi/2 + yaw_amplitude sin(2 pi frame / num_frames) and
    v = pi/2 + pitch_offset + pitch_amplitude cos(2 pi frame / num_frames), with pi = official_pi
    (the script writes 3.14). The arithmetic follows the script's order in double precision.
    """
    frame = _check_finite(frame, "frame")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames: must be a positive integer, got {num_frames!r}")
    yaw_amplitude = _check_finite(yaw_amplitude, "yaw_amplitude")
    pitch_amplitude = _check_finite(pitch_amplitude, "pitch_amplitude")
    pitch_offset = _check_finite(pitch_offset, "pitch_offset")
    official_pi = _check_positive(official_pi, "official_pi")
    phase = 2 * official_pi * frame / num_frames
    h = official_pi / 2 + yaw_amplitude * math.sin(phase)
    v = official_pi / 2 + pitch_offset + pitch_amplitude * math.cos(phase)
    return h, v


# --- points between images and the world ----------------------------------------------------------

FOREGROUND_ALPHA = 0.5
"""Pixels with accumulated ray weight below this are background."""


def _label_parts(camera_label) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.as_tensor(camera_label, dtype=torch.float64).reshape(25)
    return label[:16].reshape(4, 4), label[16:].reshape(3, 3)


def lift_points(points_px, image_size: int, depth, camera_label, alpha=None):
    """2D image points -> 3D world points along their rays at the rendered depth.

    Args:
        points_px: (K, 2) pixel coordinates (x right, y down; (0, 0) is the top-left corner of the
            top-left pixel, pixel centres at +0.5) in an image of ``image_size`` pixels.
        depth: (r, r) distance along each pixel's unit ray (the depth map); read at the nearest pixel.
        camera_label: (25,) render camera.
        alpha: optional (r, r) mask; points on pixels with alpha < 0.5 get NaN.

    Returns:
        (K, 3) float64 NumPy array of world coordinates, NaN where the point lies outside the image
        or on background. Array-likes in (NumPy or torch); the inverse of :func:`project_points`.
    """
    points = torch.as_tensor(points_px, dtype=torch.float64).reshape(-1, 2)
    cam2world, intrinsics = _label_parts(camera_label)
    depth = torch.as_tensor(depth, dtype=torch.float64)
    side = depth.shape[0]
    u, v = points[:, 0] / image_size, points[:, 1] / image_size
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    cols = torch.floor(u * side).clamp(0, side - 1).long()
    rows = torch.floor(v * side).clamp(0, side - 1).long()
    distance = depth[rows, cols]
    valid = inside & torch.isfinite(distance)
    if alpha is not None:
        valid &= torch.as_tensor(alpha)[rows, cols] >= FOREGROUND_ALPHA
    fx, fy, cx, cy, skew = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2], intrinsics[0, 1]
    x_cam = (u - cx + cy * skew / fy - skew * v / fy) / fx  # the inverse of the projection (as demo.render.rays)
    y_cam = (v - cy) / fy
    directions = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], 1) @ cam2world[:3, :3].T
    directions = directions / directions.norm(dim=1, keepdim=True)
    world = cam2world[:3, 3] + directions * distance[:, None]
    world[~valid] = float("nan")
    return world.numpy()


def project_points(points_world, camera_label, image_size: int):
    """(K, 3) world points -> (K, 2) float64 NumPy pixel coordinates in an image of ``image_size`` pixels."""
    cam2world, intrinsics = _label_parts(camera_label)
    points = torch.as_tensor(points_world, dtype=torch.float64).reshape(-1, 3)
    camera = (points - cam2world[:3, 3]) @ cam2world[:3, :3]  # rotation inverse = transpose
    uvw = camera @ intrinsics.T
    return (uvw[:, :2] / uvw[:, 2:3] * image_size).numpy()
