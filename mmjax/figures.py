"""A matplotlib figure for a PNG, without pyplot.

`Figure` + `FigureCanvasAgg` instead of pyplot: no global backend or figure registry, so
drawing is safe in threads (evaluators, hooks) and does not fight an interactive backend
the caller set. matplotlib is imported on first use, so importing mmjax stays light.
"""
from __future__ import annotations


def new_figure(width: float, height: float):
  """A matplotlib Figure of `width` x `height` inches with an Agg canvas attached (so
  `fig.savefig` writes PNGs)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  return fig
