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
- Meshes are sound: closed (every edge shared by exactly two faces), wound consistently, no two
  vertices at one point, no zero-area faces and no faces crossing or touching each other. Marching
  cubes would put several vertices on a grid point whose value equals the level; every vertex is
  kept at least :data:`MIN_EDGE_FRACTION` of its edge from the grid points instead
  (:func:`_keep_off_level`, :func:`_place_on_edges`), and decimation refuses collapses that would
  break any of that (:func:`_decimate`).
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
MIN_EDGE_FRACTION = 1e-3
"""Every marching-cubes vertex keeps at least this fraction of its voxel edge from both grid points of the edge."""
MAX_NORMAL_TURN_COS = 0.5
"""Decimation turns no surviving face by more than 60 degrees in one collapse (that would fold the surface)."""
MIN_FACE_QUALITY = 0.02
"""Decimation makes no face flatter than this (4 sqrt(3) area / sum of squared sides; 1 = equilateral)."""


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
    vertex normals (V, 3) pointing outwards. With ``pad_border`` the surface is closed: every edge is
    shared by exactly two faces wound consistently, no two vertices coincide, no face has zero area
    and no two faces cross or touch. Each vertex lies on its grid edge where the density crosses
    ``level`` (linear interpolation, as skimage), moved only if that is closer than
    :data:`MIN_EDGE_FRACTION` of the edge to a grid point (:func:`_keep_off_level`). A volume that
    never crosses ``level`` raises :class:`NoSurfaceError`.
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
    volume -= np.float32(level)  # exact near the level (Sterbenz), so the sign is the side of the level
    band, raw = _keep_off_level(volume)
    grid_vertices, faces, normals, _ = measure.marching_cubes(volume, level=0.0)
    grid_vertices = _place_on_edges(grid_vertices, faces, n, band, raw)
    # skimage's normals already point down the density gradient (outwards), but its faces wind
    # the other way; flip them so they are counter-clockwise seen from outside.
    faces = np.ascontiguousarray(faces[:, ::-1]).astype(np.int32)
    vertices = (grid_vertices * (box_warp / (n - 1)) - box_warp / 2).astype(np.float32)
    return vertices, faces, normals.astype(np.float32)


def _keep_off_level(values: np.ndarray, fraction: float = MIN_EDGE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Nudge ``values`` (density minus level, a cube) in place so marching cubes at 0 puts no vertex near a grid point.

    Marching cubes puts the vertex of a grid edge whose ends lie on both sides of the level at
    t = a / (a - b) along it (a, b: the ends' values minus the level). A value equal to the level
    (t = 0; common when the level is taken from the volume, e.g. its median, and seen at the
    official level too) puts the vertices of all that point's crossing edges on the grid point
    itself: coincident vertices with distinct indices, zero-area faces, and faces that touch without
    sharing an edge (self-intersections for Open3D). Values a hair from the level do the same once
    positions are rounded to float32.

    So the values on crossing edges are moved away from 0, each keeping its side (0 counts as
    outside, as skimage classifies it), until |a| >= r |b| at both ends of every crossing edge,
    r = fraction / (1 - fraction); raising one value can call for raising a neighbour r times less,
    so a few passes settle it. The classification is unchanged, and every vertex marching cubes
    then gives lies at least ``fraction`` of its edge from both ends, so :func:`_place_on_edges`
    can tell its edge from its position. Only the band of points on crossing edges is touched.

    Returns the band's flat indices (sorted) and its values before the nudge.
    """
    inside = values > 0
    n = values.shape[0]
    flat = values.reshape(-1)
    starts, ends = [], []
    for axis, stride in enumerate((n * n, n, 1)):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis], high[axis] = slice(0, n - 1), slice(1, n)
        i, j, k = np.nonzero(inside[tuple(low)] != inside[tuple(high)])
        start = (i.astype(np.int64) * n + j) * n + k
        starts.append(start)
        ends.append(start + stride)
    band, local = np.unique(np.concatenate(starts + ends), return_inverse=True)
    half = len(local) // 2
    start, end = local[:half], local[half:]
    raw = flat[band].copy()
    magnitude = np.abs(raw).astype(np.float64)
    ratio = fraction / (1.0 - fraction)
    for _ in range(64):
        needed = np.zeros_like(magnitude)
        np.maximum.at(needed, start, ratio * magnitude[end])
        np.maximum.at(needed, end, ratio * magnitude[start])
        if not (needed > magnitude).any():
            break
        magnitude = np.maximum(magnitude, needed)
    flat[band] = np.where(raw > 0, magnitude, -magnitude)
    return band, raw


def _place_on_edges(
    grid_vertices: np.ndarray, faces: np.ndarray, n: int, band: np.ndarray, raw: np.ndarray,
    fraction: float = MIN_EDGE_FRACTION,
) -> np.ndarray:
    """Vertex positions (index units, float64) from the raw values, each kept ``fraction`` away from its edge's ends.

    A vertex on a grid edge has two integral coordinates; the third, strictly between two grid
    points after :func:`_keep_off_level`, names the edge. The vertex goes where the raw values
    cross 0 along that edge, clamped to [fraction, 1 - fraction] of it: moved at most ``fraction`` of
    a voxel, and only where the raw crossing was that close to a grid point. The few vertices that
    Lewiner's method puts inside a cube move by the mean move of their neighbours.
    """
    grid_vertices = grid_vertices.astype(np.float64)
    offset = grid_vertices - np.floor(grid_vertices)
    on_grid = offset == 0
    on_edge = on_grid.sum(axis=1) == 2
    assert (on_edge | (on_grid.sum(axis=1) == 0)).all(), "a marching-cubes vertex on a grid point"
    low = np.floor(grid_vertices[on_edge]).astype(np.int64)
    axis = np.argmin(on_grid[on_edge], axis=1)
    start = (low[:, 0] * n + low[:, 1]) * n + low[:, 2]
    end = start + np.array([n * n, n, 1])[axis]
    a = raw[np.searchsorted(band, start)].astype(np.float64)
    b = raw[np.searchsorted(band, end)].astype(np.float64)
    t = np.clip(a / (a - b), fraction, 1.0 - fraction)
    placed = grid_vertices.copy()
    placed[np.flatnonzero(on_edge), axis] = low[np.arange(len(low)), axis] + t
    inner = ~on_edge
    if inner.any():
        # skimage places these from the nudged values; they follow the mean shift of their neighbours. Each
        # neighbour in a closed fan is in two of the vertex's faces, so summing both others per face weighs all alike.
        rows, corners = np.nonzero(inner[faces])
        centre = faces[rows, corners]
        shift = np.zeros((len(placed), 3))
        for step in (1, 2):
            other = faces[rows, (corners + step) % 3]
            np.add.at(shift, centre, placed[other] - grid_vertices[other])
        count = np.bincount(centre, minlength=len(placed))
        placed[inner] += shift[inner] / (2 * count[inner])[:, None]
    return placed


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
        target_faces: decimate to about this many faces (quadric edge collapses that keep the mesh
            closed and unfolded, so it may stop above the target), colours re-queried.
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
    """Quadric edge collapses (Garland & Heckbert 1997) down to about ``target_faces``, keeping the surface sound.

    A closed, consistently wound, self-intersection-free mesh stays so: a collapse is refused
    where it would break the manifold (the link condition: the edge's ends share exactly the two
    far corners of its faces, and no face would appear twice), turn a face by more than 60 degrees,
    leave a nearly flat face, or make a new face cross or touch another (:func:`_faces_meeting`).
    Edges on an open border are kept. Collapses run in rounds of independent edges (no face touched
    by two of them), the cheapest first; it stops early when every remaining edge is refused.
    """
    collapser = _EdgeCollapser(vertices, faces)
    while len(collapser.faces) > target_faces:
        if not collapser.round((len(collapser.faces) - target_faces + 1) // 2):
            break
    return collapser.result()


class _EdgeCollapser:
    """State of a decimation: positions and quadrics per vertex (ids never change), the current faces,
    the cost and target of each edge (cached until an end moves) and the refused collapses (until
    their neighbourhood changes)."""

    def __init__(self, vertices, faces):
        self.positions = np.asarray(vertices, dtype=np.float64).copy()
        self.faces = np.asarray(faces, dtype=np.int64)
        self.count = len(self.positions)
        self.quadrics = _vertex_quadrics(self.positions, self.faces)
        self.rounds = 0
        self.changed = np.zeros(self.count, dtype=np.int64)
        """Per vertex: the round its star last changed (its position, quadric or faces)."""
        self.moved = np.zeros(self.count, dtype=np.int64)
        """Per vertex: the round its position and quadric last changed."""
        self.refused = np.zeros(0, dtype=np.int64)
        self.refused_in = np.zeros(0, dtype=np.int64)
        self.cache = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 3)))

    def result(self):
        used, faces = np.unique(self.faces, return_inverse=True)
        faces = faces.reshape(-1, 3).astype(np.int32)
        positions = self.positions[used].astype(np.float32)
        return positions, faces, _vertex_normals(positions, faces)

    def round(self, wanted: int) -> bool:
        """Try up to ``wanted`` independent collapses; False when no edge is left to try."""
        self.rounds += 1
        ends = self.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
        codes, uses = np.unique(ends.min(axis=1) * self.count + ends.max(axis=1), return_counts=True)
        edges = np.stack([codes // self.count, codes % self.count], axis=1)
        cost, target = self._costs(codes, edges)
        frozen = np.zeros(self.count, dtype=bool)
        frozen[edges[uses != 2].reshape(-1)] = True  # open borders and non-manifold edges stay as they are
        cost[frozen[edges].any(axis=1) | self._still_refused(codes, edges)] = np.inf
        chosen = _independent_cheapest(cost, edges, self.faces, self.count, wanted)
        if len(chosen) == 0:
            return False
        keep, drop = edges[chosen, 0], edges[chosen, 1]
        owner = np.full(self.count, -1)
        owner[keep] = owner[drop] = np.arange(len(chosen))
        ok = _link_condition(edges, owner, keep, drop, self.count)
        ok &= _faces_stay_sound(self.positions, self.faces, owner, keep, drop, target[chosen])
        while True:
            faces = _apply(self.faces, keep[ok], drop[ok], self.count)
            trial = self.positions.copy()
            trial[keep[ok]] = target[chosen[ok]]
            moved = np.zeros(self.count, dtype=bool)
            moved[keep[ok]] = True
            around = np.flatnonzero(moved[faces].any(axis=1))  # the new faces, each around one kept vertex
            # A face appearing twice (both faces beyond the edge's far corners: a tetrahedron) or one that
            # crosses or touches another face refuses its collapse; then the rest are checked again.
            _, inverse, repeats = np.unique(np.sort(faces[around], axis=1), axis=0, return_inverse=True, return_counts=True)
            bad = (repeats[inverse.reshape(-1)] > 1) | _faces_meeting(trial, faces, around, moved)
            if not bad.any():
                break
            ok[owner[faces[around[bad]]].max(axis=1)] = False
        self._refuse(codes[chosen[~ok]])
        self.positions[keep[ok]] = target[chosen[ok]]
        self.quadrics[keep[ok]] += self.quadrics[drop[ok]]
        self.changed[faces[around].reshape(-1)] = self.rounds
        self.changed[keep[ok]] = self.moved[keep[ok]] = self.rounds
        self.faces = faces
        return True

    def _costs(self, codes, edges):
        """Cost and target per edge, recomputed only for edges new or with a changed end since the cache."""
        old_codes, old_cost, old_target = self.cache
        cost, target = np.empty(len(codes)), np.empty((len(codes), 3))
        fresh = np.ones(len(codes), dtype=bool)
        if len(old_codes):
            at = np.clip(np.searchsorted(old_codes, codes), 0, len(old_codes) - 1)
            fresh = (old_codes[at] != codes) | (self.moved[edges].max(axis=1) >= self.rounds - 1)
            cost[~fresh], target[~fresh] = old_cost[at[~fresh]], old_target[at[~fresh]]
        cost[fresh], target[fresh] = _collapse_targets(self.quadrics, self.positions, edges[fresh])
        self.cache = (codes, cost.copy(), target)
        return cost, target

    def _still_refused(self, codes, edges) -> np.ndarray:
        if len(self.refused) == 0:
            return np.zeros(len(codes), dtype=bool)
        at = np.clip(np.searchsorted(self.refused, codes), 0, len(self.refused) - 1)
        return (self.refused[at] == codes) & (self.refused_in[at] >= self.changed[edges].max(axis=1))

    def _refuse(self, codes) -> None:
        codes_all = np.concatenate([self.refused, codes])
        rounds = np.concatenate([self.refused_in, np.full(len(codes), self.rounds)])
        order = np.lexsort((-rounds, codes_all))  # per code, the latest refusal first
        codes_all, rounds = codes_all[order], rounds[order]
        first = np.ones(len(codes_all), dtype=bool)
        first[1:] = codes_all[1:] != codes_all[:-1]
        self.refused, self.refused_in = codes_all[first], rounds[first]


def _independent_cheapest(cost, edges, faces, count, wanted: int, passes: int = 4) -> np.ndarray:
    """Up to ``wanted`` edges of finite cost, cheap first, no two touching a common face (their stars are disjoint).

    Each pass keeps the edges that are the cheapest among all candidates touching the faces around
    their ends (no face can be claimed by two), then drops candidates touching the faces claimed.
    """
    limit = max(4 * wanted, 1024)
    order = np.flatnonzero(np.isfinite(cost))
    if len(order) > limit:
        order = order[np.argpartition(cost[order], limit)[:limit]]
    order = order[np.argsort(cost[order], kind="stable")]
    key = np.full(len(edges), np.inf)
    key[order] = np.arange(len(order))
    chosen = []
    for _ in range(passes):
        if len(order) == 0:
            break
        cheapest_at = np.full(count, np.inf)
        np.minimum.at(cheapest_at, edges[order, 0], key[order])
        np.minimum.at(cheapest_at, edges[order, 1], key[order])
        vote = cheapest_at[faces].min(axis=1)
        reach = np.full(count, np.inf)
        np.minimum.at(reach, faces.reshape(-1), np.repeat(vote, 3))
        ends_reach = reach[edges[order]]
        won = order[(ends_reach == key[order][:, None]).all(axis=1)]
        chosen.append(won)
        claimed_vertex = np.zeros(count, dtype=bool)
        claimed_vertex[edges[won].reshape(-1)] = True
        claimed = claimed_vertex[faces].any(axis=1)  # the stars of the chosen edges
        blocked = np.zeros(count, dtype=bool)
        blocked[faces[claimed].reshape(-1)] = True  # an edge touching a vertex of a claimed face would share it
        order = order[~blocked[edges[order]].any(axis=1)]
    chosen = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return chosen[np.argsort(key[chosen], kind="stable")][:wanted]


def _vertex_quadrics(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 4, 4) sum over each vertex's faces of area * p p^T, p the face's plane (n, -n . x)."""
    a, b, c = (positions[faces[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    double_area = np.linalg.norm(normal, axis=1)
    normal = normal / np.maximum(double_area, 1e-300)[:, None]
    plane = np.concatenate([normal, -np.einsum("ij,ij->i", normal, a)[:, None]], axis=1)
    per_face = 0.5 * double_area[:, None, None] * plane[:, :, None] * plane[:, None, :]
    quadrics = np.empty((len(positions), 4, 4))
    corners = faces.reshape(-1)
    for i in range(4):
        for j in range(i, 4):
            summed = np.bincount(corners, np.repeat(per_face[:, i, j], 3), len(positions))
            quadrics[:, i, j] = quadrics[:, j, i] = summed
    return quadrics


def _collapse_targets(quadrics, positions, edges):
    """Where each edge would collapse to and the quadric error there: (E,) cost, (E, 3) position.

    The quadric's minimum where it is well conditioned and no farther from the midpoint than the
    edge is long, else the best of the two ends and the midpoint.
    """
    q = quadrics[edges[:, 0]] + quadrics[edges[:, 1]]
    a, b = positions[edges[:, 0]], positions[edges[:, 1]]
    middle = 0.5 * (a + b)
    matrix = q[:, :3, :3]
    scale = np.abs(matrix).max(axis=(1, 2))
    solvable = np.abs(np.linalg.det(matrix)) > 1e-9 * scale**3
    optimum = middle.copy()
    if solvable.any():
        optimum[solvable] = np.linalg.solve(matrix[solvable], -q[solvable, :3, 3:])[..., 0]
    far = np.linalg.norm(optimum - middle, axis=1) > np.linalg.norm(b - a, axis=1)
    optimum[far] = middle[far]
    candidates = np.stack([a, b, middle, optimum], axis=1)  # (E, 4, 3)
    homogeneous = np.concatenate([candidates, np.ones((len(edges), 4, 1))], axis=2)
    costs = np.einsum("eki,eij,ekj->ek", homogeneous, q, homogeneous)
    best = np.argmin(costs, axis=1)
    rows = np.arange(len(edges))
    return np.maximum(costs[rows, best], 0.0), candidates[rows, best]


def _link_condition(edges, owner, keep, drop, count) -> np.ndarray:
    """Per chosen edge: its two ends have exactly two common neighbours (the far corners of its two faces)."""
    both = np.concatenate([edges, edges[:, ::-1]])  # (vertex, neighbour), both ways
    mine = owner[both[:, 0]]
    both, mine = both[mine >= 0], mine[mine >= 0]
    at_keep = both[:, 0] == keep[mine]
    common = np.intersect1d(mine[at_keep] * count + both[at_keep, 1], mine[~at_keep] * count + both[~at_keep, 1])
    return np.bincount(common // count, minlength=len(keep)) == 2


def _faces_stay_sound(positions, faces, owner, keep, drop, target) -> np.ndarray:
    """Per chosen edge: no face it moves but keeps turns by more than 60 degrees or turns nearly flat."""
    touched = owner[faces].max(axis=1)
    moved = np.flatnonzero(touched >= 0)
    who, corners = touched[moved], faces[moved]
    at_keep = corners == keep[who][:, None]
    at_drop = corners == drop[who][:, None]
    survives = ~(at_keep.any(axis=1) & at_drop.any(axis=1))
    who, corners, shifted = who[survives], corners[survives], (at_keep | at_drop)[survives]
    before = positions[corners]
    after = np.where(shifted[:, :, None], target[who][:, None, :], before)
    n_before = np.cross(before[:, 1] - before[:, 0], before[:, 2] - before[:, 0])
    n_after = np.cross(after[:, 1] - after[:, 0], after[:, 2] - after[:, 0])
    turned = np.einsum("ij,ij->i", n_before, n_after) <= (
        MAX_NORMAL_TURN_COS * np.linalg.norm(n_before, axis=1) * np.linalg.norm(n_after, axis=1)
    )
    quality_after = _face_quality(after)
    flat = (quality_after < MIN_FACE_QUALITY) & (quality_after < _face_quality(before))
    bad = np.zeros(len(keep), dtype=bool)
    bad[who[turned | flat]] = True
    return ~bad


def _face_quality(corners: np.ndarray) -> np.ndarray:
    """4 sqrt(3) area / sum of squared sides per triangle (1 equilateral, 0 flat); corners (F, 3, 3)."""
    sides = corners[:, [1, 2, 0]] - corners
    double_area = np.linalg.norm(np.cross(sides[:, 0], sides[:, 1]), axis=1)
    return 2 * np.sqrt(3) * double_area / np.maximum((sides**2).sum(axis=(1, 2)), 1e-300)


def _apply(faces, keep, drop, count) -> np.ndarray:
    """Faces after merging each ``drop`` vertex into its ``keep`` vertex, the two faces over each edge removed."""
    remap = np.arange(count)
    remap[drop] = keep
    faces = remap[faces]
    return faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]


def _vertex_normals(vertices, faces) -> np.ndarray:
    """(V, 3) float32 unit normals: area-weighted means of the faces' normals."""
    corners = vertices[faces].astype(np.float64)
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    corners = faces.reshape(-1)
    normals = np.stack([np.bincount(corners, face_normals[:, k].repeat(3), len(vertices)) for k in range(3)], axis=1)
    return (normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)).astype(np.float32)


def _faces_meeting(positions, faces, probe, hubs, tolerance: float = 1e-9) -> np.ndarray:
    """Per face index in ``probe`` (faces around the moved vertices ``hubs``, a mask): does it meet a face badly?

    It must not meet a face it shares no vertex with, nor, beyond the hub, a face of the same fan
    around the hub, nor fold onto a face it shares an edge with. Conservative: orientation
    determinants within ``tolerance`` of the product of their vectors' lengths count as zero
    (touching).
    """
    a, b, c = (positions[faces[:, k]] for k in range(3))
    low, high = np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)
    row, other = _box_pairs(low, high, probe)
    f1, f2 = faces[probe[row]], faces[other]
    equal = f1[:, :, None] == f2[:, None, :]
    in_other = equal[:, :, 0] | equal[:, :, 1] | equal[:, :, 2]
    shared = in_other[:, 0].astype(np.int8) + in_other[:, 1] + in_other[:, 2]
    hit = shared == 3
    none, one, two = np.flatnonzero(shared == 0), np.flatnonzero(shared == 1), np.flatnonzero(shared == 2)
    if len(none):
        hit[none] = _triangles_meet([positions[f1[none, k]] for k in range(3)], [positions[f2[none, k]] for k in range(3)],
                                    tolerance)
    if len(one):
        # Only faces of one fan (sharing the hub) are compared: the hub's whole fan is new.
        hub_at = hubs[f1[one]].argmax(axis=1)
        hub = f1[one, hub_at]
        in_fan = (f2[one] == hub[:, None]).any(axis=1)
        one, hub_at = one[in_fan], hub_at[in_fan]
        r1 = _rolled(f1[one], hub_at)
        r2 = _rolled(f2[one], (f2[one] == f1[one, hub_at][:, None]).argmax(axis=1))
        v, a1, b1, a2, b2 = (positions[x] for x in (r1[:, 0], r1[:, 1], r1[:, 2], r2[:, 1], r2[:, 2]))
        # Beyond the shared vertex, two triangles meet only where an opposite edge meets the other triangle.
        hit[one] = _segment_meets_triangle(a1, b1, v, a2, b2, tolerance) | _segment_meets_triangle(a2, b2, v, a1, b1, tolerance)
    if len(two):
        r1 = _rolled(f1[two], (~in_other[two]).argmax(axis=1))  # the corner off the shared edge first
        r2 = _rolled(f2[two], (~equal[two].any(axis=1)).argmax(axis=1))
        p, q, c1, c2 = (positions[x] for x in (r1[:, 1], r1[:, 2], r1[:, 0], r2[:, 0]))
        # Folded: the far corners on the same side of the shared edge, (nearly) in one plane.
        n1, n2 = np.cross(q - p, c1 - p), np.cross(q - p, c2 - p)
        hit[two] = np.einsum("ij,ij->i", n1, n2) > (1 - tolerance) * np.linalg.norm(n1, axis=1) * np.linalg.norm(n2, axis=1)
    found = np.zeros(len(probe), dtype=bool)
    found[row[hit]] = True
    return found


def _box_pairs(low, high, probe) -> tuple[np.ndarray, np.ndarray]:
    """(index into ``probe``, face) pairs of distinct faces whose axis-aligned boxes (low, high) overlap.

    Broad phase on a uniform grid of cells twice the median box size: each box is listed in every
    cell it overlaps, and boxes sharing a cell are compared.
    """
    cell = 2 * float(np.median((high - low).max(axis=1))) or 1.0
    first, last = np.floor(low / cell).astype(np.int64), np.floor(high / cell).astype(np.int64)
    extent = last - first + 1
    count = extent.prod(axis=1)
    box = np.repeat(np.arange(len(low)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    span_y, span_z = extent[box, 1], extent[box, 2]
    cells = first[box] + np.stack([k // (span_y * span_z), (k // span_z) % span_y, k % span_z], axis=1) + (1 << 20)
    key = (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]
    order = np.argsort(key, kind="stable")
    key_sorted, box_sorted = key[order], box[order]
    slot = np.full(len(low), -1)
    slot[probe] = np.arange(len(probe))
    mine = slot[box] >= 0
    start = np.searchsorted(key_sorted, key[mine], side="left")
    size = np.searchsorted(key_sorted, key[mine], side="right") - start
    row = np.repeat(slot[box[mine]], size)
    other = box_sorted[np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size) + np.repeat(start, size)]
    code = np.unique(row * len(low) + other)
    row, other = code // len(low), code % len(low)
    face = probe[row]
    overlap = other != face
    for axis in range(3):
        overlap &= (low[face, axis] <= high[other, axis]) & (low[other, axis] <= high[face, axis])
    return row[overlap], other[overlap]


def _rolled(face: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each row of ``face`` rotated (orientation kept) so that its column ``first`` comes first."""
    return face[np.arange(len(face))[:, None], (first[:, None] + np.arange(3)) % 3]


def _orientation(p, q, r, s, tolerance: float) -> np.ndarray:
    """Sign of det[q - p, r - p, s - p] per row, 0 within ``tolerance`` of the product of the three lengths."""
    u, v, w = q - p, r - p, s - p
    det = np.einsum("ij,ij->i", u, np.cross(v, w))
    scale2 = np.einsum("ij,ij->i", u, u) * np.einsum("ij,ij->i", v, v) * np.einsum("ij,ij->i", w, w)
    return np.where(det * det <= tolerance * tolerance * scale2, 0, np.sign(det)).astype(np.int8)


def _segment_meets_triangle(p, q, a, b, c, tolerance: float, side_p=None, side_q=None) -> np.ndarray:
    """Segment pq meets triangle abc (touching counts; a segment in the triangle's plane counts if near it).

    ``side_p``, ``side_q``: the sides of p and q to the triangle's plane, when already known.
    """
    side_p = _orientation(a, b, c, p, tolerance) if side_p is None else side_p
    side_q = _orientation(a, b, c, q, tolerance) if side_q is None else side_q
    in_plane = (side_p == 0) & (side_q == 0)  # flat regions (PanoHead's crop walls): decided in the plane
    hit = np.zeros(len(p), dtype=bool)
    if in_plane.any():
        hit[in_plane] = _segment_meets_triangle_2d(*(x[in_plane] for x in (p, q, a, b, c)), tolerance)
    crossing = np.flatnonzero((side_p * side_q <= 0) & ~in_plane)
    if len(crossing):
        pc, qc = p[crossing], q[crossing]
        s1, s2, s3 = (_orientation(pc, qc, x[crossing], y[crossing], tolerance) for x, y in ((a, b), (b, c), (c, a)))
        hit[crossing] = ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
    return hit


def _segment_meets_triangle_2d(p, q, a, b, c, tolerance: float) -> np.ndarray:
    """Segment pq meets triangle abc, all in one plane (touching counts): an end inside, or an edge crossed."""
    normal = np.abs(np.cross(b - a, c - a))
    axes = np.array([[1, 2], [0, 2], [0, 1]])[np.argmax(normal, axis=1)]  # drop the normal's largest component
    rows = np.arange(len(p))[:, None]
    p, q, a, b, c = (x[rows, axes] for x in (p, q, a, b, c))
    hit = np.zeros(len(p), dtype=bool)
    for point in (p, q):
        s1, s2, s3 = _orientation_2d(a, b, point, tolerance), _orientation_2d(b, c, point, tolerance), _orientation_2d(
            c, a, point, tolerance)
        hit |= ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
    for x, y in ((a, b), (b, c), (c, a)):
        o1, o2 = _orientation_2d(p, q, x, tolerance), _orientation_2d(p, q, y, tolerance)
        o3, o4 = _orientation_2d(x, y, p, tolerance), _orientation_2d(x, y, q, tolerance)
        collinear = (o1 == 0) & (o2 == 0)
        overlap = ((np.minimum(p, q) <= np.maximum(x, y)) & (np.minimum(x, y) <= np.maximum(p, q))).all(axis=1)
        hit |= ((o1 * o2 <= 0) & (o3 * o4 <= 0) & ~collinear) | (collinear & overlap)
    return hit


def _orientation_2d(p, q, r, tolerance: float) -> np.ndarray:
    """Sign of det[q - p, r - p] per row (2D points), 0 within ``tolerance`` of the product of the two lengths."""
    u, v = q - p, r - p
    det = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    scale2 = np.einsum("ij,ij->i", u, u) * np.einsum("ij,ij->i", v, v)
    return np.where(det * det <= tolerance * tolerance * scale2, 0, np.sign(det)).astype(np.int8)


def _triangles_meet(t1: list[np.ndarray], t2: list[np.ndarray], tolerance: float) -> np.ndarray:
    """Triangles sharing no vertex meet (touching counts): separated by neither plane, and an edge meets the other."""
    side1 = [_orientation(*t2, x, tolerance) for x in t1]  # t1's corners against t2's plane
    side2 = [_orientation(*t1, x, tolerance) for x in t2]
    stacked1, stacked2 = np.stack(side1, axis=1), np.stack(side2, axis=1)
    open_ = ~((stacked1 > 0).all(axis=1) | (stacked1 < 0).all(axis=1) | (stacked2 > 0).all(axis=1) | (stacked2 < 0).all(axis=1))
    hit = np.zeros(len(open_), dtype=bool)
    rows = np.flatnonzero(open_)
    if len(rows) == 0:
        return hit
    a, b = [x[rows] for x in t1], [x[rows] for x in t2]
    sa, sb = [x[rows] for x in side1], [x[rows] for x in side2]
    found = np.zeros(len(rows), dtype=bool)
    for i in range(3):
        j = (i + 1) % 3
        found |= _segment_meets_triangle(a[i], a[j], *b, tolerance, sa[i], sa[j])
        found |= _segment_meets_triangle(b[i], b[j], *a, tolerance, sb[i], sb[j])
    hit[rows] = found
    return hit


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

    Pixels with a depth that is not finite and positive are dropped (a zero depth puts every such
    pixel at the camera centre), and so is any triangle left with zero area in float32, so the
    mesh has no degenerate faces; its triangles, one per pixel corner, never cross each other.
    """
    depth = torch.as_tensor(np.asarray(depth), dtype=torch.float32).reshape(-1)
    side = round(depth.numel() ** 0.5)
    if side * side != depth.numel():
        raise ValueError("depth: must be a square image")
    origins, directions = pixel_rays(camera.cam2world[:1].float(), camera.intrinsics[:1].float(), side)
    points = (origins[0] + directions[0] * depth[:, None]).numpy()
    valid = np.isfinite(depth.numpy()) & (depth.numpy() > 0)
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
    corners = points.astype(np.float32).astype(np.float64)[faces]
    keep &= np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).any(axis=1)
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


