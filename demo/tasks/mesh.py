"""Density volume -> marching cubes -> coloured mesh; exports GLB/PLY/OBJ and the official .mrc volume.

The tri-planes are computed once per identity and the density is evaluated on an N^3 grid with
:func:`demo.render.grid.density_grid` (separable in the planes, so far cheaper than N^3 decoder
queries), instead of re-running mapping and backbone for every million points as the official
``gen_samples.py`` does.

Conventions:

- The grid spans the tri-plane cube [-box_warp/2, box_warp/2]^3 (x slowest, z fastest); vertices are
  in world units in the cameras' world frame (y up, the face looks towards +z), so a mesh lines up
  with the renders and with ``demo.cameras``.
- The surface is the iso-level ``level`` of the raw density sigma (before the renderer's
  softplus(sigma - 1)); the official scripts use 10.
- Like ``gen_samples.py``, a border of int(30 N / 256) voxels on every face is emptied so heads
  (cut at the neck by the box) come out closed.
- Vertex colours are the decoder's first three features at the vertex (the colour the volume
  renderer composites for ``image_raw``; the super-resolved image is not projected onto the mesh).
- Normals point outwards (from high to low density).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from demo import media
from demo.cameras import Camera
from demo.errors import NoSurfaceError
from demo.networks.eg3d import TriplaneGenerator
from demo.progress import ProgressFn, report, scaled
from demo.render.grid import density_grid, grid_points, official_border_pad, official_density_volume
from demo.render.rays import pixel_rays

OFFICIAL_LEVEL = 10.0
MESH_FORMATS = ("glb", "ply", "obj")
SHAPE_FORMATS = (*MESH_FORMATS, "mrc", "mrc-official")
"""``mrc``: the density in world units, overlaying the meshes; ``mrc-official``: ``gen_samples.py``'s volume."""
MIN_RESOLUTION = 16
MAX_RESOLUTION = 1024


@dataclass(frozen=True)
class MeshResult:
    """A triangle mesh on the CPU."""

    vertices: np.ndarray
    """(V, 3) float32 world coordinates."""
    faces: np.ndarray
    """(F, 3) int32 vertex indices, counter-clockwise seen from outside."""
    vertex_colors: np.ndarray | None
    """(V, 3) uint8 RGB, or None."""
    vertex_normals: np.ndarray | None
    """(V, 3) float32 unit outward normals, or None."""


def check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution: must be an integer from {MIN_RESOLUTION} to {MAX_RESOLUTION}, got {resolution!r}")
    return resolution


def _planes_for(model: TriplaneGenerator, ws: torch.Tensor | np.ndarray, planes: torch.Tensor | None) -> torch.Tensor:
    if planes is not None:
        return planes
    ws = torch.as_tensor(np.asarray(ws) if not isinstance(ws, torch.Tensor) else ws, dtype=torch.float32)
    if ws.ndim == 2:
        ws = ws[None]
    if ws.shape[0] != 1:
        raise ValueError(f"ws: one identity at a time, got batch {ws.shape[0]}")
    return model.planes(ws.to(model.device))


def density_volume(
    model: TriplaneGenerator,
    ws: torch.Tensor | np.ndarray | None = None,
    *,
    resolution: int = 256,
    planes: torch.Tensor | None = None,
    official_grid: bool = False,
    chunk_points: int = 1 << 20,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Raw sigma on an N^3 grid over the tri-plane cube, (N, N, N) float32 on the CPU, indexed (x, y, z).

    Args:
        ws: (1, num_ws, w_dim) latents (or pass ``planes``).
        official_grid: use ``gen_samples.py``'s slightly sheared grid (its float-division indexing)
            for byte-for-byte comparable ``.mrc`` volumes; evaluated point by point, so slower.
            PanoHead volumes on the regular grid also get the renderer's density crop.
        chunk_points: points per decoder call on the official grid.
    """
    check_resolution(resolution)
    box = model.config.render.box_warp
    with torch.inference_mode():
        planes = _planes_for(model, ws, planes)
        if not official_grid and model.has_separable_planes:
            volume = density_grid(
                planes, model.decoder, resolution, box,
                progress=None if progress is None else lambda f: report(progress, f, "density grid"),
            ).float().cpu()
        else:
            points = grid_points(resolution, box, official_quirk=official_grid, device=planes.device)
            sigma = torch.empty(points.shape[0], dtype=torch.float32)
            for start in range(0, points.shape[0], chunk_points):
                stop = min(points.shape[0], start + chunk_points)
                out = model.sample_mixed(points[None, start:stop], None, None, planes=planes)
                sigma[start:stop] = out["sigma"][0, :, 0].float().cpu()
                report(progress, stop / points.shape[0], "density grid")
            volume = sigma.reshape(resolution, resolution, resolution)
    crop = model.config.panohead.density_crop if model.config.panohead is not None and not official_grid else None
    if crop is not None:
        # PanoHead renders ignore density beyond |x|, |z| > crop; the mesh follows what renders show.
        axis = torch.arange(resolution, dtype=torch.float32) * (box / (resolution - 1)) - box / 2
        outside = axis.abs() > crop
        volume = volume.clone()
        volume[outside] = -1000.0
        volume[:, :, outside] = -1000.0
    return volume


def official_mrc_volume(model: TriplaneGenerator, ws, *, resolution: int = 256, planes=None, progress=None) -> np.ndarray:
    """The volume ``gen_samples.py`` writes to ``.mrc``: its grid, flipped on x, border set to -1000."""
    sigma = density_volume(model, ws, resolution=resolution, planes=planes, official_grid=True, progress=progress)
    return official_density_volume(sigma, resolution).numpy()


def closed_border(volume: np.ndarray, level: float = OFFICIAL_LEVEL) -> np.ndarray:
    """``volume`` (a cube) with the official border width set below ``level``, so surfaces close there (in place)."""
    n = volume.shape[0]
    pad = max(official_border_pad(n), 1)
    empty = min(float(volume.min()), level) - 1.0
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(0, pad)
        volume[tuple(index)] = empty
        index[axis] = slice(n - pad, n)
        volume[tuple(index)] = empty
    return volume


def world_mrc_volume(model: TriplaneGenerator, ws=None, *, resolution: int = 256, planes=None, level: float = OFFICIAL_LEVEL,
                     progress=None) -> np.ndarray:
    """The density the meshes are made from, for ``.mrc`` files that overlay them: the regular (x, y, z) grid over the
    tri-plane cube with the meshes' closed border, in MRC's (z, y, x) order; write it with origin ``-box_warp / 2`` on
    every axis and voxel ``box_warp / (resolution - 1)`` (:func:`mrc_geometry`)."""
    volume = density_volume(model, ws, resolution=resolution, planes=planes, progress=progress).numpy().astype(np.float32)
    return np.ascontiguousarray(closed_border(volume, level).transpose(2, 1, 0))


def mrc_geometry(model: TriplaneGenerator, resolution: int) -> tuple[float, tuple[float, float, float]]:
    """(voxel size, origin (x, y, z)) in world units of :func:`world_mrc_volume`'s grid."""
    box = model.config.render.box_warp
    return box / (resolution - 1), (-box / 2, -box / 2, -box / 2)


def mesh_from_volume(
    volume: np.ndarray | torch.Tensor,
    *,
    level: float = OFFICIAL_LEVEL,
    box_warp: float = 1.0,
    pad_border: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching cubes on a regular (x, y, z) density volume over the cube of side ``box_warp``.

    Returns vertices (V, 3) float32 in world units, faces (F, 3) int32 with outward winding and
    vertex normals (V, 3) pointing outwards. An empty result raises ``ValueError``.
    """
    from skimage import measure

    volume = volume.numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    volume = volume.astype(np.float32, copy=True)
    n = volume.shape[0]
    if volume.shape != (n, n, n):
        raise ValueError(f"volume: must be a cube, got shape {volume.shape}")
    if pad_border:
        volume = closed_border(volume, level)
    if not (volume.min() < level < volume.max()):
        raise NoSurfaceError(
            f"The density never crosses the iso-level {level:g} (it ranges from {volume.min():.3g} to {volume.max():.3g}), "
            "so there is no surface to mesh at that level; a level inside that range would give one."
        )
    spacing = box_warp / (n - 1)
    vertices, faces, normals, _ = measure.marching_cubes(volume, level=level, spacing=(spacing,) * 3)
    # skimage's normals already point down the density gradient (outwards), but its faces wind
    # the other way; flip them so they are counter-clockwise seen from outside.
    faces = np.ascontiguousarray(faces[:, ::-1]).astype(np.int32)
    vertices = (vertices - box_warp / 2).astype(np.float32)
    normals = normals.astype(np.float32)
    return vertices, faces, normals


def extract_mesh(
    model: TriplaneGenerator,
    ws: torch.Tensor | np.ndarray | None = None,
    *,
    resolution: int = 256,
    level: float = OFFICIAL_LEVEL,
    planes: torch.Tensor | None = None,
    keep_largest: bool = True,
    min_component_fraction: float = 0.0,
    target_faces: int | None = None,
    with_colors: bool = True,
    progress: ProgressFn | None = None,
) -> MeshResult:
    """A coloured mesh of one identity.

    Args:
        ws: (1, num_ws, w_dim) latents (or ``planes``, computed once by the caller).
        resolution: grid points per side (128, 256, 512, ...).
        level: iso-level of raw sigma (official: 10).
        keep_largest: keep only the largest connected component (drops floaters).
        min_component_fraction: otherwise, drop components with fewer faces than this fraction.
        target_faces: decimate to about this many faces (quadric decimation), colours re-queried.
    """
    check_resolution(resolution)
    with torch.inference_mode():
        planes = _planes_for(model, ws, planes)
        volume = density_volume(model, resolution=resolution, planes=planes, progress=scaled(progress, 0.0, 0.8))
        vertices, faces, normals = mesh_from_volume(volume, level=level, box_warp=model.config.render.box_warp)
        vertices, faces, normals = _clean(vertices, faces, normals, keep_largest, min_component_fraction)
        if target_faces is not None and target_faces < len(faces):
            vertices, faces, normals = _decimate(vertices, faces, target_faces)
        report(progress, 0.9, "colours")
        colors = vertex_colors(model, planes, vertices) if with_colors else None
    report(progress, 1.0, "mesh done")
    return MeshResult(vertices=vertices, faces=faces, vertex_colors=colors, vertex_normals=normals)


def vertex_colors(model: TriplaneGenerator, planes: torch.Tensor, vertices: np.ndarray, *, chunk: int = 1 << 18) -> np.ndarray:
    """uint8 RGB (V, 3) from the decoder's colour features at the vertices."""
    out = np.empty((len(vertices), 3), dtype=np.uint8)
    points = torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)).to(planes.device)
    with torch.inference_mode():
        for start in range(0, len(points), chunk):
            rgb = model.sample_mixed(points[None, start : start + chunk], None, None, planes=planes)["rgb"][0, :, :3]
            out[start : start + chunk] = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    return out


def _clean(vertices, faces, normals, keep_largest: bool, min_fraction: float):
    import trimesh

    if not keep_largest and min_fraction <= 0:
        return vertices, faces, normals
    mesh = trimesh.Trimesh(vertices, faces, vertex_normals=normals, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
    counts = np.bincount(labels)
    keep_labels = [int(np.argmax(counts))] if keep_largest else np.flatnonzero(counts >= min_fraction * len(faces)).tolist()
    keep_faces = np.isin(labels, keep_labels)
    used = np.unique(faces[keep_faces])
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces[keep_faces]].astype(np.int32), normals[used]


def _decimate(vertices, faces, target_faces: int):
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    simplified = mesh.simplify_quadric_decimation(face_count=int(target_faces))
    return (
        np.asarray(simplified.vertices, dtype=np.float32),
        np.asarray(simplified.faces, dtype=np.int32),
        np.asarray(simplified.vertex_normals, dtype=np.float32),
    )


def mesh_from_depth(
    depth: np.ndarray | torch.Tensor,
    camera: Camera,
    *,
    alpha: np.ndarray | torch.Tensor | None = None,
    colors: np.ndarray | torch.Tensor | None = None,
    alpha_threshold: float = 0.5,
    max_edge_ratio: float = 0.05,
) -> MeshResult:
    """A 2.5D mesh from one depth map: every pixel unprojected along its ray, neighbours joined.

    Args:
        depth: (r, r) or (1, r, r) distance along each unit ray (``image_depth``).
        camera: the render camera (batch 1).
        alpha: optional (r, r) opacity; pixels below ``alpha_threshold`` are dropped.
        colors: optional (3, r, r) image in [-1, 1] (e.g. ``image_raw``) for vertex colours.
        max_edge_ratio: triangles whose depth jumps by more than this fraction of the depth are
            dropped (no skins across silhouettes).
    """
    depth = torch.as_tensor(np.asarray(depth), dtype=torch.float32).reshape(-1)
    side = int(round(depth.numel() ** 0.5))
    if side * side != depth.numel():
        raise ValueError("depth: must be a square image")
    origins, directions = pixel_rays(camera.cam2world[:1].float(), camera.intrinsics[:1].float(), side)
    points = (origins[0] + directions[0] * depth[:, None]).numpy()
    valid = np.isfinite(depth.numpy())
    if alpha is not None:
        valid &= np.asarray(alpha, dtype=np.float32).reshape(-1) >= alpha_threshold
    index = np.arange(side * side).reshape(side, side)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel()
    # Pixel rows go down the image; with the camera looking at the face, (a, c, b) is counter-clockwise
    # seen from the camera, i.e. from outside the surface.
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    values = depth.numpy()
    keep = valid[faces].all(1)
    span = values[faces].max(1) - values[faces].min(1)
    keep &= span <= max_edge_ratio * np.nan_to_num(values[faces].min(1), nan=np.inf, posinf=np.inf)
    faces = faces[keep]
    if len(faces) == 0:
        raise ValueError("no pixel passes the alpha threshold; nothing to mesh")
    used = np.unique(faces)
    remap = np.full(side * side, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    vertex_colors = None
    if colors is not None:
        rgb = np.asarray(colors, dtype=np.float32).reshape(3, -1).T[used]
        vertex_colors = media.image_to_uint8(rgb.T.reshape(3, 1, -1))[0]
    return MeshResult(
        vertices=points[used].astype(np.float32),
        faces=remap[faces].astype(np.int32),
        vertex_colors=vertex_colors,
        vertex_normals=None,
    )


def export_mesh(mesh: MeshResult, path: str | Path) -> Path:
    """Write ``.glb`` / ``.ply`` / ``.obj`` (format from the suffix) with vertex colours."""
    return media.write_mesh(path, mesh.vertices, mesh.faces, vertex_colors=mesh.vertex_colors, vertex_normals=mesh.vertex_normals)


