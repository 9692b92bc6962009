"""Semantic edits: SeFa and GANSpace directions from the tiny model, user direction files, edits of faces, CLI and app."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from demo import cli, media
from demo.errors import InputError
from demo.tasks import edit
from demo.tasks.face import Face, face_from_seed
from demo.weights.store import model_fingerprint

pytestmark = pytest.mark.usefixtures("single_thread")


def test_sefa_directions_are_the_eigenvectors_of_the_style_weights_gram_matrix(tiny_generator):
    layers = edit.resolve_layers(tiny_generator, "all")
    directions = edit.sefa_directions(tiny_generator, layers)
    # The same matrix built here from the state dict: every modulated conv's affine weight with its 1/sqrt(w_dim)
    # gain, rows normalised, stacked; numpy's eigen-decomposition of A^T A.
    state = tiny_generator.state_dict()
    names = sorted(name for name in state if name.startswith("backbone.synthesis.") and ".conv" in name
                   and name.endswith("affine.weight"))
    matrix = np.concatenate([state[name].double().numpy() / np.sqrt(tiny_generator.w_dim) for name in names])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    values, vectors = np.linalg.eig(matrix.T @ matrix)
    order = np.argsort(values.real)[::-1]
    np.testing.assert_allclose(directions.strengths, values.real[order], rtol=1e-5)
    for k in range(tiny_generator.w_dim):
        assert abs(float(directions.vectors[k] @ vectors[:, order[k]].real)) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(directions.vectors @ directions.vectors.T, np.eye(len(directions)), atol=1e-5)
    coarse = edit.sefa_directions(tiny_generator, "coarse")
    assert coarse.layers == edit.layer_groups(tiny_generator)["coarse"]
    assert not np.allclose(np.abs(coarse.vectors[0]), np.abs(directions.vectors[0]))  # other layers, other directions


def test_ganspace_directions_are_orthonormal_principal_components(tiny_generator):
    directions = edit.ganspace_directions(tiny_generator, samples=3000)
    np.testing.assert_allclose(directions.vectors @ directions.vectors.T, np.eye(len(directions)), atol=1e-5)
    assert (np.diff(directions.strengths) <= 1e-6).all()  # strongest first
    np.testing.assert_allclose(directions.scales, np.sqrt(directions.strengths), rtol=1e-5)
    # The first component carries the most variance of sampled ws.
    w = edit._sample_w(tiny_generator, 3000, edit.PCA_SEED)
    projected = (w - w.mean(0)) @ directions.vectors.T
    assert projected[:, 0].var() >= projected[:, 1].var() >= projected[:, -1].var()


def test_edits_move_only_the_chosen_layers_and_zero_is_the_identity(tiny_generator):
    face = face_from_seed(tiny_generator, 5)
    face = Face(ws=face.ws, name="me", camera=np.arange(25, dtype=np.float32) * 0 + 1, source=face.source,
                weight_delta={"decoder.net.0.bias": torch.ones(64)}, base_fingerprint=face.base_fingerprint)
    directions = edit.directions_for(tiny_generator, "sefa")
    same = edit.edit_face(face, directions, [0.0, 0.0])
    np.testing.assert_array_equal(same.ws, face.ws)
    assert same.weight_delta is face.weight_delta and same.source == face.source
    layers = (1, 2, 3)
    moved = edit.edit_face(face, directions, {0: 2.0, 3: -1.0}, layers=layers)
    changed = np.abs(moved.ws - face.ws).max(axis=2)[0] > 0
    assert changed.tolist() == [index in layers for index in range(tiny_generator.num_ws)]
    expected = 2.0 * directions.scales[0] * directions.vectors[0] - 1.0 * directions.scales[3] * directions.vectors[3]
    np.testing.assert_allclose(moved.ws[0, 2] - face.ws[0, 2], expected, atol=1e-5)
    assert moved.weight_delta is face.weight_delta and np.array_equal(moved.camera, face.camera)
    assert moved.source["edits"][0]["alphas"] == {"0": 2.0, "3": -1.0}
    with pytest.raises(InputError, match="Direction 99 does not exist"):
        edit.edit_face(face, directions, {99: 1.0})
    with pytest.raises(InputError, match="Layer indices must be from 0 to 7"):
        edit.resolve_layers(tiny_generator, "0,8")


def test_user_direction_files(tiny_generator, tmp_path):
    face = face_from_seed(tiny_generator, 5)
    vector = np.random.RandomState(0).randn(1, tiny_generator.w_dim)  # InterFaceGAN writes (1, w_dim)
    np.save(tmp_path / "smile.npy", vector)
    direction = edit.load_direction(tmp_path / "smile.npy", tiny_generator)
    moved = edit.edit_face(face, direction, [0.5])
    np.testing.assert_allclose(moved.ws - face.ws, np.broadcast_to(0.5 * vector, face.ws.shape), atol=1e-5)
    per_layer = np.zeros((tiny_generator.num_ws, tiny_generator.w_dim))
    per_layer[2] = 1.0
    np.save(tmp_path / "layered.npy", per_layer)
    layered = edit.edit_face(face, edit.load_direction(tmp_path / "layered.npy", tiny_generator), [2.0])
    np.testing.assert_allclose(layered.ws - face.ws, 2.0 * per_layer[None], atol=1e-6)
    np.save(tmp_path / "wrong.npy", np.zeros(7))
    with pytest.raises(InputError, match="a direction is"):
        edit.load_direction(tmp_path / "wrong.npy", tiny_generator)


def test_directions_are_cached_per_checkpoint(tiny_generator, tmp_path, monkeypatch):
    monkeypatch.setattr(edit, "_CACHE", {})
    first = edit.directions_for(tiny_generator, "ganspace", cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.safetensors")
    assert cached.name.startswith(model_fingerprint(tiny_generator)["weights_sha256"][:16])
    monkeypatch.setattr(edit, "_CACHE", {})
    monkeypatch.setattr(edit, "ganspace_directions", lambda *a, **k: pytest.fail("recomputed despite the cache file"))
    again = edit.directions_for(tiny_generator, "ganspace", cache_dir=tmp_path)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert edit.directions_for(tiny_generator, "ganspace", cache_dir=tmp_path) is again  # then from memory


def test_edit_cli_writes_sweeps(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["edit", "--model", "tiny", "--seeds", "3", "--method", "ganspace", "--direction", "0", "2",
                     "--alphas=-2,0,2", "--layers", "coarse", "--video", "--frames", "6", "--save-faces",
                     "--outdir", str(out), "--device", "cpu"]) == 0
    strip = media.load_png(out / "seed0003_ganspace-d0_strip.png")
    assert strip.shape == (32, 3 * 32, 3)
    ws = media.load_npy(out / "seed0003_ganspace-d2_ws.npy")
    assert ws.shape == (3, 8, 16)
    from demo.weights.store import build_tiny_generator

    np.testing.assert_array_equal(ws[1], face_from_seed(build_tiny_generator(), 3).ws[0])  # alpha 0: the face itself
    assert np.abs(ws[2] - ws[0]).max() > 0
    record = json.loads((out / "seed0003_ganspace-d0.json").read_text())
    assert record["alphas"] == [-2.0, 0.0, 2.0] and record["layers"] == [0, 1, 2, 3, 4, 5]
    assert media.read_video_info(out / "seed0003_ganspace-d0.mp4").num_frames == 6
    assert (out / "seed0003_ganspace-d0_a+2.00.face.safetensors").is_file()
    assert cli.main(["edit", "--model", "tiny", "--list"]) == 0
    assert "direction  0: strength" in capsys.readouterr().out
    assert cli.main(["edit", "--model", "tiny", "--seeds", "3", "--direction", "99", "--outdir", str(out)]) == 2
    assert "Direction 99 does not exist" in capsys.readouterr().err


def test_edit_tab_edits_any_face(tmp_path):
    pytest.importorskip("gradio", reason="the app needs gradio")
    from demo.tasks.face import load_face
    from demo.ui.runtime import ModelProvider
    from demo.ui.tabs import edit as edit_tab

    models = ModelProvider.tiny()
    model = models.get("tiny")
    image, face_file = edit_tab.edit(models, "tiny", "seed", 3, 0.7, None, "sefa", "all", [0, 0, 0, 0, 0],
                                     out_dir=tmp_path / "zero")
    np.testing.assert_array_equal(load_face(face_file, model).ws, face_from_seed(model, 3).ws)
    image2, face_file2 = edit_tab.edit(models, "tiny", "seed", 3, 0.7, None, "sefa", "middle", [0, 3, 0, 0, 0],
                                       out_dir=tmp_path / "moved")
    edited = load_face(face_file2, model)
    assert edited.source["edits"][0]["layers"] == list(edit.layer_groups(model)["middle"])
    assert np.abs(media.load_png(image2).astype(int) - media.load_png(image).astype(int)).max() > 0
