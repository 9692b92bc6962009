"""Trajectories, frame rendering, videos, multi-view sets and the video/multiview/interpolate commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from demo import media
from demo.cameras import Camera, angles_from_camera
from demo.cli import main
from demo.errors import InputError
from demo.tasks import video, views
from demo.tasks.sample import sample_images

pytestmark = pytest.mark.usefixtures("single_thread")


def test_official_orbit_cameras_match_gen_videos(eg3d_expected, tiny_generator):
    trajectory = video.official_orbit(360)
    labels = video.trajectory_cameras(tiny_generator, trajectory).to_label().numpy()
    assert np.abs(labels[eg3d_expected["video_frames"]] - eg3d_expected["video_c"]).max() <= 1e-6


def test_turntable_closes_exactly(tiny_generator):
    trajectory = video.turntable(24, pitch_deg=-10.0)
    labels = video.trajectory_cameras(tiny_generator, trajectory).to_label()
    assert torch.equal(labels[0], labels[-1])
    assert not torch.equal(labels[0], labels[12])
    yaw, _, _ = angles_from_camera(Camera.from_label(labels[:12]))
    assert np.all(np.diff(np.unwrap(yaw.numpy())) > 0), "the camera turns one way"


def test_keyframed_and_sweep_paths():
    path = video.keyframed([-30, 0, 30], [0, -10, 0], 5)
    assert np.allclose(path.yaw_deg, [-30, -15, 0, 15, 30]) and np.allclose(path.pitch_deg, [0, -5, -10, -5, 0])
    sweep = video.yaw_sweep(8, yaw_range_deg=20)
    assert np.isclose(np.abs(sweep.yaw_deg).max(), 20) and sweep.yaw_deg[0] == 0
    for bad in (lambda: video.keyframed([], [0], 5), lambda: video.keyframed([0, 1], [0, 1, 2], 5), lambda: video.yaw_sweep(0)):
        with pytest.raises(InputError):
            bad()


def test_view_range_checks(tiny_generator):
    views.check_view_range(tiny_generator, [-90, 90], [-80, 80])
    with pytest.raises(InputError, match="front of the head"):
        views.check_view_range(tiny_generator, [120], [0])
    with pytest.raises(InputError, match="Pitch"):
        views.check_view_range(tiny_generator, [0], [85])
    views.check_view_range(tiny_generator, [180], [0], full_turn=True)


def test_frames_of_one_identity_reuse_planes_and_match_single_renders(tiny_generator):
    ws = sample_images(tiny_generator, seeds=[2]).ws
    trajectory = video.keyframed([-20, 20], [0], 3)
    cameras = video.trajectory_cameras(tiny_generator, trajectory)
    calls = []
    original = tiny_generator.planes
    tiny_generator.planes = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        frames = video.render_frames(tiny_generator, ws, cameras, batch_size=2)
    finally:
        del tiny_generator.planes
    assert len(calls) == 1, "the backbone runs once per identity"
    assert frames.frames.shape == (3, 32, 32, 3) and frames.frames.dtype == np.uint8
    with torch.inference_mode():
        single = tiny_generator.synthesis(torch.from_numpy(ws), cameras[1], rng=torch.Generator().manual_seed(0))["image"]
    assert np.abs(frames.frames[1].astype(int) - media.image_to_uint8(single[0]).astype(int)).max() <= 1


@pytest.mark.parametrize(("mode", "size"), [("image", (32, 32)), ("image_raw", (16, 16)), ("depth", (16, 16)), ("image+depth", (32, 64))])
def test_render_modes(tiny_generator, mode, size):
    ws = sample_images(tiny_generator, seeds=[1]).ws
    cameras = video.trajectory_cameras(tiny_generator, video.yaw_sweep(4))
    frames = video.render_frames(tiny_generator, ws, cameras, mode=mode, depth_multiplier=2)
    assert frames.frames.shape == (4, *size, 3)


def test_depth_video_uses_one_range_for_all_frames():
    depth = np.stack([np.full((4, 4), 2.0), np.full((4, 4), 3.0)]).astype(np.float32)
    alpha = np.ones_like(depth)
    frames = video._compose("depth", torch.zeros(2, 3, 4, 4), depth, alpha)
    assert not np.array_equal(frames[0], frames[1]), "per-frame normalisation would make both frames the same colour"


def test_render_video_writes_requested_frames_and_fps(tmp_path, tiny_generator):
    ws = sample_images(tiny_generator, seeds=[0]).ws
    result = video.render_video(tiny_generator, ws, video.official_orbit(10), tmp_path / "orbit.mp4", fps=12, gif=True)
    info = media.read_video_info(result.path)
    assert (info.num_frames, info.width, info.height, info.fps) == (10, 32, 32, 12.0)
    assert (tmp_path / "orbit.gif").is_file() and np.load(tmp_path / "orbit_cameras.npy").shape == (10, 25)


def test_interpolation_video_endpoints_equal_renders_of_the_ends(tmp_path, tiny_generator):
    from demo.tasks.interpolate import interpolation_path

    ends = sample_images(tiny_generator, seeds=[3, 9]).ws
    path = interpolation_path(ends, 6, mode="slerp")
    cameras = video.trajectory_cameras(tiny_generator, video.static(6))
    frames = video.render_frames(tiny_generator, path, cameras)
    for index, end in ((0, 0), (-1, 1)):
        alone = video.render_frames(tiny_generator, ends[end : end + 1], cameras[:1])
        # Same latent and camera; only the backbone's batch size differs (float rounding).
        assert np.abs(frames.frames[index].astype(int) - alone.frames[0].astype(int)).max() <= 1


def test_multiview_cameras_round_trip(tmp_path, tiny_generator):
    ws = sample_images(tiny_generator, seeds=[4]).ws
    views = video.view_list([-30, 0, 30], [-10, 10])
    assert len(views) == 6
    result = video.render_multiview(tiny_generator, ws, views, tmp_path / "seed0004", stem="seed0004")
    data = json.loads(result.views_json.read_text())
    assert len(result.images) == 6 and len(data["views"]) == 6
    for record in data["views"]:
        assert (tmp_path / "seed0004" / record["file"]).is_file()
        yaw, pitch, radius = angles_from_camera(Camera.from_label(np.array(record["camera"], dtype=np.float32)))
        assert np.degrees(yaw.item()) == pytest.approx(record["yaw_deg"], abs=1e-3)
        assert np.degrees(pitch.item()) == pytest.approx(record["pitch_deg"], abs=1e-3)
    with pytest.raises(InputError):
        video.view_list([], [0])
    with pytest.raises(InputError):
        video.view_list([0, 1], [0], paired=True)


def test_cli_video_multiview_interpolate(tmp_path):
    out = tmp_path / "out"
    assert main(["video", "--model", "tiny", "--seeds", "0-1", "--frames", "6", "--fps", "10", "--trajectory", "yaw", "--mode", "image+depth", "--outdir", str(out)]) == 0
    info = media.read_video_info(out / "seed0001_yaw.mp4")
    assert (info.num_frames, info.width, info.fps) == (6, 64, 10.0)
    ws_dir = tmp_path / "latents"
    assert main(["generate", "--model", "tiny", "--seeds", "5,6", "--outdir", str(ws_dir)]) == 0
    for png in ws_dir.glob("*.png"):
        png.unlink()
    for extra in ws_dir.glob("*_z.npy"):
        extra.unlink()
    for extra in ws_dir.glob("*_camera.npy"):
        extra.unlink()
    assert main(["multiview", "--model", "tiny", "--inputs", str(ws_dir), "--yaws=-20,20", "--pitches", "0", "--outdir", str(out / "mv")]) == 0
    assert sorted(p.name for p in (out / "mv").iterdir()) == ["seed0005", "seed0006"]
    assert len(list((out / "mv" / "seed0005").glob("*.png"))) == 2
    assert main(["interpolate", "--model", "tiny", "--seeds", "1,2", "--frames", "5", "--strip", "3", "--outdir", str(out / "interp")]) == 0
    strip = media.load_png(out / "interp" / "interp_seed0001-seed0002_strip.png")
    assert strip.shape == (32, 96, 3)


@pytest.mark.parametrize(
    "argv",
    [
        ["video", "--frames", "0"],
        ["video", "--trajectory", "keyframes"],
        ["video", "--trajectory", "360"],
        ["multiview", "--yaws", "", "--pitches", "0"],
        ["multiview", "--yaws", "0,150"],
        ["interpolate", "--seeds", "1"],
    ],
)
def test_bad_video_input_is_a_clean_error(tmp_path, capsys, argv):
    code = main([argv[0], "--model", "tiny", *argv[1:], "--outdir", str(tmp_path / "o")])
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_wrong_latent_shape_is_a_clean_error(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 5), np.float32))
    assert main(["video", "--model", "tiny", "--ws", str(tmp_path / "bad.npy"), "--outdir", str(tmp_path / "o")]) == 2
    assert "has shape (1, 3, 5); expected (1, 8, 16)" in capsys.readouterr().err
