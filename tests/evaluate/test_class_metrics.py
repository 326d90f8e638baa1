"""Image-level AUC / accuracy from class-score tables, against answers counted by hand."""

import math

import numpy as np
import polars as pl
import pytest

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import evaluator as E
from gazeprep.evaluate.classification import classification_summary, read_class_scores


def _table(labels: dict[str, tuple[list, list]]) -> pl.DataFrame:
    """{label: (truth per case, score per case)} -> a class_scores table over cases c0, c1, ..."""
    rows = []
    for lab, (truth, score) in labels.items():
        for i, (t, s) in enumerate(zip(truth, score)):
            rows.append((f"c{i}", lab, float(s), None if t is None else float(t)))
    return pl.DataFrame(
        rows, schema={"case_id": pl.Utf8, "label": pl.Utf8, "score": pl.Float64, "truth": pl.Float64}, orient="row"
    )


def _get(summary, group, metric):
    r = summary.filter((pl.col("group") == group) & (pl.col("metric") == metric))
    assert r.height == 1, (group, metric, summary)
    return r.row(0, named=True)


def test_auc_known_answers():
    t = _table(
        {
            "perfect": ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]),
            "reversed": ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]),
            "tied": ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]),
        }
    )
    s = classification_summary(t, n_boot=20)
    assert _get(s, "perfect", "auc")["mean"] == 1.0
    assert _get(s, "reversed", "auc")["mean"] == 0.0
    assert _get(s, "tied", "auc")["mean"] == 0.5
    assert _get(s, "mean over labels", "auc")["mean"] == pytest.approx(0.5)  # (1 + 0 + 0.5) / 3


def test_auc_counted_by_hand():
    # positives score 0.9 and 0.4, negatives 0.5, 0.3, 0.1: of the 2 x 3 = 6 (pos, neg) pairs the
    # positive wins 3 (0.9) + 2 (0.4 > 0.3, 0.1) = 5 -> 5/6
    t = _table(
        {
            "a": ([1, 1, 0, 0, 0], [0.9, 0.4, 0.5, 0.3, 0.1]),
            # a tie counts one half: positive 0.5 vs negatives 0.5 (tie) and 0.2 (win) -> 1.5 / 2
            "b": ([1, 0, 0, None, None], [0.5, 0.5, 0.2, 0.9, 0.0]),
        }
    )
    s = classification_summary(t, n_boot=20)
    a, b = _get(s, "a", "auc"), _get(s, "b", "auc")
    assert a["mean"] == pytest.approx(5 / 6) and a["n"] == 5
    assert b["mean"] == pytest.approx(0.75) and b["n"] == 3  # unknown truth left out
    assert _get(s, "mean over labels", "auc")["mean"] == pytest.approx((5 / 6 + 0.75) / 2)


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = (rng.random(80) < 0.4).astype(int)
    score = np.clip(0.3 * y + rng.normal(0.4, 0.2, 80), 0, 1)
    t = _table({"x": (y.tolist(), score.tolist()), "z": ((1 - y).tolist(), (1 - score).tolist())})
    s1 = classification_summary(t, n_boot=300, seed=4)
    s2 = classification_summary(t, n_boot=300, seed=4)
    assert s1.equals(s2)
    for group in ("x", "z", "mean over labels"):
        r = _get(s1, group, "auc")
        assert r["ci_low"] <= r["mean"] <= r["ci_high"] and r["ci_high"] - r["ci_low"] > 0.01
    assert not classification_summary(t, n_boot=300, seed=5).equals(s1)


def test_one_class_label_is_nan_not_an_error():
    s = classification_summary(_table({"a": ([1, 1, 1], [0.2, 0.4, 0.6])}), n_boot=10)
    assert math.isnan(_get(s, "a", "auc")["mean"])


def test_accuracy_for_one_class_per_case():
    # 4 cases, 3 classes; argmax of the scores is right for cases 0, 1, 3 -> 3/4
    t = _table(
        {
            "normal": ([1, 0, 0, 0], [0.7, 0.1, 0.2, 0.3]),
            "chf": ([0, 1, 0, 1], [0.2, 0.8, 0.7, 0.6]),
            "pneumonia": ([0, 0, 1, 0], [0.1, 0.1, 0.1, 0.1]),
        }
    )
    s = classification_summary(t, n_boot=50)
    acc = _get(s, "all", "accuracy")
    assert acc["mean"] == 0.75 and acc["n"] == 4 and acc["ci_low"] <= 0.75 <= acc["ci_high"]


def test_no_accuracy_for_multi_label_truth():
    t = _table({"a": ([1, 1, 0], [0.7, 0.1, 0.2]), "b": ([1, 0, 1], [0.2, 0.8, 0.7])})  # case 0 has two
    s = classification_summary(t, n_boot=10)
    assert "accuracy" not in s["metric"].to_list()


def test_bad_tables_are_one_line_errors():
    t = _table({"a": ([1, 0], [0.5, 0.2])})
    with pytest.raises(GazeprepError, match="has 2 rows"):
        classification_summary(pl.concat([t, t.head(1)]), n_boot=5)
    with pytest.raises(GazeprepError, match="not a finite number"):
        classification_summary(t.with_columns(pl.Series("score", [float("nan"), 0.2])), n_boot=5)

    class Ex:
        tables = {"class_scores": t.drop("truth")}

    with pytest.raises(GazeprepError, match="lacks column"):
        read_class_scores(Ex())


def test_evaluator_reports_auc_beside_the_map_metrics():
    maps = {(f"c{i}", "full"): np.eye(16) * (i + 1) for i in range(4)}
    gt = E.InMemoryExport(dict(maps))
    t = _table({"normal": ([1, 0, 1, 0], [0.9, 0.2, 0.8, 0.1]), "chf": ([0, 1, 0, 1], [0.1, 0.8, 0.2, 0.9])})
    pred = E.InMemoryExport(dict(maps), tables={"class_scores": t})
    res = E.evaluate_exports(pred, gt, metrics=["cc", "auc", "accuracy"], n_boot=20)
    assert _get(res.summary, "full", "cc")["mean"] == pytest.approx(1.0)
    assert _get(res.summary, "normal", "auc")["mean"] == 1.0 and _get(res.summary, "all", "accuracy")["mean"] == 1.0
    text = E.format_summary(res.summary)
    assert "auc↑" in text and "accuracy↑" in text and "cc↑" in text
    # default metrics include the AUC when the prediction has class scores; only AUC skips the maps
    assert "auc" in E.evaluate_exports(pred, gt, metrics=None, n_boot=5).summary["metric"].to_list()
    only = E.evaluate_exports(pred, gt, metrics=["auc"], n_boot=5)
    assert set(only.summary["metric"]) == {"auc"} and only.pairs.height == 0
    with pytest.raises(GazeprepError, match="classifier scores"):
        E.evaluate_exports(gt, gt, metrics=["auc"])  # no class scores: a one-line refusal
