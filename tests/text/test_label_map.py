"""One label map (rules/labels.yaml) and one label normaliser (gazeprep.text.labels)."""

from __future__ import annotations

import shutil

import pytest

from gazeprep.errors import RecipeError
from gazeprep.evaluate.evaluator import ellipse_labels_to_targets
from gazeprep.paths import default_rules_dir
from gazeprep.text.labels import canonical_label, label_spellings, normalise_label, source_label_closure

# Paper 004's labels (ricbl src/list_labels.py) and its translate_et_to_label, written out from
# REFERENCE_CODE section 1a: the known answer the rules must reproduce for 004's label names.
LABELS_004 = [
    "Edema",
    "Opacity",
    "Pneumothorax",
    "Pleural abnormality",
    "Lung Lesion",
    "Atelectasis",
    "Consolidation",
    "Fracture",
    "Cardiomegaly",
    "Abnormal Mediastinum Contour",
]
TRANSLATE_ET_TO_LABEL = {
    "Pulmonary edema": ["Edema", "Opacity"],
    "Lung nodule or mass": ["Lung Lesion", "Opacity"],
    "Nodule": ["Lung Lesion", "Opacity"],
    "Mass": ["Lung Lesion", "Opacity"],
    "Atelectasis": ["Atelectasis", "Opacity"],
    "Consolidation": ["Consolidation", "Opacity"],
    "Groundglass opacity": ["Opacity"],
    "Interstitial lung disease": ["Opacity"],
    "Fibrosis": ["Opacity"],
    "Pleural effusion": ["Pleural abnormality"],
    "Pleural thickening": ["Pleural abnormality"],
    "Pleural abnormality": ["Pleural abnormality"],
    "Acute fracture": ["Fracture"],
    "Fracture": ["Fracture"],
    "Enlarged cardiac silhouette": ["Cardiomegaly"],
    "Wide mediastinum": ["Abnormal Mediastinum Contour"],
    "Abnormal mediastinal contour": ["Abnormal Mediastinum Contour"],
    "Pneumothorax": ["Pneumothorax"],
}


def test_normalise_label():
    for s in ("Pleural Effusion", "pleural-effusion", " pleural__effusion ", "PLEURAL effusion!"):
        assert normalise_label(s) == "pleural_effusion"
    assert normalise_label("High lung volume / emphysema") == "high_lung_volume_emphysema"


def test_canonical_label_by_id_name_and_alias():
    assert canonical_label("Cardiomegaly") == "enlarged_cardiac_silhouette"  # 004's name, an alias
    assert canonical_label("Abnormal Mediastinum Contour") == "abnormal_mediastinal_contour"
    assert canonical_label("Lung Lesion") == "lung_lesion"  # the id, loosely
    assert canonical_label("High lung volume / emphysema") == "emphysema"  # the display name
    assert canonical_label("Other") is None
    assert label_spellings("enlarged_cardiac_silhouette") == (
        "enlarged_cardiac_silhouette",
        "Enlarged cardiac silhouette",
        "Cardiomegaly",
    )


def test_source_label_closure_follows_implications():
    c = source_label_closure("reflacx_metadata")
    assert c["pleural effusion"] == ("pleural_effusion", "pleural_abnormality")
    assert c["nodule"] == ("nodule", "lung_nodule_or_mass", "lung_lesion", "opacity")
    assert source_label_closure("no such source") == {}


def test_ellipse_labels_map_to_004_labels_as_translate_et_to_label():
    got = ellipse_labels_to_targets(list(TRANSLATE_ET_TO_LABEL), LABELS_004)
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in TRANSLATE_ET_TO_LABEL.items()}
    assert ellipse_labels_to_targets(["Other", "Quality issue"], LABELS_004) == {"Other": [], "Quality issue": []}


def test_ellipse_labels_map_to_canonical_ids():
    got = ellipse_labels_to_targets(
        ["Pleural effusion", "Enlarged cardiac silhouette"],
        ["pleural_effusion", "pleural_abnormality", "enlarged_cardiac_silhouette", "edema"],
    )
    assert got == {
        "Pleural effusion": ["pleural_effusion", "pleural_abnormality"],
        "Enlarged cardiac silhouette": ["enlarged_cardiac_silhouette"],
    }


def _rules_copy(tmp_path, old: str, new: str):
    d = tmp_path / "rules"
    d.mkdir()
    text = (default_rules_dir() / "labels.yaml").read_text(encoding="utf-8")
    assert old in text
    (d / "labels.yaml").write_text(text.replace(old, new), encoding="utf-8")
    return d


def test_an_alias_naming_two_labels_is_refused(tmp_path):
    d = _rules_copy(tmp_path, "aliases: [Cardiomegaly]", "aliases: [Cardiomegaly, Lung-lesion]")
    with pytest.raises(
        RecipeError,
        match=r"labels\.yaml: the name 'Lung-lesion' of label 'enlarged_cardiac_silhouette' also names label 'lung_lesion'",
    ):
        canonical_label("Cardiomegaly", rules_dir=d)


def test_aliases_must_be_a_list_of_names(tmp_path):
    d = _rules_copy(tmp_path, "aliases: [Cardiomegaly]", "aliases: Cardiomegaly")
    with pytest.raises(RecipeError, match=r"labels\.enlarged_cardiac_silhouette\.aliases must be a list of names"):
        canonical_label("Cardiomegaly", rules_dir=d)


def test_the_rules_folder_variable_is_followed(tmp_path, monkeypatch):
    d = _rules_copy(tmp_path, "aliases: [Cardiomegaly]", "aliases: [Cardiomegaly, Big heart]")
    shutil.copytree(default_rules_dir(), tmp_path / "full")
    shutil.copy(d / "labels.yaml", tmp_path / "full" / "labels.yaml")
    monkeypatch.setenv("GAZEPREP_RULES_DIR", str(tmp_path / "full"))
    assert ellipse_labels_to_targets(["Enlarged cardiac silhouette"], ["big_heart"]) == {
        "Enlarged cardiac silhouette": ["big_heart"]
    }
