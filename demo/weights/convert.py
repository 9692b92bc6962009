"""Official EG3D checkpoint contents -> our :class:`GeneratorConfig` and state dict.

The official generator is described by its constructor kwargs (``init_kwargs``) and two instance
attributes, ``rendering_kwargs`` and ``neural_rendering_resolution`` (which the training loop keeps
updating, so the attribute wins over the constructor argument). Everything the networks need is
read from there; nothing about FFHQ is assumed. Defaults follow the official code where a key is
missing, including its quirks (``c_scale`` defaults to 0, ``white_back`` to False).

Our parameter names are the official ones, so the state dict is copied as is; the table
``RENAMES`` is where a rename would go.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from demo.cameras import FFHQ_FOCAL
from demo.config import GeneratorConfig, MappingConfig, PanoHeadConfig, RenderConfig, SuperResConfig, SynthesisConfig
from demo.errors import CheckpointError

#: Official state-dict name -> ours. Empty: the layouts are identical.
RENAMES: dict[str, str] = {}

#: Official TriPlaneGenerator fixes the backbone (plane) resolution at 256.
OFFICIAL_PLANE_RESOLUTION = 256
#: The official constructor's initial neural rendering resolution, used if a pickle lacks the attribute.
OFFICIAL_DEFAULT_NEURAL_RESOLUTION = 64

_SR_PREFIX = "SuperresolutionHybrid"
# rendering_kwargs keys that only matter for training; kept in ``extras`` for provenance.
_TRAINING_ONLY_KEYS = ("gpc_reg_prob", "density_reg", "density_reg_p_dist", "reg_type")
_RENDER_KEYS_USED = {
    "image_resolution", "superresolution_module", "superresolution_noise_mode", "sr_antialias",
    "c_gen_conditioning_zero", "c_scale", "depth_resolution", "depth_resolution_importance", "ray_start",
    "ray_end", "box_warp", "disparity_space_sampling", "clamp_mode", "white_back", "density_noise",
    "decoder_lr_mul", "avg_camera_radius", "avg_camera_pivot",
    "triplane_size", "triplane_depth", "decoder_activation", "use_torgb_raw", "use_background",
}
#: rendering_kwargs keys only PanoHead checkpoints carry.
_PANOHEAD_KEYS = ("triplane_depth", "use_background", "use_torgb_raw", "decoder_activation")
_SUPPORTED_CLASS = "TriPlaneGenerator"


def config_from_official(
    init_kwargs: dict[str, Any],
    attributes: dict[str, Any] | None = None,
    *,
    class_name: str = "training.triplane.TriPlaneGenerator",
    focal_length: float | None = None,
    source: str = "checkpoint",
) -> GeneratorConfig:
    """Build our config from an official generator's constructor kwargs and instance attributes.

    Args:
        init_kwargs: ``TriPlaneGenerator(**init_kwargs)`` as stored in the pickle.
        attributes: plain instance attributes (``rendering_kwargs``, ``neural_rendering_resolution``).
        class_name: the pickled class; only EG3D's TriPlaneGenerator is accepted here.
        focal_length: normalised focal of the training cameras (not stored in checkpoints).
        source: file name used in error messages.
    """
    attributes = attributes or {}
    if not class_name.endswith(_SUPPORTED_CLASS):
        raise CheckpointError(
            f"{source}: the generator is a {class_name!r}, not an EG3D TriPlaneGenerator. "
            "Check that the file is an EG3D checkpoint (for PanoHead use a PanoHead model id)."
        )
    kwargs = dict(init_kwargs)
    rendering = dict(kwargs.get("rendering_kwargs") or {})
    rendering.update(attributes.get("rendering_kwargs") or {})
    if not rendering:
        raise CheckpointError(f"{source}: the generator has no rendering_kwargs; is this an EG3D TriPlaneGenerator?")

    def need(mapping: dict[str, Any], key: str, where: str) -> Any:
        if key not in mapping:
            raise CheckpointError(f"{source}: {where} lacks {key!r}; the file does not look like an EG3D generator.")
        return mapping[key]

    mapping_kwargs = dict(kwargs.get("mapping_kwargs") or {})
    w_dim = int(need(kwargs, "w_dim", "init_kwargs"))
    mapping = MappingConfig(
        z_dim=int(need(kwargs, "z_dim", "init_kwargs")),
        c_dim=int(need(kwargs, "c_dim", "init_kwargs")),
        w_dim=w_dim,
        num_layers=int(mapping_kwargs.get("num_layers", 8)),
        embed_features=mapping_kwargs.get("embed_features"),
        layer_features=mapping_kwargs.get("layer_features"),
        lr_multiplier=float(mapping_kwargs.get("lr_multiplier", 0.01)),
        w_avg_beta=mapping_kwargs.get("w_avg_beta", 0.998),
    )
    architecture = kwargs.get("architecture", "skip")
    if architecture != "skip":
        raise CheckpointError(f"{source}: backbone architecture {architecture!r} is not supported (EG3D uses 'skip').")
    is_panohead = any(key in rendering for key in _PANOHEAD_KEYS)
    synthesis = SynthesisConfig(
        resolution=int(rendering.get("triplane_size", OFFICIAL_PLANE_RESOLUTION)),
        channel_base=int(kwargs.get("channel_base", 32768)),
        channel_max=int(kwargs.get("channel_max", 512)),
        num_fp16_res=int(kwargs.get("num_fp16_res", 4)),
        conv_clamp=kwargs.get("conv_clamp"),
    )
    module = str(need(rendering, "superresolution_module", "rendering_kwargs"))
    variant = module.rsplit(".", 1)[-1].removeprefix(_SR_PREFIX)
    try:
        superres = SuperResConfig(
            variant=variant,
            image_resolution=int(kwargs.get("img_resolution", rendering.get("image_resolution", 512))),
            w_dim=512,
            num_fp16_res=int(kwargs.get("sr_num_fp16_res", 0)),
            antialias=bool(rendering.get("sr_antialias", True)),
            noise_mode=rendering.get("superresolution_noise_mode", "none"),
        )
    except ValueError as error:
        raise CheckpointError(f"{source}: unsupported super-resolution module {module!r} ({error}).") from None
    if w_dim != 512:
        raise CheckpointError(f"{source}: w_dim is {w_dim}, but the official super-resolution modules need 512.")
    render = RenderConfig(
        neural_rendering_resolution=int(attributes.get("neural_rendering_resolution", OFFICIAL_DEFAULT_NEURAL_RESOLUTION)),
        depth_samples=int(need(rendering, "depth_resolution", "rendering_kwargs")),
        importance_samples=int(need(rendering, "depth_resolution_importance", "rendering_kwargs")),
        ray_start=_ray_limit(need(rendering, "ray_start", "rendering_kwargs")),
        ray_end=_ray_limit(need(rendering, "ray_end", "rendering_kwargs")),
        box_warp=float(need(rendering, "box_warp", "rendering_kwargs")),
        disparity_space_sampling=bool(rendering.get("disparity_space_sampling", False)),
        clamp_mode=rendering.get("clamp_mode", "softplus"),
        white_background=bool(rendering.get("white_back", False)),
        density_noise=float(rendering.get("density_noise", 0.0)),
        decoder_lr_multiplier=float(rendering.get("decoder_lr_mul", 1.0)),
    )
    extras = {key: value for key, value in rendering.items() if key not in _RENDER_KEYS_USED}
    panohead = None
    if is_panohead:
        panohead = PanoHeadConfig(
            triplane_depth=int(rendering.get("triplane_depth", 1)),
            decoder_activation=rendering.get("decoder_activation", "sigmoid"),
            use_torgb_raw=bool(rendering.get("use_torgb_raw", False)),
            use_background=bool(rendering.get("use_background", False)),
            # The official generator builds its background network at 128 px with half the channel base.
            background_resolution=128,
            background_channel_base=synthesis.channel_base // 2,
            background_channel_max=synthesis.channel_max,
            density_crop=render.box_warp / 2 - 0.1,
            use_camera_offset=True,
        )
    return GeneratorConfig(
        mapping=mapping,
        synthesis=synthesis,
        render=render,
        superres=superres,
        conditioning_zero=bool(rendering.get("c_gen_conditioning_zero", False)),
        # The official mapping multiplies by rendering_kwargs.get('c_scale', 0).
        c_scale=float(rendering.get("c_scale", 0.0)),
        avg_camera_radius=float(rendering.get("avg_camera_radius", 2.7)),
        avg_camera_pivot=tuple(float(v) for v in rendering.get("avg_camera_pivot", (0.0, 0.0, 0.2))),
        focal_length=float(focal_length) if focal_length is not None else FFHQ_FOCAL,
        panohead=panohead,
        extras=extras,
    )


def _ray_limit(value: Any) -> float | str:
    return "auto" if value == "auto" else float(value)


def convert_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names -> ours (through ``RENAMES``), as contiguous float32 tensors."""
    return {RENAMES.get(name, name): tensor.detach().to(torch.float32).contiguous() for name, tensor in official.items()}


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """Copy ``state_dict`` into ``model``; any missing, unexpected or mis-shaped tensor is a CheckpointError."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{name}: checkpoint {tuple(state_dict[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in set(expected) & set(state_dict)
        if tuple(state_dict[name].shape) != tuple(expected[name].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors: {_group_by_prefix(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors: {_group_by_prefix(unexpected)}")
        if mismatched:
            parts.append("shape mismatches: " + "; ".join(mismatched[:8]) + (" ..." if len(mismatched) > 8 else ""))
        raise CheckpointError(
            f"{source}: the weights do not fit the architecture in its config ({'; '.join(parts)}). "
            "The file may be from another model family or a modified EG3D; re-run `python -m demo convert` on the original .pkl."
        )
    model.load_state_dict(state_dict, strict=True)


def _group_by_prefix(names: list[str]) -> str:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        prefix, _, leaf = name.rpartition(".")
        groups[prefix].append(leaf)
    shown = [f"{prefix or '<root>'}.{{{','.join(leaves)}}}" for prefix, leaves in sorted(groups.items())[:6]]
    return ", ".join(shown) + (" ..." if len(groups) > 6 else "")


def official_kwargs(config: GeneratorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inverse of :func:`config_from_official`: (init_kwargs, instance attributes) of an official generator.

    Used to write official-format snapshots of our models (tests, interoperability with tools that
    expect the official layout). Only configurations the official classes can express round-trip.
    """
    mapping, synthesis, render, superres = config.mapping, config.synthesis, config.render, config.superres
    rendering = {
        "image_resolution": superres.image_resolution,
        "disparity_space_sampling": render.disparity_space_sampling,
        "clamp_mode": render.clamp_mode,
        "superresolution_module": f"training.superresolution.{_SR_PREFIX}{superres.variant}",
        "c_gen_conditioning_zero": config.conditioning_zero,
        "c_scale": config.c_scale,
        "superresolution_noise_mode": superres.noise_mode,
        "decoder_lr_mul": render.decoder_lr_multiplier,
        "sr_antialias": superres.antialias,
        "depth_resolution": render.depth_samples,
        "depth_resolution_importance": render.importance_samples,
        "ray_start": render.ray_start,
        "ray_end": render.ray_end,
        "box_warp": render.box_warp,
        "white_back": render.white_background,
        "density_noise": render.density_noise,
        "avg_camera_radius": config.avg_camera_radius,
        "avg_camera_pivot": list(config.avg_camera_pivot),
        **config.extras,
    }
    if config.panohead is not None:
        rendering.update(
            triplane_size=synthesis.resolution,
            triplane_depth=config.panohead.triplane_depth,
            decoder_activation=config.panohead.decoder_activation,
            use_torgb_raw=config.panohead.use_torgb_raw,
            use_background=config.panohead.use_background,
        )
    mapping_kwargs: dict[str, Any] = {"num_layers": mapping.num_layers}
    for key in ("embed_features", "layer_features"):
        if getattr(mapping, key) is not None:
            mapping_kwargs[key] = getattr(mapping, key)
    if mapping.lr_multiplier != 0.01:
        mapping_kwargs["lr_multiplier"] = mapping.lr_multiplier
    init_kwargs = {
        "z_dim": mapping.z_dim,
        "w_dim": mapping.w_dim,
        "mapping_kwargs": mapping_kwargs,
        "channel_base": synthesis.channel_base,
        "channel_max": synthesis.channel_max,
        "fused_modconv_default": "inference_only",
        "rendering_kwargs": rendering,
        "num_fp16_res": synthesis.num_fp16_res,
        "sr_num_fp16_res": superres.num_fp16_res,
        "sr_kwargs": {"channel_base": synthesis.channel_base, "channel_max": synthesis.channel_max, "fused_modconv_default": "inference_only"},
        "conv_clamp": synthesis.conv_clamp,
        "c_dim": mapping.c_dim,
        "img_resolution": superres.image_resolution,
        "img_channels": 3,
    }
    attributes = {
        "z_dim": mapping.z_dim,
        "c_dim": mapping.c_dim,
        "w_dim": mapping.w_dim,
        "img_resolution": superres.image_resolution,
        "img_channels": 3,
        "neural_rendering_resolution": render.neural_rendering_resolution,
        "rendering_kwargs": dict(rendering),
    }
    return init_kwargs, attributes
