"""Write generated faces to a folder: images, depth, alpha, latents, cameras and shapes per sample.

This is the library side of ``python -m demo generate``. Per sample (named by seed, e.g.
``seed0042``, or ``sample0003`` for latents without seeds) it writes:

| file | content |
| --- | --- |
| ``seed0042.png`` | the final image, 8-bit RGB (official uint8 conversion) |
| ``seed0042_raw.png`` | the volume-rendered image at the neural rendering resolution |
| ``seed0042_depth.png`` | 16-bit depth: distance along each ray, 1e-4 world units per count; background rays hold the far end of their range (use the alpha) |
| ``seed0042_depth_color.png`` | a colour-mapped depth preview (near = bright) |
| ``seed0042_alpha.png`` | foreground opacity (accumulated ray weight), 8-bit |
| ``seed0042_z.npy`` | (1, z_dim) float64 latent (absent when ws were given) |
| ``seed0042_ws.npy`` | (1, num_ws, w_dim) float32 latent after truncation |
| ``seed0042_camera.npy`` | (25,) float32 render camera label (cam2world row-major + intrinsics) |
| ``seed0042.{glb,ply,obj}`` | coloured mesh in world units (with ``shapes``) |
| ``seed0042.mrc`` | the density in world units for ChimeraX: origin and voxel size in the header, overlays the meshes |
| ``seed0042_official.mrc`` | the official ``gen_samples.py`` density volume (``mrc-official``), for comparisons |

and one ``generate.json`` describing the run (model, options, units, files). Every file is written
atomically, so an interrupted run leaves only complete files.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from demo import media
from demo._version import __version__
from demo.cameras import Camera
from demo.networks.eg3d import TriplaneGenerator
from demo.progress import ProgressFn, report, scaled
from demo.errors import InputError, NoSurfaceError
from demo.tasks import landmarks
from demo.tasks import mesh as mesh_task
from demo.tasks.sample import SampleResult, sample_images, view_camera


ANNOTATIONS = ("keypoints", "segmentation")
BACKGROUND_DEPTH = "background rays hold the far end of their sampled range: use the alpha to separate them"


@dataclass(frozen=True)
class GenerateResult:
    """What a run wrote."""

    outdir: Path
    files: dict[str, list[Path]]
    """Per sample name, the files written for it."""
    manifest: Path
    mesh_errors: dict[str, str] = field(default_factory=dict)
    """Per sample name without a mesh, why (its density never reaches the iso-level)."""


def check_shape_formats(formats: Sequence[str]) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    unknown = [f for f in formats if f not in mesh_task.SHAPE_FORMATS]
    if unknown or not formats:
        raise ValueError(f"shape formats: unknown {unknown or formats}; choose from {', '.join(mesh_task.SHAPE_FORMATS)}")
    return formats


def generate_to_folder(
    model: TriplaneGenerator,
    outdir: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    z: np.ndarray | None = None,
    ws: np.ndarray | None = None,
    truncation_psi: float = 0.7,
    truncation_cutoff: int | None = None,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    fov_deg: float | None = None,
    camera: Camera | None = None,
    names: Sequence[str] | None = None,
    manifest_name: str = "generate.json",
    annotations: Sequence[str] = (),
    shapes: bool = False,
    shape_resolution: int = 256,
    shape_formats: Sequence[str] = ("glb",),
    shape_level: float = mesh_task.OFFICIAL_LEVEL,
    mesh_faces: int | None = None,
    batch_size: int = 4,
    model_name: str = "",
    progress: ProgressFn | None = None,
) -> GenerateResult:
    """Generate samples and write them under ``outdir`` (see the module docstring for the files).

    ``camera`` (batch 1 or one per sample) replaces the yaw/pitch/fov view; ``names`` replaces the
    file stems made from seeds (one per sample). ``annotations`` adds ``keypoints`` (``<name>_keypoints.json``:
    MediaPipe's 478 points and the iBUG 68, 2D, visibility and 3D, as in datasets) and/or ``segmentation``
    (``<name>_segmentation.png``, face-part labels; ``demo.tasks.landmarks``).
    """
    unknown = sorted(set(annotations) - set(ANNOTATIONS))
    if unknown:
        raise InputError(f"Unknown annotations {unknown}; choose from {', '.join(ANNOTATIONS)}.")
    formats = check_shape_formats(shape_formats) if shapes else ()
    if shapes:
        mesh_task.check_resolution(shape_resolution)
    out = media.check_writable_dir(outdir)
    if camera is None:
        camera = view_camera(model, yaw_deg=yaw_deg, pitch_deg=pitch_deg, fov_deg=fov_deg)
    camera = camera.to(model.device)
    render_share = 0.3 if shapes else 1.0
    result = sample_images(
        model,
        seeds=seeds,
        z=z,
        ws=ws,
        truncation_psi=truncation_psi,
        truncation_cutoff=truncation_cutoff,
        camera=camera,
        batch_size=batch_size,
        progress=scaled(progress, 0.0, render_share),
    )
    files: dict[str, list[Path]] = {}
    mesh_errors: dict[str, str] = {}
    count = len(result.seeds)
    if names is not None and len(names) != count:
        raise ValueError(f"names: {len(names)} given for {count} samples")
    for index, seed in enumerate(result.seeds):
        name = names[index] if names is not None else media.output_stem(seed, index=index)
        files[name] = _write_images(out, name, result, index)
        if annotations:
            files[name] += _write_annotations(model, out, name, result, index, annotations)
        if shapes:
            share = (render_share + (1 - render_share) * index / count, render_share + (1 - render_share) * (index + 1) / count)
            try:
                files[name] += write_shapes(
                    model, out, name, result.ws[index : index + 1], shape_resolution, formats, shape_level, mesh_faces,
                    progress=None if progress is None else
                    lambda f, m, a=share[0], b=share[1], n=name: progress(a + (b - a) * f, f"{n}: {m}"),
                )
            except NoSurfaceError as error:  # the images are fine; only this sample has no mesh
                mesh_errors[name] = str(error)
        report(progress, render_share + (1 - render_share) * (index + 1) / count, f"wrote {name}")
    manifest = _write_manifest(out / manifest_name, model, model_name, result, files, locals_=dict(
        yaw_deg=yaw_deg, pitch_deg=pitch_deg, fov_deg=fov_deg, shapes=shapes, shape_resolution=shape_resolution,
        shape_formats=list(formats), shape_level=shape_level, mesh_faces=mesh_faces, mesh_errors=mesh_errors,
    ))
    return GenerateResult(outdir=out, files=files, manifest=manifest, mesh_errors=mesh_errors)


def _write_images(out: Path, name: str, result: SampleResult, index: int) -> list[Path]:
    depth = result.depth[index, 0]
    alpha = result.alpha[index, 0]
    written = [
        media.save_png(out / f"{name}.png", media.image_to_uint8(result.images[index])),
        media.save_png(out / f"{name}_raw.png", media.image_to_uint8(result.images_raw[index])),
        media.save_png(out / f"{name}_depth.png", media.depth_to_uint16(depth)),
        media.save_png(out / f"{name}_depth_color.png", media.colorize_depth(depth, alpha)),
        media.save_png(out / f"{name}_alpha.png", media.alpha_to_uint8(alpha)),
    ]
    if result.z is not None:
        written.append(media.save_npy(out / f"{name}_z.npy", result.z[index : index + 1]))
    written.append(media.save_npy(out / f"{name}_ws.npy", result.ws[index : index + 1]))
    written.append(media.save_npy(out / f"{name}_camera.npy", result.cameras[index]))
    return written


def _write_annotations(model, out: Path, name: str, result: SampleResult, index: int, annotations) -> list[Path]:
    image = media.image_to_uint8(result.images[index])
    render = (image, result.depth[index, 0], result.alpha[index, 0], result.cameras[index])
    frontal = functools.partial(landmarks.frontal_render, model, result.ws[index : index + 1], image.shape[0])
    keypoints, points, visible = landmarks.keypoints_record(render, landmarks.detect_landmarks, frontal=frontal)
    written = []
    if "keypoints" in annotations:
        written.append(media.save_json(out / f"{name}_keypoints.json", {"image_size": image.shape[0], "keypoints": keypoints}))
    if "segmentation" in annotations:
        labels = landmarks.labels_for(image.shape[0], keypoints, points, visible, result.alpha[index, 0])
        written.append(media.save_png(out / f"{name}_segmentation.png", labels))
    return written


def write_shapes(
    model, out: Path, name: str, ws: np.ndarray, resolution: int, formats, level: float, mesh_faces,
    progress: ProgressFn | None = None,
) -> list[Path]:
    written = []
    with torch.inference_mode():
        planes = model.planes(torch.from_numpy(ws).to(model.device))
        if any(f in mesh_task.MESH_FORMATS for f in formats):
            mesh = mesh_task.extract_mesh(
                model, planes=planes, resolution=resolution, level=level, target_faces=mesh_faces, progress=progress
            )
            written += [mesh_task.export_mesh(mesh, out / f"{name}.{f}") for f in formats if f in mesh_task.MESH_FORMATS]
        if "mrc" in formats:
            voxel, origin = mesh_task.mrc_geometry(model, resolution)
            volume = mesh_task.world_mrc_volume(model, resolution=resolution, planes=planes, level=level)
            written.append(media.write_mrc(out / f"{name}.mrc", volume, voxel_size=voxel, origin=origin))
        if "mrc-official" in formats:
            volume = mesh_task.official_mrc_volume(model, None, resolution=resolution, planes=planes)
            written.append(media.write_mrc(out / f"{name}_official.mrc", volume, voxel_size=model.config.render.box_warp / (resolution - 1)))
    return written


def _write_manifest(path: Path, model, model_name: str, result: SampleResult, files, locals_: dict[str, Any]) -> Path:
    data = {
        "tool": f"3D Face Studio {__version__}",
        "model": model_name,
        "random_weights": model_name in ("tiny", "tiny-panohead"),
        "precision": model.precision,
        "truncation_psi": result.truncation_psi,
        "truncation_cutoff": result.truncation_cutoff,
        **locals_,
        "units": {
            "depth_png": f"distance along each unit ray, {1 / media.DEPTH_PNG_SCALE:g} world units per count; {BACKGROUND_DEPTH}",
            "camera": "25 numbers: cam2world 4x4 (OpenCV, row-major) then normalised intrinsics 3x3",
            "mesh": "world units; y up, the face looks towards +z",
        },
        "samples": {name: [path.name for path in paths] for name, paths in files.items()},
    }
    return media.save_json(path, data)
