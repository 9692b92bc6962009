"""Interpolate tab: a morph through two or more faces (your photo, face/ws files, seeds) -> mp4 + strip PNG."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo import media
from demo.tasks.face import morph_faces
from demo.tasks.interpolate import INTERPOLATION_MODES
from demo.tasks.video import frame_strip, make_trajectory
from demo.ui import runtime

TITLE = "Interpolate"
CAMERAS = ("static", "orbit", "yaw")
MAX_FRAMES = 240
MAX_FPS = 60
STRIP_FRAMES = 8


def gpu_seconds(model_id, seeds, truncation, face_files, interpolation, frames, *args, **kwargs) -> int:
    """ZeroGPU budget: every frame runs the backbone (the latent changes), then encoding."""
    try:
        return int(min(150, 20 + 0.4 * float(frames)))
    except (TypeError, ValueError):
        return 90


@runtime.user_errors
def interpolate(
    models: runtime.ModelProvider,
    model_id: str,
    seeds: str,
    truncation: float,
    face_files: list[str] | None,
    interpolation: str,
    frames: float,
    fps: float,
    loop: bool,
    camera: str,
    use_photo: bool = False,
    current_face: str | None = None,
    *,
    out_dir: Path,
    progress: runtime.ProgressFn | None = None,
) -> tuple[str, str, list[str]]:
    """Returns the mp4, the strip PNG as shown (enlarged when small, ``runtime.display_copy``), and the downloads (mp4,
    strip at its true size, the ws path .npy, cameras .npy).

    The morph visits, in order: the session's photo face (``use_photo``), the uploaded face or ws
    files, then the seeds; photo faces bring their tuned weights, blended along the way.
    """
    model = models.get(model_id)
    faces = runtime.faces_for(model, seeds_text=seeds, truncation=truncation, face_files=face_files,
                              current_face=current_face, use_photo=bool(use_photo))
    num_frames = runtime.read_int(frames, "Frames", 2, MAX_FRAMES)
    stem = "interp_" + "-".join(face.name for face in faces[:6])
    result = morph_faces(
        model, faces, num_frames, make_trajectory(runtime.read_choice(camera, "Camera", CAMERAS), num_frames),
        out_dir / f"{stem}.mp4", mode=runtime.read_choice(interpolation, "Interpolation", INTERPOLATION_MODES),
        loop=bool(loop), fps=runtime.read_number(fps, "Frames per second", 1, MAX_FPS), progress=progress,
    )
    video = result.video
    strip = media.save_png(out_dir / f"{stem}_strip.png", frame_strip(media.read_video_frames(video.path), STRIP_FRAMES))
    latents = media.save_npy(out_dir / f"{stem}_ws.npy", result.ws)
    return str(video.path), runtime.display_copy(strip, out_dir), [str(p) for p in (video.path, strip, latents, *video.extra_files)]


def build(ctx: runtime.UIContext) -> None:
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            use_photo = gr.Checkbox(False, label="Start from my photo (the face made in Photo → 3D)",
                                    elem_id="interpolate-use-photo")
            face_files = gr.File(label="…then these face files (.face.safetensors) or ws.npy files", file_count="multiple",
                                 file_types=[".safetensors", ".npy"], height=150, elem_id="interpolate-files-in")
            seeds = gr.Textbox("42, 7, 1234", label="…then these seeds", info="e.g. '0, 5, 11' or '0-3'; empty for none.")
            truncation = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ")
            interpolation = gr.Radio(list(INTERPOLATION_MODES), value="slerp", label="Interpolation",
                                     info="linear or spherical in W; cubic-loop is gen_videos.py's looping spline "
                                          "(frames must be a multiple of the number of identities)")
            loop = gr.Checkbox(False, label="Return to the first identity at the end (linear, slerp)")
            camera = gr.Radio(list(CAMERAS), value="static", label="Camera while morphing")
            with gr.Row():
                frames = gr.Slider(8, MAX_FRAMES, value=60, step=1, label="Frames")
                fps = gr.Slider(5, MAX_FPS, value=30, step=1, label="Frames per second")
            run = gr.Button("Render morph", variant="primary", elem_id="interpolate-btn")
        with gr.Column(scale=3):
            video = gr.Video(label="Morph", autoplay=True, loop=True, interactive=False, height=320,
                             elem_id="interpolate-video")
            strip = gr.Image(label=f"{STRIP_FRAMES} frames, first to last", type="filepath", interactive=False,
                             height=140, elem_id="interpolate-strip")
            files = gr.File(label="Downloads: mp4, strip, ws path .npy, cameras .npy", file_count="multiple",
                            interactive=False, elem_id="interpolate-files")

    @runtime.gpu(duration=gpu_seconds)
    def on_interpolate(model_id, seeds, truncation, face_files=None, interpolation=None, frames=None, fps=None, loop=None,
                       camera=None, use_photo=None, current_face=None, request: gr.Request = None,
                       progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        # face_files=None: optional uploads in the API (see video.build); the later defaults are never used.
        return interpolate(ctx.models, model_id, seeds, truncation, face_files, interpolation, frames, fps, loop, camera,
                           use_photo, current_face, out_dir=ctx.sessions.run_dir(request, "interpolate"),
                           progress=runtime.progress_fn(progress))

    ctx.run_with_model(run, on_interpolate, [seeds, truncation, face_files, interpolation, frames, fps, loop, camera,
                                             use_photo, ctx.current_face], [video, strip, files], api_name="interpolate")
