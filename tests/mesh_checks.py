"""Mesh soundness checks for tests: watertight, oriented, no zero-area faces, no self-intersections.

The self-intersection test is ours (no Open3D on the test machines): a broad phase pairs triangles
whose bounding spheres and boxes overlap (a k-d tree on the centroids), then a narrow phase decides
each pair with orientation determinants, vectorised over all pairs:

- faces sharing no vertex: intersecting or touching anywhere counts (Open3D's definition);
- faces sharing one vertex: any contact away from that vertex counts;
- faces sharing an edge: only a fold (coplanar, on the same side of the edge) counts.

The signs of the determinants are exact (a float64 filter, exact rational arithmetic for the few
near zero), so a touch is never missed and a near miss is never called a touch.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

_ERROR_BOUND = 1e-14
"""Relative rounding-error bound of a float64 determinant (Shewchuk's is 7.8e-16); below it, exact arithmetic."""


def mesh_problems(vertices: np.ndarray, faces: np.ndarray) -> dict[str, int]:
    """Counts of each defect (all zero for a sound closed surface).

    Keys: ``open_or_nonmanifold_edges`` (edges not shared by exactly two faces),
    ``inconsistent_edges`` (edges two faces traverse the same way), ``degenerate_faces`` (zero
    area or repeated index), ``duplicate_vertices`` (distinct indices at one position),
    ``nonmanifold_vertices`` (vertices whose faces form more than one fan),
    ``self_intersections`` (intersecting face pairs) and ``negative_volume`` (1 if the faces wind
    inwards).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    _, counts = np.unique(np.sort(edges, axis=1), axis=0, return_counts=True)
    _, directed_counts = np.unique(edges, axis=0, return_counts=True)
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    # Zero area: the corners are collinear, so every axis-plane projection of the triangle is flat.
    flat = np.ones(len(faces), dtype=bool)
    for axes in ([0, 1], [1, 2], [2, 0]):
        flat &= _orient2d(a[:, axes], b[:, axes], c[:, axes]) == 0
    _, position_counts = np.unique(vertices, axis=0, return_counts=True)
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    return {
        "open_or_nonmanifold_edges": int((counts != 2).sum()),
        "inconsistent_edges": int((directed_counts > 1).sum()),
        "degenerate_faces": int((repeated | flat).sum()),
        "duplicate_vertices": int((position_counts - 1).sum()),
        "nonmanifold_vertices": nonmanifold_vertices(faces),
        "self_intersections": len(self_intersecting_pairs(vertices, faces)),
        "negative_volume": int(volume < 0),
    }


def nonmanifold_vertices(faces: np.ndarray) -> int:
    """Vertices whose incident faces do not form a single fan (joined through shared edges)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    faces = np.asarray(faces, dtype=np.int64)
    corner = np.arange(faces.size).reshape(-1, 3)  # node per (face, corner)
    # Each face edge as (low vertex, high vertex) with the corners holding them.
    a, b = faces[:, [0, 1, 2]].reshape(-1), faces[:, [1, 2, 0]].reshape(-1)
    ca, cb = corner[:, [0, 1, 2]].reshape(-1), corner[:, [1, 2, 0]].reshape(-1)
    swap = a > b
    low, high = np.where(swap, b, a), np.where(swap, a, b)
    c_low, c_high = np.where(swap, cb, ca), np.where(swap, ca, cb)
    order = np.lexsort((high, low))
    same = (low[order][1:] == low[order][:-1]) & (high[order][1:] == high[order][:-1])
    first, second = order[:-1][same], order[1:][same]
    rows = np.concatenate([c_low[first], c_high[first]])
    cols = np.concatenate([c_low[second], c_high[second]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(faces.size, faces.size))
    count, _ = connected_components(graph, directed=False)
    return int(count - len(np.unique(faces)))


def assert_sound(vertices: np.ndarray, faces: np.ndarray, what: str = "mesh") -> None:
    """Fail with the list of defects unless the mesh is a closed, oriented, non-intersecting surface."""
    import trimesh

    problems = {key: value for key, value in mesh_problems(vertices, faces).items() if value}
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if not mesh.is_watertight:
        problems["trimesh_not_watertight"] = 1
    if not mesh.is_winding_consistent:
        problems["trimesh_winding_inconsistent"] = 1
    assert not problems, f"{what}: {problems}"


def _orient(p, q, r, s) -> np.ndarray:
    """Sign of det[q - p, r - p, s - p] per row (+1, 0 or -1), exact.

    Float64 decides where the determinant clears a generous bound on its rounding error
    (Shewchuk's filter); the few rows near zero are recomputed in exact rational arithmetic.
    """
    u, v, w = q - p, r - p, s - p
    det = np.einsum("ij,ij->i", u, np.cross(v, w))
    permanent = (
        np.abs(u[:, 0]) * (np.abs(v[:, 1] * w[:, 2]) + np.abs(v[:, 2] * w[:, 1]))
        + np.abs(u[:, 1]) * (np.abs(v[:, 2] * w[:, 0]) + np.abs(v[:, 0] * w[:, 2]))
        + np.abs(u[:, 2]) * (np.abs(v[:, 0] * w[:, 1]) + np.abs(v[:, 1] * w[:, 0]))
    )
    sign = np.sign(det).astype(np.int8)
    for row in np.flatnonzero(np.abs(det) <= _ERROR_BOUND * permanent):
        pe = [Fraction(x) for x in p[row]]
        ue, ve, we = ([Fraction(x) - y for x, y in zip(point[row], pe)] for point in (q, r, s))
        exact = (
            ue[0] * (ve[1] * we[2] - ve[2] * we[1])
            + ue[1] * (ve[2] * we[0] - ve[0] * we[2])
            + ue[2] * (ve[0] * we[1] - ve[1] * we[0])
        )
        sign[row] = (exact > 0) - (exact < 0)
    return sign


def _orient2d(p, q, r) -> np.ndarray:
    """Sign of det[q - p, r - p] per row, exact (as :func:`_orient`)."""
    u, v = q - p, r - p
    det = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    permanent = np.abs(u[:, 0] * v[:, 1]) + np.abs(u[:, 1] * v[:, 0])
    sign = np.sign(det).astype(np.int8)
    for row in np.flatnonzero(np.abs(det) <= _ERROR_BOUND * permanent):
        pe, qe, re = ([Fraction(x) for x in point[row]] for point in (p, q, r))
        exact = (qe[0] - pe[0]) * (re[1] - pe[1]) - (qe[1] - pe[1]) * (re[0] - pe[0])
        sign[row] = (exact > 0) - (exact < 0)
    return sign


def _segment_hits_triangle(p, q, a, b, c, sp, sq) -> np.ndarray:
    """Segment pq meets triangle abc (not coplanar); ``sp``, ``sq``: sides of p, q to the plane abc."""
    crosses = (sp * sq <= 0) & ~((sp == 0) & (sq == 0))
    s1, s2, s3 = _orient(p, q, a, b), _orient(p, q, b, c), _orient(p, q, c, a)
    inside = ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
    return crosses & inside


def _project(points: list[np.ndarray], normal: np.ndarray) -> list[np.ndarray]:
    """Drop the coordinate along the normal's largest component (coplanar tests in 2D)."""
    drop = np.argmax(np.abs(normal), axis=1)
    keep = np.array([[1, 2], [0, 2], [0, 1]])[drop]
    rows = np.arange(len(normal))[:, None]
    return [p[rows, keep] for p in points]


def _segments_meet_2d(p, q, r, s) -> np.ndarray:
    """Closed 2D segments pq and rs share a point."""
    o1, o2, o3, o4 = _orient2d(p, q, r), _orient2d(p, q, s), _orient2d(r, s, p), _orient2d(r, s, q)
    proper = (o1 * o2 <= 0) & (o3 * o4 <= 0) & ~((o1 == 0) & (o2 == 0))
    # Collinear segments meet iff their extents overlap on both axes (exact comparisons).
    overlap = np.ones(len(p), dtype=bool)
    for axis in range(2):
        overlap &= (np.maximum(p[:, axis], q[:, axis]) >= np.minimum(r[:, axis], s[:, axis])) & (
            np.maximum(r[:, axis], s[:, axis]) >= np.minimum(p[:, axis], q[:, axis])
        )
    return proper | ((o1 == 0) & (o2 == 0) & overlap)


def _point_in_triangle_2d(p, a, b, c) -> np.ndarray:
    s1, s2, s3 = _orient2d(a, b, p), _orient2d(b, c, p), _orient2d(c, a, p)
    return ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))


def _coplanar_overlap(t1: list[np.ndarray], t2: list[np.ndarray], normal: np.ndarray) -> np.ndarray:
    """Coplanar triangles share a point (closed sets)."""
    a = _project(t1, normal)
    b = _project(t2, normal)
    hit = np.zeros(len(normal), dtype=bool)
    for i in range(3):
        for j in range(3):
            hit |= _segments_meet_2d(a[i], a[(i + 1) % 3], b[j], b[(j + 1) % 3])
    return hit | _point_in_triangle_2d(a[0], *b) | _point_in_triangle_2d(b[0], *a)


def _disjoint_pairs_intersect(t1: list[np.ndarray], t2: list[np.ndarray]) -> np.ndarray:
    """Triangles without a shared vertex index meet (touching included)."""
    side1 = [_orient(*t2, p) for p in t1]  # sides of t1's corners to t2's plane
    side2 = [_orient(*t1, p) for p in t2]
    separated = (
        ((side1[0] > 0) & (side1[1] > 0) & (side1[2] > 0)) | ((side1[0] < 0) & (side1[1] < 0) & (side1[2] < 0))
        | ((side2[0] > 0) & (side2[1] > 0) & (side2[2] > 0)) | ((side2[0] < 0) & (side2[1] < 0) & (side2[2] < 0))
    )
    coplanar = (side1[0] == 0) & (side1[1] == 0) & (side1[2] == 0)
    hit = np.zeros(len(separated), dtype=bool)
    general = ~separated & ~coplanar
    if general.any():
        g1 = [p[general] for p in t1]
        g2 = [p[general] for p in t2]
        s1 = [s[general] for s in side1]
        s2 = [s[general] for s in side2]
        found = np.zeros(int(general.sum()), dtype=bool)
        for i in range(3):
            j = (i + 1) % 3
            found |= _segment_hits_triangle(g1[i], g1[j], *g2, s1[i], s1[j])
            found |= _segment_hits_triangle(g2[i], g2[j], *g1, s2[i], s2[j])
        hit[general] = found
    if coplanar.any():
        normal = np.cross(t2[1] - t2[0], t2[2] - t2[0])[coplanar]
        hit[coplanar] = _coplanar_overlap([p[coplanar] for p in t1], [p[coplanar] for p in t2], normal)
    return hit


def _vertex_pairs_intersect(v, a1, b1, a2, b2) -> np.ndarray:
    """Triangles (v, a1, b1) and (v, a2, b2) meet somewhere other than at ``v``."""
    side_a1, side_b1 = _orient(v, a2, b2, a1), _orient(v, a2, b2, b1)
    coplanar = (side_a1 == 0) & (side_b1 == 0)
    hit = np.zeros(len(v), dtype=bool)
    general = ~coplanar
    if general.any():
        g = [x[general] for x in (v, a1, b1, a2, b2)]
        # The planes meet in a line through v; beyond v the triangles overlap iff an opposite edge meets the other face.
        found = _segment_hits_triangle(g[1], g[2], g[0], g[3], g[4], side_a1[general], side_b1[general])
        found |= _segment_hits_triangle(g[3], g[4], g[0], g[1], g[2], _orient(*g[:3], g[3]), _orient(*g[:3], g[4]))
        hit[general] = found
    if coplanar.any():
        c = [x[coplanar] for x in (v, a1, b1, a2, b2)]
        normal = np.cross(c[3] - c[0], c[4] - c[0])
        p = _project(c, normal)
        # Two closed convex sectors at v share more than v iff an edge ray of one lies in the other.
        found = np.zeros(int(coplanar.sum()), dtype=bool)
        for rays, sector in (((p[1], p[2]), (p[3], p[4])), ((p[3], p[4]), (p[1], p[2]))):
            for ray in rays:
                found |= _ray_in_sector(p[0], ray, *sector)
        hit[coplanar] = found
    return hit


def _ray_in_sector(centre, ray, edge1, edge2) -> np.ndarray:
    """The ray from ``centre`` through ``ray`` lies in the closed convex sector spanned by ``edge1``, ``edge2``."""
    turn = _orient2d(centre, edge1, edge2)
    s1, s2 = _orient2d(centre, edge1, ray), _orient2d(centre, ray, edge2)
    same_way = np.einsum("ij,ij->i", ray - centre, edge1 - centre) > 0
    return np.where(turn != 0, (s1 * turn >= 0) & (s2 * turn >= 0) & ((s1 != 0) | same_way), False)


def _edge_pairs_fold(p, q, r1, r2) -> np.ndarray:
    """Triangles (p, q, r1) and (q, p, r2) sharing edge pq overlap: coplanar with r1, r2 on one side of pq."""
    coplanar = _orient(p, q, r1, r2) == 0
    a, b, c, d = _project([p, q, r1, r2], np.cross(q - p, r1 - p))
    side1, side2 = _orient2d(a, b, c), _orient2d(a, b, d)
    return coplanar & (side1 * side2 > 0)


def candidate_pairs(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(P, 2) face index pairs i < j whose bounding spheres (about the centroids) overlap."""
    from scipy.spatial import cKDTree

    corners = vertices[faces]
    centroids = corners.mean(axis=1)
    radius = np.linalg.norm(corners - centroids[:, None], axis=2).max()
    pairs = cKDTree(centroids).query_pairs(2 * radius * (1 + 1e-9), output_type="ndarray")
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    # Tighter: axis-aligned boxes must overlap (touching counts).
    low, high = corners.min(axis=1), corners.max(axis=1)
    i, j = pairs[:, 0], pairs[:, 1]
    overlap = ((low[i] <= high[j]) & (low[j] <= high[i])).all(axis=1)
    return pairs[overlap]


def self_intersecting_pairs(vertices: np.ndarray, faces: np.ndarray, *, chunk: int = 1 << 18) -> np.ndarray:
    """(K, 2) pairs of faces that intersect each other improperly (see the module docstring)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = candidate_pairs(vertices, faces)
    found = []
    for start in range(0, len(pairs), chunk):
        block = pairs[start : start + chunk]
        f1, f2 = faces[block[:, 0]], faces[block[:, 1]]
        equal = f1[:, :, None] == f2[:, None, :]  # (P, 3, 3): corner k of f1 is corner l of f2
        shared = equal.any(axis=2).sum(axis=1)
        hit = np.zeros(len(block), dtype=bool)
        none = shared == 0
        if none.any():
            hit[none] = _disjoint_pairs_intersect(
                [vertices[f1[none, k]] for k in range(3)], [vertices[f2[none, k]] for k in range(3)]
            )
        one = shared == 1
        if one.any():
            hit[one] = _one_shared(vertices, f1[one], f2[one], equal[one])
        two = shared == 2
        if two.any():
            hit[two] = _two_shared(vertices, f1[two], f2[two], equal[two])
        hit |= shared == 3  # the same triangle twice
        found.append(block[hit])
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def _rolled(face: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each row of ``face`` rotated so that column ``first`` comes first (orientation kept)."""
    rows = np.arange(len(face))[:, None]
    return face[rows, (first[:, None] + np.arange(3)) % 3]


def _one_shared(vertices, f1, f2, equal) -> np.ndarray:
    k1 = equal.any(axis=2).argmax(axis=1)  # the shared corner's position in f1
    k2 = equal.any(axis=1).argmax(axis=1)
    r1, r2 = _rolled(f1, k1), _rolled(f2, k2)
    return _vertex_pairs_intersect(*(vertices[x] for x in (r1[:, 0], r1[:, 1], r1[:, 2], r2[:, 1], r2[:, 2])))


def _two_shared(vertices, f1, f2, equal) -> np.ndarray:
    only1 = (~equal.any(axis=2)).argmax(axis=1)  # the corner of f1 not in f2
    only2 = (~equal.any(axis=1)).argmax(axis=1)
    r1, r2 = _rolled(f1, only1), _rolled(f2, only2)
    return _edge_pairs_fold(vertices[r1[:, 1]], vertices[r1[:, 2]], vertices[r1[:, 0]], vertices[r2[:, 0]])
