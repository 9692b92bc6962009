"""The synthetic dataset task and the ``dataset`` command, on the tiny random model.

What is checked: the documented layout (names, shapes, dtypes, JSON schema, EG3D labels), the view
presets, resuming after a partial run and after SIGKILL at random moments (byte-identical to an
uninterrupted run, no leftovers), identical files for 1 process vs 2 shards (separate commands and
torchrun with gloo), batch-size invariance and extension, the per-sample depth clamp, keypoint
lifting, and bad input (exit status 2 with a clear message, nothing corrupted).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from demo import cli, media
from demo.cameras import Camera, angles_from_camera, project_points
from demo.config import RenderConfig
from demo.errors import InputError
from demo.render.compositing import composite
from demo.render.renderer import render_rays
from demo.tasks import dataset, views
from demo.tasks.sample import z_from_seed
from demo.weights.store import build_tiny_generator

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "demo" / "tasks" / "dataset_annotation.schema.json").read_text())


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_generator(seed=0)


def _make(model, out, **kwargs):
    kwargs.setdefault("model_id", "tiny")
    return dataset.make_dataset(model, out, **kwargs)


def _hashes(folder: Path, *, skip=("settings.json",)) -> dict[str, str]:
    """sha256 of every data file under ``folder`` (relative path -> digest); the writers' lock files say who ran."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in skip and not path.name.startswith(".writer")
    }


def _index_lines(folder: Path) -> list[str]:
    """Every index line of every index file, order-normalised."""
    lines = []
    for path in sorted(folder.glob("index*.jsonl")):
        lines += [line for line in path.read_text().splitlines() if line]
    return sorted(set(lines))


def _sample_files(folder: Path) -> dict[str, str]:
    return {key: value for key, value in _hashes(folder).items() if not key.startswith("index")}


def _env(**extra) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in extra:
            env.pop(name, None)
    return env


# --- layout ----------------------------------------------------------------------------------------


def test_forty_samples_have_the_documented_files_shapes_and_schema(tiny, tmp_path):
    out = tmp_path / "data"
    result = _make(tiny, out, num=40, with_=("depth", "depth-npy", "masks"))
    assert (result.written, result.skipped, result.total) == (40, 0, 40)
    resolution, r = tiny.img_resolution, tiny.neural_rendering_resolution

    names = [f"{i:06d}" for i in range(40)]
    expected = {"images": ".png", "depth": ".png", "masks": ".png", "latents": ".npy", "cameras": ".npy", "annotations": ".json"}
    for sub, suffix in expected.items():
        found = sorted(p.name for p in (out / sub).iterdir() if p.suffix == suffix and p.name != "dataset.json")
        assert found == [name + suffix for name in names], sub
    assert sorted(p.name for p in (out / "depth").glob("*.npy")) == [name + ".npy" for name in names]
    assert not list(out.rglob("*.part"))
    assert not (out / "meshes").exists()

    validator = jsonschema.Draft202012Validator(SCHEMA)
    line_validator = jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": "#/$defs/index_line"})
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    lines = (out / "index.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(40))
    categories = set()
    for i, (name, line) in enumerate(zip(names, lines, strict=True)):
        annotation = json.loads((out / "annotations" / f"{name}.json").read_text())
        validator.validate(annotation)
        record = json.loads(line)
        line_validator.validate(record)
        assert "z" not in record and {**record, "z": annotation["z"]} == annotation
        assert annotation["index"] == i and annotation["seed"] == i and annotation["name"] == name
        np.testing.assert_array_equal(np.array(annotation["z"]), z_from_seed(i, tiny.z_dim)[0])

        image = media.load_png(out / "images" / f"{name}.png")
        assert image.dtype == np.uint8 and image.shape == (resolution, resolution, 3)
        depth = media.load_png(out / "depth" / f"{name}.png")
        assert depth.dtype == np.uint16 and depth.shape == (r, r)
        depth_float = media.load_npy(out / "depth" / f"{name}.npy")
        assert depth_float.dtype == np.float32 and depth_float.shape == (r, r)
        np.testing.assert_array_equal(depth, media.depth_to_uint16(depth_float))
        assert 2.0 < np.median(depth_float) < 3.4  # world units around the camera radius 2.7
        mask = media.load_png(out / "masks" / f"{name}.png")
        assert mask.dtype == np.uint8 and mask.shape == (r, r)
        ws = media.load_npy(out / "latents" / f"{name}.npy")
        assert ws.dtype == np.float32 and ws.shape == (1, tiny.num_ws, tiny.w_dim)
        camera = media.load_npy(out / "cameras" / f"{name}.npy")
        assert camera.dtype == np.float32 and camera.shape == (25,)
        np.testing.assert_array_equal(camera, np.array(annotation["camera"], dtype=np.float32))

        view = annotation["view"]
        categories.add(view["category"])
        yaw, pitch, radius = (float(v) for v in angles_from_camera(Camera.from_label(camera)))
        assert np.degrees(yaw) == pytest.approx(view["yaw_deg"], abs=1e-3)
        assert np.degrees(pitch) == pytest.approx(view["pitch_deg"], abs=1e-3)
        assert radius == pytest.approx(view["radius"], abs=1e-5) and camera[16] == pytest.approx(view["focal"])
        box = annotation["foreground"]
        if box is not None:
            covered = (mask >= 128).mean()
            assert box["area_fraction"] == pytest.approx(covered)
            assert box["bbox_px"] == [v * resolution for v in box["bbox"]]
    assert categories <= {"frontal", "side", "profile", "frontal_wide"} and "frontal" in categories

    labels = json.loads((out / "images" / "dataset.json").read_text())
    assert list(labels) == ["labels"] and len(labels["labels"]) == 40
    for (file_name, label), name in zip(labels["labels"], names, strict=True):
        assert file_name == f"{name}.png" and (out / "images" / file_name).is_file()
        assert len(label) == 25 and all(isinstance(v, float) for v in label)
        np.testing.assert_array_equal(np.array(label, dtype=np.float32), media.load_npy(out / "cameras" / f"{name}.npy"))

    settings = json.loads((out / "settings.json").read_text())
    assert settings["batch_size"] == 4 and settings["with"] == ["depth", "depth-npy", "masks"]
    assert settings["model"]["id"] == "tiny" and len(settings["model"]["weights_sha256"]) == 64


def test_meshes_and_image_size(tiny, tmp_path):
    import trimesh

    out = tmp_path / "data"
    _make(tiny, out, num=3, with_=("meshes",), mesh_formats=("ply", "glb", "obj"), mesh_resolution=32, image_size=16)
    for i in range(3):
        annotation = json.loads((out / "annotations" / f"{i:06d}.json").read_text())
        assert media.load_png(out / "images" / f"{i:06d}.png").shape == (16, 16, 3)
        assert annotation["image_size"] == 16
        assert set(annotation["files"]["meshes"]) == {"ply", "glb", "obj"}
        for path in annotation["files"]["meshes"].values():
            mesh = trimesh.load(out / path, force="mesh")
            assert len(mesh.faces) > 0
        assert "depth" not in annotation["files"] and "mask" not in annotation["files"]
    with pytest.raises(InputError, match="larger than the model"):
        _make(tiny, tmp_path / "big", num=1, image_size=64)


def test_views_are_drawn_per_seed_with_the_mix_shares(tiny):
    panohead = build_tiny_generator(seed=0, panohead=True)
    assert views.draw_view(7, tiny) == views.draw_view(7, tiny)
    drawn = [views.draw_view(seed, tiny) for seed in range(20000)]
    shares = {name: sum(v.category == name for v in drawn) / len(drawn) for name, _ in views.MIX}
    for name, share in views.MIX:
        assert shares[name] == pytest.approx(share, abs=0.015), name
    focal = tiny.config.focal_length
    for view in drawn:
        assert view.pitch_deg == 0 and view.radius == tiny.config.avg_camera_radius
        if view.category in ("frontal", "frontal_wide"):
            assert view.yaw_deg == 0
            assert view.focal == (focal if view.category == "frontal" else focal / 1.5)
        elif view.category == "side":
            assert abs(view.yaw_deg) <= 70 and view.focal == focal
        else:
            assert 70 < abs(view.yaw_deg) <= 90
    assert {v.yaw_deg > 0 for v in drawn if v.category == "profile"} == {True, False}
    assert max(abs(views.draw_view(s, panohead).yaw_deg) for s in range(3000)) > 150
    uniform = [views.draw_view(s, tiny, views="uniform", yaw_range_deg=30, pitch_range_deg=10) for s in range(500)]
    assert max(abs(v.yaw_deg) for v in uniform) <= 30 and max(abs(v.pitch_deg) for v in uniform) <= 10
    assert max(abs(v.yaw_deg) for v in uniform) > 25
    assert {views.draw_view(s, tiny, views="frontal").category for s in range(50)} == {"frontal"}
    with pytest.raises(InputError, match="front of the head"):
        _make(tiny, "/nonexistent/never-written", num=1, views="uniform", yaw_range_deg=120)


# --- determinism --------------------------------------------------------------------------------------


def test_batch_size_does_not_change_the_files_and_extending_matches(tiny, tmp_path):
    reference = None
    for batch in (1, 3, 4):
        out = tmp_path / f"batch{batch}"
        _make(tiny, out, num=7, batch_size=batch, views="uniform")
        files = _hashes(out)
        reference = reference or files
        assert files == reference, f"--batch {batch}"
    # Growing a dataset renders the tail samples in other batches: still the same bytes.
    grown = tmp_path / "grown"
    _make(tiny, grown, num=5, batch_size=3, views="uniform")
    result = _make(tiny, grown, num=7, batch_size=3, views="uniform")
    assert (result.written, result.skipped) == (2, 5)
    assert _hashes(grown) == reference


def test_per_sample_clamp_makes_depth_independent_of_the_batch():
    generator = torch.Generator().manual_seed(0)
    colors = torch.rand(2, 5, 8, 3, generator=generator)
    depths = torch.sort(torch.rand(2, 5, 8, 1, generator=generator), dim=2).values
    depths[1] += 5.0  # item 1 lies much further away
    sigmas = torch.randn(2, 5, 8, 1, generator=generator) * 5
    sigmas[0, 0] = -1e4  # a ray of item 0 with no weight at all
    _, alone, _ = composite(colors[:1], sigmas[:1], depths[:1])
    _, official, _ = composite(colors, sigmas, depths)
    _, per_sample, _ = composite(colors, sigmas, depths, per_sample_clamp=True)
    assert official[0, 0] == depths.max()  # the batch-global clamp: item 1's far depth leaks into item 0
    torch.testing.assert_close(per_sample[:1], alone, rtol=0, atol=0)
    torch.testing.assert_close(per_sample[1:], official[1:], rtol=0, atol=0)

    # Box limits ('auto' ray range): rays that miss the box take the range of their own item's hits.
    options = RenderConfig(ray_start="auto", ray_end="auto", depth_samples=8, importance_samples=0)
    origins = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 6.0]]).view(2, 1, 3).expand(2, 4, 3).contiguous()
    directions = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.0, -1.0], [0.9, 0.0, -1.0], [0.0, 0.8, -1.0]]), dim=-1)
    directions = directions.expand(2, 4, 3).contiguous()
    planes = torch.rand(2, 3, 4, 8, 8, generator=generator)

    def decoder(features):
        mean = features.mean(1)
        return mean[..., :1] * 20 - 5, mean[..., 1:]

    def render(index, **kwargs):
        rngs = [torch.Generator().manual_seed(10 + item) for item in range(index.start, index.stop)]
        return render_rays(planes[index], decoder, origins[index], directions[index], options, rng=rngs, **kwargs)

    both = render(slice(0, 2), per_sample_clamp=True)
    for item in (0, 1):
        alone = render(slice(item, item + 1))
        torch.testing.assert_close(both.depth[item : item + 1], alone.depth, rtol=0, atol=0)
        torch.testing.assert_close(both.features[item : item + 1], alone.features, rtol=0, atol=0)


# --- resuming ---------------------------------------------------------------------------------------


def test_resume_skips_complete_samples_and_redoes_partial_ones(tiny, tmp_path):
    reference = tmp_path / "reference"
    _make(tiny, reference, num=12)
    out = tmp_path / "data"
    _make(tiny, out, num=12)
    # Damage it as a killed run could, and worse: a torn last index line, a leftover .part, a
    # sample whose files are there but whose index line is missing, and a deleted file.
    lines = (out / "index.jsonl").read_text().splitlines(keepends=True)
    (out / "index.jsonl").write_text("".join(lines[:9]) + lines[9][:40])
    (out / "images" / "000010.png.part").write_bytes(b"partial")
    (out / "masks" / "000003.png").unlink()
    progress = []
    result = _make(tiny, out, num=12, progress=lambda f, m: progress.append(m))
    assert result.written == 4 and result.skipped == 8  # 3 (file missing), 9 (torn line), 10, 11
    assert _hashes(out) == _hashes(reference)
    assert not list(out.rglob("*.part"))
    assert any("samples/s" in message and "ETA" in message for message in progress)
    again = _make(tiny, out, num=12)
    assert (again.written, again.skipped) == (0, 12)


def test_a_dataset_is_not_resumed_at_another_precision(tiny, tmp_path):
    out = tmp_path / "data"
    _make(tiny, out, num=2)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["precision"] == "fp32"
    tiny.precision = "bf16"  # as set_precision on a CPU with native bf16
    try:
        with pytest.raises(InputError, match="precision: 'fp32' -> 'bf16'"):
            _make(tiny, out, num=4)
    finally:
        tiny.precision = "fp32"
    del settings["precision"]  # written before the option existed: counts as fp32, resumes
    (out / "settings.json").write_text(json.dumps(settings))
    assert _make(tiny, out, num=2).skipped == 2


@pytest.mark.slow
def test_kill_at_random_moments_then_resume_gives_the_uninterrupted_dataset(tiny, tmp_path):
    reference = tmp_path / "reference"
    _make(tiny, reference, num=40)
    out = tmp_path / "killed"
    args = ("dataset", "--model", "tiny", "--num", 40, "--out", out, "--batch", 4)
    rng = random.Random(1234)
    completed_at_kill = []
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-m", "demo", *map(str, args)], cwd=REPO, env=_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        # Wait until this run is writing (its index grows), then kill it a random moment later.
        start_size = (out / "index.jsonl").stat().st_size if (out / "index.jsonl").exists() else 0
        while process.poll() is None and time.monotonic() < deadline:
            index = out / "index.jsonl"
            if index.exists() and index.stat().st_size > start_size:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.25))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        completed_at_kill.append(len(dataset.read_index(out / "index.jsonl")))
    assert any(0 < count < 40 for count in completed_at_kill), f"no kill landed mid-run: {completed_at_kill}"
    assert cli.main([str(arg) for arg in args]) == 0  # the final resume, in this process
    assert _hashes(out) == _hashes(reference)
    assert not list(out.rglob("*.part"))


# --- sharding ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_shards_give_the_files_of_one_process(tiny, tmp_path, capsys):
    reference = tmp_path / "one"
    _make(tiny, reference, num=20, batch_size=3)
    out = tmp_path / "shards"
    args = ("--model", "tiny", "--num", 20, "--out", out, "--batch", 3)
    shards = [
        subprocess.Popen([sys.executable, "-m", "demo", "dataset", *map(str, args), "--shard", f"{rank}/2"], cwd=REPO,
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    for shard in shards:
        _, stderr = shard.communicate(timeout=90)
        assert shard.returncode == 0, stderr
    assert sorted(p.name for p in out.glob("index*.jsonl")) == ["index.jsonl", "index.rank0.jsonl", "index.rank1.jsonl"]
    assert _index_lines(out) == _index_lines(reference)
    assert _sample_files(out) == _sample_files(reference)
    # Rerun without --shard: nothing to render; the final merged index, rank files removed.
    assert cli.main(["dataset", *map(str, args)]) == 0
    assert "wrote 0 samples, 20 were already complete" in capsys.readouterr().out
    assert _hashes(out) == _hashes(reference)


@pytest.mark.slow
def test_torchrun_with_gloo_gives_the_files_of_one_process(tiny, tmp_path):
    reference = tmp_path / "one"
    _make(tiny, reference, num=20, batch_size=3)
    out = tmp_path / "torchrun"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "demo", "dataset", "--model", "tiny", "-n", "20", "--out", str(out), "--batch", "3",
    ]
    try:
        run = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("torchrun did not finish within a minute here (rendezvous or gloo unavailable)")
    if run.returncode != 0 and ("gloo" in run.stderr.lower() or "rendezvous" in run.stderr.lower() or "socket" in run.stderr.lower()):
        pytest.skip(f"torchrun/gloo cannot run here: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr
    assert not list(out.glob("index.rank*.jsonl"))
    assert _hashes(out) == _hashes(reference)
    assert json.loads((out / "settings.json").read_text()) == json.loads((reference / "settings.json").read_text())


def test_shards_split_the_batches_into_contiguous_runs():
    shares = [dataset._batches_of_rank(10, 3, rank, 3) for rank in range(3)]
    assert [index for share in shares for batch in share for index in batch] == list(range(10))
    assert shares[0] == [[0, 1, 2]] and shares[2] == [[6, 7, 8], [9]]
    assert dataset._batches_of_rank(2, 4, 1, 2) == [[0, 1]] and dataset._batches_of_rank(2, 4, 0, 2) == []


# --- keypoints ----------------------------------------------------------------------------------------


def test_keypoints_of_any_detector_are_lifted_to_3d(tiny, tmp_path):
    def corners_and_centre(image):
        side = image.shape[0]
        return np.array([[side / 2, side / 2], [side * 0.3, side * 0.6], [0.5, 0.5], [side + 3.0, 1.0]])

    out = tmp_path / "lifted"
    _make(tiny, out, num=3, with_=("keypoints", "depth-npy", "masks"), keypoint_detector=corners_and_centre)
    for i in range(3):
        annotation = json.loads((out / "annotations" / f"{i:06d}.json").read_text())
        keypoints = annotation["keypoints"]
        assert keypoints["detector"] == "corners_and_centre" and keypoints["source"] == "detected"
        assert keypoints["ibug68"] is None and keypoints["visible"][3] is False
        camera = np.array(annotation["camera"])
        depth = media.load_npy(out / "depth" / f"{i:06d}.npy")
        mask = media.load_png(out / "masks" / f"{i:06d}.png")
        size, r = annotation["image_size"], annotation["depth_size"]
        assert keypoints["points_3d"][3] is None  # outside the image
        for (x, y), point in zip(keypoints["points_2d"], keypoints["points_3d"], strict=True):
            if point is None:
                continue
            np.testing.assert_allclose(project_points(np.array([point]), camera, size)[0], [x, y], atol=1e-4)
            row, col = int(y / size * r), int(x / size * r)
            assert mask[row, col] >= 128
            assert np.linalg.norm(np.array(point) - camera[[3, 7, 11]]) == pytest.approx(depth[row, col], rel=1e-5)


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num", "0"], "--num must be at least 1"),
        (["--num", "3", "--start-seed", "-1"], "--start-seed must be a non-negative"),
        (["--num", "3", "--views", "sideways"], "Unknown view preset 'sideways'"),
        (["--num", "3", "--with", "depth,normals"], "Unknown --with item(s) 'normals'"),
        (["--num", "3", "--batch", "0"], "--batch must be at least 1"),
        (["--num", "3", "--shard", "2/2"], "Shard 2/2 is not valid"),
        (["--num", "3", "--image-size", "4"], "--image-size must be an integer of at least 8"),
    ],
)
def test_bad_options_exit_2_with_a_message(tmp_path, capsys, extra, message):
    assert cli.main(["dataset", "--model", "tiny", "--out", str(tmp_path / "d"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_folder_holding_another_dataset_is_refused_unless_forced(tiny, tmp_path, capsys):
    out = tmp_path / "data"
    assert cli.main(["dataset", "--model", "tiny", "--num", "5", "--out", str(out)]) == 0
    before = _hashes(out, skip=())
    assert cli.main(["dataset", "--model", "tiny-panohead", "--num", "5", "--out", str(out)]) == 2
    assert "another model" in capsys.readouterr().err
    assert cli.main(["dataset", "--model", "tiny", "--num", "5", "--out", str(out), "--trunc", "0.5"]) == 2
    assert "truncation_psi: 0.7 -> 0.5" in capsys.readouterr().err
    assert cli.main(["dataset", "--model", "tiny", "--num", "5", "--out", str(out), "--batch", "8"]) == 2
    assert "batch_size: 4 -> 8" in capsys.readouterr().err
    assert _hashes(out, skip=()) == before  # nothing touched

    assert cli.main(["dataset", "--model", "tiny-panohead", "--num", "3", "--out", str(out), "--force"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["model"]["id"] == "tiny-panohead" and settings["model"]["family"] == "panohead"
    assert sorted(p.name for p in (out / "images").glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    assert len((out / "index.jsonl").read_text().splitlines()) == 3
    with pytest.raises(InputError, match="--force cannot be combined with --shard"):
        # Separate sharded commands must not delete each other's work.
        _make(tiny, out, num=3, shard=(0, 2), force=True)

    foreign = tmp_path / "foreign"
    (foreign / "images").mkdir(parents=True)
    (foreign / "images" / "000000.png").write_bytes(b"someone else's")
    assert cli.main(["dataset", "--model", "tiny", "--num", "2", "--out", str(foreign)]) == 2
    assert "no settings.json" in capsys.readouterr().err
    assert (foreign / "images" / "000000.png").read_bytes() == b"someone else's"


def test_a_full_disk_stops_cleanly_and_the_run_resumes(tiny, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    _make(tiny, reference, num=10)
    out = tmp_path / "data"
    real_save_png = media.save_png
    calls = {"n": 0}

    def save_png_until_full(path, array):
        calls["n"] += 1
        if calls["n"] > 14:  # 3 PNGs per sample: the disk fills up in sample 4
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save_png(path, array)

    monkeypatch.setattr(media, "save_png", save_png_until_full)
    assert cli.main(["dataset", "--model", "tiny", "--num", "10", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "No space left" in error and "rerun the same command" in error
    records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    for record in records:  # every indexed sample is complete and identical to the reference
        for path in dataset._record_files(record):
            assert (out / path).read_bytes() == (reference / path).read_bytes()
    assert not list(out.rglob("*.part"))

    monkeypatch.setattr(media, "save_png", real_save_png)
    assert cli.main(["dataset", "--model", "tiny", "--num", "10", "--out", str(out)]) == 0
    assert _hashes(out) == _hashes(reference)


def test_a_second_writer_is_refused_and_told_who_holds_the_folder(tiny, tmp_path, capsys):
    import fcntl

    out = tmp_path / "data"
    out.mkdir()
    with open(out / dataset.LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on render-box since 2026-12-06 03:00:00: python -m demo dataset ...")
        held.flush()
        with pytest.raises(InputError, match="pid 4242 on render-box.*--shard R/W"):
            _make(tiny, out, num=2)
        assert cli.main(["dataset", "--model", "tiny", "--num", "2", "--out", str(out)]) == 2
        assert "Another process is writing this dataset" in capsys.readouterr().err
        assert not (out / "images").exists()  # nothing was rendered
        _make(tiny, out, num=2, shard=(1, 2))  # another shard has its own lock
    result = _make(tiny, out, num=2)  # released: the folder is usable again (and resumes shard 1's work)
    assert result.total == 2 and result.skipped == 2 and result.written == 0
    assert "pid" in (out / dataset.LOCK_FILE).read_text()
