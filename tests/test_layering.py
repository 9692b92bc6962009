"""The import rules of STYLE.md section 2, checked by parsing every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "demo"

# Layer of each demo module (by dotted prefix) and the third-party packages it may import.
LAYERS: list[tuple[str, int]] = [
    ("demo.errors", 0),
    ("demo._version", 0),
    ("demo.config", 0),
    ("demo.progress", 0),
    ("demo.cameras", 1),
    ("demo.render", 1),
    ("demo.rng", 1),
    ("demo.devices", 1),
    ("demo.precision", 1),
    ("demo.networks", 2),
    ("demo.weights", 3),
    ("demo.media", 4),
    ("demo.tasks", 4),
    ("demo.ui", 5),
    ("demo.cli", 5),
    ("demo.__main__", 5),
    ("demo", 6),  # the package __init__ re-exports lazily
]
THIRD_PARTY: dict[int, set[str]] = {
    0: set(),
    1: {"torch"},
    2: {"torch"},
    3: {"torch", "safetensors", "huggingface_hub"},
    4: {"torch", "numpy", "PIL", "imageio", "trimesh", "skimage", "scipy", "safetensors", "mrcfile", "mediapipe", "cv2"},
    5: {"torch", "numpy", "gradio", "spaces", "tqdm"},
    6: set(),
}
UI_ONLY = {"gradio", "spaces"}


def _layer(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} is not in the layer table")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names if node.module == "demo")
    return names


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_respect_layers(module, path):
    import sys

    layer = _layer(module)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "demo":
            if name == "demo" or module == "demo":
                continue
            assert _layer(name) <= layer, f"{module} (layer {layer}) imports {name} (layer {_layer(name)})"
        elif top in stdlib:
            continue
        else:
            assert top in THIRD_PARTY[layer], f"{module} (layer {layer}) may not import {top}"
            if top in UI_ONLY:
                assert module.startswith("demo.ui"), f"{module} imports {top}; only demo.ui may"


def test_no_module_unpickles_with_the_standard_loader():
    for _, path in _modules():
        text = path.read_text()
        for needle in ("pickle.load(", "pickle.loads(", "torch.load("):
            for line in text.splitlines():
                if needle in line and "weights_only=True" not in line and not line.lstrip().startswith("#"):
                    raise AssertionError(f"{path}: {line.strip()}")


def test_importing_demo_is_cheap():
    import subprocess
    import sys

    code = "import sys, demo, demo.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert result.stdout.strip() == "False", "import demo / demo.cli must not import torch"
