"""Speed of seed -> image and seed -> coloured mesh on the current device, full-size FFHQ config.

Random weights are fine: speed does not depend on the values. The mesh comparison runs both
paths in one process on the same identity:

- ours: mapping + backbone once, the separable density grid (``demo.render.grid.density_grid``),
  marching cubes, vertex colours;
- per-chunk: what ``gen_samples.py`` does -- for every chunk of 1,000,000 grid points run mapping
  and backbone again and query the decoder point by point -- followed by the same marching cubes
  and colours.

Usage: ``python benchmarks/bench_generate.py [--device cuda] [--resolutions 128,256] [--repeats 3]``.
Report ratios from one run; absolute times only from a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_label, full_size_model, mesh_per_chunk, plain_path, timed  # noqa: E402

from demo.devices import pick_device  # noqa: E402
from demo.tasks import mesh as mesh_task  # noqa: E402
from demo.tasks.sample import default_conditioning, view_camera  # noqa: E402

def _mesh_ours(model, z, cond, resolution):
    ws = model.mapping(z, cond, truncation_psi=0.7)
    return mesh_task.extract_mesh(model, ws, resolution=resolution, keep_largest=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resolutions", default="128,256")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    device = pick_device(args.device)
    model = full_size_model(device)
    z = torch.from_numpy(np.random.RandomState(0).randn(1, model.z_dim)).to(device)
    cond = default_conditioning(model)
    camera = view_camera(model, yaw_deg=20.0)
    rows = []
    with torch.inference_mode():
        seconds = timed(lambda: model(z, camera, truncation_psi=0.7, rng=torch.Generator().manual_seed(0)), device, args.repeats)
        rows.append(("image 512² (mapping + synthesis), batch 1", seconds, None, None))
        for resolution in (int(r) for r in args.resolutions.split(",")):
            ours = timed(lambda: _mesh_ours(model, z, cond, resolution), device, args.repeats)
            with plain_path(model):
                chunked = timed(lambda: mesh_per_chunk(model, z, cond, resolution), device, args.repeats)
            rows.append((f"coloured mesh {resolution}³", ours, chunked, chunked / ours))
    name = device_label(device)
    print(f"device: {name}; torch {torch.__version__}; full-size FFHQ-512 config, random weights; median of {args.repeats}")
    print(f"{'task':<46} {'ours s':>9} {'per-chunk s':>12} {'speed-up':>9}")
    for task, ours, chunked, ratio in rows:
        print(f"{task:<46} {ours:9.2f} {'' if chunked is None else f'{chunked:12.2f}':>12} {'' if ratio is None else f'{ratio:8.1f}x':>9}")


if __name__ == "__main__":
    main()
