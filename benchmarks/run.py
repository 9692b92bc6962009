"""One table of the library's speed on the current device: the plain path vs the fast path.

The plain path (``fast=False``) keeps the official code's order of operations -- grouped modulated
convolutions, ``grid_sample`` on channel-first planes, every ray at once, FIR filters on padded
copies -- so it stands in for the official code, which cannot run here. The fast path is what the
library, the CLI and the app use. Both run in one process, timed alternately, on a full-size
FFHQ-512 generator with random weights (speed does not depend on the values), in float32.

Rows:
- frame latency: ``G(z, c)`` (mapping + backbone + render + super-resolution), batch 1;
- throughput: the same with a batch (``--batch``), frames per second;
- coloured mesh N³: plain = ``gen_samples.py``'s way (mapping and backbone again for every chunk of
  1,000,000 points, decoder point by point); fast = planes once, the separable density grid; both
  followed by the same marching cubes and vertex colours;
- orbit video: plain = ``gen_videos.py``'s way (backbone per frame); fast = planes once per identity;
- PTI step: forward + backward + Adam step over all generator weights at neural resolution 128;
- encoder: the conv image -> w encoder, one 512² crop (one path only);
- dataset: ``make_dataset`` with image, depth and mask, samples per second.

"max |fast - plain|" is measured on the outputs of that row (image values in [-1, 1], raw sigma for
the mesh, 8-bit levels for the dataset). Report ratios from one run; absolute times only from a GPU.

Usage: ``python benchmarks/run.py [--device cuda] [--repeats 3] [--batch 4] [--video-frames 120]
[--mesh-res 256] [--skip mesh,video,...]``. On CPU the video defaults to 8 frames.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_label, full_size_model, inversion_step, mesh_per_chunk, plain_path, sync  # noqa: E402

from demo.devices import pick_device  # noqa: E402
from demo.networks.encoder import EncoderConfig, ImageEncoder  # noqa: E402
from demo.tasks import mesh as mesh_task  # noqa: E402
from demo.tasks import video  # noqa: E402
from demo.tasks.dataset import make_dataset  # noqa: E402
from demo.tasks.sample import default_conditioning, view_camera  # noqa: E402

ROWS = ("frame", "batch", "mesh", "video", "pti", "encoder", "dataset")


def _clock(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def _alternate(plain, fast, device: torch.device, repeats: int, warmup: int) -> tuple[float, float, object, object]:
    """Median seconds of ``plain`` and ``fast``, run alternately, and the last output of each."""
    for _ in range(warmup):
        plain(), fast()
    times: dict[str, list[float]] = {"plain": [], "fast": []}
    outputs = {}
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("fast", fast)):
            seconds, outputs[name] = _clock(fn, device)
            times[name].append(seconds)
    return statistics.median(times["plain"]), statistics.median(times["fast"]), outputs["plain"], outputs["fast"]


def _max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = torch.as_tensor(np.asarray(a.detach().cpu()) if isinstance(a, torch.Tensor) else a).double()
    b = torch.as_tensor(np.asarray(b.detach().cpu()) if isinstance(b, torch.Tensor) else b).double()
    return float((a - b).abs().max())


def _generators(device: torch.device, count: int) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(item) for item in range(count)]


def _mesh_fast(model, z, cond, resolution):
    ws = model.mapping(z, cond, truncation_psi=0.7)
    planes = model.planes(ws)
    volume = mesh_task.density_volume(model, planes=planes, resolution=resolution)
    vertices, _, _ = mesh_task.mesh_from_volume(volume, level=mesh_task.OFFICIAL_LEVEL, box_warp=model.config.render.box_warp)
    mesh_task.vertex_colors(model, planes, vertices)
    return volume


def _video_per_frame(model, z, cond, labels, seed):
    first = None
    for index in range(len(labels)):
        ws = model.mapping(z, cond, truncation_psi=0.7)  # gen_videos.py runs the backbone for every frame
        out = model.synthesis(ws, labels[index : index + 1], rng=_generators(model.device, 1), per_sample_clamp=True)
        first = out["image"] if first is None else first
    return first


def _dataset(model, num, batch):
    with tempfile.TemporaryDirectory() as folder:
        make_dataset(model, folder, num=num, batch_size=batch, with_=("depth", "masks"), model_id="random-ffhq512")
        return np.asarray(Image.open(sorted(Path(folder).rglob("*.png"))[0]), dtype=np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the frame row (median)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--mesh-res", type=int, default=256)
    parser.add_argument("--video-frames", type=int, default=None, help="default 120 on CUDA, 8 on CPU")
    parser.add_argument("--dataset-num", type=int, default=4)
    parser.add_argument("--skip", default="", help=f"comma-separated rows to skip: {','.join(ROWS)}")
    args = parser.parse_args()
    skip = {name for name in args.skip.split(",") if name}
    if skip - set(ROWS):
        parser.error(f"--skip: unknown rows {sorted(skip - set(ROWS))}; choose from {','.join(ROWS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    frames = args.video_frames or (120 if device.type == "cuda" else 8)
    warmup = 1
    model = full_size_model(device)
    z = torch.from_numpy(np.random.RandomState(0).randn(args.batch, model.z_dim)).float().to(device)
    cond = default_conditioning(model)
    camera = view_camera(model, yaw_deg=20.0)
    label = camera.to_label().to(device)
    rows: list[tuple[str, str, float | None, float | None, float | None, str]] = []

    def add(what, unit, plain, fast, error, note=""):
        rows.append((what, unit, plain, fast, error, note))

    with torch.inference_mode():
        if "frame" not in skip:
            run = lambda fast: model(z[:1], label, truncation_psi=0.7, rng=_generators(device, 1), fast=fast)  # noqa: E731
            plain, fast, out_plain, out_fast = _alternate(lambda: run(False), lambda: run(True), device, args.repeats, warmup)
            add("frame 512², batch 1 (latency)", "s", plain, fast, _max_diff(out_plain["image"], out_fast["image"]), f"median of {args.repeats}")
        if "batch" not in skip:
            labels = label.expand(args.batch, -1)
            run = lambda fast: model(z, labels, truncation_psi=0.7, rng=_generators(device, args.batch), per_sample_clamp=True, fast=fast)  # noqa: E731
            plain, fast, out_plain, out_fast = _alternate(lambda: run(False), lambda: run(True), device, 1, 0)
            add(f"throughput, batch {args.batch}", "frames/s", args.batch / plain, args.batch / fast,
                _max_diff(out_plain["image"], out_fast["image"]))
        if "mesh" not in skip:
            with plain_path(model):
                seconds_plain, volume_plain = _clock(lambda: mesh_per_chunk(model, z[:1], cond, args.mesh_res), device)
            seconds_fast, volume_fast = _clock(lambda: _mesh_fast(model, z[:1], cond, args.mesh_res), device)
            add(f"coloured mesh {args.mesh_res}³", "s", seconds_plain, seconds_fast, _max_diff(volume_plain, volume_fast),
                "plain = per-chunk backbone (gen_samples)")
        if "video" not in skip:
            cameras = video.trajectory_cameras(model, video.official_orbit(frames))
            labels = cameras.to_label().to(device)
            ws = model.mapping(z[:1], cond, truncation_psi=0.7)
            with plain_path(model):
                seconds_plain, first_plain = _clock(lambda: _video_per_frame(model, z[:1], cond, labels, 0), device)
            seconds_fast, _ = _clock(lambda: video.render_frames(model, ws, cameras, batch_size=args.batch), device)
            first_fast = model.synthesis(ws, labels[:1], rng=_generators(device, 1), per_sample_clamp=True)["image"]
            add(f"orbit video, {frames} frames", "frames/s", frames / seconds_plain, frames / seconds_fast,
                _max_diff(first_plain, first_fast), "plain = backbone per frame (gen_videos)")
        if "encoder" not in skip:
            encoder = ImageEncoder(EncoderConfig.for_generator(model.num_ws, model.w_dim, "conv")).eval().to(device)
            crop = torch.rand(1, 3, 512, 512, device=device) * 2 - 1
            encoder(crop)
            seconds = statistics.median(_clock(lambda: encoder(crop), device)[0] for _ in range(3))
            add("encoder (conv), one 512² crop", "s", None, seconds, None, "one path")
        if "dataset" not in skip:
            with plain_path(model):
                seconds_plain, image_plain = _clock(lambda: _dataset(model, args.dataset_num, min(args.batch, args.dataset_num)), device)
            seconds_fast, image_fast = _clock(lambda: _dataset(model, args.dataset_num, min(args.batch, args.dataset_num)), device)
            add("dataset: image + depth + mask", "samples/s", args.dataset_num / seconds_plain, args.dataset_num / seconds_fast,
                _max_diff(image_plain, image_fast), "error in 8-bit levels")
    if "pti" not in skip:
        target = torch.rand(1, 3, 512, 512, device=device) * 2 - 1
        pivot = model.mapping(z[:1], cond, truncation_psi=0.7).detach()
        results = {}
        for fast in (False, True):
            tuned = copy.deepcopy(model).requires_grad_(True)
            optimizer = torch.optim.Adam(tuned.parameters(), lr=3e-4)

            def step(tuned=tuned, optimizer=optimizer, fast=fast):
                image = tuned.synthesis(pivot, label, rng=_generators(device, 1), fast=fast)["image"]
                return inversion_step(optimizer, image, target)

            results[fast] = _clock(step, device)
            del tuned, optimizer
        add("PTI step (forward + backward + Adam)", "s", results[False][0], results[True][0],
            _max_diff(results[False][1], results[True][1]), "first step, same weights")

    print(f"device: {device_label(device)}; torch {torch.__version__}; full-size FFHQ-512 config, random weights, float32")
    print("| what | unit | plain | fast | speed-up | max abs(fast - plain) | note |")
    print("|---|---|---:|---:|---:|---:|---|")
    for what, unit, plain, fast, error, note in rows:
        ratio = None if plain is None else (fast / plain if unit.endswith("/s") else plain / fast)
        cells = [
            what, unit, "" if plain is None else f"{plain:.3f}", f"{fast:.3f}",
            "" if ratio is None else f"{ratio:.2f}x", "" if error is None else f"{error:.1e}", note,
        ]
        print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
