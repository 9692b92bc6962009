"""Our checkpoint format and ``load_generator``.

A converted checkpoint is a folder (diffusers-style):

    checkpoints/<id>/
      config.json              GeneratorConfig as JSON, plus "family" and "format_version"
      generator.safetensors    the state dict (official tensor names, float32)
      provenance.json          source file name, its sha256, converter version

Official pickles are read only through the restricted unpickler in
:mod:`demo.weights.nvlabs_pickle`; at run time only safetensors and JSON are loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from demo.config import GeneratorConfig
from demo.devices import keep_freed_cpu_memory
from demo.errors import CheckpointError
from demo.networks.eg3d import TriplaneGenerator
from demo.networks.panohead import build_generator
from demo.precision import resolve_precision
from demo.progress import ProgressFn, report
from demo.weights import convert, nvlabs_pickle

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONVERTER_VERSION = "1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "generator.safetensors"
PROVENANCE_FILE = "provenance.json"
TINY_ID = "tiny"
TINY_PANOHEAD_ID = "tiny-panohead"
TINY_IDS = (TINY_ID, TINY_PANOHEAD_ID)


def build_tiny_generator(seed: int = 0, *, panohead: bool = False) -> TriplaneGenerator:
    """A random :meth:`GeneratorConfig.tiny` generator (not a face model), deterministic for ``seed``.

    ``panohead=True`` gives the PanoHead variant (:meth:`GeneratorConfig.tiny_panohead`).

    Its density head is scaled so the field is neither empty nor opaque (renders have informative
    depth and alpha) and crosses the official mesh iso-level 10 for typical seeds, so ``--shapes``
    works with the default level.
    """
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_generator(GeneratorConfig.tiny_panohead() if panohead else GeneratorConfig.tiny())
        with torch.no_grad():
            model.backbone.mapping.w_avg.normal_()
            for name, parameter in model.named_parameters():
                if name.endswith("noise_strength") or (name.endswith(".bias") and ".affine." not in name):
                    parameter.normal_(std=0.1)
            if panohead:  # tri-grid features are weaker (zero padding on the depth axis)
                model.decoder.net[2].weight[0] *= 40.0
                model.decoder.net[2].bias[0] = -4.0
            else:
                model.decoder.net[2].weight[0] *= 20.0
                model.decoder.net[2].bias[0] = -22.0
    finally:
        torch.random.set_rng_state(rng_state)
    return model.eval().requires_grad_(False)


def config_to_json(config: GeneratorConfig) -> dict[str, Any]:
    return {"family": config.family, "format_version": FORMAT_VERSION, **config.to_dict()}


def config_from_json(data: dict[str, Any], *, source: str) -> GeneratorConfig:
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: a config.json holds one JSON object; this one holds {type(data).__name__}.")
    data = dict(data)
    family = data.pop("family", "eg3d")
    version = data.pop("format_version", None)
    if family not in ("eg3d", "panohead"):
        raise CheckpointError(f"{source}: model family {family!r} is not supported by this version of the library.")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format_version {version!r}, expected {FORMAT_VERSION}. Re-run `python -m demo convert` on the original .pkl."
        )
    try:
        config = GeneratorConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: invalid config ({error}).") from None
    if config.family != family:
        raise CheckpointError(f"{source}: family {family!r} does not match the config (a {config.family} model).")
    return config


def save_generator(model: TriplaneGenerator, out_dir: str | Path, *, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a converted checkpoint folder; files are replaced atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in model.state_dict().items()}
    _atomic_write(out / WEIGHTS_FILE, lambda path: save_file(tensors, str(path), metadata={"format": "pt"}))
    _atomic_write(out / CONFIG_FILE, lambda path: path.write_text(json.dumps(config_to_json(model.config), indent=2)))
    record = {"converter_version": CONVERTER_VERSION, **(provenance or {})}
    _atomic_write(out / PROVENANCE_FILE, lambda path: path.write_text(json.dumps(record, indent=2)))
    return out


def _atomic_write(path: Path, write) -> None:
    partial = path.with_name(path.name + ".part")
    write(partial)
    os.replace(partial, path)


def load_converted(folder: str | Path, *, device: torch.device | str = "cpu") -> TriplaneGenerator:
    """Load a folder written by :func:`save_generator` (strict: names and shapes must match)."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing. Convert the official checkpoint first: `python -m demo convert /path/to/file.pkl --out {folder}`."
            )
    try:
        config_data = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path}: cannot read the config ({error}).") from None
    config = config_from_json(config_data, source=str(config_path))
    try:
        state = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{weights_path}: cannot read the weights ({error}); the file may be incomplete.") from None
    model = build_generator(config)
    convert.load_state_dict_strict(model, state, source=str(weights_path))
    return model.eval().requires_grad_(False).to(device)


def generator_from_pickle(
    path: str | Path,
    *,
    key: str = "G_ema",
    expected_sha256: str | None = None,
    focal_length: float | None = None,
    device: torch.device | str = "cpu",
) -> TriplaneGenerator:
    """Build a generator from an official snapshot ``.pkl`` without executing anything from it."""
    official = nvlabs_pickle.read_official_generator(path, key=key, expected_sha256=expected_sha256)
    try:  # the configs check every size before anything is built; a bad one is the checkpoint's fault
        config = convert.config_from_official(
            official.init_kwargs, official.attributes, class_name=official.class_name, focal_length=focal_length,
            source=str(path),
        )
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as error:
        raise CheckpointError(f"{path}: the generator's settings cannot be used ({type(error).__name__}: {error}).") from None
    model = build_generator(config)
    convert.load_state_dict_strict(model, convert.convert_state_dict(official.state_dict), source=str(path))
    return model.eval().requires_grad_(False).to(device)


def convert_checkpoint(
    source: str | Path,
    out_dir: str | Path | None = None,
    *,
    checkpoint_id: str | None = None,
    expected_sha256: str | None = None,
    key: str = "G_ema",
    progress: ProgressFn | None = None,
) -> Path:
    """Convert an official pickle (a path, or a registry id whose original is downloaded) into a folder.

    ``out_dir`` defaults to ``checkpoints/<checkpoint_id or file stem>/``. Returns the folder.
    """
    from demo.weights import registry

    entry = None
    path = Path(source)
    if not path.exists() and checkpoint_id is None and not str(source).endswith(".pkl"):
        entry = registry.get_entry(str(source))
        path = registry.original_path(entry.id)
        if not path.exists():
            raise CheckpointError(
                f"{path} does not exist. Run `python -m demo download {entry.id}`, or download it by hand and put it there."
            )
    elif checkpoint_id is not None:
        entry = registry.get_entry(checkpoint_id)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file. Give the path of an official EG3D .pkl.")
    if entry is not None and expected_sha256 is None:
        expected_sha256 = entry.sha256
    report(progress, 0.0, f"hashing {path.name}")
    digest = nvlabs_pickle.sha256_file(path)
    if expected_sha256 is not None and digest.lower() != expected_sha256.lower():
        raise CheckpointError(
            f"{path}: sha256 {digest} does not match the expected {expected_sha256}; the file is corrupt or a different "
            "checkpoint. Delete it and download it again."
        )
    report(progress, 0.2, f"reading {path.name}")
    model = generator_from_pickle(path, key=key, focal_length=entry.focal_length if entry is not None else None)
    target = Path(out_dir) if out_dir is not None else registry.checkpoints_dir() / (entry.id if entry else path.stem)
    report(progress, 0.8, f"writing {target}")
    save_generator(
        model,
        target,
        provenance={"source_file": path.name, "sha256": digest, "key": key, "checkpoint_id": entry.id if entry else None},
    )
    report(progress, 1.0, "done")
    logger.info("converted %s -> %s", path, target)
    return target


def load_generator(
    source: str | Path | GeneratorConfig,
    *,
    device: torch.device | str = "cpu",
    download: bool = True,
    progress: ProgressFn | None = None,
    precision: str = "fp32",
) -> TriplaneGenerator:
    """Load a generator for inference (eval mode, no grads) on ``device``.

    Args:
        source: one of
            - an official snapshot ``.pkl`` (``G_ema`` is taken; read safely, converted in memory);
            - a converted checkpoint folder (``config.json`` + ``generator.safetensors``);
            - a registry id such as ``'eg3d-ffhq512-128'``: ``checkpoints/<id>/`` if converted,
              else the downloaded original is converted there, else (``download=True``) it is
              downloaded first;
            - ``'tiny'`` / ``'tiny-panohead'``: small random models (not faces) for trying the tools;
            - a ``GeneratorConfig``: a randomly initialised model of that architecture.
        device: e.g. ``'cpu'`` or ``'cuda'``.
        download: allow network access for registry ids.
        precision: 'fp32' (official numerics), 'bf16', 'fp16' or 'auto' (the fastest native one on
            ``device``); see :mod:`demo.precision`. Checked before anything is read.

    On a CPU this also sets the process's allocator to reuse freed memory
    (:func:`demo.devices.keep_freed_cpu_memory`), which large feature maps need for speed.
    """
    precision = resolve_precision(precision, device)
    if torch.device(device).type == "cpu":
        keep_freed_cpu_memory()
    return _load(source, device=device, download=download, progress=progress).set_precision(precision)


def _load(source, *, device, download: bool, progress: ProgressFn | None) -> TriplaneGenerator:
    if isinstance(source, GeneratorConfig):
        return build_generator(source).eval().requires_grad_(False).to(device)
    if str(source) in TINY_IDS:
        return build_tiny_generator(panohead=str(source) == TINY_PANOHEAD_ID).to(device)
    path = Path(source)
    if path.is_dir():
        return load_converted(path, device=device)
    if path.is_file():
        return generator_from_pickle(path, device=device)
    if path.suffix in (".pkl", ".pickle") or os.sep in str(source):
        raise CheckpointError(f"{path} does not exist. Check the path, or give a registry id (`python -m demo models`).")
    return _load_registry_id(str(source), device=device, download=download, progress=progress)


def _load_registry_id(checkpoint_id: str, *, device, download: bool, progress: ProgressFn | None) -> TriplaneGenerator:
    from demo.weights import registry

    entry = registry.get_entry(checkpoint_id)
    folder = registry.checkpoints_dir() / entry.id
    if (folder / WEIGHTS_FILE).is_file():
        return load_converted(folder, device=device)
    original = registry.original_path(entry.id)
    if not original.is_file():
        if not download:
            raise CheckpointError(
                f"{entry.id} is not available locally. Put {entry.file_name} at {original} "
                f"(or run `python -m demo download {entry.id}`)."
            )
        original = registry.download(entry.id, progress=progress)
    convert_checkpoint(original, folder, checkpoint_id=entry.id, progress=progress)
    return load_converted(folder, device=device)


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""model -> (the identity and version counter of each of its tensors, fingerprint): hashing a 512 model's
weights takes a while, and the app checks every face against its model."""


def model_fingerprint(model: TriplaneGenerator) -> dict[str, str]:
    """sha256 of the architecture config and of the weights (every state-dict tensor, in name order).

    Cached per model until a tensor is replaced or changed in place (torch's version counters).
    """
    state = sorted(model.state_dict().items())
    stamp = tuple((name, tensor.data_ptr(), tensor._version) for name, tensor in state)
    cached = _FINGERPRINTS.get(model)
    if cached is not None and cached[0] == stamp:
        return dict(cached[1])
    config = json.dumps(config_to_json(model.config), sort_keys=True, default=str).encode()
    digest = hashlib.sha256()
    for name, tensor in state:
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    fingerprint = {"config_sha256": hashlib.sha256(config).hexdigest(), "weights_sha256": digest.hexdigest()}
    _FINGERPRINTS[model] = (stamp, fingerprint)
    return dict(fingerprint)
