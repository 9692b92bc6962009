"""A face identity, the currency every task takes: latents, optional tuned weights, its camera, where it came from.

A :class:`Face` is what the app and the CLI pass from one task to the next: made from a seed
(:func:`face_from_seed`), a ws file (:func:`face_from_ws`, :func:`load_face`) or a photo
(``demo.tasks.photo.reconstruct_photo``), and taken by every recipe: views and meshes
(``render_face``), rotation videos (``rotate_face``), multi-view sets (``multiview_face``) and
morphs between any faces (``demo.tasks.morph``).

- ``ws`` (1, num_ws, w_dim) float32: the latents (after truncation; the pivot for a photo).
- ``weight_delta``: for a photo reconstructed with pivotal tuning, ``tuned - base`` of every
  generator tensor tuning changed (float32, CPU). :meth:`Face.generator` applies it to a copy of
  the base model; the base model itself is never changed. Seeds and ws files have none.
- ``camera`` (25,) float32 or None: the camera the face was seen from (the photo's), or None for
  a generated face (then its view is the frontal one).
- ``source``: provenance, JSON-ready: ``{"kind": "seed", "seed": 7, "truncation_psi": 0.7}``,
  ``{"kind": "ws-file", "file": "x_ws.npy"}`` or ``{"kind": "photo", "photo": "me.jpg",
  "preset": "fast", "psnr_tuned": 24.1, ...}``.
- ``base_fingerprint``: sha256 of the model's config and weights (``model_fingerprint``): a delta
  applies only to the weights it was computed from.

File format (``.face.safetensors``, one file, no pickle): tensors ``ws``, optional ``camera`` and
``delta.<tensor name>`` (float16 by default: a PTI delta is small, so the rounding is ~1e-3 of the
delta); the safetensors header's metadata holds one key, ``{"3d-face-studio-face": <JSON of name,
source, fingerprint, shapes>}``. Files are written atomically, and the same face gives the same bytes.
"""

from __future__ import annotations

import copy
import json
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from demo import media
from demo.cameras import Camera, angles_from_camera
from demo.errors import InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.progress import ProgressFn
from demo.tasks.generate import GenerateResult, generate_to_folder
from demo.tasks.interpolate import InterpolationMode, interpolation_path, keyframe_weights, load_keyframes
from demo.tasks.sample import view_camera, ws_from_seeds
from demo.tasks.video import (
    MultiviewResult,
    Trajectory,
    VideoResult,
    make_trajectory,
    render_multiview,
    render_video,
)
from demo.weights.store import model_fingerprint

FORMAT_NAME = "3d-face-studio-face"
FORMAT_VERSION = 1
FACE_SUFFIX = ".face.safetensors"
MAX_FACE_FILE_BYTES = 1 << 30
"""A face file holds ws and at most one generator's worth of float16 delta (~60 MB for EG3D-512)."""


@dataclass(frozen=True, eq=False)
class Face:
    """One identity: latents, optional tuned-weight delta, the camera it was seen from, provenance."""

    ws: np.ndarray = field(repr=False)
    """(1, num_ws, w_dim) float32."""
    name: str = "face"
    """A file-name-safe label: ``seed0007``, ``photo-selfie``."""
    source: dict[str, Any] = field(default_factory=dict)
    camera: np.ndarray | None = None
    """(25,) float32 camera label the face was seen from, or None (frontal)."""
    weight_delta: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    base_fingerprint: dict[str, str] = field(default_factory=dict, repr=False)
    _tuned: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, init=False, repr=False)
    """base model -> its tuned copy: every task of one face renders from one copy, made once."""

    def __post_init__(self) -> None:
        ws = np.asarray(self.ws, dtype=np.float32)
        if ws.ndim == 2:
            ws = ws[None]
        if ws.ndim != 3 or len(ws) != 1:
            raise InputError(f"A face holds one identity: ws of shape (1, num_ws, w_dim); got {tuple(np.shape(self.ws))}.")
        if not np.isfinite(ws).all():
            raise InputError("The face's ws hold NaN or infinite values.")
        object.__setattr__(self, "ws", ws)
        if self.camera is not None:
            camera = np.asarray(self.camera, dtype=np.float32).reshape(-1)
            if camera.shape != (25,) or not np.isfinite(camera).all():
                raise InputError(f"A face's camera is one finite 25-number EG3D label; got shape {camera.shape}.")
            object.__setattr__(self, "camera", camera)
        object.__setattr__(self, "name", safe_name(self.name))

    @property
    def has_delta(self) -> bool:
        return bool(self.weight_delta)

    def view(self, model: TriplaneGenerator) -> Camera:
        """The camera the face was seen from (the photo's), else the model's frontal view."""
        return Camera.from_label(self.camera) if self.camera is not None else view_camera(model)

    def check_fits(self, model: TriplaneGenerator) -> None:
        """``InputError`` unless ``model`` takes these ws (and, with a delta, has the base weights)."""
        if tuple(self.ws.shape[1:]) != (model.num_ws, model.w_dim):
            raise InputError(
                f"The face {self.name!r} has ws of shape {tuple(self.ws.shape[1:])}, but this model takes "
                f"({model.num_ws}, {model.w_dim}): it was made with another model. Choose that model, or another face."
            )
        if self.has_delta and model_fingerprint(model)["weights_sha256"] != self.base_fingerprint.get("weights_sha256"):
            raise InputError(
                f"The face {self.name!r} carries generator weights tuned from another checkpoint (the weights' sha256 "
                "differs). Choose the model it was reconstructed with."
            )

    def generator(self, model: TriplaneGenerator, *, check: bool = True) -> TriplaneGenerator:
        """``model`` itself for a face without a delta; else a tuned copy (base + delta), made once per base model and
        kept with the face. ``model`` is never changed; do not change the copy either (it is shared)."""
        if check:
            self.check_fits(model)
        if not self.has_delta:
            return model
        if model not in self._tuned:
            self._tuned[model] = apply_delta(model, self.weight_delta)
        return self._tuned[model]

    def save(self, path: str | Path, *, delta_dtype: torch.dtype = torch.float16) -> Path:
        """Write the face as one ``.face.safetensors`` file (atomically); returns its path."""
        path = face_path(path)
        tensors = {"ws": torch.from_numpy(self.ws).contiguous()}
        if self.camera is not None:
            tensors["camera"] = torch.from_numpy(self.camera).contiguous()
        for name, delta in self.weight_delta.items():
            tensors[f"delta.{name}"] = delta.to(delta_dtype).contiguous()
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "source": self.source,
            "base_fingerprint": self.base_fingerprint,
            "ws_shape": list(self.ws.shape),
            "delta_dtype": str(delta_dtype).removeprefix("torch."),
            "delta_tensors": len(self.weight_delta),
        }
        # One metadata key: safetensors writes its metadata map in no fixed order, and a face file should be
        # byte-identical for the same face.
        metadata = {FORMAT_NAME: json.dumps(meta, default=str)}
        return media.write_atomic(path, lambda part: save_file(tensors, str(part), metadata=metadata))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (no arrays but the camera)."""
        return {
            "name": self.name, "source": self.source, "ws_shape": list(self.ws.shape),
            "camera": None if self.camera is None else [float(v) for v in self.camera],
            "tuned_tensors": len(self.weight_delta),
        }


def safe_name(name: str) -> str:
    """A label usable in file names: letters, digits, '-', '_' and '.'; at most 64 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.") or "face"
    return cleaned[:64]


def face_path(path: str | Path) -> Path:
    """``path`` with the ``.face.safetensors`` suffix (added when missing)."""
    path = Path(path)
    return path if path.name.endswith(FACE_SUFFIX) else path.with_name(path.name.removesuffix(".safetensors") + FACE_SUFFIX)


def apply_delta(model: TriplaneGenerator, delta: dict[str, torch.Tensor]) -> TriplaneGenerator:
    """A copy of ``model`` with ``delta`` added to its tensors, in eval mode without gradients."""
    tuned = copy.deepcopy(model)
    state = tuned.state_dict()
    unknown = [name for name in delta if name not in state]
    if unknown:
        raise InputError(f"The weight delta names tensors this generator does not have: {unknown[:5]}.")
    with torch.no_grad():
        for name, tensor in delta.items():
            if tuple(tensor.shape) != tuple(state[name].shape):
                raise InputError(f"Weight delta {name}: shape {tuple(tensor.shape)} does not fit {tuple(state[name].shape)}.")
            state[name].add_(tensor.to(state[name].device, state[name].dtype))
    return tuned.eval().requires_grad_(False)


# --- making faces ---------------------------------------------------------------------------------


def face_from_seed(
    model: TriplaneGenerator, seed: int, *, truncation_psi: float = 0.7, truncation_cutoff: int | None = None
) -> Face:
    """The face of ``seed``: z as the official scripts, mapped with the frontal conditioning camera."""
    ws = ws_from_seeds(model, [seed], truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    return Face(
        ws=ws, name=media.output_stem(seed),
        source={"kind": "seed", "seed": int(seed), "truncation_psi": float(truncation_psi), "truncation_cutoff": truncation_cutoff},
        base_fingerprint=model_fingerprint(model),
    )


def face_from_ws(model: TriplaneGenerator, ws: np.ndarray, *, name: str, source: dict[str, Any] | None = None) -> Face:
    """A face from latents (1, num_ws, w_dim) (or (num_ws, w_dim)) checked against ``model``."""
    face = Face(ws=ws, name=name, source=source or {"kind": "ws"}, base_fingerprint=model_fingerprint(model))
    face.check_fits(model)
    return face


def load_face(path: str | Path, model: TriplaneGenerator | None = None) -> Face:
    """Read a ``.face.safetensors`` file, or a ``ws.npy`` of one identity (then ``model`` is needed to check it).

    Raises ``InputError`` for files that are not faces, hold several identities or do not fit ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist.")
    if path.suffix.lower() == ".npy":
        if model is None:
            raise ValueError("load_face: a ws.npy needs the model to check its shape")
        faces = load_faces([path], model)
        if len(faces) > 1:
            raise InputError(f"{path.name} holds {len(faces)} identities; a face is one. Save one ws per file.")
        return faces[0]
    if path.stat().st_size > MAX_FACE_FILE_BYTES:
        raise InputError(f"{path.name} is {path.stat().st_size / 1e9:.1f} GB; a face file is at most {MAX_FACE_FILE_BYTES >> 20} MB.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if FORMAT_NAME not in metadata:
                raise InputError(
                    f"{path.name} is not a face file ({FACE_SUFFIX}, made by Generate, Photo -> 3D or `python -m demo`)."
                )
            meta = json.loads(metadata[FORMAT_NAME])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except InputError:
        raise
    except Exception as error:  # safetensors and json raise their own types for corrupt files
        raise InputError(f"Cannot read the face file {path.name} ({error}).") from None
    if meta.get("format_version") != FORMAT_VERSION or "ws" not in tensors:
        raise InputError(f"{path.name} is a face file of an unknown version; this tool reads version {FORMAT_VERSION}.")
    face = Face(
        ws=tensors["ws"].float().numpy(),
        name=meta.get("name") or path.name.removesuffix(FACE_SUFFIX),
        source=dict(meta.get("source") or {}),
        camera=tensors["camera"].float().numpy() if "camera" in tensors else None,
        weight_delta={key.removeprefix("delta."): t.float() for key, t in tensors.items() if key.startswith("delta.")},
        base_fingerprint=dict(meta.get("base_fingerprint") or {}),
    )
    if model is not None:
        face.check_fits(model)
    return face


def load_faces(paths: Sequence[str | Path], model: TriplaneGenerator) -> list[Face]:
    """Faces from face files and ws ``.npy`` files, in order; a ws file of N rows gives N faces (``<stem>_NN``)."""
    faces: list[Face] = []
    for path in map(Path, paths):
        if path.suffix.lower() != ".npy":
            faces.append(load_face(path, model))
            continue
        rows = load_keyframes([path], num_ws=model.num_ws, w_dim=model.w_dim)
        stem = path.stem.removesuffix("_ws")
        for index, ws in enumerate(rows):
            name = stem if len(rows) == 1 else f"{stem}_{index:02d}"
            faces.append(face_from_ws(model, ws[None], name=name, source={"kind": "ws-file", "file": path.name, "row": index}))
    return faces


# --- a face -> outputs ----------------------------------------------------------------------------


def face_angles_deg(face: Face) -> tuple[float, float]:
    """(yaw_deg, pitch_deg) of the face's own view: the photo's camera, or (0, 0) for a generated face."""
    if face.camera is None:
        return 0.0, 0.0
    yaw, pitch, _radius = angles_from_camera(Camera.from_label(face.camera))
    return math.degrees(float(yaw[0])), math.degrees(float(pitch[0]))


def render_face(
    model: TriplaneGenerator,
    face: Face,
    out_dir: str | Path,
    *,
    camera: Camera | None = None,
    shapes: bool = True,
    shape_resolution: int = 128,
    shape_formats: Sequence[str] = ("glb",),
    model_name: str = "",
    progress: ProgressFn | None = None,
) -> GenerateResult:
    """Image, raw image, depth, alpha, latents, camera and (with ``shapes``) meshes of ``face``, as ``generate``
    writes them, named ``<face.name>...``, seen from ``camera`` (default: the face's own view)."""
    return generate_to_folder(
        face.generator(model), out_dir, ws=face.ws, camera=camera if camera is not None else face.view(model),
        names=[face.name], manifest_name=f"{face.name}_generate.json", shapes=shapes,
        shape_resolution=shape_resolution, shape_formats=shape_formats, model_name=model_name, progress=progress,
    )


def face_trajectory(face: Face, kind: str, num_frames: int, **options: Any) -> Trajectory:
    """A named camera path (``video.make_trajectory``) centred on the face's own view.

    For a photo face the path's offsets are added to the photo's yaw and pitch, so the ``yaw`` sweep's
    first frame is the photo's view exactly; generated faces (frontal) get the path as it is.
    """
    path = make_trajectory(kind, num_frames, **options)
    yaw_deg, pitch_deg = face_angles_deg(face)
    if yaw_deg == 0.0 and pitch_deg == 0.0:
        return path
    return Trajectory(h=path.h + math.radians(yaw_deg), v=path.v + math.radians(pitch_deg), name=path.name)


def rotate_face(
    model: TriplaneGenerator,
    face: Face,
    trajectory: Trajectory,
    path: str | Path,
    **options: Any,
) -> VideoResult:
    """A rotation video of ``face`` (tuned weights applied) along ``trajectory``; options as ``render_video``."""
    return render_video(face.generator(model), face.ws, trajectory, path, **options)


def multiview_face(
    model: TriplaneGenerator,
    face: Face,
    views: Sequence[tuple[float, float]],
    folder: str | Path,
    **options: Any,
) -> MultiviewResult:
    """One PNG per (yaw, pitch) view of ``face`` plus ``<name>_views.json`` (and ``<name>.face.json``, the face's
    provenance and camera); options as ``render_multiview``."""
    result = render_multiview(face.generator(model), face.ws, views, folder, stem=face.name, **options)
    media.save_json(Path(folder) / f"{face.name}.face.json", face.to_json())
    return result


def morph_faces(
    model: TriplaneGenerator,
    faces: Sequence[Face],
    num_frames: int,
    trajectory: Trajectory,
    path: str | Path,
    *,
    mode: InterpolationMode = "slerp",
    loop: bool = False,
    render_mode: str = "image",
    fps: float = 30.0,
    depth_multiplier: int = 1,
    batch_size: int = 4,
    gif: bool = False,
    frames_dir: str | Path | None = None,
    full_turn: bool = False,
    progress: ProgressFn | None = None,
) -> MorphResult:
    """A morph video through ``faces``: ws interpolated in W (``mode``), tuned-weight deltas blended alongside.

    Frame 0 is ``faces[0]`` exactly (its ws and, for a photo face, its tuned weights), and without
    ``loop`` the last frame is ``faces[-1]`` exactly. The deltas are blended with the piecewise-linear
    keyframe weights of :func:`~demo.tasks.interpolate.keyframe_weights`; a face without a delta counts
    as a zero delta, so a seed <-> photo morph fades the tuning in or out.
    """
    if not faces:
        raise InputError("Give at least one face to morph.")
    for face in faces:
        face.check_fits(model)
    keyframes = np.concatenate([face.ws for face in faces])
    ws_path = interpolation_path(keyframes, num_frames, mode=mode, loop=loop).astype(np.float32)
    weights = keyframe_weights(len(ws_path), len(faces), mode=mode, loop=loop)
    renderer, before_batch = model, None
    if any(face.has_delta for face in faces):  # the weights change every frame: one frame per batch
        blender = _DeltaBlender(model, faces, weights)
        renderer, before_batch, batch_size = blender.working, blender, 1
    video = render_video(
        renderer, ws_path, trajectory, path, mode=render_mode, fps=fps, depth_multiplier=depth_multiplier,
        batch_size=batch_size, gif=gif, frames_dir=frames_dir, full_turn=full_turn, before_batch=before_batch,
        progress=progress,
    )
    return MorphResult(video=video, ws=ws_path, weights=weights)


@dataclass(frozen=True, eq=False)
class MorphResult:
    video: VideoResult
    ws: np.ndarray
    """(T, num_ws, w_dim) float32: the latent of every frame."""
    weights: np.ndarray
    """(T, K) weight of each face per frame (the blend of tuned-weight deltas)."""


class _DeltaBlender:
    """One working copy of the generator whose weights are set to base + sum_k w_k delta_k before each frame."""

    def __init__(self, model: TriplaneGenerator, faces: Sequence[Face], weights: np.ndarray) -> None:
        self.working = copy.deepcopy(model).eval().requires_grad_(False)
        self.weights = weights
        state = self.working.state_dict()
        self.names = sorted({name for face in faces for name in face.weight_delta})
        self.state = {name: state[name] for name in self.names}
        self.base = {name: state[name].detach().clone() for name in self.names}
        self.deltas = [
            {name: delta.to(state[name].device, state[name].dtype) for name, delta in face.weight_delta.items()} for face in faces
        ]

    def __call__(self, start: int, stop: int) -> None:
        assert stop == start + 1, "blended frames render one at a time"
        with torch.no_grad():
            for name in self.names:
                blended = self.base[name].clone()
                for k, delta in enumerate(self.deltas):
                    if self.weights[start, k] != 0 and name in delta:
                        blended.add_(delta[name], alpha=float(self.weights[start, k]))
                self.state[name].copy_(blended)
