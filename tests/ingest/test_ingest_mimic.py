"""MIMIC-CXR-JPG tables (.csv or .csv.gz), label mapping onto cases, the label-only adapter."""

from __future__ import annotations

import polars as pl
import pytest
from ingest_fixtures import CHEXPERT_HEADER, write_mimic

from gazeprep import schema
from gazeprep.datasets import get_adapter
from gazeprep.datasets.mimic import labels_for_cases, read_chexpert, read_metadata, read_negbio, read_split
from gazeprep.errors import InputFormatError

IMAGES = [
    ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", 10000032, 50414267, 3056, 2544),
    ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", 10000032, 53189527, 2544, 3056),
]


@pytest.mark.parametrize("gz", [True, False])
def test_tables_csv_and_gz(tmp_path, gz):
    write_mimic(tmp_path, IMAGES, gz=gz)
    chex = read_chexpert(tmp_path)
    assert chex.columns[:2] == ["subject_id", "study_id"] and chex.height == 2
    first = chex.row(0, named=True)
    assert (first["Atelectasis"], first["Edema"], first["Cardiomegaly"]) == (1.0, -1.0, None)
    assert read_negbio(tmp_path).row(0, named=True)["No Finding"] == 0.0
    meta = read_metadata(tmp_path)
    assert meta["Rows"].to_list() == [3056, 2544] and meta["Columns"].dtype == pl.Int64
    assert meta["StudyTime"][0] == 213014.531
    assert read_split(tmp_path)["split"].to_list() == ["validate", "validate"]


def test_bad_label_value_dropped_with_row(tmp_path):
    write_mimic(tmp_path, IMAGES, gz=False)
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        CHEXPERT_HEADER + "\n10000032,50414267,2.0,,,,,,,,,,,,,\n10000032,53189527,1.0,,,,,,,,,,,,,\n"
    )
    rej: list[dict] = []
    chex = read_chexpert(tmp_path, rej)
    assert chex["study_id"].to_list() == [53189527]
    assert rej[0]["row"] == 1 and "column 'Atelectasis': out of range [-1, 1]: '2.0'" in rej[0]["reason"]


def test_bad_split_value(tmp_path):
    write_mimic(tmp_path, IMAGES, gz=False)
    p = tmp_path / "mimic-cxr-2.0.0-split.csv"
    p.write_text(p.read_text().replace("validate", "val", 1))
    rej: list[dict] = []
    assert read_split(tmp_path, rej).height == 1
    assert "'val' is not one of ['train', 'validate', 'test']" in rej[0]["reason"]


def test_missing_table(tmp_path):
    with pytest.raises(InputFormatError, match=r"mimic-cxr-2.0.0-chexpert.csv\[.gz\]: file not found"):
        read_chexpert(tmp_path)


def test_labels_for_cases_by_study(tmp_path):
    write_mimic(tmp_path, IMAGES)
    cases = pl.DataFrame(
        {
            "dataset": ["x", "x", "x"],
            "case_id": ["a", "b", "c"],
            "subject_id": [10000032, 10000032, 1],
            "study_id": [50414267, 50414267, 2],
        }
    )
    lab = labels_for_cases(tmp_path, "x", cases, [])
    schema.validate(lab, "case_labels")
    assert set(lab["case_id"]) == {"a", "b"}  # c's study is not in MIMIC
    a = {
        (r["source"], r["source_label"]): r["value"] for r in lab.filter(pl.col("case_id") == "a").iter_rows(named=True)
    }
    assert a[("mimic_chexpert", "Atelectasis")] == 1.0 and a[("mimic_chexpert", "Edema")] == -1.0
    assert a[("mimic_negbio", "No Finding")] == 0.0 and a[("mimic_chexpert", "Fracture")] is None
    assert len(a) == 28


def test_mimic_adapter(tmp_path):
    write_mimic(tmp_path, IMAGES)
    rel = get_adapter("mimic-cxr").open(tmp_path)
    schema.validate(rel.cases, "cases")
    c = rel.cases.row(1, named=True)
    assert c["image_path"] == f"files/p10/p10000032/s53189527/{IMAGES[1][0]}.jpg"
    assert (c["image_height_px"], c["image_width_px"], c["split"]) == (2544, 3056, "validate")
    assert rel.case_labels.filter(pl.col("case_id") == IMAGES[0][0]).height == 28
    assert rel.read_case(IMAGES[0][0]).tables == {}
