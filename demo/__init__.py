"""3D Face Studio: a faithful, safe, pure-PyTorch EG3D generator and the tools built on it.

Public API (imported lazily, so ``import demo`` is cheap)::

    import demo
    G = demo.load_generator("eg3d-ffhq512-128", device="cuda")   # or a .pkl, a folder, "tiny"
    camera = demo.camera_from_angles(yaw_deg=30, pitch_deg=-10, fov_deg=18.837)
    ws = G.mapping(z, demo.conditioning_camera(), truncation_psi=0.7)
    out = G.synthesis(ws, camera)          # image, image_raw, image_depth
"""

from __future__ import annotations

import importlib
from typing import Any

from demo._version import __version__

_EXPORTS = {
    "load_generator": "demo.weights.store",
    "convert_checkpoint": "demo.weights.store",
    "save_generator": "demo.weights.store",
    "build_tiny_generator": "demo.weights.store",
    "TriplaneGenerator": "demo.networks.eg3d",
    "GeneratorConfig": "demo.config",
    "Camera": "demo.cameras",
    "camera_from_angles": "demo.cameras",
    "conditioning_camera": "demo.cameras",
    "look_at": "demo.cameras",
    "angles_from_camera": "demo.cameras",
    "fov_to_focal": "demo.cameras",
    "DemoError": "demo.errors",
    "CheckpointError": "demo.errors",
    "UnsafeCheckpointError": "demo.errors",
    "InputError": "demo.errors",
    "Face": "demo.tasks.face",
    "face_from_seed": "demo.tasks.face",
    "load_face": "demo.tasks.face",
    "reconstruct_photo": "demo.tasks.photo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'demo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
