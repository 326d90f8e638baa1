"""Bad values in maps and the IoU validity rule (issue 11 item 7).

* every metric refuses a map holding NaN or +-inf (either argument) with :class:`NonFiniteMapError`
  instead of returning a finite wrong number (``_max_norm`` of a map with NaN used to give zeros);
* ``evaluate_exports`` refuses it with one line naming the export, case, target and side;
* fg/bg/m/fw IoU follow detectron2's ``SemSegEvaluator`` / I-AI rule ``pos_gt > 0 and union > 0``:
  known answers computed by hand in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import evaluator as E
from gazeprep.evaluate import get_metric, list_metrics
from gazeprep.evaluate import metrics as M

S = 16  # >= 11: SSIM's Gaussian window


def _blob(cy: float, cx: float, s: float = 3.0) -> np.ndarray:
    r, c = np.mgrid[0:S, 0:S]
    return np.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * s**2))


def _finite_inputs(kind: str) -> tuple[np.ndarray, np.ndarray]:
    pred = _blob(7, 7)
    if kind == "map":
        return pred, _blob(8, 9)
    ref = np.zeros((S, S))
    ref[5:10, 6:11] = 1.0  # a region / binary reference / fixated pixels, neither empty nor full
    if kind == "binary":
        return (pred > 0.5).astype(np.float64), ref
    return pred, ref


# every registered metric that compares two maps (the image-level AUC takes scores: tested below)
MAP_METRICS = [n for n in list_metrics() if get_metric(n).kind != "image"]
LISTED = ("ssim", "psnr", "l1", "l2", "sim", "diffgradcam", "ehr_auc", "auc_judd", "iou", "cc", "kld", "nss")


def test_the_issue_metrics_are_all_covered():
    assert set(LISTED) <= set(MAP_METRICS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "posinf", "neginf"])
@pytest.mark.parametrize("side", ["prediction", "reference"])
@pytest.mark.parametrize("name", MAP_METRICS)
def test_every_metric_refuses_non_finite(name, side, bad):
    m = get_metric(name)
    pred, ref = _finite_inputs(m.kind)
    assert np.isfinite(m(pred, ref))  # the finite inputs give a number
    which = pred.copy() if side == "prediction" else ref.copy()
    which[3, 4] = bad
    args = (which, ref) if side == "prediction" else (pred, which)
    what = side if not (m.name == "interpretability" and side == "reference") else "mask"
    with pytest.raises(M.NonFiniteMapError) as exc:
        m(*args)
    err = exc.value
    assert isinstance(err, GazeprepError) and isinstance(err, ValueError)
    assert err.what == what and err.size == S * S
    assert (err.n_nan, err.n_posinf, err.n_neginf) == (int(np.isnan(bad)), int(bad == np.inf), int(bad == -np.inf))
    token = {True: "NaN"}.get(bool(np.isnan(bad)), "+inf" if bad > 0 else "-inf")
    assert str(err) == f"{what}: map holds 1 {token} value (of {S * S} pixels)"


def test_non_finite_message_counts_every_kind():
    a = np.zeros((4, 4))
    a[0, :3] = np.nan
    a[1, 0] = np.inf
    with pytest.raises(M.NonFiniteMapError, match=r"prediction: map holds 3 NaN and 1 \+inf values \(of 16 pixels\)"):
        M.cc(a, np.ones((4, 4)))


def test_max_norm_metrics_no_longer_hide_nan():
    # before: _max_norm(map with NaN) -> max is NaN -> the map became all zeros and l1 = mean(|0 - g|)
    g = _blob(8, 8)
    p = g.copy()
    p[0, 0] = np.nan
    for name in ("ssim", "psnr", "l1", "l2", "sim", "diffgradcam", "ehr_auc", "auc_judd", "iou"):
        with pytest.raises(M.NonFiniteMapError):
            get_metric(name)(p, g if name in ("ssim", "psnr", "l1", "l2", "sim") else g > 0.5)


def test_iou_curve_and_confusion_refuse_non_finite():
    g = np.zeros((S, S), bool)
    g[2:5, 2:5] = True
    p = _blob(3, 3)
    p[10, 10] = np.nan  # used to count as background (NaN > t is False)
    with pytest.raises(M.NonFiniteMapError):
        M.iou_curve(p, g)
    with pytest.raises(M.NonFiniteMapError):
        M.confusion_2class(p, g)


def test_roc_auc_refuses_non_finite_scores():
    with pytest.raises(M.NonFiniteMapError, match="scores"):
        M.roc_auc([0, 1, 1], [0.1, np.nan, 0.7])
    with pytest.raises(M.NonFiniteMapError, match="scores"):
        M.bootstrap_auc([0, 1, 1], [0.1, np.inf, 0.7], n_boot=5)


def test_boolean_and_integer_maps_pass_the_check():
    assert M.non_finite_counts(np.ones((2, 2), bool)) is None
    assert M.non_finite_counts(np.ones((2, 2), np.int64)) is None
    assert M.non_finite_counts(np.array([np.nan, np.inf, -np.inf, -np.inf, 1.0])) == (1, 1, 2)


def test_trapezoid_matches_the_rule_by_hand():
    # area under y = x on [0, 1] sampled at 0, .5, 1: .5 * (0 + .5) / 2 + .5 * (.5 + 1) / 2 = .5
    assert M._trapezoid(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0])) == pytest.approx(0.5)
    # uneven steps: y = [1, 3, 2] at x = [0, 1, 3]: 1 * 2 + 2 * 2.5 = 7
    assert M._trapezoid(np.array([1.0, 3.0, 2.0]), np.array([0.0, 1.0, 3.0])) == pytest.approx(7.0)


# ------------------------------------------------------------------------------------------ IoU rule
def _bin(rows: list[str]) -> np.ndarray:
    return np.array([[ch == "#" for ch in r] for r in rows], dtype=np.float64)


def test_gt_without_foreground_fg_nan_and_miou_is_bg_iou():
    # the issue's case: the reference has no foreground, the prediction marks 3 of 9 pixels
    gt = _bin(["...", "...", "..."])
    pred = _bin(["###", "...", "..."])
    cm = M.confusion_2class(pred, gt)
    np.testing.assert_array_equal(cm, [[6, 3], [0, 0]])  # cm[gt, pred]
    r = M.ious_from_confusion(cm)
    # bg: tp 6, pos_gt 9, pos_pred 6, union 9 + 6 - 6 = 9 -> 2/3; fg: pos_gt 0 -> not valid (NaN)
    assert r["bgiou"] == pytest.approx(2 / 3)
    assert math.isnan(r["fgiou"])
    # mIoU over the valid classes only: 2/3 (the old rule gave (2/3 + 0) / 2 = 1/3)
    assert r["miou"] == pytest.approx(2 / 3)
    # fwIoU: bg carries all reference pixels (weight 9/9)
    assert r["fwiou"] == pytest.approx(2 / 3)
    assert math.isnan(get_metric("fgiou")(pred, gt))
    assert get_metric("miou")(pred, gt) == pytest.approx(2 / 3)


def test_gt_all_foreground_bg_nan():
    gt = _bin(["###", "###", "###"])
    pred = _bin(["###", "###", "##."])
    r = M.ious_from_confusion(M.confusion_2class(pred, gt))
    # fg: tp 8, union 9 + 8 - 8 = 9 -> 8/9; bg: pos_gt 0 -> NaN
    assert math.isnan(r["bgiou"])
    assert (
        r["fgiou"] == pytest.approx(8 / 9) and r["miou"] == pytest.approx(8 / 9) and r["fwiou"] == pytest.approx(8 / 9)
    )


def test_perfect_prediction():
    gt = _bin(["##.", "...", "..."])
    r = M.ious_from_confusion(M.confusion_2class(gt, gt))
    assert r == {"bgiou": 1.0, "fgiou": 1.0, "miou": 1.0, "fwiou": 1.0}


def test_disjoint_prediction():
    gt = _bin(["##.", "...", "..."])  # fg 2 px
    pred = _bin(["...", "###", "..."])  # 3 other px
    r = M.ious_from_confusion(M.confusion_2class(pred, gt))
    # fg: tp 0, union 2 + 3 = 5 -> 0 (valid: the reference has foreground)
    # bg: tp 9 - 5 = 4, pos_gt 7, pos_pred 6, union 7 + 6 - 4 = 9 -> 4/9
    assert r["fgiou"] == 0.0
    assert r["bgiou"] == pytest.approx(4 / 9)
    assert r["miou"] == pytest.approx(2 / 9)  # (0 + 4/9) / 2
    assert r["fwiou"] == pytest.approx(7 / 9 * 4 / 9)  # weights 7/9 (bg), 2/9 (fg, IoU 0) -> 28/81


def test_fwiou_weights_are_reference_frequencies():
    cm = np.array([[50, 10], [5, 35]])  # cm[gt, pred]: 60 bg and 40 fg reference pixels
    r = M.ious_from_confusion(cm)
    # bg: 50 / (60 + 55 - 50) = 10/13; fg: 35 / (40 + 45 - 35) = 7/10
    assert r["bgiou"] == pytest.approx(10 / 13) and r["fgiou"] == pytest.approx(0.7)
    assert r["fwiou"] == pytest.approx(0.6 * 10 / 13 + 0.4 * 0.7)  # = 0.741538...
    assert r["miou"] == pytest.approx((10 / 13 + 0.7) / 2)


def test_empty_confusion_all_nan_and_shape_checked():
    r = M.ious_from_confusion(np.zeros((2, 2)))
    assert all(math.isnan(v) for v in r.values())
    with pytest.raises(GazeprepError, match="2 x 2"):
        M.ious_from_confusion(np.zeros((3, 3)))


def _semseg_evaluator_arithmetic(cm_gt_pred: np.ndarray) -> dict[str, float]:
    """detectron2 ``SemSegEvaluator.evaluate`` arithmetic on its own layout: ``conf[pred, gt]`` with
    one extra row/column for the ignore label, dropped by ``[:-1, :-1]``."""
    conf = np.zeros((3, 3), dtype=np.int64)
    conf[:2, :2] = cm_gt_pred.T
    conf[2, :] = 7  # ignored pixels: must not count
    conf[:, 2] = 7
    n = 2
    iou = np.full(n, np.nan)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(axis=0).astype(float)
    weights = pos_gt / pos_gt.sum()
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(float)
    acc_valid = pos_gt > 0
    union = pos_gt + pos_pred - tp
    iou_valid = acc_valid & (union > 0)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    return {
        "bgiou": iou[0],
        "fgiou": iou[1],
        "miou": iou[iou_valid].sum() / iou_valid.sum(),
        "fwiou": (iou[iou_valid] * weights[iou_valid]).sum(),
    }


def test_agrees_with_the_semseg_evaluator_arithmetic():
    rng = np.random.default_rng(3)
    cases = [rng.integers(0, 20, size=(2, 2)) for _ in range(200)]
    cases += [
        np.array([[5, 4], [0, 0]]),
        np.array([[0, 0], [3, 6]]),
        np.array([[0, 2], [0, 5]]),
        np.array([[4, 0], [3, 0]]),
    ]
    for cm in cases:
        if cm.sum() == 0:
            continue
        got, want = M.ious_from_confusion(cm), _semseg_evaluator_arithmetic(cm)
        for k in got:
            assert got[k] == pytest.approx(want[k], nan_ok=True), (cm.tolist(), k)


def test_dataset_and_image_averages_through_the_evaluator():
    # image a: reference fg = 2 px, prediction hits 1 of them and 1 other px (cm [[6, 1], [1, 1]])
    # image b: reference without fg, prediction marks 3 px (cm [[6, 3], [0, 0]])
    gt = {("a", "x"): _bin(["##.", "...", "..."]), ("b", "x"): _bin(["...", "...", "..."])}
    pr = {("a", "x"): _bin(["#..", "#..", "..."]), ("b", "x"): _bin(["###", "...", "..."])}
    kw = dict(metrics=["fgiou", "bgiou", "miou", "fwiou"], gt_binarize=0.5, pred_threshold=0.5, n_boot=20, by="none")
    res = E.evaluate_exports(E.InMemoryExport(pr), E.InMemoryExport(gt), **kw)
    s = {r["metric"]: r["mean"] for r in res.summary.iter_rows(named=True)}
    # dataset level: summed cm [[12, 4], [1, 1]]: fg 1 / (2 + 5 - 1) = 1/6; bg 12 / (16 + 13 - 12) = 12/17
    assert s["fgiou"] == pytest.approx(1 / 6)
    assert s["bgiou"] == pytest.approx(12 / 17)
    assert s["miou"] == pytest.approx((1 / 6 + 12 / 17) / 2)
    assert s["fwiou"] == pytest.approx(2 / 18 * 1 / 6 + 16 / 18 * 12 / 17)
    pairs = res.pairs.sort("case_id")
    assert math.isnan(pairs["fgiou"][1]) and pairs["miou"][1] == pytest.approx(2 / 3)
    # per-image mean: image b has no fg IoU, so the fg mean is image a's 1/3 alone (n = 1)
    img = E.evaluate_exports(E.InMemoryExport(pr), E.InMemoryExport(gt), iou_average="image", **kw).summary
    fg = img.filter(pl.col("metric") == "fgiou").row(0, named=True)
    assert fg["n"] == 1 and fg["mean"] == pytest.approx(1 / 3)
    mi = img.filter(pl.col("metric") == "miou").row(0, named=True)
    assert mi["n"] == 2 and mi["mean"] == pytest.approx(((1 / 3 + 0.75) / 2 + 2 / 3) / 2)


# ------------------------------------------------------------------------------------------ evaluator
def _pair_exports(bad_side: str, bad):
    maps = {("c1", "edema"): _blob(7, 7), ("c2", "edema"): _blob(6, 8)}
    gt = {k: v.copy() for k, v in maps.items()}
    pred = {k: np.roll(v, 1, axis=1) for k, v in maps.items()}
    (pred if bad_side == "prediction" else gt)[("c2", "edema")][4, 4] = bad
    return E.InMemoryExport(pred), E.InMemoryExport(gt)


@pytest.mark.parametrize("side", ["prediction", "ground truth"])
def test_evaluator_names_export_case_target_and_side(side):
    pred, gt = _pair_exports(side, np.nan)
    with pytest.raises(GazeprepError) as exc:
        E.evaluate_exports(pred, gt, metrics=["cc"], n_boot=10)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(
        f"{side} export (in memory): case 'c2', target 'edema': map holds 1 NaN value (of 256 pixels)"
    )


def test_evaluator_names_the_export_path_and_the_stored_target(tmp_path):
    pred, gt = _pair_exports("prediction", np.inf)
    pred.path = tmp_path / "pred"  # an export read from disk has a path
    full = E.InMemoryExport({("c1", "full"): pred.maps[("c1", "edema")], ("c2", "full"): pred.maps[("c2", "edema")]})
    full.path = tmp_path / "pred"
    with pytest.raises(
        GazeprepError, match=rf"^prediction export {tmp_path / 'pred'}: case 'c2', target 'edema': map holds 1 \+inf"
    ):
        E.evaluate_exports(pred, gt, metrics=["kld"], n_boot=10)
    with pytest.raises(GazeprepError, match=r"case 'c2', target 'full' \(compared as 'edema'\): map holds 1 \+inf"):
        E.evaluate_exports(full, gt, metrics=["kld"], n_boot=10, pred_target="full")


@pytest.mark.parametrize("reference", ["ellipses", "organs"])
def test_evaluator_checks_the_prediction_in_region_modes(reference):
    pred, _ = _pair_exports("prediction", np.nan)
    cases = pl.DataFrame({"case_id": ["c1", "c2"], "image_height_px": [S, S], "image_width_px": [S, S]})
    ell = pl.DataFrame(
        {
            "case_id": ["c1", "c2"],
            "ellipse_idx": [0, 0],
            "xmin_px": [2.0, 2.0],
            "ymin_px": [2.0, 2.0],
            "xmax_px": [9.0, 9.0],
            "ymax_px": [9.0, 9.0],
            "certainty": [5, 5],
            "source_label": ["edema", "edema"],
        }
    )
    gt = E.InMemoryExport(
        {},
        tables={
            "cases": cases,
            "ellipses": ell,
            "heatmaps": pl.DataFrame(schema={"case_id": pl.Utf8, "target": pl.Utf8}),
        },
    )
    pred.tables = {**pred.tables, "cases": cases}
    mask = np.zeros((S, S), bool)
    mask[3:9, 3:9] = True
    kw = (
        {"organ_masks": lambda cid: {"lungs": mask}, "organ_map": {"edema": ("lungs",)}}
        if reference == "organs"
        else {}
    )
    with pytest.raises(GazeprepError, match="prediction export .*case 'c2', target 'edema': map holds 1 NaN"):
        E.evaluate_exports(
            pred,
            gt,
            reference=reference,
            metrics=["iou"] if reference == "ellipses" else ["diffgradcam"],
            iou_threshold=0.5,
            n_boot=10,
            **kw,
        )


def test_ellipse_with_a_missing_coordinate():
    with pytest.raises(GazeprepError, match="non-finite coordinates"):
        M.ellipse_mask(8, 8, [(1.0, 1.0, np.nan, 5.0, 5)])
    # a row below the certainty cut is dropped before the check (it is never drawn)
    assert not M.ellipse_mask(8, 8, [(1.0, 1.0, np.nan, 5.0, 2)]).any()
    pred, _ = _pair_exports("prediction", 0.0)
    cases = pl.DataFrame({"case_id": ["c1", "c2"], "image_height_px": [S, S], "image_width_px": [S, S]})
    ell = pl.DataFrame(
        {
            "case_id": ["c1", "c2"],
            "ellipse_idx": [0, 0],
            "xmin_px": [2.0, None],
            "ymin_px": [2.0, 2.0],
            "xmax_px": [9.0, 9.0],
            "ymax_px": [9.0, 9.0],
            "certainty": [5, 5],
            "source_label": ["edema", "edema"],
        }
    )
    gt = E.InMemoryExport(
        {},
        tables={
            "cases": cases,
            "ellipses": ell,
            "heatmaps": pl.DataFrame(schema={"case_id": pl.Utf8, "target": pl.Utf8}),
        },
    )
    pred.tables = {**pred.tables, "cases": cases}
    with pytest.raises(
        GazeprepError, match=r"ground truth export \(in memory\): case 'c2', target 'edema': an ellipse"
    ):
        E.evaluate_exports(pred, gt, reference="ellipses", metrics=["iou"], iou_threshold=0.5, n_boot=10)
