"""Prediction exports: same layout, tied to their ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from export_testlib import recipe, standard_results

from gazeprep.errors import GazeprepError
from gazeprep.export import finalize, load_export, write_prediction_export


def test_prediction_export_round_trip_and_links_to_source(tmp_path):
    results = standard_results(4)
    gt_dir = finalize(tmp_path / "gt", results, recipe=recipe("float16"))
    gt = load_export(gt_dir)
    rng = np.random.default_rng(0)
    preds = {(c, t): rng.random(gt.heatmap(c, t).shape).astype(np.float32) for c, t in gt.keys()[:-1]}
    out = write_prediction_export(tmp_path / "pred", preds, model="tiny-unet@epoch3", source_export=gt_dir)
    pe = load_export(out)
    assert pe.kind == "prediction" and pe.dtype == "float32"
    assert pe.recipe == gt.recipe
    for (c, t), m in preds.items():
        assert np.array_equal(pe.heatmap(c, t), m)
    assert set(pe.keys()) == set(preds)
    info = pe.manifest["extra"]["prediction"]
    assert info["model"] == "tiny-unet@epoch3"
    assert info["source_export"]["recipe_hash"] == gt.manifest["recipe_hash"]
    assert sorted(pe.tables["cases"]["case_id"].to_list()) == sorted({c for c, _ in preds})
    assert pe.index["recipe"].unique().to_list() == [gt.recipe.name]
    # reproducible
    again = write_prediction_export(
        tmp_path / "pred2", dict(reversed(list(preds.items()))), model="tiny-unet@epoch3", source_export=gt
    )
    for p in (out / "heatmaps.zarr").rglob("*"):
        if p.is_file():
            assert p.read_bytes() == (again / p.relative_to(out)).read_bytes()
    assert (out / "manifest.json").read_bytes() == (again / "manifest.json").read_bytes()


def test_prediction_export_without_source_and_guards(tmp_path):
    out = write_prediction_export(tmp_path / "p", {("A", "full"): np.ones((3, 4))}, model="m", dtype="float16")
    pe = load_export(out)
    assert pe.recipe is None and pe.manifest["extra"]["prediction"]["source_export"] is None
    assert np.array_equal(pe.heatmap("A", "full"), np.ones((3, 4), np.float32))
    with pytest.raises(GazeprepError, match="cannot overwrite its source"):
        write_prediction_export(out, {("A", "full"): np.ones((3, 4))}, model="m", source_export=out)
    with pytest.raises(GazeprepError, match="pairs"):
        write_prediction_export(tmp_path / "q", {"A": np.ones((3, 4))}, model="m")
