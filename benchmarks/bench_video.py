"""Frames per second of an orbit video of one identity, with and without backbone caching.

Full-size FFHQ-512 config with random weights (speed does not depend on the values). "cached"
computes the tri-planes once and renders every frame from them (``demo.tasks.video.render_frames``);
"per frame" runs mapping + backbone for every frame, as ``gen_videos.py`` does. Both render the same
official orbit in batches of ``--batch`` frames in one process.

Usage: ``python benchmarks/bench_video.py [--device cuda] [--frames 120] [--batch 4]``.
Report ratios from one run; absolute times only from a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_label, full_size_model, sync  # noqa: E402

from demo.devices import pick_device  # noqa: E402
from demo.tasks import video  # noqa: E402
from demo.tasks.sample import default_conditioning  # noqa: E402


def _per_frame(model, z, cond, cameras, batch):
    labels = cameras.to_label().to(model.device)
    for start in range(0, len(labels), batch):
        n = min(batch, len(labels) - start)
        ws = model.mapping(z.expand(n, -1), cond, truncation_psi=0.7)  # gen_videos re-runs the backbone per frame
        model.synthesis(ws, labels[start : start + n], rng=[torch.Generator().manual_seed(0) for _ in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    device = pick_device(args.device)
    model = full_size_model(device, with_surface=False)
    z = torch.from_numpy(np.random.RandomState(0).randn(1, model.z_dim)).to(device)
    cond = default_conditioning(model)
    cameras = video.trajectory_cameras(model, video.official_orbit(args.frames))
    results = {}
    with torch.inference_mode():
        ws = model.mapping(z, cond, truncation_psi=0.7)
        video.render_frames(model, ws, cameras[:1])  # warm-up
        for name, run in (
            ("cached planes", lambda: video.render_frames(model, ws, cameras, batch_size=args.batch)),
            ("per frame (gen_videos)", lambda: _per_frame(model, z, cond, cameras, args.batch)),
        ):
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            results[name] = args.frames / (time.perf_counter() - start)
    label = device_label(device)
    print(f"device: {label}; torch {torch.__version__}; full-size FFHQ-512, {args.frames}-frame orbit, batch {args.batch}")
    print(f"{'path':<26} {'frames/s':>9}")
    for name, fps in results.items():
        print(f"{name:<26} {fps:9.3f}")
    print(f"speed-up from caching: {results['cached planes'] / results['per frame (gen_videos)']:.2f}x")


if __name__ == "__main__":
    main()
