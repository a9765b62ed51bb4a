"""Plotly figures. Every function returns a ``go.Figure``; :func:`save_figure` writes them."""

from drtk.viz.core import html_only, save_figure, static_export_available
from drtk.viz.directions import (
    cosine_heatmap_compare,
    cosine_heatmap_layers,
    cosine_heatmap_positions,
    projection_by_layer,
    selection_scores,
)

__all__ = [
    "cosine_heatmap_compare", "cosine_heatmap_layers", "cosine_heatmap_positions", "projection_by_layer",
    "html_only", "save_figure", "selection_scores", "static_export_available",
]
