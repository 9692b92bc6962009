"""Errors the library raises for things a user can fix.

Every message says what happened and what to try. The UI turns a ``DemoError`` into a visible
message, the CLI prints it and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DemoError(Exception):
    """Base class of every error a user can act on."""


class CheckpointError(DemoError):
    """A checkpoint is missing, corrupt, has the wrong hash, or does not fit the architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""


class InputError(DemoError):
    """User input (an image, a latent file, an option value) cannot be used as given."""


class NoSurfaceError(InputError):
    """A density volume never reaches the mesh iso-level: there is no surface to mesh (the image is still fine)."""


class ResourceError(DemoError):
    """The device ran out of memory or a time budget was exceeded."""
