"""Parity with the official PanoHead code on its official-format fixture (random weights).

Tolerances follow ../shared/reference/panohead/README.md ("Suggested float32 assertions").
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from demo.config import GeneratorConfig
from demo.networks.panohead import PanoHeadGenerator, build_generator
from demo.render.grid import grid_points
from demo.tasks.mesh import official_mrc_volume
from tests.conftest import REFERENCE_DIR, max_abs_diff

pytestmark = pytest.mark.slow
PANOHEAD = REFERENCE_DIR / "panohead"


def _require(name: str):
    path = PANOHEAD / name
    if not path.is_file():
        pytest.skip(f"reference fixture {path} is absent (the ../shared checkout is needed for parity tests)")
    return path


@pytest.fixture(scope="module")
def expected():
    with np.load(_require("tiny_panohead_expected.npz"), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def G():
    from demo.weights.store import load_generator

    return load_generator(_require("tiny_panohead_structure.pkl"))



def _assert_image(actual: torch.Tensor, expected: np.ndarray, within: float, fraction: float, limit: float) -> None:
    diff = np.abs(actual.numpy().astype(np.float64) - expected)
    assert (diff <= within).mean() >= fraction
    assert diff.max() <= limit


@pytest.fixture(scope="module", params=[True, False], ids=["fast", "plain"])
def calls(G, expected, request):
    """The three official calls, on the fast path and on the plain one (the same tolerances hold for both)."""
    fast = request.param
    z = torch.from_numpy(expected["z"])
    cond = torch.from_numpy(expected["c_cond_gen_samples"])
    out = {}
    with torch.inference_mode():
        ws07 = G.mapping(z, cond, truncation_psi=0.7, truncation_cutoff=14)
        ws10 = G.mapping(z, cond, truncation_psi=1.0, truncation_cutoff=14)
        cameras = torch.from_numpy(np.stack([expected[f"c_yaw{a}"] for a in (0, 90, 180)]))
        torch.manual_seed(100)
        out["A"] = G.synthesis(ws07, cameras, return_extras=True, fast=fast)
        torch.manual_seed(101)
        out["B"] = G.synthesis(ws10[:1], torch.from_numpy(expected["c_wide_fov40_yaw180"])[None], fast=fast)
        torch.manual_seed(102)
        out["C"] = G(
            z[1:2], torch.from_numpy(expected["c_video_head_frame60of240"])[None], truncation_psi=0.7, truncation_cutoff=14, fast=fast
        )
    return out


def test_loads_as_panohead(G, expected):
    assert isinstance(G, PanoHeadGenerator)
    assert G.config.panohead.triplane_depth == 3 and G.config.render.neural_rendering_resolution == 64


@pytest.mark.parametrize(("key", "psi"), [("ws_psi1p0", 1.0), ("ws_psi0p7", 0.7)])
def test_mapping(G, expected, key, psi):
    with torch.inference_mode():
        ws = G.mapping(torch.from_numpy(expected["z"]), torch.from_numpy(expected["c_cond_gen_samples"]), truncation_psi=psi, truncation_cutoff=14)
    assert max_abs_diff(ws, expected[key]) <= 1e-5
    with torch.inference_mode():
        ws_none = G.mapping(torch.from_numpy(expected["z"]), torch.from_numpy(expected["c_cond_gen_samples"]), truncation_psi=0.7)
    assert max_abs_diff(ws_none, expected["ws_psi0p7_cutoff_none"]) <= 1e-5


def test_camera_offset(G, expected):
    z, cond = torch.from_numpy(expected["z"]), torch.from_numpy(expected["c_cond_gen_samples"])
    with torch.inference_mode():
        assert max_abs_diff(G.camera_offset(z, cond), expected["delta_c_cond"]) <= 1e-5
        assert max_abs_diff(G.offset_camera(z, cond), expected["c_cond_plus_delta"]) <= 1e-5


def test_intermediates(G, expected, calls):
    with torch.inference_mode():
        ws = G.mapping(torch.from_numpy(expected["z"]), torch.from_numpy(expected["c_cond_gen_samples"]), truncation_psi=0.7, truncation_cutoff=14)
        background = G.background(ws)
    assert max_abs_diff(calls["A"]["planes"].reshape(3, 288, 256, 256)[:, :, ::32, ::32], expected["A_planes_subsampled"]) <= 1e-4
    assert max_abs_diff(background[:, :, ::4, ::4], expected["A_bcg_synthesis_out"]) <= 1e-4
    alpha = calls["A"]["image_alpha"].reshape(3, 1, -1).permute(0, 2, 1)
    assert max_abs_diff(alpha, expected["A_renderer_weights_sum"]) <= 1e-4
    depth = calls["A"]["image_depth"].reshape(3, 1, -1).permute(0, 2, 1)
    assert max_abs_diff(depth, expected["A_renderer_depth_samples"]) <= 1e-4


def test_sample(G, expected):
    z, cond = torch.from_numpy(expected["z"]), torch.from_numpy(expected["c_cond_gen_samples"])
    coordinates = torch.from_numpy(expected["sample_coordinates"]).expand(3, -1, -1)
    with torch.inference_mode():
        out = G.sample(coordinates, None, z, cond, truncation_psi=0.7, truncation_cutoff=14)
    assert max_abs_diff(out["sigma"], expected["sample_sigma"]) <= 5e-5
    assert max_abs_diff(out["rgb"], expected["sample_rgb"]) <= 5e-5


@pytest.mark.parametrize("call", ["A", "B", "C"])
def test_synthesis_outputs(calls, expected, call):
    out = calls[call]
    assert {"image", "image_raw", "image_depth", "image_mask"} <= set(out)
    for key in ("image_depth", "image_mask"):
        _assert_image(out[key], expected[f"{call}_{key}"], 5e-5, 0.999, 0.05)
    _assert_image(out["image_raw"], expected[f"{call}_image_raw"], 2e-4, 0.999, 0.2)
    _assert_image(out["image"], expected[f"{call}_image"], 5e-4, 0.99, 0.5)


def test_shape_export(G, expected):
    assert max_abs_diff(grid_points(32, 1.0, official_quirk=True), expected["shape_grid_points"]) <= 1e-6
    with torch.inference_mode():
        ws = G.mapping(torch.from_numpy(expected["z"][:1]), torch.from_numpy(expected["c_cond_gen_samples"]), truncation_psi=0.7, truncation_cutoff=14)
    assert np.abs(official_mrc_volume(G, ws, resolution=32) - expected["shape_sigma_mrc"]).max() <= 5e-5


def test_full_size_config_matches_manifest():
    manifest = json.loads(_require("manifest_panohead.json").read_text())
    with torch.device("meta"):
        model = build_generator(GeneratorConfig.panohead512())
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    official = {e["name"]: tuple(e["shape"]) for e in manifest["parameters"]}
    official.update({e["name"]: tuple(e["shape"]) for e in manifest["buffers"] if e.get("in_state_dict", True)})
    assert ours == official
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
