"""Latent paths between identities: keyframe ws -> one ws per video frame (pure array math).

Nothing here touches a model or writes a file; :func:`load_keyframes` only reads ``*_ws.npy``
files. The render side (one camera per frame, frames -> mp4) belongs to the video task.

Three ways to move between keyframes ``(K, num_ws, w_dim)``:

``linear`` (:func:`lerp`)
    Straight lines in W, piecewise between consecutive keyframes. W is the space StyleGAN's
    mapping network was trained to make roughly linear, so this is the natural default and the
    cheapest. Between two dissimilar faces the midpoint is closer to the average w (its norm
    shrinks), which can look a little "averaged".
``slerp`` (:func:`slerp`)
    Spherical, per w vector (over the last axis): the direction moves along the great circle
    between the two directions at constant angular speed while the norm is interpolated
    linearly, so ``|w|`` does not dip midway as it does on the chord. Use it for long
    transitions between very different identities; for near-identical ws it equals ``linear``.
``cubic-loop`` (:func:`official_cubic_loop`)
    The official ``gen_videos.py`` interpolation: a cubic spline (scipy ``interp1d``) through
    the keyframes, wrapped twice on each side so the path is a smooth closed loop. Use it to
    reproduce official videos or for looping videos without the speed kinks that piecewise
    paths have at keyframes. Its output is float64, as in the official script.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from scipy.interpolate import interp1d

from demo import media
from demo.errors import InputError

logger = logging.getLogger(__name__)

InterpolationMode = Literal["linear", "slerp", "cubic-loop"]
INTERPOLATION_MODES: tuple[str, ...] = get_args(InterpolationMode)

MAX_KEYFRAME_ROWS = 4096
"""Identities one call reads from ws files (4096 x 14 x 512 float32 = 117 MB)."""
OFFICIAL_W_FRAMES = 120
"""``gen_videos.py --w-frames`` default: frames between consecutive keyframes."""
OFFICIAL_WRAPS = 2
"""``gen_videos.py`` tiles the keyframes ``2 * wraps + 1`` times so the spline is periodic."""


# ---------------------------------------------------------------------------------------------
# Two-point interpolation


def _work_dtype(a: np.ndarray, b: np.ndarray) -> np.dtype:
    """Output dtype: the inputs' floating dtype (float32 stays float32), else float64."""
    dtype = np.result_type(a, b)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _per_vector_t(t: float | np.ndarray) -> np.ndarray:
    """``t`` as float64 with a trailing axis, so one t applies to one whole vector."""
    return np.asarray(t, dtype=np.float64)[..., None]


def _pick_endpoints(result: np.ndarray, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Return ``a`` where t == 0 and ``b`` where t == 1 exactly, whatever the arithmetic gave."""
    return np.where(t == 0.0, a, np.where(t == 1.0, b, result)).astype(result.dtype, copy=False)


def lerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Linear interpolation ``(1 - t) a + t b``; t = 0 gives ``a`` and t = 1 gives ``b`` exactly.

    ``t`` is a scalar or an array of one value per vector: it broadcasts against
    ``a.shape[:-1]`` (e.g. ``a``, ``b`` of shape ``(w_dim,)`` and ``t`` of shape ``(T,)`` give
    ``(T, w_dim)``), the same convention as :func:`slerp`. Floating inputs keep their dtype
    (float32 in, float32 out); the arithmetic runs in float64.
    """
    a, b = np.asarray(a), np.asarray(b)
    dtype = _work_dtype(a, b)
    t = _per_vector_t(t)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    result = ((1.0 - t) * a64 + t * b64).astype(dtype)
    return _pick_endpoints(result, a.astype(dtype), b.astype(dtype), t)


def slerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray, *, eps: float = 1e-7) -> np.ndarray:
    """Spherical interpolation over the last axis: great-circle directions, linear norms.

    For each vector pair the direction moves from ``a/|a|`` to ``b/|b|`` at constant angular
    speed, and the length is ``(1 - t)|a| + t|b|``, so the result never shrinks towards the
    origin midway as :func:`lerp` does. Where the directions are parallel or antiparallel within
    ``eps`` (the sine of the angle between them is below ``eps``, so the great circle is not
    defined) or a vector has a norm below ``eps``, that vector falls back to :func:`lerp`.
    t = 0 returns ``a`` and t = 1 returns ``b`` exactly. ``t`` broadcasts as in :func:`lerp`.
    """
    a, b = np.asarray(a), np.asarray(b)
    dtype = _work_dtype(a, b)
    t = _per_vector_t(t)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)

    norm_a = np.linalg.norm(a64, axis=-1, keepdims=True)
    norm_b = np.linalg.norm(b64, axis=-1, keepdims=True)
    degenerate_norm = (norm_a < eps) | (norm_b < eps)
    unit_a = a64 / np.where(degenerate_norm, 1.0, norm_a)
    unit_b = b64 / np.where(degenerate_norm, 1.0, norm_b)
    # The angle from the chord lengths is accurate near 0 and pi, unlike arccos of the dot product.
    chord_minus = np.linalg.norm(unit_a - unit_b, axis=-1, keepdims=True)
    chord_plus = np.linalg.norm(unit_a + unit_b, axis=-1, keepdims=True)
    omega = 2.0 * np.arctan2(chord_minus, chord_plus)
    sin_omega = np.sin(omega)
    use_lerp = degenerate_norm | (sin_omega < eps)

    safe_sin = np.where(use_lerp, 1.0, sin_omega)
    direction = (np.sin((1.0 - t) * omega) * unit_a + np.sin(t * omega) * unit_b) / safe_sin
    norm = (1.0 - t) * norm_a + t * norm_b
    spherical = norm * direction
    linear = (1.0 - t) * a64 + t * b64
    result = np.where(use_lerp, linear, spherical).astype(dtype)
    return _pick_endpoints(result, a.astype(dtype), b.astype(dtype), t)


# ---------------------------------------------------------------------------------------------
# The official looping cubic path


def official_cubic_loop(
    keyframes: np.ndarray,
    frames: np.ndarray | Sequence[int] | None = None,
    *,
    w_frames: int = OFFICIAL_W_FRAMES,
) -> np.ndarray:
    """``gen_videos.py``'s latent path: a looping cubic spline through the keyframes, float64.

    Keyframe ``k`` sits at position ``k``; the keyframes are tiled ``2 * wraps + 1 = 5`` times
    along axis 0 at positions ``-2K .. 3K - 1``, a cubic ``scipy.interpolate.interp1d`` runs
    over them (axis 0), and frame ``f`` is read at position ``f / w_frames``. ``frames``
    defaults to all frames ``0 .. K * w_frames - 1``, one loop; frame ``K * w_frames`` would
    equal frame 0 up to rounding (both are keyframe 0). Between keyframes the spline is only
    nearly periodic (its not-a-knot ends are two wraps away), which is what the official
    videos show. Frames outside ``[-2K, 3K - 1] * w_frames`` are rejected.

    Args:
        keyframes: ``(K, ...)`` with K >= 1, e.g. ``(K, num_ws, w_dim)``. With K = 1 the path
            is constant.
        frames: frame indices (any real numbers are accepted; the official script uses ints).
        w_frames: frames between consecutive keyframes.

    Returns:
        ``(T, ...)`` float64, ``T = len(frames)``.
    """
    keyframes = np.asarray(keyframes)
    if keyframes.ndim < 1 or keyframes.shape[0] < 1:
        raise InputError(f"The cubic loop needs at least 1 keyframe; got an array of shape {keyframes.shape}.")
    if w_frames <= 0:
        raise ValueError(f"w_frames must be positive, got {w_frames}")
    num_keyframes = keyframes.shape[0]
    if frames is None:
        frames = np.arange(num_keyframes * w_frames)
    frames = np.asarray(frames)
    if frames.ndim != 1:
        raise ValueError(f"frames must be a 1-D sequence of frame indices, got shape {frames.shape}")

    positions = frames.astype(np.float64) / w_frames
    lowest, highest = -OFFICIAL_WRAPS * num_keyframes, (OFFICIAL_WRAPS + 1) * num_keyframes - 1
    outside = (positions < lowest) | (positions > highest)
    if outside.any():
        raise InputError(
            f"Frames {frames[outside][:5].tolist()} lie outside the looped path: with {num_keyframes} keyframes "
            f"and w_frames={w_frames}, frames must lie in [{lowest * w_frames}, {highest * w_frames}]."
        )

    x = np.arange(lowest, highest + 1)
    y = np.concatenate([keyframes] * (2 * OFFICIAL_WRAPS + 1), axis=0)
    spline = interp1d(x, y, kind="cubic", axis=0)
    return np.asarray(spline(positions), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Paths over many keyframes


def _stack_keyframes(keyframes: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(keyframes, np.ndarray):
        stacked = keyframes
    else:
        arrays = [np.asarray(k) for k in keyframes]
        shapes = sorted({a.shape for a in arrays}, key=str)
        if len(shapes) > 1:
            listed = ", ".join(str(tuple(a.shape)) for a in arrays)
            raise InputError(f"All keyframes must have the same shape; got {listed}.")
        stacked = np.stack(arrays) if arrays else np.empty((0,))
    if stacked.ndim < 2:
        raise InputError(
            f"Keyframes must be an array of shape (K, num_ws, w_dim) (or (K, w_dim)); got shape {stacked.shape}."
        )
    return stacked


def _segment_positions(num_frames: int, num_keyframes: int, loop: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the index of the segment's first keyframe and the fraction t within it.

    Exact integer arithmetic, so keyframes land on frames exactly (t == 0) where the spacing allows.
    """
    frames = np.arange(num_frames, dtype=np.int64)
    if loop:
        # K segments (the last one returns to keyframe 0); frame i sits at i * K / num_frames.
        segments, denominator = num_keyframes, num_frames
    else:
        # K - 1 segments; frame i sits at i * (K - 1) / (num_frames - 1).
        segments, denominator = num_keyframes - 1, max(num_frames - 1, 1)
    numerator = frames * segments
    segment, remainder = np.divmod(numerator, denominator)
    t = remainder / denominator
    if not loop:
        # The last frame is the end (t = 1) of the last segment rather than the start of a new one.
        at_end = segment >= segments
        segment = np.where(at_end, segments - 1, segment)
        t = np.where(at_end, 1.0, t)
    return segment, t


def interpolation_path(
    keyframes: np.ndarray | Sequence[np.ndarray],
    num_frames: int,
    *,
    mode: InterpolationMode = "linear",
    loop: bool = False,
) -> np.ndarray:
    """One ws per frame along a path through the keyframes.

    Args:
        keyframes: ``(K, num_ws, w_dim)`` (or a sequence of K equally shaped arrays); K >= 2,
            except that ``cubic-loop`` accepts K = 1 (a constant path).
        num_frames: frames in the video, >= 1.
        mode: ``linear``, ``slerp`` or ``cubic-loop`` (see the module docstring).
        loop: linear/slerp only: also travel from the last keyframe back to the first. The
            ``cubic-loop`` mode always loops and ignores this flag.

    Frame -> segment mapping for linear/slerp (exact integer arithmetic):

    - ``loop=False``: K - 1 segments; frame ``i`` is at position ``p = i (K - 1) / (num_frames - 1)``,
      i.e. segment ``floor(p)`` from keyframe ``floor(p)`` to ``floor(p) + 1`` at ``t = p - floor(p)``
      (the last frame is t = 1 of the last segment). Frame 0 is ``keyframes[0]`` and the last
      frame ``keyframes[-1]`` exactly; keyframe k is hit exactly by frame
      ``k (num_frames - 1) / (K - 1)`` when ``num_frames - 1`` is a multiple of ``K - 1``.
      With ``num_frames == 1`` the single frame is ``keyframes[0]``.
    - ``loop=True``: K segments, the last one from ``keyframes[-1]`` back to ``keyframes[0]``;
      frame ``i`` is at ``p = i K / num_frames``, so frame ``num_frames`` (not rendered) would be
      ``keyframes[0]`` again and the video loops without a repeated frame. Keyframe k is hit
      exactly by frame ``k num_frames / K`` when ``num_frames`` is a multiple of K.

    For ``cubic-loop``, ``num_frames`` must be a multiple of K and the path is
    :func:`official_cubic_loop` with ``w_frames = num_frames / K``.

    Returns:
        ``(num_frames, num_ws, w_dim)``: float32 for linear/slerp with float32 keyframes (float64
        keyframes stay float64), float64 for ``cubic-loop`` as in the official script.
    """
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; choose from {', '.join(INTERPOLATION_MODES)}")
    if int(num_frames) != num_frames or num_frames < 1:
        raise InputError(f"An interpolation video needs at least 1 frame; got num_frames={num_frames}.")
    num_frames = int(num_frames)
    keyframes = _stack_keyframes(keyframes)
    num_keyframes = keyframes.shape[0]

    if mode == "cubic-loop":
        if num_keyframes < 1:
            raise InputError("The cubic loop needs at least 1 keyframe; got none.")
        if num_frames % num_keyframes:
            suggestion = num_keyframes * max(1, round(num_frames / num_keyframes))
            raise InputError(
                f"The cubic loop spends the same number of frames on each keyframe: num_frames ({num_frames}) must "
                f"be a multiple of the number of keyframes ({num_keyframes}), e.g. {suggestion}."
            )
        return official_cubic_loop(keyframes, w_frames=num_frames // num_keyframes)

    if num_keyframes < 2:
        raise InputError(
            f"A {mode} path needs at least 2 keyframes; got {num_keyframes}. Add another identity, "
            "or use the cubic-loop mode for a single one."
        )
    segment, t = _segment_positions(num_frames, num_keyframes, loop)
    start = keyframes[segment]
    end = keyframes[(segment + 1) % num_keyframes]
    # One t per frame, broadcast over every w vector of that frame.
    t_per_vector = t.reshape((num_frames,) + (1,) * (keyframes.ndim - 2))
    step = lerp if mode == "linear" else slerp
    return step(start, end, t_per_vector)


def keyframe_weights(num_frames: int, num_keyframes: int, *, mode: InterpolationMode = "linear", loop: bool = False) -> np.ndarray:
    """(num_frames, K) float64 weights of each keyframe per frame: piecewise linear along the same segments
    as :func:`interpolation_path` (rows sum to 1; frame 0 is all keyframe 0, and without ``loop`` the last
    frame all the last keyframe). Morphs blend what cannot be interpolated in W with them, such as the
    tuned-weight deltas of photo faces. ``cubic-loop`` spends ``num_frames / K`` frames per keyframe, looping.
    """
    weights = np.zeros((int(num_frames), num_keyframes))
    if num_keyframes == 1:
        weights[:, 0] = 1.0
        return weights
    segment, t = _segment_positions(int(num_frames), num_keyframes, loop or mode == "cubic-loop")
    rows = np.arange(int(num_frames))
    weights[rows, segment % num_keyframes] += 1.0 - t
    weights[rows, (segment + 1) % num_keyframes] += t
    return weights


# ---------------------------------------------------------------------------------------------
# Reading keyframes


def load_keyframes(
    paths: Sequence[str | Path], *, num_ws: int, w_dim: int, max_rows: int = MAX_KEYFRAME_ROWS
) -> np.ndarray:
    """Read ws ``.npy`` files (as ``generate`` writes them) into ``(K, num_ws, w_dim)`` float32.

    Each file holds ``(num_ws, w_dim)`` or ``(N, num_ws, w_dim)`` (``generate`` writes N = 1);
    a file with N rows contributes N keyframes, in order. The header is checked before any data is
    read (shape, at most ``max_rows`` rows in all, no pickled objects: they are never loaded).

    Raises:
        InputError: no files, a file that cannot be read, holds no numeric array, has the wrong
            shape, too many rows, or non-finite values.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise InputError("No latent files given; pass one or more *_ws.npy files written by `generate`.")
    expected = (num_ws, w_dim)
    keyframes: list[np.ndarray] = []
    rows = 0
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"Latent file {path} does not exist.")
        try:
            shape, dtype = media.read_npy_header(path)
        except InputError as error:
            raise InputError(
                f"Cannot read latent file {path} as a NumPy .npy array ({error}). Use a *_ws.npy file written by "
                "`generate`; pickled files are not accepted."
            ) from None
        if dtype.kind not in "fiu":
            raise InputError(f"Latent file {path} holds {dtype} values, not real numbers.")
        shape3 = (1, *shape) if len(shape) == 2 else shape
        if len(shape3) != 3 or tuple(shape3[1:]) != expected:
            raise InputError(
                f"Latent file {path} has shape {shape3}; expected (1, {num_ws}, {w_dim}), ({num_ws}, {w_dim}) "
                f"or (N, {num_ws}, {w_dim}) for this model. Was it written for another checkpoint?"
            )
        rows += shape3[0]
        if rows > max_rows:
            raise InputError(f"The latent files hold more than {max_rows} identities; pass fewer at a time.")
        array = np.load(path, allow_pickle=False).reshape(shape3)
        if not np.isfinite(array).all():
            raise InputError(f"Latent file {path} contains NaN or infinite values.")
        keyframes.append(array.astype(np.float32))
    stacked = np.concatenate(keyframes, axis=0)
    if stacked.shape[0] == 0:
        raise InputError("The latent files hold no keyframes (every file has 0 rows).")
    logger.debug("loaded %d keyframes from %d files", stacked.shape[0], len(keyframes))
    return stacked
