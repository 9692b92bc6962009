"""Faces: photo -> face landmarks -> FFHQ-framed crop and the EG3D camera label of that crop.

This is the first step of photo -> 3D (inversion, PTI, the photo tab). EG3D (Chan et al. 2022)
is trained on FFHQ faces re-cropped around five facial points and labelled with a camera per
image; a photo must be framed and labelled the same way before it can be inverted. Everything here runs offline from pip packages: face detection and the 478-point face
mesh come from MediaPipe 0.10.9's legacy solutions (``FaceDetection`` and ``FaceMesh``, whose
models ship inside the wheel). ``mediapipe`` and ``cv2`` are imported only inside the functions
that need them, so importing this module stays cheap.

Pipeline
--------
1. :func:`load_photo` decodes anything a user can hand us into an ``(H, W, 3)`` uint8 RGB array,
   checking the pixel count from the header *before* decoding.
2. :func:`detect_faces` finds face boxes (short- and full-range detectors; on images longer than
   4096 px on a downscaled copy, and on overlapping square tiles when the whole image gives
   nothing), then runs the face mesh twice on a square region around each box taken from the
   full-resolution image: first around the box, then fitted to the face and turned upright.
3. :func:`align_face` crops the largest face with the FFHQ recipe and turns its head pose into the
   camera label of the crop.

Coordinates
-----------
Pixel coordinates are continuous: the top-left corner of the image is (0, 0), x grows to the
right, y downwards, and the centre of pixel (row i, column j) is (j + 0.5, i + 0.5). Landmark z
is MediaPipe's relative depth (0 near the centre of the head, smaller is closer to the camera)
scaled to the same pixel units as x. "Left" and "right" of a face are the **subject's**: in an
ordinary (not mirrored) photo the subject's left eye is on the image's right.

The crop (FFHQ recipe)
----------------------
From the two eye centres, the two mouth corners: ``eye_to_eye`` runs from the subject's right eye
to its left eye, ``eye_to_mouth`` from the eye midpoint to the mouth midpoint. The crop square is
centred at ``eye_mid + 0.1 * eye_to_mouth``, has side ``2 * max(2.0 * |eye_to_eye|,
1.8 * |eye_to_mouth|)``, and its x axis is the direction of ``eye_to_eye`` plus ``eye_to_mouth``
turned a quarter turn so that "down" becomes "right" (the eye line and the face's vertical axis
averaged). It is a similarity, so
the crop undoes the in-plane roll. Where the square leaves the photo it is filled by reflection,
blurred and faded towards the median colour, as the FFHQ recrop does. When the eye-to-mouth term
sets the size, the eye midpoint lands at y = 0.5 - 0.1 / 3.6 = 0.472 of the crop height and the
mouth at 0.75; when the eye distance does (as on skimage's astronaut), the eyes sit at about 0.48,
a quarter of the width apart, and the mouth higher.

Head pose and camera (our convention)
-------------------------------------
The head's axes come from the 3-D landmarks: x from the subject's right to its left (outer eye
corners 33 -> 263 plus mouth corners 61 -> 291), y from forehead to chin (10 -> 152),
orthogonalised to x, and z = x cross y (from the face towards the back of the head). In a frontal
photo these are the camera's axes (x right, y down, z forward). The EG3D world holds the head with
y up and the face looking along +z, so the subject's left is world +x. We report the camera that
sees the head as in the photo: ``demo.cameras.camera_from_angles(yaw_deg=yaw_deg,
pitch_deg=pitch_deg)`` is that camera, and the camera label of :class:`AlignedFace` is exactly it.

- ``yaw_deg`` > 0: the camera is at the subject's left (image-right side of the frontal view),
  i.e. the face is turned towards its own right, showing its left cheek, nose pointing to image
  left. A face turned to its left (right cheek visible) has negative yaw. Mirroring a photo flips
  the sign of yaw.
- ``pitch_deg`` < 0: the camera is above the eyes, looking down on the face (or the head is bowed).
  This is EG3D's look-at pitch offset (``v - pi/2`` of ``LookAtPoseSampler``), not the geometric
  elevation: a camera at elevation ``e`` above the face has ``pitch = -(pi/2) * sin(e)``, about
  1.57 times the angle for small angles.
- ``roll_deg``: the in-plane tilt of the eye line, ``atan2(dy, dx)`` of the subject's right -> left
  eye direction in image coordinates (y down). Positive means the head is turned clockwise as the
  photo is displayed (the eye on image-right is lower). Rotating the photo counter-clockwise by
  ``a`` degrees (``PIL.Image.rotate(a)``) lowers roll by ``a``. EG3D cameras have no roll; the
  crop removes it.

The pose is the average of the estimates on the face region and on its mirror image (the mesh
network is not mirror-symmetric: alone, it gives a mirrored face a pitch a few degrees off), so a
mirrored photo gets the opposite yaw and roll and the same pitch. It comes from one image without
a 3-D face model: its accuracy is a few degrees, and its zero is MediaPipe's canonical face
(forehead top and chin vertical), which need not be the exact zero of the Deep3DFaceRecon poses
that label FFHQ. Treat the camera as a starting point that inversion may refine.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from demo.cameras import FFHQ_FOCAL, camera_from_angles
from demo.errors import InputError

__all__ = [
    "AlignedFace",
    "FaceDetection",
    "align_face",
    "camera_from_pose",
    "detect_faces",
    "foreground_mask",
    "load_photo",
    "quiet_native_log",
]

logger = logging.getLogger(__name__)

PhotoSource = str | Path | bytes | Image.Image | np.ndarray

#: Longest image side the detectors see; larger images are downscaled (area filter) for detection
#: only, the crop is always taken from the full image.
MAX_DETECTION_SIDE = 4096
#: Below this distance between the eye centres (source pixels) a face is refused.
MIN_EYE_DISTANCE_PX = 32.0
#: Above this upscaling of the crop (output pixels per source pixel) a warning is given.
BLURRY_UPSCALE = 3.0
#: More detections than this are not meshed (largest first).
MAX_FACES = 10

# MediaPipe face-mesh indices. Eye centres are the mean of six eye-contour points (the same
# corners and lid points as dlib's 68-point eye contours, which the FFHQ recipe averaged).
_RIGHT_EYE = (33, 160, 158, 133, 153, 144)  # subject's right eye (image left)
_LEFT_EYE = (362, 385, 387, 263, 373, 380)  # subject's left eye (image right)
_NOSE_TIP = 1
_MOUTH_RIGHT = 61  # subject's right mouth corner
_MOUTH_LEFT = 291
_RIGHT_EYE_OUTER, _LEFT_EYE_OUTER = 33, 263
_FOREHEAD_TOP, _CHIN = 10, 152
_NUM_LANDMARKS = 478

# Side of the square region around a detection that the face mesh runs on, in pixels, and its
# size relative to the detection box.
_MESH_ROI_PIXELS = 384
_MESH_ROI_SCALE = 2.0
_MIN_DETECTION_CONFIDENCE = 0.5
# Tiles for the second detection pass: no smaller than this many pixels, and at most this many.
_MIN_TILE = 96
_MAX_TILES = 100

_NO_FACE_MESSAGE = (
    "No face found. Use a photo where one face is clearly visible, roughly facing the camera and "
    "not covered, and fills at least a tenth of the frame."
)


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """One face found in a photo.

    Attributes:
        box: (x0, y0, x1, y1) of the detector's face box in source pixels (after EXIF
            orientation), clipped to the image.
        score: detector confidence in [0, 1].
        landmarks: (478, 3) float32 MediaPipe face-mesh points: x, y in source pixels, z relative
            depth in the same units (smaller is closer to the camera).
        keypoints5: (5, 2) float32: the subject's left eye centre, right eye centre, nose tip, left
            mouth corner, right mouth corner. (MTCNN / EG3D files list image-left first, i.e.
            ``keypoints5[[1, 0, 2, 4, 3]]`` for an ordinary photo.)
        yaw_deg, pitch_deg, roll_deg: head pose in our camera convention (module docstring).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    keypoints5: np.ndarray
    yaw_deg: float
    pitch_deg: float
    roll_deg: float

    @property
    def area(self) -> float:
        """Area of the box in source pixels."""
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def eye_distance(self) -> float:
        """Distance between the eye centres in source pixels."""
        return float(np.linalg.norm(self.keypoints5[0] - self.keypoints5[1]))


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face cropped and framed like the EG3D FFHQ training images, with its camera.

    Attributes:
        image: (size, size, 3) uint8 RGB crop.
        transform: (3, 3) float64 similarity mapping source pixels to crop pixels
            (``transform @ [x, y, 1]``, continuous coordinates as in the module docstring).
        landmarks: (478, 2) float32 face-mesh points in crop pixels.
        camera: (25,) float32 EG3D camera label of the crop (radius 2.7, focal 4.2647, pivot
            (0, 0, 0.2)); equals ``camera_from_pose(yaw_deg, pitch_deg)``.
        yaw_deg, pitch_deg, roll_deg: head pose of the face (module docstring).
        detection: the face that was cropped.
        warnings: human-readable notes on a degraded but usable result.
    """

    image: np.ndarray
    transform: np.ndarray
    landmarks: np.ndarray
    camera: np.ndarray
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    detection: FaceDetection
    warnings: tuple[str, ...]


# --- loading ---------------------------------------------------------------------------------


def load_photo(source: PhotoSource, *, max_pixels: int = 40_000_000) -> np.ndarray:
    """Reads a photo into an RGB array, the way a user expects it to look.

    Applies the EXIF orientation; converts grayscale, palette, CMYK, 16-bit and float images;
    composites transparent images on white. The pixel count is checked from the file header before
    anything is decoded, so a huge or malicious file costs no memory.

    Args:
        source: a file path, the encoded file as bytes, a ``PIL.Image.Image`` or an array of shape
            (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (uint8, uint16, bool or float in [0, 1]).
        max_pixels: largest accepted width * height. Pillow's own decompression-bomb limit
            (about 179 megapixels) also applies.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        InputError: the file is missing, unreadable, not an image, or has more than
            ``max_pixels`` pixels.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels: must be a positive integer, got {max_pixels!r}")
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixel_count(source.size, max_pixels)
        return _decode(source, "the image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InputError("The uploaded file is empty. Choose a JPEG or PNG photo.")
        return _open_and_decode(io.BytesIO(bytes(source)), "the uploaded file", max_pixels)
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise InputError(f"No such file: {path}. Check the path to the photo.")
        with path.open("rb") as handle:
            return _open_and_decode(handle, f"'{path.name}'", max_pixels)
    raise TypeError(f"source: expected a path, bytes, a PIL image or a numpy array, got {type(source).__name__}")


def _check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"The image is empty ({width}x{height} pixels). Choose another photo.")
    if width * height > max_pixels:
        raise InputError(
            f"The image is too large: {width}x{height} pixels ({width * height / 1e6:.1f} megapixels, "
            f"the limit is {max_pixels / 1e6:g}). Resize it to at most about 4000 pixels on the long "
            "side and try again."
        )


def _open_and_decode(handle, name: str, max_pixels: int) -> np.ndarray:
    # Pillow warns above ~89 MP and refuses above ~179 MP; we check our own, lower limit first.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(handle)
        except Image.DecompressionBombError as error:
            raise InputError(
                f"The image in {name} is too large to open safely ({error}). Resize it to at most "
                "about 4000 pixels on the long side and try again."
            ) from error
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
            raise InputError(f"Could not read {name} as an image. Use a JPEG, PNG, WebP, BMP or TIFF photo.") from error
        with image:
            _check_pixel_count(image.size, max_pixels)
            return _decode(image, name)


def _decode(image: Image.Image, name: str) -> np.ndarray:
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise InputError(
            f"Could not decode {name}: the file looks truncated or corrupt. Re-save or re-export the "
            "photo and try again."
        ) from error
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError) as error:
        logger.warning("ignoring an unreadable EXIF orientation in %s: %s", name, error)
    return _pil_to_rgb(image, name)


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _array_to_rgb(np.asarray(image), None, sixteen_bit=mode.startswith("I;16"))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return _array_to_rgb(np.asarray(image.convert("RGBA")), None)
    try:
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    except (ValueError, OSError) as error:
        raise InputError(
            f"{name.capitalize()} uses the colour mode '{mode}', which cannot be converted to RGB. "
            "Save it as an ordinary RGB JPEG or PNG."
        ) from error


def _array_to_rgb(array: np.ndarray, max_pixels: int | None, *, sixteen_bit: bool = False) -> np.ndarray:
    """Any 2-D or 3-D image array -> (H, W, 3) uint8, alpha composited on white."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"Expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}.")
    height, width = array.shape[:2]
    if max_pixels is not None:
        _check_pixel_count((width, height), max_pixels)
    if height == 0 or width == 0:
        raise InputError(f"The image is empty ({width}x{height} pixels). Choose another photo.")
    values = _to_unit_range(array, sixteen_bit)
    if values is None:  # already uint8
        values_u8 = array
        if values_u8.ndim == 2:
            values_u8 = np.repeat(values_u8[:, :, None], 3, axis=2)
        elif values_u8.shape[2] == 4:
            alpha = values_u8[:, :, 3:].astype(np.float32) / 255.0
            rgb = values_u8[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
            values_u8 = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(values_u8)
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    elif values.shape[2] == 4:
        alpha = values[:, :, 3:]
        values = values[:, :, :3] * alpha + (1.0 - alpha)
    return np.ascontiguousarray(np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8))


def _to_unit_range(array: np.ndarray, sixteen_bit: bool) -> np.ndarray | None:
    """float32 values in [0, 1], or None when the array is already uint8 (kept without a copy)."""
    if array.dtype == np.uint8:
        return None
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise InputError("The image contains NaN or infinite values. Use an ordinary photo.")
        # Floats in [0, 1] are the usual convention; anything larger is taken as 0-255.
        return np.clip(values if values.max(initial=0.0) <= 1.0 else values / 255.0, 0.0, 1.0)
    if np.issubdtype(array.dtype, np.integer):
        values = array.astype(np.float32)
        if sixteen_bit or array.dtype == np.uint16:
            return values / 65535.0
        peak = float(values.max(initial=0.0))
        # 32-bit integer images ("I" mode) usually hold 16-bit data; small ones 8-bit data.
        scale = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
        return np.clip(values / scale, 0.0, 1.0)
    raise InputError(f"Unsupported image array dtype {array.dtype}. Use uint8 or float values.")


# --- detection -------------------------------------------------------------------------------


def detect_faces(image: np.ndarray) -> list[FaceDetection]:
    """Finds faces and their 478-point meshes.

    Args:
        image: (H, W, 3) uint8 RGB, as :func:`load_photo` returns.

    Returns:
        One :class:`FaceDetection` per face, sorted by box area, largest first; ``[]`` if none.
        Faces much smaller than a twentieth of the image's long side may be missed, and so may
        faces upside down in the pixels (sideways ones and EXIF-rotated photos are fine).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            "image: expected an (H, W, 3) uint8 RGB array (use load_photo), got "
            f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
        )
    height, width = image.shape[:2]
    if min(height, width) < 8:
        return []
    image = np.ascontiguousarray(image)
    faces: list[FaceDetection] = []
    with quiet_native_log():
        candidates = _find_face_boxes(image)
        if not candidates:
            return faces
        face_mesh = _mediapipe().solutions.face_mesh
        with face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=3,
            refine_landmarks=True,
            min_detection_confidence=_MIN_DETECTION_CONFIDENCE,
        ) as mesh:
            for box, score in candidates[:MAX_FACES]:
                face = _mesh_face(image, box, score, mesh)
                if face is not None and not any(_same_face(face, other) for other in faces):
                    faces.append(face)
    faces.sort(key=lambda face: face.area, reverse=True)
    return faces


def _same_face(a: FaceDetection, b: FaceDetection) -> bool:
    """Whether two detections found the same face (eye midpoints closer than half an eye distance)."""
    gap = np.linalg.norm(a.keypoints5[:2].mean(axis=0) - b.keypoints5[:2].mean(axis=0))
    return bool(gap < 0.5 * min(a.eye_distance, b.eye_distance))


def _mediapipe():
    try:
        import mediapipe
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Face detection needs mediapipe==0.10.9 (pip install mediapipe==0.10.9; it requires numpy<2)."
        ) from error
    return mediapipe


_NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] "  # absl: W0000 00:00:1796534215.67  6642 file.cc:114] ...
    rb"|INFO: Created TensorFlow Lite"
    rb"|WARNING: All log messages before absl::InitializeLog\(\))"
)
_quiet_lock = threading.Lock()
_quiet_users = 0
_quiet_saved: tuple[int, IO[bytes]] | None = None  # (a copy of the real fd 2, the file standing in for it)


@contextlib.contextmanager
def quiet_native_log() -> Iterator[None]:
    """Keep MediaPipe's C++ log lines (``W0000 ... inference_feedback_manager.cc:114] ...``) off stderr.

    The native library writes them straight to file descriptor 2, and neither ``GLOG_minloglevel`` nor
    ``TF_CPP_MIN_LOG_LEVEL`` stops them in mediapipe 0.10.9 or 0.10.21, so fd 2 points at a temporary file while
    MediaPipe runs. Afterwards fd 2 is restored (also when an exception leaves the block; the exception
    itself passes through untouched) and every captured line that is not a native log line is written
    back: output of other threads in the window is delayed, never lost. Threads share one redirection:
    the first to enter makes it, the last to leave undoes it (Gradio runs handlers in worker threads).
    """
    global _quiet_users, _quiet_saved
    with _quiet_lock:
        if _quiet_users == 0:
            _quiet_saved = _redirect_stderr()
        redirected = _quiet_saved is not None
        if redirected:
            _quiet_users += 1
    try:
        yield
    finally:
        if redirected:
            with _quiet_lock:
                _quiet_users -= 1
                if _quiet_users == 0 and _quiet_saved is not None:
                    saved, capture = _quiet_saved
                    _quiet_saved = None
                    _restore_stderr(saved, capture)


def _redirect_stderr() -> tuple[int, IO[bytes]] | None:
    """Point fd 2 at a new temporary file; returns (a copy of the old fd 2, that file), or None without an fd 2."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # Python's own buffer goes first, in order
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (pythonw, a closed stderr): nothing to quiet
        return None
    capture = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _restore_stderr when the window ends)
    os.dup2(capture.fileno(), 2)
    return saved, capture


def _restore_stderr(saved: int, capture: IO[bytes]) -> None:
    """Put the real fd 2 back and write to it what was captured, without MediaPipe's native log lines."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    with capture:
        capture.seek(0)
        kept = memoryview(b"".join(line for line in capture if not _NATIVE_LOG_LINE.match(line)))
    with contextlib.suppress(OSError):
        while kept:
            kept = kept[os.write(2, kept):]


def _find_face_boxes(image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
    """Face boxes in source pixels with their scores, largest first, after non-maximum suppression."""
    import cv2

    face_detection = _mediapipe().solutions.face_detection
    height, width = image.shape[:2]
    view = image
    if max(height, width) > MAX_DETECTION_SIDE:
        factor = MAX_DETECTION_SIDE / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        view = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # The view is a uniform rescale of the image, so relative coordinates carry over directly.
    boxes: list[tuple[tuple[float, float, float, float], float]] = []
    # Short range is for faces filling much of the frame, full range for smaller and further faces.
    for model_selection in (0, 1):
        with face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=_MIN_DETECTION_CONFIDENCE
        ) as detector:
            boxes += _detector_boxes(detector, view, (0.0, 0.0, 1.0, 1.0), width, height)
    if not boxes:
        boxes = _tiled_face_boxes(view, width, height)
    return _non_maximum_suppression(boxes)


def _tiled_face_boxes(view: np.ndarray, width: int, height: int):
    """Looks again on overlapping square tiles (the short side, then half of it), so that faces
    that are small in a large or very elongated photo become large enough for the detector."""
    face_detection = _mediapipe().solutions.face_detection
    view_height, view_width = view.shape[:2]
    short = min(view_height, view_width)
    boxes: list[tuple[tuple[float, float, float, float], float]] = []
    with face_detection.FaceDetection(
        model_selection=1, min_detection_confidence=_MIN_DETECTION_CONFIDENCE
    ) as detector:
        for tile in (short, short // 2):
            if tile < _MIN_TILE or (tile == short and view_height == view_width):
                continue
            xs = _tile_starts(view_width, tile)
            ys = _tile_starts(view_height, tile)
            if len(xs) * len(ys) > _MAX_TILES:
                continue
            for y0 in ys:
                for x0 in xs:
                    part = np.ascontiguousarray(view[y0 : y0 + tile, x0 : x0 + tile])
                    frame = (x0 / view_width, y0 / view_height, tile / view_width, tile / view_height)
                    boxes += _detector_boxes(detector, part, frame, width, height)
            if boxes:
                break
    return boxes


def _tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``length`` with half-tile overlap."""
    starts = list(range(0, max(1, length - tile + 1), max(1, tile // 2)))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _detector_boxes(detector, view: np.ndarray, frame, width: int, height: int):
    """Runs a MediaPipe detector on ``view``, which covers ``frame`` = (x, y, w, h) of the image
    in relative units; returns boxes in source pixels."""
    result = detector.process(view)
    out = []
    for detection in result.detections or []:
        rel = detection.location_data.relative_bounding_box
        fx, fy, fw, fh = frame
        x0 = (fx + rel.xmin * fw) * width
        y0 = (fy + rel.ymin * fh) * height
        x1 = x0 + rel.width * fw * width
        y1 = y0 + rel.height * fh * height
        box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
        if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
            out.append((box, float(detection.score[0])))
    return out


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _non_maximum_suppression(boxes, threshold: float = 0.4):
    kept = []
    for box, score in sorted(boxes, key=lambda item: item[1], reverse=True):
        if all(_iou(box, other) <= threshold for other, _ in kept):
            kept.append((box, score))
    # Largest first, so that MAX_FACES keeps the faces that matter.
    kept.sort(key=lambda item: (item[0][2] - item[0][0]) * (item[0][3] - item[0][1]), reverse=True)
    return kept


def _mesh_face(image: np.ndarray, box, score: float, mesh) -> FaceDetection | None:
    """Runs the face mesh around a detection box; None when it finds no face there.

    A first pass runs on an axis-aligned square around the box. The second, whose landmarks are
    kept, runs on a square fitted to the first pass's landmarks and turned so that the eyes are
    level: the mesh then sees nearly the same pixels however the photo is framed, rotated or
    mirrored, which keeps the pose consistent between such copies.
    """
    x0, y0, x1, y1 = box
    first = _mesh_in_region(
        image, _region_transform(((x0 + x1) / 2, (y0 + y1) / 2), _MESH_ROI_SCALE * max(x1 - x0, y1 - y0), 0.0), mesh
    )
    if first is None:
        return None
    landmarks = first[0]
    points = landmarks[:, :2].astype(np.float64)
    eye_line = points[list(_LEFT_EYE)].mean(axis=0) - points[list(_RIGHT_EYE)].mean(axis=0)
    angle = math.atan2(eye_line[1], eye_line[0])
    upright = points @ np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    low, high = upright.min(axis=0), upright.max(axis=0)
    centre = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]).T @ ((low + high) / 2)
    # The mesh spans forehead to chin, about 1.3 detection boxes: 1.6x keeps the face's share of
    # the region as in the first pass.
    side = _MESH_ROI_SCALE / 1.3 * float(np.max(high - low))
    second = _mesh_in_region(image, _region_transform(centre, side, angle), mesh)
    if second is None:  # keep the first pass, which ran unrotated
        angle, second = 0.0, first
    landmarks, region_points, region = second

    # The mesh network is not mirror-symmetric: on a mirrored region it returns a pitch a few
    # degrees different. Averaging the pose of the region and of its mirror image (yaw and roll
    # change sign under mirroring, pitch does not) removes that bias, and a mirrored photo then
    # gets the opposite yaw and the same pitch. Yaw and pitch do not depend on the region's
    # in-plane rotation; roll is the region's rotation plus what is left inside it.
    yaw, pitch, roll = _head_pose(region_points)
    mirrored = _central_mesh(np.ascontiguousarray(region[:, ::-1]), mesh)
    if mirrored is not None:
        yaw_m, pitch_m, roll_m = _head_pose(mirrored)
        yaw, pitch, roll = (yaw - yaw_m) / 2, (pitch + pitch_m) / 2, (roll - roll_m) / 2
    roll = (roll + math.degrees(angle) + 180.0) % 360.0 - 180.0

    points = landmarks[:, :2].astype(np.float64)
    keypoints5 = np.stack(
        [
            points[list(_LEFT_EYE)].mean(axis=0),
            points[list(_RIGHT_EYE)].mean(axis=0),
            points[_NOSE_TIP],
            points[_MOUTH_LEFT],
            points[_MOUTH_RIGHT],
        ]
    ).astype(np.float32)
    return FaceDetection(
        box=tuple(float(v) for v in box),
        score=float(score),
        landmarks=landmarks,
        keypoints5=keypoints5,
        yaw_deg=float(yaw),
        pitch_deg=float(pitch),
        roll_deg=float(roll),
    )


def _region_transform(centre, side: float, angle: float) -> np.ndarray:
    """Source -> mesh-region similarity: ``centre`` to the middle, ``side`` source pixels to the
    region's width, and the direction at ``angle`` (radians, image coordinates) to +x."""
    scale = _MESH_ROI_PIXELS / side
    cos, sin = math.cos(angle), math.sin(angle)
    linear = scale * np.array([[cos, sin], [-sin, cos]])
    transform = np.eye(3)
    transform[:2, :2] = linear
    transform[:2, 2] = _MESH_ROI_PIXELS / 2 - linear @ np.asarray(centre, dtype=np.float64)
    return transform


def _mesh_in_region(image: np.ndarray, transform: np.ndarray, mesh):
    """The central face's mesh in the region ``transform`` maps to, as (478, 3) float32 landmarks
    in source pixels, the (478, 3) points in region pixels and the region image; None if there
    is no face there."""
    # Constant black outside the photo, so that no mirrored half-face appears at the border.
    region = _warp(image, transform, _MESH_ROI_PIXELS, reflect=False)
    points = _central_mesh(region, mesh)
    if points is None:
        return None
    inverse = np.linalg.inv(transform)
    landmarks = np.empty_like(points)
    landmarks[:, :2] = points[:, :2] @ inverse[:2, :2].T + inverse[:2, 2]
    landmarks[:, 2] = points[:, 2] * math.sqrt(abs(np.linalg.det(inverse[:2, :2])))
    return landmarks.astype(np.float32), points, region


def _central_mesh(roi: np.ndarray, mesh) -> np.ndarray | None:
    """The (478, 3) mesh, in region pixels, of the face at the centre of ``roi``, or None."""
    result = mesh.process(roi)
    if not result.multi_face_landmarks:
        return None
    # The region may show part of a neighbouring face: take the mesh nearest to its centre.
    meshes = [
        np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64) * _MESH_ROI_PIXELS
        for face in result.multi_face_landmarks
    ]
    meshes = [points for points in meshes if len(points) == _NUM_LANDMARKS]
    if not meshes:
        return None
    points = min(meshes, key=lambda p: float(np.linalg.norm(p[:, :2].mean(axis=0) - _MESH_ROI_PIXELS / 2)))
    # It must be the detected face, which sits in the middle half of the region.
    mid = points[:, :2].mean(axis=0)
    if not (np.all(mid > 0.25 * _MESH_ROI_PIXELS) and np.all(mid < 0.75 * _MESH_ROI_PIXELS)):
        return None
    return points


# --- pose and camera -------------------------------------------------------------------------


def _head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw_deg, pitch_deg, roll_deg) in our convention from (478, 3) landmarks."""
    points = landmarks.astype(np.float64)
    x_axis = (points[_LEFT_EYE_OUTER] - points[_RIGHT_EYE_OUTER]) + (points[_MOUTH_LEFT] - points[_MOUTH_RIGHT])
    x_axis /= np.linalg.norm(x_axis)
    y_axis = points[_CHIN] - points[_FOREHEAD_TOP]
    y_axis -= np.dot(y_axis, x_axis) * x_axis
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    # Columns: the head's axes in camera coordinates (x right, y down, z forward).
    rotation = np.stack([x_axis, y_axis, z_axis], axis=1)
    # Direction from the head to the camera in head coordinates is rotation.T @ (0, 0, -1); the
    # EG3D world holds the head with its x, y, z axes along world +x, -y, -z.
    to_camera = -rotation[2, :]
    to_camera = np.array([to_camera[0], -to_camera[1], -to_camera[2]])
    to_camera /= np.linalg.norm(to_camera)
    yaw = math.atan2(to_camera[0], to_camera[2])
    # camera_from_angles puts a camera of pitch p at height y = -(2/pi) r p (LookAtPoseSampler).
    pitch = -(math.pi / 2) * float(to_camera[1])
    roll = math.atan2(x_axis[1], x_axis[0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def camera_from_pose(
    yaw_deg: float,
    pitch_deg: float,
    *,
    radius: float = 2.7,
    focal: float = FFHQ_FOCAL,
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.2),
) -> np.ndarray:
    """The EG3D camera label for a head pose in our convention.

    Args:
        yaw_deg, pitch_deg: as in :class:`FaceDetection` (``camera_from_angles`` convention).
        radius: camera distance from the world origin (the FFHQ labels use 2.7).
        focal: normalised focal length (FFHQ: 4.2647).
        pivot: the point the camera looks at.

    Returns:
        (25,) float32: 16 cam2world entries then 9 intrinsics entries, row-major.
    """
    camera = camera_from_angles(
        yaw_deg=float(yaw_deg), pitch_deg=float(pitch_deg), radius=radius, pivot=pivot, focal=focal
    )
    return camera.to_label()[0].numpy().astype(np.float32)


# --- alignment -------------------------------------------------------------------------------


def align_face(
    image_or_source: PhotoSource,
    *,
    size: int = 512,
    face: FaceDetection | None = None,
) -> AlignedFace:
    """Crops the largest face the way the EG3D FFHQ images are framed and estimates its camera.

    Args:
        image_or_source: anything :func:`load_photo` accepts.
        size: side of the square crop in pixels (512 for the FFHQ 512 models).
        face: a face from :func:`detect_faces` on the same image, to skip detection or to pick a
            face other than the largest.

    Returns:
        An :class:`AlignedFace`.

    Raises:
        InputError: the photo cannot be read, has no face, or the face is too small (less than
            32 pixels between the eye centres).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"size: must be an integer >= 16, got {size!r}")
    image = load_photo(image_or_source)
    notes: list[str] = []
    if face is None:
        faces = detect_faces(image)
        if not faces:
            raise InputError(_NO_FACE_MESSAGE)
        face = faces[0]
        if len(faces) > 1:
            notes.append(f"{len(faces)} faces found; used the largest.")
    eye_distance = face.eye_distance
    if eye_distance < MIN_EYE_DISTANCE_PX:
        raise InputError(
            f"The face is too small: {eye_distance:.0f} pixels between the eyes, at least "
            f"{MIN_EYE_DISTANCE_PX:.0f} are needed. Use a higher-resolution photo or one taken closer "
            "to the face."
        )
    transform, crop_side = _ffhq_transform(face.keypoints5, size)
    upscale = size / crop_side
    if upscale > BLURRY_UPSCALE:
        notes.append(
            f"Small face ({eye_distance:.0f} px between the eyes; the crop is enlarged {upscale:.1f}x): "
            "expect a blurry result. A closer or higher-resolution photo works better."
        )
    outside = _fraction_outside(transform, size, image.shape[1], image.shape[0])
    if outside > 0.15:
        notes.append(
            f"The face is close to the photo's edge: {outside:.0%} of the crop lies outside the photo "
            "and was filled by mirroring."
        )
    if face.score < 0.7:
        notes.append(f"Low face-detection confidence ({face.score:.2f}): check the landmarks.")
    if abs(face.yaw_deg) > 45:
        notes.append(
            f"Strongly turned head (yaw {face.yaw_deg:.0f} degrees): the models were trained mostly on "
            "near-frontal faces."
        )
    crop = _warp(image, transform, size, reflect=True)
    homogeneous = np.concatenate([face.landmarks[:, :2].astype(np.float64), np.ones((len(face.landmarks), 1))], axis=1)
    landmarks = (homogeneous @ transform.T)[:, :2].astype(np.float32)
    return AlignedFace(
        image=crop,
        transform=transform,
        landmarks=landmarks,
        camera=camera_from_pose(face.yaw_deg, face.pitch_deg),
        yaw_deg=face.yaw_deg,
        pitch_deg=face.pitch_deg,
        roll_deg=face.roll_deg,
        detection=face,
        warnings=tuple(notes),
    )


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """The person in an RGB image (an aligned crop): (H, W) float32 in [0, 1], 1 = head, hair, shoulders.

    MediaPipe's selfie segmentation (general model, bundled in the 0.10.9 wheel, offline). PanoHead's
    projector inverts only the foreground this way, since the model paints its own background.
    """
    image = np.ascontiguousarray(np.asarray(image))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"foreground_mask takes an (H, W, 3) uint8 RGB image; got {image.dtype} of shape {image.shape}.")
    with quiet_native_log(), _mediapipe().solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        result = segmenter.process(image)
    mask = result.segmentation_mask
    if mask is None:
        return np.zeros(image.shape[:2], np.float32)
    return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)


def _ffhq_transform(keypoints5: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """The FFHQ crop as a (3, 3) source -> crop similarity, and the crop side in source pixels."""
    points = keypoints5.astype(np.float64)
    left_eye, right_eye, _, mouth_left, mouth_right = points
    eye_mid = (left_eye + right_eye) / 2
    eye_to_eye = left_eye - right_eye  # the subject's right eye -> left eye: image-right in a plain photo
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_mid
    # The eye line averaged with the face's vertical axis turned a quarter turn (down -> right).
    x_direction = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x_direction /= np.linalg.norm(x_direction)
    y_direction = np.array([-x_direction[1], x_direction[0]])
    half_side = max(2.0 * np.linalg.norm(eye_to_eye), 1.8 * np.linalg.norm(eye_to_mouth))
    centre = eye_mid + 0.1 * eye_to_mouth
    scale = size / (2.0 * half_side)
    linear = scale * np.stack([x_direction, y_direction])
    transform = np.eye(3)
    transform[:2, :2] = linear
    transform[:2, 2] = size / 2 - linear @ centre
    return transform, 2.0 * half_side


def _fraction_outside(transform: np.ndarray, size: int, width: int, height: int) -> float:
    """Fraction of the crop whose source lies outside the photo (sampled on a 64x64 grid)."""
    grid = (np.arange(64) + 0.5) * size / 64
    xs, ys = np.meshgrid(grid, grid)
    inverse = np.linalg.inv(transform)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    inside = (sx >= 0) & (sx < width) & (sy >= 0) & (sy < height)
    return float(1.0 - inside.mean())


def _warp(image: np.ndarray, transform: np.ndarray, size: int, *, reflect: bool) -> np.ndarray:
    """Resamples ``image`` through the similarity ``transform`` (source -> output, continuous
    pixels) into a (size, size, 3) uint8 array.

    Only the part of the image under the output square is touched, so memory stays bounded for
    huge photos. Strong reductions are area-filtered first (no aliasing), then the remaining
    similarity is resampled with Lanczos. Outside the photo: ``reflect`` fills by mirroring, then
    blurs and fades towards the median colour with the distance from the photo (the FFHQ recrop
    does the same); otherwise black.
    """
    import cv2

    height, width = image.shape[:2]
    inverse = np.linalg.inv(transform)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inverse.T
    source_per_output = 1.0 / math.sqrt(abs(np.linalg.det(transform[:2, :2])))
    margin = 6.0 * max(1.0, source_per_output)  # the Lanczos-4 support in source pixels, and a bit
    x0 = max(0, math.floor(corners[:, 0].min() - margin))
    y0 = max(0, math.floor(corners[:, 1].min() - margin))
    x1 = min(width, math.ceil(corners[:, 0].max() + margin))
    y1 = min(height, math.ceil(corners[:, 1].max() + margin))
    # A square entirely off the photo still needs a (one-pixel) region to mirror from.
    x0, y0 = min(x0, width - 1), min(y0, height - 1)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    region = image[y0:y1, x0:x1]
    # region pixel (u, v) (continuous) is source (x0 + u * step_x, y0 + v * step_y).
    step_x = step_y = 1.0
    reduction = int(source_per_output / 1.5)
    if reduction >= 2:
        new_w = max(1, math.ceil(region.shape[1] / reduction))
        new_h = max(1, math.ceil(region.shape[0] / reduction))
        step_x, step_y = region.shape[1] / new_w, region.shape[0] / new_h
        region = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
    region_to_source = np.array([[step_x, 0, x0], [0, step_y, y0], [0, 0, 1]], dtype=np.float64)
    matrix = transform @ region_to_source
    # OpenCV indexes pixel centres at integers; our coordinates put them at +0.5.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], dtype=np.float64)
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], dtype=np.float64)
    matrix = unshift @ matrix @ shift
    border = cv2.BORDER_REFLECT_101 if reflect else cv2.BORDER_CONSTANT
    out = cv2.warpAffine(
        np.ascontiguousarray(region),
        matrix[:2],
        (size, size),
        flags=cv2.INTER_LANCZOS4,
        borderMode=border,
        borderValue=(0, 0, 0),
    )
    if reflect:
        out = _soften_padding(out, transform, width, height)
    return out


def _soften_padding(crop: np.ndarray, transform: np.ndarray, width: int, height: int) -> np.ndarray:
    """Blurs the mirrored fill outside the photo and fades it to the median colour."""
    import cv2

    size = crop.shape[0]
    grid = np.arange(size, dtype=np.float64) + 0.5
    xs, ys = np.meshgrid(grid, grid)
    inverse = np.linalg.inv(transform)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    inside = (sx >= 0) & (sx < width) & (sy >= 0) & (sy < height)
    if inside.all() or not inside.any():
        return crop
    # Distance (in crop pixels) from each outside pixel to the photo.
    distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    fade = np.clip(distance / (0.3 * size), 0.0, 1.0)[:, :, None]
    pixels = crop.astype(np.float32)
    blurred = cv2.GaussianBlur(pixels, (0, 0), sigmaX=0.02 * size)
    median = np.median(pixels[inside], axis=0)
    pixels += (blurred - pixels) * np.clip(3.0 * fade, 0.0, 1.0)
    pixels += (median - pixels) * fade
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
