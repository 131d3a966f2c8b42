"""Command group registered on `llasm-train` (filled in by its owner module)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
