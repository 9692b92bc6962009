"""Synthetic face datasets: many seeds -> images, depth, masks, meshes, latents, cameras, annotations.

The library side of ``python -m demo dataset``. A dataset is a folder that one command fills and the
same command resumes: every file is written atomically, a sample enters the index only once all
its files are in place, and the same seeds give byte-identical files whether the run was
interrupted, sharded over machines or GPUs, or done in one go.

Usage
-----
::

    python -m demo dataset --model eg3d-ffhqrebalanced512-128 --num 50000 --out data/ \\
        --views mix --trunc 0.7 --with depth,masks,meshes --batch 8
    python -m demo dataset --model tiny --num 40 --out /tmp/tiny-data     # try it: random weights

    # many GPUs on one machine (one process per GPU; CPU workers use gloo). torchrun's own parser
    # takes --num for its --numa-binding, so write -n (or --num-samples) there:
    torchrun --nproc_per_node 8 -m demo dataset --model ... -n 50000 --out data/
    # several machines sharing a folder: one command per machine
    python -m demo dataset ... --shard 0/4     # ... up to --shard 3/4 on the last machine

From Python::

    from demo.tasks.dataset import make_dataset
    result = make_dataset(model, "data/", num=1000, views="mix", with_=("depth", "masks", "meshes"),
                          model_id="eg3d-ffhqrebalanced512-128")

Samples, seeds and views
------------------------
Sample ``i`` (0 <= i < num) uses seed ``start_seed + i``; files are named by the sample index with
six digits (``images/000042.png`` is sample 42), and the seed is in its annotation. z is
``np.random.RandomState(seed).randn(1, z_dim)`` as in the official scripts, the mapping is
conditioned on the frontal camera at the model's training radius and pivot, truncation psi 0.7 by
default, backbone noise ``const``, and the renderer's random draws come from a generator seeded
with the seed. The view of a sample is drawn from its own generator, seeded with its seed
(``SeedSequence([0x56494557, seed])``, PCG64), so it does not depend on batching or sharding.

View presets (``--views``); angles are offsets from the frontal view in the conventions of
``demo/cameras.py`` (positive yaw puts the camera at +x, negative pitch puts it above the face;
the camera orbits the world origin at the model's training radius, 2.7 for FFHQ, looking at the
training pivot):

``mix`` (default): the viewpoint mix of the EG3D synthetic-face-data project:
    ====================  ======  ==========================================================
    category              share   camera
    ====================  ======  ==========================================================
    ``frontal``           70 %    yaw 0, pitch 0, training focal (4.2647 for FFHQ: tight crop)
    ``side``              12 %    yaw uniform in [-70, 70) degrees, pitch 0, training focal
    ``profile``            6 %    70 < |yaw| <= 90 degrees (<= 180 on 360-degree models such
                                  as PanoHead), either side, pitch 0, training focal
    ``frontal_wide``      12 %    yaw 0, pitch 0, focal / 1.5 (a 1.5x wider view: neck and face)
    ====================  ======  ==========================================================
    Wider framing is a wider field of view at the same radius, not a larger radius: the FFHQ
    models sample density only between distances 2.25 and 3.3 from the camera, so a camera moved
    back would cut the head off.
``frontal``: every sample at yaw 0, pitch 0, training focal.
``uniform``: yaw uniform in [-yaw_range, yaw_range] and pitch uniform in [-pitch_range,
    pitch_range] degrees (defaults 60 and 20), training focal. Front-facing EG3D models accept
    |yaw| <= 90 and every model |pitch| <= 80.

Files
-----
``NNNNNN`` is the six-digit sample index. ``r`` is the neural rendering resolution (128 for the
EG3D checkpoints), ``S`` the image size (the model's output, 512, or ``--image-size``).

=================================  =======================================================================
``images/NNNNNN.png``              S x S 8-bit RGB; the official uint8 conversion, then a Lanczos resize
                                   when ``--image-size`` is smaller than the model's output
``depth/NNNNNN.png``               r x r 16-bit grey (``--with depth``): distance from the camera centre
                                   along each pixel's ray (not camera z), 1 count = 1e-4 world units
                                   (``media.DEPTH_PNG_SCALE`` = 10000 counts per unit; FFHQ heads sit
                                   near 2.2-3.0, i.e. counts 22000-30000). 0 would mean no surface, but
                                   EG3D gives every ray a depth: background rays hold the far end of
                                   their sampled range (about 3.3); use the mask to separate them
``depth/NNNNNN.npy``               (r, r) float32, the same depth unquantised (``--with depth-npy``)
``masks/NNNNNN.png``               r x r 8-bit grey foreground alpha (``--with masks``): round(255 *
                                   accumulated ray weight); 255 = subject (head, hair, neck), 0 = empty
``meshes/NNNNNN.ply|glb|obj``      coloured triangle mesh (``--with meshes``, ``--mesh-format``,
                                   ``--mesh-res``): marching cubes of the density at the official level
                                   10, world units, y up, the face towards +z, largest component kept
``segmentation/NNNNNN.png``        S x S 8-bit face-part labels (``--with segmentation``): 0 background, 1 skin,
                                   2 brows, 3 eyes, 4 nose, 5 lips, 6 mouth interior, 7 hair and other
                                   foreground (``demo.tasks.landmarks``; palette in the schema)
``latents/NNNNNN.npy``             ws, (1, num_ws, w_dim) float32 = (1, 14, 512) for EG3D, after truncation
``cameras/NNNNNN.npy``             (25,) float32 camera label: cam2world 4x4 (OpenCV: x right, y down,
                                   z forward) row-major, then normalised intrinsics 3x3 row-major
``annotations/NNNNNN.json``        one JSON object per sample, described by
                                   ``demo/tasks/dataset_annotation.schema.json`` (see below)
``index.jsonl``                    one line per complete sample, sorted by index at the end of a run: the
                                   annotation without ``z`` (z is in the annotation file, and is
                                   ``RandomState(seed).randn``)
``images/dataset.json``            EG3D training labels ``{"labels": [["000042.png", [25 floats]], ...]}``,
                                   sorted by index; it sits in ``images/`` because EG3D's loader reads
                                   every image under its ``--data`` folder: train with ``--data DIR/images``
``settings.json``                  what the dataset was made with (model, views, truncation, sizes, outputs,
                                   batch size); a rerun with other settings is refused unless ``--force``
=================================  =======================================================================

An annotation holds: ``format``/``format_version``, ``index``, ``name``, ``seed``, ``model`` (id,
config and weights sha256), ``z`` (z_dim floats), ``truncation_psi``, ``truncation_cutoff``,
``view`` (``category``, ``yaw_deg``, ``pitch_deg``, ``radius``, ``focal``, ``fov_deg`` = the
horizontal field of view 2 atan(0.5 / focal) in degrees, ``pivot``), ``camera`` (the 25-number
label), ``image_size``, ``depth_size``, ``foreground`` (the 2D box around mask pixels with alpha >=
0.5, normalised [x0, y0, x1, y1] and in image pixels, plus the covered fraction; ``null`` if the
mask is empty; it boxes the whole rendered subject, not only the face), ``keypoints`` and
``files`` (paths relative to the dataset folder). With ``--with keypoints``, ``keypoints`` holds
MediaPipe's 478-point face mesh found on the image (or another ``keypoint_detector``'s points) in
image pixels, a visibility flag per point and the points lifted to world 3D with the depth map and
camera (:func:`demo.cameras.lift_points`), plus the 68-point iBUG subset; where no face is found
in a view, the identity is rendered from the front, its landmarks lifted there and projected into
the view with a depth z-test for visibility (``source: "frontal-projected"``), so every view of an
identity has consistent keypoints; ``null`` when the front has no detectable face either (random
weights). When a sample's density never reaches the mesh level,
its ``files.meshes`` is ``null`` and ``mesh_error`` says why; the sample is still complete.

Resuming and interruptions
--------------------------
Rerunning the same command resumes: samples that are in an index file with all their files
present (and non-empty) are skipped; anything partial is rendered again and overwritten. Each file
is written to ``<name>.part`` and renamed; the annotation is written last and then one index line,
with a single ``write`` followed by ``fsync``. A killed run can leave at most one truncated last
index line, which is ignored (and cut off before appending) on resume, and ``.part`` files, which
are removed. A larger ``--num`` extends the dataset; a smaller one leaves existing samples.
``--force`` starts over: it removes this tool's sample files (six-digit names in the folders
above), the index files and ``dataset.json``; nothing else in the folder is touched. Out of disk
space, the run stops with a clear error (exit status 2); the samples already indexed stay valid,
and a rerun continues. One process writes a folder (or one shard of it) at a time: a writer holds
an advisory lock on ``.writer.lock`` (``.writer.rank<R>.lock`` per shard) that names it, and a second
writer is refused with that name instead of rendering the same samples again.

Determinism, batching and sharding
----------------------------------
Samples are rendered in fixed batches: batch ``b`` holds samples ``b*B ... b*B + B - 1`` (``B`` =
``--batch``; the last batch is padded with repeats of its last sample, and ``--batch 1`` is
rendered as a batch of 2), and the depth clamp is per sample (``per_sample_clamp``, see
:mod:`demo.render.compositing`). So a sample is always computed in the same batch with the same
shapes, whichever shard renders it and however often the run was interrupted: for a given
``--batch``, files are byte-identical for any shard count and after any number of resumes (on a
GPU this assumes, as usual for inference, that its kernels give the same bits for the same inputs
and shapes; not measured here). Across batch sizes, CPU results were measured bit-identical for
every batch size >= 2 (tiny model: 2, 3, 4, 5, 8; full FFHQ-512 config: 2, 3, 4), whatever the
sample's position and batch companions and the number of threads, while a batch of 1 takes other
kernels and differs in the last bits -- hence the padding to 2. On CPU the files are therefore the
same for any ``--batch``; on GPUs kernels may depend on the batch size, so ``settings.json``
records ``--batch`` and a resume with another batch size is refused (``--force`` starts over).
Meshes are always computed from a batch-1 tri-plane pass, so they do not depend on ``--batch``.

Sharding: rank ``r`` of ``W`` takes a contiguous run of whole batches, batches
``floor(r * nb / W)`` to ``floor((r + 1) * nb / W) - 1`` of the ``nb`` batches, i.e. a contiguous
range of sample indices and seeds. Under ``torchrun`` (environment ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``) the command picks its shard and GPU (``cuda:LOCAL_RANK``) up by itself, joins a
process group (gloo on CPU, nccl on CUDA), each rank appends to ``index.rank{r}.jsonl``, and after a
barrier rank 0 merges them into ``index.jsonl`` and ``images/dataset.json`` and removes the rank
files. With ``--shard R/W`` across separate commands (no process group) each command writes
``index.rank{R}.jsonl`` and, when it finishes, rewrites ``index.jsonl`` and ``dataset.json`` from
every index file it finds; once all shards are done, rerun the command without ``--shard``: it
renders nothing, writes the final merged index and removes the rank files. ``--force`` is refused
with ``--shard`` across separate commands (start over with one command first).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from demo import media
from demo._version import __version__
from demo.cameras import FOREGROUND_ALPHA, Camera, horizontal_fov_deg
from demo.errors import DemoError, InputError, NoSurfaceError, ResourceError
from demo.networks.eg3d import TriplaneGenerator
from demo.progress import ProgressFn, report
from demo.tasks import mesh as mesh_task
from demo.tasks.generate import check_shape_formats, write_shapes
from demo.tasks import landmarks
from demo.tasks.sample import SampleResult, sample_images, z_from_seed
from demo.tasks.views import MAX_PITCH_DEG, VIEW_PRESETS, View, check_view_range, draw_view, views_settings
from demo.weights.store import model_fingerprint

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FORMAT_NAME = "3d-face-studio-dataset"
ANNOTATION_FORMAT = "3d-face-studio-dataset-annotation"
MAX_SAMPLES = 1_000_000
"""Six-digit names: sample indices 0 ... 999999."""

WITH_OPTIONS = ("depth", "depth-npy", "masks", "meshes", "keypoints", "segmentation")
DEFAULT_WITH = ("depth", "masks")

_SEED_MAX = 2**32 - 1  # numpy's RandomState seeds

SUBDIRS = ("images", "depth", "masks", "meshes", "segmentation", "latents", "cameras", "annotations")
INDEX_FILE = "index.jsonl"
SETTINGS_FILE = "settings.json"
LOCK_FILE = ".writer.lock"
LABELS_FILE = "images/dataset.json"
_SAMPLE_FILE = re.compile(r"^(\d{6})(?:_official)?\.(png|npy|json|ply|glb|obj|mrc)(\.part)?$")
_RANK_INDEX = re.compile(r"^index\.rank(\d+)\.jsonl$")

KeypointFn = Callable[[np.ndarray], "np.ndarray | None"]
"""A landmark detector: image (S, S, 3) uint8 -> (K, 2) float pixel coordinates (x, y), or None (no face)."""



@dataclass(frozen=True)
class DatasetResult:
    """What one process did."""

    out_dir: Path
    rank: int
    world: int
    written: int
    """Samples this process rendered and wrote."""
    skipped: int
    """Samples of this process's share that were already complete."""
    total: int | None
    """Samples in the merged index, or None when this process did not merge (torchrun ranks > 0)."""
    index: Path | None
    labels: Path | None
    """``images/dataset.json`` (EG3D labels), or None when this process did not merge."""
    settings: Path
    seconds: float


# --- options -----------------------------------------------------------------------------------


def check_options(
    *,
    num: int,
    start_seed: int = 0,
    views: str = "mix",
    yaw_range_deg: float = 60.0,
    pitch_range_deg: float = 20.0,
    truncation_psi: float = 0.7,
    truncation_cutoff: int | None = None,
    with_: Sequence[str] = DEFAULT_WITH,
    mesh_formats: Sequence[str] = ("ply",),
    mesh_resolution: int = 128,
    image_size: int | None = None,
    batch_size: int = 4,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Validate the model-independent options (raises InputError); returns them normalised.

    The CLI calls this before loading a model, so typos fail at once; :func:`make_dataset` calls
    it again.
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise InputError(f"--num must be at least 1 (got {num!r}).")
    if num > MAX_SAMPLES:
        raise InputError(f"--num {num} is too large: a dataset holds at most {MAX_SAMPLES} samples (six-digit names).")
    if isinstance(start_seed, bool) or not isinstance(start_seed, (int, np.integer)) or start_seed < 0:
        raise InputError(f"--start-seed must be a non-negative integer (got {start_seed!r}).")
    if int(start_seed) + int(num) - 1 > _SEED_MAX:
        raise InputError(f"Seeds must stay below 2**32: --start-seed {start_seed} + --num {num} goes beyond {_SEED_MAX}.")
    if views not in VIEW_PRESETS:
        raise InputError(f"Unknown view preset {views!r}; choose one of {', '.join(VIEW_PRESETS)}.")
    for name, value in (("yaw range", yaw_range_deg), ("pitch range", pitch_range_deg), ("truncation psi", truncation_psi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"The {name} must be a finite number (got {value!r}).")
    if yaw_range_deg < 0 or pitch_range_deg < 0:
        raise InputError("--yaw-range and --pitch-range are half-widths in degrees and must be >= 0.")
    if pitch_range_deg > MAX_PITCH_DEG:
        raise InputError(f"Pitch must stay within +-{MAX_PITCH_DEG:g} degrees; --pitch-range is {pitch_range_deg:g}.")
    if truncation_cutoff is not None and (isinstance(truncation_cutoff, bool) or truncation_cutoff < 0):
        raise InputError(f"--trunc-cutoff must be a non-negative number of ws (got {truncation_cutoff!r}).")
    with_list = _check_with(with_)
    formats: tuple[str, ...] = ()
    if "meshes" in with_list:
        try:
            formats = check_shape_formats(mesh_formats)
            mesh_task.check_resolution(mesh_resolution)
        except ValueError as error:
            raise InputError(f"Meshes: {error}.") from None
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8):
        raise InputError(f"--image-size must be an integer of at least 8 pixels (got {image_size!r}).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"--batch must be at least 1 (got {batch_size!r}).")
    rank, world = _check_shard(shard)
    return {
        "num": int(num),
        "start_seed": int(start_seed),
        "views": views,
        "yaw_range_deg": float(yaw_range_deg),
        "pitch_range_deg": float(pitch_range_deg),
        "truncation_psi": float(truncation_psi),
        "truncation_cutoff": None if truncation_cutoff is None else int(truncation_cutoff),
        "with_": with_list,
        "mesh_formats": formats,
        "mesh_resolution": int(mesh_resolution) if formats else None,
        "image_size": None if image_size is None else int(image_size),
        "batch_size": int(batch_size),
        "shard": (rank, world),
    }


def _check_with(with_: Sequence[str] | str) -> tuple[str, ...]:
    items = with_.split(",") if isinstance(with_, str) else list(with_)
    items = [item.strip().lower() for item in items if item.strip()]
    unknown = [item for item in items if item not in WITH_OPTIONS]
    if unknown:
        raise InputError(f"Unknown --with item(s) {', '.join(map(repr, unknown))}; choose from {', '.join(WITH_OPTIONS)}.")
    return tuple(item for item in WITH_OPTIONS if item in items)  # canonical order


def _check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    try:
        rank, world = (int(value) for value in shard)
    except (TypeError, ValueError):
        raise InputError(f"A shard is RANK/WORLD, e.g. 0/4 (got {shard!r}).") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"Shard {rank}/{world} is not valid: need 0 <= RANK < WORLD.")
    return rank, world


def parse_shard(text: str) -> tuple[int, int]:
    """'1/4' -> (1, 4); raises InputError."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"--shard takes RANK/WORLD, e.g. 0/4 (got {text!r}).")
    return _check_shard((int(match.group(1)), int(match.group(2))))


# --- geometry helpers --------------------------------------------------------------------------


def foreground_box(alpha: np.ndarray, image_size: int) -> dict[str, Any] | None:
    """The 2D box around pixels with alpha >= 0.5: normalised [x0, y0, x1, y1] (pixel edges) and in image pixels."""
    mask = np.asarray(alpha) >= FOREGROUND_ALPHA
    if not mask.any():
        return None
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = [cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height]
    return {
        "bbox": [float(v) for v in box],
        "bbox_px": [float(v * image_size) for v in box],
        "area_fraction": float(mask.mean()),
        "alpha_threshold": FOREGROUND_ALPHA,
    }


# --- the dataset ---------------------------------------------------------------------------------


def make_dataset(
    model: TriplaneGenerator,
    out_dir: str | os.PathLike,
    *,
    num: int,
    start_seed: int = 0,
    views: str = "mix",
    yaw_range_deg: float = 60.0,
    pitch_range_deg: float = 20.0,
    truncation_psi: float = 0.7,
    truncation_cutoff: int | None = None,
    with_: Sequence[str] = DEFAULT_WITH,
    mesh_formats: Sequence[str] = ("ply",),
    mesh_resolution: int = 128,
    image_size: int | None = None,
    batch_size: int = 4,
    shard: tuple[int, int] = (0, 1),
    model_id: str | None = None,
    keypoint_detector: KeypointFn | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> DatasetResult:
    """Write (or resume) a synthetic dataset of ``num`` samples under ``out_dir``.

    Sample ``i`` uses seed ``start_seed + i``; files, units, views, resuming and sharding are
    described in the module docstring.

    Args:
        model: the generator (its device is used).
        num: samples in the dataset (indices 0 ... num - 1).
        views: 'mix', 'frontal' or 'uniform' (``yaw_range_deg``/``pitch_range_deg`` half-widths).
        with_: optional outputs among 'depth', 'depth-npy', 'masks', 'meshes', 'keypoints'; images,
            latents, cameras and annotations are always written.
        mesh_formats, mesh_resolution: mesh files per sample and grid points per side.
        image_size: resize images (Lanczos) to this size; at most the model's output size.
        batch_size: samples per forward pass; recorded in settings.json (see the module docstring).
        shard: (rank, world) share of the work.
        model_id: the name recorded for the model (e.g. the registry id).
        keypoint_detector: 2D landmark detector for 'keypoints' (none ships yet).
        force: start over even if ``out_dir`` holds a dataset made with other settings.

    Raises:
        InputError: bad options, or a folder holding another dataset (without ``force``).
        ResourceError: the disk is full (complete samples stay valid; rerun to continue).
    """
    options = check_options(
        num=num, start_seed=start_seed, views=views, yaw_range_deg=yaw_range_deg, pitch_range_deg=pitch_range_deg,
        truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, with_=with_, mesh_formats=mesh_formats,
        mesh_resolution=mesh_resolution, image_size=image_size, batch_size=batch_size, shard=shard,
    )
    rank, world = options["shard"]
    with_list = options["with_"]
    if keypoint_detector is None and ("keypoints" in with_list or "segmentation" in with_list):
        keypoint_detector = landmarks.detect_landmarks
    resolution = model.img_resolution
    size = resolution if options["image_size"] is None else options["image_size"]
    if size > resolution:
        raise InputError(f"--image-size {size} is larger than the model's {resolution}-pixel output; it can only shrink images.")
    if views == "uniform":
        check_view_range(model, options["yaw_range_deg"], options["pitch_range_deg"], full_turn=model.config.is_full_head)
    distributed = _distributed(world)
    if force and world > 1 and not distributed:
        raise InputError(
            "--force cannot be combined with --shard across separate commands (each would delete the others' work). "
            "Start over with one command first, or delete the folder."
        )

    started = time.perf_counter()
    out = media.check_writable_dir(out_dir)
    with _writer_lock(out, rank, world):  # one writer per folder (per shard): a second one would redo the work
        settings = _settings(model, model_id, options, size, keypoint_detector)
        settings_path = out / SETTINGS_FILE
        coordinator = rank == 0 or not distributed
        with _disk_errors(out):
            _check_settings(out, settings, force=force)
            _remove_stale_parts(out, None if world == 1 else f"rank{rank}")
            if coordinator and (force or not settings_path.is_file()):
                if force:
                    _remove_dataset(out)
                _write_text(settings_path, json.dumps(settings, indent=2) + "\n", tag=f"rank{rank}")
            if distributed:
                _barrier()

        num_samples = options["num"]
        render_batch = max(options["batch_size"], 2)  # a batch of 1 takes other kernels (see the docstring)
        batches = _batches_of_rank(num_samples, options["batch_size"], rank, world)
        owned = [index for batch in batches for index in batch]
        owned_set = set(owned)
        records = _read_all_indexes(out)
        listing = _scan_files(out, owned=None if world == 1 else owned_set)
        done = {index for index in owned if index in records and _is_complete(records[index], listing)}
        todo_total = len(owned) - len(done)
        if done:
            logger.info("resuming: %d of %d samples of this share are complete", len(done), len(owned))
        index_path = out / (INDEX_FILE if world == 1 else f"index.rank{rank}.jsonl")

        writer = _SampleWriter(model, out, settings, options, size, keypoint_detector)
        written = 0
        render_started = time.perf_counter()
        with _disk_errors(out), _IndexAppender(index_path) as appender:
            for batch in batches:
                missing = [index for index in batch if index not in done]
                if not missing:
                    continue
                result, batch_views = _render_batch(model, batch, render_batch, options)
                for position, index in enumerate(batch):
                    if index in done:
                        continue
                    record = writer.write(index, result, batch_views[position], position)
                    appender.append(json.dumps(record, separators=(",", ":")))
                    written += 1
                    elapsed = max(time.perf_counter() - render_started, 1e-9)
                    rate = written / elapsed
                    complete = len(done) + written
                    eta = (todo_total - written) / rate if rate > 0 else 0.0
                    report(
                        progress, complete / len(owned),
                        f"{complete}/{len(owned)} samples, {rate:.2f} samples/s, ETA {_format_seconds(eta)}",
                    )
        report(progress, 1.0, f"{len(owned)}/{len(owned)} samples")

        total = index = labels = None
        with _disk_errors(out):
            if distributed:
                _barrier()
            if coordinator:
                merged = _merge(out, rank=rank, remove_rank_files=(world == 1 or distributed))
                total, index, labels = len(merged), out / INDEX_FILE, out / LABELS_FILE
        return DatasetResult(
            out_dir=out, rank=rank, world=world, written=written, skipped=len(done), total=total, index=index,
            labels=labels, settings=settings_path, seconds=time.perf_counter() - started,
        )


def _distributed(world: int) -> bool:
    import torch.distributed as dist

    return world > 1 and dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _batches_of_rank(num: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Rank ``rank``'s contiguous run of the global batches [b*B, (b+1)*B) over [0, num)."""
    count = math.ceil(num / batch_size)
    first, last = rank * count // world, (rank + 1) * count // world
    return [list(range(b * batch_size, min(num, (b + 1) * batch_size))) for b in range(first, last)]


def _render_batch(
    model: TriplaneGenerator, batch: list[int], render_batch: int, options: dict[str, Any]
) -> tuple[SampleResult, list[View]]:
    """Render one global batch, padded with repeats of its last sample to ``render_batch``."""
    padded = batch + [batch[-1]] * (render_batch - len(batch))
    seeds = [options["start_seed"] + index for index in padded]
    pivot = model.config.avg_camera_pivot
    views = [
        draw_view(seed, model, views=options["views"], yaw_range_deg=options["yaw_range_deg"],
                  pitch_range_deg=options["pitch_range_deg"])
        for seed in seeds
    ]
    camera = Camera.cat([view.camera(pivot).to(model.device) for view in views])
    result = sample_images(
        model, seeds=seeds, camera=camera, truncation_psi=options["truncation_psi"],
        truncation_cutoff=options["truncation_cutoff"], batch_size=render_batch, per_sample_clamp=True,
    )
    return result, views


def _settings(model, model_id: str | None, options: dict[str, Any], size: int, detector) -> dict[str, Any]:
    meshes = "meshes" in options["with_"]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": {
            "id": model_id,
            "family": model.config.family,
            **model_fingerprint(model),
            "image_resolution": model.img_resolution,
            "neural_rendering_resolution": model.neural_rendering_resolution,
        },
        "start_seed": options["start_seed"],
        "views": views_settings(options["views"], options["yaw_range_deg"], options["pitch_range_deg"]),
        "truncation_psi": options["truncation_psi"],
        "truncation_cutoff": options["truncation_cutoff"],
        "conditioning": "frontal camera at the training radius, pivot and focal",
        "noise_mode": "const",
        "precision": model.precision,
        "image_size": size,
        "depth_size": model.neural_rendering_resolution,
        "with": list(options["with_"]),
        "mesh_formats": list(options["mesh_formats"]) if meshes else [],
        "mesh_resolution": options["mesh_resolution"] if meshes else None,
        "mesh_level": mesh_task.OFFICIAL_LEVEL if meshes else None,
        "keypoint_detector": landmarks.detector_name(detector) if detector is not None else None,
        "segmentation_labels": {str(k): v for k, v in landmarks.PART_LABELS.items()} if "segmentation" in options["with_"] else None,
        "segmentation_palette": {str(k): list(v) for k, v in landmarks.PART_PALETTE.items()}
        if "segmentation" in options["with_"] else None,
        "batch_size": options["batch_size"],
        "depth_png_counts_per_unit": media.DEPTH_PNG_SCALE,
        "tool": f"3D Face Studio {__version__}",
    }


_NOT_COMPARED = ("tool",)
_MODEL_NOT_COMPARED = ("id",)


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in settings.items() if key not in _NOT_COMPARED}
    out.setdefault("precision", "fp32")  # datasets written before the option existed are fp32
    out["model"] = {key: value for key, value in dict(settings.get("model") or {}).items() if key not in _MODEL_NOT_COMPARED}
    return out


def _check_settings(out: Path, settings: dict[str, Any], *, force: bool) -> None:
    """Refuse (unless ``force``) a folder holding another dataset, or files this tool did not write."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        if not force and _has_dataset_files(out):
            raise InputError(
                f"{out} holds dataset files (index or six-digit sample files) but no {SETTINGS_FILE}, so they were not "
                "made by this tool or their settings are lost. Choose another --out, or pass --force to replace them."
            )
        return
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        existing = f"unreadable ({error})"
    if not isinstance(existing, dict):
        if force:
            return
        raise InputError(f"{path} is {existing if isinstance(existing, str) else 'not a JSON object'}. Pass --force to start the dataset over.")
    old, new = _comparable(existing), _comparable(settings)
    if old == new or force:
        return
    if old.get("model") != new.get("model"):
        raise InputError(
            f"{out} holds a dataset made with another model ({existing.get('model', {}).get('id')!r}, weights "
            f"{str(existing.get('model', {}).get('weights_sha256'))[:12]}...), not this one ({settings['model']['id']!r}, "
            f"weights {settings['model']['weights_sha256'][:12]}...). Choose another --out, or pass --force to replace it."
        )
    changed = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    raise InputError(
        f"{out} holds a dataset made with other settings ({'; '.join(changed)}). Rerun with the original settings to "
        "resume it, choose another --out, or pass --force to start over."
    )


@contextlib.contextmanager
def _writer_lock(out: Path, rank: int, world: int) -> Iterator[None]:
    """Hold ``.writer.lock`` (``.writer.rank<R>.lock`` for shards) while writing; refuse if another process holds it.

    An advisory ``flock``: the system releases it when the holder exits, however it ends. The file says
    who holds it (pid, host, start time, command), for the message to the second writer.
    """
    import fcntl
    import socket
    import sys

    path = out / (LOCK_FILE if world == 1 else f".writer.rank{rank}.lock")
    handle = open(path, "a+")  # noqa: SIM115 (held open for the whole run)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise InputError(
                f"Another process is writing this dataset ({holder}); two writers would render the same samples. "
                "Wait for it to finish (rerunning then resumes), or give each process its own share with --shard R/W."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                     f"{' '.join(sys.argv)[:200]}")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def _has_dataset_files(out: Path) -> bool:
    if (out / INDEX_FILE).exists() or any(_RANK_INDEX.match(p.name) for p in out.iterdir()):
        return True
    for sub in SUBDIRS:
        folder = out / sub
        if folder.is_dir():
            with os.scandir(folder) as entries:
                if any(_SAMPLE_FILE.match(entry.name) for entry in entries):
                    return True
    return False


def _remove_dataset(out: Path) -> None:
    """--force: remove this tool's sample files, index files and labels (nothing else)."""
    removed = 0
    for sub in SUBDIRS:
        folder = out / sub
        if folder.is_dir():
            for entry in os.scandir(folder):
                if _SAMPLE_FILE.match(entry.name) and entry.is_file():
                    os.unlink(entry.path)
                    removed += 1
    for path in [out / INDEX_FILE, out / LABELS_FILE, *(p for p in out.iterdir() if _RANK_INDEX.match(p.name))]:
        path.unlink(missing_ok=True)
    logger.info("--force: removed %d sample files and the index of the previous dataset", removed)


# --- writing one sample --------------------------------------------------------------------------


class _SampleWriter:
    """Writes one sample's files (annotation last) and returns its index record."""

    def __init__(self, model, out: Path, settings: dict[str, Any], options: dict[str, Any], size: int, detector) -> None:
        self.model, self.out, self.options, self.size, self.detector = model, out, options, size, detector
        self.with_ = options["with_"]
        self.model_info = {key: settings["model"][key] for key in ("id", "config_sha256", "weights_sha256")}

    def write(self, index: int, result: SampleResult, view: View, position: int) -> dict[str, Any]:
        name = f"{index:06d}"
        out, model = self.out, self.model
        seed = int(result.seeds[position])
        depth = result.depth[position, 0]
        alpha = result.alpha[position, 0]
        label = result.cameras[position]
        files: dict[str, Any] = {}

        image = media.resize_image(media.image_to_uint8(result.images[position]), self.size)
        files["image"] = self._rel(media.save_png(out / "images" / f"{name}.png", image))
        if "depth" in self.with_:
            files["depth"] = self._rel(media.save_png(out / "depth" / f"{name}.png", media.depth_to_uint16(depth)))
        if "depth-npy" in self.with_:
            files["depth_npy"] = self._rel(media.save_npy(out / "depth" / f"{name}.npy", depth.astype(np.float32)))
        if "masks" in self.with_:
            files["mask"] = self._rel(media.save_png(out / "masks" / f"{name}.png", media.alpha_to_uint8(alpha)))
        files["latent"] = self._rel(media.save_npy(out / "latents" / f"{name}.npy", result.ws[position : position + 1]))
        files["camera"] = self._rel(media.save_npy(out / "cameras" / f"{name}.npy", label.astype(np.float32)))
        mesh_error = None
        if "meshes" in self.with_:
            try:
                paths = write_shapes(
                    model, out / "meshes", name, result.ws[position : position + 1], self.options["mesh_resolution"],
                    self.options["mesh_formats"], mesh_task.OFFICIAL_LEVEL, None,
                )
                files["meshes"] = {
                    "mrc-official" if path.name.endswith("_official.mrc") else path.suffix.lstrip("."): self._rel(path)
                    for path in paths
                }
            except NoSurfaceError as error:  # the density never reaches the iso-level: no surface to mesh
                files["meshes"] = None
                mesh_error = str(error)
        keypoints = None
        if "keypoints" in self.with_ or "segmentation" in self.with_:
            frontal = functools.partial(landmarks.frontal_render, model, result.ws[position : position + 1], self.size)
            keypoints, points, visible = landmarks.keypoints_record((image, depth, alpha, label), self.detector, frontal=frontal)
            if "segmentation" in self.with_:
                parts = landmarks.labels_for(self.size, keypoints, points, visible, alpha)
                files["segmentation"] = self._rel(media.save_png(out / "segmentation" / f"{name}.png", parts))
            if "keypoints" not in self.with_:
                keypoints = None
        files["annotation"] = f"annotations/{name}.json"

        record: dict[str, Any] = {
            "format": ANNOTATION_FORMAT,
            "format_version": FORMAT_VERSION,
            "index": index,
            "name": name,
            "seed": seed,
            "model": self.model_info,
            "truncation_psi": self.options["truncation_psi"],
            "truncation_cutoff": self.options["truncation_cutoff"],
            "view": {
                "category": view.category,
                "yaw_deg": view.yaw_deg,
                "pitch_deg": view.pitch_deg,
                "radius": view.radius,
                "focal": view.focal,
                "fov_deg": horizontal_fov_deg(view.focal),
                "pivot": [float(v) for v in model.config.avg_camera_pivot],
            },
            "camera": [float(v) for v in label],
            "image_size": self.size,
            "depth_size": int(depth.shape[-1]),
            "foreground": foreground_box(alpha, self.size),
            "keypoints": keypoints,
            "files": files,
        }
        if mesh_error is not None:
            record["mesh_error"] = mesh_error
        z = z_from_seed(seed, model.z_dim)[0]
        annotation = {**record, "z": [float(v) for v in z]}
        # The annotation goes last: a sample with its annotation has every other file in place.
        media.save_json(out / files["annotation"], annotation)
        return record

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()


# --- index files ---------------------------------------------------------------------------------


class _IndexAppender:
    """Appends whole lines to an index file: one write + fsync per line; a torn tail is cut first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> _IndexAppender:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        keep = _complete_length(self.path)
        if keep != os.fstat(self.fd).st_size:
            logger.warning("%s ends with an incomplete line (an interrupted run); dropping it", self.path.name)
            os.ftruncate(self.fd, keep)
        return self

    def append(self, line: str) -> None:
        assert self.fd is not None and "\n" not in line
        data = (line + "\n").encode()
        before = os.fstat(self.fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
            os.fsync(self.fd)
        except OSError:
            with contextlib.suppress(OSError):  # shrinking needs no space: leave no torn line behind
                os.ftruncate(self.fd, before)
            raise

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _complete_length(path: Path) -> int:
    """Length of the file up to and including its last newline."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        position = size
        while position > 0:
            start = max(0, position - 65536)
            file.seek(start)
            chunk = file.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            position = start
    return 0


def read_index(path: str | os.PathLike) -> list[tuple[dict[str, Any], str]]:
    """(record, raw line) for every complete line of an index file; a torn or unreadable line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            if not raw.endswith(b"\n"):
                logger.warning("%s: ignoring the incomplete last line %d (an interrupted run)", path.name, number)
                break
            try:
                record = json.loads(raw)
                int(record["index"])
            except (ValueError, KeyError, TypeError):
                logger.warning("%s: ignoring unreadable line %d", path.name, number)
                continue
            records.append((record, raw.decode().rstrip("\n")))
    return records


def _index_files(out: Path) -> list[Path]:
    ranks = sorted((int(m.group(1)), p) for p in out.iterdir() if (m := _RANK_INDEX.match(p.name)))
    return [out / INDEX_FILE, *(path for _, path in ranks)]


def _read_all_indexes(out: Path) -> dict[int, dict[str, Any]]:
    records: dict[int, dict[str, Any]] = {}
    for path in _index_files(out):
        for record, _ in read_index(path):
            records[int(record["index"])] = record
    return records


def _scan_files(out: Path, owned: set[int] | None) -> dict[str, int]:
    """Sizes of the sample files ('images/000042.png' -> bytes); stale .part files of ``owned`` (all: None) are removed."""
    sizes: dict[str, int] = {}
    for sub in SUBDIRS:
        folder = out / sub
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _SAMPLE_FILE.match(entry.name)
                if not match:
                    continue
                if match.group(3):  # a .part left by a killed run
                    if owned is None or int(match.group(1)) in owned:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                    continue
                sizes[f"{sub}/{entry.name}"] = entry.stat().st_size
    return sizes


def _record_files(record: dict[str, Any]) -> list[str]:
    paths = []
    for value in dict(record.get("files") or {}).values():
        if isinstance(value, str):
            paths.append(value)
        elif isinstance(value, dict):
            paths.extend(v for v in value.values() if isinstance(v, str))
    return paths


def _is_complete(record: dict[str, Any], listing: dict[str, int]) -> bool:
    paths = _record_files(record)
    return bool(paths) and all(listing.get(path, 0) > 0 for path in paths)


def _merge(out: Path, *, rank: int, remove_rank_files: bool) -> list[dict[str, Any]]:
    """Rewrite index.jsonl (sorted, one line per sample) and images/dataset.json from every index file."""
    lines: dict[int, tuple[dict[str, Any], str]] = {}
    files = _index_files(out)
    for path in files:
        for record, raw in read_index(path):
            lines[int(record["index"])] = (record, raw)
    ordered = [lines[index] for index in sorted(lines)]
    _write_text(out / INDEX_FILE, "".join(raw + "\n" for _, raw in ordered), tag=f"rank{rank}")
    labels = ",\n".join(
        json.dumps([Path(record["files"]["image"]).name, record["camera"]]) for record, _ in ordered
    )
    _write_text(out / LABELS_FILE, '{"labels": [\n' + labels + ("\n" if labels else "") + "]}\n", tag=f"rank{rank}")
    if remove_rank_files:
        for path in files[1:]:
            path.unlink(missing_ok=True)
    return [record for record, _ in ordered]


def _write_text(path: Path, text: str, *, tag: str) -> None:
    """Write a text file atomically through ``<name>.<tag>.part`` (a name no other process uses), with fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.{tag}.part")
    try:
        with open(part, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise


def _remove_stale_parts(out: Path, tag: str | None) -> None:
    """Remove the settings/index/labels temporaries of ``tag`` (of every rank: None) left by a killed run."""
    for name in (SETTINGS_FILE, INDEX_FILE, LABELS_FILE):
        target = out / name
        if target.parent.is_dir():
            for path in target.parent.glob(f"{target.name}.*.part"):
                if tag is None or path.name == f"{target.name}.{tag}.part":
                    path.unlink(missing_ok=True)


@contextlib.contextmanager
def _disk_errors(out: Path) -> Iterator[None]:
    """Turn write failures into errors a user can act on (exit status 2 in the CLI)."""
    try:
        yield
    except DemoError:
        raise
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceError(
                f"No space left on the disk holding {out}{where}. Free some space (or choose another --out) and rerun "
                "the same command: the samples already in the index are complete and will be kept."
            ) from error
        raise InputError(
            f"Cannot write the dataset in {out}{where}: {error.strerror or error}. Fix the folder's permissions or "
            "choose another --out, then rerun the same command to continue."
        ) from error


def _format_seconds(seconds: float) -> str:
    seconds = round(max(seconds, 0.0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
