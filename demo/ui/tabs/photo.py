"""Photo → 3D tab: upload a photo -> aligned crop and pose first -> inversion -> image, depth, coloured mesh."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo import media
from demo.tasks.faces import align_face
from demo.tasks.generate import generate_to_folder
from demo.tasks.invert import PRESETS, invert
from demo.tasks.train_encoder import find_encoder, load_encoder
from demo.ui import runtime

TITLE = "Photo → 3D"
PRESET_CHOICES = ("none", *PRESETS)
"""'none' projects into W (from the encoder's answer when one is installed) without tuning the generator."""
MESH_RESOLUTION = 128


def gpu_seconds(model_id, photo, preset, *args, **kwargs) -> int:
    """ZeroGPU budget: 'fast' is sized for a 60 s slot; the larger presets need more."""
    return {"none": 20, "fast": 60}.get(str(preset), 150)


@runtime.user_errors
def align(photo: str | None) -> tuple[str, str]:
    """Guard step: the aligned crop (saved next to the upload) and a line about the pose."""
    if not photo:
        raise gr.Error("Upload a photo with one face first.", print_exception=False)
    face = align_face(photo)
    crop = media.save_png(Path(photo).with_name(Path(photo).stem + "_aligned.png"), face.image)
    notes = "".join(f"\n- {warning}" for warning in face.warnings)
    return str(crop), f"Face found: yaw {face.yaw_deg:+.1f}°, pitch {face.pitch_deg:+.1f}°, roll {face.roll_deg:+.1f}°.{notes}"


@runtime.user_errors
def reconstruct(
    models: runtime.ModelProvider,
    model_id: str,
    photo: str | None,
    preset: str,
    *,
    out_dir: Path,
    steps: int | None = None,
    progress: runtime.ProgressFn | None = None,
) -> tuple[str, str, str, list[str]]:
    """Returns paths: the reconstruction seen from the photo's camera, its depth preview, the .glb, downloads."""
    if not photo:
        raise gr.Error("Upload a photo with one face first.", print_exception=False)
    model = models.get(model_id)
    preset = runtime.read_choice(preset, "Refinement", PRESET_CHOICES)
    face = align_face(photo)
    encoder_path = find_encoder(model_id)
    encoder = load_encoder(encoder_path, model=model) if encoder_path is not None else None
    result = invert(
        model, face.image, face.camera, encoder=encoder, preset="fast" if preset == "none" else preset,
        w_steps=steps, pti_steps=0 if preset == "none" else steps, progress=progress,
    )
    tuned = result.apply_to(model) if result.weight_delta else model
    written = generate_to_folder(
        tuned, out_dir, ws=result.ws, yaw_deg=face.yaw_deg, pitch_deg=face.pitch_deg, shapes=True,
        shape_resolution=MESH_RESOLUTION, shape_formats=("glb", "ply", "obj"), model_name=model_id,
    )
    stem = next(iter(written.files))
    crop = media.save_png(out_dir / "photo_aligned.png", face.image)
    files = [str(path) for path in written.files[stem]] + [str(crop)]
    return str(out_dir / f"{stem}.png"), str(out_dir / f"{stem}_depth_color.png"), str(out_dir / f"{stem}.glb"), files


def build(ctx: runtime.UIContext) -> None:
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            photo = gr.Image(label="Photo (one face, roughly facing the camera)", type="filepath", height=280,
                             elem_id="photo-input")
            preset = gr.Radio(list(PRESET_CHOICES), value="fast", label="Refinement (PTI)",
                              info="none: projection only, no generator tuning; fast fits a 60 s GPU slot")
            run = gr.Button("Reconstruct in 3D", variant="primary", elem_id="photo-btn")
            crop = gr.Image(label="Aligned crop", interactive=False, height=200, elem_id="photo-crop")
            pose = gr.Markdown()
        with gr.Column(scale=3):
            with gr.Row():
                image = gr.Image(label="Reconstruction", interactive=False, height=256, elem_id="photo-image")
                depth = gr.Image(label="Depth (near = bright)", interactive=False, height=256)
            mesh = gr.Model3D(label="Coloured mesh (.glb)", height=320, elem_id="photo-mesh")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)

    @runtime.gpu(duration=gpu_seconds)
    def on_reconstruct(model_id, photo, preset, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        return reconstruct(ctx.models, model_id, photo, preset, out_dir=ctx.sessions.run_dir(request, "photo"),
                           progress=runtime.progress_fn(progress))

    # Guard then run: show the aligned crop and the pose before the slow step.
    checked = run.click(align, [photo], [crop, pose], api_name="align_photo", concurrency_limit=None)
    load = checked.success(ctx.load_model, ctx.model_menu, [ctx.model_menu, ctx.model_status],
                           api_visibility="private", concurrency_limit=None, show_progress="minimal")
    load.success(on_reconstruct, [ctx.model_menu, photo, preset], [image, depth, mesh, files], api_name="photo_to_3d",
                 concurrency_id="gpu", concurrency_limit=ctx.gpu_concurrency)
