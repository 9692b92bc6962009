"""Camera conventions (demo.cameras): pinned poses, invariants, and parity with the official cameras."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from demo.cameras import (
    FFHQ_FOCAL,
    SHAPENET_FOCAL,
    Camera,
    angles_from_camera,
    camera_from_angles,
    conditioning_camera,
    focal_to_fov_deg,
    fov_to_focal,
    horizontal_fov_deg,
    intrinsics_matrix,
    look_at,
    orbit_angles,
)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "eg3d" / "tiny_ffhq_expected.npz"
CAMERA_TOL = 1e-6  # the fixture README's tolerance for camera vectors


@pytest.fixture(scope="module")
def reference() -> dict:
    if not FIXTURE.exists():
        pytest.skip(f"official EG3D fixture not found at {FIXTURE} (../shared/reference is absent)")
    with np.load(FIXTURE, allow_pickle=False) as data:
        arrays = {key: data[key] for key in ("c", "c_cond", "intrinsics", "video_c_cond", "video_c", "video_frames")}
        arrays["meta"] = json.loads(str(data["meta_json"]))
    return arrays


def _max_diff(ours: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.abs(ours.detach().cpu().numpy().astype(np.float64) - expected.astype(np.float64)).max())


# --- parity with the official cameras ----------------------------------------------------------


def test_render_cameras_match_official(reference):
    frontal = camera_from_angles(yaw=0.0, pitch=0.0, radius=2.7, pivot=(0.0, 0.0, 0.2), fov_deg=18.837)
    turned = camera_from_angles(yaw_deg=30.0, pitch_deg=-10.0, radius=2.7, pivot=(0.0, 0.0, 0.2), fov_deg=18.837)
    assert _max_diff(frontal.to_label()[0], reference["c"][0]) <= CAMERA_TOL
    assert _max_diff(turned.to_label()[0], reference["c"][1]) <= CAMERA_TOL


def test_gen_samples_conditioning_camera_matches_official(reference):
    camera = conditioning_camera(focal=fov_to_focal(18.837))  # official_pi = math.pi, as gen_samples
    assert _max_diff(camera.to_label(), reference["c_cond"]) <= CAMERA_TOL


def test_fov_intrinsics_match_official(reference):
    assert _max_diff(intrinsics_matrix(fov_to_focal(18.837))[0], reference["intrinsics"]) <= CAMERA_TOL


def test_gen_videos_conditioning_camera_matches_official(reference):
    rendering = reference["meta"]["rendering_kwargs"]
    camera = conditioning_camera(
        radius=rendering["avg_camera_radius"], pivot=rendering["avg_camera_pivot"], focal=4.2647, official_pi=3.14
    )
    assert _max_diff(camera.to_label(), reference["video_c_cond"]) <= CAMERA_TOL


def test_gen_videos_trajectory_matches_official(reference):
    rendering = reference["meta"]["rendering_kwargs"]
    num_frames = 3 * reference["meta"]["params"]["video_w_frames"]  # 3 keyframes x 120
    assert num_frames == 360
    angles = [orbit_angles(int(frame), num_frames) for frame in reference["video_frames"]]
    cameras = look_at(
        torch.tensor([h for h, _ in angles], dtype=torch.float64),
        torch.tensor([v for _, v in angles], dtype=torch.float64),
        radius=rendering["avg_camera_radius"],
        pivot=rendering["avg_camera_pivot"],
        focal=FFHQ_FOCAL,
    )
    assert _max_diff(cameras.to_label(), reference["video_c"]) <= CAMERA_TOL


# --- pinned conventions ------------------------------------------------------------------------


def test_frontal_camera_pose():
    camera = camera_from_angles(pivot=(0.0, 0.0, 0.0))
    torch.testing.assert_close(camera.position[0], torch.tensor([0.0, 0.0, 2.7]), atol=1e-6, rtol=0)
    frontal_rotation = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(camera.cam2world[0, :3, :3], frontal_rotation, atol=1e-6, rtol=0)
    torch.testing.assert_close(camera.cam2world[0, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(camera.intrinsics[0], intrinsics_matrix(FFHQ_FOCAL)[0])


def test_turned_camera_position():
    camera = camera_from_angles(yaw_deg=30.0, pitch_deg=-10.0, radius=2.7)
    torch.testing.assert_close(camera.position[0], torch.tensor([1.342, 0.300, 2.324]), atol=1e-3, rtol=0)


def test_sign_conventions():
    assert camera_from_angles(yaw=0.3).position[0, 0] > 0.5  # positive yaw: camera at +x (image right)
    assert camera_from_angles(yaw=-0.3).position[0, 0] < -0.5
    assert camera_from_angles(pitch=-0.2).position[0, 1] > 0.2  # negative pitch: camera above the face
    assert camera_from_angles(pitch=0.2).position[0, 1] < -0.2


def test_pitch_maps_linearly_to_height():
    # The official arccos mapping makes y = -(2 / pi) r pitch, not r sin(-pitch).
    for pitch in (-0.6, -0.2, 0.1, 0.5):
        y = camera_from_angles(pitch=pitch, radius=2.7).position[0, 1].item()
        assert y == pytest.approx(-(2 / math.pi) * 2.7 * pitch, abs=1e-5)


def test_camera_orbits_origin_not_pivot():
    camera = camera_from_angles(yaw=0.4, pitch=-0.3, radius=2.5, pivot=(0.1, -0.2, 0.3))
    assert torch.linalg.vector_norm(camera.position[0]).item() == pytest.approx(2.5, abs=1e-5)


def test_focal_constants():
    assert fov_to_focal(18.837) == pytest.approx(4.263391, abs=5e-7)
    assert fov_to_focal(18) == pytest.approx(4.465175, abs=5e-7)  # gen_samples' int-truncated default
    assert fov_to_focal(45) == pytest.approx(SHAPENET_FOCAL, abs=1e-4)
    assert horizontal_fov_deg(FFHQ_FOCAL) == pytest.approx(13.37, abs=5e-3)
    for fov in (1.0, 12.5, 18.837, 45.0, 90.0, 170.0):
        assert focal_to_fov_deg(fov_to_focal(fov)) == pytest.approx(fov, rel=1e-12, abs=0)


def test_focal_selection():
    assert camera_from_angles().intrinsics[0, 0, 0].item() == pytest.approx(FFHQ_FOCAL, rel=1e-7)
    assert camera_from_angles(fov_deg=18).intrinsics[0, 1, 1].item() == pytest.approx(4.465175, rel=1e-7)
    assert camera_from_angles(focal=2.0, fov_deg=18).intrinsics[0, 0, 0].item() == 2.0


def test_label_round_trip():
    camera = camera_from_angles(yaw=torch.tensor([0.1, -0.4, 0.7]), pitch=[0.0, -0.2, 0.3], fov_deg=20.0)
    label = camera.to_label()
    assert label.shape == (3, 25) and label.dtype == torch.float32
    torch.testing.assert_close(label[:, :16], camera.cam2world.reshape(3, 16), atol=0, rtol=0)
    torch.testing.assert_close(label[:, 16:], camera.intrinsics.reshape(3, 9), atol=0, rtol=0)
    again = Camera.from_label(label)
    assert torch.equal(again.cam2world, camera.cam2world) and torch.equal(again.intrinsics, camera.intrinsics)
    single = Camera.from_label(label[1].numpy())
    assert len(single) == 1 and torch.equal(single.to_label(), label[1:2])
    assert torch.equal(Camera.from_label(label.tolist()).to_label(), label)


@pytest.mark.parametrize("shape", [(24,), (2, 26), (1, 5, 5), ()])
def test_from_label_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        Camera.from_label(torch.zeros(shape))


def test_angles_from_camera_inverts_camera_from_angles():
    grid = torch.cartesian_prod(
        torch.linspace(-1.2, 1.2, 7, dtype=torch.float64),
        torch.linspace(-1.0, 1.0, 5, dtype=torch.float64),
        torch.tensor([1.0, 2.7, 4.0], dtype=torch.float64),
    )
    for radius in (1.0, 2.7, 4.0):
        rows = grid[grid[:, 2] == radius]
        camera = camera_from_angles(yaw=rows[:, 0], pitch=rows[:, 1], radius=radius, pivot=(0.0, 0.05, 0.2))
        yaw, pitch, recovered = angles_from_camera(camera)
        torch.testing.assert_close(yaw.double(), rows[:, 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(pitch.double(), rows[:, 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(recovered.double(), rows[:, 2], atol=1e-5, rtol=0)


def test_rotation_is_proper_and_looks_at_pivot():
    pivot = torch.tensor([0.05, -0.1, 0.2])
    camera = camera_from_angles(
        yaw=torch.linspace(-1.0, 1.0, 9), pitch=torch.linspace(0.8, -0.8, 9), radius=2.7, pivot=pivot
    )
    rotation = camera.cam2world[:, :3, :3]
    identity = torch.eye(3).expand(9, 3, 3)
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, identity, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(9), atol=1e-6, rtol=0)
    to_pivot = pivot - camera.position
    to_pivot = to_pivot / torch.linalg.vector_norm(to_pivot, dim=-1, keepdim=True)
    torch.testing.assert_close(rotation[:, :, 2], to_pivot, atol=1e-6, rtol=0)  # z axis = view direction
    torch.testing.assert_close(rotation[:, 1, 0], torch.zeros(9), atol=1e-7, rtol=0)  # no roll: x axis level
    assert bool((rotation[:, 1, 1] < 0).all())  # camera y points down in the world


def test_no_random_draws():
    state = torch.random.get_rng_state()
    camera_from_angles(yaw=torch.tensor([0.1, 0.2]), pitch=-0.1)
    look_at(1.0, 1.2, radius=2.7)
    conditioning_camera(batch=3, official_pi=3.14)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_batch_equals_per_item():
    yaws, pitches = [0.3, -0.2, 0.0, 0.9], [-0.1, 0.25, 0.0, 0.4]
    batched = camera_from_angles(yaw=yaws, pitch=torch.tensor(pitches), pivot=(0.0, 0.0, 0.2), fov_deg=18.837)
    assert len(batched) == 4
    singles = Camera.cat([camera_from_angles(yaw=y, pitch=p, fov_deg=18.837) for y, p in zip(yaws, pitches)])
    assert torch.equal(batched.to_label(), singles.to_label())
    broadcast = camera_from_angles(yaw=yaws, pitch=0.1)
    assert len(broadcast) == 4
    assert torch.equal(broadcast[2].to_label(), camera_from_angles(yaw=0.0, pitch=0.1).to_label())


def test_camera_container():
    camera = camera_from_angles(yaw=[0.1, 0.2, 0.3])
    assert len(camera) == 3
    assert len(camera[1]) == 1 and torch.equal(camera[1].cam2world, camera.cam2world[1:2])
    assert torch.equal(camera[-1].cam2world, camera.cam2world[2:3])
    assert len(camera[0:2]) == 2
    assert camera.position.shape == (3, 3)
    double = camera.to(dtype=torch.float64)
    assert double.cam2world.dtype == torch.float64 and double.intrinsics.dtype == torch.float64
    with pytest.raises(IndexError):
        camera[3]
    with pytest.raises(ValueError):
        Camera.cat([])
    with pytest.raises(ValueError, match="cam2world"):
        Camera(cam2world=torch.zeros(1, 3, 4), intrinsics=torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="batch"):
        Camera(cam2world=torch.zeros(2, 4, 4), intrinsics=torch.zeros(1, 3, 3))


def test_conditioning_camera():
    exact = conditioning_camera(pivot=(0.0, 0.0, 0.0))
    torch.testing.assert_close(exact.position[0], torch.tensor([0.0, 0.0, 2.7]), atol=1e-6, rtol=0)
    videos = conditioning_camera(official_pi=3.14, batch=2)
    assert len(videos) == 2
    # 3.14/2 is about 0.8 mrad short of frontal: the gen_videos camera sits slightly off-axis.
    assert 1e-3 < abs(videos.position[0, 0].item()) < 3e-3


def test_orbit_angles():
    h, v = orbit_angles(0, 360)
    assert h == 3.14 / 2 and v == 3.14 / 2 - 0.05 + 0.25
    h, v = orbit_angles(90, 360, official_pi=math.pi)
    assert h == pytest.approx(math.pi / 2 + 0.35) and v == pytest.approx(math.pi / 2 - 0.05, abs=1e-12)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: camera_from_angles(radius=0.0), "radius"),
        (lambda: camera_from_angles(radius=-1.0), "radius"),
        (lambda: camera_from_angles(focal=0.0), "focal"),
        (lambda: camera_from_angles(fov_deg=0.0), "fov_deg"),
        (lambda: camera_from_angles(fov_deg=180.0), "fov_deg"),
        (lambda: camera_from_angles(yaw=float("nan")), "yaw"),
        (lambda: camera_from_angles(pitch=torch.tensor([0.0, float("inf")])), "pitch"),
        (lambda: camera_from_angles(yaw=0.1, yaw_deg=5.0), "yaw_deg"),
        (lambda: camera_from_angles(pitch=0.0, pitch_deg=5.0), "pitch_deg"),
        (lambda: camera_from_angles(yaw=[0.1, 0.2], pitch=[0.1, 0.2, 0.3]), "yaw and pitch"),
        (lambda: camera_from_angles(yaw=torch.zeros(2, 2)), "yaw"),
        (lambda: camera_from_angles(pivot=(0.0, 0.0)), "pivot"),
        (lambda: look_at(1.0, 1.0, radius=float("inf")), "radius"),
        (lambda: fov_to_focal(-5.0), "fov_deg"),
        (lambda: focal_to_fov_deg(0.0), "focal"),
        (lambda: horizontal_fov_deg(-1.0), "focal"),
        (lambda: intrinsics_matrix(1.0, batch=0), "batch"),
        (lambda: conditioning_camera(batch=0), "batch"),
        (lambda: orbit_angles(0, 0), "num_frames"),
        (lambda: orbit_angles(float("nan"), 10), "frame"),
    ],
)
def test_bad_inputs_raise(call, name):
    with pytest.raises(ValueError, match=re.escape(name)):
        call()
