"""Preview overlays: colour ramp, blending, geometry of the heatmap layer, files and HTML sheet."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from PIL import Image

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import evaluator as E
from gazeprep.evaluate import preview as P
from gazeprep.heatmaps.grid import OutputGrid


def test_colormap_endpoints_and_monotone_brightness():
    c = P.colormap(np.linspace(0, 1, 11))
    assert tuple(c[0]) == (0, 0, 4) and tuple(c[-1]) == (252, 255, 164)
    lum = c.astype(float) @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(lum) > 0)


def test_overlay_zero_heat_leaves_image_and_peak_is_coloured():
    g = np.full((4, 4), 0.5)
    out = P.overlay_heatmap(g, np.zeros((4, 4)))
    assert np.all(out == 128)
    h = np.zeros((4, 4))
    h[1, 1] = 2.0  # noqa: E702
    out = P.overlay_heatmap(g, h, max_alpha=1.0)
    assert tuple(out[1, 1]) == (252, 255, 164) and tuple(out[0, 0]) == (128, 128, 128)


def _export(H=20, W=40, N=20, heat=None):
    grid = OutputGrid.letterbox(H, W, N)
    if heat is None:
        heat = np.zeros((N, N))
        heat[8:12, 8:12] = 1.0  # noqa: E702
    cases = pl.DataFrame(
        {"case_id": ["c1"], "image_height_px": [H], "image_width_px": [W], "image_path": ["files/p1/x.jpg"]}
    )
    fx = pl.DataFrame(
        {
            "case_id": ["c1"] * 3,
            "t_start_s": [0.0, 1.0, 2.0],
            "t_end_s": [0.2, 1.9, 2.1],
            "x_px": [5.0, 20.0, 35.0],
            "y_px": [5.0, 10.0, 15.0],
        }
    )
    ell = pl.DataFrame(
        {
            "case_id": ["c1"],
            "xmin_px": [10.0],
            "ymin_px": [4.0],
            "xmax_px": [30.0],
            "ymax_px": [16.0],
            "certainty": [4],
            "source_label": ["Pneumothorax"],
        }
    )
    return E.InMemoryExport({("c1", "pneumothorax"): heat}, {"cases": cases, "fixations": fx, "ellipses": ell}), grid


def test_heat_layer_cuts_letterbox_padding():
    # heat only in the padding rows of the 20x20 grid (the 20x40 image fills rows 5..14)
    heat = np.zeros((20, 20))
    heat[:4] = 1.0  # noqa: E702
    ex, grid = _export(heat=heat)
    d = P._heat_on_display(heat, grid, 20, 40, 1.0)
    assert d.max() == 0
    heat = np.zeros((20, 20))
    heat[5:15] = 1.0  # noqa: E702
    assert P._heat_on_display(heat, grid, 20, 40, 1.0).min() == 1.0


def test_render_preview_draws_layers():
    ex, _ = _export()
    img = np.zeros((20, 40), np.float32)
    im = P.render_preview(ex, "c1", "pneumothorax", image=img, size=400)
    assert im.size[0] == 400 and im.size[1] > 200
    a = np.asarray(im)
    body = a[:200]
    # heat (warm colours) at the image centre, fixation cyan, ellipse green all present
    assert (body[..., 0] > 150).any()
    assert ((body[..., 1] > 200) & (body[..., 2] > 200) & (body[..., 0] < 100)).any()
    assert ((body[..., 1] > 200) & (body[..., 0] < 120) & (body[..., 2] < 160)).any()
    # without an image: grey canvas
    grey = np.asarray(P.render_preview(ex, "c1", "pneumothorax", size=200))
    assert tuple(grey[2, 2]) == (89, 89, 89)


def test_preview_case_and_contact_sheet(tmp_path):
    ex, _ = _export()
    paths = P.preview_case(ex, "c1", tmp_path, size=160)
    assert [p.name for p in paths] == ["pneumothorax.png"]
    with Image.open(paths[0]) as im:
        assert im.size[0] == 160
    page = P.contact_sheet(ex, tmp_path / "sheet", thumb=80, full=160, progress=False)
    text = page.read_text()
    assert text.count("<img") == 1 and "thumbs/c1/pneumothorax.png" in text
    assert (tmp_path / "sheet" / "c1" / "pneumothorax.png").is_file()
    with pytest.raises(GazeprepError):
        P.preview_case(ex, "nope", tmp_path)
    bad = E.InMemoryExport({("../x", "t"): np.ones((4, 4))})
    with pytest.raises(GazeprepError, match="unsafe"):
        P.preview_case(bad, "../x", tmp_path)


def test_mask_outline_drawn_from_arrays():
    ex, _ = _export()
    m = np.zeros((20, 40), bool)
    m[4:16, 4:16] = True
    plain = np.asarray(P.render_preview(ex, "c1", "pneumothorax", image=np.zeros((20, 40), np.float32), size=400))
    drawn = np.asarray(
        P.render_preview(ex, "c1", "pneumothorax", image=np.zeros((20, 40), np.float32), size=400, masks={"heart": m})
    )
    # each structure has a fixed outline colour (the same in every panel and in the sheet's legend)
    col = np.array(P.mask_colour("heart"))
    red = (np.abs(drawn.astype(int) - col) <= 30).all(axis=-1)
    red_plain = (np.abs(plain.astype(int) - col) <= 30).all(axis=-1)
    # outline pixels at the mask border (display scale 10): column 40 between rows 40..160
    assert red.sum() > red_plain.sum() + 100
    assert red[100, 40] or red[100, 39] or red[100, 41]
    assert not red[100, 100]  # the inside is not filled
