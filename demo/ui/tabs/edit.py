"""Edit tab: move a face (your photo, a seed, a face file) along the model's strongest directions with sliders.

Directions are the checkpoint's own (SeFa or GANSpace, ``demo.tasks.edit``), computed once per model;
each slider is one direction's strength in standard deviations of W. The result is a new face: its
image from the face's own view and its face file, which "Use as my face" makes the session's face.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.tasks.edit import LAYER_GROUPS, METHODS, directions_for, edit_face, resolve_layers
from demo.tasks.face import FACE_SUFFIX, render_face
from demo.ui import runtime
from demo.ui.tabs.video import face_inputs

TITLE = "Edit"
NUM_SLIDERS = 5
"""Sliders for directions 0-4 (the handler's alpha0 ... alpha4)."""
MAX_ALPHA = 5.0
GPU_SECONDS = 30


@runtime.user_errors
def edit(
    models: runtime.ModelProvider,
    model_id: str,
    source: str,
    seed: float,
    truncation: float,
    face_file: str | None,
    method: str,
    layers: str,
    alphas: list[float],
    current_face: str | None = None,
    *,
    out_dir: Path,
    progress: runtime.ProgressFn | None = None,
) -> tuple[str, str]:
    """``alphas``: the strength of directions 0, 1, ... (standard deviations of W). Returns the edited face's image
    (from its own view; enlarged when small, ``runtime.display_copy``) and its face file."""
    model = models.get(model_id)
    face = runtime.face_for(model, source, seed, truncation, face_file, current_face)
    indices = resolve_layers(model, runtime.read_choice(layers, "Layers", LAYER_GROUPS))
    directions = directions_for(model, runtime.read_choice(method, "Directions", METHODS), layers=indices)
    strengths = {k: runtime.read_number(alpha, f"Direction {k}", -MAX_ALPHA, MAX_ALPHA) for k, alpha in enumerate(alphas)}
    edited = edit_face(face, directions, strengths, layers=indices, name=f"{face.name}_edited")
    render_face(model, edited, out_dir, shapes=False, model_name=model_id, progress=progress)
    return runtime.display_copy(out_dir / f"{edited.name}.png", out_dir), str(edited.save(out_dir / edited.name))


def build(ctx: runtime.UIContext) -> None:
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            source, seed, truncation, face_file = face_inputs("edit")
            method = gr.Radio(list(METHODS), value="sefa", label="Directions",
                              info="sefa: closed-form, from the style layers; ganspace: principal components of W")
            layers = gr.Radio(list(LAYER_GROUPS), value="all", label="Layers the edit changes",
                              info="coarse: shape and pose; middle: features; fine: colour and texture")
            sliders = [gr.Slider(-MAX_ALPHA, MAX_ALPHA, value=0.0, step=0.25, label=f"Direction {k}",
                                 elem_id=f"edit-alpha-{k}") for k in range(NUM_SLIDERS)]
            run = gr.Button("Apply edit", variant="primary", elem_id="edit-btn")
        with gr.Column(scale=3):
            image = gr.Image(label="Edited face", type="filepath", interactive=False, height=320, elem_id="edit-image")
            edited_file = gr.File(label=f"Edited face ({FACE_SUFFIX})", interactive=False, elem_id="edit-face-file")
            adopt = gr.Button("Use as my face (Rotate, Multi-view, Interpolate)", elem_id="edit-adopt-btn")

    @runtime.gpu(duration=GPU_SECONDS)
    def on_edit(model_id, source, seed, truncation, face_file=None, method=None, layers=None, alpha0=None, alpha1=None,
                alpha2=None, alpha3=None, alpha4=None, current_face=None, request: gr.Request = None,
                progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        # face_file=None: an optional upload in the API (see video.build); the later defaults are never used.
        return edit(ctx.models, model_id, source, seed, truncation, face_file, method, layers,
                    [alpha0, alpha1, alpha2, alpha3, alpha4], current_face, out_dir=ctx.sessions.run_dir(request, "edit"),
                    progress=runtime.progress_fn(progress))

    ctx.run_with_model(run, on_edit, [source, seed, truncation, face_file, method, layers, *sliders, ctx.current_face],
                       [image, edited_file], api_name="edit")
    adopt.click(lambda path: path or None, edited_file, ctx.current_face, api_visibility="private", queue=False)
