"""The shipped recipes against independent re-implementations of their documented definitions."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import ndimage
from scipy.stats import multivariate_normal

from gazeprep.heatmaps import OutputGrid, naive_render, normalize_map, render_case
from gazeprep.recipes import Recipe, load_recipe


def _with_render(recipe: Recipe, **changes) -> Recipe:
    d = recipe.resolved()
    d["render"].update(changes)
    return Recipe.model_validate(d)


def _windows(rows, dataset="reflacx", case_id="c1") -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"dataset": dataset, "case_id": case_id, "target": t, "window_idx": i, "t_start_s": a, "t_end_s": b}
            for i, (t, a, b) in enumerate(rows)
        ],
        schema={
            "dataset": pl.Utf8,
            "case_id": pl.Utf8,
            "target": pl.Utf8,
            "window_idx": pl.Int32,
            "t_start_s": pl.Float64,
            "t_end_s": pl.Float64,
        },
    )


def _reflacx_fixations(rng, n, H, W) -> pl.DataFrame:
    """REFLACX-like fixations: sub-pixel positions, per-fixation px/deg, rounded-able shown rects inside the image."""
    t0 = np.cumsum(rng.uniform(0.05, 0.4, n))
    t1 = t0 + rng.uniform(0.05, 0.3, n)
    x, y = rng.uniform(0, W - 1, n), rng.uniform(0, H - 1, n)
    ppd = rng.uniform(3.0, 6.0, n)
    xmin = np.minimum(x, rng.uniform(0, W / 2, n)).clip(0) * (rng.random(n) < 0.5)
    ymin = np.minimum(y, rng.uniform(0, H / 2, n)).clip(0) * (rng.random(n) < 0.5)
    xmax = np.where(rng.random(n) < 0.5, W, np.maximum(x + 1, rng.uniform(W / 2, W, n)).clip(max=W))
    ymax = np.where(rng.random(n) < 0.5, H, np.maximum(y + 1, rng.uniform(H / 2, H, n)).clip(max=H))
    return pl.DataFrame(
        {
            "dataset": "reflacx",
            "case_id": "c1",
            "fixation_idx": np.arange(n, dtype=np.int32),
            "t_start_s": t0,
            "t_end_s": t1,
            "x_px": x,
            "y_px": y,
            "px_per_deg_x": ppd,
            "px_per_deg_y": ppd * rng.uniform(0.9, 1.1, n),
            "shown_xmin_px": xmin + 0.3,
            "shown_ymin_px": ymin + 0.2,
            "shown_xmax_px": xmax - 0.3,
            "shown_ymax_px": ymax - 0.4,
        }
    )


def _ricbl_heatmap(fx: pl.DataFrame, H: int, W: int, start: float | None, end: float | None, clip_weights: bool):
    """Independent port of 004's create_heatmap / REFLACX's create_heatmap: one multivariate-normal PDF per
    fixation over the rounded shown rectangle (scipy.stats), weighted by (clipped) duration, unnormalised."""
    img = np.zeros((H, W), dtype=np.float64)
    lo = -np.inf if start is None else start
    hi = np.inf if end is None else end
    for r in fx.iter_rows(named=True):
        if not (r["t_end_s"] > lo and r["t_start_s"] <= hi):
            continue
        if clip_weights:
            w = min(r["t_end_s"], hi) - max(r["t_start_s"], lo)
        else:
            w = r["t_end_s"] - r["t_start_s"]
        rect = [
            round(r["shown_xmin_px"]),
            round(r["shown_ymin_px"]),
            round(r["shown_xmax_px"]),
            round(r["shown_ymax_px"]),
        ]
        mu = [r["y_px"] - rect[1], r["x_px"] - rect[0]]
        cov = np.diag([r["px_per_deg_y"] ** 2, r["px_per_deg_x"] ** 2])
        X, Y = np.meshgrid(np.arange(0, rect[2] - rect[0]), np.arange(0, rect[3] - rect[1]))
        pos = np.stack([Y, X], axis=-1)
        g = np.zeros((H, W))
        g[rect[1] : rect[3], rect[0] : rect[2]] = multivariate_normal(mu, cov).pdf(pos)
        img += g * w
    return img


# ----------------------------------------------------------------------------- REFLACX
def test_reflacx_official_matches_the_dataset_code():
    rec = load_recipe("reflacx-official")
    assert rec.render.sigma.unit == "deg" and rec.render.sigma.value == 1.0 and rec.output.size == "native"
    rng = np.random.default_rng(0)
    H, W = 70, 90
    fx = _reflacx_fixations(rng, 25, H, W)
    maps, rej = render_case(
        fx, _windows([("full", 0.0, float(fx["t_end_s"].max()))]), rec, image_height_px=H, image_width_px=W
    )
    ref = _ricbl_heatmap(fx, H, W, None, None, clip_weights=False)
    ref /= ref.sum()
    out = maps["full"].array
    assert out.shape == (H, W) and out.dtype == np.float32 and rej == []
    assert out.sum() == pytest.approx(1.0, rel=1e-5)
    assert np.abs(out - ref).max() < 1e-6 * ref.max()
    assert maps["full"].total_weight == pytest.approx(float((fx["t_end_s"] - fx["t_start_s"]).sum()))


@pytest.mark.parametrize("name", ["reflacx-label-specific", "reflacx-full-report"])
def test_004_recipes_match_004s_per_sentence_maps(name):
    rec = load_recipe(name)
    rng = np.random.default_rng(1)
    H, W = 60, 80
    fx = _reflacx_fixations(rng, 30, H, W)
    # two sentences' windows for one label, one of them shared with another label (004: every label of a
    # sentence gets the sentence's map; a label's maps combine by max)
    win = _windows([("atelectasis", 1.0, 2.5), ("atelectasis", 3.0, 4.2), ("effusion", 3.0, 4.2)])
    native = rec.with_overrides(size="native")
    maps, rej = render_case(fx, win, native, image_height_px=H, image_width_px=W)
    s1 = _ricbl_heatmap(fx, H, W, 1.0, 2.5, clip_weights=True)
    s2 = _ricbl_heatmap(fx, H, W, 3.0, 4.2, clip_weights=True)
    expect = np.maximum(s1 / s1.max(), s2 / s2.max())
    assert rej == []
    assert np.abs(maps["atelectasis"].array - expect).max() < 1e-6
    assert np.abs(maps["effusion"].array - s2 / s2.max()).max() < 1e-6
    # at the recipe's 512 grid (004's letterbox geometry): the same contract evaluated on that grid
    maps512, _ = render_case(fx, win, rec, image_height_px=H, image_width_px=W)
    g = OutputGrid.letterbox(H, W, 512, rule="ricbl")
    assert maps512["atelectasis"].array.shape == (512, 512)

    def naive_window(a, b):
        sel = fx.filter((pl.col("t_end_s") > a) & (pl.col("t_start_s") <= b))
        w = (sel["t_end_s"].clip(upper_bound=b) - sel["t_start_s"].clip(lower_bound=a)).to_numpy()
        rects = np.round(sel.select("shown_xmin_px", "shown_ymin_px", "shown_xmax_px", "shown_ymax_px").to_numpy())
        m = naive_render(g, sel["x_px"], sel["y_px"], sel["px_per_deg_x"], sel["px_per_deg_y"], w, rects)
        return m / m.max()

    expect512 = np.maximum(naive_window(1.0, 2.5), naive_window(3.0, 4.2))
    assert np.abs(maps512["atelectasis"].array - expect512).max() < 1e-6
    # letterbox padding stays zero (004 pads with zeros)
    _, y0, _, y1 = g.image_box  # landscape image: padding above and below
    assert y0 > 10 and not maps512["atelectasis"].array[: int(math.floor(y0))].any()
    assert not maps512["atelectasis"].array[int(math.ceil(y1)) :].any()


# ----------------------------------------------------------------------------- EGD-CXR
def _egd_counts(rng, n, H, W, border_heavy=False):
    if border_heavy:
        x = np.concatenate([rng.uniform(0, 8, n // 2), rng.uniform(0, W, n - n // 2)])
        y = rng.uniform(0, H, n)
    else:
        x, y = rng.uniform(0, W, n), rng.uniform(0, H, n)
    return np.floor(x) + rng.uniform(0, 0.99, n), np.floor(y) + rng.uniform(0, 0.99, n)  # sub-pixel: floored


def _egd_frame(x, y):
    n = len(x)
    return pl.DataFrame(
        {
            "dataset": "egd-cxr",
            "case_id": "d1",
            "fixation_idx": np.arange(n, dtype=np.int32),
            "t_start_s": np.arange(n) * 0.3,
            "t_end_s": np.arange(n) * 0.3 + 0.25,
            "x_px": x,
            "y_px": y,
            "px_per_deg_x": [None] * n,
            "px_per_deg_y": [None] * n,
        }
    )


def test_egd_static_contract_is_blurred_counts_min_max_scaled():
    # gazeprep's contract on EGD's counts (egd-static itself reproduces EGD's code: tests/test_paper_presets.py)
    rec = load_recipe("egd-static-contract")
    assert (rec.render.sigma.value, rec.render.sigma.unit, rec.render.weight, rec.render.normalize) == (
        150.0,
        "px",
        "count",
        "minmax",
    )
    # the same definition at a tenth of the scale keeps scipy's reference fast (sigma 15 px)
    small = _with_render(rec, sigma={"value": 15.0, "unit": "px"})
    rng = np.random.default_rng(2)
    H, W = 220, 180
    x, y = _egd_counts(rng, 40, H, W)
    x = np.append(x, [-3.0, 50.0])  # off-image points are not counted (EGD maps them to -1)
    y = np.append(y, [20.0, H + 5.0])
    maps, _ = render_case(
        _egd_frame(x, y), _windows([("full", None, None)], "egd-cxr", "d1"), small, image_height_px=H, image_width_px=W
    )
    counts = np.zeros((H, W))
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    np.add.at(counts, (np.floor(y[inside]).astype(int), np.floor(x[inside]).astype(int)), 1)
    ref = normalize_map(ndimage.gaussian_filter(counts, 15.0, mode="constant", truncate=12.0), "minmax")
    out = maps["full"].array
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)
    assert np.abs(out - ref).max() < 2e-6
    assert maps["full"].n_fixations == 40


def test_egd_reflect_difference_is_a_border_effect():
    # gazeprep drops the mass outside the image; EGD's scipy call reflects it (mode='reflect').
    rec = _with_render(load_recipe("egd-static-contract"), sigma={"value": 8.0, "unit": "px"}, normalize="none")
    rng = np.random.default_rng(3)
    H, W, s = 260, 220, 8.0
    x, y = _egd_counts(rng, 60, H, W, border_heavy=True)
    maps, _ = render_case(
        _egd_frame(x, y), _windows([("full", None, None)], "egd-cxr", "d1"), rec, image_height_px=H, image_width_px=W
    )
    counts = np.zeros((H, W))
    np.add.at(counts, (np.floor(y).astype(int), np.floor(x).astype(int)), 1)
    reflect = ndimage.gaussian_filter(counts, s, mode="reflect", truncate=8.0)
    out = maps["full"].array
    m = int(8 * s)  # beyond the kernel radius the reflected copies cannot reach
    interior = (slice(m, H - m), slice(m, W - m))
    assert np.abs(out[interior] - reflect[interior]).max() < 1e-6 * reflect.max()
    border = np.abs(out - reflect)[:, :4].max()
    assert border > 0.05 * reflect.max()  # the documented difference: visible at the border only
    assert np.all(out <= reflect + 1e-6 * reflect.max())  # dropping never adds mass


def test_egd_temporal_one_map_per_phrase():
    rec = load_recipe("egd-temporal")
    rng = np.random.default_rng(4)
    H, W = 400, 300
    x, y = _egd_counts(rng, 12, H, W)
    fx = _egd_frame(x, y)  # fixations every 0.3 s
    win = _windows(
        [("phrase_0000", 0.0, 1.0), ("phrase_0001", 100.0, 101.0), ("phrase_0002", 1.5, 3.0)], "egd-cxr", "d1"
    )
    maps, rej = render_case(fx, win, rec, image_height_px=H, image_width_px=W)
    assert list(maps) == ["phrase_0000", "phrase_0001", "phrase_0002"] and rej == []
    assert all(m.array.shape == (224, 224) for m in maps.values())
    assert not maps["phrase_0001"].array.any()  # silent phrase: zeros keep the sequence aligned
    assert maps["phrase_0000"].array.max() == pytest.approx(1.0) and maps["phrase_0000"].n_fixations == 4


@pytest.mark.parametrize("variant", ["max", "sum"])
def test_egd_gaze_samples_contract_on_mtunet_grid(variant):
    rec = load_recipe(f"egd-gaze-samples-{variant}-contract")
    assert rec.render.source == "gaze_samples" and rec.render.sigma.value == 75.5
    assert 0.3 * ((501 - 1) / 2 - 1) + 0.8 == 75.5  # OpenCV's sigma for ksize 501
    rng = np.random.default_rng(5)
    H, W = 3056, 2544
    n = 400
    # samples cluster on a few pixels (dwell), as 60 Hz gaze does; some are lost (blinks) or off-image
    px = rng.integers(0, W, 25).astype(float)
    py = rng.integers(0, H, 25).astype(float)
    pick = rng.integers(0, 25, n)
    x, y = px[pick], py[pick]
    x[:5] = np.nan
    x[5:8] = W + 10.0
    samples = pl.DataFrame(
        {
            "dataset": "egd-cxr",
            "case_id": "d1",
            "sample_idx": np.arange(n, dtype=np.int32),
            "t_s": np.arange(n) / 60.0,
            "x_px": x,
            "y_px": y,
        }
    )
    maps, _ = render_case(
        samples, _windows([("full", None, None)], "egd-cxr", "d1"), rec, image_height_px=H, image_width_px=W
    )
    out = maps["full"].array
    assert out.shape == (640, 512)
    assert maps["full"].n_fixations == n - 8
    # independent: MT-UNet samples the blurred count image at canvas pixels 5 * (r, c) of a 3200 x 2560
    # canvas centred on the image; evaluate the Gaussian sum there directly
    top, left = (3200 - H) // 2, (2560 - W) // 2
    ok = np.isfinite(x) & (x < W)
    ux, uy = x[ok], y[ok]
    rows = 5 * np.arange(640) - top
    cols = 5 * np.arange(512) - left
    s = 75.5
    gy = np.exp(-((rows[None, :] - uy[:, None]) ** 2) / (2 * s * s)) * ((rows >= 0) & (rows < H))[None, :]
    gx = np.exp(-((cols[None, :] - ux[:, None]) ** 2) / (2 * s * s)) * ((cols >= 0) & (cols < W))[None, :]
    ref = gy.T @ gx
    ref = ref / (ref.max() if variant == "max" else ref.sum())
    assert np.abs(out - ref).max() < 1e-6 * ref.max()
    if variant == "sum":
        assert out.sum() == pytest.approx(1.0, rel=1e-5)
    else:
        assert out.max() == pytest.approx(1.0)
