"""Figures outside pyplot, and the one writer of every PNG apikit makes: run, report and visualisation figures.

A `Figure` on the Agg canvas leaves a Jupyter kernel's backend (inline plots) as it was, and draws the same
under any backend. `save_figure` writes through `apikit.runs.atomic_write`, so a reader never sees half a PNG.
"""
from pathlib import Path

from .runs import atomic_write

__all__ = ["DPI", "new_figure", "save_figure"]

# Dots per inch by kind of figure: plots (lines, bars, matrices, mostly text) and maps (grids of images and
# feature maps, drawn large: their pixels, not their dpi, carry the detail, and they are kept under reports/).
DPI = {"plot": 100, "maps": 80}


def new_figure(width, height, **kwargs):
    """A `width` x `height` inch Figure on the Agg canvas, outside pyplot (`kwargs` go to `Figure`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, kind="plot"):
    """Write `fig` to `path` as a PNG at `DPI[kind]`, cropped to what is drawn, atomically; returns the path."""
    if kind not in DPI:
        raise ValueError(f"kind={kind!r} is not a kind of figure: choose one of {', '.join(map(repr, DPI))}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI[kind], bbox_inches="tight"))
