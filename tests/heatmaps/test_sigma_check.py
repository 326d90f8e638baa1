"""The build's sigma warning: sigma > 1/4 of the image's short side, counted per case."""

from __future__ import annotations

import polars as pl

from gazeprep.heatmaps.checks import sigma_check
from gazeprep.recipes import load_recipe


def _cases(sizes):
    return pl.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(len(sizes))],
            "image_height_px": [h for h, _ in sizes],
            "image_width_px": [w for _, w in sizes],
        },
        schema={"case_id": pl.Utf8, "image_height_px": pl.Int64, "image_width_px": pl.Int64},
    )


def test_egd_sigma_150_px_counts_small_images_only():
    recipe = load_recipe("egd-static")  # sigma 150 px
    # short sides 2544 (150 <= 636), 600 (limit exactly 150: not above), 599 (149.75 < 150: hit),
    # 300 x 2000 (short side 300 -> 75: hit), unknown size (not counted)
    cases = _cases([(3056, 2544), (600, 800), (599, 1000), (2000, 300), (None, 500)])
    n, msg = sigma_check(cases, recipe)
    assert n == 2
    assert "egd-static" in msg and "150 px" in msg and "2 of 4 cases" in msg and "300-599 px" in msg


def test_no_message_when_no_case_is_affected():
    recipe = load_recipe("egd-static")
    assert sigma_check(_cases([(3056, 2544), (2000, 2000)]), recipe) == (0, None)
    assert sigma_check(_cases([]), recipe) == (0, None)


def test_sigma_in_degrees_uses_pixels_per_degree_of_the_fixations():
    recipe = load_recipe("reflacx-official")  # sigma 1 deg
    assert recipe.render.sigma.unit == "deg"
    cases = _cases([(200, 240), (200, 240)])
    # c0: 60 px/deg -> sigma 60 px > 50 (= 200 / 4); c1: 40 px/deg -> 40 px, not above
    fx = pl.DataFrame(
        {"case_id": ["c0", "c0", "c1"], "px_per_deg_x": [60.0, 60.0, 40.0], "px_per_deg_y": [55.0, 58.0, 30.0]}
    )
    n, msg = sigma_check(cases, recipe, fx)
    assert n == 1 and "1 of 2 cases" in msg and "200 px" in msg
    # without fixations a sigma in degrees cannot be checked
    assert sigma_check(cases, recipe) == (0, None)
