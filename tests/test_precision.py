"""The precision option: resolution per device, errors, and bf16 renders against float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from demo import cli, devices, precision
from demo.errors import InputError
from demo.tasks.sample import default_conditioning
from demo.weights.store import build_tiny_generator, load_generator

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend this CPU has (True) or lacks (False) native bfloat16."""

    def set_to(value: bool) -> None:
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: value)

    return set_to


def test_resolution_per_device(bf16_cpu):
    bf16_cpu(True)
    assert precision.supported_precisions("cpu") == ["fp32", "bf16"]
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    bf16_cpu(False)
    assert precision.supported_precisions("cpu") == ["fp32"]
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(InputError, match="bf16 is not native on cpu.*AVX-512 BF16 or AMX.*use one of auto, fp32"):
        precision.resolve_precision("bf16", "cpu")
    with pytest.raises(InputError, match="fp16 is not native on cpu"):
        precision.resolve_precision("fp16", "cpu")
    with pytest.raises(InputError, match="unknown 'half'; use one of auto, fp32, bf16, fp16"):
        precision.resolve_precision("half", "cpu")
    assert precision.compute_dtype("bf16") is torch.bfloat16


def _fake_cpuinfo(monkeypatch, path, text):
    monkeypatch.setattr(devices, "CPUINFO", path)
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(text)
    devices.cpu_field.cache_clear()


def test_cpuinfo_flags_are_read(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    try:
        cases = (("fpu avx512f amx_bf16 amx_tile", True), ("fpu avx512f avx512_bf16", True), ("fpu avx2 fma", False))
        for flags, expected in cases:
            _fake_cpuinfo(monkeypatch, cpuinfo, f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n")
            assert precision.cpu_has_native_bf16() is expected
            assert devices.cpu_is_intel() is False
        _fake_cpuinfo(monkeypatch, cpuinfo, "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2\n")
        assert devices.cpu_is_intel() is True
        _fake_cpuinfo(monkeypatch, cpuinfo, None)
        assert precision.cpu_has_native_bf16() is False  # no /proc/cpuinfo: assume none
        assert devices.cpu_is_intel() is False
    finally:
        devices.cpu_field.cache_clear()


def _levels(image: torch.Tensor) -> np.ndarray:
    return (image * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy().astype(np.int16)


def test_bf16_render_is_close_to_fp32_and_leaves_the_model_float32(bf16_cpu):
    bf16_cpu(True)
    model = build_tiny_generator(seed=0)
    z = torch.randn(2, model.z_dim, generator=torch.Generator().manual_seed(3))
    c = default_conditioning(model)
    outputs = {}
    for name in ("fp32", "bf16"):
        assert model.set_precision(name) is model
        torch.manual_seed(7)
        with torch.no_grad():
            outputs[name] = model(z, c)
    assert model.compute_dtype is torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for key in ("image", "image_raw", "image_depth"):
        assert outputs["bf16"][key].dtype == torch.float32
    # Computed differently, and close: the tiny random model's images span about +-8, so bf16's
    # 3 significant digits give up to ~1% of that (the full-size model: benchmarks/bench_official.py).
    diff = (outputs["bf16"]["image"] - outputs["fp32"]["image"]).abs()
    assert 0 < float(diff.max()) < 0.02 * float(outputs["fp32"]["image"].abs().max())
    levels = np.abs(_levels(outputs["bf16"]["image"]) - _levels(outputs["fp32"]["image"]))
    assert np.percentile(levels, 99) <= 3
    # The renderer stays float32: the raw image differs only through the bf16 tri-planes.
    assert float((outputs["bf16"]["image_raw"] - outputs["fp32"]["image_raw"]).abs().max()) < 0.05


def test_bf16_gradients_flow_to_ws_and_weights(bf16_cpu):
    bf16_cpu(True)
    model = build_tiny_generator(seed=0).set_precision("bf16").requires_grad_(True)
    ws = model.mapping(torch.randn(1, model.z_dim), default_conditioning(model)).detach().requires_grad_(True)
    model.synthesis(ws, default_conditioning(model))["image"].square().mean().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
    weight = model.superresolution.block1.conv1.weight
    assert weight.grad is not None and weight.grad.dtype == torch.float32 and weight.grad.abs().sum() > 0


def test_load_generator_checks_precision_first(bf16_cpu, tmp_path):
    bf16_cpu(False)
    with pytest.raises(InputError, match="bf16 is not native"):
        load_generator(str(tmp_path / "missing.pkl"), precision="bf16")  # before the path is looked at
    assert load_generator("tiny", precision="auto").precision == "fp32"
    bf16_cpu(True)
    assert load_generator("tiny", precision="auto").precision == "bf16"


def test_cli_precision_is_recorded_and_checked(bf16_cpu, tmp_path, capsys):
    bf16_cpu(True)
    out = tmp_path / "out"
    assert cli.main(["generate", "--model", "tiny", "--seeds", "1", "--outdir", str(out), "--precision", "bf16"]) == 0
    manifests = list(out.glob("*.json"))
    assert manifests and all(json.loads(path.read_text())["precision"] == "bf16" for path in manifests)
    bf16_cpu(False)
    assert cli.main(["generate", "--model", "tiny", "--seeds", "1", "--outdir", str(out), "--precision", "bf16"]) == 2
    assert "bf16 is not native on cpu" in capsys.readouterr().err


def test_every_command_offers_exactly_the_library_precisions():
    """The CLI spells its --precision choices out (importing demo.precision would import torch at
    start-up); they must stay the library's."""
    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.choices and isinstance(action.choices, dict)).choices
    offered = {
        name: action.choices
        for name, sub in commands.items()
        for action in sub._actions
        if "--precision" in action.option_strings
    }
    assert offered, "no command takes --precision"
    for name, choices in offered.items():
        assert tuple(choices) == precision.CHOICES, name
