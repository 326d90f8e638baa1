"""Every recipe named after a paper equals that paper's code: egd-static against an independent port of
EGD-CXR's process_eye_gaze_table arithmetic (scipy.ndimage.gaussian_filter on a count image), the
egd-gaze-samples recipes against a numpy port of MT-UNet's get_gaze_dot / get_gaze_heatmap (cv2.GaussianBlur
with BORDER_REFLECT_101) and MasterDataHandle.process. Small images and sigmas keep the references fast;
every fixture has points on the border and odd sizes."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from scipy import ndimage

from gazeprep.heatmaps import render_case
from gazeprep.recipes import Recipe, load_recipe


def _with_render(recipe: Recipe, **changes) -> Recipe:
    d = recipe.resolved()
    d["render"].update(changes)
    return Recipe.model_validate(d)


def _with_output(recipe: Recipe, **changes) -> Recipe:
    d = recipe.resolved()
    d["output"].update(changes)
    return Recipe.model_validate(d)


def _whole(case_id="d1") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "dataset": ["egd-cxr"],
            "case_id": [case_id],
            "target": ["full"],
            "window_idx": [0],
            "t_start_s": [None],
            "t_end_s": [None],
        },
        schema={
            "dataset": pl.Utf8,
            "case_id": pl.Utf8,
            "target": pl.Utf8,
            "window_idx": pl.Int32,
            "t_start_s": pl.Float64,
            "t_end_s": pl.Float64,
        },
    )


def _fixations(x, y) -> pl.DataFrame:
    n = len(x)
    return pl.DataFrame(
        {
            "dataset": "egd-cxr",
            "case_id": "d1",
            "fixation_idx": np.arange(n, dtype=np.int32),
            "t_start_s": np.arange(n) * 0.3,
            "t_end_s": np.arange(n) * 0.3 + 0.2,
            "x_px": np.asarray(x, float),
            "y_px": np.asarray(y, float),
        }
    )


def _samples(x, y) -> pl.DataFrame:
    n = len(x)
    return pl.DataFrame(
        {
            "dataset": "egd-cxr",
            "case_id": "d1",
            "sample_idx": np.arange(n, dtype=np.int32),
            "t_s": np.arange(n) / 60.0,
            "x_px": np.asarray(x, float),
            "y_px": np.asarray(y, float),
        }
    )


# ------------------------------------------------------------------------------------------ EGD-CXR
def _egd_code(x, y, H, W, sigma):
    """EGD-CXR's arithmetic: the canvas padded to even, record[int(y), int(x)] += 1 for gaze strictly inside
    the (padded) image with int(y) > 0, scipy.ndimage.gaussian_filter (reflect, truncate 4), min-max over
    the padded canvas; cropped to the image for the comparison."""
    Hp, Wp = H + H % 2, W + W % 2
    record = np.zeros((Hp, Wp))
    for xi, yi in zip(x, y):
        if 0 < xi < Wp and 0 < yi < Hp and int(yi) > 0:
            record[int(yi), int(xi)] += 1
    heat = ndimage.gaussian_filter(record, sigma)
    heat = (heat - heat.min()) / (heat.max() - heat.min())
    return heat[:H, :W], record


@pytest.mark.parametrize("H,W,sigma", [(41, 33, 6.0), (40, 35, 4.5), (27, 52, 15.0), (30, 30, 3.0)])
def test_egd_static_equals_egd_cxr_code(H, W, sigma):
    rec = _with_render(load_recipe("egd-static"), sigma={"value": sigma, "unit": "px"})
    rng = np.random.default_rng(H + W)
    n = 60
    x = rng.uniform(0, W + W % 2, n)
    y = rng.uniform(0, H + H % 2, n)
    # border cases: the first row (dropped by `int(y) > 0`), the padded column/row of odd sizes (counted),
    # both image edges, and gaze off the image's screen area (never counted)
    x[:8] = [0.3, W - 0.2, W + 0.5, 5.0, 0.9, -3.0, W + 4.0, 7.0]
    y[:8] = [0.5, 1.2, 3.0, H + 0.5, H - 0.7, 4.0, 9.0, -2.0]
    maps, rej = render_case(_fixations(x, y), _whole(), rec, image_height_px=H, image_width_px=W)
    ref, record = _egd_code(x, y, H, W, sigma)
    out = maps["full"].array
    assert out.shape == (H, W) and rej == []
    assert np.abs(out - ref).max() < 1e-5
    assert maps["full"].n_fixations == int(record.sum())
    assert record[0].sum() == 0  # the fixture did exercise the first-row rule


def test_egd_static_reflects_where_the_contract_drops():
    H, W, sigma = 45, 38, 8.0
    x = np.array([0.5, 1.5, 20.0])
    y = np.array([22.0, 10.0, 44.5])
    code = _with_render(load_recipe("egd-static"), sigma={"value": sigma, "unit": "px"})
    contract = _with_render(load_recipe("egd-static-contract"), sigma={"value": sigma, "unit": "px"})
    a = render_case(_fixations(x, y), _whole(), code, image_height_px=H, image_width_px=W)[0]["full"].array
    b = render_case(_fixations(x, y), _whole(), contract, image_height_px=H, image_width_px=W)[0]["full"].array
    ref, _ = _egd_code(x, y, H, W, sigma)
    assert np.abs(a - ref).max() < 1e-5
    assert np.abs(b - ref).max() > 0.05  # the contract variant differs from the code at the border


# ------------------------------------------------------------------------------------------ MT-UNet
def _cv_kernel(ksize: int) -> tuple[np.ndarray, float]:
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for sigmaX = 0
    d = np.arange(ksize) - (ksize - 1) * 0.5
    k = np.exp(-d * d / (2 * sigma * sigma))
    return k / k.sum(), sigma


def _gaussian_blur_reflect101(img: np.ndarray, ksize: int) -> np.ndarray:
    """numpy port of cv2.GaussianBlur(img, (k, k), 0, 0): separable, BORDER_REFLECT_101 (numpy 'reflect'),
    repeated reflections for kernels wider than the image; a one-pixel axis reads its pixel for every tap."""
    k, _ = _cv_kernel(ksize)
    r = (ksize - 1) // 2
    out = img.astype(np.float64)
    for axis in (0, 1):
        mode = "edge" if out.shape[axis] == 1 else "reflect"
        out = np.apply_along_axis(lambda v, m=mode: np.convolve(np.pad(v, r, mode=m), k, mode="valid"), axis, out)
    return out


def _mtunet_code(X, Y, H, W, ksize, out_h, out_w, stride, wrap=True):
    """MT-UNet: int positions, 0 <= X < W and 0 <= Y < H counted (coo_matrix), int8 cast, cv2 blur, / max,
    centre pad/crop with int((canvas - size) / 2) before, [0::stride, 0::stride], min-max."""
    X, Y = np.asarray(X, np.int64), np.asarray(Y, np.int64)
    ok = (X >= 0) & (X < W) & (Y >= 0) & (Y < H)
    counts = np.zeros((H, W))
    np.add.at(counts, (Y[ok], X[ok]), 1.0)
    if wrap:
        counts = counts.astype(np.int8).astype(np.float64)
    blur = _gaussian_blur_reflect101(counts, ksize)
    blur = blur / blur.max()
    Hc, Wc = out_h * stride, out_w * stride
    top, left = int((Hc - H) / 2), int((Wc - W) / 2)
    canvas = np.zeros((Hc, Wc))
    src = blur[max(0, -top) :, max(0, -left) :][: Hc - max(0, top), : Wc - max(0, left)]
    canvas[max(0, top) : max(0, top) + src.shape[0], max(0, left) : max(0, left) + src.shape[1]] = src
    g = canvas[::stride, ::stride]
    return (g - g.min()) / (g.max() - g.min())


def _release_positions(xs, ys, H, W, pads):
    """What EGD-CXR's release writes as X_ORIGINAL / Y_ORIGINAL for gazeprep's positions (the mapping
    before int(), on the width/height padded to even): int(), or int(-W'/w) off the screen area."""
    top, bottom, left, right = pads
    Hp, Wp = H + H % 2, W + W % 2
    on = (xs > 0) & (xs < Wp) & (ys > 0) & (ys < Hp)
    X = np.where(on, np.trunc(xs), int(Wp / (1920 - left - right) * -1))
    Y = np.where(on, np.trunc(ys), int(Hp / (1080 - top - bottom) * -1))
    return X, Y


@pytest.mark.parametrize("variant", ["max", "sum"])
@pytest.mark.parametrize(
    "H,W,ksize,grid",
    [
        (37, 29, 31, (10, 8, 5)),  # odd sizes, canvas 50 x 40: padding on every side
        (44, 61, 21, (10, 12, 5)),  # an odd crop (61 -> 60) on x, padding on y
        (23, 18, 61, (5, 4, 5)),  # a kernel far wider than the image: repeated reflections
    ],
)
def test_egd_gaze_samples_equal_mtunet_code(variant, H, W, ksize, grid):
    out_h, out_w, stride = grid
    rec = load_recipe(f"egd-gaze-samples-{variant}")
    rec = _with_render(rec, kernel_size=ksize, sigma={"value": _cv_kernel(ksize)[1], "unit": "px"})
    rec = _with_output(rec, size=[out_h, out_w], stride=stride)
    rng = np.random.default_rng(ksize + H)
    n = 300
    px, py = rng.uniform(0, W, 12), rng.uniform(0, H, 12)
    px[:3], py[3:6] = [0.2, W - 0.5, 0.7], [0.1, H - 0.3, 0.4]  # dwell on the border pixels
    pick = rng.integers(0, 12, n)
    xs, ys = px[pick] + rng.uniform(-0.05, 0.05, n).clip(0), py[pick]
    xs[:10] = rng.uniform(-30, -1, 10)  # off the screen area: the release writes int(-W'/w) = 0 here
    xs[10:12] = W + 0.4  # W odd: the padded column, on the screen area but outside the DICOM
    xs[12:14] = np.nan  # blinks
    pads = (0, 0, 534, 534)
    case = {"pad_top_px": pads[0], "pad_bottom_px": pads[1], "pad_left_px": pads[2], "pad_right_px": pads[3]}
    maps, rej = render_case(_samples(xs, ys), _whole(), rec, image_height_px=H, image_width_px=W, case=case)
    fin = np.isfinite(xs)
    X, Y = _release_positions(xs[fin], ys[fin], H, W, pads)
    assert (X[:10] == 0).all() and (Y[:10] == 0).all()  # small image: off-area gaze goes to pixel (0, 0)
    ref = _mtunet_code(X, Y, H, W, ksize, out_h, out_w, stride)
    if variant == "sum":
        ref = ref / ref.sum()
    out = maps["full"].array
    assert out.shape == (out_h, out_w) and rej == []
    assert np.abs(out - ref).max() < 1e-5 * ref.max()


def test_mtunet_off_area_gaze_is_dropped_on_a_large_image_and_without_a_layout():
    H, W = 1201, 1000  # larger than its screen area (852 x 1080): int(-W'/w) < 0, dropped by the code
    rec = _with_output(load_recipe("egd-gaze-samples-max"), size=[300, 250], stride=4)
    xs = np.array([500.0, 10.0, -40.0, 600.0])
    ys = np.array([600.0, 30.0, 100.0, -5.0])
    case = {"pad_top_px": 0, "pad_bottom_px": 0, "pad_left_px": 534, "pad_right_px": 534}
    maps, rej = render_case(_samples(xs, ys), _whole(), rec, image_height_px=H, image_width_px=W, case=case)
    assert maps["full"].n_fixations == 2 and rej == []
    # unknown layout: off-area samples dropped and said so
    maps, rej = render_case(_samples(xs, ys), _whole(), rec, image_height_px=H, image_width_px=W)
    assert maps["full"].n_fixations == 2
    assert len(rej) == 1 and "screen layout is unknown" in rej[0]["reason"]


def test_mtunet_int8_wrap_is_an_explicit_option():
    H, W, ksize = 30, 26, 21
    base = load_recipe("egd-gaze-samples-max")
    base = _with_render(base, kernel_size=ksize, sigma={"value": _cv_kernel(ksize)[1], "unit": "px"})
    base = _with_output(base, size=[8, 6], stride=5)
    xs = np.r_[np.full(130, 5.5), np.full(3, 20.2)]  # 130 samples on one pixel: int8 gives -126
    ys = np.r_[np.full(130, 7.5), np.full(3, 22.9)]
    case = {"pad_top_px": 0, "pad_bottom_px": 0, "pad_left_px": 534, "pad_right_px": 534}
    with pytest.warns(RuntimeWarning, match="128 or more samples"):
        exact, rej = render_case(_samples(xs, ys), _whole(), base, image_height_px=H, image_width_px=W, case=case)
    assert any("would wrap them negative" in r["reason"] for r in rej)
    ref_exact = _mtunet_code(np.trunc(xs), np.trunc(ys), H, W, ksize, 8, 6, 5, wrap=False)
    assert np.abs(exact["full"].array - ref_exact).max() < 1e-5
    wrap = _with_render(base, int8_count_wrap=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        wrapped, rej = render_case(_samples(xs, ys), _whole(), wrap, image_height_px=H, image_width_px=W, case=case)
    ref_wrap = _mtunet_code(np.trunc(xs), np.trunc(ys), H, W, ksize, 8, 6, 5, wrap=True)
    assert np.abs(wrapped["full"].array - ref_wrap).max() < 1e-5
    assert np.abs(wrapped["full"].array - exact["full"].array).max() > 0.1  # the wrap changes the map
    # below 128 nothing is said
    few = _samples(xs[100:], ys[100:])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _, rej = render_case(few, _whole(), base, image_height_px=H, image_width_px=W, case=case)
    assert rej == []


def test_paper_recipes_name_the_code_they_reproduce():
    from gazeprep.paths import default_pipelines_dir

    for name, needles in {
        "egd-static": ("process_eye_gaze_table", "82f2427541a54e3d5e20cc7850ed75c84d80988f", "l.258-263", "l.228"),
        "egd-gaze-samples-max": ("get_gaze_heatmap", "034b02645d28cda0332334766eac0f7fad6f7ea8", "l.219"),
        "egd-gaze-samples-sum": ("get_gaze_heatmap", "034b02645d28cda0332334766eac0f7fad6f7ea8", "l.219"),
    }.items():
        text = (default_pipelines_dir() / f"{name}.yaml").read_text()
        header = text[: text.index("schema_version:")]
        assert all(n in header for n in needles), name
        assert "Remaining deliberate differences" in header and "contract" in header
        r = load_recipe(name)
        assert r.render.border != "drop" and r.render.kernel == "discrete"
    for name in ("egd-static-contract", "egd-gaze-samples-max-contract", "egd-gaze-samples-sum-contract"):
        r = load_recipe(name)
        assert (r.render.border, r.render.kernel) == ("drop", "density")
