"""What every tab shares: the GPU shim, the model provider, session folders, errors and progress (layer 5).

Nothing here knows about EG3D's maths; it decides *where* and *when* library calls run:

- :func:`gpu` wraps ``spaces.GPU`` on a ZeroGPU Space and is a no-op everywhere else (no ``spaces``
  package, or a laptop), so ``python app.py`` runs anywhere. Only handlers that render go under it.
- :class:`ModelProvider` lists the registry's checkpoints plus the tiny random model, loads and
  caches them outside GPU handlers (on a Space the default one at build time, as ZeroGPU expects;
  locally on first use), and says plainly what is missing when a checkpoint cannot be had (on the page, and in
  one console line at start-up). It also times inversion steps once per model on this device
  (:func:`time_inversion_steps`), from which the Photo tab estimates each preset's duration.
- :func:`display_copy` enlarges small results for the page (nearest neighbour); downloads keep the true size.
- :class:`SessionFolders` gives each browser session its own output folder, created on
  ``demo.load`` and removed on ``demo.unload``.
- :func:`user_errors` turns library errors into ``gr.Error`` messages; :func:`progress_fn` adapts a
  ``gr.Progress`` to the library's ``ProgressFn``.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

try:  # before anything touches CUDA: ZeroGPU asks for `spaces` to be imported first
    import spaces
except ImportError:  # not needed off Spaces
    spaces = None

import gradio as gr
import numpy as np
import torch

from demo import media
from demo.devices import pick_device
from demo.errors import CheckpointError, DemoError, InputError
from demo.networks.eg3d import TriplaneGenerator
from demo.networks.encoder import ImageEncoder
from demo.progress import ProgressFn
from demo.tasks.face import Face, face_from_seed, load_face, load_faces
from demo.tasks.invert import InversionSettings, Objective, project, tune
from demo.tasks.sample import parse_seeds, view_camera, ws_from_seeds
from demo.tasks.train_encoder import find_encoder, load_encoder
from demo.precision import resolve_precision
from demo.weights import registry
from demo.weights.store import TINY_ID, TINY_IDS, TINY_PANOHEAD_ID, WEIGHTS_FILE, load_generator

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MODEL_ID = "eg3d-ffhqrebalanced512-128"
PREVIEW_LABEL = "interface preview — random weights, not faces"
RETRY_AFTER_S = 60.0
"""A checkpoint that failed to load is not tried again for this long unless its files appear."""
MAX_KEYFRAMES = 16
"""Identities one interpolation video may visit."""


# --- where we run -------------------------------------------------------------------------------


def on_spaces() -> bool:
    """True on a Hugging Face Space (``SPACE_ID`` is set there; ``SPACES_ZERO_GPU`` on ZeroGPU)."""
    return bool(os.environ.get("SPACE_ID") or os.environ.get("SPACES_ZERO_GPU"))


def on_zero_gpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu(duration: int | Callable[..., int] = 60) -> Callable[[F], F]:
    """``@spaces.GPU(duration=...)`` on ZeroGPU, a no-op elsewhere.

    ``duration`` is the most seconds one call may hold the GPU (shorter calls get priority), or a
    function of the handler's arguments returning it.
    """

    def decorate(fn: F) -> F:
        if spaces is None or not on_zero_gpu():
            return fn
        return spaces.GPU(duration=duration)(fn)

    return decorate


# --- models -------------------------------------------------------------------------------------


class ModelProvider:
    """The models the app offers: registry ids plus ``'tiny'``, loaded once and cached.

    Args:
        model_ids: ids to offer (default: every registry entry, then ``'tiny'``); ``'tiny'`` is
            always added so the interface works without any checkpoint.
        default_id: the model selected when the page opens.
        device: torch device (default: CUDA when available, else CPU).
        preload: load ``default_id`` now (default: only on a Space). When that fails, the default
            becomes ``'tiny'`` and :attr:`notice` says what is missing and how to provide it.
        download: allow network access (``weights.registry.download``) for missing checkpoints.
        precision: the models' precision (``demo.precision``); ``'auto'`` (default) is the fastest
            the device runs natively: bfloat16 on CPUs with AVX-512 BF16/AMX and on recent GPUs.
    """

    def __init__(
        self,
        model_ids: Sequence[str] | None = None,
        *,
        default_id: str = DEFAULT_MODEL_ID,
        device: torch.device | str | None = None,
        preload: bool | None = None,
        download: bool = True,
        precision: str = "auto",
    ) -> None:
        ids = list(model_ids) if model_ids is not None else [entry.id for entry in registry.list_entries()]
        self.model_ids: list[str] = list(dict.fromkeys([*ids, TINY_ID, TINY_PANOHEAD_ID]))
        if default_id not in self.model_ids:
            raise ValueError(f"default_id {default_id!r} is not among the offered models {self.model_ids}")
        self.default_id = default_id
        self.download = download
        self.precision = precision
        self._device = device
        self._models: dict[str, TriplaneGenerator] = {}
        self._encoders: dict[str, ImageEncoder | None] = {}
        self._failures: dict[str, tuple[float, CheckpointError]] = {}
        self._step_times: dict[str, StepTimes] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.notice = ""
        """Markdown shown under the model menu when the page opens ("" when all is well)."""
        self.fallback: tuple[str, CheckpointError] | None = None
        """(the default asked for, why it failed) when :meth:`preload` fell back to ``'tiny'``."""
        if on_spaces() if preload is None else preload:
            self.preload()
        elif not self.is_local(default_id):
            self.notice = self.availability_notice(default_id)

    @classmethod
    def tiny(cls, device: torch.device | str = "cpu") -> ModelProvider:
        """Only the tiny random model: for tests and interface work."""
        return cls([TINY_ID], default_id=TINY_ID, device=device, preload=False)

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = pick_device("auto")
        return torch.device(self._device)

    def preload(self) -> None:
        """Load the default model now; on failure fall back to ``'tiny'`` and explain in :attr:`notice`."""
        try:
            self.get(self.default_id)
        except CheckpointError as error:
            logger.warning("default model %s unavailable: %s", self.default_id, error)
            self.notice = self.missing_message(self.default_id, error)
            self.fallback = (self.default_id, error)
            self.default_id = TINY_ID
            self.get(TINY_ID)

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for a dropdown."""
        return [(self.label(model_id), model_id) for model_id in self.model_ids]

    def label(self, model_id: str) -> str:
        return f"{model_id} ({PREVIEW_LABEL})" if model_id in TINY_IDS else model_id

    def is_local(self, model_id: str) -> bool:
        """Loaded, converted or downloaded: usable without the network."""
        if model_id in TINY_IDS or model_id in self._models:
            return True
        return (registry.converted_dir(model_id) / WEIGHTS_FILE).is_file() or registry.original_path(model_id).is_file()

    def get(self, model_id: str, progress: ProgressFn | None = None) -> TriplaneGenerator:
        """The model for ``model_id``, loading (downloading, converting) it on first use.

        Raises:
            InputError: ``model_id`` is not offered here.
            CheckpointError: the checkpoint cannot be had; the message says why and what to do.
        """
        if model_id not in self.model_ids:
            raise InputError(f"Unknown model {model_id!r}. Choose one of: {', '.join(self.model_ids)}.")
        model = self._models.get(model_id)
        if model is not None:
            return model
        with self._lock_for(model_id):  # one loader per checkpoint; other sessions wait for it
            model = self._models.get(model_id)
            if model is None:
                failed = self._failures.get(model_id)
                if failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_S and not self.is_local(model_id):
                    raise failed[1]
                try:
                    model = load_generator(
                        model_id, device=self.device, download=self.download, progress=progress, precision=self.precision
                    )
                except CheckpointError as error:
                    self._failures[model_id] = (time.monotonic(), error)
                    raise
                self._failures.pop(model_id, None)
                self._models[model_id] = model
        return model

    def encoder(self, model_id: str) -> ImageEncoder | None:
        """The photo encoder installed for ``model_id`` (``checkpoints/<id>/encoder.safetensors``), loaded once; None if none."""
        if model_id in self._encoders:
            return self._encoders[model_id]
        model = self.get(model_id)
        with self._lock_for(model_id):
            if model_id not in self._encoders:
                path = find_encoder(model_id)
                self._encoders[model_id] = load_encoder(path, device=model.device, model=model) if path is not None else None
        return self._encoders[model_id]

    def is_full_head(self, model_id: str) -> bool:
        """Whether ``model_id`` shows the head all the way round (PanoHead), without loading it."""
        if model_id in self._models:
            return bool(self._models[model_id].config.is_full_head)
        if model_id == TINY_PANOHEAD_ID:
            return True
        if model_id in TINY_IDS:
            return False
        try:
            return registry.get_entry(model_id).family == "panohead"
        except CheckpointError:
            return False

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._models

    def step_times(self, model_id: str) -> StepTimes | None:
        """The inversion step times measured for ``model_id`` on this device, or None before :meth:`measure_step_times`."""
        return self._step_times.get(model_id)

    def measure_step_times(self, model_id: str) -> StepTimes:
        """Time one projection and one tuning step of ``model_id`` on this device (once; later calls return it).

        Loads the model if needed. Runs a few steps (:func:`time_inversion_steps`): on a GPU about a second for the 512
        models, on a CPU about a minute for them (one step of each stage) and a second for tiny.
        """
        if model_id not in self._step_times:
            model = self.get(model_id)
            with self._lock_for(model_id):
                if model_id not in self._step_times:
                    self._step_times[model_id] = time_inversion_steps(model)
        return self._step_times[model_id]

    def _lock_for(self, model_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(model_id, threading.Lock())

    def status(self, model_id: str) -> str:
        """Markdown line about ``model_id``: preview warning, ready, or what first use will do."""
        if model_id in TINY_IDS:
            return f"**{model_id}**: {PREVIEW_LABEL}. Use it to try the interface; pick an EG3D or PanoHead model for faces."
        if model_id in self._models:
            return f"**{model_id}** is loaded."
        return self.availability_notice(model_id)

    def availability_notice(self, model_id: str) -> str:
        if self.is_local(model_id):
            return f"**{model_id}** is on this machine; it is loaded the first time you use it."
        entry = registry.get_entry(model_id)
        size = f" ({entry.size_bytes / 1e6:.0f} MB)" if entry.size_bytes else ""
        fetch = (
            f"it will be downloaded{size} and converted the first time you use it. "
            if self.download
            else "downloads are switched off. "
        )
        return (
            f"**{model_id}** is not on this machine yet: {fetch}{_how_to_provide(entry)} "
            f"Meanwhile **tiny** in the menu previews the interface ({PREVIEW_LABEL})."
        )

    def startup_line(self) -> str:
        """One plain line for the console when the app starts: the model the page opens with and where its weights
        are, or, when they cannot be had, the fallback (the tiny random model), why, and how to provide them."""
        prefix, device = "3D Face Studio:", f"{resolve_precision(self.precision, self.device)} on {self.device.type}"
        if self.fallback is not None:
            wanted, error = self.fallback
            why = (f"no file at {registry.original_path(wanted)} and downloads are switched off" if not self.download
                   else f"no file at {registry.original_path(wanted)} and the download failed: {_first_reason(error)}")
            return f"{prefix} model '{wanted}' not available ({why}) — {_FALLBACK_NOTE} {_provide_line(wanted)}"
        model_id = self.default_id
        if model_id in TINY_IDS:
            return f"{prefix} model {model_id} ({PREVIEW_LABEL}), {device}."
        if self.is_local(model_id):
            converted = registry.converted_dir(model_id)
            where = converted if (converted / WEIGHTS_FILE).is_file() else registry.original_path(model_id)
            when = "loaded" if model_id in self._models else "loaded on first use"
            return f"{prefix} model {model_id} ({where}), {when}, {device}."
        entry = registry.get_entry(model_id)
        if not self.download:
            return (f"{prefix} model '{model_id}' not available (no file at {registry.original_path(model_id)} and "
                    f"downloads are switched off) — when it is used, {_INSTEAD_NOTE} {_provide_line(model_id)}")
        size = f" {entry.size_bytes / 1e6:.0f} MB" if entry.size_bytes else ""
        return (f"{prefix} model {model_id}, {device}: not on this machine yet; the first use downloads it{size} from "
                f"{entry.urls[0]}; without a network, {_INSTEAD_NOTE} {_provide_line(model_id)}")

    def missing_message(self, model_id: str, error: Exception) -> str:
        """Markdown: what could not be had, why, how to provide it, and the preview fallback."""
        entry = registry.get_entry(model_id)
        return (
            f"**{model_id} is not available.** {_how_to_provide(entry)}\n\n"
            f"Until then the **tiny** model runs: {PREVIEW_LABEL}.\n\n"
            f"<details><summary>What was tried</summary>\n\n```\n{error}\n```\n</details>"
        )


@dataclass(frozen=True)
class StepTimes:
    """Seconds one inversion step takes for one model on one device (measured, see :func:`time_inversion_steps`)."""

    projection_s: float
    tuning_s: float
    device: str
    """Where they were measured, in words: 'CPU' or 'GPU (NVIDIA H100 80GB HBM3)'."""

    def inversion_s(self, settings: InversionSettings) -> float:
        """Seconds of the step loops of ``settings`` (tuning counted in full: it may stop sooner on a plateau)."""
        return settings.w_steps * self.projection_s + settings.pti_steps * self.tuning_s


MEASURE_STEPS = 3
MEASURE_BUDGET_S = 10.0
"""No further step of a stage is started once its measurement has taken this long (a 512 model on a CPU: one step)."""


def time_inversion_steps(model: TriplaneGenerator) -> StepTimes:
    """Seconds per projection step and per tuning step of ``model`` on its device, on a random target.

    Up to :data:`MEASURE_STEPS` steps of each stage; a step's time is read between the stage's progress reports and
    the shortest gap is kept (the first step carries one-time costs, and a busy machine adds spikes). When one step
    already exceeds :data:`MEASURE_BUDGET_S`, that step alone is timed, from the start of its stage.
    """
    settings = InversionSettings.from_preset("fast", w_steps=MEASURE_STEPS, pti_steps=MEASURE_STEPS)
    rng = torch.Generator(device=model.device).manual_seed(0)
    size = model.img_resolution
    target = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(model.device) * 2 - 1
    objective = Objective(target, None, None, settings.perceptual_weight)
    label = view_camera(model).to_label().to(model.device)
    ws = torch.from_numpy(ws_from_seeds(model, [0])).to(model.device)
    seconds = {}
    for stage in ("projection", "tuning"):
        stamps: list[float] = []
        started = time.perf_counter()
        kwargs = {"rng": rng, "deadline": started + MEASURE_BUDGET_S,
                  "progress": lambda fraction, message, stamps=stamps: stamps.append(time.perf_counter())}
        if stage == "projection":
            ws = project(model, objective, label, ws, settings, w_std=1.0, **kwargs).ws
        else:
            tune(model, objective, label, ws, settings, **kwargs)
        gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
        seconds[stage] = min(gaps) if gaps else stamps[0] - started
    device = model.device
    where = f"GPU ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type.upper()
    return StepTimes(projection_s=seconds["projection"], tuning_s=seconds["tuning"], device=where)


_FALLBACK_NOTE = "using the tiny random model; results are noise."
_INSTEAD_NOTE = "the tiny random model runs instead; results are noise."


def _provide_line(model_id: str) -> str:
    entry = registry.get_entry(model_id)
    return (f"Put {entry.file_name} at {registry.original_path(model_id)} (or set {registry.CHECKPOINTS_DIR_ENV} to a "
            f"folder holding original/{entry.file_name}), or set HF_ENDPOINT to a Hugging Face mirror you can reach.")


def _first_reason(error: Exception) -> str:
    """The first thing a download error says went wrong, on one short line (its "Tried:" list has one per source)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    tried = [line[2:] for line in lines if line.startswith("- ")]
    reason = tried[0] if tried else lines[0] if lines else type(error).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _how_to_provide(entry: registry.CheckpointEntry) -> str:
    target = registry.original_path(entry.id)
    return (
        f"To provide it: put `{entry.file_name}` (from {entry.urls[0]}) at `{target}` "
        f"or run `python -m demo download {entry.id}` on a machine with internet access; "
        f"or set `{registry.CHECKPOINTS_DIR_ENV}` to a folder holding `original/{entry.file_name}` or a converted "
        f"`{entry.id}/`; or, when a Hugging Face mirror needs a login, set `{registry.HF_TOKEN_ENV}`. "
        f"Licence: {entry.licence}."
    )


# --- session folders ----------------------------------------------------------------------------


SESSION_MAX_AGE_S = 3600.0
"""A session folder untouched this long is removed (API clients that never end their session)."""
SWEEP_EVERY_S = 60.0


class SessionFolders:
    """One output folder per browser (or API client) session under ``root``.

    ``open`` runs on ``demo.load``, ``close`` on ``demo.unload``; handlers call :meth:`run_dir` for a
    fresh folder per request (API clients never trigger ``load``, so folders are also made on demand).
    Clients that never end a session (raw HTTP calls) leave folders that :meth:`sweep` removes once
    they are ``max_age_s`` old; it runs from :meth:`run_dir` at most once a minute. Results reach the
    user through Gradio's own copies, so a removed folder loses nothing already returned.
    """

    def __init__(self, root: str | Path | None = None, *, max_age_s: float = SESSION_MAX_AGE_S) -> None:
        self.owns_root = root is None
        if root is None:  # one folder per server process, removed when it exits (or is terminated)
            root = Path(tempfile.gettempdir()) / "3d-face-studio" / f"sessions-{os.getpid()}"
            atexit.register(shutil.rmtree, root, ignore_errors=True)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self._last_sweep = time.monotonic()

    def path(self, request: gr.Request | None) -> Path:
        session = getattr(request, "session_hash", None) or "no-session"
        # The session hash comes from the client; never let it name anything outside root.
        return self.root / re.sub(r"[^A-Za-z0-9_-]", "_", str(session))[:64]

    def open(self, request: gr.Request | None = None) -> None:
        self.path(request).mkdir(parents=True, exist_ok=True)

    def close(self, request: gr.Request | None = None) -> None:
        shutil.rmtree(self.path(request), ignore_errors=True)

    def run_dir(self, request: gr.Request | None, task: str) -> Path:
        if time.monotonic() - self._last_sweep > SWEEP_EVERY_S:
            self.sweep()
        folder = self.path(request)
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{task}-", dir=folder))

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove session folders whose newest entry is older than ``max_age_s``; returns them."""
        self._last_sweep = time.monotonic()
        now = time.time() if now is None else now
        removed = []
        for folder in self.sessions():
            try:
                newest = max([folder.stat().st_mtime, *(entry.stat().st_mtime for entry in folder.iterdir())])
            except OSError:
                continue  # removed meanwhile
            if now - newest > self.max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def sessions(self) -> list[Path]:
        """Session folders that exist now."""
        return sorted(path for path in self.root.iterdir() if path.is_dir()) if self.root.is_dir() else []

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


_SERVED: list[tuple[weakref.ref, SessionFolders]] = []


def clean_up_on_terminate(blocks: Any, sessions: SessionFolders) -> None:
    """On SIGTERM (a Space or container stopping the app), close ``blocks`` (Gradio deletes its cached copies)
    and remove our own session root, then end as SIGTERM would. Installed once per process, from the main
    thread, and only where nobody else handles SIGTERM; every app built in the process is cleaned."""
    _SERVED.append((weakref.ref(blocks), sessions))
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_terminate or current not in (signal.SIG_DFL, None):
        return
    signal.signal(signal.SIGTERM, _on_terminate)


def _on_terminate(signum: int, frame: Any) -> None:
    for blocks_ref, sessions in _SERVED:
        blocks = blocks_ref()
        try:
            if blocks is not None:
                blocks.close()
        except Exception:  # still remove the folders, and still terminate
            logger.warning("closing the app on SIGTERM failed", exc_info=True)
        if sessions.owns_root:
            sessions.remove_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def zip_folder(folder: Path) -> Path:
    """``folder`` as ``folder.zip`` beside it (for downloading a set of frames in one file)."""
    return Path(shutil.make_archive(str(folder), "zip", root_dir=folder))


# --- errors and progress ------------------------------------------------------------------------

PREVIEW_HINT = f'To try the interface meanwhile, choose the tiny model ({PREVIEW_LABEL}; API: model_id="tiny").'
GENERIC_ERROR = "Something went wrong on our side; it has been logged. Try again, or with other settings."
OUT_OF_MEMORY = (
    "The GPU ran out of memory. Try smaller settings: a lower mesh resolution, fewer frames, "
    "or try again when fewer people are using the app."
)


def user_errors(fn: F) -> F:
    """Show library errors to the user: ``DemoError`` -> its message, OOM -> a hint, others -> logged."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except CheckpointError as error:  # the page falls back to the preview model in its guard step; API calls get this
            raise gr.Error(f"{error} {PREVIEW_HINT}", title="Model not available", print_exception=False) from None
        except DemoError as error:
            raise gr.Error(str(error), title="Cannot do that", print_exception=False) from None
        except torch.cuda.OutOfMemoryError:
            logger.warning("out of GPU memory in %s", fn.__name__, exc_info=True)
            raise gr.Error(OUT_OF_MEMORY, title="Out of GPU memory", print_exception=False) from None
        except Exception:
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def progress_fn(progress: gr.Progress | None) -> ProgressFn | None:
    """The library's ``ProgressFn`` (fraction, message) driving a ``gr.Progress`` bar."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(fraction, desc=message)

    return report


NO_SURFACE = (
    "This face has no 3D surface at the standard density level (its density never reaches it), so there is no "
    "mesh; the image and depth are shown. Another seed or truncation usually has one."
)


def mesh_or_warning(result: Any, name: str) -> str | None:
    """The .glb of ``name`` from a ``GenerateResult``, or None with a visible warning when it has no surface."""
    if name in getattr(result, "mesh_errors", {}):
        gr.Warning(NO_SURFACE)
        return None
    return str(Path(result.outdir) / f"{name}.glb")


# --- images on the page ---------------------------------------------------------------------------

DISPLAY_MIN_SIDE = 256
"""Images shorter than this are shown enlarged (the tiny model renders 32 px; depth previews are at the neural
rendering resolution, 128 px for the 512 models): boxes of 250-300 px would otherwise blur or stamp them."""
DISPLAY_MAX_SIDE = 4096


def display_copy(path: str | Path, out_dir: Path, *, min_side: int = DISPLAY_MIN_SIDE) -> str:
    """The image at ``path`` for showing on the page: itself when large enough, else a copy enlarged by a whole
    factor with nearest neighbour (every pixel an exact k x k block, nothing invented), named ``<stem>_x<k>.png``
    in ``out_dir/display``. Downloads always list the true-size file; only the image boxes get the copy."""
    path = Path(path)
    image = media.load_png(path)
    height, width = image.shape[:2]
    factor = min(-(-min_side // min(height, width)), DISPLAY_MAX_SIDE // max(height, width))
    if factor <= 1:
        return str(path)
    enlarged = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    return str(media.save_png(out_dir / "display" / f"{path.stem}_x{factor}.png", enlarged))


# --- reading widget values ----------------------------------------------------------------------


def read_number(value: Any, name: str, low: float, high: float) -> float:
    """A finite number within [low, high] from a widget (or an API caller), else InputError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number; got {value!r}.") from None
    if not np.isfinite(number) or not low <= number <= high:
        raise InputError(f"{name} must be between {_plain(low)} and {_plain(high)}; got {value!r}.")
    return number


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def read_int(value: Any, name: str, low: int, high: int) -> int:
    number = read_number(value, name, low, high)
    if number != int(number):
        raise InputError(f"{name} must be a whole number; got {value!r}.")
    return int(number)


def read_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    for choice in choices:
        if value == choice or str(value) == str(choice):
            return choice
    raise InputError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}.")


def file_paths(files: Any) -> list[str]:
    """Paths from a ``gr.File`` value: None, a path, or a list of paths / file objects."""
    if files is None:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    return [str(getattr(item, "name", item)) for item in items if item]


# --- identities ---------------------------------------------------------------------------------

FACE_SOURCES = ("seed", "my photo", "face file")
"""Where a tab's face comes from: a seed, the session's photo face (Photo -> 3D), or an uploaded face/ws file."""
NO_PHOTO_FACE = (
    "There is no photo face in this session yet: reconstruct a photo in the Photo → 3D tab first, "
    "or choose a seed or a face file."
)


def face_for(
    model: TriplaneGenerator, source: str, seed: Any, truncation: Any, face_file: Any, current_face: str | None
) -> Face:
    """The one face a tab renders, from its source choice (see :data:`FACE_SOURCES`)."""
    source = read_choice(source, "Face from", FACE_SOURCES)
    if source == "seed":
        return face_from_seed(
            model, read_int(seed, "Seed", 0, 2**32 - 1), truncation_psi=read_number(truncation, "Truncation", 0.0, 1.0)
        )
    if source == "my photo":
        if not current_face:
            raise InputError(NO_PHOTO_FACE)
        return load_face(current_face, model)
    paths = file_paths(face_file)
    if not paths:
        raise InputError("Upload a face file (.face.safetensors from Photo → 3D) or a ws.npy from Generate.")
    faces = load_faces(paths[:1], model)
    if len(faces) != 1:
        raise InputError(f"The latent file holds {len(faces)} identities; this tab shows one. Use a ws.npy from Generate.")
    return faces[0]


def faces_for(
    model: TriplaneGenerator, *, seeds_text: str, truncation: Any, face_files: Any, current_face: str | None,
    use_photo: bool = False,
) -> list[Face]:
    """Keyframe faces in order: the session's photo face (when asked), then uploaded files, then seeds."""
    faces: list[Face] = []
    if use_photo:
        if not current_face:
            raise InputError(NO_PHOTO_FACE)
        faces.append(load_face(current_face, model))
    paths = file_paths(face_files)
    if len(paths) > MAX_KEYFRAMES:
        raise InputError(f"Use at most {MAX_KEYFRAMES} identities at a time; got {len(paths)} files.")
    faces += load_faces(paths, model)
    text = str(seeds_text or "").strip()
    if text:
        seeds = parse_seeds(text)
        if len(faces) + len(seeds) > MAX_KEYFRAMES:
            raise InputError(f"Use at most {MAX_KEYFRAMES} identities at a time; got {len(faces) + len(seeds)}.")
        psi = read_number(truncation, "Truncation", 0.0, 1.0)
        faces += [face_from_seed(model, seed, truncation_psi=psi) for seed in seeds]
    if len(faces) > MAX_KEYFRAMES:
        raise InputError(f"Use at most {MAX_KEYFRAMES} identities at a time; got {len(faces)}.")
    if not faces:
        raise InputError("Give seeds such as '0, 5, 11' (or ranges '0-3'), upload face or ws.npy files, or use your photo.")
    return faces


# --- what the tabs are built with ------------------------------------------------------------------


@dataclass
class UIContext:
    """What ``build_demo`` hands to each tab's ``build(ctx)``."""

    models: ModelProvider
    sessions: SessionFolders
    model_menu: gr.Dropdown
    """The model menu above the tabs; its value (a model id) is every action's first input."""
    model_status: gr.Markdown
    current_face: gr.State | None = None
    """The session's photo face: the path of the .face.safetensors Photo -> 3D made last (or None)."""
    gpu_concurrency: int = 1
    """Rendering calls run at once (they share the concurrency id ``'gpu'``)."""
    on_page_load: list = field(default_factory=list)
    """(fn, inputs, outputs[, options]) a tab wants run when a page opens: ``build_demo`` registers them on ``demo.load``,
    private and unqueued unless ``options`` (keyword arguments of ``demo.load``) say otherwise."""

    def run_with_model(self, trigger: gr.Button, fn: Callable[..., Any], inputs: list, outputs: list, *, api_name: str):
        """``trigger`` first makes sure the chosen model is loaded (on the CPU, with progress; the preview
        model when it cannot be had), then runs ``fn(model_id, *inputs)``, published as ``/api_name``."""
        load = trigger.click(
            self.load_model, self.model_menu, [self.model_menu, self.model_status],
            api_visibility="private", concurrency_limit=None, show_progress="minimal",
        )
        return load.success(
            fn, [self.model_menu, *inputs], outputs, api_name=api_name,
            concurrency_id="gpu", concurrency_limit=self.gpu_concurrency,
        )

    def load_model(self, model_id: str, progress=gr.Progress()) -> tuple[str, str]:  # noqa: B008 (Gradio injects it)
        """Guard step before a render: load (download, convert) the model outside any GPU handler."""
        try:
            self.models.get(model_id, progress=progress_fn(progress))
        except CheckpointError as error:
            gr.Warning(f"{model_id} is not available, so the tiny model runs ({PREVIEW_LABEL}). "
                       "The note under the model menu says how to provide it.")
            return TINY_ID, self.models.missing_message(model_id, error)
        except DemoError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return model_id, self.models.status(model_id)
