"""Numeric precision of a generator's heavy layers: one option, resolved per device.

``fp32`` is the official numerics: float32 everywhere on CPU; on CUDA the super-resolution blocks
the official checkpoints mark ``use_fp16`` run in float16 as the official code does. ``bf16`` and
``fp16`` run every convolution of the generator (backbone and super-resolution) in that dtype;
weights stay float32 and are cast per call, and the mapping network, the renderer (plane lookup,
decoder, compositing) and the image accumulation stay float32: on CPUs bfloat16 gathers and
transcendental functions are slower than float32, and the renderer's error would dominate. ``auto`` picks the fastest precision the device runs natively:
bfloat16 on CPUs with AVX-512 BF16 or AMX and on CUDA devices that support it, float16 on other
CUDA devices, float32 elsewhere.

The measured error of each precision against float32 is in README ("Speed") and printed by
``benchmarks/bench_official.py``.
"""

from __future__ import annotations

import torch

from demo.devices import cpu_field
from demo.errors import InputError

#: precisions a generator can run at
PRECISIONS = ("fp32", "bf16", "fp16")
#: what users may ask for: a precision or "auto"
CHOICES = ("auto", *PRECISIONS)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); read from /proc/cpuinfo."""
    flags = cpu_field("flags").split()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def supported_precisions(device: torch.device | str) -> list[str]:
    """The precisions ``device`` runs natively, fastest last (fp32 is always there)."""
    device = torch.device(device)
    if device.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    if device.type == "cpu" and cpu_has_native_bf16():
        return ["fp32", "bf16"]
    return ["fp32"]


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` ("auto" or one of :data:`PRECISIONS`) -> the precision to run on ``device``.

    Raises:
        InputError: an unknown name, or a reduced precision the device does not run natively (it
            would be slower than float32, or unsupported).
    """
    device = torch.device(device)
    supported = supported_precisions(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if "bf16" in supported else "fp16"
        return supported[-1]
    if precision not in PRECISIONS:
        raise InputError(f"precision: unknown {precision!r}; use one of {', '.join(CHOICES)}")
    if precision not in supported:
        raise InputError(
            f"precision: {precision} is not native on {device.type}"
            + (" (this CPU has no AVX-512 BF16 or AMX)" if device.type == "cpu" and precision == "bf16" else "")
            + f"; use one of {', '.join(['auto', *supported])}"
        )
    return precision


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the heavy layers compute in at ``precision``."""
    try:
        return _DTYPES[precision]
    except KeyError:
        raise InputError(f"precision: unknown {precision!r}; use one of {', '.join(PRECISIONS)}") from None
