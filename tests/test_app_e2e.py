"""End to end: the app on 127.0.0.1 around the tiny model, every named endpoint called via gradio_client.

Checks the returned files (image size, a mesh that loads with vertex colours, video frame counts),
that bad input comes back as a readable error while the app keeps serving, that 8 concurrent
clients each get their own results, and that session folders are removed when sessions end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the web app needs gradio (requirements.txt)")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client comes with gradio")
trimesh = pytest.importorskip("trimesh")

import torch
from gradio_client import Client, handle_file

from demo import media
from demo.tasks.sample import ws_from_seeds
from demo.ui import LAUNCH_OPTIONS, build_demo, runtime
from demo.ui.runtime import ModelProvider
from demo.weights.store import TINY_ID

NAMED_ENDPOINTS = {"/generate", "/random_seed", "/rotate", "/interpolate", "/align_photo", "/photo_to_3d", "/multiview", "/edit"}
GENERATE = {"model_id": TINY_ID, "truncation": 0.7, "yaw_deg": 15.0, "pitch_deg": -5.0, "mesh_resolution": 64}
SESSION_END_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_app(models: ModelProvider, session_root: Path, *, heartbeat_s: float = 0.3) -> Iterator[SimpleNamespace]:
    """The app served on 127.0.0.1 (a free port) from a thread of this process; closed afterwards.

    A short heartbeat interval makes Gradio notice closed sessions (and run ``demo.unload``) within
    a second instead of 15. Torch runs single-threaded: faster for the tiny model on 2 cores.
    """
    saved_env = {key: os.environ.get(key) for key in ("GRADIO_ANALYTICS_ENABLED", "GRADIO_HEARTBEAT_INTERVAL")}
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", GRADIO_HEARTBEAT_INTERVAL=str(heartbeat_s))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    demo = build_demo(models, session_root=session_root)
    try:
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_OPTIONS)
        yield SimpleNamespace(demo=demo, url=f"http://127.0.0.1:{port}/", sessions=runtime.SessionFolders(session_root))
    finally:
        demo.close()
        torch.set_num_threads(threads)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wait_until(condition, timeout_s: float = SESSION_END_TIMEOUT_S, step_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


@pytest.fixture(scope="module")
def tiny_models() -> ModelProvider:
    return ModelProvider.tiny()


@pytest.fixture(scope="module")
def app(tiny_models, tmp_path_factory):
    with running_app(tiny_models, tmp_path_factory.mktemp("sessions")) as served:
        yield served


@pytest.fixture
def client(app, tmp_path):
    connected = Client(app.url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)
    yield connected
    connected.close()


def _by_suffix(paths, suffix: str) -> Path:
    (match,) = [Path(path) for path in paths if str(path).endswith(suffix)]
    return match


# --- every endpoint -----------------------------------------------------------------------------


def test_the_named_endpoints_are_exactly_the_actions(client):
    assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == NAMED_ENDPOINTS


def test_optional_uploads_are_optional_in_the_api(client, app):
    """The face-file uploads (use a saved face instead of a seed) may be left out; only the photo is required."""
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    required = {(name, parameter["parameter_name"]) for name, endpoint in endpoints.items()
                for parameter in endpoint["parameters"] if not parameter["parameter_has_default"]}
    assert required == {("/align_photo", "photo"), ("/photo_to_3d", "photo")}
    for name, upload in [("/rotate", "face_file"), ("/multiview", "face_file"), ("/edit", "face_file"),
                         ("/interpolate", "face_files")]:
        (parameter,) = [p for p in endpoints[name]["parameters"] if p["parameter_name"] == upload]
        assert parameter["parameter_has_default"] and parameter["parameter_default"] is None, (name, parameter)
    # Left out, the seed is used; the handler still gets the request (its session's folder).
    video, _ = client.predict(model_id=TINY_ID, source="seed", seed=3, frames=8, api_name="/rotate")
    assert media.read_video_info(video).num_frames == 8
    assert any(app.sessions.path(SimpleNamespace(session_hash=client.session_hash)).glob("rotate-*"))


def test_random_seed(client):
    seed = client.predict(api_name="/random_seed")
    assert isinstance(seed, (int, float)) and 0 <= seed < 2**32 and seed == int(seed)


def test_generate(client, tiny_models):
    image, depth, mesh_path, files = client.predict(seed=11, **GENERATE, api_name="/generate")
    size = tiny_models.get(TINY_ID).config.image_resolution
    true_image = media.load_png(_by_suffix(files, "/seed0011.png"))
    assert true_image.shape == (size, size, 3)  # the files hold the render at its true size
    # The image output is for display: enlarged by a whole factor (named for it), nearest neighbour.
    shown = media.load_png(image)
    factor = shown.shape[0] // size
    assert Path(image).name == f"seed0011_x{factor}.png" and factor * size >= runtime.DISPLAY_MIN_SIDE
    np.testing.assert_array_equal(shown, true_image.repeat(factor, axis=0).repeat(factor, axis=1))
    assert media.load_png(depth).ndim == 3
    (mesh,) = trimesh.load(mesh_path, process=False).geometry.values()  # a .glb scene of one mesh, COLOR_0 kept
    colors = np.asarray(mesh.visual.vertex_attributes["color"])[:, :3]  # glTF COLOR_0: linear floats
    assert len(mesh.faces) > 0 and colors.shape == (len(mesh.vertices), 3) and colors.std() > 0
    names = {Path(path).name for path in files}
    assert {"seed0011.png", "seed0011_depth.png", "seed0011.glb", "seed0011.ply", "seed0011.obj",
            "seed0011_ws.npy", "seed0011_camera.npy"} <= names
    assert trimesh.load(_by_suffix(files, ".ply"), process=False).visual.kind == "vertex"
    assert media.load_npy(_by_suffix(files, "_camera.npy")).shape == (25,)


def test_rotate(client):
    video, files = client.predict(model_id=TINY_ID, source="seed", seed=11, truncation=0.7, face_file=None, trajectory="yaw",
                                  frames=8, fps=16, mode="image+depth", yaw_range_deg=30, pitch_deg=5,
                                  save_frames=True, api_name="/rotate")
    info = media.read_video_info(video)
    assert (info.num_frames, info.fps, info.codec) == (8, 16.0, "h264")
    with zipfile.ZipFile(_by_suffix(files, ".zip")) as archive:
        assert sorted(archive.namelist()) == [f"frame{index:04d}.png" for index in range(8)]


def test_interpolate_from_uploaded_latents(client, tiny_models, tmp_path):
    model = tiny_models.get(TINY_ID)
    for seed in (4, 9):
        np.save(tmp_path / f"seed{seed:04d}_ws.npy", ws_from_seeds(model, [seed], truncation_psi=0.7))
    video, strip, files = client.predict(
        model_id=TINY_ID, seeds="", truncation=0.7,
        face_files=[handle_file(str(tmp_path / "seed0004_ws.npy")), handle_file(str(tmp_path / "seed0009_ws.npy"))],
        interpolation="linear", frames=10, fps=20, loop=False, camera="orbit", api_name="/interpolate")
    info = media.read_video_info(video)
    assert info.num_frames == 10
    assert media.load_png(_by_suffix(files, "_strip.png")).shape[1] == 8 * info.width  # true size in the files
    shown = media.load_png(strip)  # enlarged by a whole factor for the page
    assert shown.shape[0] >= runtime.DISPLAY_MIN_SIDE and shown.shape[1] == 8 * info.width * shown.shape[0] // info.height
    path = media.load_npy(_by_suffix(files, "_ws.npy"))
    np.testing.assert_array_equal(path[0], np.load(tmp_path / "seed0004_ws.npy")[0])
    np.testing.assert_array_equal(path[-1], np.load(tmp_path / "seed0009_ws.npy")[0])


def test_a_photo_face_chains_through_rotate_and_interpolate(client, tiny_models, tmp_path):
    """/photo_to_3d returns a face file; /rotate and /interpolate take it (the API side of 'my photo')."""
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) is needed for face alignment")
    from skimage import data

    from demo.tasks.face import load_face

    photo = media.save_png(tmp_path / "astronaut.png", data.astronaut())
    image, _, mesh_path, files, face_file = client.predict(
        model_id=TINY_ID, photo=handle_file(str(photo)), preset="none", api_name="/photo_to_3d")
    assert Path(face_file).name == "astronaut_3d.face.safetensors" and Path(mesh_path).suffix == ".glb"
    model = tiny_models.get(TINY_ID)
    face = load_face(face_file, model)
    assert face.camera is not None and face.source["photo"] == "astronaut"

    # The yaw sweep starts at the photo's view: frame 0 is the reconstruction, up to the mp4's own coding error.
    video, rotate_files = client.predict(
        model_id=TINY_ID, source="face file", seed=0, truncation=0.7, face_file=handle_file(face_file), trajectory="yaw",
        frames=8, fps=16, mode="image", yaw_range_deg=30, pitch_deg=0, save_frames=True, api_name="/rotate")
    with zipfile.ZipFile(_by_suffix(rotate_files, ".zip")) as archive:
        archive.extract("frame0000.png", tmp_path / "frames")
    lossless = media.load_png(tmp_path / "frames" / "frame0000.png").astype(int)
    rendered = media.load_png(_by_suffix(files, "/astronaut_3d.png")).astype(int)  # true size; `image` is enlarged
    assert media.load_png(image).shape == (256, 256, 3) and Path(image).name == "astronaut_3d_x8.png"
    assert np.abs(lossless - rendered).max() <= 1
    decoded = media.read_video_frames(video)[0].astype(int)
    codec_error = np.abs(decoded - lossless)
    assert (np.abs(decoded - rendered) <= codec_error + 1).all()  # the mp4's frame 0 is that image, as coded

    # Photo face -> seed 7: exact ws at both ends.
    _, _, morph_files = client.predict(
        model_id=TINY_ID, seeds="7", truncation=0.7, face_files=[handle_file(face_file)], interpolation="slerp",
        frames=8, fps=12, loop=False, camera="static", api_name="/interpolate")
    path = media.load_npy(_by_suffix(morph_files, "_ws.npy"))
    np.testing.assert_array_equal(path[0], face.ws[0])
    np.testing.assert_array_equal(path[-1], ws_from_seeds(model, [7], truncation_psi=0.7)[0])

    # Multi-view of the same face file.
    gallery, mv_files = client.predict(
        model_id=TINY_ID, source="face file", seed=0, truncation=0.7, face_file=handle_file(face_file), yaws="-20, 20",
        pitches="0", api_name="/multiview")
    assert len(gallery) == 2 and any(str(f).endswith("_views.json") for f in mv_files)

    # Edit the photo face along the strongest SeFa direction: a new face file that keeps the tuned weights.
    edited_image, edited_file = client.predict(
        model_id=TINY_ID, source="face file", seed=0, truncation=0.7, face_file=handle_file(face_file), method="sefa",
        layers="coarse", alpha0=2.0, alpha1=0, alpha2=0, alpha3=0, alpha4=0, api_name="/edit")
    edited = load_face(edited_file, model)
    assert edited.has_delta == face.has_delta and np.array_equal(edited.camera, face.camera)
    assert not np.array_equal(edited.ws, face.ws) and media.load_png(edited_image).shape == (256, 256, 3)  # shown 8x


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_huge_photo_uploads_are_refused_from_the_header(client, app, tmp_path):
    """Eight 13000x13000 PNGs at once (a few hundred KB each, 169 megapixels): each is refused clearly, and
    the server (this process) grows by far less than one decoded copy would take."""
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) is needed for face alignment")
    import threading

    from PIL import Image

    bomb = tmp_path / "huge.png"
    Image.new("L", (13000, 13000), 128).save(bomb)
    assert bomb.stat().st_size < 1_000_000
    clients = [Client(app.url, verbose=False, download_files=False, analytics_enabled=False) for _ in range(8)]
    baseline, peak, done = _rss_bytes(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        def upload(connected):
            with pytest.raises(Exception) as raised:
                connected.predict(photo=handle_file(str(bomb)), api_name="/align_photo")
            return str(raised.value)

        with ThreadPoolExecutor(8) as pool:
            messages = list(pool.map(upload, clients))
    finally:
        done.set()
        watcher.join()
        for connected in clients:
            connected.close()
    assert all("too large" in message and "169.0 megapixels" in message for message in messages), messages
    assert peak[0] - baseline < 1_000_000_000, f"RSS grew by {(peak[0] - baseline) / 1e6:.0f} MB"


def test_a_16_bit_grey_photo_aligns_through_the_app_as_through_the_library(client, tmp_path):
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) is needed for face alignment")
    from PIL import Image
    from skimage import data

    from demo.tasks.faces import align_face

    grey = (np.asarray(Image.fromarray(data.astronaut()).convert("L"), dtype=np.uint16) * 257)
    photo = tmp_path / "grey16.png"
    Image.fromarray(grey).save(photo)  # mode I;16
    assert Image.open(photo).mode == "I;16"
    crop, pose = client.predict(photo=handle_file(str(photo)), api_name="/align_photo")
    face = align_face(photo)
    assert f"yaw {face.yaw_deg:+.1f}°, pitch {face.pitch_deg:+.1f}°" in pose
    np.testing.assert_array_equal(media.load_png(crop), face.image)


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_gives_readable_errors_and_the_app_keeps_serving(client, tmp_path):
    garbage = tmp_path / "garbage_ws.npy"
    garbage.write_bytes(os.urandom(200))
    misshapen = tmp_path / "misshapen_ws.npy"
    np.save(misshapen, np.zeros((2, 3), np.float32))
    rotate = {"model_id": TINY_ID, "source": "face file", "seed": 1, "truncation": 0.7, "trajectory": "orbit", "frames": 8,
              "fps": 16, "mode": "image",
                  "yaw_range_deg": 30, "pitch_deg": 0, "save_frames": False, "api_name": "/rotate"}
    cases = [
        (lambda: client.predict(seed=1, **{**GENERATE, "yaw_deg": 150.0}, api_name="/generate"),
         "front of the head"),
        (lambda: client.predict(seed=1, **{**GENERATE, "mesh_resolution": 100}, api_name="/generate"),
         "not in the list of choices"),
        (lambda: client.predict(seed=-5, **GENERATE, api_name="/generate"), "less than minimum value 0"),
        (lambda: client.predict(seed="abc", **GENERATE, api_name="/generate"), "Expected"),
        (lambda: client.predict(seed=1, **{**GENERATE, "truncation": "0.7x"}, api_name="/generate"), "'0.7x'"),
        (lambda: client.predict(face_file=handle_file(str(garbage)), **rotate), "Cannot read latent file"),
        (lambda: client.predict(face_file=handle_file(str(misshapen)), **rotate), "has shape (1, 2, 3)"),
        (lambda: client.predict(model_id=TINY_ID, seeds="7", truncation=0.7, face_files=None, interpolation="slerp",
                                frames=8, fps=16, loop=False, camera="static", api_name="/interpolate"),
         "needs at least 2 keyframes"),
    ]
    for call, expected in cases:
        with pytest.raises(Exception) as raised:
            call()
        assert type(raised.value).__name__ == "AppError" and expected in str(raised.value), str(raised.value)
    assert client.predict(seed=2, **GENERATE, api_name="/generate")[0].endswith("seed0002_x8.png")


# --- many clients, sessions ---------------------------------------------------------------------


def test_eight_concurrent_clients_get_their_own_results_and_their_folders_go(app, tiny_models, tmp_path):
    seeds = [100 + index for index in range(8)]
    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(
            lambda index: Client(app.url, verbose=False, download_files=str(tmp_path / f"client{index}"),
                                 analytics_enabled=False),
            range(8),
        ))
        try:
            results = list(pool.map(
                lambda pair: pair[0].predict(seed=pair[1], **GENERATE, api_name="/generate"), zip(clients, seeds)
            ))
            folders = [app.sessions.path(SimpleNamespace(session_hash=c.session_hash)) for c in clients]
            assert all(folder.is_dir() for folder in folders)
        finally:
            for connected in clients:
                connected.close()
    model = tiny_models.get(TINY_ID)
    for seed, (image, _, _, files) in zip(seeds, results, strict=True):
        assert Path(image).name == f"seed{seed:04d}_x8.png"
        ws = media.load_npy(_by_suffix(files, "_ws.npy"))
        np.testing.assert_allclose(ws, ws_from_seeds(model, [seed], truncation_psi=0.7), atol=1e-6)
    assert wait_until(lambda: not any(folder.exists() for folder in folders)), [f for f in folders if f.exists()]


def test_ended_sessions_leave_no_files(tiny_models, tmp_path):
    """Our session folder goes when the client leaves; Gradio's cached copies when the server stops."""
    root = tmp_path / "sessions"
    with running_app(tiny_models, root) as served:
        connected = Client(served.url, verbose=False, download_files=False, analytics_enabled=False)
        _, _, _, files = connected.predict(seed=5, **GENERATE, api_name="/generate")
        cached = [Path(item["path"]) for item in files]
        assert cached and all(path.is_file() for path in cached)
        folder = served.sessions.path(SimpleNamespace(session_hash=connected.session_hash))
        assert folder.is_dir()
        connected.close()
        assert wait_until(lambda: not folder.exists())
        assert served.sessions.sessions() == []
    assert not [path for path in cached if path.exists()]


def test_raw_http_clients_and_sigterm_leave_no_session_files(tmp_path):
    """The app as its own process: 8 raw-HTTP clients (/gradio_api/call/...), then SIGTERM: nothing of ours stays."""
    import json as json_module
    import signal
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(temp / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from demo.ui import build_demo\nfrom demo.ui.runtime import ModelProvider\n"
        f"build_demo(ModelProvider.tiny()).launch(server_name='127.0.0.1', server_port={port}, quiet=True)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parents[1],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return urllib.request.urlopen(url + "/", timeout=2).status == 200
            except OSError:
                return False

        assert wait_until(up, 60), "the app did not start"

        def call(seed: int) -> str:
            body = json_module.dumps({"data": [TINY_ID, seed, 0.7, 0.0, 0.0, 64]}).encode()
            request = urllib.request.Request(url + "/gradio_api/call/generate", data=body,
                                             headers={"Content-Type": "application/json"})
            event = json_module.loads(urllib.request.urlopen(request, timeout=60).read())["event_id"]
            return urllib.request.urlopen(f"{url}/gradio_api/call/generate/{event}", timeout=120).read().decode()

        with ThreadPoolExecutor(8) as pool:
            streams = list(pool.map(call, range(20, 28)))
        assert all("event: complete" in stream and f"seed{seed:04d}.png" in stream
                   for seed, stream in zip(range(20, 28), streams, strict=True)), streams[0][:500]
        ours = temp / "3d-face-studio"
        assert any(ours.rglob("*.png")), "the calls should have written into session folders"
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        assert server.returncode == -signal.SIGTERM
        assert not [path for path in ours.rglob("*") if path.is_file()] and not any(ours.glob("sessions-*"))
        cached = [path for path in (temp / "gradio").rglob("*") if path.is_file()] if (temp / "gradio").exists() else []
        assert not cached, cached[:5]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
