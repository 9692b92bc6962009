"""Semantic edits of any face: directions in W found from the checkpoint itself, or loaded from a file.

Two unsupervised ways to find directions, neither needing labels or new weights:

- **SeFa** (Shen & Zhou 2021, "Closed-Form Factorization of Latent Semantics in GANs"): the style
  (affine) layers map w to each convolution's modulation, y = A w + b. Directions n that change
  those styles most maximise ||A n||^2, so they are the eigenvectors of A^T A with the largest
  eigenvalues. A stacks the affine weights (with their equalised-learning-rate gain) of the
  convolutions that read the chosen ws, each row normalised to unit length as in the paper's code.
- **GANSpace** (Härkönen et al. 2020): principal components of W, from ``samples`` z drawn from
  ``RandomState(seed)`` and mapped with the frontal conditioning camera, no truncation.

A :class:`Directions` holds unit vectors (K, w_dim) and, per direction, the standard deviation of
sampled ws along it, so an edit strength ``alpha`` is in standard deviations of W (sliders of
+-3 span what the model produces). Directions are computed once per checkpoint (the weights'
sha256) and per method: kept in memory and, with ``cache_dir``, as ``<sha>-<method>.safetensors``.

User direction files (``load_direction``): a .npy of shape (w_dim,) (InterFaceGAN's boundaries are
(1, w_dim)) for every layer, or (num_ws, w_dim) per layer; its strength is in its own units (the
vector is used as it is, scale 1).

:func:`edit_face` adds ``alpha * scale * direction`` to the ws of the chosen layers (ws indices,
or a group: ``coarse`` blocks up to 16 px, ``middle`` 32-64 px, ``fine`` 128 px and up, ``all``) and
keeps everything else of the face, a photo face's tuned weights included (as PTI edits do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from demo import media
from demo.errors import InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.tasks.face import Face, safe_name
from demo.tasks.sample import ws_from_z
from demo.weights.store import model_fingerprint

METHODS = ("sefa", "ganspace")
LAYER_GROUPS = ("all", "coarse", "middle", "fine")
PCA_SAMPLES = 10_000
PCA_SEED = 0x45444954  # "EDIT": its own stream of z
SCALE_SAMPLES = 2_000
MAX_DIRECTIONS = 64
_CACHE: dict[tuple[str, str], Directions] = {}


@dataclass(frozen=True, eq=False)
class Directions:
    """Unit directions in W, strongest first, with the spread of W along each."""

    vectors: np.ndarray
    """(K, w_dim) float32, unit length (orthonormal for SeFa and GANSpace)."""
    scales: np.ndarray
    """(K,) float32: standard deviation of sampled ws along each direction (1 for user files)."""
    strengths: np.ndarray
    """(K,) float32: eigenvalue of each direction (SeFa: of A^T A; GANSpace: variance), or 1 for user files."""
    method: str
    layers: tuple[int, ...]
    """ws indices the directions were found for (SeFa) and are applied to by default."""
    per_layer: np.ndarray | None = None
    """(num_ws, w_dim) for a user file with one vector per layer (then ``vectors`` holds its mean direction)."""

    def __len__(self) -> int:
        return len(self.vectors)


# --- layers ---------------------------------------------------------------------------------------


def conv_layers(model: TriplaneGenerator) -> list[tuple[str, int, int]]:
    """(module path, ws index, block resolution) of every modulated convolution of the backbone, in order."""
    synthesis = model.backbone.synthesis
    layers = []
    w_index = 0
    for resolution in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{resolution}")
        names = ["conv1"] if block.num_conv == 1 else ["conv0", "conv1"]
        for offset, name in enumerate(names):
            layers.append((f"backbone.synthesis.b{resolution}.{name}", w_index + offset, resolution))
        w_index += block.num_conv
    return layers


def layer_groups(model: TriplaneGenerator) -> dict[str, tuple[int, ...]]:
    """ws indices per group, by the resolution of the block that first reads each w: coarse (up to 16 px),
    middle (32-64 px), fine (128 px and up; with the last ToRGB's w, which the super-resolution reads too), all."""
    synthesis = model.backbone.synthesis
    resolution_of: dict[int, int] = {}
    w_index = 0
    for resolution in synthesis.block_resolutions:
        block = getattr(synthesis, f"b{resolution}")
        for index in range(w_index, w_index + block.num_conv + block.num_torgb):
            resolution_of.setdefault(index, resolution)
        w_index += block.num_conv
    bounds = {"coarse": (0, 16), "middle": (32, 64), "fine": (128, 1 << 20)}
    groups = {"all": tuple(range(model.num_ws))}
    for name, (low, high) in bounds.items():
        groups[name] = tuple(index for index in range(model.num_ws) if low <= resolution_of.get(index, 0) <= high)
    return groups


def resolve_layers(model: TriplaneGenerator, layers: str | Sequence[int] | None) -> tuple[int, ...]:
    """A group name, ws indices, or None (all) -> sorted ws indices; ``InputError`` if out of range or empty."""
    if layers is None:
        return tuple(range(model.num_ws))
    if isinstance(layers, str):
        text = layers.strip().lower()
        groups = layer_groups(model)
        if text in groups:
            if not groups[text]:
                raise InputError(f"This model has no {text!r} layers; choose one of {', '.join(g for g in groups if groups[g])}.")
            return groups[text]
        try:
            layers = [int(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError:
            raise InputError(f"Layers are a group ({', '.join(LAYER_GROUPS)}) or ws indices such as '0,1,2'; got {text!r}.") from None
    indices = sorted({int(index) for index in layers})
    if not indices or indices[0] < 0 or indices[-1] >= model.num_ws:
        raise InputError(f"Layer indices must be from 0 to {model.num_ws - 1}; got {list(layers)}.")
    return tuple(indices)


# --- directions -----------------------------------------------------------------------------------


def sefa_matrix(model: TriplaneGenerator, layers: Sequence[int]) -> np.ndarray:
    """A (sum of channels, w_dim) float64: the affine weights (with their gain) of the convolutions reading ``layers``,
    each row normalised to unit length."""
    modules = dict(model.named_modules())
    chosen = set(layers)
    rows = []
    for path, index, _ in conv_layers(model):
        if index in chosen:
            affine = modules[f"{path}.affine"]
            rows.append(affine.weight.detach().to("cpu", torch.float64).numpy() * affine.weight_gain)
    if not rows:
        raise InputError(f"No convolution reads ws {list(layers)}; choose other layers for SeFa.")
    matrix = np.concatenate(rows)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def sefa_directions(model: TriplaneGenerator, layers: str | Sequence[int] | None = None) -> Directions:
    """SeFa: eigenvectors of A^T A (``sefa_matrix``), largest eigenvalue first."""
    indices = resolve_layers(model, layers)
    matrix = sefa_matrix(model, indices)
    eigenvalues, eigenvectors = np.linalg.eigh(matrix.T @ matrix)
    order = np.argsort(eigenvalues)[::-1][:MAX_DIRECTIONS]
    vectors = eigenvectors[:, order].T
    return Directions(
        vectors=vectors.astype(np.float32), scales=_spread(model, vectors), strengths=eigenvalues[order].astype(np.float32),
        method="sefa", layers=indices,
    )


def ganspace_directions(model: TriplaneGenerator, *, samples: int = PCA_SAMPLES, seed: int = PCA_SEED) -> Directions:
    """GANSpace: principal components of W (``samples`` z, frontal conditioning, no truncation), largest first."""
    w = _sample_w(model, samples, seed)
    centred = w - w.mean(0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / (len(w) - 1)
    keep = slice(0, MAX_DIRECTIONS)
    return Directions(
        vectors=components[keep].astype(np.float32), scales=np.sqrt(variance[keep]).astype(np.float32),
        strengths=variance[keep].astype(np.float32), method="ganspace", layers=tuple(range(model.num_ws)),
    )


def _sample_w(model: TriplaneGenerator, samples: int, seed: int) -> np.ndarray:
    """(samples, w_dim) float64 ws of z from ``RandomState(seed)``, frontal conditioning, no truncation."""
    z = np.random.RandomState(seed).randn(samples, model.z_dim)
    return np.concatenate([
        ws_from_z(model, z[start : start + 2000], truncation_psi=1.0)[:, 0] for start in range(0, samples, 2000)
    ]).astype(np.float64)


def _spread(model: TriplaneGenerator, vectors: np.ndarray) -> np.ndarray:
    """Standard deviation of sampled ws along each (unit) direction."""
    w = _sample_w(model, SCALE_SAMPLES, PCA_SEED)
    return ((w - w.mean(0)) @ vectors.T).std(axis=0).astype(np.float32)


def directions_for(
    model: TriplaneGenerator, method: str = "sefa", *, layers: str | Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
) -> Directions:
    """The model's directions by ``method``, computed once per checkpoint (memory, and ``cache_dir`` if given)."""
    if method not in METHODS:
        raise InputError(f"Unknown direction method {method!r}; choose one of {', '.join(METHODS)}, or load a direction file.")
    indices = resolve_layers(model, layers) if method == "sefa" else tuple(range(model.num_ws))
    key = (model_fingerprint(model)["weights_sha256"], f"{method}-{'-'.join(map(str, indices))}")
    if key in _CACHE:
        return _CACHE[key]
    path = Path(cache_dir) / f"{key[0][:16]}-{method}-{_layers_tag(indices, model)}.safetensors" if cache_dir else None
    found = _read_cached(path) if path is not None and path.is_file() else None
    if found is None:
        found = sefa_directions(model, indices) if method == "sefa" else ganspace_directions(model)
        if path is not None:
            tensors = {name: torch.from_numpy(np.ascontiguousarray(getattr(found, name))) for name in ("vectors", "scales", "strengths")}
            meta = {"method": method, "layers": ",".join(map(str, found.layers))}
            media.write_atomic(path, lambda part: save_file(tensors, str(part), metadata=meta))
    _CACHE[key] = found
    return found


def _layers_tag(indices: tuple[int, ...], model: TriplaneGenerator) -> str:
    for name, group in layer_groups(model).items():
        if group == indices:
            return name
    return "l" + "-".join(map(str, indices))


def _read_cached(path: Path) -> Directions | None:
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        return Directions(
            vectors=tensors["vectors"].numpy(), scales=tensors["scales"].numpy(), strengths=tensors["strengths"].numpy(),
            method=meta["method"], layers=tuple(int(v) for v in meta["layers"].split(",")),
        )
    except Exception:  # a damaged cache file is recomputed
        return None


def load_direction(path: str | Path, model: TriplaneGenerator) -> Directions:
    """A user direction (.npy): (w_dim,) or (1, w_dim) for every layer, or (num_ws, w_dim) / (1, num_ws, w_dim) per layer."""
    array = media.load_npy(path).astype(np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.shape not in ((model.w_dim,), (model.num_ws, model.w_dim)):
        raise InputError(
            f"{Path(path).name} has shape {array.shape}; a direction is ({model.w_dim},) or ({model.num_ws}, {model.w_dim})."
        )
    if not np.isfinite(array).all() or not np.abs(array).sum():
        raise InputError(f"{Path(path).name} holds no usable direction (zeros, NaN or infinite values).")
    per_layer = array.astype(np.float32) if array.ndim == 2 else None
    mean = array if array.ndim == 1 else array.mean(0)
    norm = np.linalg.norm(mean)
    return Directions(
        vectors=(mean / norm if norm else mean)[None].astype(np.float32), scales=np.array([norm if norm else 1.0], np.float32),
        strengths=np.ones(1, np.float32), method=f"file:{Path(path).name}", layers=tuple(range(model.num_ws)), per_layer=per_layer,
    )


# --- edits ----------------------------------------------------------------------------------------


def edit_ws(
    ws: np.ndarray, directions: Directions, alphas: dict[int, float] | Sequence[float], layers: Sequence[int] | None = None,
) -> np.ndarray:
    """ws (N, num_ws, w_dim) + sum_k alpha_k * scale_k * direction_k on ``layers`` (default: the directions' own)."""
    ws = np.asarray(ws, dtype=np.float32)
    items = alphas.items() if isinstance(alphas, dict) else enumerate(alphas)
    offset = np.zeros(ws.shape[1:], np.float64)
    for index, alpha in items:
        if not 0 <= index < len(directions):
            raise InputError(f"Direction {index} does not exist; there are {len(directions)}.")
        alpha = float(alpha)
        if not np.isfinite(alpha):
            raise InputError(f"Edit strengths must be finite numbers; got {alpha}.")
        if alpha == 0.0:
            continue
        if directions.per_layer is not None:
            offset += alpha * directions.per_layer
        else:
            offset += alpha * float(directions.scales[index]) * directions.vectors[index].astype(np.float64)
    chosen = np.zeros(ws.shape[1], bool)
    chosen[list(directions.layers if layers is None else layers)] = True
    if not offset.any():
        return ws.copy()
    edited = ws.astype(np.float64)
    edited[:, chosen] += offset[chosen]
    return edited.astype(np.float32)


def edit_face(
    face: Face, directions: Directions, alphas: dict[int, float] | Sequence[float], *,
    layers: Sequence[int] | None = None, name: str | None = None,
) -> Face:
    """``face`` with edited ws (see :func:`edit_ws`); its camera, tuned weights and provenance are kept."""
    items = alphas if isinstance(alphas, dict) else dict(enumerate(alphas))
    used = {int(k): float(v) for k, v in items.items() if float(v) != 0.0}
    source = {**face.source, "edits": [*face.source.get("edits", []), {
        "method": directions.method, "layers": list(directions.layers if layers is None else layers),
        "alphas": {str(k): v for k, v in used.items()},
    }]} if used else face.source
    edited = edit_ws(face.ws, directions, items, layers)
    return dataclasses.replace(face, ws=edited, source=source, name=safe_name(name or face.name))


def describe(directions: Directions, count: int = 10) -> list[dict[str, Any]]:
    """JSON-ready rows for the first ``count`` directions: index, strength, scale."""
    return [
        {"index": i, "strength": float(directions.strengths[i]), "scale": float(directions.scales[i])}
        for i in range(min(count, len(directions)))
    ]


# --- rendering a sweep ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """What :func:`render_sweep` wrote."""

    strip: Path
    """The face at each alpha, side by side (PNG)."""
    ws: Path
    """(len(alphas), num_ws, w_dim) float32 ws of the sweep (.npy)."""
    record: Path
    """JSON: the face, the method, the direction, its strength and scale, the layers, the alphas."""
    video: Path | None
    """mp4 along alpha from -max to +max and back, or None."""
    faces: tuple[Path, ...] = ()


def render_sweep(
    model: TriplaneGenerator,
    face: Face,
    directions: Directions,
    index: int,
    alphas: Sequence[float],
    out_dir: str | Path,
    *,
    layers: Sequence[int] | None = None,
    video_frames: int | None = None,
    fps: float = 30.0,
    save_faces: bool = False,
    progress=None,
) -> SweepResult:
    """The face edited along direction ``index`` at each alpha, seen from its own view: a strip, the ws, a JSON,
    optionally a video along alpha and the edited faces as files (``<name>_<method>-d<index>_a<alpha>``)."""
    from demo.tasks.face import face_trajectory
    from demo.tasks.video import render_frames, render_video

    alphas = [float(alpha) for alpha in alphas]
    if not alphas or not all(np.isfinite(alphas)):
        raise InputError("Give one or more finite edit strengths (alphas), e.g. -3,-1.5,0,1.5,3.")
    if not 0 <= index < len(directions):
        raise InputError(f"Direction {index} does not exist; there are {len(directions)} (0 to {len(directions) - 1}).")
    out = media.check_writable_dir(out_dir)
    generator = face.generator(model)
    edited = [edit_face(face, directions, {index: alpha}, layers=layers) for alpha in alphas]
    ws = np.concatenate([item.ws for item in edited])
    tag = f"{face.name}_{directions.method.split(':')[0]}-d{index}"
    frames = render_frames(generator, ws, face.view(model), progress=progress)
    strip = media.save_png(out / f"{tag}_strip.png", media.tile_frames(list(frames.frames)))
    ws_path = media.save_npy(out / f"{tag}_ws.npy", ws)
    video = None
    if video_frames:
        extreme = max(abs(alpha) for alpha in alphas) or 1.0
        path_alphas = extreme * np.sin(2 * np.pi * np.arange(video_frames) / video_frames)
        path_ws = np.concatenate([edit_ws(face.ws, directions, {index: a}, layers) for a in path_alphas])
        trajectory = face_trajectory(face, "static", video_frames)
        video = render_video(generator, path_ws, trajectory, out / f"{tag}.mp4", fps=fps).path
    faces = tuple(
        item.save(out / f"{tag}_a{alpha:+.2f}") for item, alpha in zip(edited, alphas, strict=True)
    ) if save_faces else ()
    record = media.save_json(out / f"{tag}.json", {
        "face": face.to_json(), "method": directions.method, "direction": index,
        "strength": float(directions.strengths[index]), "scale": float(directions.scales[index]),
        "layers": list(directions.layers if layers is None else layers), "alphas": alphas,
        "alpha_unit": "the file's own units" if directions.method.startswith("file:")
        else "standard deviations of W along the direction",
    })
    return SweepResult(strip=strip, ws=ws_path, record=record, video=video, faces=faces)
