"""Canonical labels: implications, groups, per-dataset source maps and thresholds."""

from __future__ import annotations

import polars as pl

from gazeprep.schema import CASE_LABELS
from gazeprep.text import implied_labels, label_groups, label_ids, map_case_labels

TEN = {
    "abnormal_mediastinal_contour",
    "atelectasis",
    "enlarged_cardiac_silhouette",
    "consolidation",
    "edema",
    "fracture",
    "lung_lesion",
    "opacity",
    "pleural_abnormality",
    "pneumothorax",
}


def test_ten_labels_of_004_and_groups():
    assert TEN <= set(label_ids())
    g = label_groups()
    assert set(g["lanfredi2023"]) == TEN and len(g["lanfredi2023"]) == 10
    assert len(g["reflacx_phase_1"]) == 17 and len(g["reflacx_phase_2_3"]) == 15 and len(g["chexpert"]) == 14


def test_opacity_fires_for_its_members():
    for lab in (
        "edema",
        "lung_lesion",
        "atelectasis",
        "consolidation",
        "groundglass_opacity",
        "interstitial_lung_disease",
        "pneumonia",
        "nodule",
        "mass",
        "fibrosis",
    ):
        assert "opacity" in implied_labels(lab), lab
    assert implied_labels("nodule") == ("nodule", "lung_nodule_or_mass", "lung_lesion", "opacity")
    assert "opacity" not in implied_labels("pneumothorax")


def _rows(rows):
    return pl.DataFrame(
        [dict(zip(["dataset", "case_id", "source", "source_label", "value"], r)) for r in rows],
        schema={k: CASE_LABELS[k] for k in ["dataset", "case_id", "source", "source_label", "value"]},
    )


def _get(df, case, label):
    r = df.filter((pl.col("case_id") == case) & (pl.col("label") == label))
    return (r["status"][0], r["present"][0]) if r.height else ("absent", False)


def test_reflacx_certainty_thresholds():
    df = map_case_labels(
        _rows(
            [
                ("reflacx", "A", "reflacx_metadata", "Atelectasis", 3.0),
                ("reflacx", "A", "reflacx_metadata", "Consolidation", 2.0),
                ("reflacx", "A", "reflacx_metadata", "Pneumothorax", 5.0),
                ("reflacx", "A", "reflacx_metadata", "Pleural effusion", 0.0),
                ("reflacx", "A", "reflacx_metadata", "Pleural thickening", 4.0),
                ("reflacx", "A", "reflacx_metadata", "Lung nodule or mass", 4.0),
                ("reflacx", "A", "reflacx_metadata", "Support devices", 1.0),
                ("reflacx", "A", "reflacx_metadata", "Other", None),
            ]
        )
    )
    assert _get(df, "A", "atelectasis") == ("uncertain", True)  # 3 = "Possibly": present (>= 3)
    assert _get(df, "A", "consolidation") == ("negative", False)
    assert _get(df, "A", "pneumothorax") == ("positive", True)
    assert _get(df, "A", "pleural_effusion") == ("negative", False)
    assert _get(df, "A", "pleural_abnormality") == ("positive", True)  # via pleural thickening
    assert _get(df, "A", "lung_lesion") == ("positive", True)
    assert _get(df, "A", "opacity") == ("positive", True)  # lesion implies opacity; atelectasis only uncertain
    assert _get(df, "A", "support_devices") == ("positive", True)
    stricter = map_case_labels(
        _rows([("reflacx", "A", "reflacx_metadata", "Atelectasis", 3.0)]), reflacx_min_certainty=4
    )
    assert _get(stricter, "A", "atelectasis") == ("negative", False)


def test_chexpert_values():
    rows = _rows(
        [
            ("reflacx", "B", "mimic_chexpert", "Cardiomegaly", -1.0),
            ("reflacx", "B", "mimic_chexpert", "Edema", 0.0),
            ("reflacx", "B", "mimic_chexpert", "Pneumothorax", None),
            ("reflacx", "B", "mimic_chexpert", "Enlarged Cardiomediastinum", 1.0),
        ]
    )
    df = map_case_labels(rows)
    assert _get(df, "B", "enlarged_cardiac_silhouette") == ("uncertain", True)
    assert _get(df, "B", "edema") == ("negative", False)
    assert _get(df, "B", "pneumothorax") == ("absent", False)
    assert _get(df, "B", "abnormal_mediastinal_contour") == ("positive", True)
    strict = map_case_labels(rows, chexpert_uncertain_present=False)
    assert _get(strict, "B", "enlarged_cardiac_silhouette") == ("uncertain", False)


def test_egd_master_columns():
    df = map_case_labels(
        _rows(
            [
                ("egd-cxr", "d", "egd_master", "pulmonary_edema__hazy_opacity", 1.0),
                ("egd-cxr", "d", "egd_master", "pleural_other__chx", -1.0),
                ("egd-cxr", "d", "egd_master", "dx1", 1.0),
            ]
        )
    )
    assert _get(df, "d", "edema") == ("positive", True)
    assert _get(df, "d", "opacity") == ("positive", True)
    assert _get(df, "d", "pleural_abnormality") == ("uncertain", True)
    assert set(df["label"]) == {"edema", "opacity", "pleural_other", "pleural_abnormality"}


def test_value_column():
    df = map_case_labels(
        _rows(
            [
                ("reflacx", "C", "mimic_chexpert", "Edema", 1.0),
                ("reflacx", "C", "mimic_chexpert", "Fracture", 0.0),
                ("reflacx", "C", "mimic_chexpert", "Pneumonia", None),
            ]
        )
    )
    v = {r["label"]: r["value"] for r in df.iter_rows(named=True)}
    assert v["edema"] == 1.0 and v["opacity"] == 1.0 and v["fracture"] == 0.0 and v["pneumonia"] is None
