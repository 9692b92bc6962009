"""Faces: detection, landmarks, the FFHQ crop and the camera label (demo/tasks/faces.py).

Runs on skimage's bundled photos (the astronaut has one face, the coffee cup none). Needs
mediapipe==0.10.9, whose wheel carries the detector and face-mesh models; without it the module
is skipped.
"""

from __future__ import annotations

import io
import math
import struct
import subprocess
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip(
    "mediapipe",
    reason="mediapipe is not installed: pip install mediapipe==0.10.9 (needs numpy<2) for face detection",
)
skimage_data = pytest.importorskip("skimage.data")

from demo.cameras import Camera, angles_from_camera, camera_from_angles
from demo.errors import InputError
from demo.tasks.faces import (
    AlignedFace,
    FaceDetection,
    align_face,
    camera_from_pose,
    detect_faces,
    load_photo,
)

SIZE = 512


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def aligned(astronaut) -> AlignedFace:
    return align_face(astronaut)


@pytest.fixture(scope="module")
def mirrored(astronaut) -> AlignedFace:
    return align_face(np.ascontiguousarray(astronaut[:, ::-1]))


@pytest.fixture(scope="module")
def rotated(astronaut) -> AlignedFace:
    # PIL rotates counter-clockwise as displayed.
    photo = Image.fromarray(astronaut).rotate(20, resample=Image.BICUBIC, expand=True)
    return align_face(np.asarray(photo))


def _to_crop(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (np.c_[points, np.ones(len(points))] @ transform.T)[:, :2]


def _assert_same_eyes(face: FaceDetection, reference: FaceDetection, tolerance_px: float) -> None:
    np.testing.assert_allclose(face.keypoints5[:2], reference.keypoints5[:2], atol=tolerance_px)


# --- the astronaut ---------------------------------------------------------------------------


def test_astronaut_has_one_face_with_a_sensible_box(astronaut):
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    assert 60 < x1 - x0 < 160 and 60 < y1 - y0 < 160
    assert abs((x0 + x1) / 2 - 225) < 30 and abs((y0 + y1) / 2 - 130) < 30
    assert face.score > 0.8
    assert face.landmarks.shape == (478, 3) and face.landmarks.dtype == np.float32
    assert face.keypoints5.shape == (5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.keypoints5
    # The subject's left eye and mouth corner are on the image's right.
    assert left_eye[0] > right_eye[0] and mouth_left[0] > mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    for point in face.keypoints5:
        assert x0 - 5 <= point[0] <= x1 + 5 and y0 - 5 <= point[1] <= y1 + 5


def test_astronaut_crop_is_framed_like_ffhq(aligned):
    assert isinstance(aligned, AlignedFace)
    assert aligned.image.shape == (SIZE, SIZE, 3) and aligned.image.dtype == np.uint8
    assert aligned.transform.shape in ((2, 3), (3, 3))
    assert aligned.landmarks.shape == (478, 2)
    assert aligned.warnings == ()

    # The FFHQ recipe from the five points: the crop centre is eye_mid + 0.1 * eye_to_mouth and its
    # side 2 * max(2 |eye_to_eye|, 1.8 |eye_to_mouth|), so the eye midpoint sits
    # 0.1 |eye_to_mouth| / side of the crop above the centre (about 0.472 of the height).
    left_eye, right_eye, _, mouth_left, mouth_right = aligned.detection.keypoints5.astype(np.float64)
    eye_mid = (left_eye + right_eye) / 2
    eye_to_eye = np.linalg.norm(left_eye - right_eye)
    eye_to_mouth = np.linalg.norm((mouth_left + mouth_right) / 2 - eye_mid)
    side = 2 * max(2.0 * eye_to_eye, 1.8 * eye_to_mouth)
    expected_eye_y = 0.5 - 0.1 * eye_to_mouth / side
    crop_points = _to_crop(aligned.transform, aligned.detection.keypoints5.astype(np.float64)) / SIZE
    crop_left, crop_right, crop_nose, crop_mouth_left, crop_mouth_right = crop_points
    crop_eye_mid = (crop_left + crop_right) / 2
    assert crop_eye_mid[1] == pytest.approx(expected_eye_y, abs=0.01)
    assert crop_eye_mid[0] == pytest.approx(0.5, abs=0.01)
    assert np.linalg.norm(crop_left - crop_right) == pytest.approx(eye_to_eye / side, abs=0.01)
    # FFHQ-like framing in absolute terms: level eyes a bit above the middle, about a quarter of the
    # width apart, the mouth in the lower third.
    assert 0.42 < crop_eye_mid[1] < 0.50
    assert abs(crop_left[1] - crop_right[1]) < 0.02
    assert 0.20 < crop_left[0] - crop_right[0] < 0.30
    assert 0.62 < (crop_mouth_left[1] + crop_mouth_right[1]) / 2 < 0.80
    assert crop_eye_mid[1] < crop_nose[1]
    # The landmarks returned for the crop are the source landmarks through the transform ...
    np.testing.assert_allclose(
        aligned.landmarks, _to_crop(aligned.transform, aligned.detection.landmarks[:, :2].astype(np.float64)), atol=1e-3
    )
    # ... and the pixels agree: detecting again on the crop finds the eyes where they should be.
    again = detect_faces(aligned.image)
    assert len(again) == 1
    np.testing.assert_allclose(again[0].keypoints5[:2] / SIZE, crop_points[:2], atol=0.015)


def test_astronaut_pose_is_near_frontal(aligned):
    assert abs(aligned.yaw_deg) < 15
    assert abs(aligned.pitch_deg) < 20
    assert abs(aligned.roll_deg) < 10
    assert (aligned.yaw_deg, aligned.pitch_deg, aligned.roll_deg) == (
        aligned.detection.yaw_deg,
        aligned.detection.pitch_deg,
        aligned.detection.roll_deg,
    )


def test_camera_label_is_the_camera_from_angles(aligned):
    label = aligned.camera
    assert label.shape == (25,) and label.dtype == np.float32
    expected = camera_from_angles(yaw_deg=aligned.yaw_deg, pitch_deg=aligned.pitch_deg).to_label()[0].numpy()
    np.testing.assert_allclose(label, expected, atol=1e-6)
    np.testing.assert_allclose(label, camera_from_pose(aligned.yaw_deg, aligned.pitch_deg), atol=1e-6)
    np.testing.assert_allclose(label[16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], atol=1e-6)

    yaw, pitch, radius = angles_from_camera(Camera.from_label(label))
    assert math.degrees(float(yaw[0])) == pytest.approx(aligned.yaw_deg, abs=1e-3)
    assert math.degrees(float(pitch[0])) == pytest.approx(aligned.pitch_deg, abs=1e-3)
    assert float(radius[0]) == pytest.approx(2.7, abs=1e-5)


def test_camera_from_pose_conventions():
    # Positive yaw: camera at the subject's left (+x); negative pitch: camera above (+y).
    position = Camera.from_label(camera_from_pose(30.0, -10.0)).position[0]
    assert position[0] > 0 and position[1] > 0 and position[2] > 0
    frontal = camera_from_pose(0.0, 0.0)
    np.testing.assert_allclose(frontal[[3, 7, 11]], [0, 0, 2.7], atol=1e-6)
    other = camera_from_pose(0.0, 0.0, radius=1.0, focal=2.0, pivot=(0, 0, 0))
    np.testing.assert_allclose(other[[3, 7, 11, 16]], [0, 0, 1.0, 2.0], atol=1e-6)


def _turned(landmarks: np.ndarray, axis: str, angle_deg: float) -> np.ndarray:
    """Rigidly rotates 3-D landmarks (x right, y down, z away from the camera) about their centre."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    rotation = {"y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]), "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]])}
    centre = landmarks.mean(axis=0)
    return ((landmarks - centre) @ rotation[axis].T + centre).astype(np.float32)


def test_pose_signs_follow_the_camera_convention(aligned):
    from demo.tasks.faces import _head_pose

    landmarks = aligned.detection.landmarks.astype(np.float64)
    yaw0, pitch0, roll0 = _head_pose(landmarks)
    # Turning the head 25 degrees towards its own right (nose to image left, left cheek shown) is
    # the view of a camera moved 25 degrees towards the subject's left: yaw + 25.
    turned = _turned(landmarks, "y", 25.0)
    assert turned[1, 0] < landmarks[1, 0]  # the nose tip moved to image left
    yaw, pitch, roll = _head_pose(turned)
    assert yaw == pytest.approx(yaw0 + 25.0, abs=1.0)
    assert pitch == pytest.approx(pitch0, abs=2.0)
    assert roll == pytest.approx(roll0, abs=2.0)
    # Bowing the head 15 degrees (nose down, forehead towards the camera) is the view of a camera
    # raised by 15 degrees: pitch goes down, by the look-at sampler's -(pi/2) sin(elevation).
    bowed = _turned(landmarks, "x", 15.0)
    assert bowed[1, 1] > landmarks[1, 1]  # the nose tip moved down
    yaw, pitch, _ = _head_pose(bowed)
    elevation0 = math.asin(-pitch0 / 90.0)
    expected = -90.0 * math.sin(elevation0 + math.radians(15.0))
    assert pitch == pytest.approx(expected, abs=1.0)
    assert yaw == pytest.approx(yaw0, abs=1.0)


def test_align_face_accepts_a_face_and_a_size(astronaut, aligned):
    small = align_face(astronaut, size=256, face=aligned.detection)
    assert small.image.shape == (256, 256, 3)
    assert small.detection is aligned.detection
    np.testing.assert_allclose(small.camera, aligned.camera)
    np.testing.assert_allclose(small.landmarks, aligned.landmarks / 2, atol=1e-3)


def test_mirrored_photo_has_the_opposite_yaw(aligned, mirrored):
    assert mirrored.yaw_deg == pytest.approx(-aligned.yaw_deg, abs=2.0)
    assert mirrored.pitch_deg == pytest.approx(aligned.pitch_deg, abs=2.0)
    assert mirrored.roll_deg == pytest.approx(-aligned.roll_deg, abs=2.0)
    # The subject's eyes swap sides in the image.
    flipped = 512 - mirrored.detection.keypoints5[:2, 0]
    np.testing.assert_allclose(flipped, aligned.detection.keypoints5[1::-1, 0], atol=3.0)


def test_in_plane_rotation_changes_roll_only(aligned, rotated):
    # Rotating the photo counter-clockwise by 20 degrees lowers the roll by 20 degrees.
    assert rotated.roll_deg == pytest.approx(aligned.roll_deg - 20.0, abs=2.0)
    assert rotated.yaw_deg == pytest.approx(aligned.yaw_deg, abs=3.0)
    assert rotated.pitch_deg == pytest.approx(aligned.pitch_deg, abs=3.0)
    # The similarity crop undoes the rotation.
    difference = np.abs(rotated.image.astype(np.float32) - aligned.image.astype(np.float32)).mean()
    assert difference < 8.0, difference


# --- refusals --------------------------------------------------------------------------------


def test_photo_without_a_face_is_refused():
    coffee = skimage_data.coffee()
    assert detect_faces(coffee) == []
    with pytest.raises(InputError, match=r"^No face found\. Use a photo where one face"):
        align_face(coffee)


def test_blank_image_is_refused():
    with pytest.raises(InputError, match="No face found"):
        align_face(np.full((400, 300, 3), 128, dtype=np.uint8))


@pytest.mark.parametrize(
    "payload",
    [b"", b"definitely not an image" * 50, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64],
    ids=["empty", "text", "broken-png"],
)
def test_garbage_bytes_are_refused(payload):
    with pytest.raises(InputError):
        load_photo(payload)
    with pytest.raises(InputError):
        align_face(payload)


def test_truncated_file_and_missing_path_are_refused(astronaut, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="PNG")
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_photo(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InputError, match="No such file"):
        load_photo(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="shape"):
        load_photo(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ValueError):
        detect_faces(astronaut.astype(np.float32))


# --- decoding --------------------------------------------------------------------------------


def test_exif_orientation_is_applied(astronaut, aligned, tmp_path):
    # Store the photo turned a quarter turn counter-clockwise, tagged "rotate 90 CW to display".
    stored = Image.fromarray(astronaut).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as raw:
        assert raw.getexif()[0x0112] == 6
        assert np.abs(np.asarray(raw).astype(np.float32) - astronaut).mean() > 20  # stored sideways

    photo = load_photo(path)
    assert photo.shape == astronaut.shape
    assert np.abs(photo.astype(np.float32) - astronaut).mean() < 3.0
    faces = detect_faces(photo)
    assert len(faces) == 1
    _assert_same_eyes(faces[0], aligned.detection, tolerance_px=3.0)
    assert faces[0].roll_deg == pytest.approx(aligned.roll_deg, abs=2.0)


def _encode(image: Image.Image, file_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format)
    return buffer.getvalue()


def _encoded_as(mode: str, astronaut: np.ndarray) -> bytes:
    rgb = Image.fromarray(astronaut)
    if mode == "RGBA":  # the 40 leftmost columns fully transparent
        image = rgb.convert("RGBA")
        image.putalpha(Image.fromarray(np.where(np.arange(512) < 40, 0, 255).astype(np.uint8)[None].repeat(512, 0)))
        return _encode(image, "PNG")
    if mode == "I;16":
        gray = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        return _encode(Image.fromarray(gray), "PNG")
    if mode == "CMYK":
        return _encode(rgb.convert("CMYK"), "TIFF")
    if mode == "P":
        return _encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG")
    return _encode(rgb.convert(mode), "PNG")


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "CMYK", "P"])
def test_image_modes_load_and_detect(mode, astronaut, aligned):
    payload = _encoded_as(mode, astronaut)
    photo = load_photo(payload)
    assert photo.shape == (512, 512, 3) and photo.dtype == np.uint8
    if mode in ("L", "I;16"):
        gray = np.asarray(Image.fromarray(astronaut).convert("L"))
        assert np.abs(photo[:, :, 0].astype(int) - gray).max() <= 1
        assert (photo[:, :, 0] == photo[:, :, 2]).all()
    elif mode == "RGBA":
        assert (photo[:, :40] == 255).all()  # transparent -> white
        assert (photo[:, 40:] == astronaut[:, 40:]).all()
    else:
        assert np.abs(photo.astype(np.float32) - astronaut).mean() < 12.0
    faces = detect_faces(photo)
    assert len(faces) == 1
    _assert_same_eyes(faces[0], aligned.detection, tolerance_px=4.0)


def test_array_and_pil_inputs(astronaut):
    np.testing.assert_array_equal(load_photo(astronaut), astronaut)
    np.testing.assert_array_equal(load_photo(Image.fromarray(astronaut)), astronaut)
    as_float = load_photo(astronaut.astype(np.float32) / 255.0)
    assert np.abs(as_float.astype(int) - astronaut).max() <= 1
    gray = load_photo(astronaut[:, :, 0])
    assert gray.shape == (512, 512, 3) and (gray[:, :, 1] == astronaut[:, :, 0]).all()


# --- sizes -----------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but which carries almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [12_000, 20_000], ids=["over-max_pixels", "over-pillow-bomb-limit"])
def test_huge_image_is_refused_from_its_header(side):
    start = time.perf_counter()
    with pytest.raises(InputError, match="too large"):
        load_photo(_png_header_only(side, side))
    assert time.perf_counter() - start < 1.0  # nothing was decoded


def test_max_pixels_applies_to_arrays_too(astronaut):
    with pytest.raises(InputError, match="too large"):
        load_photo(astronaut, max_pixels=100_000)


def test_large_photo_is_detected_and_cropped_sharply(astronaut, aligned):
    scale = 5000 / 512
    big = np.asarray(Image.fromarray(astronaut).resize((5000, 5000), Image.BILINEAR))
    result = align_face(big)
    np.testing.assert_allclose(
        result.detection.keypoints5[:2] / scale,
        aligned.detection.keypoints5[:2],
        atol=0.1 * aligned.detection.eye_distance,
    )
    assert result.yaw_deg == pytest.approx(aligned.yaw_deg, abs=3.0)
    assert result.pitch_deg == pytest.approx(aligned.pitch_deg, abs=3.0)
    # The crop comes from the full-resolution photo (no blurry detour through a small copy).
    difference = np.abs(result.image.astype(np.float32) - aligned.image.astype(np.float32)).mean()
    assert difference < 8.0, difference


# --- several and small faces -----------------------------------------------------------------


def test_largest_of_several_faces_is_used_with_a_warning(astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.LANCZOS))
    collage = np.full((512, 768, 3), 255, dtype=np.uint8)
    collage[:, :512] = astronaut
    collage[128:384, 512:] = small
    faces = detect_faces(collage)
    assert len(faces) == 2
    assert faces[0].area > 2 * faces[1].area
    result = align_face(collage)
    assert result.detection.box[2] <= 512  # the face of the large copy
    assert any("2 faces found; used the largest" in note for note in result.warnings)


def _on_canvas(astronaut: np.ndarray, scale: float, canvas: int) -> np.ndarray:
    side = round(512 * scale)
    small = np.asarray(Image.fromarray(astronaut).resize((side, side), Image.LANCZOS))
    out = np.full((canvas, canvas, 3), 200, dtype=np.uint8)
    out[100 : 100 + side, 150 : 150 + side] = small
    return out


def test_small_face_gives_a_warning(astronaut):
    result = align_face(_on_canvas(astronaut, 0.8, 1024))
    assert result.image.shape == (SIZE, SIZE, 3)
    assert any(note.startswith("Small face") and "blurry" in note for note in result.warnings)


def test_tiny_face_is_refused(astronaut):
    with pytest.raises(InputError, match="too small"):
        align_face(_on_canvas(astronaut, 0.5, 1024))


def _run_child(code: str) -> subprocess.CompletedProcess:
    import sys
    from pathlib import Path

    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])


def test_mediapipe_native_log_lines_stay_off_stderr():
    """MediaPipe's C++ logging (``W0000 ... inference_feedback_manager.cc:114] ...``) writes straight to fd 2 on
    every photo; detection and segmentation run with fd 2 redirected, and what else was written there comes back."""
    child = _run_child(
        "import sys\n"
        "import numpy as np\n"
        "from skimage import data\n"
        "from demo.tasks.faces import align_face, foreground_mask\n"
        "face = align_face(data.astronaut())\n"
        "foreground_mask(face.image)\n"
        "print('python stderr still works', file=sys.stderr)\n"
    )
    assert child.returncode == 0, child.stderr
    noise = [line for line in child.stderr.splitlines() if "W0000" in line or ".cc:" in line or "absl::" in line
             or "TensorFlow Lite" in line]
    assert noise == [], noise
    assert "python stderr still works" in child.stderr


def test_errors_inside_the_quiet_window_keep_their_messages():
    """An exception raised while fd 2 is redirected still reaches the caller (and stderr, uncaught); other
    writes to fd 2 in that window are replayed afterwards; fd 2 is the same file again after the window."""
    child = _run_child(
        "import os, sys\n"
        "from demo.tasks.faces import quiet_native_log\n"
        "before = os.fstat(2)\n"
        "try:\n"
        "    with quiet_native_log():\n"
        "        os.write(2, b'W0000 00:00:1.0 1 some_calculator.cc:12] native noise\\n')\n"
        "        os.write(2, b'a line from another thread\\n')\n"
        "        raise ValueError('the message the user needs')\n"
        "except ValueError as error:\n"
        "    print('caught:', error, file=sys.stderr)\n"
        "after = os.fstat(2)\n"
        "assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)\n"
        "with quiet_native_log():\n"
        "    raise RuntimeError('uncaught and printed')\n"
    )
    assert child.returncode == 1
    assert "caught: the message the user needs" in child.stderr
    assert "a line from another thread" in child.stderr
    assert "RuntimeError: uncaught and printed" in child.stderr
    assert "native noise" not in child.stderr
