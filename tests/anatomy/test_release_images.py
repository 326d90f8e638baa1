"""The anatomy stage lists images and finds release masks through the dataset adapters (no torch)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from gazeprep import schema
from gazeprep.anatomy.data import list_images, release_mask_paths
from gazeprep.datasets.base import DatasetAdapter, ImageRecord, Release
from gazeprep.errors import GazeprepError, InputFormatError

PREFIX = "physionet.org/files/mimic-cxr/2.0.0/"


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _reflacx_row(rid: str, did: str, subject: int, image: str | None = None) -> dict:
    rel = f"files/p{str(subject)[:2]}/p{subject}/s5{subject}/{did}.dcm"
    return {"id": rid, "image": image if image is not None else PREFIX + rel, "dicom_id": did, "subject_id": subject}


def test_reflacx_images_are_distinct_in_phase_and_row_order_with_bad_rows_rejected(tmp_path):
    main = tmp_path / "main_data"
    _write_csv(
        main / "metadata_phase_1.csv",
        [
            _reflacx_row("P102R000001", "b", 11000001),
            _reflacx_row("P102R000002", "a", 11000002),
            _reflacx_row("P102R000003", "b", 11000001),  # image b read twice: listed once, first row
            _reflacx_row("P102R000004", "c", 11000003, image="not/a/mimic/path.png"),
        ],
    )
    _write_csv(
        main / "metadata_phase_3.csv",
        [
            _reflacx_row("P300R000001", "a", 11000002),
            _reflacx_row("P300R000002", "d", 11000004),
            {**_reflacx_row("P300R000003", "e", 11000005), "dicom_id": "x"},  # id does not match the path
        ],
    )
    got = list_images("reflacx", tmp_path)
    assert got.images == [
        ImageRecord("b", PREFIX + "files/p11/p11000001/s511000001/b.dcm", "11000001", "main_data/metadata_phase_1.csv", 1),
        ImageRecord("a", PREFIX + "files/p11/p11000002/s511000002/a.dcm", "11000002", "main_data/metadata_phase_1.csv", 2),
        ImageRecord("d", PREFIX + "files/p11/p11000004/s511000004/d.dcm", "11000004", "main_data/metadata_phase_3.csv", 2),
    ]  # fmt: skip
    rej = schema.rejects_frame(got.rejects)
    assert rej.select("file", "row").rows() == [
        ("main_data/metadata_phase_1.csv", 4),
        ("main_data/metadata_phase_3.csv", 3),
    ]
    assert rej["stage"].unique().to_list() == ["ingest"] and rej["reason"].str.ends_with("row dropped").all()


def test_reflacx_images_file_problems_are_one_error_naming_the_file(tmp_path):
    (tmp_path / "main_data").mkdir()
    with pytest.raises(InputFormatError, match="metadata_phase"):
        list_images("reflacx", tmp_path)
    _write_csv(tmp_path / "main_data" / "metadata_phase_1.csv", [{**_reflacx_row("P1", "a", 11000001), "note": "x"}])
    with pytest.raises(InputFormatError, match="note"):  # a column outside the documented format
        list_images("reflacx", tmp_path)


def test_egd_images_from_master_sheet_and_mask_files_in_either_spelling(tmp_path):
    rows = [
        {"dicom_id": "d1", "path": "files/p10/p10000001/s1/d1.dcm", "study_id": 1, "patient_id": 10000001},
        {"dicom_id": "d2", "path": "files/p10/p10000001/s2/d2.dcm", "study_id": 2, "patient_id": 10000001},
        {"dicom_id": "d1", "path": "files/p10/p10000001/s1/d1.dcm", "study_id": 1, "patient_id": 10000001},
        {"dicom_id": "../x", "path": "files/p10/p10000002/s3/x.dcm", "study_id": 3, "patient_id": 10000002},
        {"dicom_id": "d5", "path": "files/p10/p10000002/s4/d5.dcm", "study_id": 4, "patient_id": "many"},
    ]
    _write_csv(tmp_path / "master_sheet.csv", rows)
    got = list_images("egd-cxr", tmp_path)
    assert [(r.image_id, r.subject_id, r.source_file, r.source_row) for r in got.images] == [
        ("d1", "10000001", "master_sheet.csv", 1),
        ("d2", "10000001", "master_sheet.csv", 2),
    ]
    assert sorted(r["row"] for r in got.rejects) == [3, 4, 5]
    assert any("duplicate dicom_id 'd1'" in r["reason"] for r in got.rejects)

    folder = tmp_path / "audio_segmentation_transcripts" / "d1"
    folder.mkdir(parents=True)
    for name in ("left_lung.png", "mediastanum.png", "mediastinum.png"):
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(folder / name)
    found = release_mask_paths("egd-cxr", tmp_path, "d1")
    assert found == {"left_lung": folder / "left_lung.png", "mediastinum": folder / "mediastanum.png"}
    assert release_mask_paths("egd-cxr", tmp_path, "d2") == {}


class _ToyRelease(Release):
    dataset = "toy-anatomy"


class _ToyAdapter(DatasetAdapter):
    """A dataset without its own listing: the default lists the opened release's cases."""

    name = "toy-anatomy"

    def __init__(self, paths: list[str | None]):
        self.paths = paths

    def open(self, root, *, gaze_samples=False, images_root=None, **kwargs):
        rel = _ToyRelease(root)
        n = len(self.paths)
        rel.cases = schema.conform(
            pl.DataFrame(
                {
                    "dataset": ["toy-anatomy"] * n,
                    "case_id": [f"c{i}" for i in range(n)],
                    "image_id": ["i0", "i1", "i0"][:n],
                    "subject_id": [7, None, 7][:n],
                    "image_path": self.paths,
                },
                schema={k: schema.CASES[k] for k in ("dataset", "case_id", "image_id", "subject_id", "image_path")},
            ),
            "cases",
        )
        return rel


def test_default_listing_comes_from_the_opened_release_and_masks_are_refused(tmp_path):
    adapter = _ToyAdapter(["files/a.dcm", "files/b.dcm", "files/a.dcm"])
    got = adapter.images(tmp_path)
    assert got.images == [ImageRecord("i0", "files/a.dcm", "7"), ImageRecord("i1", "files/b.dcm", None)]
    with pytest.raises(GazeprepError, match="no case .* names an image file"):
        _ToyAdapter([None, None]).images(tmp_path)
    with pytest.raises(GazeprepError, match="'toy-anatomy' ships no anatomy masks"):
        adapter.mask_files(tmp_path, "i0")


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(GazeprepError, match="reflacx"):
        list_images("no-such-dataset", tmp_path)
