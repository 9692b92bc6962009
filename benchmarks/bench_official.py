"""Our generator side by side with the official NVlabs EG3D code, in one process, on the same weights.

The official code is not part of this project (its licence is non-commercial): point
``EG3D_OFFICIAL`` (or ``--official``) at a checkout of github.com/NVlabs/eg3d and this script
imports ``training.triplane.TriPlaneGenerator`` from its ``eg3d/`` folder, builds the full-size
FFHQ-512 generator, copies our random weights into it (the tensor names are the official ones) and
times ``G(z, c)`` of both, interleaved frame by frame, batch 1, ``noise_mode='const'``.

Rows: the official float32 frame, ours in float32 and ours at each reduced precision this device
supports (``--precision``), each with its speed-up over the official frame and its difference from
the official image: max abs in [-1, 1] units, and in 8-bit levels (the official uint8 conversion)
as max and 99.9th percentile. The official frame is timed twice, interleaved with ours: in a
child process as the official scripts run it (glibc's default allocator), and in this process with
the allocator setting ``load_generator`` makes for ours on a CPU (``demo.devices.keep_freed_cpu_memory``,
which speeds the official code up too); each speed-up is printed against both. Only one process
computes at a time.

Usage: ``EG3D_OFFICIAL=~/eg3d python benchmarks/bench_official.py [--repeats 3] [--precision fp32,bf16]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
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


OFFICIAL = "official fp32"
OFFICIAL_KEPT = "official fp32, freed memory kept"


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """The official conversion: (x * 127.5 + 128).clamp(0, 255) as uint8."""
    return (image.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy().astype(np.int16)


def inputs(model: torch.nn.Module, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(1, model.config.mapping.z_dim, generator=generator).to(device)
    return z, default_conditioning(model).to_label().to(device)


def official_frame(official: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # the renderer's random draws, the same for both
    return official(z, c, noise_mode="const")["image"]


def serve_official(args: argparse.Namespace) -> None:
    """The child process: the official generator as the official scripts run it (glibc's default
    allocator), one frame per line read from stdin; answers with the seconds, and writes the first
    image to ``--image``."""
    device = pick_device(args.device)
    ours = full_size_model(device, with_surface=False, keep_memory=False)
    official = official_generator(Path(args.official).expanduser(), ours)
    z, c = inputs(ours, args.seed, device)
    del ours
    with torch.no_grad():
        np.save(args.image, official_frame(official, z, c, args.seed).float().cpu().numpy())  # also the warm-up
        print("ready", flush=True)
        for _ in sys.stdin:
            sync(device)
            start = time.perf_counter()
            official_frame(official, z, c, args.seed)
            sync(device)
            print(time.perf_counter() - start, flush=True)


class OfficialProcess:
    """:func:`serve_official` in a child process, driven frame by frame (only one process runs at a time)."""

    def __init__(self, args: argparse.Namespace, image: Path) -> None:
        command = [sys.executable, __file__, "--serve-official", "--image", str(image), "--official", args.official,
                   "--device", args.device, "--seed", str(args.seed)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("the official child process failed (see its error above)")
        self.image = torch.from_numpy(np.load(image))

    def frame(self) -> float:
        self.process.stdin.write("frame\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", default=os.environ.get("EG3D_OFFICIAL"), help="checkout of NVlabs/eg3d")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default=None, help=f"comma list of {', '.join(PRECISIONS)} (default: all this device supports)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve-official", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.official:
        raise SystemExit("set EG3D_OFFICIAL (or --official) to a checkout of github.com/NVlabs/eg3d")
    if args.serve_official:
        serve_official(args)
        return
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        child = OfficialProcess(args, Path(folder) / "official.npy")
    try:
        ours = full_size_model(device, with_surface=False)  # keeps freed memory on a CPU, as load_generator does
        official = official_generator(Path(args.official).expanduser(), ours)
        precisions = args.precision.split(",") if args.precision else supported_precisions(device)
        z, c = inputs(ours, args.seed, device)

        def make_ours(precision: str):
            def run() -> torch.Tensor:
                ours.set_precision(precision)
                torch.manual_seed(args.seed)
                return ours(z, c)["image"]

            return run

        runs = {OFFICIAL_KEPT: lambda: official_frame(official, z, c, args.seed), **{f"ours {p}": make_ours(p) for p in precisions}}
        times: dict[str, list[float]] = {OFFICIAL: [], **{name: [] for name in runs}}
        images: dict[str, torch.Tensor] = {OFFICIAL: child.image}
        with torch.no_grad():
            for name, fn in runs.items():  # warm-up
                images[name] = fn().float().cpu()
            for _ in range(args.repeats):
                times[OFFICIAL].append(child.frame())
                for name, fn in runs.items():
                    sync(device)
                    start = time.perf_counter()
                    fn()
                    sync(device)
                    times[name].append(time.perf_counter() - start)
    finally:
        child.close()

    reference = images[OFFICIAL]
    ref8 = to_uint8(reference)
    bases = {name: statistics.median(times[name]) for name in (OFFICIAL, OFFICIAL_KEPT)}
    print(f"device: {device_label(device)}; torch {torch.__version__}; full-size FFHQ-512, batch 1, median of {args.repeats} interleaved frames")
    print(f"{OFFICIAL}: the official code in its own process, glibc's default allocator (as its scripts run);")
    print(f"{OFFICIAL_KEPT}: the official code in this process, with the allocator setting ours makes (keep_freed_cpu_memory)")
    print()
    print("| run | s / frame | " + " | ".join(f"speed-up vs {name}" for name in bases) + " | max abs diff | 8-bit max | 8-bit p99.9 |")
    print("|---|---:|" + "---:|" * len(bases) + "---:|---:|---:|")
    for name in times:
        seconds = statistics.median(times[name])
        diff = float((images[name] - reference).abs().max())
        levels = np.abs(to_uint8(images[name]) - ref8)
        speedups = " | ".join(f"{base / seconds:.2f}x" for base in bases.values())
        print(
            f"| {name} | {seconds:.3f} | {speedups} | {diff:.1e} | {int(levels.max())} | "
            f"{float(np.percentile(levels, 99.9)):.1f} |"
        )
    print()
    print(f"convolution dtypes: {', '.join(f'{p}={compute_dtype(p)}' for p in precisions)}")


if __name__ == "__main__":
    main()
