"""Progress reporting shared by tasks, the CLI and the UI (layer 0, stdlib only).

A task takes ``progress: ProgressFn | None`` and calls it with a fraction in [0, 1] and a short
description. The CLI passes a tqdm adapter, the UI a ``gr.Progress`` adapter, tests pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[float, str], None]


def report(progress: ProgressFn | None, fraction: float, message: str) -> None:
    """Call ``progress`` if given, with the fraction clamped to [0, 1]."""
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def scaled(progress: ProgressFn | None, start: float, stop: float) -> ProgressFn | None:
    """``progress`` for one stage of a task: the stage's fraction [0, 1] maps to [start, stop] of the whole."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (stop - start) * fraction, message)
