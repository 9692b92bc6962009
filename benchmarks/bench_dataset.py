"""Dataset throughput (samples/s) on the current device, full-size FFHQ-512 config, with and without meshes.

Random weights are fine: speed does not depend on the values. The density head is shifted (as in
``bench_generate.py``) so the iso-surface exists and meshes are really extracted. Each row runs
``demo.tasks.dataset.make_dataset`` into a fresh temporary folder, so file writing (PNG, .npy,
JSON, index fsync) is included; the one-off weights hash of the settings is timed separately and
left out of the rate.

Usage: ``python benchmarks/bench_dataset.py [--device cuda] [--num 4] [--batch 2] [--mesh-res 128]``.
On a 2-core CPU use a few samples (each takes seconds); on a GPU use --num 64 --batch 8 or more.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_label, full_size_model  # noqa: E402

from demo.devices import pick_device  # noqa: E402
from demo.tasks.dataset import make_dataset
from demo.weights.store import model_fingerprint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num", type=int, default=4, help="samples per row (default 4)")
    parser.add_argument("--batch", type=int, default=2, help="samples per forward pass (default 2)")
    parser.add_argument("--mesh-res", type=int, default=128, help="mesh grid points per side (default 128)")
    args = parser.parse_args()
    device = pick_device(args.device)
    model = full_size_model(device)

    start = time.perf_counter()
    model_fingerprint(model)
    hash_seconds = time.perf_counter() - start
    rows = [
        ("image + depth + mask", ("depth", "masks")),
        (f"image + depth + mask + mesh {args.mesh_res}³ (.ply)", ("depth", "masks", "meshes")),
    ]
    results = []
    for name, with_ in rows:
        with tempfile.TemporaryDirectory() as folder:
            result = make_dataset(
                model, folder, num=args.num, batch_size=args.batch, with_=with_, mesh_resolution=args.mesh_res,
                model_id="random-ffhq512",
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
        seconds = result.seconds - hash_seconds
        results.append((name, result.written / seconds, seconds / result.written))

    device_name = device_label(device)
    print(
        f"device: {device_name}; torch {torch.__version__}; full-size FFHQ-512 config (512² images, 128² depth), "
        f"random weights; {args.num} samples per row, batch {args.batch}; weights hash {hash_seconds:.2f} s once, excluded"
    )
    print(f"{'dataset row':<44} {'samples/s':>10} {'s/sample':>9}")
    for name, rate, per_sample in results:
        print(f"{name:<44} {rate:10.3f} {per_sample:9.2f}")


if __name__ == "__main__":
    main()
