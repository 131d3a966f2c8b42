"""matplotlib for the commands that draw figures (evaluate, bench, training's loss.png, export's benchmark).

matplotlib is the `plot` extra, not part of the base install: a command that plots imports it through
`pyplot()`, which names the fix in one line when it is missing.
"""

from __future__ import annotations

from typing import Any

INSTALL_HINT = "pip install 'llasm[plot]'"


class PlotUnavailable(ImportError):
    """matplotlib is not installed; the message names the extra that brings it."""


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend (figures go to files, never a window)."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise PlotUnavailable(f"plotting needs matplotlib, which the base install leaves out: {INSTALL_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
