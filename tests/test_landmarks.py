"""Keypoint and segmentation annotations: landmarks on a real photo, lifting and projecting with known geometry,
frontal fallback, and datasets/generates with --with keypoints,segmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from demo import cli, media
from demo.cameras import camera_from_angles, lift_points, project_points
from demo.tasks import landmarks

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "demo" / "tasks" / "dataset_annotation.schema.json").read_text())


@pytest.fixture(scope="module")
def astronaut():
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) finds the landmarks")
    from skimage import data

    image = data.astronaut()
    return image, landmarks.detect_landmarks(image)


def test_landmarks_land_on_the_face_parts_of_a_real_photo(astronaut):
    image, points = astronaut
    assert points.shape == (478, 2)
    labels = landmarks.part_labels(512, points, None)
    ibug = points[list(landmarks.IBUG68)]
    for eye in (ibug[36:42], ibug[42:48]):
        centre = eye.mean(0)
        assert labels[int(centre[1]), int(centre[0])] == 3  # the eye's centre is inside its eye region
        assert np.mean([labels[int(y), int(x)] in (1, 3) for x, y in eye]) == 1.0  # the contour on the eye or its rim
    nose_tip = ibug[30]
    assert labels[int(nose_tip[1]), int(nose_tip[0])] == 4
    mouth = ibug[60:68].mean(0)
    assert labels[int(mouth[1]), int(mouth[0])] in (5, 6)
    assert ibug[8, 1] > ibug[57, 1] > ibug[33, 1] > ibug[27, 1] > ibug[19, 1]  # chin, lower lip, nose, bridge, brow
    assert ibug[36, 0] < ibug[39, 0] < ibug[42, 0] < ibug[45, 0]  # the eye corners left to right in the image
    counts = np.bincount(labels.ravel(), minlength=8)
    assert counts[1] > counts[4] > counts[3] > 0 and counts[2] > 0 and counts[5] > 0 and counts[0] == 0
    # With a foreground alpha, everything outside it is background.
    alpha = np.zeros((128, 128), np.float32)
    alpha[:, :64] = 1.0
    halved = landmarks.part_labels(512, points, alpha)
    assert (halved[:, 256:][labels[:, 256:] == 7] == 0).all() and (halved[:, :250][labels[:, :250] == 7] == 7).all()


def _sphere_depth(label: np.ndarray, size: int, radius: float = 0.15) -> np.ndarray:
    """Distance along each pixel-centre ray to a sphere at the origin (far plane 10 where the ray misses)."""
    cam2world, intrinsics = label[:16].reshape(4, 4), label[16:].reshape(3, 3)
    u = (np.arange(size) + 0.5) / size
    uu, vv = np.meshgrid(u, u)
    directions = np.stack([(uu - intrinsics[0, 2]) / intrinsics[0, 0], (vv - intrinsics[1, 2]) / intrinsics[1, 1],
                           np.ones_like(uu)], -1) @ cam2world[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origin = cam2world[:3, 3]
    b = directions @ origin
    disc = b**2 - (origin @ origin - radius**2)
    return np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), 10.0)


def test_lift_then_project_and_other_views_agree_on_a_sphere():
    size, r = 512, 256
    front = camera_from_angles(yaw_deg=0, pitch_deg=0, radius=2.7, pivot=(0, 0, 0), focal=4.2647).to_label()[0].numpy().astype(np.float64)
    side = camera_from_angles(yaw_deg=35, pitch_deg=-10, radius=2.7, pivot=(0, 0, 0), focal=4.2647).to_label()[0].numpy().astype(np.float64)
    depth_front, depth_side = _sphere_depth(front, r), _sphere_depth(side, r)
    rng = np.random.default_rng(0)
    angle, spread = rng.uniform(0, 2 * np.pi, 300), 115 * np.sqrt(rng.uniform(0, 1, 300))
    pixels = 256 + np.stack([spread * np.cos(angle), spread * np.sin(angle)], 1)  # over the sphere's whole disc
    world = lift_points(pixels, size, depth_front, front)
    np.testing.assert_allclose(project_points(world, front, size), pixels, atol=0.5)  # lift then project: the same pixels
    assert np.abs(np.linalg.norm(world, axis=1) - 0.15).max() < 0.01  # on the sphere (nearest-pixel depth)
    # Projected into the side view, the visible points lift back (with the side view's depth) to the same 3D points.
    projected, visible = landmarks.visible_points(world, side, size, depth_side, depth_side < 10)
    assert 0.3 < visible.mean() < 1.0
    again = lift_points(projected[visible], size, depth_side, side)
    error = np.linalg.norm(again - world[visible], axis=1)
    assert np.median(error) < 0.002 and error.max() < 0.02  # nearest-pixel depth: steep near the silhouette
    # Points on the far side of the sphere are hidden from the front.
    back = world * np.array([1, 1, -1])
    assert not landmarks.visible_points(back, front, size, depth_front)[1].any()


def test_frontal_landmarks_stand_in_where_a_view_has_no_face():
    size, r = 512, 256
    front = camera_from_angles(yaw_deg=0, pitch_deg=0, radius=2.7, pivot=(0, 0, 0), focal=4.2647).to_label()[0].numpy().astype(np.float64)
    side = camera_from_angles(yaw_deg=30, pitch_deg=0, radius=2.7, pivot=(0, 0, 0), focal=4.2647).to_label()[0].numpy().astype(np.float64)
    grid = np.stack(np.meshgrid(np.linspace(200, 312, 26), np.linspace(200, 312, 19)), -1).reshape(-1, 2)[:478]
    front_image, side_image = np.zeros((size, size, 3), np.uint8), np.ones((size, size, 3), np.uint8)

    def detector(image):
        return grid if image[0, 0, 0] == 0 else None  # finds "a face" in the frontal render only

    ones = np.ones((r, r), np.float32)
    frontal = (front_image, _sphere_depth(front, r), ones, front)
    record, points, visible = landmarks.keypoints_record((side_image, _sphere_depth(side, r), ones, side), detector,
                                                         frontal=lambda: frontal)
    assert record["source"] == "frontal-projected" and len(record["points_2d"]) == 478
    world = lift_points(grid, size, frontal[1], front)
    np.testing.assert_allclose(points, project_points(world, side, size), atol=1e-6)
    assert visible.all() and len(record["ibug68"]["points_2d"]) == 68
    detected, _, _ = landmarks.keypoints_record(frontal, detector)
    assert detected["source"] == "detected"
    assert landmarks.keypoints_record((side_image, frontal[1], ones, side), detector)[0] is None  # no frontal: nothing


def test_dataset_with_keypoints_and_segmentation_runs_resumes_and_validates(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) finds the landmarks")
    out = tmp_path / "data"
    args = ["dataset", "--model", "tiny", "--num", "40", "--out", str(out), "--with", "keypoints,segmentation,masks",
            "--device", "cpu"]
    assert cli.main([*args[:4], "20", *args[5:]]) == 0  # the first half, then the rest: a resume
    assert cli.main(args) == 0
    validator = jsonschema.Draft202012Validator(SCHEMA)
    lines = (out / "index.jsonl").read_text().splitlines()
    assert len(lines) == 40
    for index in range(40):
        annotation = json.loads((out / "annotations" / f"{index:06d}.json").read_text())
        validator.validate(annotation)
        labels = media.load_png(out / annotation["files"]["segmentation"])
        assert labels.shape == (32, 32) and labels.dtype == np.uint8 and labels.max() <= 7
        mask = media.load_png(out / annotation["files"]["mask"]).repeat(2, 0).repeat(2, 1)  # r = 16 -> S = 32
        np.testing.assert_array_equal(labels > 0, mask >= 128)  # random weights: no face, foreground = other
    settings = json.loads((out / "settings.json").read_text())
    assert settings["keypoint_detector"] == "mediapipe-face-mesh-478" and settings["segmentation_labels"]["3"] == "eyes"


def test_dataset_keypoints_from_a_detector_validate_with_both_sources(tiny_generator, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from demo.tasks import dataset

    def half_the_time(image):
        """478 points on even-sum images only: some views detected, others frontal-projected or none."""
        if int(image.sum()) % 2:
            return None
        side = image.shape[0]
        return np.stack(np.meshgrid(np.linspace(0.3, 0.7, 26), np.linspace(0.3, 0.7, 19)), -1).reshape(-1, 2)[:478] * side

    out = tmp_path / "data"
    dataset.make_dataset(tiny_generator, out, num=12, with_=("keypoints", "segmentation"), keypoint_detector=half_the_time)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    sources = set()
    for index in range(12):
        annotation = json.loads((out / "annotations" / f"{index:06d}.json").read_text())
        validator.validate(annotation)
        keypoints = annotation["keypoints"]
        sources.add(None if keypoints is None else keypoints["source"])
        if keypoints is not None:
            assert len(keypoints["ibug68"]["mesh_indices"]) == 68 and len(keypoints["visible"]) == 478
    assert "detected" in sources and "frontal-projected" in sources


def test_generate_annotates_single_samples(tmp_path):
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) finds the landmarks")
    assert cli.main(["generate", "--model", "tiny", "--seeds", "2", "--annotate", "keypoints,segmentation",
                     "--outdir", str(tmp_path), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "seed0002_keypoints.json").read_text())["image_size"] == 32
    assert media.load_png(tmp_path / "seed0002_segmentation.png").shape == (32, 32)
    assert cli.main(["generate", "--model", "tiny", "--seeds", "2", "--annotate", "hair", "--outdir", str(tmp_path)]) == 2
