"""Rotate tab: one identity along a camera path -> mp4, the cameras, and optionally every frame as PNG."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.errors import InputError
from demo.tasks.video import RENDER_MODES, make_trajectory, render_video
from demo.tasks.views import MAX_FRONT_YAW_DEG, MAX_PITCH_DEG
from demo.ui import runtime

TITLE = "Rotate"
TRAJECTORIES = ("orbit", "yaw")
"""``orbit``: the official gen_videos.py loop; ``yaw``: a left-right sweep at a fixed pitch."""
MAX_FRAMES = 240
MAX_FPS = 60


def gpu_seconds(model_id, seed, truncation, ws_file, trajectory, frames, *args, **kwargs) -> int:
    """ZeroGPU budget: EG3D renders tens of frames per second on a GPU; leave room for encoding."""
    try:
        return int(min(120, 20 + 0.25 * float(frames)))
    except (TypeError, ValueError):
        return 60


@runtime.user_errors
def rotate(
    models: runtime.ModelProvider,
    model_id: str,
    seed: float,
    truncation: float,
    ws_file: str | None,
    trajectory: str,
    frames: float,
    fps: float,
    mode: str,
    yaw_range_deg: float,
    pitch_deg: float,
    save_frames: bool,
    *,
    out_dir: Path,
    progress: runtime.ProgressFn | None = None,
) -> tuple[str, list[str]]:
    """Returns the mp4 path and the downloads (mp4, cameras .npy, and a .zip of PNG frames if asked)."""
    model = models.get(model_id)
    ws, names = runtime.identity_latents(
        model, seeds_text=str(runtime.read_int(seed, "Seed", 0, 2**32 - 1)), ws_files=ws_file,
        truncation_psi=runtime.read_number(truncation, "Truncation", 0.0, 1.0),
    )
    if len(ws) != 1:
        raise InputError(f"The latent file holds {len(ws)} identities; Rotate shows one. Use a ws.npy from Generate.")
    path = make_trajectory(
        runtime.read_choice(trajectory, "Trajectory", TRAJECTORIES), runtime.read_int(frames, "Frames", 2, MAX_FRAMES),
        yaw_range_deg=runtime.read_number(yaw_range_deg, "Yaw range", 0, 360),
        pitch_deg=runtime.read_number(pitch_deg, "Pitch", -360, 360),
    )
    stem = f"{names[0]}_{path.name}"
    frames_dir = out_dir / f"{stem}_frames" if save_frames else None
    result = render_video(
        model, ws, path, out_dir / f"{stem}.mp4", mode=runtime.read_choice(mode, "Render mode", RENDER_MODES),
        fps=runtime.read_number(fps, "Frames per second", 1, MAX_FPS), frames_dir=frames_dir,
        full_turn=model.config.is_full_head, progress=progress,
    )
    archive = [runtime.zip_folder(frames_dir)] if frames_dir is not None else []
    return str(result.path), [str(p) for p in (result.path, *result.extra_files[:1], *archive)]


def build(ctx: runtime.UIContext) -> None:
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            seed = gr.Number(42, label="Seed", precision=0, minimum=0, maximum=2**32 - 1)
            truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ")
            ws_file = gr.File(label="…or a ws.npy from Generate (used instead of the seed)", file_types=[".npy"], height=150)
            trajectory = gr.Radio(list(TRAJECTORIES), value="orbit", label="Camera path",
                                  info="orbit: the official gen_videos.py loop; yaw: a left-right sweep")
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

    @runtime.gpu(duration=gpu_seconds)
    def on_rotate(model_id, seed, truncation, ws_file, trajectory, frames, fps, mode, yaw_range_deg, pitch_deg,
                  save_frames, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        return rotate(ctx.models, model_id, seed, truncation, ws_file, trajectory, frames, fps, mode, yaw_range_deg,
                      pitch_deg, save_frames, out_dir=ctx.sessions.run_dir(request, "rotate"),
                      progress=runtime.progress_fn(progress))

    ctx.run_with_model(run, on_rotate, [seed, truncation, ws_file, trajectory, frames, fps, mode, yaw_range, pitch,
                                        save_frames], [video, files], api_name="rotate")
