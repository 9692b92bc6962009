"""Shared set-up for the benchmark scripts: a full-size model with random weights, timing helpers."""

from __future__ import annotations

import functools
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.config import GeneratorConfig  # noqa: E402
from demo.devices import keep_freed_cpu_memory  # noqa: E402
from demo.networks.eg3d import TriplaneGenerator  # noqa: E402
from demo.render.grid import grid_points  # noqa: E402
from demo.tasks import mesh as mesh_task  # noqa: E402
from demo.tasks.losses import image_loss  # noqa: E402

#: gen_samples.py's points per G.sample call
CHUNK = 1_000_000


def full_size_model(device: torch.device, *, with_surface: bool = True, keep_memory: bool = True) -> TriplaneGenerator:
    """The full-size FFHQ-512 generator with seeded random weights (speed does not depend on them).

    ``with_surface`` shifts the density head so the field crosses the mesh iso-level (random
    weights give an empty or solid field otherwise). ``keep_memory``: on a CPU, set the allocator
    as ``load_generator`` does (``demo.devices.keep_freed_cpu_memory``).
    """
    if device.type == "cpu" and keep_memory:
        keep_freed_cpu_memory()  # as load_generator does
    torch.manual_seed(0)
    model = TriplaneGenerator(GeneratorConfig.ffhq512()).eval().requires_grad_(False).to(device)
    if with_surface:
        with torch.no_grad():
            model.decoder.net[2].weight[0] *= 10
            model.decoder.net[2].bias[0] = 10.0
    return model


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextmanager
def plain_path(model: TriplaneGenerator) -> Iterator[TriplaneGenerator]:
    """Make every call of the model's ``synthesis`` and ``planes`` take the plain path (``fast=False``).

    Tasks have no such option (the fast path is the library's only path for users); benchmarks
    patch the instance so a task runs exactly as it would on the official order of operations.
    """
    model.synthesis = functools.partial(type(model).synthesis, model, fast=False)
    model.planes = functools.partial(type(model).planes, model, fast=False)
    try:
        yield model
    finally:
        del model.synthesis, model.planes


def mesh_per_chunk(model: TriplaneGenerator, z: torch.Tensor, cond: torch.Tensor, resolution: int) -> torch.Tensor:
    """A coloured mesh the way ``gen_samples.py`` makes one; returns the density volume (N, N, N).

    For every chunk of 1,000,000 grid points, mapping and backbone run again and the decoder is
    queried point by point; then marching cubes and vertex colours as the library does them.
    """
    points = grid_points(resolution, model.config.render.box_warp, device=model.device)
    sigma = torch.empty(points.shape[0])
    for start in range(0, points.shape[0], CHUNK):
        ws = model.mapping(z, cond, truncation_psi=0.7)  # recomputed per chunk, as gen_samples.py
        sigma[start : start + CHUNK] = model.sample_mixed(points[None, start : start + CHUNK], None, ws)["sigma"][0, :, 0].cpu()
    volume = sigma.reshape(resolution, resolution, resolution)
    vertices, _, _ = mesh_task.mesh_from_volume(volume, level=mesh_task.OFFICIAL_LEVEL, box_warp=model.config.render.box_warp)
    mesh_task.vertex_colors(model, model.planes(model.mapping(z, cond, truncation_psi=0.7)), vertices)
    return volume


def inversion_step(optimizer: torch.optim.Optimizer, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One projection/PTI step on a rendered ``image``: image loss, backward, Adam; returns the image, detached."""
    loss = image_loss(image, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return image.detach()
