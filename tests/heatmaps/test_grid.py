"""Output grids: the affine maps checked against actual image resizes / pads of coordinate ramps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from gazeprep.heatmaps.grid import OutputGrid
from gazeprep.recipes import OutputSpec


def _resize_f(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Linear resize with the pixel-area convention of image resizers (``align_corners=False``):
    scipy's ``zoom(grid_mode=True)`` maps pixel edges onto pixel edges."""
    zoom = (out_h / a.shape[0], out_w / a.shape[1])
    return ndimage.zoom(a, zoom, order=1, grid_mode=True, mode="grid-constant")


def test_native_is_identity():
    g = OutputGrid.native(30, 20)
    x, y = g.to_grid([0.0, 19.25], [3.5, 29.0])
    assert np.array_equal(x, [0.0, 19.25]) and np.array_equal(y, [3.5, 29.0])
    assert g.shape == (30, 20) and g.is_native
    assert g.image_box == (-0.5, -0.5, 19.5, 29.5)
    start, stop = g.pixel_range(np.array([3, -4]), np.array([7, 400]), "x")
    assert start.tolist() == [3, 0] and stop.tolist() == [7, 20]


def test_letterbox_centre_geometry():
    H, W = 300, 200  # portrait: rows fill the grid, columns are padded equally
    g = OutputGrid.letterbox(H, W, 150)
    s = 150 / 300
    assert g.scale_x == g.scale_y == s
    x0, y0, x1, y1 = g.image_box
    assert (y0, y1) == pytest.approx((-0.5, 149.5))
    pad = (150 - W * s) / 2
    assert x0 == pytest.approx(pad - 0.5) and 150 - 0.5 - x1 == pytest.approx(pad)
    # round trip
    xs, ys = np.array([0.0, 123.4, 199.0]), np.array([5.0, 150.0, 299.0])
    bx, by = g.from_grid(*g.to_grid(xs, ys))
    assert np.allclose(bx, xs) and np.allclose(by, ys)


def test_letterbox_matches_a_real_resize_of_a_coordinate_ramp():
    # Resize an image whose pixel values are their own x (y) coordinates and pad it as the grid says:
    # the value at each grid pixel inside the image must equal from_grid of that pixel.
    H, W, N = 240, 180, 96
    g = OutputGrid.letterbox(H, W, N)
    s = N / H
    new_w = W * s  # 72 exactly: no rounding in this geometry
    assert new_w == int(new_w)
    xr = np.tile(np.arange(W, dtype=np.float64), (H, 1))
    yr = np.tile(np.arange(H, dtype=np.float64)[:, None], (1, W))
    rx, ry = _resize_f(xr, N, int(new_w)), _resize_f(yr, N, int(new_w))
    pad = (N - int(new_w)) // 2
    cols = np.arange(pad, pad + int(new_w))
    xo, _ = g.from_grid(cols.astype(float), 0.0)
    _, yo = g.from_grid(0.0, np.arange(N, dtype=float))
    # interior (away from the edge effects of the resize filter)
    sl = slice(3, -3)
    assert np.allclose(rx[N // 2, sl], xo[sl], atol=1e-6)
    assert np.allclose(ry[sl, int(new_w) // 2], yo[sl], atol=1e-6)


def test_ricbl_rule_reproduces_004_geometry():
    # 004: XRayResizerPadRound32(512) then Resize(512) on a 3000 x 2500 (H x W) image
    H, W, N = 3000, 2500, 512
    L = round(N / 2500 * 3000 / 16) * 16
    assert L == 608
    new_w = round(2500 * L / 3000)  # 507
    pad_left = math.floor((L - new_w) / 2)  # 50
    g = OutputGrid.letterbox(H, W, N, rule="ricbl")
    x0, y0, x1, y1 = g.image_box
    assert x0 == pytest.approx(pad_left * N / L - 0.5)
    assert x1 == pytest.approx((pad_left + new_w) * N / L - 0.5)
    assert (y0, y1) == pytest.approx((-0.5, N - 0.5))
    # the two centring rules differ by less than one output pixel
    c = OutputGrid.letterbox(H, W, N)
    assert abs(c.image_box[0] - x0) < 1.0 and abs(c.image_box[2] - x1) < 1.0


def test_ricbl_matches_resize_pad_resize_of_a_ramp():
    H, W, N = 400, 300, 64  # L = round(64/300*400/16)*16 = 80 ; new_w = round(300*80/400) = 60
    g = OutputGrid.letterbox(H, W, N, rule="ricbl")
    L, new_w = 80, 60
    xr = np.tile(np.arange(W, dtype=np.float64), (H, 1))
    step1 = _resize_f(xr, L, new_w)
    pad_l = (L - new_w) // 2
    canvas = np.zeros((L, L), dtype=np.float32)
    canvas[:, pad_l : pad_l + new_w] = step1
    # the second resize mixes the zero padding into the edge columns; keep to the interior
    marker = np.zeros((L, L), dtype=np.float32)
    marker[:, pad_l : pad_l + new_w] = 1
    out, wsum = _resize_f(canvas, N, N), _resize_f(marker, N, N)
    cols = np.flatnonzero(wsum[N // 2] > 0.999)[2:-2]
    xo, _ = g.from_grid(cols.astype(float), 0.0)
    assert np.allclose(out[N // 2, cols], xo, atol=1e-6)


def test_pad_crop_stride_is_a_sampling_of_the_padded_canvas():
    H, W, stride, out_h, out_w = 37, 23, 5, 8, 6  # canvas 40 x 30: pad 1 row top, 3 cols left
    g = OutputGrid.pad_crop_stride(H, W, out_h, out_w, stride)
    ramp = np.tile(np.arange(W, dtype=float), (H, 1))
    pt, pl_ = (out_h * stride - H) // 2, (out_w * stride - W) // 2
    canvas = np.full((out_h * stride, out_w * stride), np.nan)
    canvas[pt : pt + H, pl_ : pl_ + W] = ramp
    sampled = canvas[::stride, ::stride]
    xo, _ = g.from_grid(np.arange(out_w, dtype=float), 0.0)
    row = sampled[2]
    ok = np.isfinite(row)
    assert np.allclose(row[ok], xo[ok])
    # a crop (canvas smaller than the image) shifts the other way
    g2 = OutputGrid.pad_crop_stride(50, 50, 4, 4, 10)  # canvas 40: crop 5 px each side
    assert g2.to_grid(5.0, 5.0) == (pytest.approx(0.0), pytest.approx(0.0))
    # an odd crop: MT-UNet's int((40 - 51) / 2) = int(-5.5) = -5 (towards zero), so 5 px go at the top/left
    g3 = OutputGrid.pad_crop_stride(51, 51, 4, 4, 10)
    assert g3.to_grid(5.0, 5.0) == (pytest.approx(0.0), pytest.approx(0.0))


def test_from_spec():
    assert OutputGrid.from_spec(OutputSpec(size="native"), 30, 20).is_native
    assert OutputGrid.from_spec(OutputSpec(size=64), 30, 20).shape == (64, 64)
    g = OutputGrid.from_spec(OutputSpec(size=(40, 20), fit="stretch"), 30, 20)
    assert g.shape == (40, 20) and g.scale_y == pytest.approx(40 / 30) and g.scale_x == 1.0
    g = OutputGrid.from_spec(OutputSpec(size=(64, 48), fit="pad_crop_stride", stride=5), 300, 200)
    assert g.shape == (64, 48) and g.scale_x == 0.2
    with pytest.raises(ValueError):
        OutputGrid.letterbox(10, 10, 0)
