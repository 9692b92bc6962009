"""Latent paths (demo.tasks.interpolate): official cubic-loop parity, lerp/slerp, paths, keyframe files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from demo.errors import InputError
from demo.tasks.interpolate import (
    interpolation_path,
    lerp,
    load_keyframes,
    official_cubic_loop,
    slerp,
)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "eg3d" / "tiny_ffhq_expected.npz"
INTERP_TOL = 1e-6  # the fixture README's tolerance for video_ws_interp
W_FRAMES = 120  # the fixture's w_frames (meta_json params.video_w_frames)


@pytest.fixture(scope="module")
def video_reference() -> dict[str, np.ndarray]:
    if not FIXTURE.exists():
        pytest.skip(f"official EG3D fixture not found at {FIXTURE} (../shared/reference is absent)")
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {key: data[key] for key in ("video_ws_keyframes", "video_frames", "video_ws_interp")}


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _keyframes(rng: np.random.Generator, count: int, num_ws: int = 3, w_dim: int = 8) -> np.ndarray:
    return rng.normal(size=(count, num_ws, w_dim)).astype(np.float32)


# --- official cubic loop ---------------------------------------------------------------------


def test_cubic_loop_matches_official_fixture(video_reference):
    out = official_cubic_loop(video_reference["video_ws_keyframes"], video_reference["video_frames"], w_frames=W_FRAMES)
    expected = video_reference["video_ws_interp"]
    assert out.dtype == np.float64
    assert out.shape == expected.shape == (7, 14, 512)
    assert np.abs(out - expected).max() <= INTERP_TOL


def test_cubic_loop_passes_through_keyframes_and_is_periodic(video_reference):
    keyframes = video_reference["video_ws_keyframes"]
    count = keyframes.shape[0]
    frames = np.arange(count + 1) * W_FRAMES  # 0, 120, 240 and 360 (one full loop)
    out = official_cubic_loop(keyframes, frames, w_frames=W_FRAMES)
    np.testing.assert_allclose(out[:count], keyframes.astype(np.float64), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[count], out[0], rtol=0, atol=1e-12)
    # Between keyframes the official spline is only nearly periodic (not-a-knot ends, damped by the
    # two wraps): one loop later a frame moves by about 2e-3 on this fixture, far below a keyframe step.
    shifted = official_cubic_loop(keyframes, [37, 37 + count * W_FRAMES], w_frames=W_FRAMES)
    keyframe_step = np.abs(keyframes[1] - keyframes[0]).max()
    assert np.abs(shifted[1] - shifted[0]).max() < 1e-2 * keyframe_step


def test_cubic_loop_default_frames_and_single_keyframe(rng):
    keyframes = _keyframes(rng, 3)
    out = official_cubic_loop(keyframes, w_frames=4)
    assert out.shape == (12, 3, 8) and out.dtype == np.float64
    single = official_cubic_loop(keyframes[:1], w_frames=5)
    assert single.shape == (5, 3, 8)
    np.testing.assert_allclose(single, np.broadcast_to(keyframes[:1], single.shape), rtol=0, atol=1e-6)


def test_cubic_loop_is_smooth_between_keyframes(rng):
    """A cubic path bends: midway it is not the linear midpoint (a lerp would pass this test only by accident)."""
    keyframes = _keyframes(rng, 4)
    out = official_cubic_loop(keyframes, [5], w_frames=10)[0]
    assert np.abs(out - 0.5 * (keyframes[0] + keyframes[1])).max() > 1e-3


def test_cubic_loop_rejects_frames_outside_the_wrapped_range(rng):
    with pytest.raises(InputError, match="outside"):
        official_cubic_loop(_keyframes(rng, 2), [0, 10_000], w_frames=10)


# --- lerp / slerp ----------------------------------------------------------------------------


def test_lerp_endpoints_exact_and_vectorised(rng):
    a, b = rng.normal(size=(2, 5, 16)).astype(np.float32)
    assert np.array_equal(lerp(a, b, 0.0), a)
    assert np.array_equal(lerp(a, b, 1.0), b)
    out = lerp(a, b, 0.25)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 0.75 * a + 0.25 * b, rtol=1e-6, atol=1e-6)
    ts = np.array([0.0, 0.5, 1.0])
    batch = lerp(a[0], b[0], ts)
    assert batch.shape == (3, 16)
    assert np.array_equal(batch[0], a[0]) and np.array_equal(batch[2], b[0])


def test_slerp_endpoints_exact(rng):
    a, b = rng.normal(size=(2, 14, 32)).astype(np.float32)
    assert np.array_equal(slerp(a, b, 0.0), a)
    assert np.array_equal(slerp(a, b, 1.0), b)
    assert slerp(a, b, 0.3).dtype == np.float32
    a64, b64 = a.astype(np.float64) / 3.0, b.astype(np.float64) / 7.0
    assert slerp(a64, b64, 0.3).dtype == np.float64
    # In float64, |b| * (b / |b|) is not b bit for bit: the endpoints must be the inputs themselves.
    assert np.array_equal(slerp(a64, b64, 0.0), a64)
    assert np.array_equal(slerp(a64, b64, 1.0), b64)
    assert np.array_equal(slerp(a64, b64, np.array([[0.0], [1.0]]))[1], b64)


def test_slerp_norms_are_linear_and_result_stays_in_the_plane(rng):
    a = rng.normal(size=(6, 32))
    b = 3.0 * rng.normal(size=(6, 32))
    mid = slerp(a, b, 0.5)
    norm_a, norm_b = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    np.testing.assert_allclose(np.linalg.norm(mid, axis=-1), 0.5 * (norm_a + norm_b), rtol=1e-12)
    # A lerp midpoint is shorter: the check above tells the two apart.
    assert (np.linalg.norm(lerp(a, b, 0.5), axis=-1) < 0.5 * (norm_a + norm_b) - 1e-3).all()
    for t in (0.2, 0.5, 0.9):
        out = slerp(a, b, t)
        for i in range(a.shape[0]):
            basis = np.stack([a[i], b[i]], axis=1)
            coeffs, *_ = np.linalg.lstsq(basis, out[i], rcond=None)
            np.testing.assert_allclose(basis @ coeffs, out[i], atol=1e-10)
            assert (coeffs >= -1e-12).all()  # between a and b, not on the far side of the circle


def test_slerp_constant_angular_speed(rng):
    a, b = rng.normal(size=(2, 16))
    ts = np.linspace(0, 1, 9)
    path = slerp(a, b, ts)
    units = path / np.linalg.norm(path, axis=-1, keepdims=True)
    angles = np.arccos(np.clip(np.sum(units[:-1] * units[1:], axis=-1), -1, 1))
    np.testing.assert_allclose(angles, angles[0], rtol=1e-9)


def test_slerp_falls_back_to_lerp_for_parallel_and_zero_vectors(rng):
    a = rng.normal(size=(16,)).astype(np.float32)
    for b in (2.0 * a, -3.0 * a, np.zeros_like(a)):
        out = slerp(a, b, 0.25)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, lerp(a, b, 0.25), rtol=1e-6, atol=1e-6)


def test_slerp_vectorised_t(rng):
    a, b = rng.normal(size=(2, 4, 8))
    ts = np.array([0.0, 0.3, 1.0])
    batch = slerp(a, b, ts[:, None])  # (3, 1) against the vector shape (4,)
    assert batch.shape == (3, 4, 8)
    for i, t in enumerate(ts):
        np.testing.assert_allclose(batch[i], slerp(a, b, t), rtol=0, atol=1e-12)


# --- interpolation_path ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["linear", "slerp"])
def test_path_shapes_endpoints_and_keyframe_hits(rng, mode):
    keyframes = _keyframes(rng, 3)
    path = interpolation_path(keyframes, 9, mode=mode)  # 8 steps, 2 segments: keyframe 1 at frame 4
    assert path.shape == (9, 3, 8) and path.dtype == np.float32
    assert np.array_equal(path[0], keyframes[0])
    assert np.array_equal(path[4], keyframes[1])
    assert np.array_equal(path[-1], keyframes[-1])
    looped = interpolation_path(keyframes, 12, mode=mode, loop=True)  # keyframes at frames 0, 4, 8
    assert looped.shape == (12, 3, 8)
    for k in range(3):
        assert np.array_equal(looped[4 * k], keyframes[k])


def test_path_spacing_without_exact_hits_still_has_exact_ends(rng):
    keyframes = _keyframes(rng, 4)
    path = interpolation_path(keyframes, 8, mode="linear")  # 7 steps over 3 segments
    assert np.array_equal(path[0], keyframes[0]) and np.array_equal(path[-1], keyframes[-1])
    steps = np.diff(path, axis=0)
    assert np.isfinite(steps).all()


def test_linear_loop_returns_to_start_with_a_regular_step(rng):
    keyframes = _keyframes(rng, 2)
    path = interpolation_path(keyframes, 10, mode="linear", loop=True).astype(np.float64)
    assert not np.allclose(path[-1], path[0])
    step_back = path[0] - path[-1]
    regular = path[1] - path[0]
    # Halfway the path turns around: a step on the way back is minus a step on the way out.
    np.testing.assert_allclose(step_back, -regular, rtol=0, atol=1e-5)
    np.testing.assert_allclose(path[6] - path[5], -regular, rtol=0, atol=1e-5)
    assert np.array_equal(path[5], keyframes[1].astype(np.float64))


def test_single_frame_path_is_the_first_keyframe(rng):
    keyframes = _keyframes(rng, 2)
    assert np.array_equal(interpolation_path(keyframes, 1)[0], keyframes[0])


def test_cubic_loop_mode(rng):
    keyframes = _keyframes(rng, 3)
    path = interpolation_path(keyframes, 12, mode="cubic-loop")
    assert path.dtype == np.float64 and path.shape == (12, 3, 8)
    np.testing.assert_allclose(path, official_cubic_loop(keyframes, w_frames=4), rtol=0, atol=0)
    np.testing.assert_allclose(path[::4], keyframes, rtol=0, atol=1e-6)
    single = interpolation_path(keyframes[:1], 4, mode="cubic-loop")
    assert single.shape == (4, 3, 8)


def test_path_accepts_a_list_of_keyframes(rng):
    keyframes = _keyframes(rng, 2)
    np.testing.assert_array_equal(interpolation_path(list(keyframes), 5), interpolation_path(keyframes, 5))


def test_path_errors(rng):
    keyframes = _keyframes(rng, 3)
    with pytest.raises(InputError, match="at least 1 frame"):
        interpolation_path(keyframes, 0)
    with pytest.raises(InputError, match="at least 2 keyframes"):
        interpolation_path(keyframes[:1], 10, mode="linear")
    with pytest.raises(InputError, match=r"\(3, 8\).*\(4, 8\)"):
        interpolation_path([keyframes[0], np.zeros((4, 8), np.float32)], 10)
    with pytest.raises(InputError, match="multiple"):
        interpolation_path(keyframes, 10, mode="cubic-loop")
    with pytest.raises(ValueError, match="unknown interpolation mode"):
        interpolation_path(keyframes, 10, mode="bezier")  # type: ignore[arg-type]


# --- load_keyframes --------------------------------------------------------------------------


def test_load_keyframes_round_trip(tmp_path, rng):
    one = rng.normal(size=(1, 14, 512)).astype(np.float32)
    bare = rng.normal(size=(14, 512)).astype(np.float32)
    three = rng.normal(size=(3, 14, 512))  # float64 in the file, float32 out
    for name, array in (("a_ws.npy", one), ("b_ws.npy", bare), ("c_ws.npy", three)):
        np.save(tmp_path / name, array)
    loaded = load_keyframes(
        [tmp_path / "a_ws.npy", str(tmp_path / "b_ws.npy"), tmp_path / "c_ws.npy"], num_ws=14, w_dim=512
    )
    assert loaded.shape == (5, 14, 512) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded[0], one[0])
    np.testing.assert_array_equal(loaded[1], bare)
    np.testing.assert_array_equal(loaded[2:], three.astype(np.float32))


def test_load_keyframes_rejects_wrong_shape(tmp_path):
    path = tmp_path / "small_ws.npy"
    np.save(path, np.zeros((1, 14, 16), np.float32))
    with pytest.raises(InputError, match=r"small_ws\.npy.*\(1, 14, 16\).*\(1, 14, 512\)"):
        load_keyframes([path], num_ws=14, w_dim=512)


def test_load_keyframes_rejects_pickles_and_missing_files(tmp_path):
    path = tmp_path / "pickled_ws.npy"
    np.save(path, np.array([{"w": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickled_ws.npy"):
        load_keyframes([path], num_ws=14, w_dim=512)
    with pytest.raises(InputError, match="does not exist"):
        load_keyframes([tmp_path / "missing.npy"], num_ws=14, w_dim=512)
    with pytest.raises(InputError):
        load_keyframes([], num_ws=14, w_dim=512)
