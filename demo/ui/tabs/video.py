"""Rotate tab: one face (a seed, the session's photo face, or a face/ws file) along a camera path -> mp4."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.tasks.face import face_trajectory, rotate_face
from demo.tasks.video import RENDER_MODES
from demo.tasks.views import MAX_FRONT_YAW_DEG, MAX_PITCH_DEG
from demo.ui import runtime

TITLE = "Rotate"
TRAJECTORIES = ("orbit", "yaw")
"""``orbit``: the official gen_videos.py loop; ``yaw``: a left-right sweep. A photo face's path centres on its own view."""
MAX_FRAMES = 240
MAX_FPS = 60


def gpu_seconds(model_id, source, seed, truncation, face_file, trajectory, frames, *args, **kwargs) -> int:
    """ZeroGPU budget: EG3D renders tens of frames per second on a GPU; leave room for encoding."""
    try:
        return int(min(120, 20 + 0.25 * float(frames)))
    except (TypeError, ValueError):
        return 60


@runtime.user_errors
def rotate(
    models: runtime.ModelProvider,
    model_id: str,
    source: str,
    seed: float,
    truncation: float,
    face_file: str | None,
    trajectory: str,
    frames: float,
    fps: float,
    mode: str,
    yaw_range_deg: float,
    pitch_deg: float,
    save_frames: bool,
    current_face: str | None = None,
    *,
    out_dir: Path,
    progress: runtime.ProgressFn | None = None,
) -> tuple[str, list[str]]:
    """Returns the mp4 path and the downloads (mp4, cameras .npy, and a .zip of PNG frames if asked)."""
    model = models.get(model_id)
    face = runtime.face_for(model, source, seed, truncation, face_file, current_face)
    path = face_trajectory(
        face, runtime.read_choice(trajectory, "Trajectory", TRAJECTORIES), runtime.read_int(frames, "Frames", 2, MAX_FRAMES),
        yaw_range_deg=runtime.read_number(yaw_range_deg, "Yaw range", 0, 360),
        pitch_deg=runtime.read_number(pitch_deg, "Pitch", -360, 360),
    )
    stem = f"{face.name}_{path.name}"
    frames_dir = out_dir / f"{stem}_frames" if save_frames else None
    result = rotate_face(
        model, face, path, out_dir / f"{stem}.mp4", mode=runtime.read_choice(mode, "Render mode", RENDER_MODES),
        fps=runtime.read_number(fps, "Frames per second", 1, MAX_FPS), frames_dir=frames_dir,
        full_turn=model.config.is_full_head, progress=progress,
    )
    archive = [runtime.zip_folder(frames_dir)] if frames_dir is not None else []
    return str(result.path), [str(p) for p in (result.path, *result.extra_files[:1], *archive)]


def face_inputs(prefix: str, *, default_seed: int = 42) -> list:
    """The face picker shared by Rotate and Multi-view: source, seed, truncation, face file."""
    source = gr.Radio(list(runtime.FACE_SOURCES), value="seed", label="Face from",
                      info="my photo: the face made in Photo → 3D; face file: a .face.safetensors or a ws.npy",
                      elem_id=f"{prefix}-source")
    seed = gr.Number(default_seed, label="Seed", precision=0, minimum=0, maximum=2**32 - 1)
    truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ")
    face_file = gr.File(label="Face file (.face.safetensors) or ws.npy", file_types=[".safetensors", ".npy"], height=130,
                        elem_id=f"{prefix}-face-file")
    return [source, seed, truncation, face_file]


def build(ctx: runtime.UIContext) -> None:
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            source, seed, truncation, face_file = face_inputs("rotate")
            trajectory = gr.Radio(list(TRAJECTORIES), value="orbit", label="Camera path",
                                  info="orbit: the official gen_videos.py loop; yaw: a left-right sweep "
                                       "(around the photo's own view for a photo face)")
            with gr.Row():
                yaw_range = gr.Slider(5, MAX_FRONT_YAW_DEG, value=35, step=1, label="Yaw range (yaw path), degrees")
                pitch = gr.Slider(-MAX_PITCH_DEG, MAX_PITCH_DEG, value=0, step=1, label="Pitch (yaw path), degrees")
            with gr.Row():
                frames = gr.Slider(8, MAX_FRAMES, value=60, step=1, label="Frames")
                fps = gr.Slider(5, MAX_FPS, value=30, step=1, label="Frames per second")
            mode = gr.Radio(list(RENDER_MODES), value="image", label="Render mode")
            save_frames = gr.Checkbox(False, label="Also download every frame as PNG (.zip)")
            run = gr.Button("Render video", variant="primary", elem_id="rotate-btn")
        with gr.Column(scale=3):
            video = gr.Video(label="Video", autoplay=True, loop=True, interactive=False, height=360, elem_id="rotate-video")
            files = gr.File(label="Downloads: mp4, cameras .npy, frames .zip", file_count="multiple",
                            interactive=False, elem_id="rotate-files")

    # face_file=None makes the upload optional in the API (Gradio reads the handler's default); the parameters after
    # it need defaults too, which are never used: clients send the widgets' values for anything left out.
    @runtime.gpu(duration=gpu_seconds)
    def on_rotate(model_id, source, seed, truncation, face_file=None, trajectory=None, frames=None, fps=None, mode=None,
                  yaw_range_deg=None, pitch_deg=None, save_frames=None, current_face=None, request: gr.Request = None,
                  progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        return rotate(ctx.models, model_id, source, seed, truncation, face_file, trajectory, frames, fps, mode, yaw_range_deg,
                      pitch_deg, save_frames, current_face, out_dir=ctx.sessions.run_dir(request, "rotate"),
                      progress=runtime.progress_fn(progress))

    ctx.run_with_model(run, on_rotate, [source, seed, truncation, face_file, trajectory, frames, fps, mode, yaw_range, pitch,
                                        save_frames, ctx.current_face], [video, files], api_name="rotate")
