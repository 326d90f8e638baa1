"""Splits: the export's split column when present; otherwise a seeded, subject-disjoint split
stratified by class, saved with its case ids in the run folder."""

import numpy as np
import polars as pl
import pytest
import yaml

from gazeprep.errors import GazeprepError
from gazeprep.train.data import export_split, stratified_subject_split


def _cases(subjects, case_ids=None):
    ids = case_ids or [f"c{i:03d}" for i in range(len(subjects))]
    return pl.DataFrame({"case_id": ids, "subject_id": subjects}, schema={"case_id": pl.Utf8, "subject_id": pl.Int64})


def _subject_of(cases):
    return dict(zip(cases["case_id"].to_list(), cases["subject_id"].to_list()))


def test_one_stratum_of_ten_subjects_is_cut_7_1_2():
    """Ten subjects, fractions 0.7/0.1/0.2: every split gets exactly fraction x 10 subjects."""
    cases = _cases(list(range(10)))
    s = stratified_subject_split(cases, None, (0.7, 0.1, 0.2), seed=3)
    assert [len(s[n]) for n in ("train", "validate", "test")] == [7, 1, 2]
    assert sorted(sum(s.values(), [])) == sorted(cases["case_id"].to_list())


def test_each_stratum_keeps_the_fractions():
    """Two classes of 10 subjects each (one case per subject): 7/1/2 of each class."""
    cases = _cases(list(range(20)))
    strata = {c: ("a" if i < 10 else "b") for i, c in enumerate(cases["case_id"].to_list())}
    for seed in range(5):
        s = stratified_subject_split(cases, strata, (0.7, 0.1, 0.2), seed=seed)
        for cls in "ab":
            counts = [sum(strata[c] == cls for c in s[n]) for n in ("train", "validate", "test")]
            assert counts == [7, 1, 2], (seed, cls, counts)


def test_subjects_never_straddle_splits_and_counts_stay_within_one():
    rng = np.random.default_rng(0)
    subjects = rng.integers(0, 40, size=120).tolist()  # 1-8 cases per subject
    cases = _cases(subjects)
    strata = {c: str(int(rng.integers(0, 3))) for c in cases["case_id"].to_list()}
    subj = _subject_of(cases)
    for seed in range(4):
        s = stratified_subject_split(cases, strata, (0.7, 0.1, 0.2), seed=seed)
        seen = {}
        for name, ids in s.items():
            for c in ids:
                assert seen.setdefault(subj[c], name) == name  # one split per subject
        n_subj = len(set(subjects))
        for name, f in zip(("train", "validate", "test"), (0.7, 0.1, 0.2)):
            k = len({subj[c] for c in s[name]})
            assert abs(k - f * n_subj) < len(set(strata.values())) + 1  # within one per stratum


def test_seeded_and_reproducible():
    cases = _cases([i // 2 for i in range(40)])
    a = stratified_subject_split(cases, None, seed=1)
    assert a == stratified_subject_split(cases, None, seed=1)
    assert a != stratified_subject_split(cases, None, seed=2)


def test_few_subjects_still_fill_every_split():
    cases = _cases([0, 0, 1, 2])
    s = stratified_subject_split(cases, None, (0.7, 0.1, 0.2), seed=0)
    assert all(s[n] for n in ("train", "validate", "test"))
    assert set(s["train"]) in ({"c000", "c001"}, {"c002"}, {"c003"})


def test_unknown_subject_is_its_own_subject():
    cases = pl.DataFrame(
        {"case_id": ["a", "b", "c", "d"], "subject_id": [None, None, 7, 7]},
        schema={"case_id": pl.Utf8, "subject_id": pl.Int64},
    )
    s = stratified_subject_split(cases, None, (0.5, 0.0, 0.5), seed=0)
    where = {c: n for n, ids in s.items() for c in ids}
    assert where["c"] == where["d"] and not s["validate"]


def test_export_split_column():
    cases = pl.DataFrame({"case_id": ["a", "b", "c", "d"], "split": ["train", "validate", "test", "val"]})
    assert export_split(cases) == {"train": ["a"], "validate": ["b", "d"], "test": ["c"]}
    assert export_split(cases.with_columns(pl.lit(None, pl.Utf8).alias("split"))) is None
    with pytest.raises(GazeprepError, match="1 of 4 cases have no value"):
        export_split(cases.with_columns(pl.Series("split", ["train", None, "test", "test"])))
    with pytest.raises(GazeprepError, match="'holdout' is not one of"):
        export_split(cases.with_columns(pl.Series("split", ["train", "holdout", "test", "test"])))


def _train(ex, run, **data):
    from gazeprep.train.run import train_run

    cfg = {
        "preset": "tiny",
        "data": {"size": 32, "labels": ["disc", "ring", "bar"], **data},
        "train": {"batch_size": 4},
    }
    return train_run("karargyris-unet", ex, run, cfg, device="cpu", epochs=1, progress=False)


def test_run_uses_the_export_split_and_saves_ids(tmp_path):
    from gazeprep.train.synthetic import make_synthetic_export

    ex = make_synthetic_export(12)
    split = ["train"] * 8 + ["validate"] * 2 + ["test"] * 2
    ex.tables["cases"] = ex.tables["cases"].with_columns(pl.Series("split", split))
    _train(ex, tmp_path / "run")
    saved = pl.read_parquet(tmp_path / "run" / "splits.parquet")
    assert saved.columns == ["case_id", "subject_id", "split"]
    assert dict(zip(saved["case_id"], saved["split"])) == dict(zip(ex.tables["cases"]["case_id"], split))
    info = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert info["splits"]["source"] == "export"
    assert info["splits"]["counts"] == {"train": 8, "validate": 2, "test": 2}


def test_run_falls_back_to_a_subject_split(tmp_path):
    from gazeprep.train.synthetic import make_synthetic_export

    ex = make_synthetic_export(20)  # no split values; two cases per subject
    _train(ex, tmp_path / "run", split_seed=5)
    saved = pl.read_parquet(tmp_path / "run" / "splits.parquet")
    assert saved.height == 20 and set(saved["split"]) == {"train", "validate", "test"}
    per_subject = saved.group_by("subject_id").agg(pl.col("split").n_unique())
    assert per_subject["split"].max() == 1  # subject-disjoint
    info = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert info["splits"]["source"] == "subject" and info["splits"]["seed"] == 5
    assert info["splits"]["fractions"] == [0.7, 0.1, 0.2]
    # the same seed gives the same split; data.split: export insists on the column
    _train(ex, tmp_path / "again", split_seed=5)
    assert pl.read_parquet(tmp_path / "again" / "splits.parquet").equals(saved)
    with pytest.raises(GazeprepError, match="no split column values"):
        _train(ex, tmp_path / "r3", split="export")
