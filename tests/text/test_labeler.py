"""Labeler behaviour on hand-written dictation (development cases; the held-out set is separate)."""

from __future__ import annotations

import pytest

from gazeprep.text import Labeler, report_status


@pytest.fixture(scope="module")
def lab():
    return Labeler.from_rules()


def status(lab, text):
    return report_status(lab.label_text(text))


CASES = [
    # (text, {label: expected status}) ; labels not listed are not checked unless in `absent`
    ("no pneumothorax.", {"pneumothorax": "negative"}),
    ("there is no pneumothorax", {"pneumothorax": "negative"}),
    ("right pleural effusion without effusion on the left.", {"pleural_effusion": "positive"}),
    ("without effusion.", {"pleural_effusion": "negative", "pleural_abnormality": "negative"}),
    ("the left pneumothorax has resolved.", {"pneumothorax": "negative"}),
    ("cannot exclude early pneumonia.", {"pneumonia": "uncertain", "opacity": "uncertain"}),
    ("possible small left apical pneumothorax.", {"pneumothorax": "uncertain"}),
    ("this may represent developing consolidation.", {"consolidation": "uncertain"}),
    ("likely atelectasis in the lingula.", {"atelectasis": "uncertain"}),
    ("heart size is normal.", {"enlarged_cardiac_silhouette": "negative"}),
    ("the heart is not enlarged.", {"enlarged_cardiac_silhouette": "negative"}),
    ("the heart is mildly enlarged.", {"enlarged_cardiac_silhouette": "positive"}),
    ("moderate bilateral effusions.", {"pleural_effusion": "positive", "pleural_abnormality": "positive"}),
    ("bibasilar atelectasis.", {"atelectasis": "positive", "opacity": "positive"}),
    (
        "no effusion, consolidation or pneumothorax.",
        {"pleural_effusion": "negative", "consolidation": "negative", "pneumothorax": "negative"},
    ),
    (
        "no focal consolidation, pleural effusion, or pneumothorax.",
        {"pleural_effusion": "negative", "consolidation": "negative", "pneumothorax": "negative"},
    ),
    ("diffuse ground-glass opacification.", {"groundglass_opacity": "positive", "opacity": "positive"}),
    ("diffuse ground glass opacification.", {"groundglass_opacity": "positive"}),
    ("diffuse groundglass opacification.", {"groundglass_opacity": "positive"}),
    ("pnuemothorax on the right.", {"pneumothorax": "positive"}),
    ("large left effussion.", {"pleural_effusion": "positive"}),
    ("mild cardiomegally.", {"enlarged_cardiac_silhouette": "positive"}),
    ("pulmonary edema.", {"edema": "positive", "opacity": "positive"}),
    ("left upper lobe nodule.", {"nodule": "positive", "lung_nodule_or_mass": "positive", "lung_lesion": "positive"}),
    ("small pericardial effusion.", {}),
    ("extensive subcutaneous emphysema along the chest wall.", {}),
    (
        "no pneumothorax, but there is a moderate left effusion.",
        {"pneumothorax": "negative", "pleural_effusion": "positive"},
    ),
    ("no significant change in the moderate cardiomegaly.", {"enlarged_cardiac_silhouette": "positive"}),
    ("et tube in normal position.", {"support_devices": "positive"}),
    ("the mediastinum is widened.", {"wide_mediastinum": "positive", "abnormal_mediastinal_contour": "positive"}),
    ("the mediastinum is not widened.", {"wide_mediastinum": "negative"}),
    ("the hila are prominent.", {"enlarged_hilum": "positive"}),
    ("consolidation is unlikely.", {"consolidation": "negative"}),
    ("atelectasis or early pneumonia in the right base.", {"atelectasis": "uncertain", "pneumonia": "uncertain"}),
    ("acute fracture of the left clavicle.", {"acute_fracture": "positive", "fracture": "positive"}),
    ("hiatus hernia.", {"hiatal_hernia": "positive"}),
]
ABSENT = {
    "small pericardial effusion.": ["pleural_effusion"],
    "extensive subcutaneous emphysema along the chest wall.": ["emphysema"],
    "the heart size is unchanged.": ["enlarged_cardiac_silhouette"],
}


@pytest.mark.parametrize("text,expected", CASES)
def test_statuses(lab, text, expected):
    got = status(lab, text)
    for label, st in expected.items():
        assert got.get(label) == st, (text, label, got)


@pytest.mark.parametrize("text,labels", sorted(ABSENT.items()))
def test_absent(lab, text, labels):
    got = status(lab, text)
    for label in labels:
        assert label not in got, (text, got)


def test_mention_fields(lab):
    text = "normal heart. possible small right effusion."
    ms = [m for m in lab.label_text(text) if m.label == "pleural_effusion"]
    assert len(ms) == 1
    m = ms[0]
    assert text[m.char_start : m.char_end] == "effusion"
    assert m.sentence_idx == 1
    assert m.uncertain and not m.negated and m.status == "uncertain"


def test_implied_labels_share_span(lab):
    ms = lab.label_text("right lower lobe consolidation.")
    spans = {m.label: (m.char_start, m.char_end) for m in ms}
    assert spans["consolidation"] == spans["opacity"]


def test_cache_and_batch_agree(lab):
    texts = ["no pneumothorax.", "small effusion.", "no pneumothorax."]
    batch = lab.label_texts(texts)
    assert batch[0] == batch[2] == lab.label_text("no pneumothorax.")
    assert [m.label for m in batch[1]][:1] == ["pleural_effusion"]


def test_from_rules_is_cached():
    assert Labeler.from_rules() is Labeler.from_rules()


def test_rules_are_data(tmp_path):
    """Editing a rule file changes the labels: a copy of rules/ with an extra mention phrase."""
    import shutil

    from gazeprep.paths import default_rules_dir

    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d)
    before = report_status(Labeler.from_rules(d).label_text("a zorbulus in the right lung."))
    assert "mass" not in before
    with open(d / "mention" / "mass.txt", "a") as f:
        f.write("zorbulus\n")
    d2 = tmp_path / "rules2"
    shutil.copytree(d, d2)
    after = report_status(Labeler.from_rules(d2).label_text("a zorbulus in the right lung."))
    assert after["mass"] == "positive" and after["opacity"] == "positive"


def test_bad_rule_file_names_the_file(tmp_path):
    import shutil

    from gazeprep.errors import RecipeError
    from gazeprep.paths import default_rules_dir

    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d)
    (d / "mention" / "not_a_label.txt").write_text("x\n")
    with pytest.raises(RecipeError, match="not_a_label"):
        Labeler.from_rules(d)


def test_following_uncertainty_stops_at_comma(lab):
    got = status(lab, "small right effusion, possible atelectasis.")
    assert got["pleural_effusion"] == "positive"
    assert got["atelectasis"] == "uncertain"
    assert status(lab, "pneumonia is possible.")["pneumonia"] == "uncertain"
