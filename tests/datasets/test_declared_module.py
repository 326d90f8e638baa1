"""A third dataset added as one adapter module: registered by importing it, then built like a
built-in dataset (same checks, rejects with file and 1-based row, resume, export).

The module below is written to a file and imported, as a user's plugin would be; the build runs
in-process (``workers=1``) because spawned workers would not import a module that only this test knows.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from gazeprep.datasets import registry as dsreg
from gazeprep.errors import GazeprepError, RecipeError

TOY_MODULE = '''
"""Toy gaze dataset: <root>/cases.csv (case_id, width, height) and <root>/fix/<case_id>.csv
(t0, t1 in seconds, x, y in image pixels)."""

from pathlib import Path

import numpy as np
import polars as pl

from gazeprep import schema
from gazeprep.datasets import register_dataset
from gazeprep.datasets.base import CASE_SKIPPED, ROW_DROPPED, CaseData, DatasetAdapter, Release, build_table
from gazeprep.datasets.csvio import Col, read_checked_csv
from gazeprep.errors import InputFormatError
from gazeprep.paths import safe_component

NAME = "toy-module"


class ToyRelease(Release):
    dataset = NAME
    tables = ("fixations",)

    def __init__(self, root: Path):
        super().__init__(root)
        path = self.root / "cases.csv"
        t = read_checked_csv(path, {"case_id": Col("str"), "width": Col("int", lo=1), "height": Col("int", lo=1)})
        self.rejects += [self.reject(None, path, b.row, f"{b.reason}; {CASE_SKIPPED}") for b in t.bad]
        d = t.df
        self.cases = schema.conform(
            d.select(
                pl.lit(NAME).alias("dataset"), pl.col("case_id"), pl.col("case_id").alias("image_id"),
                pl.col("width").cast(pl.Int64).alias("image_width_px"),
                pl.col("height").cast(pl.Int64).alias("image_height_px"), pl.lit(False).alias("discarded"),
            ),
            "cases",
        )

    def _read_case(self, case_id: str) -> CaseData:
        path = self.root / "fix" / f"{safe_component(case_id)}.csv"
        t = read_checked_csv(path, {"t0": Col(), "t1": Col(), "x": Col(), "y": Col()})
        rejects = [self.reject(case_id, path, b.row, f"{b.reason}; {ROW_DROPPED}") for b in t.bad]
        d, n = t.df, t.df.height
        if n == 0:
            raise InputFormatError(path, "no valid fixation rows")
        fix = build_table("fixations", n, {
            "dataset": NAME, "case_id": case_id, "fixation_idx": np.arange(n, dtype=np.int32),
            "t_start_s": d["t0"], "t_end_s": d["t1"], "x_px": d["x"], "y_px": d["y"], "source_row": d["source_row"],
        })
        return CaseData(case_id, {"fixations": fix}, rejects)


@register_dataset
class ToyAdapter(DatasetAdapter):
    name = NAME
    description = "a toy gaze dataset"

    def open(self, root, *, gaze_samples=False, images_root=None, **kwargs):
        return ToyRelease(self.check_root(root))
'''

SIGMA = 12.0
RECIPE = {
    "schema_version": 1,
    "name": "toy-duration",
    "dataset": "toy-module",
    "window": {"kind": "whole_recording"},
    "render": {"sigma": {"value": SIGMA, "unit": "px"}, "weight": "duration", "normalize": "none", "aggregate": "sum"},
    "output": {"size": "native"},
}


@pytest.fixture
def toy(tmp_path):
    """Import the toy adapter module (registering it); unregister it afterwards."""
    mod_path = tmp_path / "toy_gaze_adapter.py"
    mod_path.write_text(TOY_MODULE)
    spec = importlib.util.spec_from_file_location("toy_gaze_adapter", mod_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_gaze_adapter"] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        sys.modules.pop("toy_gaze_adapter", None)
        if "toy-module" in dsreg.DATASETS:
            dsreg.DATASETS.unregister("toy-module")


def _release(root: Path) -> Path:
    (root / "fix").mkdir(parents=True)
    (root / "cases.csv").write_text("case_id,width,height\nc1,160,120\nc2,100,80\n")
    # c1: two fixations, durations 0.25 s and 0.5 s
    (root / "fix" / "c1.csv").write_text("t0,t1,x,y\n0.0,0.25,70.0,60.0\n0.3,0.8,95.5,52.0\n")
    # c2: data row 2 is malformed (x is not a number): a reject naming the file and row 2
    (root / "fix" / "c2.csv").write_text("t0,t1,x,y\n0.0,0.4,50.0,40.0\n0.5,0.9,oops,41.0\n1.0,1.2,52.0,38.0\n")
    return root


def _recipe(tmp_path: Path, **changes) -> Path:
    d = {**RECIPE, **changes}
    p = tmp_path / "recipes" / f"{d['name']}.yaml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(yaml.safe_dump(d))
    return p


def _density(r: int, c: int, fixations: list[tuple[float, float, float]], sigma: float) -> float:
    """DESIGN.md's rendering contract written out: sum_i w_i / (2 pi s^2) exp(-((c-x)^2 + (r-y)^2) / (2 s^2))."""
    return sum(
        w / (2 * math.pi * sigma**2) * math.exp(-((c - x) ** 2 + (r - y) ** 2) / (2 * sigma**2))
        for x, y, w in fixations
    )


def test_adding_a_dataset_is_one_module(toy, tmp_path):
    from gazeprep.export import load_export
    from gazeprep.pipeline.build import BuildOptions, build_heatmaps
    from gazeprep.recipes import load_recipe

    assert "toy-module" in dsreg.list_datasets()
    root = _release(tmp_path / "toy")
    recipe = load_recipe(_recipe(tmp_path))  # validated against the registry: the module registered the name
    opts = BuildOptions(dataset="toy-module", root=root, out=tmp_path / "out", recipe=recipe, workers=1, progress=False)
    s = build_heatmaps(opts)
    assert (s.n_cases, s.n_heatmaps, s.n_reused) == (2, 2, 0)

    ex = load_export(s.out)
    m1 = ex.heatmap("c1", "full")
    assert m1.shape == (120, 160)
    fx1 = [(70.0, 60.0, 0.25), (95.5, 52.0, 0.5)]
    for r, c in ((60, 70), (55, 82), (10, 150)):  # a peak, a pixel between both, a far corner
        assert m1[r, c] == pytest.approx(_density(r, c, fx1, SIGMA), rel=1e-5, abs=1e-12)
    # c2: the malformed row is dropped; the other two rows make the map
    m2 = ex.heatmap("c2", "full")
    assert m2[40, 50] == pytest.approx(_density(40, 50, [(50.0, 40.0, 0.4), (52.0, 38.0, 0.2)], SIGMA), rel=1e-5)

    rejects = ex.tables["rejects"]
    # (a dataset without transcripts also gets the build's 'empty transcript: map built without text' rows)
    bad = rejects.filter((pl.col("case_id") == "c2") & (pl.col("stage") == "ingest"))
    assert bad.height == 1 and rejects.filter(pl.col("stage") == "ingest").height == 1
    row = bad.row(0, named=True)
    assert (row["dataset"], row["stage"], row["file"], row["row"]) == ("toy-module", "ingest", "fix/c2.csv", 2)
    assert "column 'x': not a number: 'oops'" in row["reason"] and row["reason"].endswith("row dropped")

    # a rerun reuses every case's part and writes the same maps
    s2 = build_heatmaps(opts)
    assert s2.n_reused == 2
    assert np.array_equal(load_export(s2.out).heatmap("c1", "full"), m1)
    # an edited fixation file recomputes that case only
    (root / "fix" / "c1.csv").write_text("t0,t1,x,y\n0.0,0.25,70.0,60.0\n")
    s3 = build_heatmaps(opts)
    assert s3.n_reused == 1
    m1b = load_export(s3.out).heatmap("c1", "full")
    assert m1b[60, 70] == pytest.approx(_density(60, 70, fx1[:1], SIGMA), rel=1e-5)


def test_a_recipe_for_an_unregistered_dataset_is_refused(tmp_path):
    p = _recipe(tmp_path, name="toy-nowhere", dataset="toy-nowhere")
    with pytest.raises(RecipeError) as e:
        from gazeprep.recipes import load_recipe

        load_recipe(p)
    msg = str(e.value)
    assert (
        str(p) in msg and "unknown dataset 'toy-nowhere'; known datasets: declared, egd-cxr" in msg and "\n" not in msg
    )


def test_a_recipe_of_another_dataset_is_refused_at_build(toy, tmp_path):
    from gazeprep.pipeline.build import BuildOptions, build_heatmaps
    from gazeprep.recipes import load_recipe

    root = _release(tmp_path / "toy")
    for name in ("reflacx-official", "generic-fixation-duration"):  # 'declared' fits declared datasets only
        opts = BuildOptions(
            dataset="toy-module", root=root, out=tmp_path / name, recipe=load_recipe(name), workers=1, progress=False
        )
        with pytest.raises(GazeprepError, match=f"recipe '{name}' is for dataset '.*', not 'toy-module'"):
            build_heatmaps(opts)
