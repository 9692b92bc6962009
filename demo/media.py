"""Media: tensors and arrays to and from files (layer 4).

Every file the library writes passes through here (or through ``weights/store.py``). Each writer
is atomic: it writes ``<name>.part`` in the destination folder and renames it over ``<name>`` with
``os.replace`` only once the file is complete, so an interrupted run never leaves a half-written file
under the final name. Parent folders are created. Nothing here prints; unreadable user files raise
:class:`~demo.errors.InputError`, wrong arguments from calling code raise ``ValueError``.

Formats and units
-----------------
Lengths are in EG3D world units throughout: the FFHQ cameras orbit the origin at radius 2.7 and the
head fits in the rendering cube of side ``box_warp`` (1 for FFHQ), centred on the origin.

Image PNG (8-bit RGB)
    ``image_to_uint8`` is the official ``gen_samples.py`` conversion of a generator image in
    [-1, 1]: ``clamp(x * 127.5 + 128, 0, 255)`` then truncation toward zero (not rounding), so -1
    maps to 0, 0 to 128 and 1 to 255. Any image viewer shows these.
Depth PNG (16-bit grayscale, PIL mode ``I;16``)
    Each count is ``DEPTH_PNG_SCALE`` = 10000 per world unit, i.e. 1 count = 1e-4 world units, so
    the range is 0 to 6.5535 world units. The value is the rendered depth: the distance from the
    camera centre along the pixel's ray (EG3D's ray directions have unit length), not the z
    coordinate in the camera frame. **0 means no surface** (infinite or undefined depth); a depth
    below 0.5e-4 also rounds to 0. Image viewers show these files as flat mid-grey faces (a depth of
    2.7 is count 27000 of 65535); use ``colorize_depth`` for a preview anyone can read.
Alpha / mask PNG (8-bit grayscale)
    ``round(255 * alpha)``: 255 is the subject, 0 the background.
Depth preview PNG (8-bit RGB)
    ``colorize_depth``: the viridis colour map with the nearest surface yellow (brightest) and the
    farthest dark violet, background black. For looking at, not for measuring.
``.npy``
    NumPy arrays (latents ``ws`` of shape ``(B, num_ws, w_dim)``, cameras, raw depth). Loading never
    unpickles: object arrays are refused.
Meshes (vertex positions in world units, per-vertex colours as uint8)
    ``.glb``: binary glTF 2.0 with colours in the ``COLOR_0`` attribute; the format browsers show,
    including ``gr.Model3D`` (correct colours), three.js / Babylon.js viewers and Blender. glTF
    declares metres, so a viewer reads one world unit as one metre. Without normals a glTF viewer
    shades flat, per face.
    ``.ply``: binary little-endian, float32 ``x y z`` (and ``nx ny nz`` when given), uchar
    ``red green blue alpha``; MeshLab, CloudCompare and Blender show the colours; ``gr.Model3D``
    shows them somewhat darker.
    ``.obj``: text, ``v x y z r g b`` with colours as floats in [0, 1] (a widespread extension;
    alpha is dropped); MeshLab and Blender read the colours, but ``gr.Model3D`` renders the mesh
    solid black, so offer ``.glb`` in the browser.
Video ``.mp4``
    ``write_video``: H.264 (libx264), pixel format yuv420p, constant frame rate, ``moov`` index at
    the front (faststart), so browsers and ``gr.Video`` play it while it downloads. Odd widths or
    heights are padded by one edge-replicated pixel (yuv420p needs even sizes).
Animated GIF
    ``write_gif``: Pillow, adaptive palette per frame, delays in hundredths of a second.
``.mrc`` (MRC2014, mode 2)
    A float32 density volume stored as given, axis order unchanged, exactly as ``gen_samples.py
    --shapes`` writes it; the optional voxel size goes in the header (MRC calls the unit Angstrom; we
    store world units). ChimeraX opens it; EG3D's README suggests a surface level near 10.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from demo.errors import InputError

if TYPE_CHECKING:
    import torch

# trimesh (about a second) and mrcfile are imported inside the functions that need them, and torch is
# never imported here, so that importing this module (as the CLI does) stays cheap.

DEPTH_PNG_SCALE = 10000.0
"""Depth PNG counts per world unit: one count is 1e-4 world units."""

MESH_SUFFIXES = (".glb", ".ply", ".obj")
"""Mesh formats :func:`write_mesh` writes, chosen by the file name's suffix."""

# Viridis (van der Walt and Smith, CC0) sampled at 9 evenly spaced points from dark to bright; linear
# interpolation between them keeps its monotonic lightness, which is what makes "brighter = nearer" hold.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 45, 123],
        [59, 82, 139],
        [44, 114, 142],
        [33, 144, 140],
        [39, 173, 129],
        [93, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


# ---------------------------------------------------------------------------------------------
# Array conversions


def image_to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Convert generator images to uint8, exactly as the official ``gen_samples.py`` does.

    Args:
        images: ``(B, C, H, W)`` or ``(C, H, W)`` with C = 3 (RGB) or 1 (grey), float, roughly in
            [-1, 1]. A torch tensor may live on any device.

    Returns:
        ``(B, H, W, 3)`` / ``(H, W, 3)`` uint8, or ``(B, H, W)`` / ``(H, W)`` for one channel:
        ``clamp(x * 127.5 + 128, 0, 255)`` truncated toward zero. NaN counts as 0 (grey 128).
    """
    array = _to_numpy(images)
    if array.ndim not in (3, 4) or array.shape[-3] not in (1, 3):
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W) with C = 1 or 3, got shape {array.shape}")
    # float32 in two separate steps, as torch evaluates the official expression, so results are bit-identical.
    array = np.nan_to_num(array.astype(np.float32), nan=0.0)
    array = np.clip(array * np.float32(127.5) + np.float32(128.0), 0.0, 255.0).astype(np.uint8)
    array = np.moveaxis(array, -3, -1)
    return array[..., 0] if array.shape[-1] == 1 else array


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """A square uint8 image (H, H, 3) resized to (size, size, 3) with Lanczos (unchanged when already that size)."""
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def depth_to_uint16(depth: torch.Tensor | np.ndarray, *, scale: float = DEPTH_PNG_SCALE) -> np.ndarray:
    """Quantise depth for a 16-bit PNG: ``round(depth * scale)`` clipped to [0, 65535].

    Args:
        depth: ``(B, 1, H, W)``, ``(1, H, W)`` or ``(H, W)`` distance along the ray, world units.
            +-inf and NaN mean no surface.
        scale: counts per world unit.

    Returns:
        uint16 ``(B, H, W)`` or ``(H, W)`` (the channel axis is dropped); 0 where there is no surface.
    """
    array = _drop_channel(_to_numpy(depth).astype(np.float64), "depth")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    # Clip before scaling so that huge finite values cannot overflow; negative depths become 0 as well.
    array = np.clip(np.where(np.isfinite(array), array, 0.0), 0.0, 65535.0 / scale)
    return np.clip(np.rint(array * scale), 0, 65535).astype(np.uint16)


def depth_from_uint16(array: np.ndarray, *, scale: float = DEPTH_PNG_SCALE) -> np.ndarray:
    """Inverse of :func:`depth_to_uint16`: float32 world units, NaN where the count is 0."""
    array = np.asarray(array)
    if array.dtype != np.uint16:
        raise ValueError(f"expected a uint16 array (a 16-bit depth PNG), got {array.dtype}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    depth = (array.astype(np.float64) / scale).astype(np.float32)
    depth[array == 0] = np.nan
    return depth


def colorize_depth(
    depth: torch.Tensor | np.ndarray,
    alpha: torch.Tensor | np.ndarray | None = None,
    *,
    near: float | None = None,
    far: float | None = None,
) -> np.ndarray:
    """Colour a depth map for viewing: near surfaces bright yellow, far ones dark violet (viridis).

    Args:
        depth: ``(H, W)`` (leading size-1 axes are allowed) distance along the ray, world units.
        alpha: optional ``(H, W)`` coverage in [0, 1]; pixels below 0.5 are background.
        near: depth shown brightest; default the smallest depth over foreground pixels.
        far: depth shown darkest; default the largest depth over foreground pixels.

    Returns:
        ``(H, W, 3)`` uint8. Background (alpha < 0.5) and non-finite depths are black. Depths outside
        [near, far] take the end colours; if near == far every foreground pixel gets the near colour.
    """
    depth = _squeeze_to_2d(_to_numpy(depth).astype(np.float64), "depth")
    foreground = np.isfinite(depth)
    if alpha is not None:
        alpha = _squeeze_to_2d(_to_numpy(alpha).astype(np.float64), "alpha")
        if alpha.shape != depth.shape:
            raise ValueError(f"alpha shape {alpha.shape} does not match depth shape {depth.shape}")
        foreground &= alpha >= 0.5
    out = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not foreground.any():
        return out
    values = depth[foreground]
    near = float(values.min()) if near is None else float(near)
    far = float(values.max()) if far is None else float(far)
    span = far - near
    # t = 1 at near (brightest end of the map), 0 at far.
    t = np.clip((far - values) / span, 0.0, 1.0) if span != 0 else np.ones_like(values)
    position = t * (len(_VIRIDIS) - 1)
    low = np.minimum(np.floor(position).astype(np.int64), len(_VIRIDIS) - 2)
    frac = (position - low)[:, None]
    colors = _VIRIDIS[low] * (1.0 - frac) + _VIRIDIS[low + 1] * frac
    out[foreground] = np.rint(colors).astype(np.uint8)
    return out


def alpha_to_uint8(alpha: torch.Tensor | np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] to an 8-bit mask ``round(255 * alpha)``.

    Args:
        alpha: ``(B, 1, H, W)``, ``(1, H, W)`` or ``(H, W)``; values are clipped to [0, 1], NaN is 0.

    Returns:
        uint8 ``(B, H, W)`` or ``(H, W)``.
    """
    array = _drop_channel(_to_numpy(alpha).astype(np.float64), "alpha")
    array = np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0)
    return np.rint(array * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Files


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a PNG atomically, with no metadata, so the same array always gives the same bytes.

    Args:
        path: destination; parent folders are created.
        array: uint8 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, or uint16 ``(H, W)`` (written as a
            16-bit grayscale PNG). Convert floats first with :func:`image_to_uint8`,
            :func:`depth_to_uint16` or :func:`alpha_to_uint8`.

    Returns:
        ``path`` as a ``Path``.
    """
    array = np.asarray(array)
    is_uint8 = array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)))
    is_uint16 = array.dtype == np.uint16 and array.ndim == 2
    if not (is_uint8 or is_uint16):
        raise ValueError(
            f"save_png takes uint8 (H, W), (H, W, 3), (H, W, 4) or uint16 (H, W); got {array.dtype} {array.shape}"
        )
    image = Image.fromarray(np.ascontiguousarray(array))
    path = Path(path)
    with _atomic_target(path) as part:
        image.save(part, format="PNG")
    return path


def load_png(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into an array; the inverse of :func:`save_png`.

    Returns:
        uint8 ``(H, W)`` (grey), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA), or uint16 ``(H, W)``
        for 16-bit grayscale. Palette and other modes are converted to RGB or RGBA.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I;16"):
                return np.asarray(image).astype(np.uint16)
            if image.mode == "I":
                # Some readers give 16-bit PNGs as 32-bit "I"; keep them 16-bit when the values fit.
                values = np.asarray(image)
                if values.min() >= 0 and values.max() <= 65535:
                    return values.astype(np.uint16)
                raise InputError(f"{path} holds 32-bit integer pixels; expected an 8-bit or 16-bit PNG.")
            if image.mode not in ("L", "RGB", "RGBA"):
                has_alpha = "A" in image.mode or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
            return np.array(image)
    except FileNotFoundError as error:
        raise InputError(f"{path} does not exist.") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path} is not a readable image ({error}). Use a PNG or JPEG file.") from error


def save_npy(path: str | os.PathLike, array: torch.Tensor | np.ndarray) -> Path:
    """Write one array as ``.npy`` atomically; torch tensors are copied to CPU NumPy first.

    Object arrays are refused (``ValueError``): they would need pickle, which :func:`load_npy` never
    reads.
    """
    array = np.asarray(_to_numpy(array))
    if array.dtype.hasobject:
        raise ValueError("save_npy refuses object arrays; they would be pickled")
    path = Path(path)
    # A file object, because np.save appends ".npy" to a path that does not already end in it.
    with _atomic_target(path) as part, open(part, "wb") as file:
        np.save(file, array, allow_pickle=False)
    return path


MAX_NPY_BYTES = 512 * 1024 * 1024
"""Largest array load_npy reads (100,000 z of 512 float64 are 400 MB); the header is checked first."""


def read_npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a ``.npy`` file's header, without reading its data.

    Raises:
        InputError: missing file, not a ``.npy`` file, object (pickled) data, or a header that
            claims more data than the file holds.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unknown .npy version {version}")
            offset = handle.tell()
    except FileNotFoundError as error:
        raise InputError(f"{path} does not exist.") from error
    except (OSError, ValueError, EOFError, SyntaxError) as error:
        raise InputError(f"{path} is not a .npy array file ({error}). Save arrays with numpy.save.") from None
    if dtype.hasobject:
        raise InputError(f"{path} is not a .npy array file (it holds pickled Python objects, which are never loaded).")
    if any(size < 0 for size in shape):
        raise InputError(f"{path} has a damaged header (shape {shape}).")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if offset + claimed > path.stat().st_size:
        raise InputError(
            f"{path} is damaged: its header describes an array of shape {tuple(shape)} ({claimed / 1e6:.1f} MB) "
            f"but the file holds {path.stat().st_size / 1e6:.1f} MB."
        )
    return tuple(int(size) for size in shape), dtype


def load_npy(
    path: str | os.PathLike, *, shape: tuple[int, ...] | None = None, max_bytes: int = MAX_NPY_BYTES
) -> np.ndarray:
    """Read a ``.npy`` array without ever unpickling, optionally checking its shape.

    The header is read first: a wrong shape, object data, a damaged file or an array over
    ``max_bytes`` is refused before any data is read.

    Args:
        path: a file written by ``numpy.save``.
        shape: expected shape, -1 meaning any size on that axis, e.g. ``(-1, 14, 512)``.

    Raises:
        InputError: the file is missing, is not a ``.npy`` array (an ``.npz``, a pickle, an object
            array, anything else), is too large, or has the wrong shape.
    """
    if shape is not None and not all(isinstance(size, int) and size >= -1 for size in shape):
        raise ValueError(f"shape entries must be sizes or -1 (any size), got {shape}")
    path = Path(path)
    header_shape, dtype = read_npy_header(path)
    if shape is not None and not _shape_matches(header_shape, shape):
        sizes = ["any" if size == -1 else str(size) for size in shape]
        expected = f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"
        raise InputError(f"{path} holds an array of shape {header_shape}, expected {expected}.")
    size = int(np.prod(header_shape, dtype=object)) * dtype.itemsize
    if size > max_bytes:
        raise InputError(f"{path} holds {size / 1e6:.0f} MB of data; at most {max_bytes / 1e6:.0f} MB are read here.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:
        reason = "it holds pickled Python objects, which are never loaded" if "pickle" in str(error) else str(error)
        raise InputError(f"{path} is not a .npy array file ({reason}). Save arrays with numpy.save.") from error
    except (OSError, EOFError) as error:
        raise InputError(f"{path} is not a .npy array file ({error}). Save arrays with numpy.save.") from error
    return loaded


def write_mesh(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    vertex_colors: np.ndarray | None = None,
    vertex_normals: np.ndarray | None = None,
) -> Path:
    """Write a triangle mesh atomically as ``.glb``, ``.ply`` or ``.obj`` (chosen by the suffix).

    Vertices are written in the given order and never merged, so vertex ``i`` of the file is
    ``vertices[i]``.

    Args:
        path: destination ending in one of :data:`MESH_SUFFIXES`.
        vertices: ``(V, 3)`` positions in world units (written as float32).
        faces: ``(F, 3)`` integer vertex indices, F > 0, counter-clockwise seen from outside.
        vertex_colors: optional ``(V, 3)`` RGB or ``(V, 4)`` RGBA uint8.
        vertex_normals: optional ``(V, 3)`` unit normals.

    Returns:
        ``path`` as a ``Path``.
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"unknown mesh format {path.suffix!r} for {path}; supported: {', '.join(MESH_SUFFIXES)}")
    vertices = np.asarray(_to_numpy(vertices))
    faces = np.asarray(_to_numpy(faces))
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be integer (F, 3), got {faces.dtype} {faces.shape}")
    if len(faces) == 0:
        raise ValueError("the mesh has no faces; there is nothing to write")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"face indices must lie in [0, {len(vertices)}), got [{faces.min()}, {faces.max()}]")
    if vertex_colors is not None:
        vertex_colors = np.asarray(_to_numpy(vertex_colors))
        if vertex_colors.dtype != np.uint8 or vertex_colors.shape not in ((len(vertices), 3), (len(vertices), 4)):
            raise ValueError(
                f"vertex_colors must be uint8 ({len(vertices)}, 3) or ({len(vertices)}, 4), "
                f"got {vertex_colors.dtype} {vertex_colors.shape}"
            )
    if vertex_normals is not None:
        vertex_normals = np.asarray(_to_numpy(vertex_normals), dtype=np.float32)
        if vertex_normals.shape != vertices.shape:
            raise ValueError(f"vertex_normals must be {vertices.shape}, got {vertex_normals.shape}")

    if suffix == ".glb":
        data = _glb_bytes(vertices.astype(np.float32), faces.astype(np.uint32), vertex_colors, vertex_normals)
        with _atomic_target(path) as part:
            part.write_bytes(data)
        return path
    mesh = trimesh.Trimesh(
        vertices=vertices.astype(np.float32),
        faces=faces.astype(np.int64),
        vertex_colors=vertex_colors,
        vertex_normals=vertex_normals,
        process=False,
        validate=False,
    )
    has_normals = vertex_normals is not None
    if suffix == ".ply":
        data = mesh.export(file_type="ply", encoding="binary", vertex_normal=has_normals, include_attributes=False)
    else:
        data = mesh.export(file_type="obj", include_normals=has_normals, include_color=True, include_texture=False)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with _atomic_target(path) as part:
        part.write_bytes(data)
    return path


def srgb_to_linear(colors: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., C) -> float32 linear in [0, 1] (the IEC 61966-2-1 transfer function)."""
    c = np.asarray(colors, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _glb_bytes(
    vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray | None, vertex_normals: np.ndarray | None
) -> bytes:
    """A binary glTF 2.0 file of one triangle mesh.

    glTF defines COLOR_0 as linear: the sRGB vertex colours are converted and stored as float32 (no
    8-bit banding in the darks; alpha kept). The material is unlit (KHR_materials_unlit) with a
    non-metallic, fully rough PBR fallback, so viewers show the baked colours as they are instead of
    a default metallic surface.
    """
    import json as json_module
    import struct

    arrays: list[tuple[bytes, int]] = []  # (data, bufferView target)
    accessors: list[dict] = []
    attributes: dict[str, int] = {}

    def add(data: np.ndarray, component: int, kind: str, target: int, **extra) -> int:
        arrays.append((np.ascontiguousarray(data).tobytes(), target))
        accessors.append({"bufferView": len(arrays) - 1, "componentType": component, "count": int(len(data)), "type": kind,
                          **extra})
        return len(accessors) - 1

    float_type, uint_type, array_buffer, element_buffer = 5126, 5125, 34962, 34963
    attributes["POSITION"] = add(vertices, float_type, "VEC3", array_buffer,
                                 min=[float(v) for v in vertices.min(0)], max=[float(v) for v in vertices.max(0)])
    if vertex_normals is not None:
        attributes["NORMAL"] = add(vertex_normals.astype(np.float32), float_type, "VEC3", array_buffer)
    if vertex_colors is not None:
        linear = srgb_to_linear(vertex_colors[:, :3])
        if vertex_colors.shape[1] == 4:
            linear = np.concatenate([linear, (vertex_colors[:, 3:4] / 255.0).astype(np.float32)], axis=1)
        attributes["COLOR_0"] = add(linear, float_type, "VEC4" if linear.shape[1] == 4 else "VEC3", array_buffer)
    indices = add(faces.reshape(-1), uint_type, "SCALAR", element_buffer)
    views, blob = [], bytearray()
    for data, target in arrays:
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), "target": target})
        blob += data + b"\0" * (-len(data) % 4)
    document = {
        "asset": {"version": "2.0", "generator": "3D Face Studio"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}],
        "materials": [{
            "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0},
            "extensions": {"KHR_materials_unlit": {}},
            "doubleSided": False,
        }],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    text = json_module.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return b"".join([
        struct.pack("<4sII", b"glTF", 2, total),
        struct.pack("<I4s", len(text), b"JSON"), text,
        struct.pack("<I4s", len(blob), b"BIN\0"), bytes(blob),
    ])


def write_mrc(
    path: str | os.PathLike, volume: torch.Tensor | np.ndarray, *, voxel_size: float | None = None,
    origin: tuple[float, float, float] | None = None,
) -> Path:
    """Write a 3D volume as an MRC2014 file (mode 2, float32), atomically, as ``gen_samples.py`` does.

    Args:
        path: destination, usually ``*.mrc``.
        volume: ``(D0, D1, D2)`` real values (density sigma); written as float32 in the given axis order.
        voxel_size: optional edge length of a voxel in world units, stored in the header.
        origin: optional (x, y, z) world position of the first voxel, stored in the header.

    Returns:
        ``path`` as a ``Path``.
    """
    import mrcfile

    volume = _to_numpy(volume)
    if volume.ndim != 3 or not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise ValueError(f"volume must be a real 3D array, got {volume.dtype} {volume.shape}")
    if voxel_size is not None and not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    path = Path(path)
    # Memory-mapped like the official script: a 512^3 volume is 512 MiB, written without a second copy.
    with (
        _atomic_target(path) as part,
        mrcfile.new_mmap(part, shape=volume.shape, mrc_mode=2, overwrite=True) as mrc,
    ):
        mrc.data[:] = volume
        if voxel_size is not None:
            mrc.voxel_size = float(voxel_size)
        if origin is not None:
            mrc.header.origin = tuple(float(v) for v in origin)
        mrc.update_header_stats()
        # mrcfile stamps a creation-time label; drop it so the same volume gives the same bytes.
        mrc.header.label[:] = b""
        mrc.header.nlabl = 0
    return path


def output_name(seed: int | None = None, *, index: int | None = None, suffix: str = "", ext: str) -> str:
    """A file name that says what the file holds.

    ``output_name(42, suffix="_yaw-30", ext="glb")`` is ``"seed0042_yaw-30.glb"`` (at least four
    digits); without a seed, ``output_name(index=7, ext="png")`` is ``"sample0007.png"``. A seed wins
    over an index when both are given.

    Args:
        seed: non-negative generator seed.
        index: non-negative running number, used when there is no seed.
        suffix: text after the number, without path separators.
        ext: extension without the dot, e.g. ``"png"``.
    """
    if not ext or ext.startswith(".") or not ext.replace(".", "").isalnum():
        raise ValueError(f"ext must be an extension without the leading dot, like 'png'; got {ext!r}")
    if "/" in suffix or "\\" in suffix or "\0" in suffix:
        raise ValueError(f"suffix must not contain path separators, got {suffix!r}")
    return f"{output_stem(seed, index=index)}{suffix}.{ext}"


def output_stem(seed: int | None = None, *, index: int | None = None) -> str:
    """The sample part of :func:`output_name`: ``seed0042`` or, without a seed, ``sample0007``."""
    if seed is not None:
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        return f"seed{int(seed):04d}"
    if index is None:
        raise ValueError("output_name needs a seed or an index")
    if int(index) < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    return f"sample{int(index):04d}"


def save_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    path = Path(path)
    with _atomic_target(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(part)`` to fill ``<path>.part``, then rename it to ``path``; on failure nothing is left."""
    path = Path(path)
    with _atomic_target(path) as part:
        write(part)
    return path


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create the folder if needed and prove it is writable by creating and removing a probe file.

    Raises:
        InputError: "cannot write to <path>: <reason>. Choose another --outdir."
    """
    path = Path(path)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "xb"):
            pass
        probe.unlink()
    except FileExistsError as error:
        reason = "it is a file, not a folder" if path.exists() and not path.is_dir() else (error.strerror or str(error))
        raise InputError(f"cannot write to {path}: {reason}. Choose another --outdir.") from error
    except OSError as error:
        raise InputError(f"cannot write to {path}: {error.strerror or error}. Choose another --outdir.") from error
    return path


# ---------------------------------------------------------------------------------------------
# Helpers


@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield ``<path>.part`` to write to; rename it to ``path`` on success, delete it on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        yield part
        os.replace(part, path)
    except BaseException:
        try:
            part.unlink(missing_ok=True)
        except OSError:
            pass  # the original error matters more than a leftover .part
        raise


def _to_numpy(value: Any) -> np.ndarray:
    """A NumPy view or copy of an array-like; torch tensors are detached and moved to the CPU."""
    torch = sys.modules.get("torch")  # if torch was never imported, value cannot be a tensor
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # NumPy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _drop_channel(array: np.ndarray, name: str) -> np.ndarray:
    """``(B, 1, H, W)`` -> ``(B, H, W)``, ``(1, H, W)`` -> ``(H, W)``, ``(H, W)`` unchanged."""
    if array.ndim == 4 and array.shape[1] == 1:
        return array[:, 0]
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0]
    if array.ndim == 2:
        return array
    raise ValueError(f"{name} must be (B, 1, H, W), (1, H, W) or (H, W), got shape {array.shape}")


def _squeeze_to_2d(array: np.ndarray, name: str) -> np.ndarray:
    """Drop leading size-1 axes down to ``(H, W)``."""
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name} must be one (H, W) map, got shape {array.shape}")
    return array


def _shape_matches(actual: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(actual) == len(expected) and all(e == -1 or a == e for a, e in zip(actual, expected))


# ---------------------------------------------------------------------------------------------
# Video and frame sequences
#
# Videos go through imageio's FFMPEG plugin, which drives the static ffmpeg that the imageio-ffmpeg
# wheel ships (no system ffmpeg is needed). Both are imported inside the functions: imageio takes a
# noticeable fraction of a second to import and most commands never write a video.

VIDEO_SUFFIX = ".mp4"
"""The one container :func:`write_video` writes."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`read_video_info` finds in a video file."""

    num_frames: int
    """Frames in the first video stream (counted from its packets, not estimated from the duration)."""
    width: int
    """Frame width in pixels."""
    height: int
    """Frame height in pixels."""
    fps: float
    """Frame rate as ffmpeg reports it (exact for integer rates; two decimals otherwise, e.g. 29.97)."""
    codec: str
    """Codec name as ffmpeg spells it, e.g. ``"h264"``."""
    pix_fmt: str
    """Pixel format without ffmpeg's colour-range notes, e.g. ``"yuv420p"``."""


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    *,
    fps: float = 30.0,
    crf: int = 18,
) -> Path:
    """Write frames as an H.264 ``.mp4`` that browsers play (Chromium, Firefox, Safari, ``gr.Video``).

    The stream is H.264 (libx264) in pixel format yuv420p at a constant ``fps``, with the ``moov``
    index at the front of the file (``-movflags +faststart``) so that playback starts before the
    download ends. Frames are streamed to ffmpeg one at a time; an iterable is never collected.

    yuv420p stores colour at half resolution and so needs an even width and height: an odd size is
    padded by one pixel on the right and/or bottom, repeating the edge pixels, so a 33x17 input gives
    a 34x18 video. Colours come back within a few levels (lossy; ``crf`` 18 is visually lossless).

    Args:
        path: destination ending in ``.mp4``; parent folders are created. Written atomically: on any
            failure neither ``path`` nor its ``.part`` file is left behind.
        frames: ``(T, H, W, 3)`` uint8 RGB with T >= 1, or an iterable of ``(H, W, 3)`` uint8 RGB
            frames, all of the same size.
        fps: frames per second, > 0; stored as an exact fraction (24 -> 24/1, 29.97 -> 2997/100).
        crf: x264 constant rate factor in [0, 51]; lower is better and larger, 18 is near lossless,
            23 is x264's default.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: the suffix is not ``.mp4``, there are no frames, a frame is not ``(H, W, 3)``
            uint8 or differs in size from the first, or ``fps`` / ``crf`` is out of range.
    """
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() != VIDEO_SUFFIX:
        raise ValueError(f"write_video writes {VIDEO_SUFFIX} files only, got {path.name!r}")
    fps = _check_fps(fps)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")
    stream = _frame_stream(frames, "write_video")
    first = next(stream)  # before anything touches the disk: no frames means no file
    height, width = first.shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0)) if height % 2 or width % 2 else None
    output_params = [
        # RGB -> YUV with the BT.709 matrix in limited range, and the stream tagged so, so that players
        # (and our reader) convert back with the same matrix instead of guessing.
        *("-vf", "scale=out_color_matrix=bt709:out_range=tv,"
                 "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv"),
        *("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"),
        *("-crf", str(int(crf))),
        *("-movflags", "+faststart"),
        *("-fps_mode", "cfr"),
        # ffmpeg picks the container from the file name, and ours ends in ".part": name it.
        *("-f", "mp4"),
    ]
    with _atomic_target(path) as part:
        # imageio's FFMPEG plugin refuses names it does not recognise; `extension` tells it what the
        # ".part" file is. `legacy_get_writer` is what imageio.v2.get_writer returns for this plugin.
        plugin = iio.imopen(part, "wI", plugin="FFMPEG", extension=VIDEO_SUFFIX, legacy_mode=True)
        writer = plugin.legacy_get_writer(
            fps=fps,
            codec="libx264",
            quality=None,  # rate control is `-crf` in output_params
            pixelformat="yuv420p",
            macro_block_size=1,  # sizes are made even above; never let ffmpeg rescale
            ffmpeg_log_level="error",
            output_params=output_params,
        )
        # Not `with writer:` - imageio's writer skips closing when the block raises, which would leave
        # ffmpeg running and writing the ".part" file after `_atomic_target` has deleted it. Closing
        # waits for ffmpeg to exit, so the file is complete (or gone) before it is renamed or deleted.
        try:
            for frame in itertools.chain([first], stream):
                if frame.shape != first.shape:
                    raise ValueError(f"all frames must be {first.shape}; got a frame of shape {frame.shape}")
                writer.append_data(frame if pad is None else np.pad(frame, pad, mode="edge"))
        except BaseException:
            try:
                writer.close()
            except (OSError, RuntimeError):
                pass  # the original error matters more
            raise
        writer.close()
        # imageio does not report ffmpeg's exit status; an empty file is how a failed run shows here.
        if not part.is_file() or part.stat().st_size == 0:
            raise OSError(f"ffmpeg wrote no video to {path}; see its messages on stderr")
    return path


def write_gif(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    *,
    fps: float = 15.0,
    loop: bool = True,
    max_side: int | None = 512,
) -> Path:
    """Write frames as an animated GIF with Pillow, atomically.

    Each frame gets its own adaptive 256-colour palette. The GIF format stores delays in hundredths
    of a second, so the per-frame delay ``round(1000 / fps)`` ms is stored truncated to 10 ms steps
    (15 fps: 67 ms requested, 60 ms stored); browsers slow delays under 20 ms down, so keep
    ``fps`` <= 50. Pillow merges a frame identical to the one before into a single longer frame, so a
    still stretch reloads as fewer frames of the same total duration.

    Args:
        path: destination, usually ``*.gif``; parent folders are created.
        frames: ``(T, H, W, 3)`` uint8 RGB with T >= 1, or an iterable of ``(H, W, 3)`` uint8 RGB
            frames of the same size.
        fps: frames per second, > 0.
        loop: loop forever when true, play once otherwise.
        max_side: frames larger than this on their longer side are downscaled (Lanczos, keeping the
            aspect ratio) so that it equals ``max_side``; ``None`` keeps the size.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    fps = _check_fps(fps)
    if max_side is not None and (
        isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1
    ):
        raise ValueError(f"max_side must be a positive integer or None, got {max_side!r}")
    stream = _frame_stream(frames, "write_gif")
    first = next(stream)
    height, width = first.shape[:2]
    size = (width, height)
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def to_image(frame: np.ndarray) -> Image.Image:
        if frame.shape != first.shape:
            raise ValueError(f"all frames must be {first.shape}; got a frame of shape {frame.shape}")
        image = Image.fromarray(np.ascontiguousarray(frame))
        return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)

    options: dict[str, Any] = {"duration": round(1000.0 / fps)}
    if loop:
        options["loop"] = 0  # the NETSCAPE extension's "repeat forever"; without it a GIF plays once
    with _atomic_target(path) as part:
        to_image(first).save(
            part,
            format="GIF",
            save_all=True,
            append_images=(to_image(frame) for frame in stream),
            optimize=False,
            **options,
        )
    return path


def save_frames(
    folder: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], *, stem: str = "frame"
) -> list[Path]:
    """Write one PNG per frame, ``<stem>0000.png``, ``<stem>0001.png``, ... (at least four digits).

    Args:
        folder: destination folder; created if needed.
        frames: ``(T, H, W, 3)`` uint8, or an iterable of frames :func:`save_png` accepts.
        stem: file name before the number, without path separators.

    Returns:
        The written paths in frame order (empty for no frames).
    """
    if not stem or "/" in stem or "\\" in stem or "\0" in stem:
        raise ValueError(f"stem must be a non-empty name without path separators, got {stem!r}")
    folder = Path(folder)
    return [save_png(folder / f"{stem}{index:04d}.png", frame) for index, frame in enumerate(frames)]


def read_video_info(path: str | os.PathLike) -> VideoInfo:
    """Size, frame count, frame rate, codec and pixel format of a video file's first video stream.

    Any format the bundled ffmpeg reads works, whatever the file name. The frame count comes from
    the stream's packets (fast; nothing is decoded).

    Raises:
        InputError: the file is missing or is not a video ffmpeg can read.
    """
    path = Path(path)
    with _video_reader(path) as reader:
        meta = reader.get_meta_data()
        try:
            num_frames = int(reader.count_frames())
        except (OSError, RuntimeError) as error:
            raise InputError(f"{path} is not a readable video ({_ffmpeg_reason(error)}).") from error
    width, height = meta["size"]
    return VideoInfo(
        num_frames=num_frames,
        width=int(width),
        height=int(height),
        fps=float(meta["fps"]),
        # ffmpeg's header says e.g. "h264 (High) (avc1 / ...)" and "yuv420p(progressive)".
        codec=str(meta.get("codec", "")).split()[0].rstrip(",") if meta.get("codec") else "",
        pix_fmt=str(meta.get("pix_fmt", "")).split("(")[0].strip(),
    )


def read_video_frames(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video file.

    Returns:
        ``(T, H, W, 3)`` uint8 RGB, T >= 1. The whole video is held in memory.

    Raises:
        InputError: the file is missing, is not a video ffmpeg can read, or holds no frames.
    """
    path = Path(path)
    with _video_reader(path) as reader:
        try:
            frames = [np.asarray(frame) for frame in reader.iter_data()]
        except (OSError, RuntimeError) as error:
            raise InputError(f"{path} is not a readable video ({_ffmpeg_reason(error)}).") from error
    if not frames:
        raise InputError(f"{path} holds no video frames.")
    return np.stack(frames).astype(np.uint8, copy=False)


def tile_frames(frames: list[np.ndarray]) -> np.ndarray:
    """Place images or frame sequences side by side, left to right (e.g. image | depth preview).

    Args:
        frames: a non-empty list of uint8 arrays, all ``(H_i, W_i, 3)`` or all ``(T, H_i, W_i, 3)``
            with the same T. An array whose height differs from the first's is resized (nearest
            neighbour) to the first's height, its width scaled by the same factor (rounded, at
            least 1).

    Returns:
        uint8 ``(H_0, sum W_i, 3)`` or ``(T, H_0, sum W_i, 3)``.
    """
    if not frames:
        raise ValueError("tile_frames needs at least one array")
    arrays = [np.asarray(frame) for frame in frames]
    reference = arrays[0]
    for array in arrays:
        if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
            raise ValueError(
                f"tile_frames takes uint8 (H, W, 3) or (T, H, W, 3) arrays, got {array.dtype} {array.shape}"
            )
        if array.ndim != reference.ndim or (array.ndim == 4 and len(array) != len(reference)):
            raise ValueError(f"all arrays must be alike: got {reference.shape} and {array.shape}")
    height = reference.shape[-3]
    resized = []
    for array in arrays:
        if array.shape[-3] != height:
            old_height, old_width = array.shape[-3:-1]
            width = max(1, round(old_width * height / old_height))
            # Nearest neighbour: output pixel centre (i + 0.5) samples input pixel floor((i + 0.5) * old / new).
            rows = np.minimum(((np.arange(height) + 0.5) * old_height / height).astype(np.int64), old_height - 1)
            cols = np.minimum(((np.arange(width) + 0.5) * old_width / width).astype(np.int64), old_width - 1)
            array = array[..., rows, :, :][..., cols, :]
        resized.append(array)
    return np.concatenate(resized, axis=-2)


def _frame_stream(frames: np.ndarray | Iterable[np.ndarray], name: str) -> Iterator[np.ndarray]:
    """Yield checked ``(H, W, 3)`` uint8 frames one at a time; raises ``ValueError`` on the first bad one.

    A generator, so that an iterable input is consumed lazily; asking for the first frame of an
    empty input raises ``ValueError`` (not ``StopIteration``).
    """
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise ValueError(
            f"{name}: frames must be (T, H, W, 3) uint8 or an iterable of (H, W, 3) frames, got {frames.shape}"
        )

    def check(frame: Any) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
            raise ValueError(f"{name}: each frame must be (H, W, 3) uint8 RGB, got {frame.dtype} {frame.shape}")
        return frame

    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError(f"{name}: there are no frames; need at least one")

    def generate() -> Iterator[np.ndarray]:
        yield check(first)
        for frame in iterator:
            yield check(frame)

    return generate()


def _check_fps(fps: float) -> float:
    if (
        isinstance(fps, bool)
        or not isinstance(fps, (int, float, np.integer, np.floating))
        or not (math.isfinite(fps) and fps > 0)
    ):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return float(fps)


@contextmanager
def _video_reader(path: Path) -> Iterator[Any]:
    """Open ``path`` with imageio's FFMPEG reader; missing or unreadable files raise ``InputError``."""
    import imageio.v3 as iio

    if not path.is_file():
        reason = "is a folder, not a video file" if path.is_dir() else "does not exist"
        raise InputError(f"{path} {reason}.")
    try:
        # ffmpeg probes the content itself; the extension only gets past imageio's check of the name.
        reader = iio.imopen(path, "rI", plugin="FFMPEG", extension=VIDEO_SUFFIX, legacy_mode=True).legacy_get_reader()
    except (OSError, RuntimeError, ValueError) as error:
        raise InputError(
            f"{path} is not a readable video ({_ffmpeg_reason(error)}). Use an .mp4 file such as write_video writes."
        ) from error
    try:
        yield reader
    finally:
        reader.close()


def _ffmpeg_reason(error: BaseException) -> str:
    """The last line of ffmpeg's messages in an imageio error (e.g. "Invalid data found when processing input")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    last = lines[-1]
    return last.split(": ", 1)[1] if last.startswith("Error opening input") and ": " in last else last
