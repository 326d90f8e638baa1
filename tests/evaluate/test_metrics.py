"""Known-answer tests for gazeprep.evaluate.metrics: every expected value is computed by hand in
the comments next to it (tiny maps), plus properties and cross-checks against independent code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import get_metric, list_metrics
from gazeprep.evaluate import metrics as M


# ------------------------------------------------------------------------------------------ resize
def test_resize_nearest_integer_upscale_repeats_pixels():
    a = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(M.resize_nearest(a, (4, 4)), np.kron(a, np.ones((2, 2), int)))


def test_resize_nearest_downscale_samples_pixel_centres():
    a = np.arange(16).reshape(4, 4)
    # output pixel i samples floor((i + .5) * 4 / 2) = 1, 3
    np.testing.assert_array_equal(M.resize_nearest(a, (2, 2)), a[[1, 3]][:, [1, 3]])


def test_resize_bilinear_constant_and_midpoint():
    a = np.array([[0.0, 1.0]])
    out = M.resize_bilinear(a, (1, 4))
    # centres at 0.125,0.375,.625,.875 of the width -> source x = -.25,.25,.75,1.25 clipped to [0,1]
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])


# ------------------------------------------------------------------------------------------ IoU 004
PRED = np.array([[0.9, 0.2], [0.1, 0.6]])
GT = np.array([[1, 1], [0, 0]])


@pytest.mark.parametrize(
    "thr, expected",
    [
        (0.5, 1 / 3),  # bin [[1,0],[0,1]]: inter 1 (top-left), union 3
        (0.15, 2 / 3),  # bin [[1,1],[0,1]]: inter 2, union 3
        (0.95, 0.0),  # empty prediction: inter 0, union 2
    ],
)
def test_iou_at_threshold_hand(thr, expected):
    assert M.iou_at_threshold(PRED, GT, threshold=thr) == pytest.approx(expected)


def test_iou_empty_union_is_zero_like_ricbl():
    assert M.iou_at_threshold(np.zeros((2, 2)), np.zeros((2, 2)), threshold=0.5) == 0.0


def test_iou_pred_upscaled_nearest_to_mask():
    # 2x2 prediction vs a 4x4 mask: each pred pixel covers a 2x2 block -> same IoU as at 2x2
    big_gt = np.kron(GT, np.ones((2, 2), int))
    assert M.iou_at_threshold(PRED, big_gt, threshold=0.5) == pytest.approx(1 / 3)


def test_iou_curve_matches_direct_formula():
    rng = np.random.default_rng(3)
    p = rng.random((13, 17))
    g = rng.random((13, 17)) > 0.7
    curve = M.iou_curve(p, g)
    for t, v in zip(M.THRESHOLDS_004, curve):
        b = p > t
        inter = np.sum(b & g)
        union = np.sum(b | g)
        assert v == pytest.approx(inter / union if union else 0.0)


def test_thresholds_004_list():
    t = M.THRESHOLDS_004
    assert len(t) == 26 and t[0] == 0 and t[-1] == 0.999 and 0.15 in t and list(t) == sorted(t)


def test_best_thresholds_hand():
    tab = np.array([[0.2, 0.5, 0.1], [0.4, 0.5, 0.3]])  # column means .3 .5 .2
    assert M.best_thresholds(tab, (0.1, 0.2, 0.3)) == (0.2, pytest.approx(0.5))


# ------------------------------------------------------------------------------------------ ellipses
def test_ellipse_mask_hand():
    # bbox (0,0)-(4,4): centre (2,2), semi-axes 2: (r-2)^2+(c-2)^2 < 4 -> rows 1..3 x cols 1..3
    m = M.ellipse_mask(5, 5, [(0, 0, 4, 4, 5)])
    exp = np.zeros((5, 5), bool)
    exp[1:4, 1:4] = True
    np.testing.assert_array_equal(m, exp)


def test_ellipse_mask_drops_low_certainty_and_degenerate():
    assert not M.ellipse_mask(5, 5, [(0, 0, 4, 4, 2)]).any()  # certainty 2 = "less likely": dropped
    assert M.ellipse_mask(5, 5, [(0, 0, 4, 4, 3)]).sum() == 9  # 3 = "possibly": kept
    assert not M.ellipse_mask(5, 5, [(2, 0, 2, 4)]).any()
    assert not M.ellipse_mask(5, 5, np.zeros((0, 5))).any()


def test_ellipse_mask_matches_skimage_draw():
    draw = pytest.importorskip("skimage.draw")
    rng = np.random.default_rng(0)
    for _ in range(20):
        x0, y0 = rng.uniform(-10, 40, 2)
        x1, y1 = x0 + rng.uniform(1, 30), y0 + rng.uniform(1, 30)
        ours = M.ellipse_mask(37, 41, [(x0, y0, x1, y1)])
        ref = np.zeros((37, 41), bool)
        rr, cc = draw.ellipse((y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2, shape=(37, 41))
        ref[rr, cc] = True
        np.testing.assert_array_equal(ours, ref)


def test_box_mask_inclusive():
    m = M.box_mask(4, 4, [(1, 0, 2, 1)])
    assert m.sum() == 4 and m[0, 1] and m[1, 2] and not m[2, 1]


# ------------------------------------------------------------------------------------------ 000
def _cm_case():
    gt = np.zeros((3, 3), int)
    gt[0, :2] = 1  # fg 2 px, bg 7 px
    pred = np.zeros((3, 3), int)
    pred[:2, 0] = 1  # tp 1 (0,0), fp 1 (1,0), fn 1 (0,1), tn 6
    return pred, gt


def test_confusion_and_ious_hand():
    pred, gt = _cm_case()
    np.testing.assert_array_equal(M.confusion_2class(pred, gt), [[6, 1], [1, 1]])
    r = M.ious_from_confusion(M.confusion_2class(pred, gt))
    assert r["fgiou"] == pytest.approx(1 / 3)  # 1 / (1+1+1)
    assert r["bgiou"] == pytest.approx(0.75)  # 6 / (6+1+1)
    assert r["fwiou"] == pytest.approx(2 / 9 / 3 + 7 / 9 * 0.75)  # gt frequencies 2/9, 7/9
    assert r["miou"] == pytest.approx((1 / 3 + 0.75) / 2)
    assert get_metric("fgiou")(pred, gt) == pytest.approx(1 / 3)


def test_dataset_level_iou_sums_confusions():
    pred, gt = _cm_case()
    # second image: all background, predicted all background -> only tn 9
    cm = M.confusion_2class(pred, gt) + M.confusion_2class(np.zeros((3, 3)), np.zeros((3, 3)))
    r = M.ious_from_confusion(cm)
    assert r["fgiou"] == pytest.approx(1 / 3)
    assert r["bgiou"] == pytest.approx(15 / 17)  # tn 15 / (15 + 1 + 1)
    # the per-image mean differs: image 2 has fg IoU undefined (nan) and bg IoU 1
    assert get_metric("bgiou")(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert math.isnan(get_metric("fgiou")(np.zeros((3, 3)), np.zeros((3, 3))))


def test_binarize_iai_unique_quantile():
    g = np.array([[0, 0, 0, 0.1], [0.2, 0.3, 0.4, 0.5]])
    # unique = [0,.1,.2,.3,.4,.5] (6 levels) -> index 6//5 = 1 -> threshold .1 (strict >)
    np.testing.assert_array_equal(M.binarize_iai(g), g > 0.1)


def test_ssim_constant_maps_closed_form_and_identity():
    # constant x=.5, y=.25: var = cov = 0 -> SSIM = (2xy + C1) / (x^2 + y^2 + C1), C1 = (.01)^2
    x, y = np.full((12, 12), 0.5), np.full((12, 12), 0.25)
    c1 = 1e-4
    assert M.ssim(x, y, normalize="none") == pytest.approx((2 * 0.125 + c1) / (0.3125 + c1), rel=1e-6)
    rng = np.random.default_rng(1)
    a = rng.random((16, 16))
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.ssim(a * 3, a) == pytest.approx(1.0)  # max-normalised first
    with pytest.raises(GazeprepError):
        M.ssim(np.ones((3, 3)), np.ones((3, 3)))


def test_psnr_l1_l2_hand():
    pred = np.array([[1.0, 0.5], [0.0, 0.0]])
    gt = np.array([[1.0, 0.0], [0.0, 0.0]])
    # one pixel differs by .5: L1 = .5/4, L2 = .25/4, PSNR = 10 log10(1/.0625) = 12.0412
    assert M.l1(pred, gt) == pytest.approx(0.125)
    assert M.l2(pred, gt) == pytest.approx(0.0625)
    assert M.psnr(pred, gt) == pytest.approx(10 * math.log10(16))
    assert M.psnr(pred * 4, gt * 2) == pytest.approx(10 * math.log10(16))  # max-normalised
    assert M.psnr(gt, gt) == math.inf
    assert M.l1(pred * 4, gt, normalize="none") == pytest.approx((3 + 2) / 4)


# ------------------------------------------------------------------------------------------ 001 / MIT
def test_kld_hand_both_conventions():
    gt = np.array([[0.5, 0.5], [0, 0]])
    pred = np.full((2, 2), 0.25)
    # sum g (log g - log p) = 2 * .5 * (log .5 - log .25) = log 2
    assert M.kld(pred, gt) == pytest.approx(math.log(2))
    assert M.kld(pred, gt, convention="mtunet") == pytest.approx(math.log(2))
    assert get_metric("kld_mtunet")(pred * 7, gt * 3) == pytest.approx(math.log(2))  # sum-normalised
    assert M.kld(gt, gt) == pytest.approx(0.0, abs=1e-12)
    # reference mass where pred is 0: MIT's eps keeps it finite, = sum .25 log(eps + .25/eps) + ...
    rev = M.kld(gt, pred)
    eps = M.EPS_MATLAB
    assert rev == pytest.approx(2 * 0.25 * math.log(eps + 0.25 / (0.5 + eps)) + 2 * 0.25 * math.log(eps + 0.25 / eps))
    assert math.isnan(M.kld(pred, np.zeros((2, 2))))


def test_cc_hand():
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert M.cc(p, 2 * p) == pytest.approx(1.0)
    assert M.cc(p, 5 - p) == pytest.approx(-1.0)
    # deviations p: -1.5 -.5 .5 1.5; g=[0,0,1,1]: -.5 -.5 .5 .5 -> 2 / (sqrt 5 * 1)
    assert M.cc(p, np.array([[0, 0], [1, 1]])) == pytest.approx(2 / math.sqrt(5))
    assert M.cc(np.ones((2, 2)), p) == 0.0
    assert math.isnan(M.cc(p, np.ones((2, 2))))


def test_hs_and_sim_hand_and_differ():
    assert M.histogram_similarity(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [1, 0]])) == pytest.approx(0.5)
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = 5 - p
    # HS: [.1 .2 .3 .4] vs [.4 .3 .2 .1] -> .1+.2+.2+.1 = .6
    assert M.histogram_similarity(p, g) == pytest.approx(0.6)
    # SIM (MIT): min-max -> [0 1/3 2/3 1] / 2 = [0 1/6 1/3 1/2] and reverse -> 0 + 1/6 + 1/6 + 0 = 1/3
    assert M.sim(p, g) == pytest.approx(1 / 3)
    assert M.sim(p, p) == pytest.approx(1.0)


def test_nss_hand():
    p = np.array([[0.0, 1.0], [2.0, 3.0]])
    fix = np.array([[0, 0], [0, 1]])
    # mean 1.5, std(N-1) = sqrt(5/3); z(3) = 1.5 / sqrt(5/3)
    assert M.nss(p, fix) == pytest.approx(1.5 / math.sqrt(5 / 3))
    assert M.nss(p, fix, ddof=0) == pytest.approx(1.5 / math.sqrt(5 / 4))
    counts = np.array([[0, 0], [1, 2]])
    z2, z3 = 0.5 / math.sqrt(5 / 3), 1.5 / math.sqrt(5 / 3)
    assert M.nss(p, counts) == pytest.approx((z2 + z3) / 2)  # MIT: fixated pixels once
    assert M.nss(p, counts, count_duplicates=True) == pytest.approx((z2 + 2 * z3) / 3)
    assert math.isnan(M.nss(p, np.zeros((2, 2))))


def test_auc_judd_hand():
    p = np.array([[0.1, 0.4], [0.35, 0.8]])
    fix = np.array([[0, 0], [1, 1]])
    # thresholds .8 then .35 (after min-max: 1, .357): above = 1 then 3 pixels
    # tp = [0, .5, 1, 1], fp = [0, (1-1)/2, (3-2)/2, 1] = [0, 0, .5, 1] -> area .375 + .5 = .875
    assert M.auc_judd(p, fix, jitter=False) == pytest.approx(0.875)
    assert M.auc_judd(p, fix) == pytest.approx(0.875, abs=1e-5)  # jitter only breaks ties
    assert math.isnan(M.auc_judd(p, np.zeros((2, 2))))
    # the plain ROC AUC of the same data is .75 (3 of 4 pairs ordered): Judd's differs by design
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_diffgradcam_hand():
    cam = np.array([[1.0, 0.5], [0.0, 0.0]])
    mask = np.array([[1, 0], [0, 0]])
    assert M.diff_gradcam(cam, mask) == pytest.approx(1 - 0.5 / 3)  # inside 1, outside 1/6
    assert M.diff_gradcam(cam * 10 + 5, mask) == pytest.approx(5 / 6)  # min-max first
    assert math.isnan(M.diff_gradcam(cam, np.zeros((2, 2))))


def test_ehr_auc_hand():
    cam = np.array([[1.0, 0.5], [0.0, 0.0]])
    mask = np.array([[1, 0], [0, 0]])
    # n=2: t=0 -> {1,.5}: EHR .5; t=.5 -> {1}: EHR 1; trapezoid over [0,.5] = .375
    assert M.ehr_auc(cam, mask, n_thresholds=2) == pytest.approx(0.375)
    # n=4: EHR at 0,.25,.5,.75 = .5,.5,1,1 -> .125 + .1875 + .25 = .5625
    assert M.ehr_auc(cam, mask, n_thresholds=4) == pytest.approx(0.5625)
    assert M.ehr_auc(1 - cam, mask, n_thresholds=4) == 0.0


def test_interpretability_hand():
    cam = np.array([[0.0, 1.0], [0.0, 0.0]])
    organ = np.zeros((4, 4))
    organ[:2, 2:] = 1  # top-right block -> at CAM size the top-right pixel
    assert M.interpretable(cam, organ) == 1.0
    assert M.interpretable(cam, organ[:, ::-1]) == 0.0
    tie = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert M.interpretable(tie, organ) == 0.0  # first argmax = top-left
    assert M.interpretable(tie, organ, ties="any") == 1.0


# ------------------------------------------------------------------------------------------ AUC + CI
def test_bootstrap_auc_seeded_and_brackets():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(0, 1, 200)
    a = M.bootstrap_auc(y, s, n_boot=200, seed=1)
    assert a == M.bootstrap_auc(y, s, n_boot=200, seed=1)
    assert a[1] <= a[0] <= a[2]
    assert a[0] == pytest.approx(M.roc_auc(y, s))
    assert math.isnan(M.bootstrap_auc([1, 1, 1], [0.1, 0.2, 0.3], n_boot=10)[0])
    # the rank formula used inside the bootstrap equals sklearn's, ties included
    yt = rng.integers(0, 2, 60)
    st = np.round(rng.random(60), 1)  # many ties
    assert M._auc_ranks(yt, st) == pytest.approx(M.roc_auc(yt, st))


def test_bootstrap_mean_width_matches_normal_theory():
    # mean of 400 N(0,1) values: 95% CI half-width ~ 1.96 / sqrt(400) = .098
    v = np.random.default_rng(5).normal(0, 1, 400)
    est, lo, hi = M.bootstrap_mean(v, n_boot=2000, seed=0)
    assert est == pytest.approx(v.mean())
    assert (hi - lo) / 2 == pytest.approx(1.96 * v.std() / 20, rel=0.15)
    assert M.bootstrap_mean(np.full(10, 0.3), n_boot=50)[1:] == (pytest.approx(0.3), pytest.approx(0.3))


# ------------------------------------------------------------------------------------------ registry
def test_registry_names_kinds_and_errors():
    names = list_metrics()
    for n in (
        "iou",
        "fgiou",
        "bgiou",
        "fwiou",
        "ssim",
        "psnr",
        "l1",
        "l2",
        "kld",
        "cc",
        "hs",
        "nss",
        "sim",
        "auc_judd",
        "diffgradcam",
        "ehr_auc",
        "interpretability",
        "auc",
    ):
        assert n in names
    assert "nss" in list_metrics("fixations") and "kld" in list_metrics("map")
    assert get_metric("l2").higher_is_better is False
    with pytest.raises(GazeprepError, match="unknown metric"):
        get_metric("nope")
    with pytest.raises(GazeprepError, match="metric 'kld' is already registered"):  # one Registry behaviour
        M.register_metric("kld", kind="map")(lambda p, g: 0.0)


# ------------------------------------------------------------------------------------------ pysaliency
def test_pysaliency_parity():
    ps = pytest.importorskip("pysaliency")
    rng = np.random.default_rng(2)
    pred = rng.random((20, 24))
    gt = rng.random((20, 24))
    assert M.cc(pred, gt) == pytest.approx(ps.metrics.CC(pred, gt))
    ys, xs = np.nonzero(rng.random((20, 24)) > 0.9)
    fix = np.zeros((20, 24))
    fix[ys, xs] = 1
    # pysaliency's NSS is per fixation with np.std (ddof 0); with unique pixels the mean matches
    assert M.nss(pred, fix, ddof=0) == pytest.approx(np.mean(ps.metrics.NSS(pred, xs, ys)))
    assert M.kld(pred, gt) == pytest.approx(ps.metrics.MIT_KLDiv(pred, gt), rel=1e-6)
    # pysaliency's SIM keeps a positive floor (no min-max): on non-negative maps it is our ``hs``
    assert M.histogram_similarity(pred, gt) == pytest.approx(ps.metrics.SIM(pred, gt))
