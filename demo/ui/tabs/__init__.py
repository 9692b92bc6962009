"""One module per tab; each has ``TITLE`` and ``build(ctx: demo.ui.runtime.UIContext)``."""
