"""Round trip: what finalize writes, load_export reads back (values, tables, index, manifest)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import zarr
from export_testlib import case_result, recipe, standard_results

import gazeprep
from gazeprep import schema
from gazeprep.errors import GazeprepError
from gazeprep.export import CaseResult, Export, array_name, finalize, load_export


def test_float32_round_trip_is_exact(tmp_path):
    results = standard_results()
    out = finalize(tmp_path / "out", results, recipe=recipe("float32"))
    ex = load_export(out)
    n = 0
    for r in results:
        got = ex.heatmaps_for(r.case_id)
        assert sorted(got) == sorted(r.heatmaps)
        for t, m in r.heatmaps.items():
            assert got[t].dtype == np.float32
            assert got[t].shape == m.shape
            assert np.array_equal(got[t], m)
            n += 1
    assert len(ex) == n == ex.tables["heatmaps"].height


def test_float16_round_trip_equals_the_float16_cast(tmp_path):
    results = standard_results()
    ex = load_export(finalize(tmp_path / "out", results, recipe=recipe("float16")))
    assert ex.dtype == "float16"
    for r in results:
        for t, m in r.heatmaps.items():
            got = ex.heatmap(r.case_id, t)
            assert got.dtype == np.float32
            # exactly the float16 rounding of the input, hence within half a float16 ulp of it
            assert np.array_equal(got, m.astype(np.float16).astype(np.float32))
            assert np.all(np.abs(got - m) <= np.maximum(np.abs(m) * 2.0**-11, 2.0**-25))


def test_dtype_argument_overrides_the_recipe(tmp_path):
    ex = load_export(finalize(tmp_path / "o", standard_results(2), recipe=recipe("float32"), dtype="float16"))
    assert ex.dtype == "float16"
    assert ex.array(ex.index["array"][0]).dtype == np.float16
    with pytest.raises(GazeprepError):
        finalize(tmp_path / "p", [], recipe=recipe(), dtype="float64")


def test_index_points_at_the_right_rows_and_tables_conform(tmp_path):
    results = standard_results()
    out = finalize(tmp_path / "out", results, recipe=recipe())
    ex = load_export(out)
    idx = ex.tables["heatmaps"]
    schema.validate(idx, "heatmaps")
    # sorted by case then target, array named by shape, rows counting up within each array
    keys = list(zip(idx["case_id"], idx["target"]))
    assert keys == sorted(keys)
    g = zarr.open_group(str(out / "heatmaps.zarr"), mode="r")
    by_id = {r.case_id: r for r in results}
    seen: dict[str, list[int]] = {}
    for row in idx.iter_rows(named=True):
        m = by_id[row["case_id"]].heatmaps[row["target"]]
        assert row["array"] == array_name(*m.shape)
        assert (row["height_px"], row["width_px"]) == m.shape
        assert np.array_equal(g[row["array"]][row["row"]], m)  # read with zarr alone
        seen.setdefault(row["array"], []).append(row["row"])
        assert row["recipe"] == "test-recipe"
    for name, rows in seen.items():
        assert rows == list(range(len(rows)))
        assert g[name].shape[0] == len(rows)
    # producer facts survive; the reversed index order given by the producer was sorted
    first = idx.filter(pl.col("case_id") == results[0].case_id)
    assert first["target"].to_list() == ["full", "pneumonia"]
    assert first["n_fixations"].to_list() == [3, 3]
    for name in schema.TABLES:
        schema.validate(ex.tables[name], name)
    assert ex.tables["fixations"].height == 3 * len(results)
    assert ex.tables["fixations"]["case_id"].to_list() == sorted(ex.tables["fixations"]["case_id"].to_list())
    assert ex.tables["rejects"].height == len(results)
    assert ex.tables["gaze_samples"].height == 0


def test_manifest_content(tmp_path):
    results = standard_results(4)
    rec = recipe("float16")
    out = finalize(tmp_path / "out", results, recipe=rec, manifest_extra={"dataset": "reflacx", "note": "x"})
    text = (out / "manifest.json").read_text()
    m = json.loads(text)
    assert m["recipe"] == rec.resolved() and m["recipe_hash"] == rec.hash()
    assert set(m["versions"]) >= {"gazeprep", "numpy", "polars", "pyarrow", "zarr"}
    assert m["counts"]["fixations"] == 12 and m["counts"]["heatmaps"] == m["heatmaps"]["count"] == 6
    assert m["input_checksums"] == {r.case_id: r.input_hash for r in results}
    assert m["extra"] == {"dataset": "reflacx", "note": "x"}
    assert m["heatmaps"]["targets"] == ["full", "pneumonia"]
    assert m["created_by"].startswith("gazeprep ")
    assert str(tmp_path) not in text  # no absolute paths
    ex = load_export(out)
    assert ex.recipe == rec and ex.targets == ["full", "pneumonia"] and ex.kind == "ground_truth"
    ex.verify()


def test_no_absolute_path_or_time_in_any_file(tmp_path):
    out = finalize(tmp_path / "out", standard_results(3), recipe=recipe())
    for p in out.rglob("*"):
        if p.is_file():
            assert str(tmp_path).encode() not in p.read_bytes(), p


def test_missing_keys_give_clear_errors(tmp_path):
    ex = load_export(finalize(tmp_path / "out", standard_results(3), recipe=recipe()))
    cid = ex.case_ids[1]
    with pytest.raises(KeyError, match=r"its targets: \['full'\]"):
        ex.heatmap(cid, "pneumonia")
    with pytest.raises(KeyError, match="has no heatmap"):
        ex.heatmap("nope", "full")
    with pytest.raises(KeyError, match="tables:"):
        ex.tables["no_such_table"]
    assert ex.heatmaps_for("nope") == {}
    assert "cases" in ex.tables and "nope" not in ex.tables and ex.tables.get("nope") is None
    assert "cases" not in ex.tables._cache  # membership tests read no file
    assert (cid, "full") in ex and (cid, "pneumonia") not in ex


def test_all_zero_map_and_case_without_maps(tmp_path):
    zero = CaseResult("Z1", "h", {}, {"full": np.zeros((5, 6), np.float32)}, [])
    empty = CaseResult("Z2", "h", {"cases": pl.DataFrame({"dataset": ["reflacx"], "case_id": ["Z2"]})}, {}, [])
    out = finalize(tmp_path / "o", [zero, empty], recipe=recipe())
    ex = load_export(out)
    assert np.array_equal(ex.heatmap("Z1", "full"), np.zeros((5, 6), np.float32))
    assert ex.tables["cases"]["case_id"].to_list() == ["Z2"]
    assert ex.case_ids == ["Z1"]
    # an all-zero shard is not stored at all (zarr's fill value)
    assert not list((out / "heatmaps.zarr" / "h5_w6").rglob("c/*"))


def test_empty_export_is_loadable(tmp_path):
    ex = load_export(finalize(tmp_path / "o", [], recipe=None))
    assert len(ex) == 0 and ex.targets == [] and ex.recipe is None
    assert ex.tables["heatmaps"].height == 0


def test_validation_names_the_case(tmp_path):
    r = case_result("C1", {"full": (4, 4)}, seed=1)
    bad = CaseResult("C1", "h", r.tables, {"full": np.full((4, 4), np.nan, np.float32)}, [])
    with pytest.raises(GazeprepError, match="'C1'.*NaN"):
        finalize(tmp_path / "a", [bad], recipe=recipe())
    bad = CaseResult("C1", "h", r.tables, {"full": np.ones((4, 4)), "other": np.ones((4, 4))}, [])
    with pytest.raises(GazeprepError, match="index targets"):
        finalize(tmp_path / "b", [bad], recipe=recipe())
    idx = r.tables["heatmaps"].with_columns(pl.lit(5, dtype=pl.Int32).alias("height_px"))
    bad = CaseResult("C1", "h", {"heatmaps": idx}, r.heatmaps, [])
    with pytest.raises(GazeprepError, match="index says 5x"):
        finalize(tmp_path / "c", [bad], recipe=recipe())
    bad = CaseResult("C1", "h", {"fixations": pl.DataFrame({"case_id": ["C2"]})}, {}, [])
    with pytest.raises(GazeprepError, match="other cases"):
        finalize(tmp_path / "d", [bad], recipe=recipe())
    bad = CaseResult("C1", "h", {"fixations": pl.DataFrame({"case_id": ["C1"], "typo": [1]})}, {}, [])
    with pytest.raises(GazeprepError, match="unexpected columns"):
        finalize(tmp_path / "e", [bad], recipe=recipe())
    with pytest.raises(GazeprepError, match="given twice"):
        finalize(tmp_path / "f", [r, r], recipe=recipe())
    with pytest.raises(GazeprepError, match="2-D"):
        finalize(tmp_path / "g", [CaseResult("C1", "h", {}, {"full": np.ones(4)}, [])], recipe=recipe())


def test_extra_tables_and_rejects_merge_sorted(tmp_path):
    results = standard_results(2)
    extra_cases = pl.DataFrame({"dataset": ["reflacx"], "case_id": ["A000"], "discarded": [True]})
    rej = [
        {"dataset": "reflacx", "case_id": None, "stage": "ingest", "file": "metadata.csv", "row": 9, "reason": "bad"}
    ]
    ex = load_export(
        finalize(tmp_path / "o", results, recipe=recipe(), extra_tables={"cases": extra_cases}, extra_rejects=rej)
    )
    assert ex.tables["cases"]["case_id"].to_list() == ["A000"] + sorted(r.case_id for r in results)
    rj = ex.tables["rejects"]
    assert rj.height == 3 and rj["case_id"][0] is None and rj["file"][0] == "metadata.csv"


def test_package_level_load_export_and_pickling(tmp_path):
    import pickle

    out = finalize(tmp_path / "o", standard_results(2), recipe=recipe())
    ex = gazeprep.load_export(out)
    assert isinstance(ex, Export)
    assert isinstance(gazeprep.load_export(out / "manifest.json"), Export)
    cid = ex.case_ids[0]
    a = ex.heatmap(cid, "full")
    ex2 = pickle.loads(pickle.dumps(ex))  # DataLoader workers get a copy that reopens lazily
    assert np.array_equal(ex2.heatmap(cid, "full"), a)


def test_float16_with_sum_normalisation_warns(tmp_path):
    rec = recipe("float16").model_copy(update={"render": recipe().render.model_copy(update={"normalize": "sum"})})
    with pytest.warns(UserWarning, match="float16"):
        finalize(tmp_path / "o", standard_results(1), recipe=rec)
