"""demo.media: array conversions, PNG / NPY / mesh / MRC files, atomic writes, output names."""

from __future__ import annotations

import os
import pickle

import mrcfile
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from scipy.spatial import cKDTree

from demo import media
from demo.errors import InputError
from demo.media import (
    srgb_to_linear,
    DEPTH_PNG_SCALE,
    alpha_to_uint8,
    check_writable_dir,
    colorize_depth,
    depth_from_uint16,
    depth_to_uint16,
    image_to_uint8,
    load_npy,
    load_png,
    output_name,
    save_npy,
    save_png,
    write_mesh,
    write_mrc,
)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


# ---------------------------------------------------------------------------------------------
# image_to_uint8


def test_image_to_uint8_hand_values_truncate_not_round():
    # x -> x * 127.5 + 128, clamped to [0, 255], then truncated:
    #   -1.5 -> -63.25 -> 0;  -1 -> 0.5 -> 0;  -0.99 -> 1.775 -> 1 (rounding: 2);  0 -> 128;
    #   0.5 -> 191.75 -> 191 (rounding: 192);  0.99 -> 254.225 -> 254;  0.999 -> 255.37 -> 255;  1 -> 255.5 -> 255
    values = [-1.5, -1.0, -0.99, 0.0, 0.5, 0.99, 0.999, 1.0]
    expected = [0, 0, 1, 128, 191, 254, 255, 255]
    image = np.array(values, dtype=np.float32).reshape(1, 1, 1, -1).repeat(3, axis=1)  # (1, 3, 1, 8)
    out = image_to_uint8(image)
    assert out.dtype == np.uint8
    assert out.shape == (1, 1, 8, 3)
    np.testing.assert_array_equal(out[0, 0, :, 0], expected)
    np.testing.assert_array_equal(out[0, 0, :, 1], expected)


def test_image_to_uint8_matches_the_official_torch_expression_bit_for_bit():
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8
    official = (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(image_to_uint8(images), official)
    np.testing.assert_array_equal(image_to_uint8(images.numpy()), official)


def test_image_to_uint8_shapes():
    assert image_to_uint8(torch.zeros(2, 3, 4, 5)).shape == (2, 4, 5, 3)
    assert image_to_uint8(torch.zeros(3, 4, 5)).shape == (4, 5, 3)
    assert image_to_uint8(torch.zeros(2, 1, 4, 5)).shape == (2, 4, 5)
    assert image_to_uint8(np.zeros((1, 4, 5), np.float32)).shape == (4, 5)
    rgb = torch.stack([torch.full((4, 5), -1.0), torch.zeros(4, 5), torch.ones(4, 5)])
    np.testing.assert_array_equal(image_to_uint8(rgb)[2, 3], [0, 128, 255])  # channel order kept
    with pytest.raises(ValueError):
        image_to_uint8(torch.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError):
        image_to_uint8(torch.zeros(4, 4))


# ---------------------------------------------------------------------------------------------
# Depth, alpha, colour preview


def test_depth_uint16_round_trip_within_1e4_world_units():
    depth = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 3 + 2  # [2, 5]
    counts = depth_to_uint16(depth)
    assert counts.dtype == np.uint16
    assert counts.shape == (2, 16, 16)
    back = depth_from_uint16(counts)
    assert back.dtype == np.float32
    assert np.abs(back - depth[:, 0].numpy()).max() <= 0.5e-4 + 1e-6
    assert depth_to_uint16(np.float32([[2.7]]))[0, 0] == 27000


def test_depth_uint16_no_surface_and_clipping():
    depth = np.array([[np.inf, np.nan, -np.inf, 1.0], [7.0, 6.5535, 1e300, -0.5]])
    counts = depth_to_uint16(depth[None])
    assert counts.shape == (2, 4)
    np.testing.assert_array_equal(counts, [[0, 0, 0, 10000], [65535, 65535, 65535, 0]])
    back = depth_from_uint16(counts)
    assert np.isnan(back[0, :3]).all() and np.isnan(back[1, 3])
    assert back[0, 3] == pytest.approx(1.0)
    assert back[1, 0] == pytest.approx(65535 / DEPTH_PNG_SCALE)
    with pytest.raises(ValueError):
        depth_from_uint16(counts.astype(np.int32))


def test_alpha_to_uint8():
    alpha = np.array([[0.0, 0.5, 1.0, 1.2], [-0.1, 0.2, 0.998, np.nan]])
    out = alpha_to_uint8(torch.from_numpy(alpha)[None, None])
    assert out.dtype == np.uint8 and out.shape == (1, 2, 4)
    np.testing.assert_array_equal(out[0], [[0, 128, 255, 255], [0, 51, 254, 0]])


def test_colorize_depth_background_black_and_near_brighter():
    depth = np.tile(np.linspace(2.0, 3.0, 8), (6, 1))  # near on the left
    alpha = np.ones_like(depth)
    alpha[0] = 0.0  # background row
    depth[1, 3] = np.nan
    out = colorize_depth(depth, alpha)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    assert (out[0] == 0).all()
    assert (out[1, 3] == 0).all()
    luminance = _luminance(out[2:])
    assert (np.diff(luminance, axis=1) < 0).all()  # strictly darker with distance
    assert (out[2:] > 0).any(axis=-1).all()  # the farthest colour is not background black
    # Background depths do not stretch the range: a far-away background still leaves the face spanning it.
    depth_bg = depth.copy()
    depth_bg[0] = 100.0
    np.testing.assert_array_equal(colorize_depth(depth_bg, alpha), out)


def test_colorize_depth_constant_and_explicit_range():
    with np.errstate(all="raise"):
        out = colorize_depth(torch.full((1, 1, 4, 4), 2.5))
    assert out.shape == (4, 4, 3) and (out.max(axis=-1) > 0).all()
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 1
    # Outside [near, far] the end colours are used.
    ends = colorize_depth(np.array([[1.0, 2.0, 3.0, 4.0]]), near=2.0, far=3.0)
    np.testing.assert_array_equal(ends[0, 0], ends[0, 1])
    np.testing.assert_array_equal(ends[0, 2], ends[0, 3])
    assert _luminance(ends[0, 1]) > _luminance(ends[0, 2])
    assert (colorize_depth(np.full((3, 3), np.inf)) == 0).all()


# ---------------------------------------------------------------------------------------------
# PNG


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 256, (5, 7, 4), dtype=np.uint8),
        np.random.default_rng(2).integers(0, 256, (5, 7), dtype=np.uint8),
        np.random.default_rng(3).integers(0, 65536, (5, 7), dtype=np.uint16),
    ],
    ids=["rgb", "rgba", "gray", "uint16"],
)
def test_png_round_trip_and_identical_bytes(tmp_path, array):
    path = save_png(tmp_path / "sub" / "a.png", array)
    assert path == tmp_path / "sub" / "a.png"
    loaded = load_png(path)
    assert loaded.dtype == array.dtype
    np.testing.assert_array_equal(loaded, array)
    save_png(tmp_path / "b.png", array.copy())
    assert path.read_bytes() == (tmp_path / "b.png").read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "b.png", "sub"]


def test_png_uint16_keeps_values_above_255_and_is_16_bit(tmp_path):
    array = np.array([[0, 255, 256, 27000, 65535]], dtype=np.uint16)
    path = save_png(tmp_path / "depth.png", array)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(load_png(path), array)


def test_save_png_rejects_floats_and_bad_shapes(tmp_path):
    with pytest.raises(ValueError):
        save_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        save_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint16))
    assert not (tmp_path / "x.png").exists()


def test_load_png_unreadable_is_input_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="bad.png"):
        load_png(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_png(tmp_path / "missing.png")


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _half_write_then_fail(*args, **kwargs):
    """Stands in for a writer: leaves a partial file behind, then fails like a full disk would."""
    target = next(a for a in (*args, *kwargs.values()) if isinstance(a, os.PathLike | str) or hasattr(a, "write"))
    if hasattr(target, "write"):
        target.write(b"partial")
    else:
        with open(target, "wb") as file:
            file.write(b"partial")
    raise OSError(28, "No space left on device")


def _fail_png(monkeypatch):
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: _half_write_then_fail(fp))
    return lambda path: save_png(path, np.zeros((4, 4, 3), np.uint8))


def _fail_npy(monkeypatch):
    monkeypatch.setattr(np, "save", lambda file, arr, **k: _half_write_then_fail(file))
    return lambda path: save_npy(path, np.zeros(3))


def _fail_mrc(monkeypatch):
    def fail(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mrcfile.mrcobject.MrcObject, "update_header_stats", fail)
    return lambda path: write_mrc(path, np.zeros((4, 4, 4), np.float32))


def _fail_mesh(monkeypatch):
    monkeypatch.setattr(media.Path, "write_bytes", lambda self, data: _half_write_then_fail(self))
    box = trimesh.creation.box()
    return lambda path: write_mesh(path, box.vertices, box.faces)


@pytest.mark.parametrize(
    ("name", "make_failing_writer"),
    [("a.png", _fail_png), ("a.npy", _fail_npy), ("a.mrc", _fail_mrc), ("a.glb", _fail_mesh)],
)
def test_failed_write_leaves_no_final_file_and_no_part(tmp_path, monkeypatch, name, make_failing_writer):
    write = make_failing_writer(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        write(tmp_path / "new" / name)
    assert list((tmp_path / "new").iterdir()) == []
    # An existing file under the final name survives a failed overwrite untouched.
    with open(tmp_path / name, "wb") as file:  # not Path.write_bytes, which one of the fakes replaces
        file.write(b"previous good file")
    with pytest.raises(OSError, match="No space"):
        write(tmp_path / name)
    with open(tmp_path / name, "rb") as file:
        assert file.read() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "new"])


# ---------------------------------------------------------------------------------------------
# NPY


def test_npy_round_trip_from_tensor_and_shape_checks(tmp_path):
    ws = torch.randn(2, 14, 512)
    path = save_npy(tmp_path / "ws.npy", ws)
    loaded = load_npy(path, shape=(-1, 14, 512))
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, ws.numpy())
    load_npy(path, shape=(2, -1, -1))
    with pytest.raises(InputError, match=r"shape \(2, 13, 512\), expected \(any, 14, 512\)"):
        load_npy(save_npy(tmp_path / "bad.npy", np.zeros((2, 13, 512))), shape=(-1, 14, 512))
    with pytest.raises(InputError, match=r"\(1, 512\)"):
        load_npy(path, shape=(1, 512))  # wrong number of axes
    with pytest.raises(ValueError):
        load_npy(path, shape=(-2, 14, 512))


def test_save_npy_suffix_kept_and_objects_refused(tmp_path):
    path = save_npy(tmp_path / "latent.data", np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latent.data"]  # np.save did not add ".npy"
    np.testing.assert_array_equal(load_npy(path), np.arange(3))
    with pytest.raises(ValueError):
        save_npy(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))


def test_load_npy_refuses_non_npy_files(tmp_path):
    text = tmp_path / "notes.npy"
    text.write_text("hello")
    with pytest.raises(InputError, match="is not a .npy array file"):
        load_npy(text)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.zeros(2))
    with pytest.raises(InputError, match="is not a .npy array file"):
        load_npy(npz)
    with pytest.raises(InputError, match="does not exist"):
        load_npy(tmp_path / "missing.npy")


class _Sentinel:
    """Unpickling this would set ran = True."""

    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Sentinel.ran = True
    return "executed"


def test_load_npy_never_unpickles(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([_Sentinel()], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="is not a .npy array file.*pickle"):
        load_npy(path)
    raw = tmp_path / "raw.npy"
    raw.write_bytes(pickle.dumps(_Sentinel()))
    with pytest.raises(InputError, match="is not a .npy array file"):
        load_npy(raw)
    assert not _Sentinel.ran


# ---------------------------------------------------------------------------------------------
# Meshes


def _colored_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    vertices = sphere.vertices.astype(np.float32) * 0.25
    colors = np.random.default_rng(0).integers(0, 256, (len(vertices), 4), dtype=np.uint8)
    return vertices, sphere.faces, colors


def _reload(path) -> trimesh.Trimesh:
    # No force="mesh": that route rebuilds normals. A .glb loads as a one-mesh Scene.
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return loaded


def _match_by_position(reference: np.ndarray, loaded: np.ndarray) -> np.ndarray:
    """Index into ``loaded`` of each reference vertex; positions must agree to 1e-6 (.obj is text)."""
    distance, order = cKDTree(loaded).query(reference)
    assert distance.max() < 1e-6
    assert len(np.unique(order)) == len(reference)
    return order


@pytest.mark.parametrize("suffix", [".glb", ".ply", ".obj"])
def test_write_mesh_colours_survive_reload(tmp_path, suffix):
    vertices, faces, colors = _colored_sphere()
    path = write_mesh(tmp_path / f"mesh{suffix}", vertices, faces, vertex_colors=colors)
    assert path.suffix == suffix and path.is_file()
    mesh = _reload(path)
    assert len(mesh.vertices) == len(vertices)
    assert len(mesh.faces) == len(faces)
    order = _match_by_position(vertices, np.asarray(mesh.vertices))
    if suffix == ".glb":  # glTF COLOR_0 is linear: sRGB converted, stored as floats, alpha kept
        loaded_linear = np.asarray(mesh.visual.vertex_attributes["color"])[order]
        np.testing.assert_allclose(loaded_linear[:, :3], srgb_to_linear(colors[:, :3]), atol=1e-6)
        np.testing.assert_allclose(loaded_linear[:, 3], colors[:, 3] / 255, atol=1e-6)
    else:
        assert mesh.visual.kind == "vertex"
        loaded_colors = np.asarray(mesh.visual.vertex_colors)[order]
        if suffix == ".obj":  # 'v x y z r g b': RGB as text floats, alpha dropped
            np.testing.assert_array_equal(loaded_colors[:, :3], colors[:, :3])
        else:
            np.testing.assert_array_equal(loaded_colors, colors)
    # Same triangles, same winding.
    np.testing.assert_array_equal(order[faces], np.asarray(mesh.faces))


def test_write_mesh_glb_is_linear_unlit_and_non_metallic(tmp_path):
    """glTF defines COLOR_0 as linear; an unlit, non-metallic material keeps viewers from washing the colours out."""
    import json
    import struct

    vertices, faces, colors = _colored_sphere()
    data = write_mesh(tmp_path / "mesh.glb", vertices, faces, vertex_colors=colors[:, :3]).read_bytes()
    magic, version, total = struct.unpack("<4sII", data[:12])
    assert (magic, version, total) == (b"glTF", 2, len(data))
    length, kind = struct.unpack("<I4s", data[12:20])
    assert kind == b"JSON"
    document = json.loads(data[20 : 20 + length])
    primitive = document["meshes"][0]["primitives"][0]
    color = document["accessors"][primitive["attributes"]["COLOR_0"]]
    assert (color["componentType"], color["type"]) == (5126, "VEC3")  # float, RGB: opaque by definition
    material = document["materials"][primitive["material"]]
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0 and "KHR_materials_unlit" in material["extensions"]
    assert "KHR_materials_unlit" in document["extensionsUsed"]
    position = document["accessors"][primitive["attributes"]["POSITION"]]
    np.testing.assert_allclose(position["min"], vertices.min(0)) and np.testing.assert_allclose(position["max"], vertices.max(0))
    np.testing.assert_allclose(srgb_to_linear(np.array([[0, 10, 255]], np.uint8)), [[0.0, 10 / 255 / 12.92, 1.0]], atol=1e-7)


@pytest.mark.parametrize("suffix", [".glb", ".ply", ".obj"])
def test_write_mesh_normals_are_written_when_given(tmp_path, suffix):
    vertices, faces, _ = _colored_sphere()
    normals = np.tile(np.float32([0.0, 0.0, 1.0]), (len(vertices), 1))  # not what trimesh would compute
    path = write_mesh(tmp_path / f"n{suffix}", vertices, faces, vertex_normals=normals)
    np.testing.assert_allclose(_reload(path).vertex_normals, normals, atol=1e-6)
    plain = write_mesh(tmp_path / f"plain{suffix}", vertices, faces).read_bytes()
    assert b"NORMAL" not in plain and b"nx" not in plain and b"\nvn " not in plain


def test_write_mesh_errors(tmp_path):
    vertices, faces, colors = _colored_sphere()
    with pytest.raises(ValueError, match="no faces"):
        write_mesh(tmp_path / "empty.glb", vertices, np.zeros((0, 3), np.int64))
    with pytest.raises(ValueError, match=r"\.glb.*\.ply.*\.obj"):
        write_mesh(tmp_path / "mesh.stl", vertices, faces)
    with pytest.raises(ValueError):
        write_mesh(tmp_path / "mesh.glb", vertices, faces, vertex_colors=colors.astype(np.float32) / 255)
    with pytest.raises(ValueError):
        write_mesh(tmp_path / "mesh.glb", vertices, faces + len(vertices))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# MRC


def test_write_mrc_round_trip(tmp_path):
    volume = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    path = write_mrc(tmp_path / "shape.mrc", volume, voxel_size=1 / 255)
    with mrcfile.open(path, permissive=False) as mrc:
        assert mrc.header.mode == 2
        assert mrc.data.dtype == np.float32
        assert mrc.data.shape == (6, 5, 4)
        np.testing.assert_array_equal(mrc.data, volume)
        np.testing.assert_allclose(mrc.voxel_size.tolist(), [1 / 255] * 3, rtol=1e-6)
    with open(os.devnull, "w") as devnull:
        assert mrcfile.validate(str(path), print_file=devnull)
    path = write_mrc(tmp_path / "plain.mrc", torch.from_numpy(volume).double())
    with mrcfile.open(path) as mrc:
        assert mrc.data.dtype == np.float32
        np.testing.assert_array_equal(mrc.data, volume)
    with pytest.raises(ValueError):
        write_mrc(tmp_path / "flat.mrc", np.zeros((4, 4), np.float32))


# ---------------------------------------------------------------------------------------------
# Names and output folders


def test_output_name():
    assert output_name(42, ext="png") == "seed0042.png"
    assert output_name(42, suffix="_yaw-30", ext="glb") == "seed0042_yaw-30.glb"
    assert output_name(0, ext="npy") == "seed0000.npy"
    assert output_name(123456, ext="png") == "seed123456.png"
    assert output_name(index=7, suffix="_depth", ext="png") == "sample0007_depth.png"
    assert output_name(3, index=7, ext="png") == "seed0003.png"
    for bad in ({"seed": -1, "ext": "png"}, {"ext": "png"}, {"seed": 1, "ext": ".png"}, {"seed": 1, "ext": ""}):
        with pytest.raises(ValueError):
            output_name(**bad)
    with pytest.raises(ValueError):
        output_name(1, suffix="/../x", ext="png")


def test_check_writable_dir_creates_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_writable_dir(target) == target
    assert target.is_dir() and list(target.iterdir()) == []
    assert check_writable_dir(target) == target  # existing folder is fine


def test_check_writable_dir_under_a_file_is_input_error(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match=r"cannot write to .*sub: .*Choose another --outdir\."):
        check_writable_dir(tmp_path / "file.txt" / "sub")
    with pytest.raises(InputError, match="not a folder"):
        check_writable_dir(tmp_path / "file.txt")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_check_writable_dir_read_only_is_input_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="Choose another --outdir"):
            check_writable_dir(locked)
    finally:
        locked.chmod(0o700)


def _npy_with_header(path, shape, dtype="<f4", payload=b"\0" * 64):
    """A .npy whose header claims ``shape`` whatever data follows (a crafted or truncated file)."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(payload)
    return path


def test_npy_headers_are_checked_before_any_data_is_read(tmp_path):
    from demo.tasks.interpolate import load_keyframes

    huge = _npy_with_header(tmp_path / "huge_ws.npy", (10**12, 14, 512))  # 28 PB claimed, 64 bytes present
    for load in (lambda p: media.load_npy(p), lambda p: load_keyframes([p], num_ws=14, w_dim=512)):
        with pytest.raises(InputError, match="damaged"):
            load(huge)
    objects = _npy_with_header(tmp_path / "objects.npy", (2,), dtype="|O")
    with pytest.raises(InputError, match="pickled"):
        media.load_npy(objects)
    np.save(tmp_path / "big.npy", np.zeros((1000, 512), np.float32))
    with pytest.raises(InputError, match="at most"):
        media.load_npy(tmp_path / "big.npy", max_bytes=100_000)
    with pytest.raises(InputError, match="expected \\(any, 14, 512\\)"):
        media.load_npy(tmp_path / "big.npy", shape=(-1, 14, 512))  # refused from the header
    np.save(tmp_path / "many_ws.npy", np.zeros((20, 14, 512), np.float32))
    with pytest.raises(InputError, match="more than 16 identities"):
        load_keyframes([tmp_path / "many_ws.npy"], num_ws=14, w_dim=512, max_rows=16)
