"""Shared fixtures: the tiny random generator and the official-format reference fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from demo.config import GeneratorConfig
from demo.weights.store import build_tiny_generator

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
EG3D_REFERENCE = REFERENCE_DIR / "eg3d"


def require_reference(name: str) -> Path:
    """Path of a file in ../shared/reference/eg3d, or skip the test saying why."""
    path = EG3D_REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference fixture {path} is absent (the ../shared checkout is needed for parity tests)")
    return path


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread (restored afterwards).

    Results do not depend on it; on a loaded 2-vCPU machine OpenMP with 2 threads made the tiny
    model about 15x slower (thread hand-offs dominate tensors this small). Use it with
    ``pytestmark = pytest.mark.usefixtures("single_thread")`` in files of small-tensor tests.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_config() -> GeneratorConfig:
    return GeneratorConfig.tiny()


@pytest.fixture
def tiny_generator():
    return build_tiny_generator(seed=0)


@pytest.fixture(scope="session")
def eg3d_expected() -> dict[str, np.ndarray]:
    path = require_reference("tiny_ffhq_expected.npz")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def official_tiny_pickle() -> Path:
    return require_reference("tiny_ffhq_structure.pkl")


@pytest.fixture(scope="session")
def official_tiny_generator(official_tiny_pickle):
    from demo.weights.store import load_generator

    return load_generator(official_tiny_pickle)


def max_abs_diff(actual, expected: np.ndarray) -> float:
    """Max |actual - expected| in float64, after checking the shapes agree (parity tests)."""
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
