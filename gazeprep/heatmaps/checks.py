"""Sanity checks of a recipe against the data it is about to render (pure functions, no I/O).

:func:`sigma_check` flags a Gaussian so wide relative to the image that the map becomes a nearly
uniform wash: EGD-CXR's sigma of 150 original pixels is meant for ~2500 px DICOMs, and on a small
image (the bundled sample, a downscaled copy) a few sigmas cover the whole picture. The build prints
its message once, with the number of affected cases.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

SIGMA_SHORT_SIDE_FRACTION = 0.25
"""A sigma above this fraction of the image's short side (original pixels) is reported."""


def _sigma_px_per_case(cases: pl.DataFrame, recipe: Any, fixations: pl.DataFrame | None) -> np.ndarray:
    """Sigma in original-image pixels for each row of ``cases`` (NaN where it cannot be known).

    ``unit: px`` is the same for every case. ``unit: deg`` needs each case's pixels per degree: the
    median over its fixations of ``max(px_per_deg_x, px_per_deg_y)`` times the value, when
    ``fixations`` is given; NaN otherwise."""
    sigma = recipe.render.sigma
    n = cases.height
    if sigma.unit == "px":
        return np.full(n, float(sigma.value))
    if fixations is None or fixations.height == 0 or not {"px_per_deg_x", "px_per_deg_y"} <= set(fixations.columns):
        return np.full(n, np.nan)
    ppd = (
        fixations.select(
            "case_id",
            pl.max_horizontal(pl.col("px_per_deg_x").cast(pl.Float64), pl.col("px_per_deg_y").cast(pl.Float64)).alias(
                "ppd"
            ),
        )
        .group_by("case_id")
        .agg(pl.col("ppd").median())
    )
    joined = cases.select("case_id").join(ppd, on="case_id", how="left", maintain_order="left")
    return joined.get_column("ppd").cast(pl.Float64).fill_null(np.nan).to_numpy() * float(sigma.value)


def sigma_check(
    cases: pl.DataFrame,
    recipe: Any,
    fixations: pl.DataFrame | None = None,
    *,
    fraction: float = SIGMA_SHORT_SIDE_FRACTION,
) -> tuple[int, str | None]:
    """Count the cases whose rendering sigma exceeds ``fraction`` of the image's short side.

    Parameters
    ----------
    cases:
        The ``cases`` table (``case_id``, ``image_height_px``, ``image_width_px`` in original
        pixels) of the cases about to be rendered. Rows with an unknown size are not counted.
    recipe:
        A :class:`gazeprep.recipes.Recipe` (its ``name`` and ``render.sigma`` are read).
    fixations:
        Optional ``fixations`` table; needed only for sigmas in degrees (``px_per_deg_x/_y``).
        Without it a sigma in degrees is not checked.
    fraction:
        The threshold as a fraction of ``min(height, width)``; default 1/4.

    Returns
    -------
    (count, message)
        ``count`` cases with ``sigma_px > fraction * short_side_px``; ``message`` is one line for
        the user (without a ``warning:`` prefix) naming the recipe, the sigma, the count and the
        range of affected short sides, or ``None`` when no case is affected.
    """
    if cases.height == 0 or not {"image_height_px", "image_width_px"} <= set(cases.columns):
        return 0, None
    h = cases.get_column("image_height_px").cast(pl.Float64).fill_null(np.nan).to_numpy()
    w = cases.get_column("image_width_px").cast(pl.Float64).fill_null(np.nan).to_numpy()
    short = np.fmin(h, w)
    short = np.where(np.isnan(h) | np.isnan(w), np.nan, short)
    sigma_px = _sigma_px_per_case(cases, recipe, fixations)
    known = np.isfinite(short) & (short > 0) & np.isfinite(sigma_px)
    hit = known & (sigma_px > fraction * np.where(known, short, 0.0))
    count = int(hit.sum())
    if count == 0:
        return 0, None
    sig = recipe.render.sigma
    sigma_text = (
        f"{sig.value:g} px" if sig.unit == "px" else f"{sig.value:g} deg (~{np.nanmedian(sigma_px[hit]):.0f} px)"
    )
    lo, hi = int(np.min(short[hit])), int(np.max(short[hit]))
    sides = f"{lo} px" if lo == hi else f"{lo}-{hi} px"
    frac_text = "a quarter" if fraction == 0.25 else f"{fraction:g} times"
    message = (
        f"recipe {recipe.name}: sigma {sigma_text} exceeds {frac_text} of the image's short side in "
        f"{count} of {int(known.sum())} cases (short side {sides}); their maps are a nearly uniform wash "
        f"(the sigma is meant for full-size images: use full-resolution images or a recipe with a smaller sigma)"
    )
    return count, message
