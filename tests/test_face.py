"""Faces as the currency of every task: files, checks, recipes, morph blending, and photo -> face through CLI and UI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from demo import cli, media
from demo.errors import InputError
from demo.tasks import face as face_task
from demo.tasks.face import Face, face_from_seed, face_trajectory, load_face, morph_faces, rotate_face
from demo.tasks.interpolate import keyframe_weights
from demo.tasks.invert import InversionSettings
from demo.tasks.sample import sample_images, ws_from_seeds
from demo.tasks.video import make_trajectory, trajectory_cameras
from demo.weights.store import build_tiny_generator, model_fingerprint

pytestmark = pytest.mark.usefixtures("single_thread")


def _photo_face(model, *, yaw_deg=20.0, pitch_deg=-10.0, scale=0.05, seed=0) -> Face:
    """A stand-in photo face: seed 3's ws, a camera off the front and a small random delta on every tensor."""
    generator = torch.Generator().manual_seed(seed)
    delta = {name: torch.randn(t.shape, generator=generator) * scale for name, t in model.state_dict().items()
             if t.dtype.is_floating_point and not name.startswith("backbone.mapping")}
    camera = face_task.view_camera(model, yaw_deg=yaw_deg, pitch_deg=pitch_deg).to_label()[0].numpy()
    return Face(ws=ws_from_seeds(model, [3]), name="me_3d", source={"kind": "photo"}, camera=camera,
                weight_delta=delta, base_fingerprint=model_fingerprint(model))


def test_face_file_round_trip_and_checks(tiny_generator, tmp_path):
    face = _photo_face(tiny_generator)
    path = face.save(tmp_path / "me_3d", delta_dtype=torch.float32)
    assert path.name == "me_3d.face.safetensors"
    loaded = load_face(path, tiny_generator)
    np.testing.assert_array_equal(loaded.ws, face.ws)
    np.testing.assert_array_equal(loaded.camera, face.camera)
    assert loaded.name == "me_3d" and loaded.source == {"kind": "photo"}
    for name, delta in face.weight_delta.items():
        assert torch.equal(loaded.weight_delta[name], delta)
    tuned = loaded.generator(tiny_generator)
    assert loaded.generator(tiny_generator) is tuned  # one tuned copy per face and base model
    assert tuned is not tiny_generator and model_fingerprint(tiny_generator) == face.base_fingerprint  # base unchanged
    seed_face = face_from_seed(tiny_generator, 7)
    assert seed_face.generator(tiny_generator) is tiny_generator and seed_face.source["seed"] == 7
    assert load_face(seed_face.save(tmp_path / "seed"), tiny_generator).camera is None
    # A delta belongs to its base weights; ws shapes to their model.
    with pytest.raises(InputError, match="tuned from another checkpoint"):
        loaded.generator(build_tiny_generator(seed=1))
    with pytest.raises(InputError, match="made with another model"):
        Face(ws=np.zeros((1, 3, 5), np.float32)).check_fits(tiny_generator)
    with pytest.raises(InputError, match="one identity"):
        Face(ws=np.zeros((2, 8, 16), np.float32))
    with pytest.raises(InputError, match="NaN"):
        Face(ws=np.full((1, 8, 16), np.nan, np.float32))
    assert Face(ws=np.zeros((1, 8, 16)), name="../../etc/passwd").name == "etc-passwd"


def test_a_photo_face_renders_from_its_own_view(tiny_generator, tmp_path):
    """render_face uses the face's camera and tuned weights; the yaw sweep's frame 0 is that same view."""
    face = _photo_face(tiny_generator)
    written = face_task.render_face(tiny_generator, face, tmp_path, shapes=False)
    image = media.load_png(tmp_path / "me_3d.png")
    np.testing.assert_array_equal(media.load_npy(tmp_path / "me_3d_camera.npy"), face.camera)
    assert written.manifest.name == "me_3d_generate.json"
    trajectory = face_trajectory(face, "yaw", 6, yaw_range_deg=30)
    assert trajectory.yaw_deg[0] == pytest.approx(20.0, abs=1e-4) and trajectory.pitch_deg[0] == pytest.approx(-10.0, abs=1e-4)
    np.testing.assert_allclose(trajectory_cameras(tiny_generator, trajectory).to_label()[0].numpy(), face.camera, atol=1e-5)
    video = rotate_face(tiny_generator, face, trajectory, tmp_path / "rot.mp4", frames_dir=tmp_path / "frames")
    assert video.num_frames == 6
    frame0 = media.load_png(tmp_path / "frames" / "frame0000.png")
    assert np.abs(frame0.astype(int) - image.astype(int)).max() <= 1
    untuned = sample_images(tiny_generator, ws=face.ws, camera=face.view(tiny_generator)).images
    assert np.abs(media.image_to_uint8(untuned[0]).astype(int) - image.astype(int)).max() > 1  # the delta mattered
    assert face_trajectory(face_from_seed(tiny_generator, 1), "yaw", 6).yaw_deg[0] == 0.0


def test_keyframe_weights_follow_the_interpolation_segments():
    weights = keyframe_weights(5, 3)
    np.testing.assert_allclose(weights, [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]])
    looped = keyframe_weights(4, 2, loop=True)
    np.testing.assert_allclose(looped, [[1, 0], [0.5, 0.5], [0, 1], [0.5, 0.5]])
    assert np.allclose(keyframe_weights(12, 3, mode="cubic-loop").sum(1), 1)


def test_morph_blends_tuned_weights_and_ends_exactly(tiny_generator, tmp_path):
    photo = _photo_face(tiny_generator)
    seed = face_from_seed(tiny_generator, 7)
    trajectory = make_trajectory("static", 5)
    result = morph_faces(tiny_generator, [photo, seed], 5, trajectory, tmp_path / "m.mp4", mode="linear",
                         frames_dir=tmp_path / "frames")
    np.testing.assert_array_equal(result.ws[0], photo.ws[0])
    np.testing.assert_array_equal(result.ws[-1], seed.ws[0])
    frames = {i: media.load_png(tmp_path / "frames" / f"frame{i:04d}.png").astype(int) for i in (0, 2, 4)}
    camera = trajectory_cameras(tiny_generator, make_trajectory("static", 1))

    def expected(model, ws):
        return media.image_to_uint8(sample_images(model, ws=ws, camera=camera).images[0]).astype(int)

    assert np.abs(frames[0] - expected(photo.generator(tiny_generator), photo.ws)).max() <= 1  # tuned weights at the start
    assert np.abs(frames[2] - expected(face_task.apply_delta(
        tiny_generator, {k: v * 0.5 for k, v in photo.weight_delta.items()}), result.ws[2:3])).max() <= 1  # half the delta
    assert np.abs(frames[4] - expected(tiny_generator, seed.ws)).max() <= 1  # the base model at the end
    assert model_fingerprint(tiny_generator) == photo.base_fingerprint


# --- photo -> face: one recipe for the CLI and the app -------------------------------------------


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) is needed for face alignment")
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    return media.save_png(folder / "astronaut.png", data.astronaut())


def test_cli_and_app_make_the_same_face_file(astronaut, tmp_path):
    pytest.importorskip("gradio", reason="the app needs gradio")
    from demo.ui.runtime import ModelProvider
    from demo.ui.tabs import photo

    assert cli.main(["invert", str(astronaut), "--model", "tiny", "--pti", "fast", "--w-steps", "2", "--pti-steps", "2",
                     "--outdir", str(tmp_path / "cli"), "--device", "cpu", "--precision", "auto"]) == 0
    models = ModelProvider.tiny()  # the app runs the device's fastest native precision: the CLI's --precision auto
    _, _, aligned = photo.align(str(astronaut))
    outputs = photo.reconstruct(models, "tiny", str(astronaut), "fast", aligned, out_dir=tmp_path / "app", steps=2)
    from_cli = (tmp_path / "cli" / "astronaut_3d.face.safetensors").read_bytes()
    assert Path(outputs[4]).read_bytes() == from_cli


def test_cli_photo_face_rotates_and_morphs(astronaut, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["invert", str(astronaut), "--model", "tiny", "--pti", "none", "--w-steps", "3",
                     "--outdir", str(out), "--device", "cpu"]) == 0
    face_file = out / "astronaut_3d.face.safetensors"
    assert cli.main(["video", "--model", "tiny", "--faces", str(face_file), "--trajectory", "yaw", "--frames", "6",
                     "--save-frames", "--outdir", str(out / "video"), "--device", "cpu"]) == 0
    frame0 = media.load_png(out / "video" / "astronaut_3d_yaw_frames" / "frame0000.png").astype(int)
    assert np.abs(frame0 - media.load_png(out / "astronaut_3d.png").astype(int)).max() <= 1
    assert cli.main(["interpolate", "--model", "tiny", "--faces", str(face_file), "--with-seeds", "7", "--frames", "6",
                     "--outdir", str(out / "morph"), "--device", "cpu"]) == 0
    (path_file,) = (out / "morph").glob("*_ws.npy")
    path = media.load_npy(path_file)
    model = build_tiny_generator()
    np.testing.assert_array_equal(path[0], load_face(face_file).ws[0])
    np.testing.assert_array_equal(path[-1], ws_from_seeds(model, [7], truncation_psi=0.7)[0])


def test_multiview_from_a_folder_of_photos_skips_the_faceless(astronaut, tmp_path, capsys):
    from skimage import data

    photos = tmp_path / "photos"
    media.save_png(photos / "astronaut.png", media.load_png(astronaut))
    media.save_png(photos / "coffee.png", data.coffee())
    out = tmp_path / "views"
    code = cli.main(["multiview", "--model", "tiny", "--photos", str(photos), "--pti", "none", "--w-steps", "2",
                     "--yaws=-20,0,20", "--pitches", "0,10", "--outdir", str(out), "--device", "cpu"])
    assert code == 0
    assert "skipped coffee.png" in capsys.readouterr().err
    folder = out / "astronaut_3d"
    assert len(list(folder.glob("astronaut_3d_yaw*.png"))) == 6
    views = json.loads((folder / "astronaut_3d_views.json").read_text())
    assert [(v["yaw_deg"], v["pitch_deg"]) for v in views["views"]][:3] == [(-20.0, 0.0), (0.0, 0.0), (20.0, 0.0)]
    assert all(len(v["camera"]) == 25 for v in views["views"])
    assert json.loads((folder / "astronaut_3d.face.json").read_text())["source"]["kind"] == "photo"
    assert (folder / "astronaut_3d.face.safetensors").is_file()
    summary = json.loads((out / "multiview.json").read_text())
    assert [Path(s["input"]).name for s in summary["skipped"]] == ["coffee.png"] and "No face" in summary["skipped"][0]["error"]
    # Only faceless photos: an error, status 2.
    only = tmp_path / "only"
    media.save_png(only / "coffee.png", data.coffee())
    assert cli.main(["multiview", "--model", "tiny", "--photos", str(only), "--outdir", str(tmp_path / "v2")]) == 2


def test_masked_inversion_ignores_the_background(tiny_generator):
    """With a foreground mask only the foreground counts: targets differing only outside it give the same result."""
    from demo.tasks.invert import invert

    generator = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1.0
    other = target.clone()
    other[..., :8, :] = -target[..., :8, :]  # another background
    settings = dict(w_steps=3, pti_steps=2, w_avg_samples=100)
    camera = face_task.view_camera(tiny_generator)
    first = invert(tiny_generator, target, camera, mask=mask, **settings)
    second = invert(tiny_generator, other, camera, mask=mask, **settings)
    np.testing.assert_array_equal(first.ws, second.ws)
    assert first.pti_losses == second.pti_losses
    unmasked = invert(tiny_generator, other, camera, **settings)
    assert unmasked.w_losses != second.w_losses


def test_panohead_photos_are_inverted_on_the_foreground(astronaut, tmp_path):
    from demo.tasks.photo import reconstruct_photo, save_reconstruction

    model = build_tiny_generator(panohead=True)
    reconstruction = reconstruct_photo(model, astronaut, "none", photo_name="astronaut")
    mask = reconstruction.mask
    assert mask is not None and mask.shape == (512, 512) and 0.2 < float(mask.mean()) < 0.95
    assert mask[:40].mean() < 0.5 < mask[200:300, 200:300].mean()  # sky above the head, the face in the middle
    assert reconstruction.record()["masked"]
    written = save_reconstruction(model, reconstruction, tmp_path)
    assert (tmp_path / "astronaut_3d_mask.png") in written
    quick = InversionSettings.from_preset("none", w_steps=1, w_avg_samples=100)
    assert reconstruct_photo(build_tiny_generator(), astronaut, quick).mask is None  # front-facing: the whole crop
