"""The Gradio web app: ``build_demo(models=None) -> gr.Blocks`` (layer 5).

The UI only translates widgets to the library's task functions; see ``runtime.py`` for what the tabs
share and ``tabs/`` for one module per tab. Tabs appear in the order of :data:`TABS`.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.ui import runtime, text
from demo.ui.runtime import ModelProvider
from demo.ui.tabs import about, edit, generate, interpolate, multiview, photo, video

TABS = [generate, photo, video, multiview, interpolate, edit, about]

QUEUE_MAX_SIZE = 32
"""Requests waiting in the queue before new ones are turned away ("the queue is full")."""
DELETE_CACHE = (1800, 3600)
"""Every 30 min, Gradio deletes its copies of result files older than an hour."""

LAUNCH_OPTIONS = {"show_error": True}
"""Options for ``demo.launch``: values of the wrong type (an API call with seed="abc") are refused by Gradio
before any handler runs; ``show_error`` passes its message ("Expected a float ...") to the caller instead of a
generic "the app raised an exception". Handlers' own errors are already user messages (``runtime.user_errors``)."""

__all__ = ["LAUNCH_OPTIONS", "TABS", "ModelProvider", "build_demo"]


def build_demo(
    models: ModelProvider | None = None,
    *,
    session_root: str | Path | None = None,
    gpu_concurrency: int = 2,
) -> gr.Blocks:
    """The whole app around ``models`` (default: the registry's checkpoints plus the tiny model).

    Args:
        models: what the model menu offers; tests pass ``ModelProvider.tiny()``.
        session_root: parent of the per-session output folders (default: under the temp dir).
        gpu_concurrency: renders that may run at the same time.
    """
    models = models if models is not None else ModelProvider()
    print(models.startup_line(), flush=True)  # the console's one line on the model (and any fallback, with why)
    sessions = runtime.SessionFolders(session_root)
    with gr.Blocks(title=text.TITLE, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(text.HEADER, elem_id="header")
        with gr.Row():
            menu = gr.Dropdown(models.choices(), value=models.default_id, label="Model", scale=1, min_width=260,
                               elem_id="model-menu")
            with gr.Column(scale=2, min_width=300):  # a narrow phone screen puts it under the menu, full width
                status = gr.Markdown(models.notice or models.status(models.default_id), elem_id="model-status")
        current_face = gr.State(None)
        ctx = runtime.UIContext(models, sessions, menu, status, current_face, gpu_concurrency=gpu_concurrency)
        with gr.Tabs():
            for tab in TABS:
                with gr.Tab(tab.TITLE, id=tab.__name__.rsplit(".", 1)[-1]):
                    tab.build(ctx)
        menu.input(models.status, menu, status, api_visibility="private", queue=False)
        demo.load(sessions.open, api_visibility="private", queue=False)
        for fn, inputs, outputs, *options in ctx.on_page_load:
            demo.load(fn, inputs, outputs, **{"api_visibility": "private", "queue": False, **(options[0] if options else {})})
        demo.unload(sessions.close)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=gpu_concurrency)
    runtime.clean_up_on_terminate(demo, sessions)
    return demo
