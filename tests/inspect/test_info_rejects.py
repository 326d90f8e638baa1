"""``gazeprep info`` / ``gazeprep rejects`` on the EGD-CXR sample export, checked against the tables."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from gazeprep.cli import app
from gazeprep.export import load_export
from gazeprep.export.inspect import format_reject_row, reason_kind, rejects_summary
from gazeprep.paths import sample_data_dir
from gazeprep.pipeline.build import BuildOptions, build_heatmaps
from gazeprep.recipes import load_recipe


@pytest.fixture(scope="module")
def egd_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "egd"
    build_heatmaps(
        BuildOptions(
            dataset="egd-cxr",
            root=sample_data_dir() / "egd-cxr",
            out=out,
            recipe=load_recipe("egd-static"),
            workers=1,
            progress=False,
        )
    )
    return out


def test_reason_kind_groups_numbers_and_quotes() -> None:
    assert reason_kind("calibration image: 2 fixation rows dropped") == reason_kind(
        "calibration image: 15 fixation rows dropped"
    )
    assert reason_kind("value 'abc' at -1.5e3") == "value '…' at N"
    # digits inside identifiers stay (they name the kind, e.g. a column)
    assert reason_kind("column x2 missing") == "column x2 missing"


def test_info_json_matches_the_tables(egd_export: Path) -> None:
    res = CliRunner().invoke(app, ["info", str(egd_export), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    ex = load_export(egd_export)
    idx = ex.tables["heatmaps"]
    assert info["recipe"] == "egd-static"
    assert info["dataset"] == "egd-cxr"
    assert info["recipe_hash"] == ex.manifest["recipe_hash"]
    assert info["maps"] == idx.height
    assert sum(info["targets"].values()) == idx.height
    assert info["cases"] == ex.tables["cases"].height
    assert info["cases_with_maps"] == idx["case_id"].n_unique()
    assert info["rejected_cases"] == ex.tables["rejects"]["case_id"].n_unique()
    assert sum(shape[0] for shape in info["arrays"].values()) == idx.height
    on_disk = sum((egd_export / rel).stat().st_size for rel in ex.manifest["files"])
    assert info["bytes_export"] == on_disk
    assert info["versions"]["gazeprep"]


def test_info_text(egd_export: Path) -> None:
    res = CliRunner().invoke(app, ["info", str(egd_export)])
    assert res.exit_code == 0, res.output
    assert "egd-static" in res.stdout and "maps" in res.stdout


def test_rejects_grouped_with_file_and_row(egd_export: Path) -> None:
    rej = load_export(egd_export).tables["rejects"]
    assert rej.height >= 2  # the sample release has calibration pseudo-images
    res = CliRunner().invoke(app, ["rejects", str(egd_export)])
    assert res.exit_code == 0, res.output
    # the calibration rows differ only in counts: one group holding all of them
    calib = rej.filter(pl.col("reason").str.contains("calibration"))
    assert f"{calib.height} rows" in " ".join(res.stdout.split())
    first = calib.row(0, named=True)
    assert f"{first['file']}, row {first['row']}" in res.stdout
    assert "rejects.parquet" in res.stdout


def test_rejects_filters_and_json(egd_export: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["rejects", str(egd_export), "--reason-contains", "CALIBRATION", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    n = load_export(egd_export).tables["rejects"].filter(pl.col("reason").str.contains("calibration")).height
    assert len(payload["rows"]) == n
    assert payload["groups"][0]["n_rows"] == n
    res = runner.invoke(app, ["rejects", str(egd_export), "--stage", "no-such-stage"])
    assert res.exit_code == 0
    assert "no rejects match the filter" in res.stdout
    s = rejects_summary(load_export(egd_export), stage="no-such-stage")
    assert s.rows.height == 0 and s.groups.height == 0


def test_format_reject_row() -> None:
    row = {"case_id": "c1", "stage": "ingest", "file": "fixations.csv", "row": 7, "reason": "NaN in x_position"}
    assert format_reject_row(row) == "c1 [ingest] fixations.csv, row 7: NaN in x_position"
    assert format_reject_row({**row, "file": None, "row": None}) == "c1 [ingest] NaN in x_position"


def test_info_on_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["info", str(tmp_path)])
    assert res.exit_code != 0
