"""Datasets declared in one YAML file (gazeprep.datasets.declared): two small collections generated
here, one with fixations in image pixels (per-case files, milliseconds, word timings, image sizes in a
CSV), one in normalised screen units (one shared file, durations, image sizes from PNG headers), built
into heatmaps with the checks, rejects, resume and export of the built-in datasets.

Maps are checked against DESIGN.md's rendering formula written out here (separable 1-D sums for the
sum normalisation), positions against the screen mapping worked by hand.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from gazeprep.cli import run
from gazeprep.datasets import registry as dsreg
from gazeprep.datasets.declared import load_definition
from gazeprep.errors import GazeprepError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "lab-gaze" / "dataset.yaml"
SIGMA = 32.0  # pipelines/generic-fixation-duration.yaml


@pytest.fixture(autouse=True)
def _forget_declared():
    """Each test starts without the declared datasets of the others (names are reused)."""
    yield
    for name, adapter in dsreg.DATASETS.items():
        if getattr(adapter, "definition_path", None) is not None:
            dsreg.DATASETS.unregister(name)


# ---------------------------------------------------------------------------------- collections
PIXELS_DEF = {
    "schema_version": 1,
    "name": "study-px",
    "description": "fixations in image pixels",
    "cases": {
        "file": "cases.csv",
        "columns": {"case_id": "reading", "image_id": "image", "reader": "radiologist"},
        "labels": ["effusion"],
    },
    "images": {"sizes": {"file": "sizes.csv", "columns": {"image_id": "image", "width_px": "w", "height_px": "h"}}},
    "fixations": {
        "file": "fix/{case_id}.csv",
        "columns": {"t_start": "onset_ms", "t_end": "offset_ms", "x": "fx", "y": "fy"},
        "time_unit": "ms",
        "position_unit": "px",
        "pixels_per_degree": 40.0,
    },
    "words": {
        "file": "words/{case_id}.csv",
        "columns": {"word": "token", "t_start": "on_ms", "t_end": "off_ms"},
        "time_unit": "ms",
        "style": "tokens",
    },
}


def write_pixels(root: Path) -> Path:
    """study-px: p1 and p2 read; p3 names an image without a size row (skipped at open)."""
    (root / "fix").mkdir(parents=True)
    (root / "words").mkdir()
    (root / "cases.csv").write_text(
        "reading,image,radiologist,effusion\np1,img1,R1,1\np2,img2,R2,0\np3,img-missing,R1,\n"
    )
    (root / "sizes.csv").write_text("image,w,h\nimg1,200,160\nimg2,120,100\n")
    (root / "fix" / "p1.csv").write_text("onset_ms,offset_ms,fx,fy\n0,250,100.0,80.0\n300,800,120.5,70.0\n")
    # data row 2 is malformed (fy is not a number)
    (root / "fix" / "p2.csv").write_text(
        "onset_ms,offset_ms,fx,fy\n0,400,60.0,50.0\n450,900,61.0,abc\n950,1150,58.0,52.0\n"
    )
    (root / "words" / "p1.csv").write_text(
        "token,on_ms,off_ms\nsmall,100,300\nright,310,500\npleural,510,800\neffusion,810,1200\n.,1200,1210\n"
    )
    (root / "words" / "p2.csv").write_text("token,on_ms,off_ms\nno,100,300\nfindings,310,700\n.,700,710\n")
    d = root / "study-px.yaml"
    d.write_text(yaml.safe_dump(PIXELS_DEF, sort_keys=False))
    return d


SCREEN_DEF = {
    "schema_version": 1,
    "name": "study-screen",
    "cases": {"file": "cases.csv", "columns": {"case_id": "trial", "image_path": "file"}},
    "images": {"folder": "images"},
    "screen": {"width_px": 1000, "height_px": 800, "width_cm": 50.0, "distance_cm": 57.0, "image_area": "fit"},
    "fixations": {
        "file": "gaze.csv",
        "columns": {"case_id": "trial", "t_start": "t", "duration": "dur", "x": "u", "y": "v"},
        "position_unit": "screen",
        "other_columns": ["eye"],
    },
}


def write_screen(root: Path) -> Path:
    """study-screen: images s1 (500 x 300) and s2 (300 x 300) as PNGs; one gaze file for every trial."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    Image.new("L", (500, 300)).save(root / "images" / "s1.png")
    Image.new("L", (300, 300)).save(root / "images" / "s2.png")
    (root / "cases.csv").write_text("trial,file\ns1,s1.png\ns2,s2.png\n")
    (root / "gaze.csv").write_text(
        "trial,t,dur,u,v,eye\n"
        "s1,0.0,0.2,0.5,0.5,R\n"  # row 1: screen centre
        "s1,0.3,0.1,0.25,0.5,R\n"  # row 2
        "s9,0.0,0.1,0.5,0.5,R\n"  # row 3: a trial that is not in cases.csv
        "s2,0.0,0.3,0.5,0.375,R\n"  # row 4
        "s2,0.4,0.2,0.6,nan,R\n"  # row 5: NaN position
    )
    d = root / "study-screen.yaml"
    d.write_text(yaml.safe_dump(SCREEN_DEF, sort_keys=False))
    return d


def expected_sum_normalised(r: int, c: int, fixations: list[tuple[float, float, float]], h: int, w: int) -> float:
    """The generic recipe's map at (r, c): sum_i w_i N_i(r, c) divided by the sum over the h x w grid of the
    same (mass beyond the border dropped); the grid sum of each Gaussian is a product of 1-D sums."""
    cols, rows = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    num = den = 0.0
    for x, y, wt in fixations:
        gx = np.exp(-((cols - x) ** 2) / (2 * SIGMA**2))
        gy = np.exp(-((rows - y) ** 2) / (2 * SIGMA**2))
        num += wt * gx[c] * gy[r]
        den += wt * gx.sum() * gy.sum()
    return num / den


# ---------------------------------------------------------------------------------- builds
def test_pixel_collection_builds_with_rejects_text_and_resume(tmp_path, capsys):
    from gazeprep.export import load_export

    defn = write_pixels(tmp_path / "px")
    out = tmp_path / "out"
    argv = [
        "build-heatmaps",
        "--dataset",
        str(defn),
        "--root",
        str(tmp_path / "px"),
        "--out",
        str(out),
        "--workers",
        "1",
        "--quiet",
    ]
    assert run(argv) == 0
    assert "2 heatmaps" in capsys.readouterr().out

    ex = load_export(out)
    assert ex.recipe.name == "generic-fixation-duration"  # the definition's default recipe
    extra = ex.manifest["extra"]
    assert extra["dataset"] == "study-px" and extra["dataset_definition"]["file"] == "study-px.yaml"
    assert ex.tables["cases"]["case_id"].to_list() == ["p1", "p2"]
    m = ex.heatmap("p1", "full")
    assert m.shape == (160, 200)
    fx = [(100.0, 80.0, 0.25), (120.5, 70.0, 0.5)]  # durations from milliseconds
    for r, c in ((80, 100), (75, 110), (5, 190)):
        assert m[r, c] == pytest.approx(expected_sum_normalised(r, c, fx, 160, 200), rel=1e-5)
    assert m.sum() == pytest.approx(1.0, rel=1e-5)
    m2 = ex.heatmap("p2", "full")  # the malformed row left out
    assert m2[50, 60] == pytest.approx(
        expected_sum_normalised(50, 60, [(60.0, 50.0, 0.4), (58.0, 52.0, 0.2)], 100, 120), rel=1e-5
    )

    fix = ex.tables["fixations"].filter(pl.col("case_id") == "p1")
    assert fix["t_start_s"].to_list() == pytest.approx([0.0, 0.3]) and fix["t_end_s"].to_list() == pytest.approx(
        [0.25, 0.8]
    )
    assert fix["px_per_deg_x"].to_list() == [40.0, 40.0] and fix["dataset"].to_list() == ["study-px"] * 2

    rej = ex.tables["rejects"]
    row = rej.filter((pl.col("case_id") == "p2") & (pl.col("stage") == "ingest")).row(0, named=True)
    assert (row["file"], row["row"]) == ("fix/p2.csv", 2)
    assert row["reason"] == "column 'fy': not a number: 'abc'; row dropped"
    miss = rej.filter(pl.col("case_id") == "p3").row(0, named=True)
    assert (miss["file"], miss["row"]) == ("cases.csv", 3)
    assert miss["reason"] == "image 'img-missing' has no row in sizes.csv; case skipped"

    # words in tokens style: report text, sentences and the labeler's mentions
    assert ex.tables["reports"].filter(pl.col("case_id") == "p1")["text"].to_list() == ["small right pleural effusion."]
    assert "pleural_effusion" in ex.tables["mentions"].filter(pl.col("case_id") == "p1")["label"].to_list()
    labels = ex.tables["case_labels"]
    assert labels.filter(pl.col("case_id") == "p1")["value"].to_list() == [1.0]

    # resume: a rerun reuses both parts and writes byte-identical maps
    shard = sorted((out / "heatmaps.zarr").rglob("*"))
    before = {p: p.read_bytes() for p in shard if p.is_file()}
    assert before
    assert run(argv) == 0
    assert "(2 cases reused from a previous run)" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in sorted((out / "heatmaps.zarr").rglob("*")) if p.is_file()} == before
    # an edited definition that changes the data (seconds instead of ms) recomputes every case
    (tmp_path / "px" / "study-px.yaml").write_text(defn.read_text().replace("time_unit: ms", "time_unit: s", 1))
    assert run(argv) == 0
    assert "(0 cases reused" in capsys.readouterr().out


def test_screen_collection_maps_positions_and_builds_on_workers(tmp_path):
    from gazeprep.export import load_export
    from gazeprep.pipeline.build import BuildOptions, build_heatmaps
    from gazeprep.recipes import load_recipe

    defn = write_screen(tmp_path / "scr")
    adapter = dsreg.declare(defn)
    rel = adapter.open(tmp_path / "scr")
    assert rel.cases.select("case_id", "image_width_px", "image_height_px").rows() == [
        ("s1", 500, 300),
        ("s2", 300, 300),
    ]
    fix = rel.read_case("s1").tables["fixations"]
    # s1 is 500 x 300 on a 1000 x 800 screen, 'fit': scale min(1000/500, 800/300) = 2, area 1000 x 600 at
    # left 0, top 100; (u, v) = (0.5, 0.5) -> screen (500, 400) -> image ((500 - 0) * 500/1000, (400 - 100) * 300/600)
    assert fix["x_px"].to_list() == pytest.approx([250.0, 125.0]) and fix["y_px"].to_list() == pytest.approx(
        [150.0, 150.0]
    )
    assert fix["t_end_s"].to_list() == pytest.approx([0.2, 0.4])
    # one degree at 57 cm spans 2 * 57 * tan(0.5 deg) cm; 20 screen px per cm; 0.5 image px per screen px
    ppd = 2 * 57.0 * math.tan(math.radians(0.5)) * 20.0 * 0.5
    assert fix["px_per_deg_x"].to_list() == pytest.approx([ppd, ppd]) and fix[
        "px_per_deg_y"
    ].to_list() == pytest.approx([ppd, ppd])
    # s2 (300 x 300): scale 800/300, area 800 x 800 at left 100, top 0; (0.5, 0.375) -> (500, 300) -> (150, 112.5)
    fix2 = rel.read_case("s2")
    assert fix2.tables["fixations"]["x_px"].to_list() == pytest.approx([150.0])
    assert fix2.tables["fixations"]["y_px"].to_list() == pytest.approx([112.5])
    # images_root (--images) replaces <root>/images as the folder the image headers are read from
    from PIL import Image

    alt = tmp_path / "alt"
    alt.mkdir()
    Image.new("L", (50, 40)).save(alt / "s1.png")
    Image.new("L", (30, 30)).save(alt / "s2.png")
    assert adapter.open(tmp_path / "scr", images_root=alt).cases["image_width_px"].to_list() == [50, 30]
    shared = {(r["file"], r["row"]): r["reason"] for r in rel.rejects}
    assert shared[("gaze.csv", 3)] == "case id 's9' is not in cases.csv; row dropped"
    assert shared[("gaze.csv", 5)] == "column 'v': value is NaN; row dropped"

    recipe = load_recipe("generic-fixation-duration")
    opts = BuildOptions(
        dataset="study-screen",
        root=tmp_path / "scr",
        out=tmp_path / "out",
        recipe=recipe,
        workers=2,
        progress=False,
        definition=defn,
    )  # spawned workers reload the definition
    s = build_heatmaps(opts)
    assert (s.n_cases, s.n_heatmaps, s.n_reused) == (2, 2, 0)
    ex = load_export(s.out)
    m = ex.heatmap("s1", "full")
    assert m[150, 250] == pytest.approx(
        expected_sum_normalised(150, 250, [(250.0, 150.0, 0.2), (125.0, 150.0, 0.1)], 300, 500), rel=1e-5
    )
    assert {(r["file"], r["row"]) for r in ex.tables["rejects"].iter_rows(named=True)} >= {
        ("gaze.csv", 3),
        ("gaze.csv", 5),
    }
    s2 = build_heatmaps(BuildOptions(**{**opts.__dict__, "workers": 1}))
    assert s2.n_reused == 2


def test_shipped_example_builds_from_its_folder(tmp_path, capsys):
    from gazeprep.export import load_export

    out = tmp_path / "out"
    assert run(["build-heatmaps", "--dataset", str(EXAMPLE), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    ex = load_export(out)
    assert ex.manifest["extra"]["dataset"] == "lab-gaze" and ex.index.height == 2
    assert ex.tables["rejects"].filter(pl.col("stage") == "ingest").height == 0
    fix = ex.tables["fixations"].filter(pl.col("case_id") == "r01")
    # 1920 x 1080 screen of 52.7 x 29.6 cm at 70 cm; the 640 x 512 image fitted: 1350 x 1080 screen px
    cm = 2 * 70 * math.tan(math.radians(0.5))
    assert fix["px_per_deg_x"][0] == pytest.approx(cm * 1920 / 52.7 * 640 / 1350)
    assert fix["px_per_deg_y"][0] == pytest.approx(cm * 1080 / 29.6 * 512 / 1080)


# ---------------------------------------------------------------------------------- definitions
def _write(tmp_path: Path, d: dict) -> Path:
    p = tmp_path / "def.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def _set(path: str, value):
    def mutate(d: dict) -> None:
        *parents, last = path.split(".")
        node = d
        for k in parents:
            node = node[k]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_set("colour", "blue"), "colour: Extra inputs are not permitted"),
        (_set("fixations.columns.pupil", "p"), "fixations.columns.pupil: Extra inputs are not permitted"),
        (_set("fixations.file", "../elsewhere/{case_id}.csv"), "must be a relative path inside the root folder"),
        (_set("fixations.file", "/abs/{case_id}.csv"), "must be a relative path inside the root folder"),
        (_set("fixations.file", "fix/{subject}.csv"), "only the placeholder {case_id} is allowed"),
        (_set("cases.file", "cases_{case_id}.csv"), "only no placeholder is allowed"),
        (_set("fixations.position_unit", "screen"), "position_unit 'screen' needs a screen section"),
        (_set("fixations.columns.duration", "dur"), "give exactly one of t_end and duration"),
        (_set("fixations.columns.y", "fx"), "fields x and y both name the column 'fx'"),
        (_set("fixations.file", "fix.csv"), "give columns.case_id"),
        (
            _set("images", _DELETE),
            "image sizes: give cases.columns image_width_px/image_height_px, or an images section",
        ),
        (_set("name", "Study PX"), "name: String should match pattern"),
        (_set("name", "declared"), "'declared' is reserved"),
        (_set("fixations.time_unit", "minutes"), "fixations.time_unit"),
        (_set("fixations.pixels_per_degree", -3), "fixations.pixels_per_degree"),
        (_set("screen", {"width_px": 100, "height_px": 100, "width_cm": 30}), "give width_cm and distance_cm together"),
    ],
)
def test_invalid_definitions_are_one_line_errors_naming_the_file(tmp_path, mutate, expected):
    d = copy.deepcopy(PIXELS_DEF)
    mutate(d)
    p = _write(tmp_path, d)
    with pytest.raises(GazeprepError) as e:
        load_definition(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and expected in msg and "\n" not in msg


def test_unreadable_definition_files(tmp_path):
    with pytest.raises(GazeprepError, match="dataset definition not found"):
        load_definition(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(GazeprepError, match=r"bad.yaml: not valid YAML"):
        load_definition(bad)
    bad.write_text("- a list\n")
    with pytest.raises(GazeprepError, match="must be a mapping"):
        load_definition(bad)
    bad.write_text("!!python/object/apply:os.system ['true']\n")  # safe_load refuses python tags
    with pytest.raises(GazeprepError, match="not valid YAML"):
        load_definition(bad)


def test_cli_errors_for_definitions(tmp_path, capsys):
    assert run(["build-heatmaps", "--dataset", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "dataset definition file" in capsys.readouterr().err
    d = copy.deepcopy(PIXELS_DEF)
    d["fixations"]["time_unit"] = "minutes"
    p = _write(tmp_path, d)
    assert run(["build-heatmaps", "--dataset", str(p), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {p}: fixations.time_unit")


def test_a_name_declared_by_two_files_or_a_builtin_is_refused(tmp_path):
    a = write_pixels(tmp_path / "a")
    b = write_pixels(tmp_path / "b")
    dsreg.declare(a)
    dsreg.declare(a)  # the same file again: reloaded
    with pytest.raises(GazeprepError, match=f"dataset 'study-px' is already registered \\(by {a}\\)"):
        dsreg.declare(b)
    d = copy.deepcopy(PIXELS_DEF)
    d["name"] = "reflacx"
    with pytest.raises(GazeprepError, match="dataset 'reflacx' is already registered"):
        dsreg.declare(_write(tmp_path, d))


def test_recipes_name_declared_datasets(tmp_path):
    from gazeprep.datasets.registry import recipe_fits
    from gazeprep.recipes import Recipe, load_recipe

    raw = yaml.safe_load((REPO / "pipelines" / "generic-fixation-duration.yaml").read_text())
    own = tmp_path / "px-duration.yaml"
    own.write_text(yaml.safe_dump({**raw, "name": "px-duration", "dataset": "study-px"}))
    with pytest.raises(GazeprepError, match="unknown dataset 'study-px'.*known once its file is loaded"):
        load_recipe(own)
    dsreg.declare(write_pixels(tmp_path / "px"))
    assert load_recipe(own).dataset == "study-px"  # known once declared
    assert recipe_fits("declared", "study-px") and recipe_fits("study-px", "study-px")
    assert not recipe_fits("declared", "reflacx") and not recipe_fits("reflacx", "study-px")
    stored = load_recipe(own).resolved()
    dsreg.DATASETS.unregister("study-px")
    assert Recipe.from_stored(stored).dataset == "study-px"  # an export's recipe stays readable


def test_paths_stay_inside_the_root(tmp_path):
    root = tmp_path / "px"
    defn = write_pixels(root)
    outside = tmp_path / "outside.csv"
    outside.write_text("onset_ms,offset_ms,fx,fy\n0,100,10,10\n")
    os.remove(root / "fix" / "p1.csv")
    os.symlink(outside, root / "fix" / "p1.csv")
    rel = dsreg.declare(defn).open(root)
    data = rel.read_case("p1")
    assert data.tables["fixations"].height == 0
    assert [r["case_id"] for r in data.rejects] == ["p1"] and "leaves its folder" in data.rejects[0]["reason"]
    assert data.rejects[0]["reason"].endswith("case skipped")
    assert rel.read_case("p2").tables["fixations"].height == 2


def test_ids_that_cannot_be_file_names_and_duplicates_are_rejects(tmp_path):
    root = tmp_path / "px"
    defn = write_pixels(root)
    (root / "cases.csv").write_text("reading,image,radiologist,effusion\np1,img1,R1,1\n../p2,img2,R2,0\np1,img2,R2,0\n")
    rel = dsreg.declare(defn).open(root)
    assert rel.case_ids() == ["p1"]
    by_row = {r["row"]: r["reason"] for r in rel.rejects}
    assert "cannot be a case id" in by_row[2] and by_row[3] == "duplicate case id 'p1' (first at row 1); case skipped"


def test_ingest_reads_a_definition(tmp_path, capsys):
    defn = write_screen(tmp_path / "scr")
    out = tmp_path / "tables"
    assert run(["ingest", "--dataset", str(defn), "--out", str(out), "--quiet"]) == 0  # --root: the definition's folder
    assert "cases 2, case_labels 0, fixations 3, rejects 2" in capsys.readouterr().out
    fix = pl.read_parquet(out / "fixations.parquet")
    assert fix["dataset"].unique().to_list() == ["study-screen"] and fix.height == 3
    rejects = pl.read_parquet(out / "rejects.parquet")
    assert sorted(rejects["row"].to_list()) == [3, 5] and set(rejects["file"]) == {"gaze.csv"}
