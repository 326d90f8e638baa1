"""Evaluator on in-memory exports: pairing, references per metric kind, validated IoU threshold,
dataset-level IoUs, CIs and the written tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import evaluator as E
from gazeprep.evaluate import metrics as M
from gazeprep.heatmaps.grid import OutputGrid


def _blob(h, w, cy, cx, s):
    r, c = np.mgrid[0:h, 0:w]
    return np.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * s * s))


def _cases(ids, splits, h=16, w=16):
    return pl.DataFrame(
        {"case_id": ids, "split": splits, "image_height_px": [h] * len(ids), "image_width_px": [w] * len(ids)}
    )


def test_pairs_unpaired_and_map_metrics_match_direct_calls():
    g1, g2 = _blob(16, 16, 5, 5, 2), _blob(16, 16, 10, 9, 3)
    p1, p2 = _blob(16, 16, 6, 5, 2), _blob(8, 8, 5, 4.5, 1.5)  # p2 smaller: resized to 16x16 (nearest)
    gt = E.InMemoryExport({("a", "x"): g1, ("b", "x"): g2, ("c", "x"): g1})
    pred = E.InMemoryExport({("a", "x"): p1, ("b", "x"): p2, ("d", "y"): p1})
    res = E.evaluate_exports(pred, gt, metrics=["kld", "cc", "l2"], n_boot=50)
    assert res.pairs.height == 2
    assert sorted(res.unpaired.select("case_id", "only_in").rows()) == [("c", "gt"), ("d", "pred")]
    row_b = res.pairs.filter(pl.col("case_id") == "b").row(0, named=True)
    assert row_b["kld"] == pytest.approx(M.kld(M.resize_nearest(p2, (16, 16)), g2))
    assert row_b["cc"] == pytest.approx(M.cc(p2, g2))
    s = res.summary.filter((pl.col("group") == "all") & (pl.col("metric") == "cc")).row(0, named=True)
    assert s["n"] == 2 and s["mean"] == pytest.approx(res.pairs["cc"].mean())
    assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    assert "x" in res.summary["group"].to_list()


def test_identical_exports_give_perfect_scores():
    maps = {(f"c{i}", "t"): _blob(16, 16, 4 + i, 6, 2) for i in range(4)}
    res = E.evaluate_exports(E.InMemoryExport(maps), E.InMemoryExport(maps), n_boot=20)
    s = {r["metric"]: r["mean"] for r in res.summary.filter(pl.col("group") == "all").iter_rows(named=True)}
    assert s["kld"] == pytest.approx(0, abs=1e-9) and s["cc"] == pytest.approx(1) and s["ssim"] == pytest.approx(1)
    assert s["l1"] == 0 and s["hs"] == pytest.approx(1) and s["psnr"] == np.inf
    # I-AI binarises the two sides differently (pred > .5, gt by unique-level quantile), so even
    # identical maps need the same rule on both sides to score fgIoU 1
    assert s["fgiou"] < 1
    res = E.evaluate_exports(
        E.InMemoryExport(maps), E.InMemoryExport(maps), metrics=["fgiou"], gt_binarize=0.5, n_boot=20
    )
    assert res.summary["mean"][0] == pytest.approx(1)


def test_dataset_level_fgiou_sums_confusions():
    gt_a = np.zeros((4, 4))
    gt_a[:2, :2] = 1  # noqa: E702
    gt_b = np.zeros((4, 4))
    gt_b[0, 0] = 1  # noqa: E702
    pr_a = gt_a.copy()  # perfect: tp 4
    pr_b = np.zeros((4, 4))
    pr_b[3, 3] = 1  # noqa: E702  tp 0, fp 1, fn 1
    gt = E.InMemoryExport({("a", "t"): gt_a, ("b", "t"): gt_b})
    pred = E.InMemoryExport({("a", "t"): pr_a, ("b", "t"): pr_b})
    res = E.evaluate_exports(pred, gt, metrics=["fgiou"], gt_binarize=0.5, n_boot=20, by="none")
    # summed: tp 4, fp 1, fn 1 -> 4/6; per-image mean would be (1 + 0)/2
    assert res.summary.row(0, named=True)["mean"] == pytest.approx(4 / 6)
    res_img = E.evaluate_exports(
        pred, gt, metrics=["fgiou"], gt_binarize=0.5, n_boot=20, by="none", iou_average="image"
    )
    assert res_img.summary.row(0, named=True)["mean"] == pytest.approx(0.5)


def test_validated_threshold_chosen_on_validate_reported_on_test():
    # reference region = gt > .15; predictions are the gt scaled by a per-case factor so that
    # validate pairs favour one threshold; test IoU is reported at that threshold only
    g = np.zeros((8, 8))
    g[2:6, 2:6] = 1  # noqa: E702
    noise = np.zeros((8, 8))
    noise[0, :] = 0.27  # noqa: E702  a false-positive row at .27
    pred_map = g * 0.9 + noise
    maps_p = {(c, "t"): pred_map for c in ("v1", "v2", "t1")}
    maps_g = {(c, "t"): g for c in ("v1", "v2", "t1")}
    cases = _cases(["v1", "v2", "t1"], ["validate", "validate", "test"], 8, 8)
    res = E.evaluate_exports(
        E.InMemoryExport(maps_p, {"cases": cases}),
        E.InMemoryExport(maps_g, {"cases": cases}),
        metrics=["iou"],
        n_boot=20,
    )
    # any threshold in [.27, .9) isolates the square: the first such in THRESHOLDS_004 is .3 -> IoU 1
    lab = res.summary.filter(pl.col("group") == "t").row(0, named=True)
    assert lab["threshold"] == 0.3 and lab["threshold_from"] == "validate"
    assert lab["n"] == 1 and lab["mean"] == pytest.approx(1.0)
    assert not res.notes
    # without splits the threshold comes from the same data and a note says so
    res2 = E.evaluate_exports(E.InMemoryExport(maps_p), E.InMemoryExport(maps_g), metrics=["iou"], n_boot=20)
    assert res2.notes and res2.summary.filter(pl.col("group") == "t")["threshold_from"][0] == "same data"
    # a fixed threshold: .15 lets the noise row in: inter 16, union 16 + 8
    res3 = E.evaluate_exports(
        E.InMemoryExport(maps_p), E.InMemoryExport(maps_g), metrics=["iou"], iou_threshold=0.15, n_boot=20
    )
    assert res3.summary.filter(pl.col("group") == "all")["mean"][0] == pytest.approx(16 / 24)


def test_ellipse_mode_letterboxed_prediction():
    # image 20 (h) x 40 (w); prediction letterboxed into 20x20 (scale .5, rows 5..14)
    H, W = 20, 40
    grid = OutputGrid.letterbox(H, W, 20)
    ell = pl.DataFrame(
        {
            "case_id": ["a", "a"],
            "ellipse_idx": [0, 1],
            "xmin_px": [10.0, 0.0],
            "ymin_px": [4.0, 0.0],
            "xmax_px": [30.0, 5.0],
            "ymax_px": [16.0, 5.0],
            "certainty": [5, 1],
            "source_label": ["Pulmonary edema", "Pneumothorax"],
        }
    )
    truth = M.ellipse_mask(H, W, [(10, 4, 30, 16)])
    # prediction: the ellipse region drawn in grid coordinates
    x0, y0 = grid.to_grid(10, 4)
    x1, y1 = grid.to_grid(30, 16)
    p = M.ellipse_mask(20, 20, [(x0, y0, x1, y1)]).astype(float)
    cases = pl.DataFrame({"case_id": ["a"], "image_height_px": [H], "image_width_px": [W]})
    gt = E.InMemoryExport({("a", "edema"): np.zeros((20, 20))}, {"ellipses": ell, "cases": cases})
    pred = E.InMemoryExport({("a", "edema"): p, ("a", "pneumothorax"): p, ("a", "opacity"): p}, {"cases": cases})
    res = E.evaluate_exports(pred, gt, reference="ellipses", iou_threshold=0.5, n_boot=20)
    # pneumothorax's ellipse has certainty 1: no reference -> unpaired; edema and opacity both
    # come from "Pulmonary edema" (004 translation)
    assert sorted(res.pairs["target"].to_list()) == ["edema", "opacity"]
    ours = res.pairs["iou"][0]
    back = E.grid_to_image(p, grid)
    assert ours == pytest.approx(M.iou_at_threshold(back, truth, threshold=0.5))
    assert ours > 0.8
    with pytest.raises(GazeprepError, match="region"):
        E.evaluate_exports(pred, gt, reference="ellipses", metrics=["kld"])
    # on the grid: the prediction is the ellipse drawn on the grid itself -> IoU 1
    res_g = E.evaluate_exports(pred, gt, reference="ellipses", iou_threshold=0.5, n_boot=20, ellipse_resolution="grid")
    assert res_g.pairs["iou"].to_list() == [1.0, 1.0]


def test_fixation_metrics_use_windowed_fixations():
    H = W = 10
    fx = pl.DataFrame(
        {
            "case_id": ["a"] * 3,
            "t_start_s": [0.0, 2.0, 5.0],
            "t_end_s": [1.0, 3.0, 6.0],
            "x_px": [2.0, 7.0, 4.0],
            "y_px": [2.0, 7.0, 8.0],
        }
    )
    win = pl.DataFrame({"case_id": ["a"], "target": ["t"], "t_start_s": [1.5], "t_end_s": [4.0]})
    grid = OutputGrid.native(H, W)
    fm = E.fixation_map(fx, win, grid)
    assert fm.sum() == 1 and fm[7, 7] == 1  # only the fixation in [2, 3] overlaps [1.5, 4]
    cases = pl.DataFrame({"case_id": ["a"], "image_height_px": [H], "image_width_px": [W]})
    g = _blob(H, W, 7, 7, 1.5)
    gt = E.InMemoryExport({("a", "t"): g}, {"fixations": fx, "windows": win, "cases": cases})
    pred = E.InMemoryExport({("a", "t"): g})
    res = E.evaluate_exports(pred, gt, metrics=["nss", "auc_judd"], n_boot=20)
    r = res.pairs.row(0, named=True)
    assert r["nss"] == pytest.approx(M.nss(g, fm))
    assert r["auc_judd"] == pytest.approx(1.0, abs=1e-6)  # the fixated pixel is the map's peak


def test_format_and_write(tmp_path):
    maps = {("a", "t"): _blob(16, 16, 5, 5, 2), ("b", "t"): _blob(16, 16, 8, 5, 2)}
    res = E.evaluate_exports(E.InMemoryExport(maps), E.InMemoryExport(maps), metrics=["cc", "l1"], n_boot=20)
    txt = E.format_summary(res.summary)
    assert "cc↑" in txt and "l1↓" in txt and "all" in txt
    E.write_table(res.summary, tmp_path / "s.parquet")
    E.write_table(res.pairs, tmp_path / "p.csv")
    assert pl.read_parquet(tmp_path / "s.parquet").equals(res.summary)
    assert pl.read_csv(tmp_path / "p.csv").height == 2
    with pytest.raises(GazeprepError):
        E.write_table(res.summary, tmp_path / "s.txt")


def test_errors_are_one_line():
    a = E.InMemoryExport({("a", "t"): np.ones((4, 4))})
    b = E.InMemoryExport({("b", "t"): np.ones((4, 4))})
    with pytest.raises(GazeprepError, match="no \\(case_id, target\\) pair"):
        E.evaluate_exports(a, b)
    with pytest.raises(GazeprepError, match="classifier scores"):
        E.evaluate_exports(a, a, metrics=["auc"])
    with pytest.raises(GazeprepError, match="fixations"):
        E.evaluate_exports(a, a, metrics=["nss"])


def test_label_mean_row_is_unweighted_mean_of_labels():
    # label a: 3 pairs with l1 = .1 each... built as constant maps: |p - g| after max-norm
    g = np.ones((4, 4))
    p_half = np.ones((4, 4))
    p_half[:2] = 0.5  # noqa: E702  max-norm keeps it: l1 = .25
    gt = E.InMemoryExport({("c1", "a"): g, ("c2", "a"): g, ("c3", "a"): g, ("c1", "b"): g})
    pred = E.InMemoryExport({("c1", "a"): g, ("c2", "a"): g, ("c3", "a"): g, ("c1", "b"): p_half})
    res = E.evaluate_exports(pred, gt, metrics=["l1"], n_boot=20)
    by = {r["group"]: r for r in res.summary.iter_rows(named=True)}
    assert by["a"]["mean"] == 0 and by["b"]["mean"] == pytest.approx(0.25)
    assert by["all"]["mean"] == pytest.approx(0.25 / 4)  # pooled over 4 pairs
    assert by[E.LABEL_MEAN]["mean"] == pytest.approx(0.125) and by[E.LABEL_MEAN]["n"] == 2
    assert "(n=2)" not in E.format_summary(res.summary.filter(pl.col("group") != E.LABEL_MEAN))


def test_pred_target_full_stands_for_every_label():
    g = np.zeros((8, 8))
    g[2:6, 2:6] = 1  # noqa: E702
    full = np.zeros((8, 8))
    full[2:6, 2:4] = 1  # noqa: E702  half of the square
    gt = E.InMemoryExport({("a", "x"): g, ("a", "y"): g, ("b", "x"): g})
    pred = E.InMemoryExport({("a", "full"): full, ("b", "full"): g})
    res = E.evaluate_exports(pred, gt, metrics=["iou"], iou_threshold=0.5, pred_target="full", n_boot=20)
    got = {(r["case_id"], r["target"]): r["iou"] for r in res.pairs.iter_rows(named=True)}
    assert got == {("a", "x"): 0.5, ("a", "y"): 0.5, ("b", "x"): 1.0}
    assert any("'full'" in n for n in res.notes)
    res2 = E.evaluate_exports(gt, pred, metrics=["iou"], iou_threshold=0.5, gt_target="full", n_boot=20)
    assert res2.pairs.height == 3
    with pytest.raises(GazeprepError, match="no map for target"):
        E.evaluate_exports(pred, gt, pred_target="nope")


def test_regrid_letterboxed_prediction_onto_native_reference():
    # image 10 x 20 (h x w); prediction on a 20 x 20 letterbox grid (scale 1, rows 5..14 hold the image)
    H, W = 10, 20
    g = np.zeros((H, W))
    g[2:5, 3:9] = 1  # noqa: E702
    lb = OutputGrid.letterbox(H, W, 20)
    p = np.zeros((20, 20))
    p[7:10, 3:9] = 1  # noqa: E702  the same square, shifted by the padding
    np.testing.assert_array_equal(E.regrid(p, lb, OutputGrid.native(H, W)), g)
    cases = pl.DataFrame({"case_id": ["a"], "image_height_px": [H], "image_width_px": [W]})
    res = E.evaluate_exports(
        E.InMemoryExport({("a", "t"): p}, {"cases": cases}),
        E.InMemoryExport({("a", "t"): g}, {"cases": cases}),
        metrics=["cc", "l1"],
        n_boot=20,
    )
    assert res.pairs["cc"][0] == pytest.approx(1.0) and res.pairs["l1"][0] == 0
    # without the image size a plain resize is all that can be done: misaligned
    res2 = E.evaluate_exports(
        E.InMemoryExport({("a", "t"): p}), E.InMemoryExport({("a", "t"): g}), metrics=["cc"], n_boot=20
    )
    assert res2.pairs["cc"][0] < 0.9


def test_organ_mode_interpretability_rate():
    # image 20 x 40, CAMs on a 10 x 10 letterbox grid (scale .25, image rows 2.5..7.5 of the grid)
    H, W = 20, 40
    heart = np.zeros((H, W), bool)
    heart[8:20, 16:28] = True  # noqa: E702
    lungs = np.zeros((H, W), bool)
    lungs[0:16, 0:12] = True  # noqa: E702
    grid = OutputGrid.letterbox(H, W, 10)

    def cam_at(x_px, y_px):
        gx, gy = grid.to_grid(x_px, y_px)
        c = np.zeros((10, 10))
        c[int(round(float(gy))), int(round(float(gx)))] = 1.0  # noqa: E702
        return c

    maps = {
        ("a", "enlarged_cardiac_silhouette"): cam_at(22, 14),  # peak in the heart -> 1
        ("b", "enlarged_cardiac_silhouette"): cam_at(4, 4),  # peak in the lung -> 0
        ("a", "pneumonia"): cam_at(4, 4),  # lung -> 1
        ("a", "fracture"): cam_at(4, 4),  # no organ for this label: not evaluated
    }
    cases = pl.DataFrame({"case_id": ["a", "b"], "image_height_px": [H, H], "image_width_px": [W, W]})
    pred = E.InMemoryExport(maps, {"cases": cases})
    res = E.evaluate_exports(
        pred,
        pred,
        reference="organs",
        organ_masks=lambda cid: {"heart": heart, "left_lung": lungs},
        metrics=["interpretability"],
        n_boot=20,
    )
    got = {(r["case_id"], r["target"]): r["interpretability"] for r in res.pairs.iter_rows(named=True)}
    assert got == {
        ("a", "enlarged_cardiac_silhouette"): 1.0,
        ("b", "enlarged_cardiac_silhouette"): 0.0,
        ("a", "pneumonia"): 1.0,
    }
    s = {r["group"]: r["mean"] for r in res.summary.iter_rows(named=True)}
    assert s["enlarged_cardiac_silhouette"] == 0.5 and s["pneumonia"] == 1.0
    # a case without masks: NaN and a note, not a crash
    res2 = E.evaluate_exports(
        pred, pred, reference="organs", organ_masks=lambda cid: None, metrics=["interpretability"], n_boot=20
    )
    assert res2.pairs["interpretability"].is_nan().all() and any("organ mask" in n for n in res2.notes)
    with pytest.raises(GazeprepError, match="organ masks"):
        E.evaluate_exports(pred, pred, reference="organs")


def test_organ_mode_iou_with_missing_masks_does_not_crash():
    H, W = 10, 10
    heart = np.zeros((H, W), bool)
    heart[2:6, 2:6] = True  # noqa: E702
    cam = heart.astype(float)
    cases = pl.DataFrame({"case_id": ["a", "b"], "image_height_px": [H, H], "image_width_px": [W, W]})
    pred = E.InMemoryExport({("a", "heart"): cam, ("b", "heart"): cam}, {"cases": cases})
    res = E.evaluate_exports(
        pred,
        pred,
        reference="organs",
        metrics=["iou"],
        n_boot=20,
        organ_masks=lambda cid: {"heart": heart} if cid == "a" else None,
    )
    got = dict(zip(res.pairs["case_id"], res.pairs["iou"]))
    assert got["a"] == 1.0 and np.isnan(got["b"])
    assert np.isnan(M.best_thresholds(np.full((2, len(M.THRESHOLDS_004)), np.nan))[0])


def test_invalid_manifest_recipe_is_an_error_not_a_guessed_grid():
    # a map whose shape differs from the image needs the recipe's grid; an invalid recipe used to be
    # ignored silently (letterbox assumed)
    cases = pl.DataFrame({"case_id": ["c"], "image_height_px": [40], "image_width_px": [60]})
    ex = E.InMemoryExport({("c", "t"): np.ones((32, 32))}, tables={"cases": cases}, manifest={"recipe": {"name": 3}})
    with pytest.raises(GazeprepError, match=r"^\(in memory\): the recipe in its manifest is not valid"):
        E.grid_for(ex, "c", (32, 32))
    # without a recipe the documented shape rule applies
    ex.manifest = None
    assert E.grid_for(ex, "c", (32, 32)).shape == (32, 32)
