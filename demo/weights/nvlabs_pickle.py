"""Safe reader of official NVlabs snapshot pickles (EG3D / PanoHead ``network-snapshot-*.pkl``).

What it is: a restricted unpickler that turns an official training snapshot into plain data (class
names, constructor kwargs, instance attributes and a ``state_dict`` of float32 tensors) without
importing or running any code from the checkpoint.

Why: the official pickles are written with NVlabs' ``torch_utils.persistence``. Every network object
in them is a call to ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` dict
carries the full Python source of the defining module in ``module_src``; the official loader
``exec``s that source, and plain ``pickle.load`` would also import and call whatever globals the
file names. Loading an untrusted pickle that way runs arbitrary code. This module never does: it
never imports ``torch_utils``, ``dnnlib`` or ``training``, never calls ``exec``/``eval``, never reads
``module_src``, and unpickles only through :class:`RestrictedUnpickler`.

The allow-list (``shared/reference/eg3d/pickle_globals.txt``), each mapped to an inert local
callable:

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentStandIn`, built from
  the meta dict after checking its shape (``type == 'class'``, integer ``version``, string
  ``module_src`` that is ignored, a known ``class_name``, a dict ``state``);
- ``dnnlib.util.EasyDict`` -> :class:`EasyDictStandIn` (a plain ``dict`` subclass);
- ``training.triplane.OSGDecoder``, ``training.volumetric_rendering.renderer.ImportanceRenderer``,
  ``training.volumetric_rendering.ray_sampler.RaySampler``,
  ``training.volumetric_rendering.ray_marcher.MipRayMarcher2``,
  ``torch.nn.modules.container.Sequential``, ``torch.nn.modules.activation.Softplus`` -> inert
  :class:`ModulePathStandIn` subclasses that only record their pickled ``__dict__``;
- ``collections.OrderedDict`` -> ``collections.OrderedDict``;
- ``numpy.dtype`` and ``numpy.core.multiarray.scalar`` (``numpy._core.multiarray.scalar`` for numpy
  >= 2 writers) -> a local decoder of numeric scalars (they become Python ``float``/``int``/``bool``;
  numpy is not used);
- ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` -> local functions that validate the
  arguments and view the storage as a plain tensor;
- ``torch.storage._load_from_bytes`` -> ``torch.load(..., weights_only=True)`` of the embedded legacy
  storage stream (PyTorch's own restricted unpickler, which only admits ``torch.FloatStorage`` and
  friends there).

Any other global raises :class:`~demo.errors.UnsafeCheckpointError` naming it; the file is then not
loaded and nothing in it has been executed.
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import logging
import os
import pickle
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from demo.errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "ALLOWED_GLOBALS",
    "PERSISTENT_CLASSES",
    "EasyDictStandIn",
    "ModulePathStandIn",
    "ModuleStandIn",
    "OfficialGenerator",
    "PersistentStandIn",
    "RestrictedUnpickler",
    "module_state_dict",
    "read_official_generator",
    "read_snapshot",
    "sha256_file",
    "to_plain",
]

logger = logging.getLogger(__name__)

#: Persistent classes of EG3D and PanoHead, by the bare ``class_name`` their pickles carry, with the
#: module they come from (for reporting only; nothing is imported).
PERSISTENT_CLASSES: dict[str, str] = {
    name: f"training.{module}.{name}"
    for module, names in {
        "triplane": ("TriPlaneGenerator", "OSGDecoder"),
        "networks_stylegan2": (
            "Generator",
            "MappingNetwork",
            "FullyConnectedLayer",
            "SynthesisNetwork",
            "SynthesisBlock",
            "SynthesisLayer",
            "ToRGBLayer",
            "Conv2dLayer",
            "Discriminator",
            "DiscriminatorBlock",
            "DiscriminatorEpilogue",
            "MinibatchStdLayer",
        ),
        "superresolution": (
            "SuperresolutionHybrid2X",
            "SuperresolutionHybrid4X",
            "SuperresolutionHybrid8X",
            "SuperresolutionHybrid8XDC",
            "SuperresolutionHybridDeepfp32",
            "SynthesisBlockNoUp",
        ),
        "dual_discriminator": (
            "DualDiscriminator",
            "SingleDiscriminator",
            "DummyDualDiscriminator",
            "MaskDualDiscriminator",
            "MaskDualDiscriminatorV2",
        ),
        "augment": ("AugmentPipe",),
        # PanoHead makes its renderer and ray marcher persistent (shared/docs/panohead.md section 3.9).
        "volumetric_rendering.renderer": ("ImportanceRenderer",),
        "volumetric_rendering.ray_marcher": ("MipRayMarcher2",),
    }.items()
    for name in names
}

_META_KEYS = frozenset({"type", "version", "module_src", "class_name", "state"})


# --------------------------------------------------------------------------------------------------
# Inert stand-ins


class EasyDictStandIn(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict, no attribute magic."""

    def __setstate__(self, state: Any) -> None:
        # EasyDict pickles carry no BUILD state; accept a dict for robustness, refuse anything else.
        if state is None:
            return
        if not isinstance(state, dict):
            raise CheckpointError(f"EasyDict state must be a dict, got {type(state).__name__}")
        self.update(state)


class ModuleStandIn:
    """Common view of a pickled ``torch.nn.Module`` ``__dict__`` (``state``), never executed."""

    class_name: str = ""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state: dict[str, Any] = {} if state is None else state

    def _part(self, key: str) -> dict[str, Any]:
        value = self.state.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise CheckpointError(f"{self.class_name}.{key} is a {type(value).__name__}, expected a dict")
        for name in value:
            if not isinstance(name, str):
                raise CheckpointError(f"{self.class_name}.{key} has a non-string key {name!r}")
        return value

    @property
    def parameters(self) -> dict[str, torch.Tensor | None]:
        """``_parameters`` (dict or OrderedDict depending on the torch version that wrote it)."""
        return self._part("_parameters")

    @property
    def buffers(self) -> dict[str, torch.Tensor | None]:
        """``_buffers``, including non-persistent ones."""
        return self._part("_buffers")

    @property
    def submodules(self) -> dict[str, ModuleStandIn | None]:
        """``_modules``: child stand-ins by attribute name."""
        return self._part("_modules")

    @property
    def non_persistent_buffers(self) -> set[str]:
        value = self.state.get("_non_persistent_buffers_set", set())
        if value is None:
            return set()
        if not isinstance(value, (set, frozenset, list, tuple)):
            raise CheckpointError(
                f"{self.class_name}._non_persistent_buffers_set is a {type(value).__name__}, expected a set"
            )
        return set(value)

    @property
    def attributes(self) -> dict[str, Any]:
        """Plain instance attributes: public, not ``training``, not tensors, not modules."""
        return {
            key: to_plain(value)
            for key, value in self.state.items()
            if isinstance(key, str)
            and not key.startswith("_")
            and key != "training"
            and not isinstance(value, (torch.Tensor, ModuleStandIn))
        }

    def state_dict(self, *, source: str = "<pickle>") -> dict[str, torch.Tensor]:
        """What ``nn.Module.state_dict()`` would return for the original module; see :func:`module_state_dict`."""
        return module_state_dict(self, source=source)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.class_name}>"


class PersistentStandIn(ModuleStandIn):
    """Record of one ``_reconstruct_persistent_obj(meta)`` call; ``module_src`` is dropped unread."""

    def __init__(self, class_name: str, version: int, state: dict[str, Any]) -> None:
        super().__init__(state)
        self.class_name = class_name
        self.version = version

    @property
    def init_args(self) -> tuple:
        value = self.state.get("_init_args", ())
        if not isinstance(value, (tuple, list)):
            raise CheckpointError(f"{self.class_name}._init_args is a {type(value).__name__}, expected a tuple")
        return tuple(value)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        value = self.state.get("_init_kwargs", {})
        if not isinstance(value, dict):
            raise CheckpointError(f"{self.class_name}._init_kwargs is a {type(value).__name__}, expected a dict")
        return value


class ModulePathStandIn(ModuleStandIn):
    """Base of the stand-ins for classes pickled by module path (NEWOBJ + BUILD of their ``__dict__``)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ModulePathStandIn:
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Reached only if a pickle calls the class (REDUCE) instead of NEWOBJ; records nothing.
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            if slots is not None:
                raise CheckpointError(f"{self.class_name} has unexpected slot state")
        if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
            raise CheckpointError(f"{self.class_name} state must be a dict with string keys")
        self.state = dict(state)


def _module_path_class(qualified_name: str) -> type[ModulePathStandIn]:
    short = qualified_name.rsplit(".", 1)[1]
    return type(f"{short}StandIn", (ModulePathStandIn,), {"class_name": qualified_name, "__module__": __name__})


_MODULE_PATH_CLASSES: dict[tuple[str, str], type[ModulePathStandIn]] = {
    tuple(name.rsplit(".", 1)): _module_path_class(name)  # type: ignore[misc]
    for name in (
        "training.triplane.OSGDecoder",
        "training.volumetric_rendering.renderer.ImportanceRenderer",
        "training.volumetric_rendering.ray_sampler.RaySampler",
        "training.volumetric_rendering.ray_marcher.MipRayMarcher2",
        "torch.nn.modules.container.Sequential",
        "torch.nn.modules.activation.Softplus",
    )
}


class _NumpyDType:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` of a numeric scalar type; BUILD sets the byte order."""

    # numpy dtype code -> struct format.
    _FORMATS: ClassVar[dict[str, str]] = {
        "b1": "?",
        "?": "?",
        "i1": "b",
        "i2": "h",
        "i4": "i",
        "i8": "q",
        "u1": "B",
        "u2": "H",
        "u4": "I",
        "u8": "Q",
        "f2": "e",
        "f4": "f",
        "f8": "d",
    }

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(spec, str):
            raise CheckpointError(f"numpy dtype spec must be a string, got {type(spec).__name__}")
        order = "<"
        if spec[:1] in ("<", ">", "=", "|"):
            order, spec = spec[0], spec[1:]
        if spec not in self._FORMATS:
            raise CheckpointError(f"numpy dtype {spec!r} is not a numeric scalar type this loader reads")
        self.spec = spec
        self.order = order

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or not isinstance(state[1], str):
            raise CheckpointError("numpy dtype has a malformed pickled state")
        if state[1] not in ("<", ">", "=", "|"):
            raise CheckpointError(f"numpy dtype byte order {state[1]!r} is invalid")
        if any(item is not None for item in state[2:5]):
            raise CheckpointError("structured or sub-array numpy dtypes are not supported")
        self.order = state[1]

    def decode(self, data: Any) -> bool | int | float:
        fmt = self._FORMATS[self.spec]
        if not isinstance(data, bytes) or len(data) != struct.calcsize(fmt):
            raise CheckpointError(f"numpy scalar of dtype {self.spec} has {len(data)!r} bytes of data")
        order = ">" if self.order == ">" else "<" if self.order in ("<", "|") else "="
        return struct.unpack(order + fmt, data)[0]


def _numpy_scalar(dtype: Any, data: Any = None) -> bool | int | float:
    if not isinstance(dtype, _NumpyDType):
        raise CheckpointError("numpy scalar without a numeric dtype")
    return dtype.decode(data)


def _check_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointError(f"tensor {what} must be a non-negative int, got {value!r}")
    return value


@dataclass(frozen=True)
class _Storage:
    """A storage read from a ``_load_from_bytes`` payload: raw bytes plus the element dtype."""

    untyped: torch.UntypedStorage
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return self.untyped.nbytes() // self.dtype.itemsize


_STORAGE_DTYPES = frozenset({torch.float32, torch.float16, torch.float64, torch.bfloat16, torch.int64, torch.int32,
                             torch.int16, torch.int8, torch.uint8, torch.bool})
"""Element types an official snapshot's tensors have (complex and quantised storages are refused)."""


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor storage is a {type(storage).__name__}, not a storage payload")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) or len(size) != len(stride):
        raise CheckpointError("tensor size and stride must be sequences of the same length")
    offset = _check_int(storage_offset, "offset")
    size = tuple(_check_int(value, "size") for value in size)
    stride = tuple(_check_int(value, "stride") for value in stride)
    if backward_hooks or metadata:
        raise CheckpointError("tensor carries backward hooks or metadata, which official snapshots never do")
    # set_() would silently grow the storage, so bounds are checked here.
    if all(size):
        last = offset + sum((extent - 1) * step for extent, step in zip(size, stride))
        if last >= storage.numel:
            raise CheckpointError(f"tensor of size {size} reaches past its storage of {storage.numel} elements")
        # A view with more elements than its storage repeats elements (a stride of 0, overlapping steps):
        # torch.save never writes one, and copying it (as conversion does) could take any amount of memory.
        if math.prod(size) > storage.numel:
            raise CheckpointError(
                f"tensor of size {size} with strides {stride} repeats the elements of its {storage.numel}-element storage"
            )
    return torch.empty(0, dtype=storage.dtype).set_(storage.untyped, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"parameter data is a {type(data).__name__}, not a tensor")
    if backward_hooks:
        raise CheckpointError("parameter carries backward hooks, which official snapshots never do")
    return data


# --------------------------------------------------------------------------------------------------
# The unpickler


#: Every global an official snapshot may reference (the outer pickle), as ``module.name``.
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    {
        "torch_utils.persistence._reconstruct_persistent_obj",
        "torch.storage._load_from_bytes",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "collections.OrderedDict",
        "dnnlib.util.EasyDict",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
    }
    | {f"{module}.{name}" for module, name in _MODULE_PATH_CLASSES}
)


def _refusal(source: str, detail: str) -> str:
    return (
        f"Refused to load {source}: {detail}. The file was not loaded and nothing in it was executed "
        "(its embedded module source is never run). Use only official checkpoints from the registry, "
        "or files from a source you trust."
    )


class _AllowedCall:
    """An allowed function as the unpickler hands it out: callable, but a BUILD opcode aimed at it (which would
    set attributes such as ``__defaults__`` on the shared function for every later load) is refused."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(
            "the pickle tries to change an allowed function's attributes (BUILD on a global); official snapshots never do"
        )


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS`, each to an inert local stand-in.

    Use ``RestrictedUnpickler(file, source=str(path)).load()``. Any other global raises
    :class:`UnsafeCheckpointError` naming it and ``source``.
    """

    def __init__(self, file: Any, *, source: str = "<pickle>") -> None:
        super().__init__(file)
        self.source = source
        self._globals: dict[tuple[str, str], Callable[..., Any]] = {
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): self._reconstruct_persistent_obj,
            ("torch.storage", "_load_from_bytes"): self._load_storage,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("dnnlib.util", "EasyDict"): EasyDictStandIn,
            ("numpy.core.multiarray", "scalar"): _numpy_scalar,
            ("numpy._core.multiarray", "scalar"): _numpy_scalar,
            ("numpy", "dtype"): _NumpyDType,
            **_MODULE_PATH_CLASSES,
        }

    def find_class(self, module: str, name: str) -> Any:
        found = self._globals.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                _refusal(
                    self.source, f"the pickle asks for the global '{module}.{name}', which is not on the allow-list"
                )
            )
        if isinstance(found, type):
            # Classes: BUILD on the class object itself finds their __setstate__ unbound (a TypeError) or, for
            # OrderedDict, a read-only type; the stand-in classes have no state worth changing.
            return found
        return _AllowedCall(found)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(
            _refusal(self.source, "the pickle uses a persistent id, which official snapshots never do")
        )

    def _reconstruct_persistent_obj(self, meta: Any) -> PersistentStandIn:
        def refuse(detail: str) -> UnsafeCheckpointError:
            return UnsafeCheckpointError(_refusal(self.source, f"a persistent-object record is malformed ({detail})"))

        if type(meta) is not dict:
            raise refuse(f"meta is a {type(meta).__name__}, not a dict")
        if set(meta) != _META_KEYS:
            raise refuse(f"meta keys are {sorted(map(repr, meta))}, expected {sorted(_META_KEYS)}")
        if meta["type"] != "class":
            raise refuse(f"type is {meta['type']!r}, expected 'class'")
        version = meta["version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise refuse(f"version is {version!r}, expected an int")
        if not isinstance(meta["module_src"], str):
            raise refuse("module_src is not a string")
        class_name = meta["class_name"]
        if not isinstance(class_name, str):
            raise refuse(f"class_name is a {type(class_name).__name__}, not a string")
        qualified = _qualify_class_name(class_name)
        if qualified is None:
            raise refuse(f"class_name {class_name[:100]!r} is not a known EG3D/PanoHead class")
        state = meta["state"]
        if type(state) is not dict or not all(isinstance(key, str) for key in state):
            raise refuse(f"state is a {type(state).__name__}, not a dict with string keys")
        return PersistentStandIn(qualified, version, state)

    def _load_storage(self, data: Any) -> _Storage:
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError(f"Checkpoint {self.source} is corrupt: a tensor storage payload is not bytes.")
        try:
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch explains at length; keep only what names the problem.
            text = str(exc)
            refused = re.search(r"GLOBAL ([\w.]+)", text)
            detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
            if refused:
                raise UnsafeCheckpointError(
                    _refusal(
                        self.source,
                        f"a tensor storage payload references '{refused.group(1)}', which PyTorch's weights-only "
                        "unpickler refuses",
                    )
                ) from None
            reason = detail.group(1) if detail else text.strip().splitlines()[0] if text.strip() else "unreadable"
            raise CheckpointError(
                f"Checkpoint {self.source} is corrupt: a tensor storage payload could not be read ({reason[:200]}). "
                "Download the file again."
            ) from None
        except Exception as exc:  # noqa: BLE001 - any failure of the inner stream means a corrupt file
            raise CheckpointError(
                f"Checkpoint {self.source} is corrupt: a tensor storage payload could not be read "
                f"({type(exc).__name__}: {str(exc)[:200]}). Download the file again."
            ) from None
        if not isinstance(storage, torch.storage.TypedStorage):
            raise CheckpointError(
                f"Checkpoint {self.source} is corrupt: a tensor storage payload holds a {type(storage).__name__}, not a storage."
            )
        # The private attribute avoids TypedStorage's deprecation warning (untyped() warns).
        untyped = getattr(storage, "_untyped_storage", None)
        if not isinstance(untyped, torch.UntypedStorage) or untyped.device.type != "cpu":
            raise CheckpointError(
                f"Checkpoint {self.source} is corrupt: a tensor storage payload is not a CPU storage."
            )
        if storage.dtype not in _STORAGE_DTYPES:
            raise CheckpointError(
                f"Checkpoint {self.source} is corrupt: a tensor storage holds {storage.dtype}, which official snapshots never do."
            )
        if untyped.nbytes() % storage.dtype.itemsize:
            raise CheckpointError(f"Checkpoint {self.source} is corrupt: a tensor storage has a partial element.")
        # The legacy stream ends with the element count and the raw bytes of its one storage; a stream whose
        # key list skips the storage leaves it unread (uninitialised memory): the bytes must be the file's.
        nbytes = untyped.nbytes()
        count_at = len(data) - nbytes - 8
        read = torch.empty(0, dtype=torch.uint8).set_(untyped).numpy().tobytes() if nbytes else b""
        if count_at < 0 or struct.unpack_from("<q", data, count_at)[0] * storage.dtype.itemsize != nbytes or (
            memoryview(data)[count_at + 8 :] != read
        ):
            raise CheckpointError(
                f"Checkpoint {self.source} is corrupt: a tensor storage payload does not hold its data (it would load "
                "as whatever memory held). Download the file again."
            )
        return _Storage(untyped, storage.dtype)


def _qualify_class_name(class_name: str) -> str | None:
    """``'TriPlaneGenerator'`` -> ``'training.triplane.TriPlaneGenerator'``; None if not a known class."""
    if class_name in PERSISTENT_CLASSES:
        return PERSISTENT_CLASSES[class_name]
    if class_name in PERSISTENT_CLASSES.values():
        return class_name
    return None


# --------------------------------------------------------------------------------------------------
# Plain data


def to_plain(value: Any) -> Any:
    """Stand-ins to plain Python: EasyDict/OrderedDict -> dict (recursively), lists/tuples kept.

    Numpy scalars are already Python numbers (see :class:`_NumpyDType`). A self-referencing container,
    which only a crafted pickle can hold, raises CheckpointError.
    """
    active: set[int] = set()
    done: dict[int, Any] = {}  # shared references are converted once: the walk is linear in the pickle's size

    def convert(item: Any) -> Any:
        if not isinstance(item, (dict, list, tuple)):
            return item
        if id(item) in done:
            return done[id(item)]
        if id(item) in active:
            raise CheckpointError("a container refers to itself")
        active.add(id(item))
        try:
            if isinstance(item, dict):
                converted: Any = {key: convert(entry) for key, entry in item.items()}
            else:
                converted = [convert(entry) for entry in item]
                converted = converted if isinstance(item, list) else tuple(converted)
        finally:
            active.discard(id(item))
        done[id(item)] = converted
        return converted

    return convert(value)


def _plain_tensor(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"state entry {name!r} is a {type(value).__name__}, not a tensor")
    tensor = value.detach()
    if type(tensor) is not torch.Tensor:
        tensor = tensor.as_subclass(torch.Tensor)
    if tensor.is_floating_point() and tensor.dtype != torch.float32:
        tensor = tensor.float()
    return tensor


def module_state_dict(module: ModuleStandIn, *, source: str = "<pickle>") -> dict[str, torch.Tensor]:
    """What ``nn.Module.state_dict()`` gives for the pickled module: parameters and persistent buffers.

    Names are the official dotted paths; the order is torch's (own parameters, own buffers, then each
    child in registration order). ``None`` parameters/buffers and non-persistent buffers are skipped.
    Tensor attributes that were never registered (``renderer.plane_axes``) are not included.
    """
    out: dict[str, torch.Tensor] = {}
    active: set[int] = set()

    def visit(node: ModuleStandIn, prefix: str) -> None:
        if id(node) in active:
            raise CheckpointError(
                f"Checkpoint {source} is corrupt: the module tree has a cycle at {prefix or '<root>'!r}."
            )
        active.add(id(node))
        try:
            skip = node.non_persistent_buffers
            for name, value in node.parameters.items():
                if value is not None:
                    out[prefix + name] = _plain_tensor(value, prefix + name)
            for name, value in node.buffers.items():
                if value is not None and name not in skip:
                    out[prefix + name] = _plain_tensor(value, prefix + name)
            for name, child in node.submodules.items():
                if child is None:
                    continue
                if not isinstance(child, ModuleStandIn):
                    raise CheckpointError(
                        f"Checkpoint {source} is corrupt: submodule {prefix + name!r} is a {type(child).__name__}."
                    )
                visit(child, f"{prefix}{name}.")
        except CheckpointError as exc:
            if source in str(exc):
                raise
            raise CheckpointError(f"Checkpoint {source} is corrupt: {exc}") from None
        finally:
            active.discard(id(node))

    visit(module, "")
    return out


# --------------------------------------------------------------------------------------------------
# Public API


@dataclass
class OfficialGenerator:
    """An official generator read from a snapshot, as plain data."""

    class_name: str
    """Qualified class name, e.g. ``'training.triplane.TriPlaneGenerator'``."""
    init_args: tuple
    init_kwargs: dict[str, Any]
    """Constructor kwargs as plain Python (EasyDict -> dict, numpy scalars -> float/int, tuples kept)."""
    attributes: dict[str, Any]
    """Plain instance attributes of the top object (``neural_rendering_resolution``, ``rendering_kwargs``...)."""
    state_dict: dict[str, torch.Tensor]
    """``nn.Module.state_dict()`` of the original: official dotted names, float32 tensors."""
    path: str


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"Cannot read checkpoint {path}: {exc.strerror or exc}.") from exc
    return digest.hexdigest()


def read_snapshot(path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> Any:
    """Unpickle an official snapshot with :class:`RestrictedUnpickler`.

    Args:
        path: a ``network-snapshot-*.pkl`` (or an official release such as ``ffhq512-128.pkl``).
        expected_sha256: if given, the file's sha256 is checked before anything is unpickled.

    Returns:
        The top-level object: for a snapshot, the dict ``{training_set_kwargs, G, D, G_ema,
        augment_pipe}`` with networks as :class:`PersistentStandIn`.

    Raises:
        CheckpointError: missing, empty, truncated or non-pickle file; hash mismatch.
        UnsafeCheckpointError: the pickle references anything outside the allow-list.
    """
    source = str(path)
    file = Path(path)
    if expected_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", expected_sha256.strip()):
        raise ValueError(f"expected_sha256 must be 64 hex digits, got {expected_sha256!r}")
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "does not exist"
        raise CheckpointError(f"Checkpoint {source} {what}. Check the path, or download it again.")
    if file.stat().st_size == 0:
        raise CheckpointError(
            f"Checkpoint {source} is empty (0 bytes); the download probably failed. Download it again."
        )
    if expected_sha256 is not None:
        actual = sha256_file(file)
        if actual != expected_sha256.strip().lower():
            raise CheckpointError(
                f"Checkpoint {source} has sha256 {actual}, expected {expected_sha256.strip().lower()}. "
                "The download may be incomplete or the file replaced; delete it and download it again. "
                "It was not unpickled."
            )
    with open(file, "rb") as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04":
        raise CheckpointError(
            f"Checkpoint {source} is a zip archive (a torch.save file?), not an NVlabs pickle. Official EG3D "
            "snapshots are plain pickles such as ffhq512-128.pkl; converted checkpoints are loaded from safetensors."
        )
    try:
        with open(file, "rb") as handle:
            top = RestrictedUnpickler(handle, source=source).load()
    except CheckpointError as exc:
        if source in str(exc):
            raise
        # Raised by a stand-in, which does not know the file name.
        raise type(exc)(f"Checkpoint {source} is corrupt: {exc}. Download it again.") from None
    except OSError as exc:
        raise CheckpointError(f"Cannot read checkpoint {source}: {exc.strerror or exc}.") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        RecursionError,
        RuntimeError,
        ZeroDivisionError,
        UnicodeDecodeError,
        struct.error,
    ) as exc:
        raise CheckpointError(
            f"Checkpoint {source} is not a readable pickle ({type(exc).__name__}: {str(exc)[:200]}). It may be "
            "truncated or not an EG3D/PanoHead snapshot; download it again."
        ) from exc
    logger.debug("read %s safely (%s)", source, type(top).__name__)
    return top


def read_official_generator(
    path: str | os.PathLike[str], *, key: str = "G_ema", expected_sha256: str | None = None
) -> OfficialGenerator:
    """Read one network of an official snapshot (``G_ema`` by default) as plain data.

    A pickle whose top object is itself a persistent network (a bare ``TriPlaneGenerator``) is accepted
    as is and ``key`` is ignored. Other snapshot entries (``G``, ``D``, ``augment_pipe``,
    ``training_set_kwargs``) are ignored.

    Raises:
        CheckpointError: unreadable file, hash mismatch, missing ``key``, or an entry that is not a network.
        UnsafeCheckpointError: see :func:`read_snapshot`.
    """
    source = str(path)
    top = read_snapshot(path, expected_sha256=expected_sha256)
    if isinstance(top, PersistentStandIn):
        network = top
    elif isinstance(top, dict):
        if key not in top:
            keys = ", ".join(repr(name) for name in list(top)[:20]) or "none"
            raise CheckpointError(
                f"Checkpoint {source} has no {key!r} (keys: {keys}). Is this an EG3D training snapshot? "
                "Official snapshots hold the generator under 'G_ema'."
            )
        network = top[key]
        if not isinstance(network, PersistentStandIn):
            raise CheckpointError(
                f"Checkpoint {source}: entry {key!r} is a {type(network).__name__}, not a pickled network. "
                "Is this an EG3D training snapshot?"
            )
    else:
        raise CheckpointError(
            f"Checkpoint {source} holds a {type(top).__name__}, not an EG3D snapshot dict or generator."
        )
    try:
        init_args = to_plain(network.init_args)
        init_kwargs = to_plain(network.init_kwargs)
        attributes = network.attributes
    except CheckpointError as exc:
        raise CheckpointError(f"Checkpoint {source} is corrupt: {exc}") from None
    return OfficialGenerator(
        class_name=network.class_name,
        init_args=init_args,
        init_kwargs=init_kwargs,
        attributes=attributes,
        state_dict=module_state_dict(network, source=source),
        path=source,
    )
