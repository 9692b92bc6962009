"""Our generator side by side with the official NVlabs EG3D code, in one process, on the same weights.

The official code is not part of this project (its licence is non-commercial): point
``EG3D_OFFICIAL`` (or ``--official``) at a checkout of github.com/NVlabs/eg3d and this script
imports ``training.triplane.TriPlaneGenerator`` from its ``eg3d/`` folder, builds the full-size
FFHQ-512 generator, copies our random weights into it (the tensor names are the official ones) and
times ``G(z, c)`` of both, interleaved frame by frame, batch 1, ``noise_mode='const'``.

Rows: the official float32 frame, ours in float32 and ours at each reduced precision this device
supports (``--precision``), each with its speed-up over the official frame and its difference from
the official image: max abs in [-1, 1] units, and in 8-bit levels (the official uint8 conversion)
as max and 99.9th percentile.

Usage: ``EG3D_OFFICIAL=~/eg3d python benchmarks/bench_official.py [--repeats 3] [--precision fp32,bf16]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_label, full_size_model, sync  # noqa: E402

from demo.devices import pick_device  # noqa: E402
from demo.precision import PRECISIONS, compute_dtype, supported_precisions  # noqa: E402
from demo.tasks.sample import default_conditioning  # noqa: E402
from demo.weights.convert import official_kwargs  # noqa: E402


def official_generator(checkout: Path, ours: torch.nn.Module) -> torch.nn.Module:
    """The official ``TriPlaneGenerator`` of ``ours``'s config, holding ``ours``'s weights."""
    source = checkout / "eg3d" if (checkout / "eg3d").is_dir() else checkout
    if not (source / "training" / "triplane.py").is_file():
        raise SystemExit(f"EG3D_OFFICIAL: no training/triplane.py under {checkout}; point it at a checkout of NVlabs/eg3d")
    sys.path.insert(0, str(source))
    from training.triplane import TriPlaneGenerator  # the official class, imported from the checkout

    init_kwargs, attributes = official_kwargs(ours.config)
    official = TriPlaneGenerator(**init_kwargs).eval().requires_grad_(False)
    state = ours.state_dict()
    extra = set(state) - set(official.state_dict())  # our own buffers (e.g. the label std), none of theirs missing
    official.load_state_dict({k: v for k, v in state.items() if k not in extra}, strict=True)
    official.neural_rendering_resolution = attributes["neural_rendering_resolution"]
    official.rendering_kwargs = attributes["rendering_kwargs"]
    return official.to(ours.device)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """The official conversion: (x * 127.5 + 128).clamp(0, 255) as uint8."""
    return (image.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy().astype(np.int16)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", default=os.environ.get("EG3D_OFFICIAL"), help="checkout of NVlabs/eg3d")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default=None, help=f"comma list of {', '.join(PRECISIONS)} (default: all this device supports)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.official:
        raise SystemExit("set EG3D_OFFICIAL (or --official) to a checkout of github.com/NVlabs/eg3d")
    device = pick_device(args.device)
    ours = full_size_model(device, with_surface=False)
    official = official_generator(Path(args.official).expanduser(), ours)
    precisions = args.precision.split(",") if args.precision else supported_precisions(device)

    generator = torch.Generator().manual_seed(args.seed)
    z = torch.randn(1, ours.config.mapping.z_dim, generator=generator).to(device)
    c = default_conditioning(ours).to_label().to(device)

    def run_official() -> torch.Tensor:
        torch.manual_seed(args.seed)  # the renderer's random draws, the same for both
        return official(z, c, noise_mode="const")["image"]

    def make_ours(precision: str):
        def run() -> torch.Tensor:
            ours.set_precision(precision)
            torch.manual_seed(args.seed)
            return ours(z, c)["image"]

        return run

    runs = {"official fp32": run_official, **{f"ours {p}": make_ours(p) for p in precisions}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    images: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, fn in runs.items():  # warm-up
            images[name] = fn().float()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - start)

    reference = images["official fp32"]
    ref8 = to_uint8(reference)
    base = statistics.median(times["official fp32"])
    print(f"device: {device_label(device)}; torch {torch.__version__}; full-size FFHQ-512, batch 1, median of {args.repeats} interleaved frames")
    print()
    print("| run | s / frame | speed-up vs official fp32 | max abs diff | 8-bit max | 8-bit p99.9 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in runs:
        seconds = statistics.median(times[name])
        diff = float((images[name] - reference).abs().max())
        levels = np.abs(to_uint8(images[name]) - ref8)
        print(
            f"| {name} | {seconds:.3f} | {base / seconds:.2f}x | {diff:.1e} | {int(levels.max())} | "
            f"{float(np.percentile(levels, 99.9)):.1f} |"
        )
    print()
    print(f"convolution dtypes: {', '.join(f'{p}={compute_dtype(p)}' for p in precisions)}")


if __name__ == "__main__":
    main()
