"""Our full-size configs have exactly the tensors of the official checkpoints (manifest_*.json)."""

from __future__ import annotations

import json

import pytest
import torch

from demo.config import GeneratorConfig
from demo.networks.eg3d import TriplaneGenerator
from demo.weights.convert import config_from_official
from tests.conftest import require_reference

CASES = [
    ("manifest_ffhq512.json", GeneratorConfig.ffhq512),
    ("manifest_afhq512.json", GeneratorConfig.afhq512),
    ("manifest_shapenet128.json", GeneratorConfig.shapenet128),
]


def _load(name: str) -> dict:
    return json.loads(require_reference(name).read_text())


def _meta_state(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = TriplaneGenerator(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize(("manifest", "preset"), CASES)
def test_preset_has_official_tensor_names_and_shapes(manifest, preset):
    expected = {entry["name"]: tuple(entry["shape"]) for entry in _load(manifest)["state_dict"]}
    assert _meta_state(preset()) == expected


@pytest.mark.parametrize(("manifest", "preset"), CASES)
def test_preset_parameter_and_buffer_split(manifest, preset):
    data = _load(manifest)
    with torch.device("meta"):
        model = TriplaneGenerator(preset())
    parameters = {name for name, _ in model.named_parameters()}
    for entry in data["state_dict"]:
        assert (entry["name"] in parameters) == (entry["kind"] == "parameter"), entry["name"]
    assert sum(p.numel() for p in model.parameters()) == data["totals"]["parameter_numel"]


@pytest.mark.parametrize(("manifest", "preset"), CASES)
def test_config_read_from_manifest_kwargs_equals_preset(manifest, preset):
    data = _load(manifest)
    focal = preset().focal_length
    config = config_from_official(data["init_kwargs"], data["instance_attributes"], class_name=data["class_name"], focal_length=focal)
    expected = preset()
    assert config == expected
    assert config.extras.get("gpc_reg_prob") == data["instance_attributes"]["rendering_kwargs"].get("gpc_reg_prob")


def test_registry_presets_exist_for_every_entry():
    from demo.weights.registry import list_entries

    for entry in list_entries():
        config = getattr(GeneratorConfig, entry.config_preset)()
        assert config.focal_length == pytest.approx(entry.focal_length)
