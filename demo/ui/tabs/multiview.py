"""Multi-view tab: one face (your photo, a seed, a face file) seen from a yaw x pitch grid -> PNGs, cameras, JSON.

What Rotate-and-Render makes from one photo: the person in the photo from every view of the grid,
with each view's 25-number camera in ``<name>_views.json`` and the face's provenance in
``<name>.face.json``; all of it in one .zip.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.errors import InputError
from demo.tasks.face import multiview_face
from demo.tasks.video import view_list
from demo.ui import runtime
from demo.ui.tabs.video import face_inputs

TITLE = "Multi-view"
MAX_VIEWS = 64
GPU_SECONDS = 60


def _angles(text: str, name: str) -> list[float]:
    try:
        values = [float(part) for part in str(text or "").replace(" ", "").split(",") if part]
    except ValueError:
        raise InputError(f"{name}: give comma-separated degrees such as '-30, 0, 30'; got {text!r}.") from None
    if not values:
        raise InputError(f"{name}: give at least one angle in degrees.")
    return [runtime.read_number(value, name, -360, 360) for value in values]


@runtime.user_errors
def multiview(
    models: runtime.ModelProvider,
    model_id: str,
    source: str,
    seed: float,
    truncation: float,
    face_file: str | None,
    yaws: str,
    pitches: str,
    current_face: str | None = None,
    *,
    out_dir: Path,
    progress: runtime.ProgressFn | None = None,
) -> tuple[list[str], list[str]]:
    """Returns the view PNGs for a gallery (small ones enlarged, ``runtime.display_copy``) and the downloads (.zip of
    the set at its true size, the views JSON, the face JSON)."""
    model = models.get(model_id)
    face = runtime.face_for(model, source, seed, truncation, face_file, current_face)
    views = view_list(_angles(yaws, "Yaws"), _angles(pitches, "Pitches"))
    if len(views) > MAX_VIEWS:
        raise InputError(f"At most {MAX_VIEWS} views at a time; {len(views)} asked.")
    folder = out_dir / face.name
    result = multiview_face(model, face, views, folder, full_turn=model.config.is_full_head, progress=progress)
    archive = runtime.zip_folder(folder)
    return [runtime.display_copy(path, out_dir) for path in result.images], [str(archive), str(result.views_json), str(folder / f"{face.name}.face.json")]


def build(ctx: runtime.UIContext) -> None:
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            source, seed, truncation, face_file = face_inputs("multiview")
            yaws = gr.Textbox("-30, -15, 0, 15, 30", label="Yaws (degrees)", info="Positive: the camera at the face's left.")
            pitches = gr.Textbox("-10, 0, 10", label="Pitches (degrees)", info="Negative: the camera above.")
            run = gr.Button("Render views", variant="primary", elem_id="multiview-btn")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Views (yaw × pitch)", columns=5, height=420, elem_id="multiview-gallery")
            files = gr.File(label="Downloads: .zip of the set, views JSON (angles and cameras), face JSON",
                            file_count="multiple", interactive=False, elem_id="multiview-files")

    @runtime.gpu(duration=GPU_SECONDS)
    def on_multiview(model_id, source, seed, truncation, face_file=None, yaws=None, pitches=None, current_face=None,
                     request: gr.Request = None, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        # face_file=None: an optional upload in the API (see video.build); the later defaults are never used.
        return multiview(ctx.models, model_id, source, seed, truncation, face_file, yaws, pitches, current_face,
                         out_dir=ctx.sessions.run_dir(request, "multiview"), progress=runtime.progress_fn(progress))

    ctx.run_with_model(run, on_multiview, [source, seed, truncation, face_file, yaws, pitches, ctx.current_face],
                       [gallery, files], api_name="multiview")
