"""Landmarks and face-part labels of rendered faces: the keypoint and segmentation annotations of datasets.

- :func:`detect_landmarks`: MediaPipe's 478-point face mesh (``demo.tasks.faces``, offline) on an RGB
  image: (478, 2) pixel coordinates (x right, y down; (0, 0) is the top-left corner of the top-left
  pixel, as ``demo.cameras.lift_points`` takes them), or None when no face is found.
- :data:`IBUG68`: the MediaPipe indices of the 68 iBUG / 300-W points (jaw 0-16 from the subject's
  right ear level round the chin, brows 17-26, nose bridge 27-30 and base 31-35, eyes 36-47, outer
  lips 48-59, inner lips 60-67). The jaw takes the face-oval vertices between the ears at even steps
  with the chin (152) as point 8; brows their upper contours; eyes the corners and lid points; lips the
  corners, centres and the vertices halfway between.
- :func:`part_labels`: a face-part label map from the 478 points and the foreground alpha. Regions
  are filled in this order: other foreground (hair, neck, clothes), skin (the face oval), nose (hull
  of the nose points), brows (hulls), eyes (lid contours), lips (outer lip contour), mouth interior
  (inner lip contour); then every pixel with alpha < 0.5 is background. Labels and colours: :data:`PART_LABELS`, :data:`PART_PALETTE`.
- :func:`visible_points`: which 3D points a camera sees (inside the image, in front of the camera and
  not behind the rendered surface: a depth-map z-test).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from demo import media
from demo.cameras import FOREGROUND_ALPHA, project_points

NUM_MESH_POINTS = 478
IBUG68: tuple[int, ...] = (
    127, 234, 132, 58, 136, 150, 176, 148, 152, 377, 400, 379, 365, 288, 361, 454, 356,  # jaw
    70, 63, 105, 66, 107,  # subject's right brow, outside -> inside
    336, 296, 334, 293, 300,  # left brow, inside -> outside
    168, 197, 5, 1,  # nose bridge -> tip
    98, 97, 2, 326, 327,  # nose base
    33, 160, 158, 133, 153, 144,  # right eye: outer corner, upper lid, inner corner, lower lid
    362, 385, 387, 263, 373, 380,  # left eye: inner corner, upper lid, outer corner, lower lid
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lips from the right corner
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lips
)
PART_LABELS: dict[int, str] = {
    0: "background", 1: "skin", 2: "brows", 3: "eyes", 4: "nose", 5: "lips", 6: "mouth_interior", 7: "hair_other",
}
PART_PALETTE: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0), 1: (204, 153, 102), 2: (102, 51, 0), 3: (0, 102, 255), 4: (255, 153, 0), 5: (204, 0, 51),
    6: (102, 0, 102), 7: (128, 128, 128),
}


def detect_landmarks(image: np.ndarray) -> np.ndarray | None:
    """(478, 2) float64 face-mesh points of the largest face in ``image`` (H, W, 3) uint8, or None."""
    from demo.tasks.faces import detect_faces

    faces = detect_faces(np.ascontiguousarray(image))
    if not faces:
        return None
    return np.asarray(faces[0].landmarks[:, :2], dtype=np.float64)


detect_landmarks.name = "mediapipe-face-mesh-478"  # type: ignore[attr-defined]


def _loops(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The closed loops of an edge set in which every vertex has two edges (face oval, eyes, lips)."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    loops, seen = [], set()
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, previous, current = [start], None, start
        seen.add(start)
        while True:
            options = [n for n in neighbours[current] if n != previous]
            following = options[0] if options else start
            if following == start or following in seen:
                break
            loop.append(following)
            seen.add(following)
            previous, current = current, following
        loops.append(loop)
    return loops


@functools.cache
def _regions() -> dict[str, list[list[int]]]:
    """Mesh-index polygons per part, from MediaPipe's own face-mesh connection sets."""
    from mediapipe.python.solutions import face_mesh_connections as mesh

    def points(edges) -> list[int]:
        return sorted({index for edge in edges for index in edge})

    lips = sorted(_loops(mesh.FACEMESH_LIPS), key=len)  # two loops of 20: tell them apart by area below
    return {
        "oval": _loops(mesh.FACEMESH_FACE_OVAL),
        "nose": [points(mesh.FACEMESH_NOSE)],
        "brows": [points(mesh.FACEMESH_LEFT_EYEBROW), points(mesh.FACEMESH_RIGHT_EYEBROW)],
        "eyes": _loops(mesh.FACEMESH_LEFT_EYE) + _loops(mesh.FACEMESH_RIGHT_EYE),
        "lips": lips,
    }


def part_labels(
    image_size: int,
    landmarks: np.ndarray | None,
    alpha: np.ndarray | None = None,
    *,
    usable: np.ndarray | None = None,
) -> np.ndarray:
    """(S, S) uint8 face-part labels (see :data:`PART_LABELS`).

    Args:
        landmarks: (478, 2) pixel points, or None (then only background / other foreground).
        alpha: (r, r) foreground opacity (resized to S, nearest); None counts every pixel as foreground.
        usable: (478,) bools; a part with any unusable vertex (e.g. hidden from this view) is left out.
    """
    import cv2

    labels = np.full((image_size, image_size), 7, np.uint8)
    foreground = None
    if alpha is not None:
        alpha = np.asarray(alpha, dtype=np.float32)
        rows = np.minimum((np.arange(image_size) + 0.5) * alpha.shape[0] / image_size, alpha.shape[0] - 1).astype(int)
        cols = np.minimum((np.arange(image_size) + 0.5) * alpha.shape[1] / image_size, alpha.shape[1] - 1).astype(int)
        foreground = alpha[np.ix_(rows, cols)] >= FOREGROUND_ALPHA
    if landmarks is None:
        return labels if foreground is None else np.where(foreground, labels, 0).astype(np.uint8)
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    usable = np.ones(len(points), bool) if usable is None else np.asarray(usable, bool)
    regions = _regions()
    # cv2 fills with pixel centres at integers: shift by half a pixel, and fill with 4 bits of sub-pixel precision.
    scale = 16

    def fill(indices: list[int], value: int, *, hull: bool = False) -> None:
        if not usable[indices].all() or not np.isfinite(points[indices]).all():
            return
        polygon = np.round((points[indices] - 0.5) * scale).astype(np.int32)
        if hull:
            polygon = cv2.convexHull(polygon)
        cv2.fillPoly(labels, [polygon.reshape(-1, 1, 2)], int(value), lineType=cv2.LINE_8, shift=4)

    for loop in regions["oval"]:
        fill(loop, 1)
    for indices in regions["nose"]:
        fill(indices, 4, hull=True)
    for indices in regions["brows"]:
        fill(indices, 2, hull=True)
    for loop in regions["eyes"]:
        fill(loop, 3)
    outer, inner = sorted(regions["lips"], key=lambda loop: _area(points[loop]), reverse=True)
    fill(outer, 5)
    fill(inner, 6)
    if foreground is not None:
        labels[~foreground] = 0  # no surface there: background, whatever the landmarks say
    return labels


def _area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def visible_points(
    points_world: np.ndarray, camera_label: np.ndarray, image_size: int, depth: np.ndarray,
    alpha: np.ndarray | None = None, *, tolerance: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """((K, 2) pixel coordinates, (K,) visible) of world points seen by a camera with a depth map.

    A point is visible when it projects inside the image, in front of the camera, onto the foreground
    (``alpha`` >= 0.5, when given) and no further than the rendered surface at its pixel (distance
    along the ray <= depth + ``tolerance`` world units). NaN points are not visible.
    """
    points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    label = np.asarray(camera_label, dtype=np.float64).reshape(25)
    finite = np.isfinite(points).all(axis=1)
    safe = np.where(finite[:, None], points, 0.0)
    pixels = project_points(safe, label, image_size)
    centre = label[[3, 7, 11]]
    forward = label[:16].reshape(4, 4)[:3, 2]
    in_front = (safe - centre) @ forward > 0
    u, v = pixels[:, 0] / image_size, pixels[:, 1] / image_size
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    side = depth.shape[0]
    rows = np.clip(np.floor(np.nan_to_num(v) * side).astype(np.int64), 0, side - 1)
    cols = np.clip(np.floor(np.nan_to_num(u) * side).astype(np.int64), 0, side - 1)
    distance = np.linalg.norm(safe - centre, axis=1)
    unoccluded = distance <= np.asarray(depth, dtype=np.float64)[rows, cols] + tolerance
    visible = finite & in_front & inside & unoccluded
    if alpha is not None:
        visible &= np.asarray(alpha)[rows, cols] >= FOREGROUND_ALPHA
    pixels[~finite] = np.nan
    return pixels, visible


# --- annotating one render ------------------------------------------------------------------------

Render = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(image (S, S, 3) uint8, depth (r, r), alpha (r, r), camera label (25,)) of one view."""


def detector_name(detector) -> str:
    """A detector's ``name`` attribute, else its function or class name (recorded in datasets)."""
    return str(getattr(detector, "name", None) or getattr(detector, "__name__", None) or type(detector).__name__)


def _points_json(points: np.ndarray) -> list[list[float] | None]:
    return [None if not np.isfinite(p).all() else [float(v) for v in p] for p in points]


def frontal_render(model, ws: np.ndarray, size: int | None = None) -> Render:
    """The identity of ``ws`` (1, num_ws, w_dim) rendered from the front at the model's training camera
    (image in the official uint8 conversion, resized to ``size`` if given)."""
    from demo.tasks.sample import sample_images, view_camera

    result = sample_images(model, ws=ws, camera=view_camera(model), per_sample_clamp=True)
    image = media.image_to_uint8(result.images[0])
    return media.resize_image(image, size or image.shape[0]), result.depth[0, 0], result.alpha[0, 0], result.cameras[0]


def keypoints_record(
    render: Render,
    detector,
    *,
    frontal=None,
) -> tuple[dict | None, np.ndarray | None, np.ndarray | None]:
    """Keypoints of one view: (the annotation's ``keypoints`` object or None, (K, 2) pixels, (K,) visible).

    The detector's points on this view's image are lifted to world 3D with its depth map and camera
    (``source: "detected"``). When it finds no face, ``frontal()`` (if given) renders the same
    identity from the front: its points, lifted there, are projected into this view and z-tested
    against this view's depth (``source: "frontal-projected"``), so every view of an identity has
    consistent keypoints. A 478-point result also carries the iBUG 68 subset.
    """
    from demo.cameras import lift_points

    image, depth, alpha, label = render
    size = image.shape[0]
    points = detector(image)
    source = "detected"
    if points is not None:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        world = lift_points(points, size, depth, label, alpha)
        visible = np.isfinite(world).all(axis=1)
    else:
        if frontal is None:
            return None, None, None
        front_image, front_depth, front_alpha, front_label = frontal()
        front_points = detector(front_image)
        if front_points is None:
            return None, None, None
        front_points = np.asarray(front_points, dtype=np.float64).reshape(-1, 2)
        world = lift_points(front_points, front_image.shape[0], front_depth, front_label, front_alpha)
        points, visible = visible_points(world, label, size, depth, alpha)
        source = "frontal-projected"
    record = {
        "detector": detector_name(detector),
        "source": source,
        "points_2d": _points_json(points),
        "visible": [bool(v) for v in visible],
        "points_3d": _points_json(world),
        "ibug68": None,
    }
    if len(points) == NUM_MESH_POINTS:
        subset = list(IBUG68)
        record["ibug68"] = {
            "mesh_indices": subset,
            "points_2d": _points_json(points[subset]),
            "visible": [bool(v) for v in visible[subset]],
            "points_3d": _points_json(world[subset]),
        }
    return record, points, visible


def labels_for(size: int, keypoints: dict | None, points: np.ndarray | None, visible: np.ndarray | None, alpha) -> np.ndarray:
    """The label map of a view from :func:`keypoints_record`'s result: face parts from a 478-point set (for
    frontal-projected points only the parts this view sees), other foreground from ``alpha``."""
    usable = None if keypoints is None or keypoints["source"] == "detected" else visible
    mesh = points if points is not None and len(points) == NUM_MESH_POINTS else None
    return part_labels(size, mesh, alpha, usable=usable)
