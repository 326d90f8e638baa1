"""Gaze heatmaps: output grids and the fast separable Gaussian renderer (see DESIGN.md)."""

from gazeprep.heatmaps.grid import OutputGrid
from gazeprep.heatmaps.render import (
    GaussianProfiles,
    RenderedMap,
    naive_render,
    normalize_map,
    render_case,
    render_points,
)

__all__ = [
    "GaussianProfiles",
    "OutputGrid",
    "RenderedMap",
    "naive_render",
    "normalize_map",
    "render_case",
    "render_points",
]
