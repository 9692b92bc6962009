"""Meshes: analytic densities, colours from a known field, the official .mrc volume, exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from demo.cameras import camera_from_angles
from demo.errors import InputError
from demo.render.grid import grid_points
from demo.tasks import mesh as mesh_task
from demo.tasks.sample import ws_from_seeds
from demo.weights.store import build_tiny_generator
from tests.conftest import require_reference
from tests.mesh_checks import assert_sound, mesh_problems

pytestmark = pytest.mark.usefixtures("single_thread")


def _analytic_volume(n: int, box: float, fn) -> np.ndarray:
    points = grid_points(n, box).numpy()
    return fn(points).reshape(n, n, n).astype(np.float32)


def test_sphere_has_right_size_position_and_outward_normals():
    n, box, radius, centre = 96, 1.0, 0.3, np.array([0.05, -0.02, 0.04])  # inside the padded border
    volume = _analytic_volume(n, box, lambda p: 10 + 100 * (radius - np.linalg.norm(p - centre, axis=1)))
    vertices, faces, normals = mesh_task.mesh_from_volume(volume, level=10.0, box_warp=box)
    distance = np.linalg.norm(vertices - centre, axis=1)
    assert np.abs(distance - radius).max() < box / (n - 1)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight
    assert mesh.volume > 0, "faces must wind counter-clockwise seen from outside"
    assert np.allclose(mesh.volume, 4 / 3 * np.pi * radius**3, rtol=0.02)
    outward = np.einsum("ij,ij->i", normals, vertices - centre)
    assert (outward > 0).all()
    assert np.allclose(mesh.centroid, centre, atol=2e-3)


def test_box_extents_in_world_units():
    n, box = 80, 1.6
    half = np.array([0.3, 0.15, 0.2])
    volume = _analytic_volume(n, box, lambda p: 10 + 100 * np.min(half - np.abs(p), axis=1))
    vertices, faces, _ = mesh_task.mesh_from_volume(volume, level=10.0, box_warp=box)
    spacing = box / (n - 1)
    assert np.allclose(vertices.max(0), half, atol=spacing)
    assert np.allclose(vertices.min(0), -half, atol=spacing)
    assert trimesh.Trimesh(vertices, faces, process=False).is_watertight


def test_border_padding_closes_a_shape_cut_by_the_box():
    n = 64
    volume = _analytic_volume(n, 1.0, lambda p: 10 + 100 * (0.2 - np.linalg.norm(p[:, [0, 2]], axis=1)))  # infinite cylinder along y
    vertices, faces, _ = mesh_task.mesh_from_volume(volume, level=10.0, box_warp=1.0)
    assert trimesh.Trimesh(vertices, faces, process=False).is_watertight
    # The first emptied voxel is index n - pad; the surface lies between it and its inner neighbour.
    pad = int(30 * n / 256)
    assert 0.5 - (pad + 1) / (n - 1) <= vertices[:, 1].max() <= 0.5 - (pad - 1) / (n - 1)
    with pytest.raises(InputError, match="never crosses"):
        mesh_task.mesh_from_volume(np.zeros((n, n, n), np.float32), level=10.0)


class _ColourFieldModel:
    """A stand-in whose colour field is known: rgb = position + 0.5."""

    def sample_mixed(self, coordinates, directions, ws, *, planes=None):
        rgb = torch.cat([coordinates + 0.5, torch.zeros_like(coordinates)[..., :1].expand(-1, -1, 29)], dim=-1)
        return {"sigma": torch.zeros_like(coordinates[..., :1]), "rgb": rgb}


def test_vertex_colours_come_from_the_colour_field():
    vertices = np.array([[-0.5, -0.5, -0.5], [0.0, 0.25, 0.5], [0.3, -0.1, 0.0]], dtype=np.float32)
    colors = mesh_task.vertex_colors(_ColourFieldModel(), torch.zeros(1), vertices)
    expected = np.clip(np.round((vertices + 0.5) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(colors, expected)


def test_separable_grid_equals_pointwise_queries(tiny_generator):
    ws = torch.randn(1, tiny_generator.num_ws, tiny_generator.w_dim)
    n = 24
    fast = mesh_task.density_volume(tiny_generator, ws, resolution=n)
    with torch.inference_mode():
        slow = tiny_generator.sample_mixed(grid_points(n, 1.0)[None], None, ws)["sigma"].reshape(n, n, n)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_tiny_model_mesh_and_exports(tmp_path, tiny_generator):
    import mrcfile

    ws = torch.randn(1, tiny_generator.num_ws, tiny_generator.w_dim, generator=torch.Generator().manual_seed(1))
    volume = mesh_task.density_volume(tiny_generator, ws, resolution=32)
    level = float(volume.median())
    result = mesh_task.extract_mesh(tiny_generator, ws, resolution=32, level=level)
    assert len(result.faces) > 0 and result.vertex_colors.shape == (len(result.vertices), 3)
    assert result.vertex_colors.dtype == np.uint8
    assert trimesh.Trimesh(result.vertices, result.faces, process=False).is_watertight
    for ext in mesh_task.MESH_FORMATS:
        path = mesh_task.export_mesh(result, tmp_path / f"tiny.{ext}")
        loaded = trimesh.load(path, force="mesh", process=False)
        assert len(loaded.faces) == len(result.faces), ext
    (loaded,) = trimesh.load(tmp_path / "tiny.glb", process=False).geometry.values()  # keeps COLOR_0
    from demo.media import srgb_to_linear

    np.testing.assert_allclose(loaded.visual.vertex_attributes["color"], srgb_to_linear(result.vertex_colors), atol=1e-6)
    mrc = mesh_task.official_mrc_volume(tiny_generator, ws, resolution=32)
    from demo import media

    media.write_mrc(tmp_path / "tiny.mrc", mrc)
    with mrcfile.open(tmp_path / "tiny.mrc") as handle:
        assert np.array_equal(handle.data, mrc)


def test_decimation_keeps_colours(tiny_generator):
    ws = torch.randn(1, tiny_generator.num_ws, tiny_generator.w_dim, generator=torch.Generator().manual_seed(1))
    level = float(mesh_task.density_volume(tiny_generator, ws, resolution=32).median())
    full = mesh_task.extract_mesh(tiny_generator, ws, resolution=32, level=level)
    small = mesh_task.extract_mesh(tiny_generator, ws, resolution=32, level=level, target_faces=len(full.faces) // 4)
    assert len(small.faces) <= len(full.faces) // 4 + 8
    assert small.vertex_colors.shape == (len(small.vertices), 3)


def test_official_mrc_volume_matches_fixture(official_tiny_generator, eg3d_expected):
    ws = torch.from_numpy(eg3d_expected["ws_psi07"][:1])
    volume = mesh_task.official_mrc_volume(official_tiny_generator, ws, resolution=32)
    assert np.abs(volume - eg3d_expected["grid_sigma_mrc"]).max() <= 2e-4


def test_mesh_from_depth_of_a_flat_wall():
    camera = camera_from_angles(radius=2.7, pivot=(0.0, 0.0, 0.0))
    side = 16
    # A wall at z = 0 facing the camera: the distance along each ray is 2.7 / cos(angle to the axis).
    from demo.render.rays import pixel_rays

    _, directions = pixel_rays(camera.cam2world, camera.intrinsics, side)
    depth = (2.7 / -directions[0, :, 2]).reshape(side, side)
    result = mesh_task.mesh_from_depth(depth, camera)
    assert np.abs(result.vertices[:, 2]).max() < 1e-5
    assert len(result.faces) == 2 * (side - 1) ** 2
    normals = trimesh.Trimesh(result.vertices, result.faces, process=False).face_normals
    assert (normals[:, 2] > 0.99).all(), "faces must face the camera (+z)"
    alpha = np.zeros((side, side), np.float32)
    with pytest.raises(ValueError, match="alpha"):
        mesh_task.mesh_from_depth(depth, camera, alpha=alpha)


def test_resolution_is_validated(tiny_generator):
    with pytest.raises(ValueError, match="resolution"):
        mesh_task.density_volume(tiny_generator, torch.zeros(1, tiny_generator.num_ws, tiny_generator.w_dim), resolution=3)


def test_fixture_is_reachable_or_skipped():
    require_reference("tiny_ffhq_expected.npz")


def test_the_mrc_volume_overlays_the_mesh_in_world_units(tmp_path):
    """Marching cubes on the .mrc, placed with its header's origin and voxel size, lands on the exported mesh."""
    import mrcfile
    from scipy.spatial import cKDTree
    from skimage import measure

    from demo.tasks.generate import generate_to_folder
    from demo.weights.store import build_tiny_generator

    model = build_tiny_generator()
    generate_to_folder(model, tmp_path, seeds=[3], shapes=True, shape_resolution=48, shape_formats=("ply", "mrc", "mrc-official"))
    with mrcfile.open(tmp_path / "seed0003.mrc") as mrc:
        data = np.array(mrc.data)  # (z, y, x)
        voxel = float(mrc.voxel_size.x)
        origin = np.array([float(mrc.header.origin.x), float(mrc.header.origin.y), float(mrc.header.origin.z)])
    assert voxel == pytest.approx(1.0 / 47) and np.allclose(origin, -0.5)
    vertices_zyx, _, _, _ = measure.marching_cubes(data, level=10.0)
    from_mrc = origin + vertices_zyx[:, ::-1] * voxel  # (x, y, z) world units
    mesh = trimesh.load(tmp_path / "seed0003.ply", process=False)
    # Every mesh vertex lies on the .mrc's surface (the mesh keeps the largest component only, so the other way
    # round holds for most points, not all).
    distance, _ = cKDTree(from_mrc).query(np.asarray(mesh.vertices))
    assert distance.max() <= voxel, distance.max()
    assert np.median(cKDTree(np.asarray(mesh.vertices)).query(from_mrc)[0]) < 1e-4
    official = mesh_task.official_mrc_volume(model, media_ws(model, 3), resolution=48)
    with mrcfile.open(tmp_path / "seed0003_official.mrc") as mrc:
        np.testing.assert_allclose(mrc.data, official, atol=1e-4)  # the gen_samples.py volume, for comparisons


def media_ws(model, seed):
    from demo.tasks.sample import ws_from_seeds

    return ws_from_seeds(model, [seed], truncation_psi=0.7)


# --- soundness: closed, consistently wound, no coincident vertices, zero-area faces or self-intersections ----------


def test_the_soundness_check_finds_each_defect():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    assert_sound(v, f)
    top, bottom = np.argmax(v[:, 1]), np.argmin(v[:, 1])
    assert np.allclose(v[bottom], -v[top]) and len(v) == 162
    tangent = (np.concatenate([v, v + 2 * v[top]]), np.concatenate([f, f + len(v)]))  # touching at v[top]
    # The same two spheres sharing that vertex: a closed surface, but not a manifold there.
    pinched = (tangent[0], np.concatenate([f, np.where(f == bottom, top - len(v), f) + len(v)]))
    for what, (vertices, faces), defect in [
        ("overlapping", (np.concatenate([v, v + [0.5, 0, 0]]), np.concatenate([f, f + len(v)])), "self_intersections"),
        ("tangent at a vertex", tangent, "self_intersections"),
        ("tangent at a vertex", tangent, "duplicate_vertices"),
        ("inside out", (v, f[:, ::-1]), "negative_volume"),
        ("a hole", (v, f[1:]), "open_or_nonmanifold_edges"),
        ("a flat face", (np.concatenate([v, [[0, 0, 2], [0, 0, 3], [0, 0, 5]]]), np.concatenate([f, [[162, 163, 164]]])),
         "degenerate_faces"),
        ("a fold", (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.8, 0.1, 0]]), np.array([[0, 1, 2], [1, 0, 3]])),
         "self_intersections"),
        ("a pinched vertex", pinched, "nonmanifold_vertices"),
    ]:
        assert mesh_problems(vertices, faces)[defect] > 0, what


def test_grid_values_on_the_level_give_no_coincident_vertices():
    """Whole-number densities put ~200 grid values exactly on the level; marching cubes alone puts several vertices
    on each such grid point (zero-area faces, faces touching without sharing an edge)."""
    from scipy.spatial import cKDTree
    from skimage import measure

    n, centre = 32, np.array([0.02, -0.01, 0.03])
    volume = _analytic_volume(n, 1.0, lambda p: np.round(10 + 160 * (0.3 - np.linalg.norm(p - centre, axis=1))))
    assert (volume == 10).sum() > 100
    vertices, faces, normals = mesh_task.mesh_from_volume(volume, level=10.0)
    assert_sound(vertices, faces)
    assert (np.einsum("ij,ij->i", normals, vertices - centre) > 0).all()
    # Vertices stay on their grid edges within MIN_EDGE_FRACTION of a voxel of where the raw values put them.
    raw, _, _, _ = measure.marching_cubes(mesh_task.closed_border(volume.copy()), level=10.0)
    distance, _ = cKDTree(raw / (n - 1) - 0.5).query(vertices)
    assert distance.max() <= mesh_task.MIN_EDGE_FRACTION / (n - 1) * 1.01


@pytest.mark.parametrize(("panohead", "seed"), [(False, 3), (True, 0)])
def test_tiny_model_meshes_are_sound_at_the_official_level_and_at_a_grid_value(panohead, seed):
    model = build_tiny_generator(panohead=panohead)
    with torch.inference_mode():
        planes = model.planes(torch.as_tensor(ws_from_seeds(model, [seed], truncation_psi=0.7)))
    volume = mesh_task.density_volume(model, resolution=32, planes=planes)
    for level in (mesh_task.OFFICIAL_LEVEL, float(volume.median())):  # torch's median is one of the grid values
        mesh = mesh_task.extract_mesh(model, planes=planes, resolution=32, level=level)
        assert_sound(mesh.vertices, mesh.faces, f"level {level}")
        np.testing.assert_array_equal(mesh.vertex_colors, mesh_task.vertex_colors(model, planes, mesh.vertices))


@pytest.mark.parametrize(("seed", "resolution"), [(1, 32), (4, 64)])
def test_decimated_meshes_stay_sound_with_their_colours(seed, resolution):
    model = build_tiny_generator()
    with torch.inference_mode():
        planes = model.planes(torch.as_tensor(ws_from_seeds(model, [seed], truncation_psi=0.7)))
    full = mesh_task.extract_mesh(model, planes=planes, resolution=resolution, with_colors=False)
    small = mesh_task.extract_mesh(model, planes=planes, resolution=resolution, target_faces=len(full.faces) // 4)
    assert len(small.faces) <= len(full.faces) // 4 + 8
    assert_sound(small.vertices, small.faces)
    np.testing.assert_array_equal(small.vertex_colors, mesh_task.vertex_colors(model, planes, small.vertices))
    np.testing.assert_allclose(np.linalg.norm(small.vertex_normals, axis=1), 1.0, atol=1e-5)


def test_meshes_written_by_generate_dataset_and_invert_runs_are_sound(tmp_path):
    from demo import cli, media
    from demo.tasks import dataset
    from demo.tasks.generate import generate_to_folder
    from demo.tasks.sample import view_camera

    model = build_tiny_generator()
    generate_to_folder(model, tmp_path / "generate", seeds=[1, 2, 3], shapes=True, shape_resolution=32,
                       shape_formats=("ply",))
    generate_to_folder(model, tmp_path / "generate", seeds=[4], shapes=True, shape_resolution=64,
                       shape_formats=("glb",), mesh_faces=3000)
    dataset.make_dataset(model, tmp_path / "dataset", num=3, with_=("meshes",), mesh_resolution=32, image_size=16,
                         model_id="tiny")
    with torch.inference_mode():
        ws = torch.as_tensor(ws_from_seeds(model, [5], truncation_psi=0.7))
        camera = view_camera(model, yaw_deg=20.0, pitch_deg=-5.0)
        image = model.synthesis(ws, camera.to_label(), rng=torch.Generator().manual_seed(0))["image"]
    media.save_png(tmp_path / "in" / "face.png", media.image_to_uint8(image[0]))
    media.save_npy(tmp_path / "in" / "face_camera.npy", camera.to_label()[0])
    assert cli.main([
        "invert", str(tmp_path / "in"), "--model", "tiny", "--aligned", "--w-steps", "2", "--pti-steps", "2",
        "--mesh", "--mesh-res", "32", "--outdir", str(tmp_path / "invert"), "--device", "cpu",
    ]) == 0
    paths = sorted(tmp_path.glob("**/*.ply")) + sorted(tmp_path.glob("**/*.glb"))
    assert len(paths) == 3 + 1 + 3 + 1
    for path in paths:
        mesh = trimesh.load(path, force="mesh", process=False)
        assert_sound(np.asarray(mesh.vertices), np.asarray(mesh.faces), str(path.relative_to(tmp_path)))


def test_mesh_from_depth_drops_pixels_at_the_camera():
    camera = camera_from_angles(radius=2.7, pivot=(0.0, 0.0, 0.0))
    side = 16
    from demo.render.rays import pixel_rays

    _, directions = pixel_rays(camera.cam2world, camera.intrinsics, side)
    depth = (2.7 / -directions[0, :, 2]).reshape(side, side)
    depth[4:9, 5:11] = 0.0  # no depth there: every such pixel would land on the camera centre
    result = mesh_task.mesh_from_depth(depth, camera)
    problems = mesh_problems(result.vertices, result.faces)
    for defect in ("degenerate_faces", "duplicate_vertices", "self_intersections", "inconsistent_edges"):
        assert problems[defect] == 0, problems
    assert np.abs(result.vertices[:, 2]).max() < 1e-5
