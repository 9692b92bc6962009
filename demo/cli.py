"""Command line interface: ``python -m demo <command> ...`` (layer 5).

Each subcommand is one small ``_cmd_*`` function that parses nothing itself: it calls the library
and prints the outcome. Commands are listed in :data:`COMMANDS`; adding one (``generate``, ``video``,
``interpolate``, ``dataset``, ``invert``, ``train-encoder``) means writing an ``_add_*`` function for
its options, a ``_cmd_*`` function, and one :class:`Command` row.

Only this module prints. A :class:`~demo.errors.DemoError` becomes ``error: <message>`` on stderr
and exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from demo.errors import CheckpointError, DemoError, InputError
from demo.progress import ProgressFn, scaled
from demo.weights import registry

PROG = "python -m demo"
EXIT_USER_ERROR = 2


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, option builder and runner."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


# --- helpers --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress_bar() -> Iterator[ProgressFn]:
    """A tqdm bar on stderr driven by a library ``ProgressFn`` (fraction in [0, 1], message).

    The bar appears on the first report, so a command that fails at once prints only its error.
    """
    from tqdm import tqdm

    steps = 1000
    bars: list[tqdm] = []

    def update(fraction: float, message: str) -> None:
        if not bars:
            bars.append(
                tqdm(total=steps, file=sys.stderr, bar_format="{percentage:3.0f}%|{bar:30}| {desc}", leave=False)
            )
        bar = bars[0]
        bar.n = round(fraction * steps)
        bar.set_description_str(message, refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _format_size(size_bytes: int | None) -> str:
    return "?" if size_bytes is None else f"{size_bytes / 1e6:.1f} MB"


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "generator.safetensors").is_file()


def _sha256_arg(value: str) -> str:
    value = value.strip().lower()
    if len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
        raise argparse.ArgumentTypeError("expected 64 hexadecimal digits")
    return value


def _convert(source: Path, out_dir: Path | None, checkpoint_id: str | None, sha256: str | None, key: str) -> Path:
    # Imported here: the converter pulls in torch and the networks, which `models` does not need.
    from demo.weights import store

    with _progress_bar() as progress:
        return store.convert_checkpoint(
            source, out_dir, checkpoint_id=checkpoint_id, expected_sha256=sha256, key=key, progress=progress
        )


# --- models ---------------------------------------------------------------------------------------


def _add_models(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def _cmd_models(args: argparse.Namespace) -> int:
    del args
    rows = [("id", "file", "size", "local", "licence")]
    for entry in registry.list_entries():
        converted = _is_converted(registry.converted_dir(entry.id))
        downloaded = registry.original_path(entry.id).is_file()
        local = "converted" if converted else "downloaded" if downloaded else "-"
        rows.append((entry.id, entry.file_name, _format_size(entry.size_bytes), local, entry.licence))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print(f"\ncheckpoints folder: {registry.checkpoints_dir()}")
    licence_urls = sorted({entry.licence_url for entry in registry.list_entries()})
    print("licence text: " + ", ".join(licence_urls))
    return 0


# --- download -------------------------------------------------------------------------------------


def _add_download(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="checkpoint id, see `python -m demo models`")
    parser.add_argument("--no-convert", action="store_true", help="only fetch the official pickle; do not convert it")
    parser.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help=f"Hugging Face token for gated mirrors (default: ${registry.HF_TOKEN_ENV} or a stored login)",
    )


def _cmd_download(args: argparse.Namespace) -> int:
    entry = registry.get_entry(args.id)
    print(f"{entry.id}: {entry.description}\nlicence: {entry.licence} ({entry.licence_url})", file=sys.stderr)
    with _progress_bar() as progress:
        path = registry.download(entry.id, progress=progress, token=args.token)
    print(f"downloaded {path}")
    if args.no_convert:
        return 0
    folder = _convert(path, registry.converted_dir(entry.id), entry.id, entry.sha256, "G_ema")
    print(f"converted to {folder}")
    return 0


# --- convert --------------------------------------------------------------------------------------


def _add_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="PKL_OR_ID",
        help="an official snapshot .pkl, or a registry id whose pickle is already in checkpoints/original/",
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default: checkpoints/<ID>/)"
    )
    parser.add_argument(
        "--id",
        dest="checkpoint_id",
        default=None,
        metavar="ID",
        help="registry id to record (default: guessed from the file name)",
    )
    parser.add_argument(
        "--sha256",
        type=_sha256_arg,
        default=None,
        metavar="HEX",
        help="refuse the file unless its sha256 is this (64 hex digits)",
    )
    parser.add_argument(
        "--key", default="G_ema", metavar="NAME", help="snapshot entry holding the generator (default: G_ema)"
    )


def _resolve_convert_source(args: argparse.Namespace) -> tuple[Path, str | None, str | None]:
    """(pickle path, checkpoint id or None, expected sha256 or None) for ``convert``."""
    if args.source in {entry.id for entry in registry.list_entries()}:
        entry = registry.get_entry(args.source)
        path = registry.original_path(entry.id)
        if not path.is_file():
            raise CheckpointError(
                f"{entry.id} is not downloaded: {path} does not exist. "
                f"Run `{PROG} download {entry.id}`, or pass the path of {entry.file_name} to convert."
            )
        return path, args.checkpoint_id or entry.id, args.sha256 or entry.sha256
    path = Path(args.source).expanduser()
    checkpoint_id = args.checkpoint_id
    if checkpoint_id is None:
        match = registry.find_entry_by_file_name(path.name)
        checkpoint_id = match.id if match is not None else None
    sha256 = args.sha256
    if sha256 is None and checkpoint_id is not None:
        with contextlib.suppress(CheckpointError):  # an id outside the registry is allowed
            sha256 = registry.get_entry(checkpoint_id).sha256
    return path, checkpoint_id, sha256


def _cmd_convert(args: argparse.Namespace) -> int:
    path, checkpoint_id, sha256 = _resolve_convert_source(args)
    out_dir = args.out
    if out_dir is None and checkpoint_id is not None:
        out_dir = registry.checkpoints_dir() / checkpoint_id
    folder = _convert(path, out_dir, checkpoint_id, sha256, args.key)
    print(f"converted {path} to {folder}")
    return 0


# --- generate -------------------------------------------------------------------------------------


def _resolution_arg(value: str) -> int:
    from demo.tasks.mesh import MAX_RESOLUTION, MIN_RESOLUTION

    try:
        resolution = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(f"must be from {MIN_RESOLUTION} to {MAX_RESOLUTION}, got {resolution}")
    return resolution


def _formats_arg(value: str) -> tuple[str, ...]:
    from demo.tasks.generate import check_shape_formats

    try:
        return check_shape_formats(value.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _psi_arg(value: str) -> float:
    try:
        psi = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not -2.0 <= psi <= 2.0:
        raise argparse.ArgumentTypeError(f"truncation psi must be between -2 and 2, got {psi}")
    return psi


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="eg3d-ffhqrebalanced512-128",
        help="registry id, converted folder, official .pkl, or 'tiny' / 'tiny-panohead' (random weights, for trying the tool)",
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu' or 'cuda'")
    parser.add_argument(
        "--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"),
        help="convolutions' precision: fp32 = the official numerics (default); bf16 (CPUs with AVX-512 BF16/AMX, "
        "CUDA) or fp16 (CUDA) are faster and differ by a few 8-bit levels; auto = the fastest this device runs natively",
    )


def _load_model(args: argparse.Namespace):
    from demo.devices import pick_device
    from demo.weights.store import TINY_IDS, load_generator

    device = pick_device(args.device)
    if args.model in TINY_IDS:
        print(f"note: --model {args.model} is a small RANDOM model: outputs are noise, not faces.", file=sys.stderr)
    with _progress_bar() as progress:
        return load_generator(args.model, device=device, progress=progress, precision=args.precision)


def _add_latent_options(parser: argparse.ArgumentParser, *, ws_nargs: str | None = None, faces: bool = False) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--seeds", default="0", help="seeds and ranges, e.g. '0-3,7' (default 0)")
    source.add_argument("--z", type=Path, help="latents z as .npy, shape (N, z_dim)")
    source.add_argument(
        "--ws", type=Path, nargs=ws_nargs, help="latents ws as .npy, shape (N, num_ws, w_dim) (no truncation applied)"
    )
    if faces:
        source.add_argument(
            "--faces", type=Path, nargs="+", metavar="FILE",
            help="face files (.face.safetensors from invert, the app or generate's faces; ws .npy accepted too): "
            "photo faces bring their tuned weights and camera",
        )
    parser.add_argument("--trunc", type=_psi_arg, default=0.7, help="truncation psi (default 0.7)")
    parser.add_argument("--trunc-cutoff", type=int, default=None, help="truncate only the first N ws (default all)")


def _faces(args: argparse.Namespace, model) -> list:
    """One :class:`~demo.tasks.face.Face` per identity from --faces / --ws / --z / --seeds."""
    from demo import media
    from demo.tasks.face import face_from_seed, face_from_ws, load_faces
    from demo.tasks.sample import parse_seeds, ws_from_z

    if getattr(args, "faces", None):
        return load_faces(args.faces, model)
    if args.ws is not None:
        return load_faces(args.ws if isinstance(args.ws, list) else [args.ws], model)
    if args.z is not None:
        z_all = media.load_npy(args.z, shape=(-1, model.z_dim))
        return [
            face_from_ws(
                model, ws_from_z(model, z_all[i : i + 1], truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff),
                name=media.output_stem(None, index=i), source={"kind": "z-file", "file": args.z.name, "index": i},
            )
            for i in range(len(z_all))
        ]
    return [
        face_from_seed(model, seed, truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff)
        for seed in parse_seeds(args.seeds)
    ]


def _add_generate(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    _add_latent_options(parser)
    parser.add_argument("--yaw-deg", type=float, default=0.0, help="camera yaw, degrees (+ = camera to the face's left)")
    parser.add_argument("--pitch-deg", type=float, default=0.0, help="camera pitch, degrees (- = camera above)")
    parser.add_argument("--fov-deg", type=float, default=None, help="diagonal FOV as the official scripts (default: training focal)")
    parser.add_argument(
        "--annotate", default="", metavar="LIST",
        help="comma list: keypoints (<name>_keypoints.json: 478 + iBUG 68 points, 2D/visibility/3D), "
        "segmentation (<name>_segmentation.png face-part labels)",
    )
    parser.add_argument("--shapes", action="store_true", help="also write meshes / density volumes")
    parser.add_argument("--shape-res", type=_resolution_arg, default=256, help="grid points per side (default 256)")
    parser.add_argument("--shape-format", type=_formats_arg, default=("glb",), help="comma list of glb,ply,obj,mrc (density in world units, overlays the meshes),mrc-official (gen_samples.py's volume); default glb")
    parser.add_argument("--shape-level", type=float, default=10.0, help="iso-level of raw density (official 10)")
    parser.add_argument("--mesh-faces", type=int, default=None, help="decimate meshes to about this many faces")
    parser.add_argument("--batch", type=int, default=4, help="samples per forward pass (default 4)")
    parser.add_argument("--outdir", type=Path, required=True, help="output folder (created)")


def _cmd_generate(args: argparse.Namespace) -> int:
    from demo import media
    from demo.tasks.generate import generate_to_folder
    from demo.tasks.sample import parse_seeds

    seeds = z = ws = None
    if args.z is not None:
        z = media.load_npy(args.z, shape=(-1, -1))
    elif args.ws is not None:
        ws = media.load_npy(args.ws, shape=(-1, -1, -1))
    else:
        seeds = parse_seeds(args.seeds)
    if args.batch < 1:
        raise InputError("--batch must be at least 1.")
    model = _load_model(args)
    with _progress_bar() as progress:
        result = generate_to_folder(
            model, args.outdir, seeds=seeds, z=z, ws=ws,
            truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff,
            yaw_deg=args.yaw_deg, pitch_deg=args.pitch_deg, fov_deg=args.fov_deg,
            shapes=args.shapes, shape_resolution=args.shape_res, shape_formats=args.shape_format,
            shape_level=args.shape_level, mesh_faces=args.mesh_faces, batch_size=args.batch,
            annotations=[part.strip() for part in args.annotate.split(",") if part.strip()],
            model_name=str(args.model), progress=progress,
        )
    for name, error in result.mesh_errors.items():
        print(f"warning: {name}: no mesh. {error} (--shape-level)", file=sys.stderr)
    print(f"wrote {len(result.files)} samples to {result.outdir}")
    return 0


# --- video / multiview / interpolate ----------------------------------------------------------------


def _item_progress(progress: ProgressFn, index: int, count: int, name: str) -> ProgressFn:
    """Progress of item ``index`` of ``count`` as a share of the whole run, labelled with its name."""
    return lambda fraction, message: progress((index + fraction) / count, f"{name}: {message}")


def _float_list(value: str) -> list[float]:
    try:
        values = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("the list is empty")
    return values


def _add_render_options(parser: argparse.ArgumentParser) -> None:
    from demo.tasks.video import RENDER_MODES

    parser.add_argument("--mode", choices=RENDER_MODES, default="image", help="what the frames show (default image)")
    parser.add_argument("--frames", type=int, default=120, help="number of frames (default 120)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    parser.add_argument("--depth-mult", type=int, default=1, help="multiply per-ray samples (gen_videos uses 2)")
    parser.add_argument("--batch", type=int, default=4, help="frames per forward pass (default 4)")
    parser.add_argument("--gif", action="store_true", help="also write an animated GIF")
    parser.add_argument("--save-frames", action="store_true", help="also write every frame as PNG")
    parser.add_argument(
        "--any-angle", action="store_true",
        help="allow views the model was not trained for (e.g. a 360 turn of a front-facing EG3D model)",
    )


def _add_video(parser: argparse.ArgumentParser) -> None:
    from demo.tasks.video import TRAJECTORIES

    _add_model_options(parser)
    _add_latent_options(parser, ws_nargs="+", faces=True)
    parser.add_argument("--trajectory", choices=TRAJECTORIES, default="orbit",
                        help="camera path (default: official orbit); centred on a photo face's own view")
    parser.add_argument("--yaw-range", type=float, default=35.0, help="yaw amplitude for 'yaw', degrees")
    parser.add_argument("--pitch-deg", type=float, default=0.0, help="pitch for 'yaw' and '360', degrees")
    parser.add_argument("--yaw-keys", type=_float_list, default=[], help="keyframe yaws, e.g. -30,0,30 ('keyframes')")
    parser.add_argument("--pitch-keys", type=_float_list, default=[], help="keyframe pitches ('keyframes')")
    _add_render_options(parser)
    parser.add_argument("--outdir", type=Path, required=True, help="output folder (created)")


def _cmd_video(args: argparse.Namespace) -> int:
    from demo import media
    from demo.tasks.face import face_trajectory, rotate_face
    from demo.tasks.video import make_trajectory

    options = dict(yaw_range_deg=args.yaw_range, pitch_deg=args.pitch_deg, yaw_keys_deg=args.yaw_keys,
                   pitch_keys_deg=args.pitch_keys)
    make_trajectory(args.trajectory, args.frames, **options)  # bad options fail before the model loads
    model = _load_model(args)
    faces = _faces(args, model)
    out = media.check_writable_dir(args.outdir)
    with _progress_bar() as progress:
        for index, face in enumerate(faces):
            trajectory = face_trajectory(face, args.trajectory, args.frames, **options)
            stem = f"{face.name}_{trajectory.name}"
            result = rotate_face(
                model, face, trajectory, out / f"{stem}.mp4", mode=args.mode, fps=args.fps,
                depth_multiplier=args.depth_mult, batch_size=args.batch, gif=args.gif, full_turn=args.any_angle,
                frames_dir=out / f"{stem}_frames" if args.save_frames else None,
                progress=_item_progress(progress, index, len(faces), face.name),
            )
            print(f"wrote {result.path} ({result.num_frames} frames, {result.fps:g} fps)")
    return 0


def _add_multiview(parser: argparse.ArgumentParser) -> None:
    from demo.tasks.video import RENDER_MODES

    _add_model_options(parser)
    _add_latent_options(parser, ws_nargs="+", faces=True)
    parser.add_argument("--inputs", type=Path, help="a folder of ws .npy or .face.safetensors files (one identity per file)")
    parser.add_argument(
        "--photos", type=Path, metavar="DIR",
        help="a photo or a folder of photos: each is reconstructed (see invert; --pti, --w-steps, --pti-steps, --encoder) "
        "and its person rendered from every view; a photo without a usable face is reported and skipped",
    )
    _add_photo_options(parser)
    parser.add_argument("--yaws", type=_float_list, default=[-30.0, 0.0, 30.0], help="yaw angles, degrees (default -30,0,30; write --yaws=-30,0,30 when the list starts with a minus)")
    parser.add_argument("--pitches", type=_float_list, default=[0.0], help="pitch angles, degrees (default 0)")
    parser.add_argument("--paired", action="store_true", help="pair yaws[i] with pitches[i] instead of the full grid")
    parser.add_argument("--any-angle", action="store_true", help="allow views the model was not trained for")
    parser.add_argument("--mode", choices=RENDER_MODES, default="image")
    parser.add_argument("--fov-deg", type=float, default=None, help="diagonal FOV (default: training focal)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--outdir", type=Path, required=True, help="output folder; one subfolder per identity")


def _cmd_multiview(args: argparse.Namespace) -> int:
    from demo import media
    from demo.tasks import video
    from demo.tasks.face import multiview_face

    views = video.view_list(args.yaws, args.pitches, paired=args.paired)
    if args.photos is not None and (args.inputs is not None or args.faces or args.ws or args.z):
        raise InputError("--photos makes the identities; leave out --inputs, --faces, --ws and --z.")
    if args.photos is None:
        _photo_options_unused(args)
    if args.inputs is not None:
        files = sorted(p for p in args.inputs.iterdir() if p.name.endswith((".npy", ".face.safetensors"))) if args.inputs.is_dir() else []
        if not files:
            raise InputError(f"{args.inputs} holds no .npy latent or .face.safetensors files.")
        args.faces = files
    photos = _photo_inputs(args.photos) if args.photos is not None else []
    settings = _photo_settings(args) if photos else None
    out = media.check_writable_dir(args.outdir)
    model = _load_model(args)
    skipped: list[dict[str, str]] = []

    def grid(face, progress) -> None:
        result = multiview_face(
            model, face, views, out / face.name, mode=args.mode, fov_deg=args.fov_deg, batch_size=args.batch,
            full_turn=args.any_angle, progress=progress,
        )
        print(f"wrote {len(result.images)} views to {result.folder}")

    with _progress_bar() as progress:
        if photos:
            encoder, _ = _photo_encoder(args, model)
            for index, path in enumerate(photos):
                item = _item_progress(progress, index, len(photos), path.stem)
                try:
                    reconstruction = _reconstruct(args, model, encoder, settings, path, scaled(item, 0.0, 0.8))
                except InputError as error:
                    print(f"skipped {path.name}: {error}", file=sys.stderr)  # one bad photo does not stop a folder
                    skipped.append({"input": str(path), "error": str(error)})
                    continue
                face = reconstruction.face
                face.save(out / face.name / face.name)
                grid(face, scaled(item, 0.8, 1.0))
        else:
            faces = _faces(args, model)
            for index, face in enumerate(faces):
                grid(face, _item_progress(progress, index, len(faces), face.name))
    if photos:
        media.save_json(out / "multiview.json", {"model": str(args.model), "photos": [str(p) for p in photos], "skipped": skipped})
        if len(skipped) == len(photos):
            raise InputError(f"None of the {len(photos)} photos could be reconstructed (see the messages above).")
        if skipped:
            print(f"skipped {len(skipped)} of {len(photos)} photos (listed in {out / 'multiview.json'})")
    return 0


def _add_interpolate(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    _add_latent_options(parser, ws_nargs="+", faces=True)
    parser.add_argument(
        "--with-seeds", default=None, metavar="SEEDS",
        help="with --faces: seeds to visit after the faces, e.g. 7 (a photo face -> seed 7 morph)",
    )
    parser.add_argument("--interp", choices=("linear", "slerp", "cubic-loop"), default="linear",
                        help="latent path: linear or spherical in W, or gen_videos' looping cubic")
    parser.add_argument("--loop", action="store_true", help="return to the first identity at the end (linear/slerp)")
    parser.add_argument("--trajectory", choices=("static", "orbit", "yaw"), default="static", help="camera during the morph")
    parser.add_argument("--strip", type=int, default=8, help="frames in the PNG strip (default 8)")
    _add_render_options(parser)
    parser.add_argument("--outdir", type=Path, required=True, help="output folder (created)")


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from demo import media
    from demo.tasks import video
    from demo.tasks.face import face_from_seed, morph_faces
    from demo.tasks.sample import parse_seeds

    trajectory = video.make_trajectory(args.trajectory, args.frames)
    if args.with_seeds is not None and not args.faces:
        raise InputError("--with-seeds adds seeds after --faces; without face files use --seeds.")
    extra_seeds = parse_seeds(args.with_seeds) if args.with_seeds else []
    model = _load_model(args)
    faces = _faces(args, model) + [
        face_from_seed(model, seed, truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff) for seed in extra_seeds
    ]
    if len(faces) < 2 and args.interp != "cubic-loop":
        raise InputError("Interpolation needs at least two identities (e.g. --seeds 0,5, two --ws files, or --faces F --with-seeds 7).")
    out = media.check_writable_dir(args.outdir)
    stem = "interp_" + "-".join(face.name for face in faces[:6])
    with _progress_bar() as progress:
        result = morph_faces(
            model, faces, args.frames, trajectory, out / f"{stem}.mp4", mode=args.interp, loop=args.loop,
            render_mode=args.mode, fps=args.fps, depth_multiplier=args.depth_mult, batch_size=args.batch, gif=args.gif,
            full_turn=args.any_angle, frames_dir=out / f"{stem}_frames" if args.save_frames else None, progress=progress,
        )
    strip = video.frame_strip(media.read_video_frames(result.video.path), args.strip)
    media.save_png(out / f"{stem}_strip.png", strip)
    media.save_npy(out / f"{stem}_ws.npy", result.ws)
    print(f"wrote {result.video.path} ({result.video.num_frames} frames) and {stem}_strip.png")
    return 0


# --- edit -----------------------------------------------------------------------------------------


def _add_edit(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    _add_latent_options(parser, ws_nargs="+", faces=True)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--method", choices=("sefa", "ganspace"), default="sefa",
                     help="directions from the checkpoint: sefa (closed-form, from the style layers) or ganspace (PCA of W)")
    how.add_argument("--direction-file", type=Path, default=None, metavar="NPY",
                     help="a direction of your own: (w_dim,) or (num_ws, w_dim) .npy (InterFaceGAN boundaries work)")
    parser.add_argument("--direction", type=int, nargs="+", default=[0], metavar="K",
                        help="direction indices, strongest first (default 0); one sweep each")
    parser.add_argument("--alphas", type=_float_list, default=[-3.0, -1.5, 0.0, 1.5, 3.0],
                        help="edit strengths in standard deviations of W (default -3,-1.5,0,1.5,3; write --alphas=-3,0,3)")
    parser.add_argument("--layers", default="all", help="ws the edit changes: all, coarse, middle, fine, or indices '0,1,2'")
    parser.add_argument("--list", action="store_true", help="print the strongest directions and exit")
    parser.add_argument("--video", action="store_true", help="also write a video along each direction")
    parser.add_argument("--frames", type=int, default=60, help="video frames (default 60)")
    parser.add_argument("--fps", type=float, default=30.0, help="video frames per second (default 30)")
    parser.add_argument("--save-faces", action="store_true", help="also write the edited faces as .face.safetensors")
    parser.add_argument("--outdir", type=Path, default=None, help="output folder (created); needed unless --list")


def _cmd_edit(args: argparse.Namespace) -> int:
    from demo.tasks import edit

    if args.outdir is None and not args.list:
        raise InputError("--outdir is needed (or --list to print the directions).")
    if args.video and args.frames < 2:
        raise InputError("--frames must be at least 2.")
    model = _load_model(args)
    layers = edit.resolve_layers(model, args.layers)
    if args.direction_file is not None:
        directions = edit.load_direction(args.direction_file, model)
    else:
        cache = registry.checkpoints_dir() / "directions" if str(args.model) in {e.id for e in registry.list_entries()} else None
        directions = edit.directions_for(model, args.method, layers=layers, cache_dir=cache)
    if args.list:
        for row in edit.describe(directions):
            print(f"direction {row['index']:>2}: strength {row['strength']:.4g}, spread of W {row['scale']:.4g}")
        return 0
    faces = _faces(args, model)
    with _progress_bar() as progress:
        for index, face in enumerate(faces):
            for direction in args.direction:
                result = edit.render_sweep(
                    model, face, directions, direction, args.alphas, args.outdir, layers=layers,
                    video_frames=args.frames if args.video else None, fps=args.fps, save_faces=args.save_faces,
                    progress=_item_progress(progress, index, len(faces), f"{face.name} d{direction}"),
                )
                print(f"wrote {result.strip}" + (f" and {result.video}" if result.video else ""))
    return 0


# --- dataset --------------------------------------------------------------------------------------


def _add_dataset(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    parser.add_argument(
        "--num", "--num-samples", "-n", dest="num", type=int, required=True,
        help="number of samples; sample i uses seed start-seed + i (under torchrun write -n or --num-samples: "
        "torchrun reads --num as its --numa-binding)",
    )
    parser.add_argument("--out", "--outdir", dest="out", type=Path, required=True, help="dataset folder (created; rerun to resume)")
    parser.add_argument("--start-seed", type=int, default=0, help="seed of sample 0 (default 0)")
    parser.add_argument("--views", default="mix", help="view preset: mix (EG3D synthetic-data mix), frontal, uniform (default mix)")
    parser.add_argument("--yaw-range", type=float, default=60.0, help="'uniform': yaw drawn in +-this many degrees (default 60)")
    parser.add_argument("--pitch-range", type=float, default=20.0, help="'uniform': pitch drawn in +-this many degrees (default 20)")
    parser.add_argument("--trunc", type=_psi_arg, default=0.7, help="truncation psi (default 0.7)")
    parser.add_argument("--trunc-cutoff", type=int, default=None, help="truncate only the first N ws (default all)")
    parser.add_argument(
        "--with", dest="with_", default="depth,masks", metavar="LIST",
        help="comma list of optional outputs: depth, depth-npy, masks, meshes, keypoints (MediaPipe's 478 points and "
        "the iBUG 68, 2D + visibility + 3D), segmentation (face-part label maps); default depth,masks",
    )
    parser.add_argument("--mesh-format", default="ply", help="comma list of ply,glb,obj,mrc,mrc-official for --with meshes (default ply)")
    parser.add_argument("--mesh-res", type=_resolution_arg, default=128, help="mesh grid points per side (default 128)")
    parser.add_argument("--image-size", type=int, default=None, help="shrink images to this size (Lanczos); default the model's")
    parser.add_argument("--batch", type=int, default=4, help="samples per forward pass (default 4); part of the settings")
    parser.add_argument("--shard", default=None, metavar="RANK/WORLD", help="this machine's share, e.g. 0/4 (torchrun: automatic)")
    parser.add_argument("--force", action="store_true", help="start over in a folder holding a dataset with other settings")


def _cmd_dataset(args: argparse.Namespace) -> int:
    from demo.devices import process_group, torchrun_device, torchrun_env
    from demo.tasks import dataset

    torchrun = torchrun_env()
    shard = dataset.parse_shard(args.shard) if args.shard is not None else (0, 1)
    if torchrun is not None:
        if args.shard is not None and shard != torchrun[:2]:
            raise InputError(f"--shard {args.shard} disagrees with torchrun's RANK/WORLD_SIZE {torchrun[0]}/{torchrun[1]}.")
        shard = torchrun[:2]
    options = dataset.check_options(
        num=args.num, start_seed=args.start_seed, views=args.views, yaw_range_deg=args.yaw_range,
        pitch_range_deg=args.pitch_range, truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff,
        with_=args.with_, mesh_formats=args.mesh_format.split(","), mesh_resolution=args.mesh_res,
        image_size=args.image_size, batch_size=args.batch, shard=shard,
    )
    if torchrun is not None:  # one GPU per local rank
        args.device = torchrun_device(args.device, torchrun[2])
    model = _load_model(args)
    rank, world = shard
    with process_group(world if torchrun is not None else 1, model.device), _progress_bar() as progress:
        result = dataset.make_dataset(model, args.out, **options, model_id=str(args.model), force=args.force, progress=progress)
    who = f"shard {rank}/{world}: " if world > 1 else ""
    print(f"{who}wrote {result.written} samples, {result.skipped} were already complete ({result.seconds:.1f} s)")
    if result.total is not None:
        print(f"{result.out_dir}: {result.total} samples in {result.index.name}; EG3D labels in {result.labels}")
    return 0


# --- invert ---------------------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


# Written out so that building the parser does not import torch; tests check they match the library's.
_INVERT_PRESETS = ("none", "fast", "balanced", "best")
_ENCODER_KINDS = ("conv", "vit")


def _add_photo_options(parser: argparse.ArgumentParser) -> None:
    """How photos become faces: the same options for invert and multiview --photos."""
    parser.add_argument(
        "--encoder", default=None, metavar="PATH",
        help="encoder folder or encoder.safetensors (default: checkpoints/<model>/encoder.safetensors if present; 'none' = w_avg start)",
    )
    parser.add_argument(
        "--pti", choices=_INVERT_PRESETS, default=None,
        help="optimisation preset: none (projection only, no generator tuning), fast (fits a 60 s GPU slot; default), "
        "balanced, best (500 + 350 steps); --pti none --w-steps 0 is the encoder's answer alone",
    )
    parser.add_argument("--w-steps", type=int, default=None, help="projection steps (overrides the preset)")
    parser.add_argument("--pti-steps", type=int, default=None, help="generator tuning steps (overrides the preset)")
    parser.add_argument("--space", choices=("w", "w+"), default=None, help="latent space of the projection (default w)")
    parser.add_argument(
        "--raw-projection", action="store_true", default=None,
        help="project against the raw neural render (no super-resolution in the loop; several times faster on a CPU)",
    )
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS", help="stop optimising after this long")
    parser.add_argument("--seed", type=int, default=None, help="seed of the optimisation noise (default 0)")


def _photo_options_unused(args: argparse.Namespace) -> None:
    names = ("encoder", "pti", "w_steps", "pti_steps", "space", "raw_projection", "time_budget", "seed")
    given = [name for name in names if getattr(args, name) is not None]
    if given:
        raise InputError(f"--{given[0].replace('_', '-')} is for --photos (reconstructing photos).")


def _photo_settings(args: argparse.Namespace):
    from demo.tasks.invert import InversionSettings

    return InversionSettings.from_preset(
        args.pti or "fast", w_steps=args.w_steps, pti_steps=args.pti_steps, space=args.space,
        raw_projection=args.raw_projection, time_budget_s=args.time_budget, seed=args.seed,
    )


def _photo_encoder(args: argparse.Namespace, model):
    """(encoder or None, its path or None) from --encoder, else the model's own when it has one."""
    from demo.tasks.train_encoder import find_encoder, load_encoder

    path = None if args.encoder == "none" else Path(args.encoder) if args.encoder else find_encoder(str(args.model))
    encoder = load_encoder(path, device=model.device, model=model) if path is not None else None
    print(f"encoder: {path if encoder is not None else 'none (starting from w_avg)'}", file=sys.stderr)
    return encoder, path


def _photo_inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{path} holds no images ({', '.join(_IMAGE_SUFFIXES)}).")
        return files
    if not path.is_file():
        raise InputError(f"{path} does not exist.")
    return [path]


def _reconstruct(args: argparse.Namespace, model, encoder, settings, path: Path, progress, *, aligned: bool = False, camera=None):
    """One photo -> a PhotoReconstruction, with its warnings printed."""
    from demo.tasks.photo import reconstruct_photo

    reconstruction = reconstruct_photo(
        model, path, settings, encoder=encoder, aligned=aligned, camera=camera, progress=progress,
    )
    for warning in reconstruction.warnings:
        print(f"warning: {path.name}: {warning}", file=sys.stderr)
    return reconstruction


def _add_invert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", type=Path, metavar="PHOTO_OR_FOLDER", help="a photo, or a folder of photos (png/jpg/webp/...)")
    _add_model_options(parser)
    _add_photo_options(parser)
    parser.add_argument(
        "--aligned", action="store_true",
        help="inputs are already aligned square crops (no face detection); cameras from --camera, <stem>.npy or "
        "<stem>_camera.npy beside each image, --yaw-deg/--pitch-deg, or the encoder",
    )
    parser.add_argument("--camera", type=Path, default=None, help="--aligned with one input: its 25-number camera .npy")
    parser.add_argument("--yaw-deg", type=float, default=None, help="--aligned: camera yaw in degrees (+ = camera to the face's left)")
    parser.add_argument("--pitch-deg", type=float, default=None, help="--aligned: camera pitch in degrees (- = camera above)")
    parser.add_argument("--mesh", action="store_true", help="also write a coloured mesh (.glb) of the result")
    parser.add_argument("--mesh-res", type=_resolution_arg, default=256, help="mesh grid points per side (default 256)")
    parser.add_argument("--video", action="store_true", help="also write an orbit video (.mp4) around the photo's view")
    parser.add_argument("--frames", type=int, default=120, help="video frames (default 120)")
    parser.add_argument("--outdir", type=Path, required=True, help="output folder (created)")


def _aligned_camera(args: argparse.Namespace, model, path: Path, count: int):
    """The camera label of an --aligned crop, or None (encoder or frontal)."""
    import numpy as np

    from demo import media
    from demo.tasks.sample import view_camera

    if args.camera is not None:
        if count != 1:
            raise InputError("--camera gives one camera; with a folder put <stem>.npy or <stem>_camera.npy beside each image.")
        return media.load_npy(args.camera)
    for sidecar in (path.with_suffix(".npy"), path.with_name(f"{path.stem}_camera.npy")):
        if sidecar.is_file():
            return media.load_npy(sidecar)
    if args.yaw_deg is not None or args.pitch_deg is not None:
        return view_camera(model, yaw_deg=args.yaw_deg or 0.0, pitch_deg=args.pitch_deg or 0.0).to_label()[0].numpy().astype(np.float32)
    return None


def _cmd_invert(args: argparse.Namespace) -> int:
    from demo import media
    from demo.tasks.photo import save_reconstruction

    files = _photo_inputs(args.inputs)
    if not args.aligned and (args.camera is not None or args.yaw_deg is not None or args.pitch_deg is not None):
        raise InputError("--camera, --yaw-deg and --pitch-deg are for --aligned crops; photos get their camera from the face.")
    settings = _photo_settings(args)  # fails before loading
    if args.frames < 1:
        raise InputError("--frames must be at least 1.")
    out = media.check_writable_dir(args.outdir)
    model = _load_model(args)
    encoder, encoder_path = _photo_encoder(args, model)
    records, skipped = [], []
    with _progress_bar() as progress:
        for index, path in enumerate(files):
            item = _item_progress(progress, index, len(files), path.stem)
            try:
                camera = _aligned_camera(args, model, path, len(files)) if args.aligned else None
                reconstruction = _reconstruct(
                    args, model, encoder, settings, path, scaled(item, 0.0, 0.8), aligned=args.aligned, camera=camera,
                )
            except InputError as error:
                if len(files) == 1:
                    raise
                print(f"skipped {path.name}: {error}", file=sys.stderr)  # one bad photo does not stop a folder
                skipped.append({"input": str(path), "error": str(error)})
                continue
            written = save_reconstruction(
                model, reconstruction, out, shapes=args.mesh, shape_resolution=args.mesh_res,
                video_frames=args.frames if args.video else None, model_name=str(args.model),
                progress=scaled(item, 0.8, 1.0),
            )
            inversion = reconstruction.inversion
            print(
                f"{path.name}: PSNR {inversion.psnr_start:.2f} -> {inversion.psnr_projected:.2f} (projection) -> "
                f"{inversion.psnr_tuned:.2f} dB (tuned), {inversion.seconds:.1f} s; wrote {len(written)} files"
            )
            records.append({
                "input": str(path), "aligned": bool(args.aligned), **reconstruction.record(),
                "encoder": str(encoder_path) if encoder is not None else None, "files": [Path(p).name for p in written],
            })
    media.save_json(out / "invert.json", {
        "model": str(args.model), "inputs": records, "skipped": skipped, "camera": "EG3D label, shape (25,)",
        "ws_shape": [1, model.num_ws, model.w_dim],
    })
    print(f"wrote {out / 'invert.json'}" + (f"; skipped {len(skipped)} of {len(files)} inputs" if skipped else ""))
    if not records:
        raise InputError(f"None of the {len(files)} inputs could be inverted (see the messages above).")
    return 0


# --- train-encoder --------------------------------------------------------------------------------


def _range_arg(value: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers such as 0.5,1.0, got {value!r}") from None
    return low, high


def _add_train_encoder(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    parser.add_argument("--steps", type=int, required=True, help="total training steps to reach (a rerun resumes)")
    parser.add_argument("--batch", type=int, default=8, help="samples per step and process (default 8)")
    parser.add_argument("--kind", choices=_ENCODER_KINDS, default="conv", help="encoder architecture (default conv)")
    parser.add_argument("--image-size", type=int, default=None, help="encoder input size (default 256; the model's for tiny models)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate after warm-up (default 1e-4)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up steps (default 500)")
    parser.add_argument("--views", default="mix", help="view preset of the training renders: mix, frontal, uniform (default mix)")
    parser.add_argument("--pitch-jitter", type=float, default=10.0, help="extra pitch, uniform in +- this many degrees (default 10)")
    parser.add_argument("--trunc-range", type=_range_arg, default=(0.5, 1.0), help="truncation psi range per sample (default 0.5,1.0)")
    parser.add_argument("--image-weight", type=float, default=1.0, help="weight of the image loss through the generator (0 = off)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training samples (default 0)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    parser.add_argument("--eval", type=int, default=0, metavar="N", help="compare with baselines on N held-out renders at the end")
    parser.add_argument("--out", "--outdir", dest="out", type=Path, default=None,
                        help="checkpoint folder (default checkpoints/<ID>/ for registry ids)")


def _cmd_train_encoder(args: argparse.Namespace) -> int:
    from demo.devices import process_group, torchrun_device, torchrun_env
    from demo.networks.encoder import EncoderConfig
    from demo.tasks import train_encoder as training
    from demo.weights.store import TINY_IDS

    training.check_options(
        steps=args.steps, batch_size=args.batch, lr=args.lr, views=args.views, truncation_range=args.trunc_range,
        pitch_jitter_deg=args.pitch_jitter, checkpoint_every=args.checkpoint_every,
    )
    out = args.out
    if out is None:
        known = {entry.id for entry in registry.list_entries()}
        if args.model in known:
            out = registry.converted_dir(args.model)
        elif Path(args.model).is_dir():
            out = Path(args.model)
        else:
            raise InputError("--out is needed for this model (only registry ids and converted folders have a default).")
    torchrun = torchrun_env()
    world = torchrun[1] if torchrun is not None else 1
    if torchrun is not None:  # one GPU per local rank
        args.device = torchrun_device(args.device, torchrun[2])
    model = _load_model(args)
    try:
        if args.model in TINY_IDS:
            config = EncoderConfig.tiny(args.kind, num_ws=model.num_ws, w_dim=model.w_dim, image_size=args.image_size or model.img_resolution)
        else:
            config = EncoderConfig.for_generator(model.num_ws, model.w_dim, args.kind, image_size=args.image_size or 256)
    except ValueError as error:
        raise InputError(f"--image-size {args.image_size} does not suit the {args.kind} encoder ({error}).") from None
    with process_group(world, model.device), _progress_bar() as progress:
        result = training.train_encoder(
            model, config, steps=args.steps, batch_size=args.batch, lr=args.lr, warmup_steps=args.warmup,
            views=args.views, pitch_jitter_deg=args.pitch_jitter, truncation_range=args.trunc_range,
            image_weight=args.image_weight, out_dir=out, resume=not args.no_resume,
            checkpoint_every=args.checkpoint_every, seed=args.seed,
            progress=progress if torchrun is None or torchrun[0] == 0 else None,  # one bar, rank 0's
        )
    if result.rank != 0:
        return 0
    done = result.step - result.start_step
    resumed = f" (resumed at step {result.start_step})" if result.start_step else ""
    last = f"; last loss {result.losses[-1]:.4f}" if result.losses else ""
    print(f"trained {done} steps to step {result.step}{resumed} in {result.seconds:.1f} s{last}; encoder in {result.checkpoint}")
    if args.eval > 0:
        evaluation = training.evaluate_encoder(result.encoder, model, num=args.eval, views=args.views,
                                               pitch_jitter_deg=args.pitch_jitter, truncation_range=args.trunc_range)
        print(
            f"held-out ({evaluation.num}): latent L1 {evaluation.latent_l1:.4f} (w_avg {evaluation.latent_l1_w_avg:.4f}), "
            f"PSNR {evaluation.psnr:.2f} dB (w_avg {evaluation.psnr_w_avg:.2f})"
            + (f", yaw error {evaluation.yaw_error_deg:.1f} deg (constant {evaluation.yaw_error_constant_deg:.1f})"
               if evaluation.yaw_error_deg is not None else "")
        )
    return 0


# --- registration ---------------------------------------------------------------------------------

COMMANDS: tuple[Command, ...] = (
    Command(
        "video",
        "rotation videos of seeds or latents",
        _add_video,
        _cmd_video,
        "Render each identity along a camera path (the official orbit, a yaw sweep, a 360 turn or keyframes) to an "
        "H.264 mp4, in image, raw image, depth or image|depth mode. The tri-planes are computed once per identity.",
    ),
    Command(
        "multiview",
        "fixed multi-view image sets (yaw x pitch) per identity",
        _add_multiview,
        _cmd_multiview,
        "One PNG per (identity, view), named with its angles, plus a JSON of every view's angles and 25-number camera. "
        "Identities from --seeds, --z, --ws files or a folder of ws files (--inputs).",
    ),
    Command(
        "interpolate",
        "morph between seeds or latents",
        _add_interpolate,
        _cmd_interpolate,
        "Interpolate in W between two or more identities (linear, spherical, or gen_videos' looping cubic), with a "
        "fixed or moving camera; writes an mp4, a strip of frames and the ws path.",
    ),
    Command(
        "edit",
        "semantic edits of faces along directions found in the checkpoint (SeFa, GANSpace) or from a file",
        _add_edit,
        _cmd_edit,
        "Edit seeds, ws files or faces (photo faces keep their tuned weights) along unsupervised directions: SeFa "
        "(closed-form factorisation of the style layers) or GANSpace (PCA of W), cached per checkpoint; or a direction "
        ".npy of your own. Writes per face and direction a strip over --alphas, the ws, a JSON, and optional video "
        "and face files.",
    ),
    Command(
        "generate",
        "seeds or latents -> images, depth, alpha, latents, cameras, meshes",
        _add_generate,
        _cmd_generate,
        "Generate faces like gen_samples.py: per seed an image, 16-bit depth and preview, alpha, z/ws/camera .npy, "
        "and with --shapes coloured meshes (.glb/.ply/.obj) and .mrc density volumes (world units, or the official one).",
    ),
    Command(
        "dataset",
        "synthetic face dataset: images, depth, masks, meshes, latents, cameras, annotations",
        _add_dataset,
        _cmd_dataset,
        "Fill a folder with NUM samples (sample i = seed start-seed + i) in a documented layout, with per-sample JSON "
        "annotations, an index.jsonl and EG3D training labels (images/dataset.json). Rerun to resume; shard with "
        "--shard R/W or torchrun. Layout and units: see demo/tasks/dataset.py.",
    ),
    Command(
        "invert",
        "photo -> face file (latents, tuned weights, camera), its render, optional mesh/video",
        _add_invert,
        _cmd_invert,
        "Align each photo (face detection, FFHQ crop, head pose -> camera) or take --aligned crops, start from the "
        "encoder's prediction (or w_avg), project into W/W+ and tune the generator (PTI). Writes per photo "
        "<stem>_3d.face.safetensors (the face: video/multiview/interpolate --faces take it), <stem>_3d_aligned.png, "
        "the render from the photo's camera as generate writes it, and optional .glb / _orbit.mp4, plus invert.json.",
    ),
    Command(
        "train-encoder",
        "train the image -> latent + camera encoder on renders made on the fly",
        _add_train_encoder,
        _cmd_train_encoder,
        "Train an encoder (conv or ViT) on random identities and views rendered by the generator as it goes; "
        "checkpoints encoder.safetensors + encoder.json (+ optimizer state) in --out every N steps; rerun to resume; "
        "torchrun for several GPUs. See demo/tasks/train_encoder.py.",
    ),
    Command(
        "models",
        "list known checkpoints and whether they are here",
        _add_models,
        _cmd_models,
        "List the checkpoints in the registry with file name, size, licence and local state.",
    ),
    Command(
        "download",
        "fetch an official checkpoint and convert it",
        _add_download,
        _cmd_download,
        "Download an official checkpoint into checkpoints/original/ (resumable; tries each known source) "
        "and convert it into checkpoints/<ID>/. Offline, the error says where to put the file by hand.",
    ),
    Command(
        "convert",
        "convert an official .pkl into our safetensors folder",
        _add_convert,
        _cmd_convert,
        "Read an official EG3D snapshot without running any code from it and write config.json + "
        "generator.safetensors. Run once; the app and the other commands load only the converted folder.",
    ),
)

_EPILOG = f"""examples:
  {PROG} generate --model tiny --seeds 0-3 --outdir out/
  {PROG} generate --model eg3d-ffhqrebalanced512-128 --seeds 42 --trunc 0.7 --shapes --shape-format glb,mrc --outdir out/
  {PROG} models
  {PROG} download eg3d-ffhqrebalanced512-128
  {PROG} convert ~/Downloads/ffhq512-128.pkl
  {PROG} convert eg3d-ffhq512-128 --out /tmp/ffhq

Checkpoints live in $DEMO_CHECKPOINTS_DIR if set, else in checkpoints/ beside the demo package.
"""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argparse parser with one subparser per row of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="3D Face Studio: EG3D generators from official checkpoints, run by our own code.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.description or command.help)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def _configure_logging(verbosity: int) -> None:
    # Only our own loggers: third-party libraries (huggingface_hub) keep their own handlers, and the
    # root logger stays untouched for whoever embeds main().
    logger = logging.getLogger("demo")
    logger.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    if not any(getattr(handler, "_demo_cli", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler._demo_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run one command; return the exit status (0 ok, 2 for a user-fixable error or bad usage)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: argparse has already printed
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    _configure_logging(args.verbose)
    try:
        return args.run(args)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def console_main() -> None:
    """The ``face3d`` console script (``pip install -e .``): ``face3d generate ...`` = ``python -m demo generate ...``."""
    raise SystemExit(main(prog="face3d"))
