"""Checkpoint round trips: official pickle -> folder -> load, other configurations, strict loading."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from demo.cameras import camera_from_angles, conditioning_camera
from demo.config import GeneratorConfig, MappingConfig, RenderConfig, SuperResConfig, SynthesisConfig
from demo.errors import CheckpointError
from demo.networks.eg3d import TriplaneGenerator
from demo.weights import store
from demo.weights.convert import config_from_official, official_kwargs
from tests.fakes.nvlabs import write_official_snapshot


def _render(model: TriplaneGenerator, seed: int = 3, cutoff: int | None = None) -> dict[str, torch.Tensor]:
    z = torch.from_numpy(np.random.RandomState(seed).randn(2, model.z_dim))
    radius, pivot = model.config.avg_camera_radius, model.config.avg_camera_pivot
    cond = conditioning_camera(radius=radius, pivot=pivot, focal=model.config.focal_length)
    camera = camera_from_angles(yaw_deg=[25.0, -40.0], pitch_deg=[-5.0, 10.0], radius=radius, pivot=pivot, fov_deg=30.0)
    with torch.inference_mode():
        ws = model.mapping(z, cond, truncation_psi=0.6, truncation_cutoff=cutoff)
        out = model.synthesis(ws, camera, rng=torch.Generator().manual_seed(seed), return_extras=True)
        out["sigma"] = model.sample_mixed(torch.rand(2, 64, 3, generator=torch.Generator().manual_seed(seed)) - 0.5, None, ws)["sigma"]
    out["ws"] = ws
    return out


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _random_official_model(config: GeneratorConfig, seed: int = 0) -> TriplaneGenerator:
    torch.manual_seed(seed)
    model = TriplaneGenerator(config)
    with torch.no_grad():
        model.backbone.mapping.w_avg.normal_()
        model.decoder.net[2].bias[0] = 1.5
        for name, parameter in model.named_parameters():
            if name.endswith("noise_strength") or name.endswith("conv1.bias"):
                parameter.normal_(std=0.1)
    return model.eval()


#: Configurations that differ from FFHQ in every dimension the official generator allows.
OTHER_CONFIGS = {
    "2x-white-zero-cond": GeneratorConfig(
        mapping=MappingConfig(z_dim=64, c_dim=25, w_dim=512, num_layers=1),
        synthesis=SynthesisConfig(channel_base=512, channel_max=8, num_fp16_res=0),
        render=RenderConfig(
            neural_rendering_resolution=32, depth_samples=10, importance_samples=6,
            ray_start=0.1, ray_end=2.6, box_warp=1.6, white_background=True,
        ),
        superres=SuperResConfig(variant="2X", image_resolution=128, num_fp16_res=0),
        conditioning_zero=True,
        avg_camera_radius=1.7,
        avg_camera_pivot=(0.0, 0.0, 0.0),
        focal_length=1.7074,
    ),
    "4x-auto-disparity": GeneratorConfig(
        mapping=MappingConfig(z_dim=32, c_dim=25, w_dim=512, num_layers=2),
        synthesis=SynthesisConfig(channel_base=256, channel_max=8, num_fp16_res=2, conv_clamp=256),
        render=RenderConfig(
            neural_rendering_resolution=24, depth_samples=8, importance_samples=8,
            ray_start="auto", ray_end="auto", disparity_space_sampling=True, box_warp=1.0,
        ),
        superres=SuperResConfig(variant="4X", image_resolution=256, num_fp16_res=4, antialias=False),
        c_scale=2.0,
    ),
}


def test_tiny_generator_is_deterministic_and_leaves_rng_alone():
    state = torch.random.get_rng_state()
    a, b = store.build_tiny_generator(), store.build_tiny_generator()
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    out = _render(a)
    assert 0.05 < out["image_alpha"].mean() < 0.95, "tiny field should be neither empty nor opaque"


def test_save_load_round_trip_tiny(tmp_path, tiny_generator):
    folder = store.save_generator(tiny_generator, tmp_path / "tiny", provenance={"note": "test"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generator.safetensors", "provenance.json"]
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == "eg3d" and config["format_version"] == store.FORMAT_VERSION
    loaded = store.load_generator(folder)
    assert loaded.config == tiny_generator.config
    _assert_same(_render(tiny_generator), _render(loaded))


@pytest.mark.parametrize("name", sorted(OTHER_CONFIGS))
def test_official_snapshot_of_another_configuration(tmp_path, name):
    """An official-format pickle of a non-FFHQ config loads to the same config and the same outputs."""
    config = OTHER_CONFIGS[name]
    model = _random_official_model(config)
    init_kwargs, attributes = official_kwargs(config)
    pkl = tmp_path / f"{name}.pkl"
    write_official_snapshot(pkl, model.state_dict(), init_kwargs, attributes)

    from_pickle = store.generator_from_pickle(pkl, focal_length=config.focal_length)
    assert from_pickle.config == config
    expected = _render(model, cutoff=3)
    _assert_same(expected, _render(from_pickle, cutoff=3))
    assert expected["image"].shape[-1] == config.superres.image_resolution
    assert expected["image_raw"].shape[-1] == config.render.neural_rendering_resolution

    folder = store.convert_checkpoint(pkl, tmp_path / "converted")
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["source_file"] == pkl.name and len(provenance["sha256"]) == 64
    _assert_same(expected, _render(store.load_generator(folder), cutoff=3))


def test_white_background_and_zero_conditioning_behave():
    config = OTHER_CONFIGS["2x-white-zero-cond"]
    model = _random_official_model(config)
    z = torch.randn(1, model.z_dim)
    with torch.inference_mode():
        a = model.mapping(z, camera_from_angles(yaw_deg=30.0, radius=1.7, pivot=(0, 0, 0)))
        b = model.mapping(z, camera_from_angles(yaw_deg=-50.0, radius=1.7, pivot=(0, 0, 0)))
    assert torch.equal(a, b), "c_gen_conditioning_zero: the camera must not matter"
    empty = dataclasses.replace(config, render=dataclasses.replace(config.render))
    model_empty = _random_official_model(empty)
    with torch.no_grad():
        model_empty.decoder.net[2].bias[0] = -200.0
        model_empty.decoder.net[2].weight[0] = 0.0
        out = model_empty.synthesis(a, camera_from_angles(radius=1.7, pivot=(0, 0, 0)), rng=torch.Generator().manual_seed(0))
    assert torch.allclose(out["image_raw"], torch.ones_like(out["image_raw"]), atol=1e-5)


def test_official_pickle_round_trip(tmp_path, official_tiny_pickle):
    """Official .pkl -> converted folder -> load gives identical outputs."""
    direct = store.load_generator(official_tiny_pickle)
    folder = store.convert_checkpoint(official_tiny_pickle, tmp_path / "ffhq-tiny")
    converted = store.load_generator(folder)
    assert converted.config == direct.config
    for (name, x), (_, y) in zip(direct.state_dict().items(), converted.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    z = torch.randn(1, 512)
    with torch.inference_mode():
        ws = direct.mapping(z, conditioning_camera(), truncation_psi=0.7)
        assert torch.equal(ws, converted.mapping(z, conditioning_camera(), truncation_psi=0.7))
        camera = camera_from_angles(yaw_deg=20.0)
        a = direct.synthesis(ws, camera, neural_rendering_resolution=32, rng=torch.Generator().manual_seed(1))
        b = converted.synthesis(ws, camera, neural_rendering_resolution=32, rng=torch.Generator().manual_seed(1))
    _assert_same(a, b)


def test_config_kwargs_round_trip():
    for config in [GeneratorConfig.ffhq512(), GeneratorConfig.shapenet128(), *OTHER_CONFIGS.values()]:
        init_kwargs, attributes = official_kwargs(config)
        assert config_from_official(init_kwargs, attributes, focal_length=config.focal_length) == config


def test_missing_c_scale_defaults_to_zero_like_the_official_code():
    init_kwargs, attributes = official_kwargs(GeneratorConfig.ffhq512())
    del init_kwargs["rendering_kwargs"]["c_scale"], attributes["rendering_kwargs"]["c_scale"]
    assert config_from_official(init_kwargs, attributes).c_scale == 0.0


def test_strict_loading_names_missing_and_unexpected(tmp_path, tiny_generator):
    folder = store.save_generator(tiny_generator, tmp_path / "m")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "generator.safetensors"))
    tensors.pop("decoder.net.0.weight")
    tensors["decoder.net.9.weight"] = torch.zeros(1)
    save_file(tensors, str(folder / "generator.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensors: decoder\.net\.0\.\{weight\}.*unexpected"):
        store.load_generator(folder)


def test_shape_mismatch_is_reported(tmp_path, tiny_generator):
    folder = store.save_generator(tiny_generator, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["render"]["decoder_hidden"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape mismatches: decoder.net.0"):
        store.load_generator(folder)


def test_corrupt_weights_and_bad_config(tmp_path, tiny_generator):
    folder = store.save_generator(tiny_generator, tmp_path / "m")
    (folder / "generator.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        store.load_generator(folder)
    folder = store.save_generator(tiny_generator, tmp_path / "n")
    (folder / "config.json").write_text('{"family": "eg3d", "format_version": 1, "mapping": {"bogus": 1}}')
    with pytest.raises(CheckpointError, match="bogus"):
        store.load_generator(folder)
    (folder / "config.json").write_text('{"family": "panohead", "format_version": 1}')
    with pytest.raises(CheckpointError, match="family"):
        store.load_generator(folder)


def test_missing_sources_give_actionable_errors(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        store.load_generator(tmp_path / "nothing.pkl")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        store.load_generator(tmp_path)
    monkeypatch.setenv("DEMO_CHECKPOINTS_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match="ffhq512-128.pkl"):
        store.load_generator("eg3d-ffhq512-128", download=False)
    with pytest.raises(CheckpointError, match="eg3d-ffhq512-128"):
        store.load_generator("not-a-model")


def test_registry_id_converts_a_placed_original(tmp_path, monkeypatch, official_tiny_pickle):
    """Putting the official file in checkpoints/original/ is enough: the id converts on first load."""
    monkeypatch.setenv("DEMO_CHECKPOINTS_DIR", str(tmp_path))
    from demo.weights import registry

    target = registry.original_path("eg3d-ffhq512-128")
    target.parent.mkdir(parents=True)
    target.symlink_to(official_tiny_pickle)
    model = store.load_generator("eg3d-ffhq512-128", download=False)
    assert (tmp_path / "eg3d-ffhq512-128" / "generator.safetensors").is_file()
    assert model.config.render.neural_rendering_resolution == 128


def test_model_fingerprint_is_cached_until_a_weight_changes():
    from demo.weights.store import build_tiny_generator, model_fingerprint

    model = build_tiny_generator()
    first = model_fingerprint(model)
    assert model_fingerprint(model) == first
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # in place: the version counter moves
    changed = model_fingerprint(model)
    assert changed["weights_sha256"] != first["weights_sha256"] and changed["config_sha256"] == first["config_sha256"]
    assert model_fingerprint(build_tiny_generator()) == first


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: [data], "holds one JSON object; this one holds list"),
        (lambda data: "a string", "holds one JSON object; this one holds str"),
        (lambda data: {**data, "mapping": {**data["mapping"], "z_dim": 5_000_000}}, "z_dim: must be from 0 to 4096"),
        (lambda data: {**data, "synthesis": {**data["synthesis"], "resolution": 65536}}, "resolution: must be from 4 to 2048"),
        (lambda data: {**data, "mapping": {**data["mapping"], "num_layers": 10_000_000}}, "num_layers: must be from 1 to 64"),
        (lambda data: {**data, "render": {**data["render"], "depth_samples": 10**9}}, "depth_samples: must be from 2"),
        (lambda data: {**data, "render": {**data["render"], "ray_start": float("nan"), "ray_end": 3.0}}, "ray_start"),
        (lambda data: {**data, "mapping": "not a table"}, "invalid config"),
        (lambda data: {**data, "focal_length": "4.26"}, "focal_length: must be a number"),
    ],
)
def test_hostile_config_json_is_refused_before_anything_is_built(tmp_path, tiny_generator, change, message):
    """Sizes in config.json are bounded before the model is built: no memory is spent on a malicious config."""
    import resource
    import time

    from demo.weights.store import CONFIG_FILE, load_converted, save_generator

    folder = save_generator(tiny_generator, tmp_path / "model")
    data = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps(change(data)))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        load_converted(folder)
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 200_000  # KiB: no model was built
    assert load_converted(save_generator(tiny_generator, tmp_path / "again")) is not None  # the process is unharmed
