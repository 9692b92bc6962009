"""Tests of the safe reader of official NVlabs snapshot pickles (demo/weights/nvlabs_pickle.py).

Round trips go through the fake writer in tests/fakes/nvlabs.py; the parity tests read the official-format
fixtures in ../shared/reference/ and skip when that folder is absent. The security tests write pickles
that would run a payload under ``pickle.load`` or the official loader; the payload creates a sentinel
file, whose absence proves that nothing ran. A few tests run the same files through a plain unpickler
in a child process to prove that the payloads are live.
"""

from __future__ import annotations

import builtins
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from demo.errors import CheckpointError, UnsafeCheckpointError
from demo.weights import nvlabs_pickle
from demo.weights.nvlabs_pickle import (
    OfficialGenerator,
    PersistentStandIn,
    read_official_generator,
    read_snapshot,
    sha256_file,
)
from tests.fakes import nvlabs as fakes

SHARED_EG3D = Path(__file__).resolve().parents[2] / "shared" / "reference" / "eg3d"
SHARED_PANOHEAD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "panohead"
FIXTURE = SHARED_EG3D / "tiny_ffhq_structure.pkl"
MANIFEST = SHARED_EG3D / "manifest_ffhq512.json"
FORBIDDEN_PREFIXES = ("torch_utils", "dnnlib", "training")

needs_fixture = pytest.mark.skipif(
    not (FIXTURE.is_file() and MANIFEST.is_file()),
    reason=f"official-format fixture not found in {SHARED_EG3D} (the shared reference folder is absent)",
)


def _nvlabs_modules() -> set[str]:
    return {name for name in sys.modules if name.split(".")[0] in FORBIDDEN_PREFIXES}


# --------------------------------------------------------------------------------------------------
# A tiny official-style generator


RENDERING_KWARGS = {
    "image_resolution": 32,
    "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
    "c_gen_conditioning_zero": False,
    "c_scale": 1.0,
    "depth_resolution": 4,
    "depth_resolution_importance": 4,
    "ray_start": 2.25,
    "ray_end": 3.3,
    "box_warp": 1,
    "avg_camera_pivot": [0, 0, 0.2],
}
INIT_KWARGS = {
    "z_dim": 8,
    "w_dim": 8,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 64,
    "channel_max": 16,
    "fused_modconv_default": "inference_only",
    "rendering_kwargs": RENDERING_KWARGS,
    "num_fp16_res": 0,
    "sr_num_fp16_res": 4,
    "sr_kwargs": {"channel_base": 64, "channel_max": 16, "fused_modconv_default": "inference_only"},
    "conv_clamp": None,
    "c_dim": 25,
    "img_resolution": 32,
    "img_channels": 3,
}
ATTRIBUTES = {
    "z_dim": 8,
    "c_dim": 25,
    "w_dim": 8,
    "img_resolution": 32,
    "img_channels": 3,
    "neural_rendering_resolution": 16,
    "rendering_kwargs": dict(RENDERING_KWARGS),
}


def _layer(prefix: str, cin: int, cout: int, w_dim: int, res: int) -> list[tuple[str, tuple]]:
    # SynthesisLayer: parameters, then buffers, then the affine child (torch's state_dict order).
    names = [(f"{prefix}.weight", (cout, cin, 3, 3)), (f"{prefix}.noise_strength", ()), (f"{prefix}.bias", (cout,))]
    names += [(f"{prefix}.resample_filter", (4, 4)), (f"{prefix}.noise_const", (res, res))]
    names += [(f"{prefix}.affine.weight", (cin, w_dim)), (f"{prefix}.affine.bias", (cin,))]
    return names


def _torgb(prefix: str, cin: int, cout: int, w_dim: int) -> list[tuple[str, tuple]]:
    return [
        (f"{prefix}.weight", (cout, cin, 1, 1)),
        (f"{prefix}.bias", (cout,)),
        (f"{prefix}.affine.weight", (cin, w_dim)),
        (f"{prefix}.affine.bias", (cin,)),
    ]


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under official names, in nn.Module.state_dict() order."""
    w = 8
    shapes: list[tuple[str, tuple]] = [("dataset_label_std", (25,))]
    # backbone.synthesis (registered before backbone.mapping in the official Generator)
    shapes += [("backbone.synthesis.b4.const", (16, 4, 4)), ("backbone.synthesis.b4.resample_filter", (4, 4))]
    shapes += _layer("backbone.synthesis.b4.conv1", 16, 16, w, 4)
    shapes += _torgb("backbone.synthesis.b4.torgb", 16, 96, w)
    shapes += [("backbone.synthesis.b8.resample_filter", (4, 4))]
    shapes += _layer("backbone.synthesis.b8.conv0", 16, 16, w, 8)
    shapes += _layer("backbone.synthesis.b8.conv1", 16, 16, w, 8)
    shapes += _torgb("backbone.synthesis.b8.torgb", 16, 96, w)
    shapes += [("backbone.mapping.w_avg", (w,))]
    shapes += [("backbone.mapping.embed.weight", (w, 25)), ("backbone.mapping.embed.bias", (w,))]
    shapes += [("backbone.mapping.fc0.weight", (w, 2 * w)), ("backbone.mapping.fc0.bias", (w,))]
    shapes += [("backbone.mapping.fc1.weight", (w, w)), ("backbone.mapping.fc1.bias", (w,))]
    # superresolution (2X: block0 is a SynthesisBlockNoUp)
    shapes += [("superresolution.block0.resample_filter", (4, 4))]
    shapes += _layer("superresolution.block0.conv0", 32, 16, w, 16)
    shapes += _layer("superresolution.block0.conv1", 16, 16, w, 16)
    shapes += _torgb("superresolution.block0.torgb", 16, 3, w)
    shapes += [("superresolution.block1.resample_filter", (4, 4))]
    shapes += _layer("superresolution.block1.conv0", 16, 8, w, 32)
    shapes += _layer("superresolution.block1.conv1", 8, 8, w, 32)
    shapes += _torgb("superresolution.block1.torgb", 8, 3, w)
    shapes += [("decoder.net.0.weight", (64, 32)), ("decoder.net.0.bias", (64,))]
    shapes += [("decoder.net.2.weight", (33, 64)), ("decoder.net.2.bias", (33,))]
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes}


@pytest.fixture
def snapshot(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g_ema, g = tiny_state_dict(0), tiny_state_dict(1)
    path = tmp_path / "network-snapshot-000000.pkl"
    fakes.write_official_snapshot(path, g_ema, INIT_KWARGS, ATTRIBUTES, g_state_dict=g)
    return path, g_ema, g


def _assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        got = actual[name]
        assert type(got) is torch.Tensor, name
        assert got.dtype == torch.float32 and not got.requires_grad, name
        assert torch.equal(got, tensor), name


# --------------------------------------------------------------------------------------------------
# Round trips through the fake writer


def test_round_trip_g_ema(snapshot) -> None:
    path, g_ema, _ = snapshot
    official = read_official_generator(path)
    assert isinstance(official, OfficialGenerator)
    assert official.class_name == "training.triplane.TriPlaneGenerator"
    assert official.path == str(path)
    assert official.init_args == ()
    _assert_same_tensors(official.state_dict, g_ema)
    assert official.init_kwargs == INIT_KWARGS
    assert type(official.init_kwargs["mapping_kwargs"]) is dict
    assert type(official.init_kwargs["sr_kwargs"]) is dict
    assert official.attributes == ATTRIBUTES


def test_round_trip_g_is_not_g_ema(snapshot) -> None:
    path, g_ema, g = snapshot
    official_g = read_official_generator(path, key="G")
    _assert_same_tensors(official_g.state_dict, g)
    assert not torch.equal(official_g.state_dict["decoder.net.0.weight"], g_ema["decoder.net.0.weight"])


def test_snapshot_structure(snapshot) -> None:
    path, _, _ = snapshot
    top = read_snapshot(path)
    assert list(top) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    assert top["augment_pipe"] is None
    assert isinstance(top["D"], PersistentStandIn)
    assert top["D"].class_name == "training.dual_discriminator.DualDiscriminator"
    g_ema = top["G_ema"]
    sr = g_ema.submodules["superresolution"]
    assert sr.class_name == "training.superresolution.SuperresolutionHybrid2X"
    assert sr.submodules["block0"].class_name == "training.superresolution.SynthesisBlockNoUp"
    assert sr.submodules["block1"].class_name == "training.networks_stylegan2.SynthesisBlock"
    net = g_ema.submodules["decoder"].submodules["net"]
    assert g_ema.submodules["decoder"].class_name == "training.triplane.OSGDecoder"
    assert [(k, m.class_name.rsplit(".", 1)[1]) for k, m in net.submodules.items()] == [
        ("0", "FullyConnectedLayer"),
        ("1", "Softplus"),
        ("2", "FullyConnectedLayer"),
    ]
    fc0 = g_ema.submodules["backbone"].submodules["mapping"].submodules["fc0"]
    assert fc0.init_args == (16, 8)
    assert fc0.attributes["weight_gain"] == pytest.approx(0.01 / 4) and type(fc0.attributes["weight_gain"]) is float
    # A tensor attribute that is not a registered buffer stays out of the state_dict.
    renderer = g_ema.submodules["renderer"]
    assert renderer.state["plane_axes"].shape == (3, 3, 3)
    assert not any(name.startswith("renderer") for name in read_official_generator(path).state_dict)


def test_torch1_ordered_dicts_and_none_parameters(tmp_path: Path) -> None:
    state = tiny_state_dict()
    with_none = {**state, "decoder.net.2.extra": None}
    path = tmp_path / "torch1.pkl"
    fakes.write_official_snapshot(path, with_none, INIT_KWARGS, ATTRIBUTES, ordered_dicts=True)
    g_ema = read_snapshot(path)["G_ema"]
    assert type(g_ema.state["_parameters"]).__name__ == "OrderedDict"
    assert type(g_ema.state["_modules"]).__name__ == "OrderedDict"
    _assert_same_tensors(read_official_generator(path).state_dict, state)


def test_non_persistent_buffers_skipped(tmp_path: Path) -> None:
    path = tmp_path / "np.pkl"
    fakes.write_official_snapshot(path, tiny_state_dict(), INIT_KWARGS, ATTRIBUTES)
    g_ema = read_snapshot(path)["G_ema"]
    g_ema.state["_non_persistent_buffers_set"] = {"dataset_label_std"}
    assert "dataset_label_std" not in nvlabs_pickle.module_state_dict(g_ema)
    assert "backbone.mapping.w_avg" in g_ema.state_dict()


def test_bare_generator_pickle(tmp_path: Path) -> None:
    state = tiny_state_dict()
    path = tmp_path / "generator.pkl"
    fakes.write_official_generator(path, state, INIT_KWARGS, ATTRIBUTES)
    assert isinstance(read_snapshot(path), PersistentStandIn)
    official = read_official_generator(path)
    _assert_same_tensors(official.state_dict, state)
    assert official.attributes == ATTRIBUTES


def test_sha256(snapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    path, g_ema, _ = snapshot
    digest = sha256_file(path)
    assert len(digest) == 64
    assert read_official_generator(path, expected_sha256=digest.upper()).state_dict.keys() == g_ema.keys()

    def never(*args, **kwargs):
        raise AssertionError("unpickled despite a hash mismatch")

    monkeypatch.setattr(nvlabs_pickle.RestrictedUnpickler, "load", never)
    wrong = "0" * 64
    with pytest.raises(CheckpointError) as info:
        read_official_generator(path, expected_sha256=wrong)
    message = str(info.value)
    assert wrong in message and digest in message and "incomplete" in message
    with pytest.raises(ValueError):
        read_snapshot(path, expected_sha256="abc")


def test_no_nvlabs_modules_imported(snapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, _ = snapshot
    before = _nvlabs_modules()
    real_import = builtins.__import__

    def guarded_import(name, *args, **kwargs):
        if name.split(".")[0] in FORBIDDEN_PREFIXES:
            raise AssertionError(f"the loader imported {name}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded_import)
    read_official_generator(path)
    read_snapshot(path)
    monkeypatch.undo()
    assert _nvlabs_modules() == before


# --------------------------------------------------------------------------------------------------
# The official-format fixture


@pytest.fixture(scope="module")
def fixture_generator() -> OfficialGenerator:
    if not (FIXTURE.is_file() and MANIFEST.is_file()):
        pytest.skip(f"official-format fixture not found in {SHARED_EG3D} (the shared reference folder is absent)")
    return read_official_generator(FIXTURE)


@pytest.fixture(scope="module")
def manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.skip(f"{MANIFEST} not found (the shared reference folder is absent)")
    return json.loads(MANIFEST.read_text())


@needs_fixture
def test_fixture_state_dict_names_and_shapes(fixture_generator: OfficialGenerator, manifest: dict) -> None:
    state = fixture_generator.state_dict
    entries = manifest["state_dict"]
    assert len(state) == len(entries) == 177
    assert list(state) == [entry["name"] for entry in entries]
    for entry in entries:
        tensor = state[entry["name"]]
        assert type(tensor) is torch.Tensor and tensor.dtype == torch.float32
        assert tensor.ndim == len(entry["shape"]), entry["name"]
        # Only the backbone's synthesis network is narrowed (channel_base 2048, channel_max 32); mapping,
        # superresolution (hard-coded widths), decoder and dataset_label_std keep their full size.
        if not entry["name"].startswith("backbone.synthesis.") or entry["name"].endswith("resample_filter"):
            assert list(tensor.shape) == entry["shape"], entry["name"]
    assert fixture_generator.class_name == manifest["class_name"]
    assert not any(name.startswith("renderer") for name in state)


@needs_fixture
def test_fixture_kwargs_and_attributes(fixture_generator: OfficialGenerator, manifest: dict) -> None:
    expected = json.loads(json.dumps(manifest["init_kwargs"]))
    for kwargs in (expected, expected["sr_kwargs"]):
        kwargs.update(channel_base=2048, channel_max=32)
    assert fixture_generator.init_kwargs == expected
    assert type(fixture_generator.init_kwargs["mapping_kwargs"]) is dict
    assert fixture_generator.init_args == tuple(manifest["init_args"])
    attributes = fixture_generator.attributes
    assert attributes["neural_rendering_resolution"] == 128
    assert attributes["rendering_kwargs"] == manifest["instance_attributes"]["rendering_kwargs"]
    # The manifest also lists backbone_num_ws, a property of the backbone rather than an attribute of G.
    assert set(attributes) == set(manifest["instance_attributes"]) - {"backbone_num_ws"}
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        assert attributes[key] == manifest["instance_attributes"][key]


@needs_fixture
def test_fixture_g_differs_from_g_ema(fixture_generator: OfficialGenerator) -> None:
    g = read_official_generator(FIXTURE, key="G")
    assert list(g.state_dict) == list(fixture_generator.state_dict)
    differing = [name for name, t in g.state_dict.items() if not torch.equal(t, fixture_generator.state_dict[name])]
    assert differing and "decoder.net.0.weight" in differing
    top = read_snapshot(FIXTURE)
    assert list(top) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    assert top["D"].class_name == "training.dual_discriminator.DualDiscriminator"
    # Fixture internals as written by torch 2.13: plain dicts for module tables, OrderedDict hooks.
    assert type(top["G_ema"].state["_parameters"]) is dict
    assert type(top["G_ema"].state["_forward_hooks"]).__name__ == "OrderedDict"


@needs_fixture
def test_fixture_wrong_hash_is_refused_before_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("unpickled despite a hash mismatch")

    monkeypatch.setattr(nvlabs_pickle.RestrictedUnpickler, "load", never)
    with pytest.raises(CheckpointError, match="expected " + "1" * 64):
        read_official_generator(FIXTURE, expected_sha256="1" * 64)


@needs_fixture
def test_fixture_load_imports_no_nvlabs_code() -> None:
    before = _nvlabs_modules()
    read_snapshot(FIXTURE)
    assert _nvlabs_modules() == before


@pytest.mark.skipif(
    not (SHARED_PANOHEAD / "tiny_panohead_structure.pkl").is_file(),
    reason=f"PanoHead fixture not found in {SHARED_PANOHEAD} (the shared reference folder is absent)",
)
def test_panohead_fixture_loads() -> None:
    official = read_official_generator(SHARED_PANOHEAD / "tiny_panohead_structure.pkl")
    manifest = json.loads((SHARED_PANOHEAD / "manifest_panohead.json").read_text())
    expected = {entry["name"] for entry in manifest["parameters"]}
    expected |= {entry["name"] for entry in manifest["buffers"] if entry.get("in_state_dict", True)}
    assert set(official.state_dict) == expected
    assert official.class_name == "training.triplane.TriPlaneGenerator"


# --------------------------------------------------------------------------------------------------
# Security


FORBIDDEN_GLOBALS = [
    ("os", "system"),
    ("posix", "system"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("subprocess", "Popen"),
    ("subprocess", "run"),
    ("subprocess", "check_output"),
    ("importlib", "import_module"),
    # Near misses of the allow-list: real NVlabs or numpy names that would import or run code.
    ("torch_utils.persistence", "persistent_class"),
    ("dnnlib.util", "call_func_by_name"),
    ("training.triplane", "TriPlaneGenerator"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("torch", "load"),
    ("builtins", "getattr"),
]


def _assert_refused(info: pytest.ExceptionInfo, global_name: str | None, path: Path) -> None:
    message = str(info.value)
    assert isinstance(info.value, UnsafeCheckpointError)
    assert str(path) in message
    assert "not loaded" in message and "nothing in it was executed" in message
    if global_name is not None:
        assert global_name in message


@pytest.mark.parametrize(("module", "name"), FORBIDDEN_GLOBALS, ids=[f"{m}.{n}" for m, n in FORBIDDEN_GLOBALS])
def test_forbidden_global_is_refused(tmp_path: Path, module: str, name: str) -> None:
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pkl"
    fakes.write_pickle_with_global(path, module, name, fakes.sentinel_payload(module, name, sentinel))
    before = set(sys.modules)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_official_generator(path)
    _assert_refused(info, f"{module}.{name}", path)
    assert not sentinel.exists()
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in (*FORBIDDEN_PREFIXES, "antigravity")}


@pytest.mark.parametrize("opcode", ["GLOBAL", "STACK_GLOBAL", "INST"])
def test_forbidden_global_any_opcode(tmp_path: Path, opcode: str) -> None:
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pkl"
    fakes.write_raw_global_pickle(path, "os", "system", f"touch {sentinel}", opcode=opcode)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_snapshot(path)
    _assert_refused(info, "os.system", path)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("module", "name", "opcode"), [("os", "system", None), ("builtins", "exec", None), ("os", "system", "INST")]
)
def test_malicious_pickles_are_live_under_plain_pickle(tmp_path: Path, module: str, name: str, opcode) -> None:
    # Proves the refusal tests use real payloads: a plain unpickler in a child process runs them.
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pkl"
    if opcode is None:
        fakes.write_pickle_with_global(path, module, name, fakes.sentinel_payload(module, name, sentinel))
    else:
        fakes.write_raw_global_pickle(path, module, name, f"touch {sentinel}", opcode=opcode)
    fakes.plain_unpickle_in_subprocess(path, cwd=tmp_path)
    assert sentinel.exists()


def test_module_src_never_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    payload = fakes.module_src_payload(sentinel)
    path = tmp_path / "src.pkl"
    state = tiny_state_dict()
    fakes.write_official_snapshot(path, state, INIT_KWARGS, ATTRIBUTES, module_src=payload)
    official = read_official_generator(path)
    _assert_same_tensors(official.state_dict, state)
    assert not sentinel.exists()
    # The payload is live: run as a script, it creates the sentinel (the official loader execs it).
    subprocess.run([sys.executable, "-c", payload], cwd=tmp_path, check=True, timeout=60)
    assert sentinel.exists()


CRAFTED_METAS = {
    "class_name_os_system": ({"class_name": "os.system"}, ()),
    "class_name_not_str": ({"class_name": 42}, ()),
    "class_name_unknown": ({"class_name": "Popen"}, ()),
    "state_not_dict": ({"state": "print('hi')"}, ()),
    "state_list": ({"state": ["training", False]}, ()),
    "version_str": ({"version": "6"}, ()),
    "version_none": ({"version": None}, ()),
    "version_bool": ({"version": True}, ()),
    "type_not_class": ({"type": "function"}, ()),
    "module_src_not_str": ({"module_src": b"import os"}, ()),
    "extra_key": ({"import_hook": "os.system"}, ()),
    "missing_state": ({}, ("state",)),
    "missing_class_name": ({}, ("class_name",)),
}


@pytest.mark.parametrize(("overrides", "drop"), list(CRAFTED_METAS.values()), ids=list(CRAFTED_METAS))
def test_crafted_persistence_meta_is_refused(tmp_path: Path, overrides: dict, drop: tuple) -> None:
    path = tmp_path / "meta.pkl"
    fakes.write_snapshot_with_meta(path, tiny_state_dict(), INIT_KWARGS, ATTRIBUTES, overrides=overrides, drop=drop)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_official_generator(path)
    _assert_refused(info, None, path)
    assert "persistent-object record is malformed" in str(info.value)


def test_malicious_storage_blob_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    blob = fakes.malicious_storage_blob(sentinel)
    path = tmp_path / "blob.pkl"
    fakes.write_snapshot_with_storage_blob(
        path, tiny_state_dict(), INIT_KWARGS, ATTRIBUTES, tensor_name="decoder.net.0.weight", blob=blob
    )
    with pytest.raises(UnsafeCheckpointError) as info:
        read_official_generator(path)
    _assert_refused(info, "os.system", path)
    assert not sentinel.exists()
    # The blob is live: a plain unpickler reading its pickles in turn (what PyTorch's loader does with the
    # weights-only check off) runs the payload.
    raw = tmp_path / "blob.bin"
    raw.write_bytes(blob)
    fakes.plain_unpickle_in_subprocess(raw, cwd=tmp_path, pickles=4)
    assert sentinel.exists()


def test_storage_blob_problems_are_checkpoint_errors(tmp_path: Path) -> None:
    state = tiny_state_dict()
    cases = {
        "truncated": fakes.legacy_storage_blob(state["decoder.net.0.weight"])[:-10],
        "too_small": fakes.legacy_storage_blob(torch.zeros(3)),
        "garbage": b"not a torch stream",
    }
    for label, blob in cases.items():
        path = tmp_path / f"{label}.pkl"
        fakes.write_snapshot_with_storage_blob(
            path, state, INIT_KWARGS, ATTRIBUTES, tensor_name="decoder.net.0.weight", blob=blob
        )
        with pytest.raises(CheckpointError) as info:
            read_official_generator(path)
        assert str(path) in str(info.value), label
        assert "corrupt" in str(info.value), label


def test_unreadable_files_are_checkpoint_errors(tmp_path: Path, snapshot) -> None:
    good, _, _ = snapshot
    data = good.read_bytes()
    files = {
        "empty.pkl": b"",
        "text.pkl": b"hello, this is not a pickle\n",
        "truncated.pkl": data[: len(data) // 2],
        "truncated_early.pkl": data[:40],
        "zip.pkl": b"PK\x03\x04" + bytes(60),
        "binary.pkl": bytes(range(256)) * 4,
    }
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            read_official_generator(path)
        assert type(info.value) is CheckpointError, (name, info.value)
        assert str(path) in str(info.value), name
    with pytest.raises(CheckpointError, match="does not exist"):
        read_official_generator(tmp_path / "missing.pkl")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_official_generator(tmp_path)


def test_missing_key_and_wrong_entries(snapshot, tmp_path: Path) -> None:
    path, _, _ = snapshot
    with pytest.raises(CheckpointError) as info:
        read_official_generator(path, key="G_nope")
    message = str(info.value)
    assert "has no 'G_nope'" in message and "'G_ema'" in message and "Is this an EG3D training snapshot?" in message
    with pytest.raises(CheckpointError, match="not a pickled network"):
        read_official_generator(path, key="training_set_kwargs")
    other = tmp_path / "list.pkl"
    fakes.write_pickle_with_global(other, "collections", "OrderedDict", ())
    with pytest.raises(CheckpointError, match="not a pickled network"):
        read_official_generator(other)


# --------------------------------------------------------------------------------------------------
# Pieces of the unpickler


def _restricted_load(data: bytes):
    return nvlabs_pickle.RestrictedUnpickler(io.BytesIO(data), source="<bytes>").load()


def test_numpy_scalars_decode_without_numpy_objects() -> None:
    np = pytest.importorskip("numpy")
    # Written by the installed numpy (>= 2 names numpy._core.multiarray.scalar), including a big-endian dtype.
    values = [
        np.float64(0.044194173824159216),
        np.float32(1.5),
        np.int64(-7),
        np.bool_(True),
        np.dtype(">f8").type(2.5),
    ]
    for value in values:
        decoded = _restricted_load(pickle.dumps(value, protocol=4))
        assert decoded == value.item() and type(decoded) is type(value.item())
    with pytest.raises(UnsafeCheckpointError, match=r"multiarray\._reconstruct"):
        _restricted_load(pickle.dumps(np.zeros(3), protocol=4))


def test_cycles_are_checkpoint_errors() -> None:
    module = PersistentStandIn("training.networks_stylegan2.FullyConnectedLayer", 6, {"_modules": {}})
    module.state["_modules"]["again"] = module
    with pytest.raises(CheckpointError, match="cycle"):
        nvlabs_pickle.module_state_dict(module)
    kwargs: dict = {}
    kwargs["self"] = kwargs
    with pytest.raises(CheckpointError, match="refers to itself"):
        nvlabs_pickle.to_plain(kwargs)


def test_persistent_id_is_refused() -> None:
    with pytest.raises(UnsafeCheckpointError, match="persistent id"):
        _restricted_load(pickle.PROTO + b"\x02" + pickle.NONE + pickle.BINPERSID + pickle.STOP)


def test_build_on_an_allowed_function_is_refused_and_later_loads_still_work(snapshot) -> None:
    """GLOBAL torch._utils._rebuild_tensor_v2, then BUILD (None, {'__defaults__': ()}): the slot-state path would
    set the shared function's defaults, breaking every later load in the process."""
    name = b"__defaults__"
    crafted = (
        pickle.PROTO + b"\x02" + pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n" + pickle.NONE + pickle.EMPTY_DICT
        + pickle.BINUNICODE + len(name).to_bytes(4, "little") + name + pickle.EMPTY_TUPLE + pickle.SETITEM
        + pickle.TUPLE2 + pickle.BUILD + pickle.STOP
    )
    defaults = nvlabs_pickle._rebuild_tensor_v2.__defaults__
    with pytest.raises(UnsafeCheckpointError, match="BUILD"):
        _restricted_load(crafted)
    assert nvlabs_pickle._rebuild_tensor_v2.__defaults__ == defaults
    path, g_ema, _ = snapshot
    loaded = read_official_generator(path)
    assert set(loaded.state_dict) == set(g_ema)


def test_a_repeating_view_cannot_become_a_huge_tensor() -> None:
    """One float64 viewed as 2**29 elements (stride 0) would take 4 GiB once converted; it is refused at once."""
    storage = nvlabs_pickle._Storage(torch.zeros(1, dtype=torch.float64).untyped_storage(), torch.float64)
    with pytest.raises(CheckpointError, match="repeats the elements"):
        nvlabs_pickle._rebuild_tensor_v2(storage, 0, (2**29,), (0,))
    with pytest.raises(CheckpointError, match="repeats the elements"):
        nvlabs_pickle._rebuild_tensor_v2(storage, 0, (4, 4), (0, 0))
    ok = nvlabs_pickle._rebuild_tensor_v2(storage, 0, (1,), (0,))  # one element, stride 0: harmless
    assert ok.shape == (1,)


def test_complex_storages_are_refused(tmp_path: Path) -> None:
    state = tiny_state_dict()
    blob = fakes.legacy_storage_blob(torch.zeros(state["decoder.net.0.weight"].numel(), dtype=torch.complex64))
    path = tmp_path / "complex.pkl"
    fakes.write_snapshot_with_storage_blob(path, state, INIT_KWARGS, ATTRIBUTES, tensor_name="decoder.net.0.weight", blob=blob)
    with pytest.raises(CheckpointError, match="complex"):
        read_official_generator(path)


def test_shared_references_are_walked_once() -> None:
    """A pickle can share one container at every level (64 levels: 2**64 paths); the walk stays linear."""
    import time

    node: list = []
    for _ in range(64):
        node = [node, node]
    started = time.perf_counter()
    plain = nvlabs_pickle.to_plain({"kwargs": node})
    assert time.perf_counter() - started < 1.0
    assert plain["kwargs"][0] is plain["kwargs"][1]
