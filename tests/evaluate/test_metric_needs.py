"""The evaluator reads what a metric needs from its registry entry, not from its name: a
user-registered thresholded metric gets 004's validated threshold through its ``threshold_curve``,
and a binary metric is summed over confusion matrices only when it declares a ``confusion_key``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest

from gazeprep.evaluate import evaluator as E
from gazeprep.evaluate import metrics as M
from gazeprep.evaluate.registry import METRICS, register_metric


def _dice(pred: np.ndarray, mask: np.ndarray, *, threshold: float = 0.15) -> float:
    p, g = np.asarray(pred) > threshold, np.asarray(mask) > 0.5
    return float(2 * (p & g).sum() / (p.sum() + g.sum()))


def _dice_curve(pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.array([_dice(pred, mask, threshold=t) for t in M.THRESHOLDS_004])


def _fg_iou(pred_bin: np.ndarray, gt_bin: np.ndarray) -> float:
    return M.ious_from_confusion(M.confusion_2class(pred_bin, gt_bin))["fgiou"]


@pytest.fixture
def user_metrics() -> Iterator[None]:
    register_metric("dice_at", kind="region", threshold_curve=_dice_curve)(_dice)
    register_metric("fg_summed", kind="binary", confusion_key="fgiou")(_fg_iou)
    register_metric("fg_per_image", kind="binary")(_fg_iou)
    yield
    for name in ("dice_at", "fg_summed", "fg_per_image"):
        METRICS.unregister(name)


def _split_cases(ids: list[str], splits: list[str]) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame({"case_id": ids, "split": splits, "image_height_px": [8] * n, "image_width_px": [8] * n})


def test_thresholded_user_metric_validated_and_fixed(user_metrics: None) -> None:
    g = np.zeros((8, 8))
    g[2:6, 2:6] = 1
    pred_map = g * 0.9
    pred_map[0, :] = 0.27  # a false-positive row at .27: any threshold in [.27, .9) isolates the square
    ids = ["v1", "v2", "t1"]
    cases = _split_cases(ids, ["validate", "validate", "test"])
    pred = E.InMemoryExport({(c, "t"): pred_map for c in ids}, {"cases": cases})
    gt = E.InMemoryExport({(c, "t"): g for c in ids}, {"cases": cases})
    res = E.evaluate_exports(pred, gt, metrics=["dice_at"], n_boot=20)
    # the first of THRESHOLDS_004 at or above .27 is .3, chosen on validate, reported on the test case
    lab = res.summary.filter(pl.col("group") == "t").row(0, named=True)
    assert (lab["threshold"], lab["threshold_from"], lab["n"], lab["mean"]) == (0.3, "validate", 1, 1.0)
    assert res.pairs["dice_at_reported"].to_list() == [True, False, False]  # sorted ids: t1, v1, v2
    assert res.pairs["dice_at_threshold"].to_list() == [0.3, 0.3, 0.3]
    # fixed .15: 24 predicted pixels (16 square + 8 row), 16 reference, 16 shared -> 2 * 16 / 40
    fixed = E.evaluate_exports(pred, gt, metrics=["dice_at"], iou_threshold=0.15, n_boot=20)
    assert fixed.pairs["dice_at"].to_list() == pytest.approx([0.8, 0.8, 0.8])
    assert fixed.summary.filter(pl.col("group") == "all")["threshold"][0] == 0.15


def test_dataset_level_only_for_metrics_with_a_confusion_key(user_metrics: None) -> None:
    gt_a = np.zeros((4, 4))
    gt_a[:2, :2] = 1
    gt_b = np.zeros((4, 4))
    gt_b[0, 0] = 1
    pr_b = np.zeros((4, 4))
    pr_b[3, 3] = 1  # case b: tp 0, fp 1, fn 1; case a perfect: tp 4
    gt = E.InMemoryExport({("a", "t"): gt_a, ("b", "t"): gt_b})
    pred = E.InMemoryExport({("a", "t"): gt_a.copy(), ("b", "t"): pr_b})
    res = E.evaluate_exports(pred, gt, metrics=["fg_summed", "fg_per_image"], gt_binarize=0.5, n_boot=20, by="none")
    s = {r["metric"]: (r["mean"], r["average"]) for r in res.summary.iter_rows(named=True)}
    assert s["fg_summed"] == (pytest.approx(4 / 6), "dataset")  # summed: tp 4, fp 1, fn 1
    assert s["fg_per_image"] == (pytest.approx(0.5), "image")  # (1 + 0) / 2
