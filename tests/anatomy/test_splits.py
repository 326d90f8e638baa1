"""C/L/R/M settings of paper 000: balance, subject-disjoint 70/15/15 splits, questions, derivation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from gazeprep.anatomy.splits import (
    CLASSIFICATION_QUESTIONS,
    assign_subjects,
    balance_classes,
    build_setting_splits,
    reflacx_setting_samples,
    split_summary,
)
from gazeprep.errors import GazeprepError


def _samples(n_subjects=500, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    prevalence = {"C": 0.35, "L": 0.6, "R": 0.5}
    for s in range(n_subjects):
        for k in range(int(rng.integers(1, 5))):
            case = f"P{s:04d}R{k}"
            for setting in ("C", "L", "R"):
                if rng.random() < 0.5:
                    rows.append(
                        {
                            "case_id": case,
                            "subject_id": str(10000000 + s),
                            "setting": setting,
                            "positive": bool(rng.random() < prevalence[setting]),
                        }
                    )
    return pl.DataFrame(rows)


def test_questions_of_section_4_3():
    assert CLASSIFICATION_QUESTIONS["C"] == "Is there cardiomegaly?"
    assert "left lung" in CLASSIFICATION_QUESTIONS["L"] and "excluding Cardiomegaly" in CLASSIFICATION_QUESTIONS["L"]
    assert "right lung" in CLASSIFICATION_QUESTIONS["R"]
    assert CLASSIFICATION_QUESTIONS["M"] == "Is there a finding in the masked image?"


def test_balance_is_exactly_one_to_one_per_setting():
    df = pl.DataFrame(
        {
            "case_id": list("abcdefgh"),
            "subject_id": list("abcdefgh"),
            "setting": ["C"] * 8,
            "positive": [True, True, True, False, False, False, False, False],
        }
    )
    out = balance_classes(df, seed=1)
    assert out.height == 6 and out["positive"].sum() == 3
    assert set(out.filter(pl.col("positive"))["case_id"]) == {"a", "b", "c"}  # minority kept whole
    only_pos = df.filter(pl.col("positive"))
    assert balance_classes(only_pos).height == 0


def test_assign_subjects_hand_case():
    df = pl.DataFrame(
        {"case_id": ["a", "b"], "subject_id": ["1", "2"], "setting": ["C", "C"], "positive": [True, True]}
    )
    got = assign_subjects(df, (0.5, 0.5, 0.0))
    assert sorted(got.values()) == ["train", "val"]
    with pytest.raises(GazeprepError):
        assign_subjects(df, (0.5, 0.6, 0.0))


def test_splits_are_balanced_subject_disjoint_and_70_15_15():
    samples = _samples()
    out = build_setting_splits(samples, seed=0)
    # every subject in exactly one split, over all settings (M included)
    per_subject = out.group_by("subject_id").agg(pl.col("split").n_unique().alias("k"))
    assert per_subject["k"].max() == 1
    for setting in ("C", "L", "R", "M"):
        sub = out.filter(pl.col("setting") == setting)
        assert sub.height > 0
        assert sub["positive"].sum() * 2 == sub.height  # 1:1 overall
        shares = {s: sub.filter(pl.col("split") == s).height / sub.height for s in ("train", "val", "test")}
        assert shares["train"] == pytest.approx(0.70, abs=0.02), (setting, shares)
        assert shares["val"] == pytest.approx(0.15, abs=0.02), (setting, shares)
        assert shares["test"] == pytest.approx(0.15, abs=0.02), (setting, shares)
        for s in ("train", "val", "test"):  # balance holds inside each split too
            part = sub.filter(pl.col("split") == s)
            assert part["positive"].mean() == pytest.approx(0.5, abs=0.06), (setting, s)
    # M is exactly the union of C, L, R
    m = out.filter(pl.col("setting") == "M").select("case_id", "target", "positive", "split").sort("case_id", "target")
    clr = (
        out.filter(pl.col("setting") != "M").select("case_id", "target", "positive", "split").sort("case_id", "target")
    )
    assert m.equals(clr)
    assert set(out.filter(pl.col("setting") == "C")["target"]) == {"heart"}
    assert out.filter(pl.col("setting") == "L")["question"][0] == CLASSIFICATION_QUESTIONS["L"]
    # deterministic under the seed, different under another
    assert build_setting_splits(samples, seed=0).equals(out)
    assert not build_setting_splits(samples, seed=1).equals(out)
    summ = split_summary(out)
    assert set(summ["setting"]) == {"C", "L", "R", "M"}


def test_unknown_setting_or_missing_column_is_an_error():
    with pytest.raises(GazeprepError, match="setting"):
        build_setting_splits(
            pl.DataFrame({"case_id": ["a"], "subject_id": ["1"], "setting": ["M"], "positive": [True]})
        )
    with pytest.raises(GazeprepError, match="missing"):
        build_setting_splits(pl.DataFrame({"case_id": ["a"]}))


def test_reflacx_setting_samples_from_tables():
    windows = pl.DataFrame(
        {"case_id": ["r1", "r1", "r2", "r3"], "target": ["heart", "left_lung", "right_lung", "heart"]}
    )
    cases = pl.DataFrame(
        {
            "case_id": ["r1", "r2", "r3"],
            "subject_id": [1, 2, 3],
            "image_id": ["i1", "i2", "i3"],
            "image_height_px": [100, 100, 100],
            "image_width_px": [200, 200, 200],
        }
    )
    labels = pl.DataFrame(
        {"case_id": ["r1", "r3"], "source_label": ["Enlarged cardiac silhouette"] * 2, "value": [3.0, 0.0]}
    )
    ell = pl.DataFrame(
        {
            "case_id": ["r1", "r2", "r2"],
            "xmin_px": [150.0, 10.0, 150.0],
            "ymin_px": [10.0, 10.0, 10.0],
            "xmax_px": [170.0, 30.0, 170.0],
            "ymax_px": [30.0, 30.0, 30.0],
            "certainty": [4, 5, 5],
            "source_label": ["Atelectasis", "Support devices", "Consolidation"],
        }
    )
    got = reflacx_setting_samples(windows, cases, labels, ell).sort("case_id", "setting")
    assert got.rows() == [
        ("r1", "1", "C", True),
        ("r1", "1", "L", True),
        ("r2", "2", "R", False),
        ("r3", "3", "C", False),
    ]

    # with masks: the right lung covers the whole image -> r2's consolidation (centre x=160) counts
    def masks(image_id, shape):
        return {"left_lung": np.zeros(shape, bool), "right_lung": np.ones(shape, bool)}

    got = reflacx_setting_samples(windows, cases, labels, ell, lung_masks=masks).sort("case_id", "setting")
    assert got.filter(pl.col("case_id") == "r2")["positive"].to_list() == [True]
    assert got.filter((pl.col("case_id") == "r1") & (pl.col("setting") == "L"))["positive"].to_list() == [False]
