"""Border rules of the renderer (drop / reflect / reflect101) and the libraries' discrete kernels,
against closed forms and brute-force padded convolutions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gazeprep.heatmaps import OutputGrid
from gazeprep.heatmaps.render import KernelRule, mirror_copies, render_points


def _kernel(sigma: float, radius: int) -> np.ndarray:
    """The sampled Gaussian normalised over its 2 * radius + 1 taps (scipy's and OpenCV's kernel)."""
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-d * d / (2.0 * sigma * sigma))
    return k / k.sum()


def _padded_blur_1d(signal: np.ndarray, k: np.ndarray, numpy_mode: str) -> np.ndarray:
    """Brute force: extend the signal by the kernel radius (numpy pads repeatedly when the radius is
    longer than the signal) and convolve. numpy 'symmetric' = scipy 'reflect', numpy 'reflect' = OpenCV
    BORDER_REFLECT_101."""
    r = (k.shape[0] - 1) // 2
    ext = np.pad(signal, r, mode=numpy_mode)
    return np.convolve(ext, k, mode="valid")


def _blur_2d(img: np.ndarray, k: np.ndarray, numpy_mode: str) -> np.ndarray:
    out = img
    for axis in (0, 1):
        # OpenCV reads the only pixel of a one-pixel axis for every tap (numpy 'reflect' needs 2 pixels)
        mode = "edge" if (img.shape[axis] == 1 and numpy_mode == "reflect") else numpy_mode
        out = np.apply_along_axis(_padded_blur_1d, axis, out, k, mode)
    return out


def test_mirror_copies_closed_forms():
    # reflect (about -0.5 and N - 0.5, period 2N): p = 0, N = 5, radius 3 -> itself and -1
    own, pos = mirror_copies(np.array([0.0]), np.array([3.0]), 5, "reflect")
    assert sorted(pos.tolist()) == [-1.0, 0.0] and own.tolist() == [0, 0]
    # reflect101 (about 0 and N - 1, period 2(N - 1)): the edge pixel is its own mirror image (once)
    _, pos = mirror_copies(np.array([0.0]), np.array([3.0]), 5, "reflect101")
    assert pos.tolist() == [0.0]
    _, pos = mirror_copies(np.array([1.0]), np.array([3.0]), 5, "reflect101")
    assert sorted(pos.tolist()) == [-1.0, 1.0, 7.0]  # 7 = 2 (N - 1) - 1 is within radius of pixel 4
    # a kernel much wider than the image needs many reflections: all images within reach, each once
    _, pos = mirror_copies(np.array([1.0]), np.array([20.0]), 3, "reflect")
    expect = sorted({1.0 + 6 * t for t in range(-5, 6)} | {-2.0 + 6 * t for t in range(-5, 6)})
    expect = [m for m in expect if -20.5 <= m <= 22.5]
    assert sorted(pos.tolist()) == expect
    # drop: the point only
    own, pos = mirror_copies(np.array([2.0, 3.5]), np.array([9.0, 9.0]), 5, "drop")
    assert own.tolist() == [0, 1] and pos.tolist() == [2.0, 3.5]


def test_reflect_at_the_edge_folds_the_discrete_kernel():
    # one fixation on pixel (0, 0): along each axis the profile is k(j) + k(j + 1) (its mirror image sits
    # at -1), the 1-D discrete kernel folded about the pixel edge; the 2-D map is their outer product
    sigma, H, W = 3.0, 20, 16
    rule = KernelRule("discrete", "reflect", truncate_sigmas=4.0)
    out = render_points(OutputGrid.native(H, W), [0.0], [0.0], sigma, sigma, [1.0], rule=rule)
    R = int(4 * sigma + 0.5)
    k = _kernel(sigma, R)

    def folded(n):
        f = np.zeros(n)
        for j in range(n):
            for m in (0, -1):
                if abs(j - m) <= R:
                    f[j] += k[j - m + R]
        return f

    expect = np.outer(folded(H), folded(W))
    assert np.abs(out - expect).max() < 1e-6 * expect.max()
    assert out.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-6)  # reflect keeps all the mass


def test_reflect101_at_the_edge_and_one_pixel_in():
    sigma, n = 2.0, 15
    R = 7
    k = _kernel(sigma, R)
    rule = KernelRule("discrete", "reflect101", kernel_size=2 * R + 1)
    grid = OutputGrid.native(1 + 0 * n, n)  # one row: the y axis folds everything onto its only pixel
    edge = render_points(grid, [0.0], [0.0], sigma, sigma, [1.0], rule=rule)[0]
    # on pixel 0 (its own mirror) OpenCV's taps that fall outside read pixels 1..R: the point mass at 0
    # is seen by output j only through the tap d = j, so the profile is k(j) for j <= R, once
    expect = np.array([k[R + j] if j <= R else 0.0 for j in range(n)])
    assert np.abs(edge - expect).max() < 1e-6
    one_in = render_points(grid, [1.0], [0.0], sigma, sigma, [1.0], rule=rule)[0]
    expect1 = np.array([sum(k[R + j - m] for m in (1, -1) if abs(j - m) <= R) for j in range(n)])
    assert np.abs(one_in - expect1).max() < 1e-6


@pytest.mark.parametrize("border,numpy_mode", [("reflect", "symmetric"), ("reflect101", "reflect")])
@pytest.mark.parametrize("H,W,sigma", [(21, 17, 2.5), (9, 6, 4.0), (1, 12, 2.0), (40, 33, 10.0)])
def test_fold_equals_padded_convolution(border, numpy_mode, H, W, sigma):
    # includes kernels far wider than the image (many reflections) and a one-pixel axis
    rng = np.random.default_rng(H * W)
    n = 12
    x = rng.integers(0, W, n).astype(float)
    y = rng.integers(0, H, n).astype(float)
    x[:3], y[3:5] = [0.0, W - 1.0, 0.0], [0.0, H - 1.0]
    w = rng.uniform(0.5, 2.0, n)
    counts = np.zeros((H, W))
    np.add.at(counts, (y.astype(int), x.astype(int)), w)
    R = int(4.0 * sigma + 0.5)
    rule = (
        KernelRule("discrete", border, truncate_sigmas=4.0)
        if border == "reflect"
        else KernelRule("discrete", border, kernel_size=2 * R + 1)
    )
    out = render_points(OutputGrid.native(H, W), x, y, sigma, sigma, w, rule=rule)
    ref = _blur_2d(counts, _kernel(sigma, R), numpy_mode)
    assert np.abs(out - ref).max() < 1e-6 * ref.max()
    if border == "reflect":
        assert out.sum(dtype=np.float64) == pytest.approx(w.sum(), rel=1e-6)


def test_reflect_is_symmetric_and_drop_loses_the_outside_mass():
    H, W, sigma = 31, 31, 6.0
    grid = OutputGrid.native(H, W)
    rule = KernelRule("discrete", "reflect", truncate_sigmas=4.0)
    out = render_points(grid, [15.0], [15.0], sigma, sigma, [1.0], rule=rule)
    assert np.abs(out - out[:, ::-1]).max() < 1e-9 and np.abs(out - out.T).max() < 1e-9
    # a point on the left edge: drop keeps exactly the discrete kernel's inside half, reflect all of it
    R = int(4 * sigma + 0.5)
    k = _kernel(sigma, R)
    drop = render_points(grid, [0.0], [15.0], sigma, sigma, [1.0], rule=KernelRule("discrete", "drop", 4.0))
    refl = render_points(grid, [0.0], [15.0], sigma, sigma, [1.0], rule=rule)
    y_inside = k[R - 15 : R + 16].sum()  # rows 0..30 around row 15: the y axis drops its tails too
    assert drop.sum(dtype=np.float64) == pytest.approx(k[R:].sum() * y_inside, rel=1e-6)
    assert refl.sum(dtype=np.float64) == pytest.approx(1.0, rel=1e-6)  # reflect folds both axes
    assert np.all(refl >= drop - 1e-9)


def test_density_reflect_folds_the_continuous_density():
    # kernel: density with reflection: each image adds the normalised density, evaluated at pixels
    sigma, W = 1.7, 12
    x0 = 0.6
    out = render_points(
        OutputGrid.native(1, W),
        [x0],
        [0.0],
        sigma,
        1e-3,
        [1.0],
        rule=KernelRule("density", "reflect", truncate_sigmas=8.0),
    )[0]
    j = np.arange(W, dtype=float)
    dens = lambda m: np.exp(-((j - m) ** 2) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)  # noqa: E731
    # y axis: a 1-pixel image folds a (tiny-sigma) density onto its only pixel -> factor = its sum, ~1
    fy = out.sum() / (dens(x0) + dens(-1 - x0) + dens(2 * W - 1 - x0)).sum()
    expect = (dens(x0) + dens(-1 - x0)) * fy
    assert np.abs(out - expect).max() < 1e-6 * expect.max()


def test_opencv_sigma_from_kernel_size():
    # OpenCV's rule for sigma <= 0: sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8 (MT-UNet's 75.5 px)
    assert 0.3 * ((501 - 1) * 0.5 - 1) + 0.8 == pytest.approx(75.5, abs=1e-12)
    rule = KernelRule("discrete", "reflect101", kernel_size=501)
    assert rule.radius_px(np.array([75.5]), 1).tolist() == [250.0]
    assert KernelRule("discrete", "reflect", 4.0).radius_px(np.array([150.0]), 1).tolist() == [600.0]


def test_contract_rule_is_the_old_path_bit_for_bit():
    rng = np.random.default_rng(3)
    grid = OutputGrid.letterbox(300, 200, 64)
    x, y = rng.uniform(0, 200, 20), rng.uniform(0, 300, 20)
    s = rng.uniform(5, 15, 20)
    a = render_points(grid, x, y, s, s, np.ones(20))
    b = render_points(grid, x, y, s, s, np.ones(20), rule=KernelRule())
    assert a.tobytes() == b.tobytes()


def test_reflect_modes_agree_with_the_libraries_when_installed():
    cv2 = pytest.importorskip("cv2")
    from scipy import ndimage

    H, W, sigma = 23, 18, 5.0
    rng = np.random.default_rng(9)
    x, y = rng.integers(0, W, 10).astype(float), rng.integers(0, H, 10).astype(float)
    counts = np.zeros((H, W))
    np.add.at(counts, (y.astype(int), x.astype(int)), 1.0)
    grid = OutputGrid.native(H, W)
    sc = ndimage.gaussian_filter(counts, sigma)  # mode reflect, truncate 4
    ours = render_points(grid, x, y, sigma, sigma, np.ones(10), rule=KernelRule("discrete", "reflect", 4.0))
    assert np.abs(ours - sc).max() < 1e-6 * sc.max()
    ks = 41
    cvs = 0.3 * ((ks - 1) * 0.5 - 1) + 0.8
    cvb = cv2.GaussianBlur(counts.astype(np.float32), (ks, ks), 0, 0)
    ours = render_points(grid, x, y, cvs, cvs, np.ones(10), rule=KernelRule("discrete", "reflect101", kernel_size=ks))
    assert np.abs(ours - cvb).max() < 1e-5 * cvb.max()
