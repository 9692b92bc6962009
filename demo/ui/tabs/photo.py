"""Photo → 3D tab: upload a photo -> aligned crop and pose first -> the photo's face -> image, depth, mesh, face file.

The face becomes the session's current face: Rotate, Multi-view and Interpolate offer it as "my photo",
and "Rotate it" here renders it turning around the photo's own view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from demo.progress import scaled
from demo.tasks.face import FACE_SUFFIX
from demo.tasks.invert import PRESETS, InversionSettings
from demo.tasks.photo import align_photo, reconstruct_photo, save_reconstruction
from demo.ui import runtime
from demo.ui.tabs import video

logger = logging.getLogger(__name__)
TITLE = "Photo → 3D"
PRESET_CHOICES = tuple(PRESETS)
"""'none' projects into W (from the encoder's answer when one is installed) without tuning the generator."""
MESH_RESOLUTION = 128
ROTATE_FRAMES = 48
ALIGN_CONCURRENCY = 2
"""Photos aligned at once (each decodes a photo of up to 40 megapixels: ~120 MB); more wait in the queue."""


def gpu_seconds(model_id, photo, preset, *args, **kwargs) -> int:
    """ZeroGPU budget: 'fast' is sized for a 60 s slot; the larger presets need more."""
    return {"none": 20, "fast": 60}.get(str(preset), 150)


def preset_eta(
    models: runtime.ModelProvider,
    model_id: str,
    preset: str,
    *,
    measure: Callable[[str], runtime.StepTimes] | None = None,
) -> str:
    """Markdown under the presets: each preset's step counts and, once they are measured for ``model_id`` on this
    device, how long its steps take (step counts x the measured time per step).

    ``measure(model_id)`` times the steps when the model is already loaded (or is a tiny one) and not yet timed;
    models that are not loaded are timed on their first use (the Reconstruct chain), never loaded here.
    """
    times = models.step_times(model_id)
    if times is None and measure is not None and (models.is_loaded(model_id) or model_id in runtime.TINY_IDS):
        times = measure(model_id)
    parts = []
    for name in PRESET_CHOICES:
        settings = InversionSettings.from_preset(name)
        steps = f"{settings.w_steps} + {settings.pti_steps} steps" if settings.pti_steps else f"{settings.w_steps} steps"
        part = f"{name}: {steps}" + (f" ≈ {_duration(times.inversion_s(settings))}" if times is not None else "")
        parts.append(f"**{part}**" if name == preset else part)
    listing = " · ".join(parts)
    if times is None:
        return (f"Projection + tuning steps: {listing}. How long they take on this device is measured when the model "
                "is loaded (its first use).")
    return (f"Time on this {times.device} for {model_id} (measured: {_duration(times.projection_s)} per projection step, "
            f"{_duration(times.tuning_s)} per tuning step): {listing}. Tuning stops sooner once its loss stops "
            "improving; alignment, a few renders and the mesh come on top.")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@runtime.user_errors
def align(photo: str | None):
    """Guard step: the aligned crop, a line about the pose, and the aligned face passed on to the reconstruction."""
    if not photo:
        raise gr.Error("Upload a photo with one face first.", print_exception=False)
    face = align_photo(photo)
    notes = "".join(f"\n- {warning}" for warning in face.warnings)
    pose = f"Face found: yaw {face.yaw_deg:+.1f}°, pitch {face.pitch_deg:+.1f}°, roll {face.roll_deg:+.1f}°.{notes}"
    return face.image, pose, (photo, face)


@runtime.user_errors
def reconstruct(
    models: runtime.ModelProvider,
    model_id: str,
    photo: str | None,
    preset: str,
    aligned=None,
    *,
    out_dir: Path,
    steps: int | None = None,
    progress: runtime.ProgressFn | None = None,
) -> tuple[str, str, str, list[str], str, str]:
    """Returns paths: the reconstruction seen from the photo's camera and its depth preview as shown (small ones
    enlarged, ``runtime.display_copy``), the .glb, the downloads (true size), and the face file (twice: the download
    and the session's current face).

    ``aligned`` is the guard step's (photo, ``AlignedFace``): used when it is this photo's, so the photo is
    aligned once; API callers that skip the guard get it aligned here.
    """
    if not photo:
        raise gr.Error("Upload a photo with one face first.", print_exception=False)
    model = models.get(model_id)
    settings = InversionSettings.from_preset(
        runtime.read_choice(preset, "Refinement", PRESET_CHOICES), w_steps=steps, pti_steps=None if preset == "none" else steps,
    )
    already = aligned[1] if isinstance(aligned, tuple) and len(aligned) == 2 and aligned[0] == photo else None
    reconstruction = reconstruct_photo(
        model, already if already is not None else photo, settings, encoder=models.encoder(model_id),
        photo_name=Path(photo).stem, progress=scaled(progress, 0.0, 0.8),
    )
    for warning in reconstruction.warnings:
        gr.Warning(warning)
    files = save_reconstruction(
        model, reconstruction, out_dir, shapes=True, shape_resolution=MESH_RESOLUTION, shape_formats=("glb", "ply", "obj"),
        model_name=model_id, progress=scaled(progress, 0.8, 1.0),
    )
    name = reconstruction.face.name
    face_file = str(out_dir / (name + FACE_SUFFIX))
    mesh = out_dir / f"{name}.glb"
    if not mesh.is_file():
        gr.Warning(runtime.NO_SURFACE)
    return (runtime.display_copy(out_dir / f"{name}.png", out_dir),
            runtime.display_copy(out_dir / f"{name}_depth_color.png", out_dir), str(mesh) if mesh.is_file() else None,
            [str(path) for path in files], face_file, face_file)


def build(ctx: runtime.UIContext) -> None:
    aligned = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            # image_mode=None with type="filepath": Gradio hands over the uploaded file as it is (it only reads
            # the header), so the library checks the size before anything is decoded and 16-bit or grey
            # photos reach it unconverted.
            photo = gr.Image(label="Photo (one face, roughly facing the camera)", type="filepath", image_mode=None,
                             height=280, elem_id="photo-input")
            preset = gr.Radio(list(PRESET_CHOICES), value="fast", label="Refinement (PTI)",
                              info="none: projection only, no generator tuning; fast fits a 60 s GPU slot")
            eta = gr.Markdown(preset_eta(ctx.models, ctx.models.default_id, "fast"), elem_id="photo-eta")
            run = gr.Button("Reconstruct in 3D", variant="primary", elem_id="photo-btn")
            crop = gr.Image(label="Aligned crop", interactive=False, height=200, format="png", elem_id="photo-crop")
            pose = gr.Markdown(label="Pose", elem_id="photo-pose")
        with gr.Column(scale=3):
            with gr.Row():
                image = gr.Image(label="Reconstruction", interactive=False, height=256, elem_id="photo-image")
                depth = gr.Image(label="Depth (near = bright)", interactive=False, height=256)
            mesh = gr.Model3D(label="Coloured mesh (.glb)", height=320, elem_id="photo-mesh")
            face_file = gr.File(label="Your face (.face.safetensors): Rotate, Multi-view and Interpolate use it as 'my photo'",
                                interactive=False, elem_id="photo-face-file")
            rotate_it = gr.Button("Rotate it", elem_id="photo-rotate-btn")
            turning = gr.Video(label="Your face turning", autoplay=True, loop=True, interactive=False, height=300,
                               elem_id="photo-rotate-video")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)

    measure_on_device = runtime.gpu(duration=30)(ctx.models.measure_step_times)  # on ZeroGPU the GPU is lent per call

    def on_eta(model_id, preset):
        try:
            return preset_eta(ctx.models, model_id, preset, measure=measure_on_device)
        except Exception:  # an estimate must never stop a reconstruction
            logger.warning("could not time the inversion steps of %s", model_id, exc_info=True)
            return preset_eta(ctx.models, model_id, preset)

    @runtime.gpu(duration=gpu_seconds)
    def on_reconstruct(model_id, photo, preset, aligned, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        return reconstruct(ctx.models, model_id, photo, preset, aligned, out_dir=ctx.sessions.run_dir(request, "photo"),
                           progress=runtime.progress_fn(progress))

    @runtime.gpu(duration=video.gpu_seconds)
    def on_rotate_it(model_id, current_face, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        path, _ = video.rotate(ctx.models, model_id, "my photo", 0, 0.7, None, "yaw", ROTATE_FRAMES, 24, "image", 30, 0,
                               False, current_face, out_dir=ctx.sessions.run_dir(request, "rotate"),
                               progress=runtime.progress_fn(progress))
        return path

    # Guard then run: show the aligned crop and the pose before the slow step; the aligned face is passed on.
    checked = run.click(align, [photo], [crop, pose, aligned], api_name="align_photo",
                        concurrency_id="align", concurrency_limit=ALIGN_CONCURRENCY)
    load = checked.success(ctx.load_model, ctx.model_menu, [ctx.model_menu, ctx.model_status],
                           api_visibility="private", concurrency_limit=None, show_progress="minimal")
    timed = load.success(on_eta, [ctx.model_menu, preset], eta, api_visibility="private", concurrency_limit=None,
                         show_progress="minimal")  # the time per preset is on the page before the slow step
    timed.success(on_reconstruct, [ctx.model_menu, photo, preset, aligned],
                 [image, depth, mesh, files, face_file, ctx.current_face], api_name="photo_to_3d",
                 concurrency_id="gpu", concurrency_limit=ctx.gpu_concurrency)
    # Cached times answer at once; a first measurement takes a few steps, so these events are queued.
    eta_options = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "minimal"}
    preset.change(on_eta, [ctx.model_menu, preset], eta, **eta_options)
    ctx.model_menu.change(on_eta, [ctx.model_menu, preset], eta, **eta_options)
    ctx.on_page_load.append((on_eta, [ctx.model_menu, preset], eta, {"queue": True, **eta_options}))
    rotate_it.click(on_rotate_it, [ctx.model_menu, ctx.current_face], turning, api_visibility="private",
                    concurrency_id="gpu", concurrency_limit=ctx.gpu_concurrency)
