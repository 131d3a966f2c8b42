"""The one exception type of the export package."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export or verification step failed; the message names the problem and the fix."""
