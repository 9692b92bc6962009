"""Generate tab: seed -> image, depth preview, coloured mesh and every file ``generate`` writes."""

from __future__ import annotations

import random
from pathlib import Path

import gradio as gr

from demo.media import output_stem
from demo.tasks.face import face_from_seed
from demo.tasks.generate import generate_to_folder
from demo.tasks.mesh import MESH_FORMATS
from demo.tasks.views import MAX_FRONT_YAW_DEG, MAX_PITCH_DEG, check_view_range
from demo.ui import runtime

TITLE = "Generate"
SEED_MAX = 2**32 - 1
MESH_RESOLUTIONS = (64, 128, 256)
MESH_VIEW_RADIUS = 1.6
"""Viewer distance in world units: the tri-plane cube (side 1 for faces) fits the view."""
GPU_SECONDS = 40
"""One image and a 256^3 mesh take a few seconds on a GPU; this is the ceiling asked of ZeroGPU."""
EXAMPLES = [  # seed, truncation, yaw, pitch, mesh resolution
    [42, 0.7, 0.0, 0.0, 128],
    [7, 0.5, 30.0, -10.0, 128],
    [1234, 0.8, -25.0, 5.0, 256],
]


def random_seed() -> int:
    return random.randint(0, 2**31 - 1)


@runtime.user_errors
def generate(
    models: runtime.ModelProvider,
    model_id: str,
    seed: float,
    truncation: float,
    yaw_deg: float,
    pitch_deg: float,
    mesh_resolution: int,
    *,
    out_dir: Path,
    progress: runtime.ProgressFn | None = None,
) -> tuple[str, str, str, list[str]]:
    """Returns paths: image PNG and depth preview PNG as shown (small ones enlarged, ``runtime.display_copy``), the
    .glb mesh, and every file written at its true size (downloads)."""
    model = models.get(model_id)
    seed = runtime.read_int(seed, "Seed", 0, SEED_MAX)
    yaw_deg = runtime.read_number(yaw_deg, "Yaw", -360, 360)
    pitch_deg = runtime.read_number(pitch_deg, "Pitch", -360, 360)
    check_view_range(model, yaw_deg, pitch_deg, full_turn=model.config.is_full_head)
    truncation = runtime.read_number(truncation, "Truncation", 0.0, 1.0)
    result = generate_to_folder(
        model, out_dir, seeds=[seed], truncation_psi=truncation,
        yaw_deg=yaw_deg, pitch_deg=pitch_deg, shapes=True, shape_formats=MESH_FORMATS,
        shape_resolution=runtime.read_choice(mesh_resolution, "Mesh resolution", MESH_RESOLUTIONS),
        model_name=model_id, progress=progress,
    )
    stem = output_stem(seed)
    face = face_from_seed(model, seed, truncation_psi=truncation).save(out_dir / stem)  # for Rotate/Interpolate/Multi-view
    files = [str(path) for path in result.files[stem]] + [str(result.manifest), str(face)]
    return (runtime.display_copy(out_dir / f"{stem}.png", out_dir),
            runtime.display_copy(out_dir / f"{stem}_depth_color.png", out_dir), runtime.mesh_or_warning(result, stem), files)


def yaw_limit(models: runtime.ModelProvider, model_id: str) -> float:
    """The yaw slider's range for a model: all the way round for 360-degree models, the front half for EG3D."""
    return 180.0 if models.is_full_head(model_id) else MAX_FRONT_YAW_DEG


def yaw_slider_for(models: runtime.ModelProvider, model_id: str, yaw_deg: float) -> gr.Slider:
    """The yaw slider when the model menu changes: its range follows the model; the value is kept if it fits."""
    limit = yaw_limit(models, model_id)
    value = float(yaw_deg) if yaw_deg is not None and abs(float(yaw_deg)) <= limit else 0.0
    return gr.Slider(minimum=-limit, maximum=limit, value=value)


def build(ctx: runtime.UIContext) -> None:
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            with gr.Row(equal_height=True):
                seed = gr.Number(42, label="Seed", precision=0, minimum=0, maximum=SEED_MAX, scale=3, elem_id="generate-seed")
                dice = gr.Button("Random seed", scale=1, min_width=100, elem_id="generate-random")
            truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ",
                                   info="Lower: more average, cleaner faces. Higher: more variety.")
            # Built all the way round, so API calls may ask a PanoHead model for any yaw (EG3D models refuse beyond
            # 90 with a clear message); on the page the range follows the chosen model (on load and on change).
            yaw = gr.Slider(-180.0, 180.0, value=0.0, step=1.0, label="Yaw (degrees)",
                            info=f"Positive turns the camera to the face's left. EG3D models: within ±{MAX_FRONT_YAW_DEG:g}; "
                                 "PanoHead: all the way round.", elem_id="generate-yaw")
            pitch = gr.Slider(-MAX_PITCH_DEG, MAX_PITCH_DEG, value=0.0, step=1.0, label="Pitch (degrees)",
                              info="Negative looks from above.")
            resolution = gr.Radio(list(MESH_RESOLUTIONS), value=128, label="Mesh resolution (grid points per side)")
            run = gr.Button("Generate", variant="primary", elem_id="generate-btn")
            gr.Examples(EXAMPLES, inputs=[seed, truncation, yaw, pitch, resolution], label="Examples (click one, then Generate)")
        with gr.Column(scale=3):
            with gr.Row():
                image = gr.Image(label="Image", type="filepath", interactive=False, height=300, elem_id="generate-image")
                depth = gr.Image(label="Depth (near = bright)", type="filepath", interactive=False, height=300,
                                 elem_id="generate-depth")
            mesh = gr.Model3D(label="Coloured mesh (.glb): drag to turn", height=360, clear_color=(0.95, 0.95, 0.95, 1.0),
                              camera_position=(None, None, MESH_VIEW_RADIUS),
                              elem_id="generate-mesh")
            files = gr.File(label="Downloads: PNGs, .glb/.ply/.obj, ws.npy, camera.npy, generate.json, the face file",
                            file_count="multiple", interactive=False, height=240, elem_id="generate-files")

    @runtime.gpu(duration=GPU_SECONDS)
    def on_generate(model_id, seed, truncation, yaw_deg, pitch_deg, mesh_resolution, request: gr.Request,
                    progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        return generate(ctx.models, model_id, seed, truncation, yaw_deg, pitch_deg, mesh_resolution,
                        out_dir=ctx.sessions.run_dir(request, "generate"), progress=runtime.progress_fn(progress))

    dice.click(random_seed, outputs=seed, api_name="random_seed", concurrency_limit=None)
    def follow_model(model_id, yaw_deg):
        return yaw_slider_for(ctx.models, model_id, yaw_deg)

    ctx.model_menu.change(follow_model, [ctx.model_menu, yaw], yaw, api_visibility="private", queue=False)
    ctx.on_page_load.append((follow_model, [ctx.model_menu, yaw], yaw))
    ctx.run_with_model(run, on_generate, [seed, truncation, yaw, pitch, resolution], [image, depth, mesh, files],
                       api_name="generate")
