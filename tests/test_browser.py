"""A real browser on the app: Debian's Chromium driven by Python playwright, headless.

Generates with the tiny model, checks that the Model3D canvas shows a non-blank render and that the
rotation video plays, saves screenshots, and checks that closing the page ends the session (its
folder is removed). Screenshots go to ``$DEMO_TEST_ARTIFACTS`` if set, else ``tests/artifacts/``
(git-ignored). Skipped, saying why, without ``/usr/bin/chromium`` or the ``playwright`` package
(``.ci/run`` installs both; never run ``playwright install``: the Debian build is used).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
TIMEOUT_MS = 90_000

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements-dev.txt)")
pytest.importorskip("gradio", reason="the web app needs gradio (requirements.txt)")

from PIL import Image

from demo.ui.runtime import ModelProvider
from tests.test_app_e2e import running_app, wait_until


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("DEMO_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(ModelProvider.tiny(), tmp_path_factory.mktemp("sessions")) as served:
        yield served


@pytest.fixture(scope="module")
def chromium_browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def _assert_video_plays(page, selector: str) -> None:
    """The <video> at ``selector`` loads its mp4 and its time advances while it plays."""
    page.wait_for_function("(s) => { const v = document.querySelector(s); return v && v.readyState >= 2 && v.videoWidth > 0; }",
                           arg=selector)
    start, paused, error = page.evaluate("(s) => { const v = document.querySelector(s); return [v.currentTime, v.paused, v.error]; }",
                                         selector)
    assert error is None
    if paused:  # autoplay may be refused without a user gesture; playing it ourselves still proves playback
        page.evaluate("(s) => { const v = document.querySelector(s); v.muted = true; return v.play(); }", selector)
    page.wait_for_function(
        "([s, t]) => { const v = document.querySelector(s); return !v.paused && v.currentTime !== t; }", arg=[selector, start],
    )


def test_generate_shows_the_mesh_and_the_video_plays(app, chromium_browser, artifacts):
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url, wait_until="load")  # never "networkidle": the session heartbeat stays open
    page.wait_for_selector("#generate-btn")
    assert wait_until(lambda: len(app.sessions.sessions()) == 1, 20), "demo.load did not open a session folder"

    # The yaw slider's range follows the model: the tiny EG3D-style model shows the front half only.
    page.wait_for_function("() => document.querySelector('#generate-yaw input[type=range]')?.max === '90'")
    page.click("#generate-btn")
    page.wait_for_selector("#generate-image img")
    canvas = page.locator("#generate-mesh canvas")
    canvas.wait_for(state="visible")
    page.wait_for_timeout(2500)  # Babylon.js loads the .glb and draws a few frames
    shot = _pixels(canvas.screenshot(path=str(artifacts / "model3d_canvas.png")))
    background = np.median(shot.reshape(-1, 3), axis=0)
    differs = np.abs(shot - background).max(axis=2) > 40
    assert shot.std() > 5 and differs.mean() > 0.01, f"Model3D canvas looks blank (std {shot.std():.1f})"
    page.screenshot(path=str(artifacts / "app_generate.png"), full_page=True)

    page.get_by_role("tab", name="Rotate").click()
    page.click("#rotate-btn")
    _assert_video_plays(page, "#rotate-video video")
    page.screenshot(path=str(artifacts / "app_rotate.png"), full_page=True)

    page.close()
    assert wait_until(lambda: app.sessions.sessions() == []), "closing the page did not remove its session folder"


def test_photo_tab_reconstructs_an_uploaded_face_and_rotates_it(app, chromium_browser, artifacts, tmp_path):
    pytest.importorskip("mediapipe", reason="mediapipe==0.10.9 (requirements.txt) is needed for face alignment")
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url, wait_until="load")
    page.get_by_role("tab", name="Photo → 3D").click()
    # Before anything runs, the tab says how long each preset takes here (timed on page load for the tiny model).
    page.wait_for_function("() => document.querySelector('#photo-eta')?.textContent.includes('Time on this CPU')")
    assert "fast: 100 + 100 steps ≈" in page.locator("#photo-eta").inner_text()
    page.set_input_files("#photo-input input[type=file]", str(photo))
    page.wait_for_selector("#photo-input img")
    page.get_by_label("none").check()
    page.click("#photo-btn")
    page.wait_for_selector("#photo-crop img")  # the aligned crop is shown before the slow step
    page.wait_for_selector("#photo-image img")
    canvas = page.locator("#photo-mesh canvas")
    canvas.wait_for(state="visible")
    page.wait_for_timeout(2500)
    shot = _pixels(canvas.screenshot(path=str(artifacts / "photo_mesh_canvas.png")))
    assert shot.std() > 5, f"the photo tab's Model3D canvas looks blank (std {shot.std():.1f})"
    page.wait_for_selector("#photo-face-file a")  # the face file is offered for download
    page.screenshot(path=str(artifacts / "app_photo.png"), full_page=True)
    # "Rotate it" turns the reconstructed face here; the Rotate tab offers it as "my photo".
    page.click("#photo-rotate-btn")
    _assert_video_plays(page, "#photo-rotate-video video")
    page.get_by_role("tab", name="Rotate").click()
    page.locator("#rotate-source").get_by_label("my photo").check()
    page.click("#rotate-btn")
    _assert_video_plays(page, "#rotate-video video")
    page.screenshot(path=str(artifacts / "app_rotate_my_photo.png"), full_page=True)
    page.close()


def test_the_model_note_is_readable_on_a_phone(app, chromium_browser, artifacts):
    page = chromium_browser.new_page(viewport={"width": 390, "height": 844})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url, wait_until="load")
    note = page.locator("#model-status")
    note.wait_for(state="visible")
    assert note.bounding_box()["width"] > 300, note.bounding_box()
    page.screenshot(path=str(artifacts / "app_phone.png"), full_page=False)
    page.close()
