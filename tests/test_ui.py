"""The web app's layer: build_demo around the tiny model, handlers called as plain functions, errors.

Handlers are the module-level functions of ``demo/ui/tabs/*.py`` (the event closures only add the
session folder and the progress bar). Everything runs on the CPU with the tiny random model.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

gr = pytest.importorskip("gradio", reason="the web app needs gradio (requirements.txt)")
trimesh = pytest.importorskip("trimesh")

from demo import media
from demo.precision import resolve_precision
from demo.tasks.sample import ws_from_seeds
from demo.ui import build_demo, runtime
from demo.ui.runtime import PREVIEW_LABEL, ModelProvider
from demo.ui.tabs import generate, interpolate, video
from demo.weights import registry
from demo.weights.store import TINY_ID, build_tiny_generator, save_generator

pytestmark = pytest.mark.usefixtures("single_thread")

NAMED_ENDPOINTS = {"/generate", "/random_seed", "/rotate", "/interpolate", "/align_photo", "/photo_to_3d", "/multiview", "/edit"}


@pytest.fixture(scope="module")
def tiny_models() -> ModelProvider:
    return ModelProvider.tiny()


@pytest.fixture(scope="module")
def tiny_model(tiny_models):
    return tiny_models.get(TINY_ID)


@pytest.fixture(scope="module")
def generated(tiny_models, tmp_path_factory):
    """One Generate run (seed 3, yaw 20, pitch -10, mesh 64) shared by the checks below."""
    out = tmp_path_factory.mktemp("generate")
    return out, generate.generate(tiny_models, TINY_ID, 3, 0.7, 20.0, -10.0, 64, out_dir=out)


def _generate(models, out_dir, **changes):
    args = {"model_id": TINY_ID, "seed": 3, "truncation": 0.7, "yaw_deg": 0.0, "pitch_deg": 0.0, "mesh_resolution": 64}
    args.update(changes)
    return generate.generate(models, **args, out_dir=out_dir)


def _rotate(models, out_dir, **changes):
    args = {"model_id": TINY_ID, "source": "seed", "seed": 3, "truncation": 0.7, "face_file": None, "trajectory": "orbit",
            "frames": 6, "fps": 12,
                "mode": "image", "yaw_range_deg": 35, "pitch_deg": 0, "save_frames": False}
    args.update(changes)
    return video.rotate(models, **args, out_dir=out_dir)


def _interpolate(models, out_dir, **changes):
    args = {"model_id": TINY_ID, "seeds": "1, 2", "truncation": 0.7, "face_files": None, "interpolation": "slerp", "frames": 6,
                "fps": 12, "loop": False, "camera": "static"}
    args.update(changes)
    return interpolate.interpolate(models, **args, out_dir=out_dir)


# --- building -----------------------------------------------------------------------------------


def test_build_demo_builds_around_the_tiny_model(tiny_models, tmp_path):
    demo = build_demo(tiny_models, session_root=tmp_path / "sessions")
    assert isinstance(demo, gr.Blocks)
    config = demo.get_config_file()
    public = {"/" + dep["api_name"] for dep in config["dependencies"] if dep.get("api_visibility") == "public"}
    assert public == {name for name in NAMED_ENDPOINTS}
    labels = [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]
    assert labels == ["Generate", "Photo → 3D", "Rotate", "Multi-view", "Interpolate", "Edit", "About"]
    menu = next(block for block in demo.blocks.values() if isinstance(block, gr.Dropdown))
    assert menu.value == TINY_ID and PREVIEW_LABEL in menu.choices[0][0]
    # Rendering events share one concurrency group; the queue is bounded.
    renders = [fn for fn in demo.fns.values() if fn.api_name in ("generate", "rotate", "interpolate", "photo_to_3d", "multiview", "edit")]
    assert {fn.concurrency_id for fn in renders} == {"gpu"}
    assert demo._queue.max_size == 32
    eta = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "photo-eta")
    assert "fast: 100 + 100 steps" in eta.value  # each preset's steps, timed once the model is (see below)


def _startup_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("3D Face Studio:")]


def test_building_the_app_prints_one_line_naming_the_model(tiny_models, tmp_path, capsys):
    build_demo(tiny_models, session_root=tmp_path / "sessions")
    (line,) = _startup_lines(capsys.readouterr().out)
    # The app runs each device's fastest native precision (bf16 on CPUs with AVX-512 BF16/AMX), and says so.
    assert line == f"3D Face Studio: model {TINY_ID} ({PREVIEW_LABEL}), {resolve_precision('auto', 'cpu')} on cpu."


def test_python_app_py_prints_the_model_and_its_fallback(tmp_path):
    """`python app.py` (here: importing it, which builds the app) with an empty checkpoints folder: one console line
    naming the default model, where it would come from, the tiny fallback and how to provide the file."""
    import os
    import subprocess
    import sys

    env = {**os.environ, registry.CHECKPOINTS_DIR_ENV: str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    for key in ("SPACE_ID", "SPACES_ZERO_GPU"):  # locally nothing is loaded (or downloaded) at start-up
        env.pop(key, None)
    child = subprocess.run([sys.executable, "-c", "import app"], cwd=Path(__file__).resolve().parents[1], env=env,
                           capture_output=True, text=True, timeout=180, check=False)
    assert child.returncode == 0, child.stderr
    (line,) = _startup_lines(child.stdout)
    default = runtime.DEFAULT_MODEL_ID
    for needle in (f"model {default}", "not on this machine yet", "tiny random model", "results are noise",
                   str(tmp_path / "original" / registry.get_entry(default).file_name), "HF_ENDPOINT"):
        assert needle in line, (needle, line)


def test_random_seed_is_a_valid_seed():
    seeds = {generate.random_seed() for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= seed < 2**32 for seed in seeds)


# --- handlers -----------------------------------------------------------------------------------


def test_generate_returns_image_depth_mesh_and_downloads(generated, tiny_model):
    out, (image, depth, mesh_path, files) = generated
    size = tiny_model.config.image_resolution
    true_image = media.load_png(out / "seed0003.png")
    assert true_image.shape == (size, size, 3)  # the file as rendered, in the downloads
    # The page shows small images enlarged by a whole factor, nearest neighbour: each pixel an exact block.
    shown = media.load_png(image)
    factor = shown.shape[0] // size
    assert shown.shape == (size * factor, size * factor, 3) and size * factor >= runtime.DISPLAY_MIN_SIDE
    np.testing.assert_array_equal(shown, true_image.repeat(factor, axis=0).repeat(factor, axis=1))
    assert Path(image).name == f"seed0003_x{factor}.png" and image not in files
    shown_depth, true_depth = media.load_png(depth), media.load_png(out / "seed0003_depth_color.png")
    assert shown_depth.shape[2] == 3 and min(shown_depth.shape[:2]) >= runtime.DISPLAY_MIN_SIDE
    assert shown_depth.shape[0] % true_depth.shape[0] == 0 and depth not in files
    (mesh,) = trimesh.load(mesh_path, process=False).geometry.values()  # a .glb scene of one mesh, COLOR_0 kept
    colors = np.asarray(mesh.visual.vertex_attributes["color"])  # glTF COLOR_0: linear floats
    assert len(mesh.faces) > 0 and colors.shape == (len(mesh.vertices), 3) and colors.std() > 0
    names = {Path(path).name for path in files}
    for suffix in (".png", "_raw.png", "_depth.png", "_depth_color.png", "_ws.npy", "_camera.npy", ".glb", ".ply", ".obj",
                   ".face.safetensors"):
        assert f"seed0003{suffix}" in names
    assert all(Path(path).parent == out for path in files)
    ws = media.load_npy(out / "seed0003_ws.npy")
    assert ws.shape == (1, tiny_model.num_ws, tiny_model.w_dim)
    np.testing.assert_allclose(ws, ws_from_seeds(tiny_model, [3], truncation_psi=0.7), atol=1e-6)
    assert media.load_npy(out / "seed0003_camera.npy").shape == (25,)


def test_rotate_writes_video_cameras_and_frames(tiny_models, tmp_path):
    path, files = _rotate(tiny_models, tmp_path, frames=7, mode="image+depth", save_frames=True)
    info = media.read_video_info(path)
    assert info.num_frames == 7 and info.width == 2 * info.height
    archive = next(Path(f) for f in files if f.endswith(".zip"))
    with zipfile.ZipFile(archive) as zipped:
        assert len([name for name in zipped.namelist() if name.endswith(".png")]) == 7
    cameras = media.load_npy(next(f for f in files if f.endswith("_cameras.npy")))
    assert cameras.shape == (7, 25)


def test_rotate_from_an_uploaded_ws_file_matches_the_seed(tiny_models, generated, tmp_path):
    out, _ = generated
    from_seed, _ = _rotate(tiny_models, tmp_path / "seed", trajectory="yaw", frames=4)
    from_file, _ = _rotate(tiny_models, tmp_path / "file", trajectory="yaw", frames=4, seed=999, source="face file",
                           face_file=str(out / "seed0003_ws.npy"))
    np.testing.assert_array_equal(media.read_video_frames(from_seed), media.read_video_frames(from_file))


def test_interpolate_from_seeds_and_from_files(tiny_models, generated, tmp_path):
    path, strip, files = _interpolate(tiny_models, tmp_path / "seeds", seeds="1-3", frames=9, interpolation="linear")
    info = media.read_video_info(path)
    assert info.num_frames == 9
    true_strip = media.load_png(next(f for f in files if f.endswith("_strip.png")))
    assert true_strip.shape[:2] == (info.height, interpolate.STRIP_FRAMES * info.width)
    shown = media.load_png(strip)  # enlarged by a whole factor for the page
    assert shown.shape[0] >= runtime.DISPLAY_MIN_SIDE and shown.shape[0] * true_strip.shape[1] == shown.shape[1] * true_strip.shape[0]
    ws_path = media.load_npy(next(f for f in files if f.endswith("_ws.npy")))
    assert ws_path.shape[0] == 9

    out, _ = generated
    np.save(tmp_path / "other_ws.npy", ws_from_seeds(tiny_models.get(TINY_ID), [5], truncation_psi=0.7))
    path, _, files = _interpolate(tiny_models, tmp_path / "files", seeds="",
                                  face_files=[str(out / "seed0003_ws.npy"), str(tmp_path / "other_ws.npy")])
    assert media.read_video_info(path).num_frames == 6
    keyframes = media.load_npy(next(f for f in files if f.endswith("_ws.npy")))
    np.testing.assert_array_equal(keyframes[0], media.load_npy(out / "seed0003_ws.npy")[0])


# --- bad input gives a readable gr.Error --------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"yaw_deg": 120.0}, "keep yaw within +-90"),
        ({"pitch_deg": -85.0}, "Pitch must stay within +-80"),
        ({"seed": -1}, "Seed must be between 0 and 4294967295"),
        ({"seed": 1.5}, "Seed must be a whole number"),
        ({"seed": "many"}, "Seed must be a number"),
        ({"truncation": 3.0}, "Truncation must be between 0 and 1"),
        ({"mesh_resolution": 100}, "Mesh resolution must be one of 64, 128, 256"),
        ({"model_id": "eg3d-nope"}, "Unknown model 'eg3d-nope'"),
    ],
)
def test_generate_refuses_bad_input_readably(tiny_models, tmp_path, changes, expected):
    with pytest.raises(gr.Error) as raised:
        _generate(tiny_models, tmp_path, **changes)
    assert expected in raised.value.message


def test_garbage_and_misshapen_uploads_are_refused(tiny_models, tmp_path):
    garbage = tmp_path / "garbage_ws.npy"
    garbage.write_bytes(b"this is not a numpy file at all")
    wrong_shape = tmp_path / "wrong_ws.npy"
    np.save(wrong_shape, np.zeros((1, 3, 5), np.float32))
    pickled = tmp_path / "pickled_ws.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for path, expected in [(garbage, "Cannot read latent file"), (wrong_shape, "has shape (1, 3, 5)"),
                           (pickled, "pickled files are not accepted")]:
        with pytest.raises(gr.Error) as raised:
            _rotate(tiny_models, tmp_path, source="face file", face_file=str(path))
        assert expected in raised.value.message, raised.value.message
        with pytest.raises(gr.Error) as raised:
            _interpolate(tiny_models, tmp_path, face_files=[str(path)])
        assert expected in raised.value.message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"seeds": "abc"}, "Cannot read seeds"),
        ({"seeds": ""}, "Give seeds"),
        ({"seeds": "0-40"}, "at most 16 identities"),
        ({"seeds": "3"}, "needs at least 2 keyframes"),
        ({"seeds": "1,2,3", "interpolation": "cubic-loop", "frames": 10}, "must be a multiple of the number of keyframes"),
        ({"frames": 100000}, "Frames must be between 2 and 240"),
        ({"camera": "360"}, "Camera must be one of static, orbit, yaw"),
    ],
)
def test_interpolate_refuses_bad_input_readably(tiny_models, tmp_path, changes, expected):
    with pytest.raises(gr.Error) as raised:
        _interpolate(tiny_models, tmp_path, **changes)
    assert expected in raised.value.message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"trajectory": "sideways"}, "Trajectory must be one of orbit, yaw"),
        ({"mode": "xray"}, "Render mode must be one of"),
        ({"fps": 0}, "Frames per second must be between 1 and 60"),
        ({"trajectory": "yaw", "yaw_range_deg": 120}, "keep yaw within +-90"),
    ],
)
def test_rotate_refuses_bad_input_readably(tiny_models, tmp_path, changes, expected):
    with pytest.raises(gr.Error) as raised:
        _rotate(tiny_models, tmp_path, **changes)
    assert expected in raised.value.message


def test_unexpected_errors_are_logged_and_shown_briefly(tiny_models, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("internal detail the user should not see")

    monkeypatch.setattr(generate, "generate_to_folder", broken)
    with caplog.at_level(logging.ERROR, logger="demo.ui.runtime"), pytest.raises(gr.Error) as raised:
        _generate(tiny_models, tmp_path)
    assert raised.value.message == runtime.GENERIC_ERROR
    assert "internal detail" in caplog.text and "Traceback" in caplog.text


def test_out_of_memory_suggests_smaller_settings(tiny_models, tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(generate, "generate_to_folder", out_of_memory)
    with pytest.raises(gr.Error) as raised:
        _generate(tiny_models, tmp_path)
    assert "ran out of memory" in raised.value.message and "lower mesh resolution" in raised.value.message


def test_display_copies_enlarge_small_images_only(tmp_path):
    rng = np.random.default_rng(0)
    large = media.save_png(tmp_path / "face.png", rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    assert runtime.display_copy(large, tmp_path) == str(large)  # already fills a box: shown as it is
    depth = media.save_png(tmp_path / "face_depth_color.png", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    shown = runtime.display_copy(depth, tmp_path)
    assert Path(shown) == tmp_path / "display" / "face_depth_color_x2.png"
    np.testing.assert_array_equal(media.load_png(shown), media.load_png(depth).repeat(2, axis=0).repeat(2, axis=1))
    strip = media.save_png(tmp_path / "strip.png", rng.integers(0, 256, (32, 1024, 3), dtype=np.uint8))
    assert media.load_png(runtime.display_copy(strip, tmp_path)).shape == (128, 4096, 3)  # the long side is capped


# --- runtime pieces -----------------------------------------------------------------------------


def test_gpu_shim_is_a_no_op_off_spaces(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def render(x):
        return x + 1

    assert runtime.gpu(duration=30)(render) is render
    assert runtime.gpu(duration=lambda *args: 10)(render)(1) == 2


def test_progress_adapter_forwards_fraction_and_message():
    calls = []

    class FakeProgress:
        def __call__(self, fraction, desc=None):
            calls.append((fraction, desc))

    report = runtime.progress_fn(FakeProgress())
    report(0.5, "half way")
    assert calls == [(0.5, "half way")]
    assert runtime.progress_fn(None) is None


def test_session_folders_open_close_and_stay_inside_root(tmp_path):
    sessions = runtime.SessionFolders(tmp_path / "root")

    class Request:
        session_hash = "../../escape"

    sessions.open(Request())
    (folder,) = sessions.sessions()
    assert folder.parent == tmp_path / "root"
    run = sessions.run_dir(Request(), "generate")
    assert run.parent == folder and run.name.startswith("generate-")
    sessions.close(Request())
    assert sessions.sessions() == [] and (tmp_path / "root").is_dir()


@pytest.fixture
def empty_checkpoints(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    monkeypatch.setenv(registry.CHECKPOINTS_DIR_ENV, str(folder))
    return folder


def test_missing_checkpoint_falls_back_to_the_preview_and_says_how_to_provide_it(empty_checkpoints, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/3d-face-studio")  # on a Space the default is preloaded at build time
    models = ModelProvider(["eg3d-ffhq512-128"], default_id="eg3d-ffhq512-128", download=False, device="cpu")
    assert models.default_id == TINY_ID and TINY_ID in models._models
    for needle in ("eg3d-ffhq512-128 is not available", "ffhq512-128.pkl", str(empty_checkpoints / "original"),
                   registry.CHECKPOINTS_DIR_ENV, registry.HF_TOKEN_ENV, PREVIEW_LABEL):
        assert needle in models.notice, needle
    line = models.startup_line()  # the console says the same, on one line
    assert "\n" not in line and line.startswith("3D Face Studio: model 'eg3d-ffhq512-128' not available (no file at ")
    for needle in (str(empty_checkpoints / "original" / "ffhq512-128.pkl"), "downloads are switched off",
                   "using the tiny random model; results are noise", "HF_ENDPOINT", registry.CHECKPOINTS_DIR_ENV):
        assert needle in line, needle


def test_a_failed_download_at_start_up_is_named_on_the_console_line(empty_checkpoints, monkeypatch):
    from demo.errors import CheckpointError

    def offline(model_id, **kwargs):
        if model_id == TINY_ID:
            return build_tiny_generator()
        raise CheckpointError("Could not download eg3d-ffhq512-128 (ffhq512-128.pkl). Tried:\n"
                              "  - https://example.invalid/ffhq512-128.pkl: network error: no route (offline?)\n"
                              "  - https://mirror.invalid/ffhq512-128.pkl: no answer within 30 s\n"
                              "To provide it by hand: ...")

    monkeypatch.setattr(runtime, "load_generator", offline)
    models = ModelProvider(["eg3d-ffhq512-128"], default_id="eg3d-ffhq512-128", preload=True, device="cpu")
    line = models.startup_line()
    assert models.default_id == TINY_ID and "\n" not in line
    assert ("the download failed: https://example.invalid/ffhq512-128.pkl: network error: no route (offline?)) — "
            "using the tiny random model; results are noise.") in line


def test_locally_the_default_is_loaded_on_first_use(empty_checkpoints, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    models = ModelProvider(["eg3d-ffhq512-128"], default_id="eg3d-ffhq512-128", download=False, device="cpu")
    assert models.default_id == "eg3d-ffhq512-128" and models._models == {}
    assert "not on this machine yet" in models.notice and "downloads are switched off" in models.notice
    assert "'eg3d-ffhq512-128' not available" in models.startup_line() and "tiny random model" in models.startup_line()
    # First use: the guard step falls back to the preview model and explains.
    ctx = runtime.UIContext(models, runtime.SessionFolders(empty_checkpoints / "sessions"), None, None)
    with pytest.warns(UserWarning, match="tiny model runs"):  # gr.Warning outside a request
        model_id, message = ctx.load_model("eg3d-ffhq512-128")
    assert model_id == TINY_ID and "is not available" in message and PREVIEW_LABEL in message
    # A render asked for the missing model directly (the API) gets the library's message.
    with pytest.raises(gr.Error) as raised:
        _generate(models, empty_checkpoints / "out", model_id="eg3d-ffhq512-128")
    assert "eg3d-ffhq512-128 is not available locally" in raised.value.message
    assert 'model_id="tiny"' in raised.value.message  # API callers are told how to try the interface


def test_a_converted_checkpoint_is_preloaded_and_used(empty_checkpoints, monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "")  # not ZeroGPU: the gpu shim stays a no-op
    monkeypatch.setenv("SPACE_ID", "someone/3d-face-studio")
    save_generator(build_tiny_generator(seed=1), empty_checkpoints / "eg3d-ffhq512-128")
    models = ModelProvider(["eg3d-ffhq512-128"], default_id="eg3d-ffhq512-128", download=False, device="cpu")
    assert models.default_id == "eg3d-ffhq512-128" and models.notice == ""
    assert "eg3d-ffhq512-128" in models._models
    assert models.status("eg3d-ffhq512-128") == "**eg3d-ffhq512-128** is loaded."
    converted = empty_checkpoints / "eg3d-ffhq512-128"
    assert models.startup_line() == f"3D Face Studio: model eg3d-ffhq512-128 ({converted}), loaded, {resolve_precision('auto', 'cpu')} on cpu."


def test_tiny_panohead_is_offered_and_renders_the_back_of_the_head(tiny_models, tmp_path):
    from demo.weights.store import TINY_PANOHEAD_ID

    assert TINY_PANOHEAD_ID in tiny_models.model_ids
    image, _, mesh, _ = generate.generate(tiny_models, TINY_PANOHEAD_ID, 3, 0.7, 150.0, 0.0, 64, out_dir=tmp_path)
    assert Path(image).is_file() and Path(mesh).is_file()
    with pytest.raises(gr.Error, match="front of the head"):
        generate.generate(tiny_models, TINY_ID, 3, 0.7, 150.0, 0.0, 64, out_dir=tmp_path / "eg3d")


def test_the_encoder_is_loaded_once_per_model(tiny_models, monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "find_encoder", lambda model_id: calls.append(model_id) or None)
    models = ModelProvider.tiny()
    assert models.encoder(TINY_ID) is None and models.encoder(TINY_ID) is None
    assert calls == [TINY_ID]


def test_photo_face_flows_through_every_tab(tiny_models, tmp_path):
    """Photo -> 3D makes the session's face; Rotate, Multi-view and Interpolate take it as 'my photo'."""
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) is needed for face alignment")
    from skimage import data

    from demo.tasks.face import load_face
    from demo.ui.tabs import multiview, photo

    upload = media.save_png(tmp_path / "upload" / "astronaut.png", data.astronaut())
    crop, pose, aligned = photo.align(str(upload))
    assert crop.shape == (512, 512, 3) and "yaw" in pose
    assert not (tmp_path / "upload" / "astronaut_aligned.png").exists()  # nothing written beside the upload
    image, depth, mesh, files, face_file, current = photo.reconstruct(
        tiny_models, TINY_ID, str(upload), "fast", aligned, out_dir=tmp_path / "out", steps=2)
    assert current == face_file and face_file.endswith("astronaut_3d.face.safetensors")
    true_image = media.load_png(tmp_path / "out" / "astronaut_3d.png")
    assert true_image.shape == (32, 32, 3) and media.load_png(image).shape == (256, 256, 3)  # shown 8x larger
    assert Path(depth).is_file() and Path(mesh).suffix == ".glb"
    names = {Path(name).name for name in files}
    assert {"astronaut_3d_ws.npy", "astronaut_3d_aligned.png", "astronaut_3d.face.safetensors"} <= names
    face = load_face(face_file, tiny_models.get(TINY_ID))
    assert face.has_delta and face.source["kind"] == "photo" and face.source["settings"]["w_steps"] == 2

    # Rotate: the yaw sweep starts at the photo's own view, so frame 0 is the reconstruction image.
    _, rotate_files = _rotate(tiny_models, tmp_path / "rot", source="my photo", current_face=current,
                              trajectory="yaw", frames=6, save_frames=True)
    archive = next(Path(f) for f in rotate_files if f.endswith(".zip"))
    with zipfile.ZipFile(archive) as zipped:
        first = min(name for name in zipped.namelist() if name.endswith(".png"))
        zipped.extract(first, tmp_path / "frames")
    frame0 = media.load_png(tmp_path / "frames" / first).astype(int)
    assert np.abs(frame0 - true_image.astype(int)).max() <= 1
    with pytest.raises(gr.Error, match="no photo face in this session"):
        _rotate(tiny_models, tmp_path / "none", source="my photo", current_face=None)

    # Multi-view: a yaw x pitch grid of the photo's person, with cameras and the face's provenance.
    images, downloads = multiview.multiview(tiny_models, TINY_ID, "my photo", 0, 0.7, None, "-20, 0, 20", "0, 10", current,
                                            out_dir=tmp_path / "mv")
    assert len(images) == 6 and any(f.endswith(".zip") for f in downloads)
    views = json.loads(Path(next(f for f in downloads if f.endswith("_views.json"))).read_text())
    assert len(views["views"]) == 6 and len(views["views"][0]["camera"]) == 25

    # Interpolate: my photo -> seed 7, exact ws at both ends.
    _, _, morph_files = _interpolate(tiny_models, tmp_path / "morph", seeds="7", use_photo=True, current_face=current)
    ws_path = media.load_npy(next(f for f in morph_files if f.endswith("_ws.npy")))
    np.testing.assert_array_equal(ws_path[0], face.ws[0])
    np.testing.assert_array_equal(ws_path[-1], ws_from_seeds(tiny_models.get(TINY_ID), [7], truncation_psi=0.7)[0])
    coffee = media.save_png(tmp_path / "upload" / "coffee.png", data.coffee())
    with pytest.raises(gr.Error, match="No face"):
        photo.align(str(coffee))


def test_the_photo_tab_says_how_long_each_preset_takes_here(empty_checkpoints):
    from demo.tasks.invert import InversionSettings
    from demo.ui.tabs import photo

    presets = {name: InversionSettings.from_preset(name) for name in photo.PRESET_CHOICES}

    def steps(settings):
        return f"{settings.w_steps} + {settings.pti_steps} steps" if settings.pti_steps else f"{settings.w_steps} steps"

    models = ModelProvider(["eg3d-ffhq512-128"], default_id=TINY_ID, download=False, device="cpu", preload=False)
    # A model that is not loaded is never loaded (nor timed) for the estimate: the step counts are shown meanwhile.
    calls = []
    waiting = photo.preset_eta(models, "eg3d-ffhq512-128", "fast", measure=calls.append)
    assert calls == [] and "≈" not in waiting and "measured when the model is loaded" in waiting
    assert all(f"{name}: {steps(settings)}" in waiting for name, settings in presets.items())

    # The tiny model is timed on this device at once: a few real projection and tuning steps.
    measured = photo.preset_eta(models, TINY_ID, "balanced", measure=models.measure_step_times)
    times = models.step_times(TINY_ID)
    assert times.device == "CPU" and times.projection_s > 0 and times.tuning_s > 0
    assert f"Time on this CPU for {TINY_ID}" in measured
    assert f"**balanced: {steps(presets['balanced'])} ≈ " in measured  # the chosen preset stands out

    # The estimate is the step counts times the measured time per step: twice as slow a device, twice the time.
    for projection_s, tuning_s, device in [(0.5, 1.0, "CPU"), (1.0, 2.0, "GPU (Example)")]:
        models._step_times[TINY_ID] = runtime.StepTimes(projection_s, tuning_s, device)
        text = photo.preset_eta(models, TINY_ID, "fast")
        assert f"Time on this {device}" in text
        for name, settings in presets.items():
            seconds = settings.w_steps * projection_s + settings.pti_steps * tuning_s
            assert f"{name}: {steps(settings)} ≈ {photo._duration(seconds)}" in text, (name, text)
    assert "fast: 100 + 100 steps ≈ 5.0 min" in text  # 100 x 1 s + 100 x 2 s
    assert photo.preset_eta(models, TINY_ID, "fast", measure=calls.append) == text and calls == []  # measured once


def test_old_session_folders_are_swept(tmp_path):
    import os
    import time

    sessions = runtime.SessionFolders(tmp_path / "root", max_age_s=600)

    class Request:
        def __init__(self, name):
            self.session_hash = name

    old = sessions.run_dir(Request("raw-http-client"), "generate")
    fresh = sessions.run_dir(Request("browser"), "rotate")
    past = time.time() - 3600
    for path in (old, old.parent):
        os.utime(path, (past, past))
    assert sessions.sweep() == [old.parent]
    assert not old.parent.exists() and fresh.is_dir()


def test_a_face_without_a_surface_still_gets_its_image(tiny_models, tmp_path, monkeypatch):
    """A seed whose density never reaches the mesh level: image and depth come back, the mesh is None, with a warning."""
    import functools

    monkeypatch.setattr(generate, "generate_to_folder", functools.partial(generate.generate_to_folder, shape_level=1e9))
    with pytest.warns(UserWarning, match="no 3D surface"):
        image, depth, mesh, files = _generate(tiny_models, tmp_path)
    assert mesh is None and Path(image).is_file() and Path(depth).is_file()
    manifest = json.loads(Path(next(f for f in files if f.endswith("generate.json"))).read_text())
    assert "never crosses the iso-level" in manifest["mesh_errors"]["seed0003"]
    assert "--shape-level" not in manifest["mesh_errors"]["seed0003"]  # no CLI flag in the library's words


def test_the_yaw_slider_follows_the_model(tiny_models):
    from demo.weights.store import TINY_PANOHEAD_ID

    assert generate.yaw_limit(tiny_models, TINY_ID) == 90.0
    assert generate.yaw_limit(tiny_models, TINY_PANOHEAD_ID) == 180.0
    assert generate.yaw_limit(tiny_models, "eg3d-ffhqrebalanced512-128") == 90.0
    assert generate.yaw_limit(tiny_models, "panohead-easy-khair-180") == 180.0
    to_panohead = generate.yaw_slider_for(tiny_models, TINY_PANOHEAD_ID, 150.0)
    assert (to_panohead.minimum, to_panohead.maximum, to_panohead.value) == (-180.0, 180.0, 150.0)
    back = generate.yaw_slider_for(tiny_models, TINY_ID, 150.0)
    assert (back.minimum, back.maximum, back.value) == (-90.0, 90.0, 0.0)  # out of range for EG3D: reset
