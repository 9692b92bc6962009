"""Speed of inversion on the current device, full-size FFHQ-512 config (random weights).

Measures, each as the median of ``--repeats`` timed runs after ``--warmup`` untimed ones:

- projection step: render (512², neural rendering 128 unless ``--resolution``), MSE + MS-SSIM loss,
  backward into ws only, Adam step -- stage 1 of ``demo.tasks.invert.invert``;
- PTI step: the same with gradients for every generator parameter and Adam over all of them --
  stage 2;
- encoder latency: one crop through the default conv and ViT encoders (256² input), batch 1, in
  inference mode (and batch 8 with ``--batch8``).

It then prints what the presets would take: ``w_steps * projection + pti_steps * PTI`` plus the fixed
costs measured once (w_avg from 10k z, the three PSNR renders, the weight fingerprint).

Usage: ``python benchmarks/bench_invert.py [--device cuda] [--repeats 3] [--resolution 128]``.

No GPU was available when this was written. CPU run (2-core AMD EPYC, Zen 4, torch 2.13,
``--warmup 1 --repeats 2``): render 1.65 s, projection step 5.0 s (raw 2.8 s), PTI step 8.4 s; bf16:
render 1.28 s, projection 3.9 s (raw 2.5 s), PTI 7.8 s; encoders (512² crop, batch 1) 188 ms conv /
105 ms ViT. So a projection step costs about three renders and a tuning step five (the first CPU
runs, before gradients through a frozen generator skipped the weight gradients, had 26 s per step).
The ``fast`` preset (100 + 100 steps) is sized from those ratios: EG3D's plain-PyTorch forward pass
runs at 33-40 ms on an RTX 3090 (25-30 per second, ``../shared/docs/field.md``), giving ~0.1 s and
~0.17 s per step and ~27 s for 200 steps, which leaves a 60 s ZeroGPU slot (an H200 slice, not
slower) room for the model transfer, the encoder and a preview render. Run this script on the GPU to
replace the estimate.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_label, full_size_model, inversion_step, sync, timed  # noqa: E402

from demo.devices import pick_device  # noqa: E402
from demo.precision import supported_precisions  # noqa: E402
from demo.networks.encoder import EncoderConfig, ImageEncoder  # noqa: E402
from demo.weights.store import model_fingerprint  # noqa: E402
from demo.tasks.invert import PRESETS  # noqa: E402
from demo.tasks.sample import estimate_w_avg  # noqa: E402
from demo.tasks.sample import view_camera  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1 on CUDA, 0 on CPU)")
    parser.add_argument("--resolution", type=int, default=None, help="neural rendering resolution while optimising (default 128)")
    parser.add_argument("--batch8", action="store_true", help="also time the encoders on a batch of 8")
    parser.add_argument("--precision", default=None, help="comma list of fp32, bf16, fp16 (default: all this device runs natively)")
    parser.add_argument("--skip-pti", action="store_true", help="time only projection and the encoders")
    args = parser.parse_args()
    device = pick_device(args.device)
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cuda" else 0)
    model = full_size_model(device)
    label = view_camera(model, yaw_deg=15.0).to_label().to(device)
    target = torch.rand(1, 3, 512, 512, device=device) * 2 - 1
    raw_target = torch.nn.functional.interpolate(target, size=args.resolution or model.neural_rendering_resolution, mode="area")
    rng = torch.Generator(device=device).manual_seed(0)
    rows: list[tuple[str, float, str]] = []

    start = time.perf_counter()
    w_avg, _ = estimate_w_avg(model)
    sync(device)
    fixed = time.perf_counter() - start
    start = time.perf_counter()
    model_fingerprint(model)
    fixed_fingerprint = time.perf_counter() - start
    ws_start = w_avg.to(device).expand(1, model.num_ws, -1)

    precisions = args.precision.split(",") if args.precision else supported_precisions(device)
    timings: dict[str, dict[str, float]] = {}
    for precision in precisions:
        model.set_precision(precision)
        times = timings[precision] = {}
        with torch.inference_mode():
            times["render"] = timed(lambda: model.synthesis(ws_start, label, rng=rng), device, args.repeats, warmup)
        rows.append((f"render 512² (inference), {precision}", times["render"], f"{1 / times['render']:.2f} /s"))

        w_opt = ws_start[:, :1].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([w_opt], lr=0.01)

        def projection_step(raw: bool = False) -> None:
            ws = w_opt.expand(-1, model.num_ws, -1)
            if raw:
                image = model.synthesis(ws, label, args.resolution, rng=rng, superresolution=False)["image_raw"]
                inversion_step(optimizer, image, raw_target)
            else:
                inversion_step(optimizer, model.synthesis(ws, label, args.resolution, rng=rng)["image"], target)

        times["projection"] = timed(projection_step, device, args.repeats, warmup)
        rows.append((f"projection step (W), {precision}", times["projection"], f"{1 / times['projection']:.2f} steps/s"))
        times["raw projection"] = timed(lambda: projection_step(raw=True), device, args.repeats, warmup)
        rows.append((f"raw projection step (W, no SR), {precision}", times["raw projection"], f"{1 / times['raw projection']:.2f} steps/s"))

        if not args.skip_pti:
            tuned = copy.deepcopy(model).requires_grad_(True)
            pti_optimizer = torch.optim.Adam(tuned.parameters(), lr=3e-4)
            pivot = ws_start.detach()

            def pti_step() -> None:
                inversion_step(pti_optimizer, tuned.synthesis(pivot, label, args.resolution, rng=rng)["image"], target)

            times["pti"] = timed(pti_step, device, args.repeats, warmup)
            rows.append((f"PTI step (all generator weights), {precision}", times["pti"], f"{1 / times['pti']:.2f} steps/s"))
            del tuned, pti_optimizer
    model.set_precision("fp32")

    for kind in ("conv", "vit"):
        encoder = ImageEncoder(EncoderConfig.for_generator(model.num_ws, model.w_dim, kind)).eval().to(device)
        params = sum(p.numel() for p in encoder.parameters()) / 1e6
        for batch in (1, 8) if args.batch8 else (1,):
            crops = torch.rand(batch, 3, 512, 512, device=device) * 2 - 1
            with torch.inference_mode():
                latency = timed(lambda e=encoder, c=crops: e(c), device, max(args.repeats, 3), max(warmup, 1))
            rows.append((f"encoder {kind} ({params:.1f} M params), batch {batch}", latency, f"{1000 * latency:.1f} ms"))

    name = device_label(device)
    resolution = args.resolution or model.neural_rendering_resolution
    print(f"device: {name}; torch {torch.__version__}; full-size FFHQ-512 config, random weights; "
          f"neural rendering {resolution} while optimising; median of {args.repeats} after {warmup} warm-up")
    print(f"{'what':<48} {'seconds':>10} {'rate':>16}")
    for what, seconds, rate in rows:
        print(f"{what:<48} {seconds:10.3f} {rate:>16}")
    first = timings[precisions[0]]
    print(f"fixed costs: w_avg from 10k z {fixed:.2f} s, weight fingerprint {fixed_fingerprint:.2f} s, "
          f"3 PSNR renders {3 * first['render']:.2f} s ({precisions[0]})")
    if not args.skip_pti:
        print()
        print("| preset | steps (projection + PTI) | " + " | ".join(
            f"{p}{', raw projection' if raw else ''}" for p in precisions for raw in (False, True)) + " |")
        print("|---|---|" + "---:|" * (2 * len(precisions)))
        for preset, settings in PRESETS.items():
            cells = []
            for precision in precisions:
                times = timings[precision]
                for raw in (False, True):
                    step = times["raw projection" if raw else "projection"]
                    total = settings.w_steps * step + settings.pti_steps * times["pti"] + fixed + fixed_fingerprint + 3 * times["render"]
                    cells.append(f"{total / 60:.1f} min")
            print(f"| {preset} | {settings.w_steps} + {settings.pti_steps} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
