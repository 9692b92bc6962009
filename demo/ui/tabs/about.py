"""About tab: models, licences and sources, citations, running locally, the API."""

from __future__ import annotations

import gradio as gr

from demo.ui import runtime, text
from demo.weights import registry

TITLE = "About"


def build(ctx: runtime.UIContext) -> None:
    del ctx  # the same text whatever the menu offers
    gr.Markdown(text.about_markdown(registry.list_entries(), runtime.PREVIEW_LABEL), elem_id="about-text")
