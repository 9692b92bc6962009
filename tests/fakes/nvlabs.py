"""Writers of fake official NVlabs snapshot pickles, and of malicious pickles, for the loader tests.

:func:`write_official_snapshot` writes a file with the structure of an official EG3D
``network-snapshot-*.pkl`` (shared/docs/eg3d.md section 8) from a ``state_dict`` with official names:

- a dict ``{training_set_kwargs, G, D, G_ema, augment_pipe}``, pickled with protocol 4;
- every persistent module as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, with meta
  keys ``type``/``version``/``module_src``/``class_name`` (the bare class name) /``state`` (the module
  ``__dict__``: ``training``, ``_parameters``, ``_buffers``, ``_modules``, ``_non_persistent_buffers_set``,
  the hook dicts, ``_init_args``, ``_init_kwargs`` and plain attributes);
- OSGDecoder, ImportanceRenderer, RaySampler, MipRayMarcher2, Sequential and Softplus as NEWOBJ of the
  module-path global plus BUILD of their ``__dict__``;
- tensors as ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` over
  ``torch.storage._load_from_bytes(blob)``, each blob a legacy (non-zip) ``torch.save`` stream of one
  ``torch.FloatStorage``, written here byte by byte;
- numpy float64 attributes as ``numpy.core.multiarray.scalar(numpy.dtype('f8'), raw bytes)``.

No NVlabs module exists while writing: globals are inert :class:`_Global` markers that a pure-Python
pickler subclass writes as GLOBAL/STACK_GLOBAL opcodes, so nothing is registered in ``sys.modules`` and
neither numpy nor any eg3d code is needed. The real writer stores each module's source in
``module_src``; here it is a string that must never run.

The ``write_*`` helpers further down write pickles that *would* run a payload under ``pickle.load`` or
the official loader; each payload creates a sentinel file, so a test can prove that nothing ran.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
import shlex
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

#: What an official pickle stores in ``meta['module_src']`` is the defining module's source. Never run.
DEFAULT_MODULE_SRC = 'raise SystemExit("module_src must never run")\n'

_SR_NO_UP = ("SuperresolutionHybrid2X", "SuperresolutionHybrid4X")
_BUFFER_SUFFIXES = ("resample_filter", "noise_const", "w_avg", "dataset_label_std")
_HOOK_DICTS = (
    "_backward_pre_hooks",
    "_backward_hooks",
    "_is_full_backward_hook",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
_MODULE_PATH = {
    "OSGDecoder": "training.triplane.OSGDecoder",
    "ImportanceRenderer": "training.volumetric_rendering.renderer.ImportanceRenderer",
    "RaySampler": "training.volumetric_rendering.ray_sampler.RaySampler",
    "MipRayMarcher2": "training.volumetric_rendering.ray_marcher.MipRayMarcher2",
    "Sequential": "torch.nn.modules.container.Sequential",
    "Softplus": "torch.nn.modules.activation.Softplus",
}
_STORAGE_TYPES = {
    torch.float32: "FloatStorage", torch.float16: "HalfStorage", torch.float64: "DoubleStorage",
    torch.complex64: "ComplexFloatStorage",
}


# --------------------------------------------------------------------------------------------------
# Inert markers and the pickler that writes them


class _Global:
    """A reference to ``module.name`` written as a global opcode; the name need not exist anywhere."""

    _cache: ClassVar[dict[tuple[str, str], _Global]] = {}

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    @classmethod
    def of(cls, qualified: str) -> _Global:
        module, name = qualified.rsplit(".", 1)
        key = (module, name)
        if key not in cls._cache:
            cls._cache[key] = cls(module, name)
        return cls._cache[key]


class _Call:
    """``func(*args)``, written as REDUCE."""

    def __init__(self, func: _Global, args: tuple) -> None:
        self.func, self.args = func, args


class _NewObj:
    """``cls.__new__(cls)`` then BUILD(state): how pickle writes instances of plain classes."""

    def __init__(self, cls: _Global, state: dict[str, Any]) -> None:
        self.cls, self.state = cls, state


class _DTypeCall(_Call):
    """``numpy.dtype('f8', False, True)`` followed by BUILD of numpy's dtype state tuple."""


class _EasyDict(dict):
    """Written as ``dnnlib.util.EasyDict`` NEWOBJ + SETITEMS, as the official pickles do."""


class _NumpyFloat64:
    """Written as ``numpy.core.multiarray.scalar(numpy.dtype('f8', False, True), 8 bytes)``."""

    def __init__(self, value: float) -> None:
        self.value = float(value)


class _OfficialPickler(pickle._Pickler):  # the pure-Python pickler, so the dispatch table can be extended
    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_global_marker(self, obj: _Global) -> None:
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def _save_call(self, obj: _Call) -> None:
        self.save(obj.func)
        self.save(tuple(obj.args))
        self.write(pickle.REDUCE)
        self.memoize(obj)

    def _save_newobj(self, obj: _NewObj) -> None:
        self.save(obj.cls)
        self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self.memoize(obj)
        self.save(obj.state)
        self.write(pickle.BUILD)

    def _save_easydict(self, obj: _EasyDict) -> None:
        self.save(_Global.of("dnnlib.util.EasyDict"))
        self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self.memoize(obj)
        self._batch_setitems(iter(obj.items()))

    def _save_dtype(self, obj: _DTypeCall) -> None:
        self._save_call(obj)
        self.save((3, "<", None, None, None, -1, -1, 0))
        self.write(pickle.BUILD)

    def _save_float64(self, obj: _NumpyFloat64) -> None:
        self.save(_Global.of("numpy.core.multiarray.scalar"))
        self.save((_float64_dtype(), struct.pack("<d", obj.value)))
        self.write(pickle.REDUCE)
        self.memoize(obj)

    dispatch[_Global] = _save_global_marker
    dispatch[_Call] = _save_call
    dispatch[_NewObj] = _save_newobj
    dispatch[_EasyDict] = _save_easydict
    dispatch[_DTypeCall] = _save_dtype
    dispatch[_NumpyFloat64] = _save_float64


_DTYPE_F8: list[_DTypeCall] = []


def _float64_dtype() -> _DTypeCall:
    if not _DTYPE_F8:
        _DTYPE_F8.append(_DTypeCall(_Global.of("numpy.dtype"), ("f8", False, True)))
    return _DTYPE_F8[0]


def _dump(obj: Any, path: str | Path) -> None:
    with open(path, "wb") as handle:
        _OfficialPickler(handle, protocol=4).dump(obj)


# --------------------------------------------------------------------------------------------------
# Tensors


def legacy_storage_blob(tensor: torch.Tensor) -> bytes:
    """The legacy ``torch.save`` stream of the tensor's storage, as ``_load_from_bytes`` receives it.

    Five protocol-2 pickles (magic number, protocol 1001, sys_info, the storage as a persistent id, the
    key list), then the int64 element count and the raw little-endian data.
    """
    data = tensor.detach().contiguous().cpu()
    storage_type = _STORAGE_TYPES[data.dtype]
    out = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, out, protocol=2)
    pickle.dump(1001, out, protocol=2)
    pickle.dump(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
        out,
        protocol=2,
    )
    pid = ("storage", _Global("torch", storage_type), "0", "cpu", data.numel(), None)
    pickler = _OfficialPickler(out, protocol=2)
    pickler.persistent_id = lambda obj: pid if obj is data else None  # type: ignore[method-assign]
    pickler.dump(data)
    pickle.dump(["0"], out, protocol=2)
    out.write(struct.pack("<q", data.numel()))
    assert sys.byteorder == "little", "the legacy format stores little-endian data"
    out.write(data.numpy().tobytes())
    return out.getvalue()


def _tensor(tensor: torch.Tensor, *, parameter: bool, blob: bytes | None = None) -> _Call:
    data = tensor.detach().contiguous()
    if blob is None:
        blob = legacy_storage_blob(data)
    storage = _Call(_Global.of("torch.storage._load_from_bytes"), (blob,))
    hooks = _Call(_Global.of("collections.OrderedDict"), ())
    rebuilt = _Call(
        _Global.of("torch._utils._rebuild_tensor_v2"),
        (storage, 0, tuple(data.shape), tuple(data.stride()), False, hooks),
    )
    if not parameter:
        return rebuilt
    return _Call(_Global.of("torch._utils._rebuild_parameter"), (rebuilt, False, _Call(hooks.func, ())))


# --------------------------------------------------------------------------------------------------
# Module trees


class _Node:
    def __init__(self, path: str, class_name: str) -> None:
        self.path = path
        self.class_name = class_name  # bare name (persistent) or dotted module path
        self.parameters: dict[str, torch.Tensor | None] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.children: dict[str, _Node] = {}
        self.attributes: dict[str, Any] = {}
        self.init_args: tuple = ()
        self.init_kwargs: dict[str, Any] = {}

    @property
    def persistent(self) -> bool:
        return "." not in self.class_name


def generator_class_for_path(path: str, superresolution_class: str) -> str:
    """Official class of the TriPlaneGenerator submodule at ``path`` (bare name, or module path)."""
    parts = path.split(".") if path else []
    leaf = parts[-1] if parts else ""
    fixed = {
        "": "TriPlaneGenerator",
        "backbone": "Generator",
        "backbone.mapping": "MappingNetwork",
        "backbone.synthesis": "SynthesisNetwork",
        "superresolution": superresolution_class,
        "decoder": _MODULE_PATH["OSGDecoder"],
        "decoder.net": _MODULE_PATH["Sequential"],
        "decoder.net.1": _MODULE_PATH["Softplus"],
        "renderer": _MODULE_PATH["ImportanceRenderer"],
        "renderer.ray_marcher": _MODULE_PATH["MipRayMarcher2"],
        "ray_sampler": _MODULE_PATH["RaySampler"],
    }
    if path in fixed:
        return fixed[path]
    if leaf in ("affine", "embed") or re.fullmatch(r"fc\d+", leaf) or path in ("decoder.net.0", "decoder.net.2"):
        return "FullyConnectedLayer"
    if re.fullmatch(r"conv\d+", leaf):
        return "SynthesisLayer"
    if leaf == "torgb":
        return "ToRGBLayer"
    if len(parts) == 3 and parts[:2] == ["backbone", "synthesis"] and re.fullmatch(r"b\d+", leaf):
        return "SynthesisBlock"
    if len(parts) == 2 and parts[0] == "superresolution" and re.fullmatch(r"block\d+", leaf):
        return "SynthesisBlockNoUp" if leaf == "block0" and superresolution_class in _SR_NO_UP else "SynthesisBlock"
    raise ValueError(f"no official class known for module path {path!r}; pass it in `classes`")


def _build_tree(
    state_dict: Mapping[str, torch.Tensor | None],
    class_for_path: Callable[[str], str],
    extra_paths: tuple[str, ...] = (),
) -> _Node:
    nodes: dict[str, _Node] = {}

    def node(path: str) -> _Node:
        if path not in nodes:
            nodes[path] = _Node(path, class_for_path(path))
            if path:
                parent, _, name = path.rpartition(".")
                node(parent).children[name] = nodes[path]
        return nodes[path]

    root = node("")
    for path in extra_paths:
        node(path)
    for name, value in state_dict.items():
        owner, _, leaf = name.rpartition(".")
        target = node(owner)
        if leaf.endswith(_BUFFER_SUFFIXES):
            target.buffers[leaf] = value
        else:
            target.parameters[leaf] = value
    for item in list(nodes.values()):
        if item.class_name == _MODULE_PATH["Sequential"]:
            if "0" in item.children and "2" in item.children and "1" not in item.children:
                node(f"{item.path}.1" if item.path else "1")
            item.children = dict(sorted(item.children.items(), key=lambda kv: int(kv[0])))
    _default_attributes(nodes)
    return root


def _default_attributes(nodes: dict[str, _Node]) -> None:
    for item in nodes.values():
        name = item.class_name
        weight = item.parameters.get("weight")
        if name == "FullyConnectedLayer" and weight is not None and weight.ndim == 2:
            out_features, in_features = weight.shape
            lr = 0.01 if re.fullmatch(r"backbone\.mapping\.fc\d+", item.path) else 1.0
            item.init_args = (in_features, out_features)
            item.init_kwargs = {"lr_multiplier": lr} if lr != 1.0 else {}
            item.attributes = {
                "in_features": in_features,
                "out_features": out_features,
                "activation": "lrelu" if lr != 1.0 else "linear",
                "weight_gain": _NumpyFloat64(lr / math.sqrt(in_features)),
                "bias_gain": lr,
            }
        elif name == _MODULE_PATH["Softplus"]:
            item.attributes = {"beta": 1.0, "threshold": 20.0}
        elif name == _MODULE_PATH["OSGDecoder"]:
            item.attributes = {"hidden_dim": 64}
        elif name == _MODULE_PATH["ImportanceRenderer"]:
            item.attributes = {"plane_axes": _PLANE_AXES}
        elif name == _MODULE_PATH["RaySampler"]:
            item.attributes = dict.fromkeys(
                ("ray_origins_h", "ray_directions", "depths", "image_coords", "rendering_options")
            )


_PLANE_AXES = torch.tensor(
    [[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[0, 0, 1], [1, 0, 0], [0, 1, 0]]],
    dtype=torch.float32,
)


class _Options:
    def __init__(
        self,
        *,
        module_src: str = DEFAULT_MODULE_SRC,
        ordered_dicts: bool = False,
        blob_overrides: Mapping[str, bytes] | None = None,
        meta_overrides: Mapping[str, Any] | None = None,
        meta_drop: tuple[str, ...] = (),
    ) -> None:
        self.module_src = module_src
        self.ordered_dicts = ordered_dicts
        self.blob_overrides = dict(blob_overrides or {})
        self.meta_overrides = dict(meta_overrides or {})
        self.meta_drop = meta_drop


def _encode(value: Any) -> Any:
    """Tensors inside attributes become plain rebuilt tensors; everything else is written as is."""
    if isinstance(value, torch.Tensor):
        return _tensor(value, parameter=False)
    if isinstance(value, _EasyDict):
        return _EasyDict({key: _encode(item) for key, item in value.items()})
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_encode(item) for item in value)
    return value


def _write_node(item: _Node, options: _Options, *, root: bool = False) -> Any:
    container: Callable[[], dict] = collections.OrderedDict if options.ordered_dicts else dict
    parameters = container()
    for name, value in item.parameters.items():
        full = f"{item.path}.{name}" if item.path else name
        parameters[name] = (
            None if value is None else _tensor(value, parameter=True, blob=options.blob_overrides.get(full))
        )
    buffers = container()
    for name, value in item.buffers.items():
        full = f"{item.path}.{name}" if item.path else name
        buffers[name] = _tensor(value, parameter=False, blob=options.blob_overrides.get(full))
    modules = container()
    for name, child in item.children.items():
        modules[name] = _write_node(child, options)

    state: dict[str, Any] = {
        "training": False,
        "_parameters": parameters,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
    }
    for hook in _HOOK_DICTS:
        state[hook] = None if hook == "_is_full_backward_hook" else collections.OrderedDict()
    state["_modules"] = modules
    state.update({key: _encode(value) for key, value in item.attributes.items()})
    if not item.persistent:
        return _NewObj(_Global.of(item.class_name), state)
    state["_init_args"] = _encode(tuple(item.init_args))
    state["_init_kwargs"] = _encode(item.init_kwargs)
    meta = {
        "type": "class",
        "version": 6,
        "module_src": options.module_src,
        "class_name": item.class_name,
        "state": state,
    }
    if root:
        meta.update(options.meta_overrides)
        for key in options.meta_drop:
            meta.pop(key, None)
    return _Call(_Global.of("torch_utils.persistence._reconstruct_persistent_obj"), (meta,))


def _official_init_kwargs(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    # The official TriPlaneGenerator kwargs hold EasyDicts (mapping_kwargs, sr_kwargs) next to a plain
    # rendering_kwargs dict.
    return {
        key: _EasyDict(value) if isinstance(value, dict) and key != "rendering_kwargs" else value
        for key, value in init_kwargs.items()
    }


def _generator(
    state_dict: Mapping[str, torch.Tensor | None],
    init_kwargs: Mapping[str, Any],
    attributes: Mapping[str, Any],
    options: _Options,
    classes: Mapping[str, str] | None = None,
) -> Any:
    rendering = attributes.get("rendering_kwargs") or init_kwargs.get("rendering_kwargs") or {}
    sr_class = str(rendering.get("superresolution_module", "SuperresolutionHybrid8XDC")).rsplit(".", 1)[-1]
    overrides = dict(classes or {})

    def class_for_path(path: str) -> str:
        return overrides[path] if path in overrides else generator_class_for_path(path, sr_class)

    root = _build_tree(state_dict, class_for_path, extra_paths=("renderer", "renderer.ray_marcher", "ray_sampler"))
    # The official __init__ registers renderer and ray_sampler first.
    first = {name: root.children.pop(name) for name in ("renderer", "ray_sampler")}
    root.children = {**first, **root.children}
    root.init_kwargs = _official_init_kwargs(init_kwargs)
    root.attributes = {**dict(attributes), "_last_planes": None}
    return _write_node(root, options, root=True)


def _discriminator(options: _Options) -> Any:
    generator = torch.Generator().manual_seed(1234)
    tensors = {
        "b4.out.weight": torch.randn(1, 8, generator=generator),
        "b4.out.bias": torch.randn(1, generator=generator),
    }
    classes = {"": "DualDiscriminator", "b4": "DiscriminatorEpilogue", "b4.out": "FullyConnectedLayer"}
    root = _build_tree(tensors, classes.__getitem__)
    root.init_kwargs = {"c_dim": 25, "img_resolution": 512, "img_channels": 3}
    return _write_node(root, _Options(module_src=options.module_src, ordered_dicts=options.ordered_dicts))


# --------------------------------------------------------------------------------------------------
# Public writers


def write_official_snapshot(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    init_kwargs: dict,
    attributes: dict,
    *,
    g_state_dict: dict | None = None,
    extra_entries: dict | None = None,
    module_src: str = DEFAULT_MODULE_SRC,
    ordered_dicts: bool = False,
    classes: Mapping[str, str] | None = None,
) -> None:
    """Write an official-format ``network-snapshot-*.pkl`` whose ``G_ema`` has ``state_dict``.

    Args:
        path: output file.
        state_dict: official dotted names -> tensors, in ``nn.Module.state_dict()`` order. A ``None`` value
            is written as a registered-but-empty parameter. Names ending in resample_filter, noise_const,
            w_avg or dataset_label_std are buffers; the rest are parameters.
        init_kwargs: TriPlaneGenerator constructor kwargs; nested dicts other than ``rendering_kwargs``
            are written as EasyDicts, as the official pickles do.
        attributes: plain instance attributes of G (``neural_rendering_resolution``, ``rendering_kwargs``...).
        g_state_dict: tensors of ``G`` (the non-EMA generator); defaults to ``state_dict``.
        extra_entries: added to (or replacing entries of) the top-level dict.
        module_src: the string stored as every persistent class's module source.
        ordered_dicts: write ``_parameters``/``_buffers``/``_modules`` as OrderedDicts, as torch 1.x did.
        classes: module path -> class (bare persistent name or dotted module path), overriding the
            EG3D defaults of :func:`generator_class_for_path`.
    """
    options = _Options(module_src=module_src, ordered_dicts=ordered_dicts)
    snapshot = {
        "training_set_kwargs": {
            "class_name": "training.dataset.ImageFolderDataset",
            "path": "datasets/fake.zip",
            "use_labels": True,
            "max_size": 16,
            "xflip": False,
            "resolution": 512,
            "random_seed": 0,
        },
        "G": _generator(
            state_dict if g_state_dict is None else g_state_dict, init_kwargs, attributes, options, classes
        ),
        "D": _discriminator(options),
        "G_ema": _generator(state_dict, init_kwargs, attributes, options, classes),
        "augment_pipe": None,
    }
    snapshot.update(extra_entries or {})
    _dump(snapshot, path)


def write_official_generator(
    path: str | Path, state_dict: dict[str, torch.Tensor], init_kwargs: dict, attributes: dict, **options: Any
) -> None:
    """Write a pickle whose top object is the TriPlaneGenerator itself (no snapshot dict)."""
    classes = options.pop("classes", None)
    _dump(_generator(state_dict, init_kwargs, attributes, _Options(**options), classes), path)


# --------------------------------------------------------------------------------------------------
# Malicious pickles. Each payload, if it ran, would create ``sentinel``.


def sentinel_payload(module: str, name: str, sentinel: str | Path) -> tuple:
    """Arguments for ``module.name`` that would create ``sentinel`` (or at least do something)."""
    target = str(sentinel)
    if (module, name) in (("os", "system"), ("posix", "system")):
        return (f"touch {shlex.quote(target)}",)
    if (module, name) in (("builtins", "eval"), ("builtins", "exec")):
        return (f"open({target!r}, 'w').close()",)
    if module == "subprocess":
        return (["touch", target],)
    if (module, name) == ("importlib", "import_module"):
        return ("antigravity",)
    return (target,)


def write_pickle_with_global(path: str | Path, module: str, name: str, args: tuple) -> None:
    """A snapshot-like dict whose ``G_ema`` is ``module.name(*args)`` (protocol 4, STACK_GLOBAL)."""
    _dump({"training_set_kwargs": {}, "G_ema": _Call(_Global(module, name), tuple(args))}, path)


def write_raw_global_pickle(path: str | Path, module: str, name: str, arg: str, opcode: str = "GLOBAL") -> None:
    """``module.name(arg)`` with the given opcode: 'GLOBAL' (protocol 0-2), 'STACK_GLOBAL' (4) or 'INST'."""
    text = arg.encode()
    unicode = pickle.BINUNICODE + struct.pack("<I", len(text)) + text
    if opcode == "GLOBAL":
        data = pickle.GLOBAL + f"{module}\n{name}\n".encode() + unicode + pickle.TUPLE1 + pickle.REDUCE
    elif opcode == "STACK_GLOBAL":
        names = b"".join(pickle.BINUNICODE + struct.pack("<I", len(s)) + s for s in (module.encode(), name.encode()))
        data = pickle.PROTO + b"\x04" + names + pickle.STACK_GLOBAL + unicode + pickle.TUPLE1 + pickle.REDUCE
    elif opcode == "INST":
        data = pickle.MARK + unicode + pickle.INST + f"{module}\n{name}\n".encode()
    else:
        raise ValueError(f"unknown opcode {opcode!r}")
    Path(path).write_bytes(data + pickle.STOP)


def module_src_payload(sentinel: str | Path) -> str:
    """Module source that the official loader would exec: it creates ``sentinel``."""
    return f"open({str(sentinel)!r}, 'w').close()\n"


def write_snapshot_with_meta(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    init_kwargs: dict,
    attributes: dict,
    *,
    overrides: Mapping[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> None:
    """A snapshot whose ``G_ema`` persistence meta has ``overrides`` applied and ``drop`` keys removed."""
    options = _Options(meta_overrides=overrides, meta_drop=drop)
    _dump({"training_set_kwargs": {}, "G_ema": _generator(state_dict, init_kwargs, attributes, options)}, path)


def malicious_storage_blob(sentinel: str | Path) -> bytes:
    """A legacy ``torch.save`` stream whose object pickle calls ``os.system('touch SENTINEL')``.

    PyTorch's loader with its weights-only check switched off (and any plain unpickler reading the stream
    pickle by pickle) would run it; the weights-only unpickler refuses it.
    """
    out = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, out, protocol=2)
    pickle.dump(1001, out, protocol=2)
    pickle.dump(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
        out,
        protocol=2,
    )
    command = f"touch {shlex.quote(str(sentinel))}".encode()
    out.write(
        pickle.PROTO
        + b"\x02"
        + pickle.GLOBAL
        + b"os\nsystem\n"
        + pickle.BINUNICODE
        + struct.pack("<I", len(command))
        + command
        + pickle.TUPLE1
        + pickle.REDUCE
        + pickle.STOP
    )
    pickle.dump([], out, protocol=2)
    return out.getvalue()


def write_snapshot_with_storage_blob(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    init_kwargs: dict,
    attributes: dict,
    *,
    tensor_name: str,
    blob: bytes,
) -> None:
    """A snapshot whose ``G_ema`` tensor ``tensor_name`` is stored as ``blob`` instead of its own data."""
    options = _Options(blob_overrides={tensor_name: blob})
    _dump({"training_set_kwargs": {}, "G_ema": _generator(state_dict, init_kwargs, attributes, options)}, path)


def plain_unpickle_in_subprocess(path: str | Path, *, cwd: str | Path, pickles: int = 1) -> None:
    """Run a plain ``pickle.Unpickler`` (``pickles`` times in a row) on ``path`` in a child process.

    This is how the tests prove that a malicious file is live: its payload really runs under the
    standard unpickler, in a throwaway process.
    """
    import subprocess

    code = "import pickle, sys\nwith open(sys.argv[1], 'rb') as f:\n" + "".join(
        "    try:\n        pickle.Unpickler(f).load()\n    except Exception:\n        pass\n" for _ in range(pickles)
    )
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=cwd, check=True, timeout=60)
