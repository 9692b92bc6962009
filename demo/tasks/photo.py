"""Photo -> face: the one recipe behind ``python -m demo invert``, ``multiview --photos`` and the app's Photo tab.

:func:`reconstruct_photo` aligns a photo (``demo.tasks.faces``: FFHQ crop, head pose), takes the
camera of that pose at the model's own radius, pivot and focal length, inverts the crop
(``demo.tasks.invert``: encoder start, projection, pivotal tuning) and returns a
:class:`~demo.tasks.face.Face` that every other task takes. An :class:`~demo.tasks.faces.AlignedFace`
from an earlier guard step is taken as it is (no second alignment). Aligned crops (``aligned=True``)
skip detection; their camera comes from the caller, the encoder or the frontal view.

360-degree models (PanoHead) paint their own background, so their photos are inverted on the
foreground only: MediaPipe's selfie segmentation of the crop is the mask (PanoHead's projector
masks its targets the same way).

:func:`save_reconstruction` writes what a user keeps: ``<name>.face.safetensors`` (the face, one
file), ``<name>_aligned.png`` (the crop), the render from the photo's camera with depth, alpha,
ws and camera files as ``generate`` writes them, and optionally meshes and an orbit video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from demo import media
from demo.errors import InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.networks.encoder import ImageEncoder
from demo.progress import ProgressFn, report, scaled
from demo.tasks.face import Face, face_trajectory, render_face, rotate_face, safe_name
from demo.tasks.invert import InversionResult, InversionSettings, invert
from demo.tasks.sample import view_camera

ALIGNED_SIZE = 512
"""Side of the aligned crop (the FFHQ-512 framing; the inversion resizes it to the model's output)."""
PHOTO_SUFFIX = "_3d"
"""Face names are ``<photo stem>_3d``, so outputs never overwrite the photo itself."""


@dataclass(frozen=True, eq=False)
class PhotoReconstruction:
    """A photo's face and how it was made (CPU data)."""

    face: Face
    crop: np.ndarray
    """(S, S, 3) uint8 aligned crop that was inverted."""
    inversion: InversionResult
    mask: np.ndarray | None
    """(S, S) float32 foreground mask the loss used (360-degree models), or None."""
    yaw_deg: float | None
    pitch_deg: float | None
    """Head pose from the photo (None for aligned crops)."""
    warnings: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """JSON-ready summary (``invert.json`` and the app's downloads)."""
        return {
            "name": self.face.name, "yaw_deg": self.yaw_deg, "pitch_deg": self.pitch_deg, "warnings": list(self.warnings),
            "masked": self.mask is not None, **self.inversion.summary(),
        }


def align_photo(photo: Any, *, size: int = ALIGNED_SIZE):
    """``faces.align_face`` with a clear error when the landmark dependencies are missing."""
    try:
        from demo.tasks import faces
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError(
            f"Photo alignment is not available ({error}). Install the face landmark dependencies "
            "(pip install -r requirements.txt), or pass aligned crops."
        ) from None
    try:
        return faces.align_face(photo, size=size)
    except ImportError as error:  # mediapipe missing at call time
        raise InputError(f"Photo alignment is not available ({error}); pass aligned crops instead.") from None


def reconstruct_photo(
    model: TriplaneGenerator,
    photo: Any,
    settings: InversionSettings | str = "fast",
    *,
    encoder: ImageEncoder | None = None,
    aligned: bool = False,
    camera: np.ndarray | None = None,
    photo_name: str | None = None,
    progress: ProgressFn | None = None,
) -> PhotoReconstruction:
    """Photo -> :class:`~demo.tasks.face.Face` (pivot ws, tuned-weight delta, the photo's camera).

    Args:
        photo: a photo (path, bytes, PIL image or RGB array; anything ``faces.load_photo`` reads), an
            ``AlignedFace`` from a guard step, or with ``aligned=True`` an aligned square crop.
        settings: :class:`~demo.tasks.invert.InversionSettings` or a preset name.
        encoder: start from its prediction (and its camera for aligned crops without one).
        camera: aligned crops only: the crop's 25-number camera label.
        photo_name: the photo's name for the provenance and the face's name ``<photo_name>_3d`` (default: the
            file's stem; needed when ``photo`` is an array or an ``AlignedFace``).
    """
    if isinstance(settings, str):
        settings = InversionSettings.from_preset(settings)
    if camera is not None and not aligned:
        raise InputError("A camera is for aligned crops; a photo gets its camera from the face's pose.")
    report(progress, 0.0, "aligning the photo")
    yaw_deg = pitch_deg = None
    notes: tuple[str, ...] = ()
    if aligned:
        crop = _crop_array(photo)
        label = camera
    else:
        face = photo if _is_aligned_face(photo) else align_photo(photo)
        crop, notes = face.image, tuple(face.warnings)
        yaw_deg, pitch_deg = float(face.yaw_deg), float(face.pitch_deg)
        # The pose's camera at this model's radius, pivot and focal length (the crop's framing is FFHQ's).
        label = view_camera(model, yaw_deg=yaw_deg, pitch_deg=pitch_deg).to_label()[0].numpy()
    mask = None
    if model.config.is_full_head and settings.use_mask:
        from demo.tasks.faces import foreground_mask

        mask = foreground_mask(crop)
        if float(mask.mean()) < 0.02:
            notes += ("The foreground mask found almost no person; inverted the whole crop instead.",)
            mask = None
    result = invert(
        model, crop, label, encoder=encoder, settings=settings, mask=mask,
        progress=scaled(progress, 0.05, 1.0),
    )
    photo_name = photo_name or _stem_of(photo)
    stem = safe_name(photo_name + PHOTO_SUFFIX)
    source = {"photo": photo_name, "yaw_deg": yaw_deg, "pitch_deg": pitch_deg, "aligned_input": bool(aligned)}
    return PhotoReconstruction(
        face=result.to_face(stem, source), crop=crop, inversion=result, mask=mask, yaw_deg=yaw_deg, pitch_deg=pitch_deg,
        warnings=notes,
    )


def save_reconstruction(
    model: TriplaneGenerator,
    reconstruction: PhotoReconstruction,
    out_dir: str | Path,
    *,
    shapes: bool = False,
    shape_resolution: int = 128,
    shape_formats: tuple[str, ...] = ("glb",),
    video_frames: int | None = None,
    model_name: str = "",
    progress: ProgressFn | None = None,
) -> list[Path]:
    """Write the face file, the aligned crop, the render from the photo's camera (as ``generate``) and,
    optionally, meshes and an orbit video centred on the photo's view; returns every path written."""
    out = media.check_writable_dir(out_dir)
    face = reconstruction.face
    written = [
        face.save(out / face.name),
        media.save_png(out / f"{face.name}_aligned.png", reconstruction.crop),
    ]
    if reconstruction.mask is not None:
        written.append(media.save_png(out / f"{face.name}_mask.png", media.alpha_to_uint8(reconstruction.mask)))
    rendered = render_face(
        model, face, out, shapes=shapes, shape_resolution=shape_resolution, shape_formats=shape_formats,
        model_name=model_name, progress=scaled(progress, 0.0, 0.8),
    )
    written += rendered.files[face.name] + [rendered.manifest]
    if video_frames:
        trajectory = face_trajectory(face, "orbit", video_frames)
        written.append(rotate_face(model, face, trajectory, out / f"{face.name}_orbit.mp4").path)
    report(progress, 1.0, f"wrote {len(written)} files")
    return written


def _is_aligned_face(photo: Any) -> bool:
    """An ``AlignedFace`` from a guard step (duck-typed: crop image plus head pose)."""
    return all(hasattr(photo, name) for name in ("image", "yaw_deg", "pitch_deg", "warnings"))


def _crop_array(photo: Any) -> np.ndarray:
    """An aligned crop as (S, S, 3) uint8 from a path or an array."""
    image = media.load_png(photo) if isinstance(photo, (str, Path)) else np.asarray(photo)
    if image.dtype != np.uint8:
        raise InputError("Aligned crops must be 8-bit RGB images (16-bit and float images: convert them first).")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"An aligned crop is an RGB image; got shape {image.shape}.")
    return np.ascontiguousarray(image[..., :3])


def _stem_of(photo: Any) -> str:
    """The photo's file stem, or 'photo' for arrays, bytes and aligned faces."""
    return Path(photo).stem if isinstance(photo, (str, Path)) else "photo"
