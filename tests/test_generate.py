"""Seed -> faces: the sample task and the `generate` command on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from demo import media
from demo.cli import main
from demo.errors import InputError
from demo.tasks.sample import parse_seeds, sample_images, z_from_seed

pytestmark = pytest.mark.usefixtures("single_thread")


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds(" 5 ") == [5]
    for bad in ("", "a", "1-", "3-1", "-2", "1,,2", "99999999999"):
        with pytest.raises(InputError):
            parse_seeds(bad)


def test_z_from_seed_matches_official_scripts():
    assert np.array_equal(z_from_seed(42, 512), np.random.RandomState(42).randn(1, 512))
    with pytest.raises(InputError):
        z_from_seed(-1, 8)


def test_a_seed_renders_the_same_alone_and_in_a_batch(tiny_generator):
    alone = sample_images(tiny_generator, seeds=[3])
    batch = sample_images(tiny_generator, seeds=[1, 3], batch_size=2)
    assert np.allclose(alone.ws[0], batch.ws[1], atol=1e-6)  # matmul blocking differs by batch size
    assert np.allclose(alone.images[0], batch.images[1], atol=1e-5)
    assert alone.images.shape == (1, 3, 32, 32) and alone.depth.shape == (1, 1, 16, 16)
    assert 0.0 <= alone.alpha.min() and alone.alpha.max() <= 1.0 + 1e-6


def test_latent_inputs(tiny_generator):
    from_seeds = sample_images(tiny_generator, seeds=[4, 5])
    from_z = sample_images(tiny_generator, z=from_seeds.z)
    from_ws = sample_images(tiny_generator, ws=from_seeds.ws)
    assert np.array_equal(from_seeds.ws, from_z.ws) and np.array_equal(from_seeds.ws, from_ws.ws)
    assert from_ws.z is None
    with pytest.raises(InputError, match="ws must have shape"):
        sample_images(tiny_generator, ws=np.zeros((1, 3, 16)))
    with pytest.raises(ValueError, match="exactly one"):
        sample_images(tiny_generator, seeds=[1], ws=from_seeds.ws)


def _run(tmp_path, *args):
    return main(["generate", "--model", "tiny", *args])


def test_generate_writes_documented_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(tmp_path, "--seeds", "0-1,7", "--shapes", "--shape-res", "32", "--shape-format", "glb,ply,obj,mrc", "--outdir", str(out)) == 0
    assert "RANDOM" in capsys.readouterr().err
    for stem in ("seed0000", "seed0001", "seed0007"):
        image = media.load_png(out / f"{stem}.png")
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert media.load_png(out / f"{stem}_raw.png").shape == (16, 16, 3)
        depth = media.load_png(out / f"{stem}_depth.png")
        assert depth.shape == (16, 16) and depth.dtype == np.uint16
        assert media.load_png(out / f"{stem}_depth_color.png").shape == (16, 16, 3)
        assert media.load_png(out / f"{stem}_alpha.png").dtype == np.uint8
        z = np.load(out / f"{stem}_z.npy")
        assert z.shape == (1, 16) and z.dtype == np.float64
        assert np.array_equal(z, np.random.RandomState(int(stem[4:])).randn(1, 16))
        ws = np.load(out / f"{stem}_ws.npy")
        assert ws.shape == (1, 8, 16) and ws.dtype == np.float32
        camera = np.load(out / f"{stem}_camera.npy")
        assert camera.shape == (25,) and camera.dtype == np.float32
        for ext in ("glb", "ply", "obj"):
            assert len(trimesh.load(out / f"{stem}.{ext}", force="mesh").faces) > 0
        assert (out / f"{stem}.mrc").is_file()
    manifest = json.loads((out / "generate.json").read_text())
    assert manifest["random_weights"] is True and set(manifest["samples"]) == {"seed0000", "seed0001", "seed0007"}
    assert not list(out.glob("*.part"))


def test_generate_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert _run(tmp_path, "--seeds", "2-3", "--yaw-deg", "25", "--outdir", str(tmp_path / name)) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir() if p.suffix in (".png", ".npy"))
    assert len(files) == 16
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_generate_from_latent_files(tmp_path):
    assert _run(tmp_path, "--seeds", "5", "--outdir", str(tmp_path / "seed")) == 0
    assert _run(tmp_path, "--ws", str(tmp_path / "seed" / "seed0005_ws.npy"), "--outdir", str(tmp_path / "ws")) == 0
    assert (tmp_path / "seed" / "seed0005.png").read_bytes() != b""
    assert np.array_equal(np.load(tmp_path / "ws" / "sample0000_ws.npy"), np.load(tmp_path / "seed" / "seed0005_ws.npy"))
    assert not (tmp_path / "ws" / "sample0000_z.npy").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--seeds", "3-1"],
        ["--seeds", "x"],
        ["--shape-res", "4"],
        ["--shape-format", "stl"],
        ["--trunc", "nan?"],
        ["--model", "no-such-model"],
        ["--ws", "missing.npy"],
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, args):
    out = tmp_path / "out"
    argv = ["generate", "--model", "tiny", *args, "--outdir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "error" in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_unwritable_outdir(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["generate", "--model", "tiny", "--outdir", str(blocker / "sub")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_a_sample_without_a_surface_keeps_its_images_and_the_cli_says_why(tmp_path, capsys):
    from demo.cli import main

    assert main(["generate", "--model", "tiny", "--seeds", "1,2", "--shapes", "--shape-res", "32", "--shape-level", "1e9",
                 "--outdir", str(tmp_path), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "seed0001: no mesh" in err and "--shape-level" in err
    assert (tmp_path / "seed0002.png").is_file() and not (tmp_path / "seed0002.glb").exists()


def test_progress_goes_through_the_mesh_step(tmp_path):
    from demo.tasks.generate import generate_to_folder
    from demo.weights.store import build_tiny_generator

    calls = []
    generate_to_folder(build_tiny_generator(), tmp_path, seeds=[1, 2], shapes=True, shape_resolution=32,
                       progress=lambda fraction, message: calls.append((fraction, message)))
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    mesh_steps = [(f, m) for f, m in calls if "density grid" in m or "colours" in m]
    assert {m.split(":")[0] for _, m in mesh_steps} == {"seed0001", "seed0002"}
    assert all(0.3 < f < 1.0 for f, _ in mesh_steps)  # between the render and the end, not stuck at 30 %
