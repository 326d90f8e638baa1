"""The one bootstrap (gazeprep.evaluate.metrics.bootstrap_ci): its documented method reproduced by
hand, the vectorised form equal to the row-by-row one, and the evaluator's CIs computed through it."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from gazeprep.evaluate import metrics as M
from gazeprep.evaluate.evaluator import InMemoryExport, evaluate_exports


def _by_hand(values: np.ndarray, stat, n_boot: int, seed: int, ci: float = 0.95) -> tuple[float, float]:
    """The documented method written out: one (n_boot, n) index matrix from default_rng(seed),
    the statistic per row, NaNs left out, linear-interpolated quantiles."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    vals = [stat(values[i]) for i in idx]
    vals = sorted(v for v in vals if not math.isnan(v))
    a = (1 - ci) / 2

    def q(p: float) -> float:  # numpy's default 'linear' quantile, by hand
        h = (len(vals) - 1) * p
        lo = math.floor(h)
        return vals[lo] + (h - lo) * (vals[min(lo + 1, len(vals) - 1)] - vals[lo])

    return q(a), q(1 - a)


def test_bootstrap_ci_is_the_documented_percentile_bootstrap():
    v = np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.5, 0.4])
    est, lo, hi = M.bootstrap_ci(np.median, v, n_boot=101, seed=3)
    assert est == pytest.approx(0.4)  # the statistic on the data
    assert (lo, hi) == pytest.approx(_by_hand(v, lambda x: float(np.median(x)), 101, 3))
    assert M.bootstrap_ci(np.median, v, n_boot=101, seed=3) == (est, lo, hi)  # seeded
    assert M.bootstrap_ci(np.mean, v, n_boot=101, seed=4) != M.bootstrap_ci(np.mean, v, n_boot=101, seed=3)


def test_vectorized_statistic_gives_the_same_interval():
    v = np.random.default_rng(1).normal(size=57)
    row = M.bootstrap_ci(np.mean, v, n_boot=300, seed=9)
    vec = M.bootstrap_ci(lambda x: x.mean(axis=1), v, n_boot=300, seed=9, vectorized=True)
    assert vec == pytest.approx(row, rel=1e-12)


def test_one_row_and_no_rows():
    assert M.bootstrap_ci(np.mean, np.array([2.5]), n_boot=20) == (2.5, 2.5, 2.5)  # every resample is the row
    assert all(math.isnan(x) for x in M.bootstrap_ci(np.mean, np.array([]), n_boot=20))


def test_bootstrap_mean_leaves_nan_values_out_before_resampling():
    v = np.array([1.0, np.nan, 3.0, 2.0, np.nan, 6.0])
    assert M.bootstrap_mean(v, n_boot=200, seed=2) == M.bootstrap_mean(v[~np.isnan(v)], n_boot=200, seed=2)
    est, lo, hi = M.bootstrap_mean(v, n_boot=200, seed=2)
    assert est == pytest.approx(3.0)
    assert (lo, hi) == pytest.approx(_by_hand(np.array([1.0, 3.0, 2.0, 6.0]), np.mean, 200, 2))
    assert all(math.isnan(x) for x in M.bootstrap_mean([np.nan, np.nan]))


def test_evaluator_summary_cis_come_from_the_one_bootstrap():
    """Per-image means: bootstrap_mean of the pair values; fg IoU at the dataset level: bootstrap_ci
    of the IoU of the summed confusion matrices (the resampled pairs' matrices)."""
    rng = np.random.default_rng(0)
    gt = {(f"c{i}", "full"): rng.random((8, 8)).astype(np.float32) for i in range(12)}
    pred = {k: np.clip(a + rng.normal(0, 0.2, a.shape), 0, None).astype(np.float32) for k, a in gt.items()}
    res = evaluate_exports(
        InMemoryExport(pred),
        InMemoryExport(gt),
        metrics=["cc", "fgiou"],
        by="none",
        n_boot=200,
        seed=7,
        gt_binarize=0.5,
    )
    row = res.summary.filter((pl.col("group") == "all") & (pl.col("metric") == "cc")).row(0, named=True)
    cc = res.pairs.get_column("cc").to_numpy()
    _, lo, hi = M.bootstrap_mean(cc, n_boot=200, seed=7)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi))
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    fg = res.summary.filter(pl.col("metric") == "fgiou").row(0, named=True)
    assert fg["average"] == "dataset" and fg["ci_low"] <= fg["mean"] <= fg["ci_high"]
