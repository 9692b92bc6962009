"""The command line: ``python -m demo models | download | convert``.

The converter (``demo.weights.store.convert_checkpoint``) and ``registry.download`` are replaced by
stubs, so these tests need neither real checkpoints nor the network.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest

from demo import cli
from demo.errors import CheckpointError
from demo.weights import registry

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ckpt_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "checkpoints"
    monkeypatch.setenv(registry.CHECKPOINTS_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def convert_calls(monkeypatch) -> list[dict]:
    """Put a stub ``demo.weights.store`` whose ``convert_checkpoint`` records its arguments.

    A stub module rather than the real one: the CLI is tested without torch or a converter.
    ``test_real_converter_signature`` checks that the real function takes the same arguments.
    """
    import demo.weights

    store = types.ModuleType("demo.weights.store")
    monkeypatch.setitem(sys.modules, "demo.weights.store", store)
    monkeypatch.setattr(demo.weights, "store", store, raising=False)
    calls: list[dict] = []

    def fake_convert(source, out_dir=None, *, checkpoint_id=None, expected_sha256=None, key="G_ema", progress=None):
        calls.append(
            {
                "source": Path(source),
                "out_dir": out_dir,
                "checkpoint_id": checkpoint_id,
                "sha256": expected_sha256,
                "key": key,
            }
        )
        if not Path(source).is_file():
            raise CheckpointError(f"{source} does not exist")
        if progress is not None:
            progress(1.0, "converted")
        return Path(out_dir) if out_dir is not None else Path(source).with_suffix("")

    store.convert_checkpoint = fake_convert
    return calls


def test_real_converter_signature():
    store = pytest.importorskip("demo.weights.store", reason="demo.weights.store not written yet")
    parameters = inspect.signature(store.convert_checkpoint).parameters
    assert list(parameters)[:2] == ["source", "out_dir"]
    for name in ("checkpoint_id", "expected_sha256", "key", "progress"):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_models_lists_ids(ckpt_dir, capsys):
    converted = ckpt_dir / "eg3d-ffhq512-128"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    (converted / "generator.safetensors").write_bytes(b"")
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for entry in registry.list_entries():
        assert entry.id in out
        assert entry.file_name in out
    assert "377.6 MB" in out
    assert "converted" in out
    assert str(ckpt_dir) in out


def test_convert_missing_file_is_a_user_error(ckpt_dir, convert_calls, capsys):
    assert cli.main(["convert", "missing.pkl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "missing.pkl" in err
    assert "Traceback" not in err
    assert convert_calls[0]["source"] == Path("missing.pkl")


def test_convert_path_guesses_id(ckpt_dir, convert_calls, tmp_path, capsys):
    pkl = tmp_path / "ffhqrebalanced512-128.pkl"
    pkl.write_bytes(b"x")
    assert cli.main(["convert", str(pkl)]) == 0
    call = convert_calls[0]
    assert call == {
        "source": pkl,
        "out_dir": ckpt_dir / "eg3d-ffhqrebalanced512-128",
        "checkpoint_id": "eg3d-ffhqrebalanced512-128",
        "sha256": None,
        "key": "G_ema",
    }
    assert "converted" in capsys.readouterr().out


def test_convert_options(ckpt_dir, convert_calls, tmp_path):
    pkl = tmp_path / "network-snapshot-000400.pkl"
    pkl.write_bytes(b"x")
    digest = "ab" * 32
    args = [
        "convert",
        str(pkl),
        "--out",
        str(tmp_path / "out"),
        "--id",
        "eg3d-ffhq512-128",
        "--sha256",
        digest.upper(),
        "--key",
        "G",
    ]
    assert cli.main(args) == 0
    assert convert_calls[0] == {
        "source": pkl,
        "out_dir": tmp_path / "out",
        "checkpoint_id": "eg3d-ffhq512-128",
        "sha256": digest,
        "key": "G",
    }


def test_convert_unknown_file_without_id_lets_converter_choose(ckpt_dir, convert_calls, tmp_path):
    pkl = tmp_path / "snapshot.pkl"
    pkl.write_bytes(b"x")
    assert cli.main(["convert", str(pkl)]) == 0
    assert convert_calls[0]["out_dir"] is None and convert_calls[0]["checkpoint_id"] is None


def test_convert_registry_id(ckpt_dir, convert_calls):
    original = registry.original_path("eg3d-afhqcats512-128")
    original.parent.mkdir(parents=True)
    original.write_bytes(b"x")
    assert cli.main(["convert", "eg3d-afhqcats512-128"]) == 0
    assert convert_calls[0]["source"] == original
    assert convert_calls[0]["out_dir"] == ckpt_dir / "eg3d-afhqcats512-128"
    assert convert_calls[0]["checkpoint_id"] == "eg3d-afhqcats512-128"


def test_convert_registry_id_not_downloaded(ckpt_dir, convert_calls, capsys):
    assert cli.main(["convert", "eg3d-ffhq512-128"]) == 2
    err = capsys.readouterr().err
    assert "python -m demo download eg3d-ffhq512-128" in err
    assert convert_calls == []


def test_bad_sha256_is_a_usage_error(ckpt_dir, convert_calls, capsys):
    assert cli.main(["convert", "x.pkl", "--sha256", "xyz"]) == 2
    assert "64 hexadecimal digits" in capsys.readouterr().err
    assert convert_calls == []


@pytest.mark.parametrize("no_convert", [True, False])
def test_download(ckpt_dir, convert_calls, monkeypatch, capsys, no_convert):
    seen = {}

    def fake_download(checkpoint_id, *, dest_dir=None, progress=None, token=None):
        seen.update(checkpoint_id=checkpoint_id, token=token)
        path = registry.original_path(checkpoint_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        progress(0.5, "half")
        progress(1.0, "done")
        return path

    monkeypatch.setattr(registry, "download", fake_download)
    argv = ["download", "eg3d-ffhq512-128", "--token", "hf_x"] + (["--no-convert"] if no_convert else [])
    assert cli.main(argv) == 0
    assert seen == {"checkpoint_id": "eg3d-ffhq512-128", "token": "hf_x"}
    out = capsys.readouterr().out
    assert str(registry.original_path("eg3d-ffhq512-128")) in out
    if no_convert:
        assert convert_calls == []
    else:
        assert convert_calls[0]["out_dir"] == ckpt_dir / "eg3d-ffhq512-128"
        assert convert_calls[0]["checkpoint_id"] == "eg3d-ffhq512-128"


def test_download_failure_is_a_user_error(ckpt_dir, monkeypatch, capsys):
    def offline(checkpoint_id, **kwargs):
        raise CheckpointError("Could not download; run `python -m demo convert /path/to/file.pkl`")

    monkeypatch.setattr(registry, "download", offline)
    assert cli.main(["download", "eg3d-ffhq512-128", "--no-convert"]) == 2
    assert "error: Could not download" in capsys.readouterr().err


def test_unknown_id_and_usage_errors(ckpt_dir, capsys):
    assert cli.main(["download", "eg3d-nope"]) == 2
    assert "eg3d-ffhq512-128" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["no-such-command"]) == 2


def test_every_command_has_help(capsys):
    for command in cli.COMMANDS:
        assert cli.main([command.name, "--help"]) == 0
        assert command.name in capsys.readouterr().out


def test_python_m_demo_help():
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--help"], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in ("models", "download", "convert"):
        assert name in result.stdout


def test_the_installed_command_works_from_any_folder(tmp_path):
    """``pip install -e .`` (as .ci/run does) gives ``face3d`` and ``python -m demo`` outside the repository."""
    import shutil
    import subprocess
    import sys

    face3d = shutil.which("face3d")
    if face3d is None:
        pytest.skip("the package is not installed: pip install -e . (.ci/run does)")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = subprocess.run([face3d, "--help"], cwd=elsewhere, capture_output=True, text=True, check=True)
    assert shown.stdout.startswith("usage: face3d")
    made = subprocess.run([face3d, "generate", "--model", "tiny", "--seeds", "1", "--outdir", "out", "--device", "cpu"],
                          cwd=elsewhere, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert (elsewhere / "out" / "seed0001.png").is_file()
    module = subprocess.run([sys.executable, "-m", "demo", "models"], cwd=elsewhere, capture_output=True, text=True)
    assert module.returncode == 0 and "eg3d-ffhq512-128" in module.stdout
