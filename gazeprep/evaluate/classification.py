"""Image-level classification metrics from a prediction export's class scores.

``gazeprep predict`` stores a classifier's outputs beside its maps as ``tables/class_scores.parquet``:
one row per (case, label) with ``case_id, label, score`` (a probability in [0, 1]: softmax over the
classes for one-class-per-case models, sigmoid per label otherwise) and ``truth`` (1 present, 0 absent,
null unknown, from the source export's labels at prediction time).

:func:`classification_summary` turns that table into rows of the evaluator's summary:

* ``auc`` per label (``sklearn.metrics.roc_auc_score`` over the cases whose truth is known; NaN when a
  label has only one class) with a seeded percentile-bootstrap 95% CI over cases
  (:func:`gazeprep.evaluate.metrics.bootstrap_auc`: papers 003 and 004 report per-label AUCs);
* ``auc`` macro (group ``mean over labels``): the unweighted mean of the per-label AUCs, its CI from
  the same case resampling (each resample recomputes every label's AUC, labels with one class in a
  resample left out of its mean);
* ``accuracy`` (group ``all``) where the truth is one class per case (EGD-CXR's normal / CHF /
  pneumonia, reported by papers 000, 001 and 002): the share of cases whose highest score is their
  class, with a bootstrap CI over cases. Cases without exactly one positive label are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import metrics as M

#: Columns of an evaluation summary (one row per group and metric); map metrics
#: (:mod:`gazeprep.evaluate.evaluator`) and class metrics (here) share it.
SUMMARY_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "group": pl.Utf8,
    "metric": pl.Utf8,
    "n": pl.Int64,
    "mean": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "higher_is_better": pl.Boolean,
    "average": pl.Utf8,
    "threshold": pl.Float64,
    "threshold_from": pl.Utf8,
}

CLASS_SCORES = "class_scores"
MACRO_GROUP = "mean over labels"  # the evaluator's LABEL_MEAN group
CLASSIFICATION_METRICS = ("auc", "accuracy")
_COLUMNS = {"case_id": pl.Utf8, "label": pl.Utf8, "score": pl.Float64, "truth": pl.Float64}


def read_class_scores(export: Any) -> pl.DataFrame | None:
    """The ``class_scores`` table of a prediction export (``None`` when it has none)."""
    tables = getattr(export, "tables", None) or {}
    try:
        if CLASS_SCORES not in tables:
            return None
        df = tables[CLASS_SCORES]
    except KeyError:
        return None
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise GazeprepError(
            f"class_scores table lacks column(s) {', '.join(missing)} (expected case_id, label, score, truth)"
        )
    return df.select([pl.col(c).cast(t) for c, t in _COLUMNS.items()])


def score_matrices(scores: pl.DataFrame) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(case ids, labels, truth (N, L) with NaN unknown, scores (N, L) with NaN missing) in first-seen
    order. A (case, label) given twice is an error; scores must be finite."""
    dup = scores.group_by("case_id", "label").len().filter(pl.col("len") > 1)
    if dup.height:
        r = dup.row(0, named=True)
        raise GazeprepError(f"class_scores: case {r['case_id']!r}, label {r['label']!r} has {r['len']} rows")
    cases = list(dict.fromkeys(scores["case_id"].to_list()))
    labels = list(dict.fromkeys(scores["label"].to_list()))
    ci = {c: i for i, c in enumerate(cases)}
    li = {lab: j for j, lab in enumerate(labels)}
    y = np.full((len(cases), len(labels)), np.nan)
    s = np.full((len(cases), len(labels)), np.nan)
    for cid, lab, sc, tr in scores.select("case_id", "label", "score", "truth").iter_rows():
        i, j = ci[cid], li[lab]
        if sc is None or not np.isfinite(sc):
            raise GazeprepError(f"class_scores: case {cid!r}, label {lab!r}: score {sc!r} is not a finite number")
        s[i, j] = sc
        y[i, j] = np.nan if tr is None else float(tr)
    return cases, labels, y, s


def _macro_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mean over labels of the AUC of the rows with known truth (labels with one class left out)."""
    vals = []
    for j in range(y.shape[1]):
        known = ~np.isnan(y[:, j])
        v = M._auc_ranks(y[known, j] > 0.5, s[known, j])
        if not np.isnan(v):
            vals.append(v)
    return float(np.mean(vals)) if vals else float("nan")


def single_label_rows(y: np.ndarray) -> np.ndarray:
    """Rows whose truth is one class: exactly one label 1, every other label 0 or unknown."""
    pos = np.nan_to_num(y, nan=0.0) > 0.5
    return pos.sum(axis=1) == 1


def _row(group: str, metric: str, n: int, mean: float, lo: float | None, hi: float | None, average: str) -> dict:
    return {
        "group": group,
        "metric": metric,
        "n": int(n),
        "mean": float(mean),
        "ci_low": lo,
        "ci_high": hi,
        "higher_is_better": True,
        "average": average,
        "threshold": None,
        "threshold_from": None,
    }


def classification_summary(
    scores: pl.DataFrame,
    *,
    metrics: tuple[str, ...] | list[str] = CLASSIFICATION_METRICS,
    by: str = "label",
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pl.DataFrame:
    """Summary rows (the evaluator's summary schema) of AUC per label and macro, and accuracy (see the
    module docstring). ``by="none"`` keeps only the macro AUC and the accuracy. Bootstrap resamples
    are over cases, seeded: the same table and seed give the same intervals."""
    cases, labels, y, s = score_matrices(scores)
    rows: list[dict] = []
    if "auc" in metrics and labels:
        if by == "label":
            for j, lab in enumerate(labels):
                known = ~np.isnan(y[:, j])
                yt, st = (y[known, j] > 0.5).astype(int), s[known, j]
                auc, lo, hi = M.bootstrap_auc(yt, st, n_boot=n_boot, ci=ci, seed=seed)
                rows.append(_row(lab, "auc", int(known.sum()), auc, lo, hi, "image"))
        n_any = int((~np.isnan(y)).any(axis=1).sum())
        per_label = []
        for j in range(len(labels)):
            known = ~np.isnan(y[:, j])
            per_label.append(M.roc_auc((y[known, j] > 0.5).astype(int), s[known, j]))
        valid = [v for v in per_label if not np.isnan(v)]
        est = float(np.mean(valid)) if valid else float("nan")
        _, lo, hi = M.bootstrap_ci(_macro_auc, y, s, n_boot=n_boot, ci=ci, seed=seed)
        rows.append(_row(MACRO_GROUP, "auc", n_any, est, lo, hi, "labels"))
    if "accuracy" in metrics and len(labels) > 1:
        one = single_label_rows(y)
        known_rows = (~np.isnan(y)).any(axis=1)
        if one.any() and one[known_rows].all():  # one class per case: accuracy is defined
            correct = (np.argmax(s[one], axis=1) == np.argmax(np.nan_to_num(y[one], nan=0.0), axis=1)).astype(float)
            est, lo, hi = M.bootstrap_ci(np.mean, correct, n_boot=n_boot, ci=ci, seed=seed)
            rows.append(_row("all", "accuracy", int(one.sum()), est, lo, hi, "image"))
    return pl.DataFrame(
        rows,
        schema=SUMMARY_SCHEMA,
    )
