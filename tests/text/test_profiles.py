"""Labeler profiles: layout, selection, hashing, and the decisions of each shipped profile.

Expected statuses of the ``lanfredi2023`` cases are derived by hand from paper 004's phrase lists
(ricbl/eye-tracking-localization src/chexpert-labeler/phrases/{mention,unmention}/): a regular
expression matched anywhere in the lower-cased sentence is a mention, a match overlapping an
unmention match of its category is dropped. Expected statuses of the ``gazeprep`` cases follow the
decisions listed in rules/profile.yaml (issue 15).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import polars as pl
import pytest

from gazeprep.errors import RecipeError
from gazeprep.paths import default_rules_dir
from gazeprep.text import Labeler, report_status
from gazeprep.text.profiles import list_profiles, profile_dir, profile_hash


@pytest.fixture(scope="module")
def gz():
    return Labeler.from_rules()


@pytest.fixture(scope="module")
def l23():
    return Labeler.from_rules(profile="lanfredi2023")


def st(lab, text):
    return report_status(lab.label_text(text))


# ------------------------------------------------------------------ layout and selection
def test_shipped_profiles():
    assert list_profiles()[:1] == ("gazeprep",)
    assert "lanfredi2023" in list_profiles()
    assert profile_dir("gazeprep") == default_rules_dir()
    assert profile_dir("lanfredi2023") == default_rules_dir() / "profiles" / "lanfredi2023"


def test_unknown_profile_is_one_line_listing_the_known_ones():
    with pytest.raises(RecipeError) as e:
        Labeler.from_rules(profile="nope")
    msg = str(e.value)
    assert "\n" not in msg and "'nope'" in msg and "gazeprep" in msg and "lanfredi2023" in msg
    with pytest.raises(RecipeError):
        profile_dir("../rules")  # a name, never a path


def test_cached_per_profile(gz, l23):
    assert Labeler.from_rules(profile="gazeprep") is gz
    assert Labeler.from_rules(profile="lanfredi2023") is l23
    assert gz is not l23 and (gz.profile, l23.profile) == ("gazeprep", "lanfredi2023")
    assert gz.profile_hash != l23.profile_hash and len(gz.profile_hash) == 64


def test_profile_hash_follows_rule_edits(tmp_path):
    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d)
    h0 = profile_hash("lanfredi2023", d)
    assert h0 == profile_hash("lanfredi2023", default_rules_dir())  # content and relative paths only
    g0 = profile_hash("gazeprep", d)
    with open(d / "profiles" / "lanfredi2023" / "mention_regex" / "pneumothorax.txt", "a") as f:
        f.write("ptx\n")
    assert profile_hash("lanfredi2023", d) != h0
    assert profile_hash("gazeprep", d) == g0  # another profile's edit does not touch it
    (d / "labels.yaml").write_text((d / "labels.yaml").read_text() + "\n# edited\n")
    assert profile_hash("gazeprep", d) != g0


def test_single_profile_rules_folder_still_works(tmp_path, monkeypatch):
    """A user rules folder of the older layout (no profiles/, no profile.yaml or context.yaml)."""
    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d, ignore=shutil.ignore_patterns("profiles", "profile.yaml", "context.yaml"))
    monkeypatch.setenv("GAZEPREP_RULES_DIR", str(d))
    assert list_profiles() == ("gazeprep",)
    lab = Labeler.from_rules()
    assert lab.rules.rules_dir == d
    assert st(lab, "no pneumothorax. small left effusion.") == {
        "pneumothorax": "negative",
        "pleural_effusion": "positive",
        "pleural_abnormality": "positive",
    }
    with pytest.raises(RecipeError, match="known: gazeprep"):
        Labeler.from_rules(profile="lanfredi2023")


def test_bad_context_rule_names_the_file(tmp_path):
    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d)
    (d / "context.yaml").write_text("rules:\n  - {category: sometimes, direction: preceding, phrases: [x]}\n")
    with pytest.raises(RecipeError, match=r"context\.yaml.*category"):
        Labeler.from_rules(d)
    (d / "context.yaml").write_text("rules: []\n")
    (d / "profiles" / "lanfredi2023" / "mention_regex" / "mass.txt").write_text("ok\nbad(\n")
    with pytest.raises(RecipeError, match=r"mass\.txt, line 2"):
        Labeler.from_rules(d, profile="lanfredi2023")


# ------------------------------------------------------------------ lanfredi2023: 004's decisions
L23 = [
    # a bare opacity is atelectasis and consolidation (both lists hold "opaci"), hence opacity
    ("left basilar opacity.", {"atelectasis": "positive", "consolidation": "positive", "opacity": "positive"}),
    (
        "increased density at the right base.",
        {
            "atelectasis": "positive",
            "consolidation": "positive",
            "groundglass_opacity": "positive",
            "nodule": "positive",
        },
    ),
    # unmentions: subsegmental atelectasis; hazy/reticular opacities are not atelectasis/consolidation
    ("subsegmental atelectasis.", {}),
    ("hazy opacities in both lungs.", {"groundglass_opacity": "positive", "opacity": "positive"}),
    ("reticular opacities.", {"edema": "positive", "interstitial_lung_disease": "positive", "opacity": "positive"}),
    ("airway wall thickening.", {"airway_wall_thickening": "positive", "edema": "positive"}),
    ("interstitial edema.", {"edema": "positive", "interstitial_lung_disease": "positive"}),
    ("small pleural air collection.", {}),  # no "pleural space" -> no pneumothorax in 004
    ("hydropneumothorax.", {"pneumothorax": "positive"}),
    ("old healed rib fracture.", {}),  # old ... fracture is an unmention
    ("healing rib fracture.", {"acute_fracture": "positive", "fracture": "positive"}),  # healing is not
    ("calcified nodule.", {}),
    ("small pericardial effusion.", {"enlarged_cardiac_silhouette": "positive"}),
    ("opacity over the left heart.", {"atelectasis": "positive", "consolidation": "positive"}),
    (
        "the mediastinal contours are normal.",
        {"wide_mediastinum": "negative", "abnormal_mediastinal_contour": "negative"},
    ),
    # CheXpert's label-specific and pre-negation uncertainty rules
    ("the heart size is stable.", {"enlarged_cardiac_silhouette": "uncertain"}),
    ("borderline heart size.", {"enlarged_cardiac_silhouette": "uncertain"}),
    ("mild vascular congestion.", {"edema": "uncertain"}),
    ("no new consolidation.", {"consolidation": "uncertain"}),
    ("cannot exclude pneumonia.", {"consolidation": "uncertain"}),
    ("likely pneumonia.", {"consolidation": "positive"}),  # CheXpert has no "likely" rule
    (
        "no pneumothorax, effusion or consolidation.",
        {"pneumothorax": "negative", "pleural_effusion": "negative", "consolidation": "negative"},
    ),
    ("heart size is normal.", {"enlarged_cardiac_silhouette": "negative"}),
]


@pytest.mark.parametrize("text,expected", L23)
def test_lanfredi2023_decisions(l23, text, expected):
    got = st(l23, text)
    if not expected:
        assert got == {}, (text, got)
    for label, status in expected.items():
        assert got.get(label) == status, (text, label, got)


def test_lanfredi2023_absent(l23):
    assert "atelectasis" not in st(l23, "hazy opacities.")
    assert "pleural_effusion" not in st(l23, "small pericardial effusion.")
    assert "enlarged_cardiac_silhouette" not in st(l23, "opacity over the left heart.")
    assert "mass" not in st(l23, "massive effusion.")
    assert "nodule" not in st(l23, "calcified nodules.")


def test_lanfredi2023_offsets_are_the_regex_match(l23):
    text = "No pneumothorax. Left basilar atelectasis."
    m = [m for m in l23.label_text(text) if m.label == "atelectasis"]
    assert len(m) == 1
    assert (m[0].char_start, m[0].char_end, m[0].sentence_idx) == (30, 38, 1)
    assert text[30:38] == "atelecta"  # 004's location list holds the match of "atelecta"


# ------------------------------------------------------------------ gazeprep: issue 15 decisions
GZ = [
    (
        "There is stable, mild cardiomegaly with normal caliber pulmonary vasculature.",
        {"enlarged_cardiac_silhouette": "positive"},
    ),
    ("mild cardiomegaly and normal pulmonary vasculature.", {"enlarged_cardiac_silhouette": "positive"}),
    ("heart size normal.", {"enlarged_cardiac_silhouette": "negative"}),
    ("normal heart size.", {"enlarged_cardiac_silhouette": "negative"}),
    (
        "heart size, mediastinal contours and pulmonary vascularity are within normal limits.",
        {"enlarged_cardiac_silhouette": "negative", "abnormal_mediastinal_contour": "negative"},
    ),
    ("Borderline heart size.", {"enlarged_cardiac_silhouette": "uncertain"}),
    ("Heart size upper limits of normal.", {"enlarged_cardiac_silhouette": "uncertain"}),
    ("The heart size is at the upper limits of normal.", {"enlarged_cardiac_silhouette": "uncertain"}),
    ("Old healed left rib fractures.", {}),
    ("Healed right 10th and left 9th posterolateral rib fracture.", {}),
    ("The rib fractures appear healed.", {}),
    ("The lateral most screw is fractured.", {"support_devices": "positive"}),
    ("Acute displaced fracture of the right seventh rib.", {"acute_fracture": "positive", "fracture": "positive"}),
    ("No acute fracture.", {"acute_fracture": "negative"}),
    ("Nondisplaced fractures may not be demonstrated.", {"fracture": "hypothetical"}),
    ("CT is more sensitive in detecting small nodules.", {"nodule": "hypothetical"}),
    ("Evaluation for pneumothorax is limited.", {"pneumothorax": "hypothetical"}),
    ("Further evaluation with CT is recommended to identify a small nodule.", {"nodule": "hypothetical"}),
    ("To evaluate for pneumonia.", {"pneumonia": "hypothetical"}),
    ("Cannot rule out pneumonia.", {"pneumonia": "uncertain"}),
    ("No acute abnormality other than a small left effusion.", {"pleural_effusion": "positive"}),
    ("Small pleural air collection at the apex.", {"pneumothorax": "positive"}),
    ("Large left hydropneumothorax.", {"pneumothorax": "positive", "pleural_effusion": "positive"}),
    ("Calcified granuloma in the right upper lobe.", {}),
    ("Calcified nodule in the left lower lobe.", {}),
    ("Right chest port catheter with tip in the SVC.", {"support_devices": "positive"}),
    ("Prosthetic aortic valve.", {"support_devices": "positive"}),
    ("Orthopedic hardware in the cervical spine.", {"support_devices": "positive"}),
    ("Calcified aortic valve.", {}),
]


@pytest.mark.parametrize("text,expected", GZ)
def test_gazeprep_decisions(gz, text, expected):
    got = st(gz, text)
    if not expected:
        assert got == {}, (text, got)
    for label, status in expected.items():
        assert got.get(label) == status, (text, label, got)


def test_gazeprep_absent(gz):
    assert "fracture" not in st(gz, "The lateral most screw is fractured.")
    assert "fracture" not in st(gz, "Left central venous catheter fracture at the level of the clavicle.")
    assert not {"nodule", "lung_lesion"} & set(st(gz, "Calcified nodules in both lungs."))
    assert "support_devices" not in st(gz, "Plate-like atelectasis at the left base.")


def test_hypothetical_is_weakest_and_kept_out_of_case_tables(gz):
    assert st(gz, "No pneumothorax. Evaluation for pneumothorax is limited.")["pneumothorax"] == "negative"
    assert st(gz, "Small right pneumothorax. Evaluation for pneumothorax is limited.")["pneumothorax"] == "positive"
    ms = gz.label_text("To evaluate for pneumonia.")
    assert ms and all(m.hypothetical and not m.negated and m.status == "hypothetical" for m in ms)
    from gz_text_cases import words_frame

    from gazeprep.text import build_sentences

    toks = [("to", 0.0, 0.2), ("evaluate", 0.2, 0.5), ("for", 0.5, 0.6), ("pneumonia", 0.6, 1.0), (".", 1.0, 1.1)]
    text = "to evaluate for pneumonia."
    w, s, _ = build_sentences(words_frame(toks), text, dataset="reflacx", case_id="C")
    assert gz.label_case(s, w, text, dataset="reflacx", case_id="C").height == 0


def test_profiles_differ_where_documented(gz, l23):
    text = "Left basilar opacity. Subsegmental atelectasis. Old healed rib fracture."
    a, b = st(gz, text), st(l23, text)
    assert a.get("atelectasis") == "positive" and "consolidation" not in a
    assert b.get("consolidation") == "positive"


# ------------------------------------------------------------------ CLI and build
def test_cli_profile_option(tmp_path):
    from typer.testing import CliRunner

    from gazeprep.cli import app

    src = tmp_path / "r.csv"
    pl.DataFrame({"rid": ["a"], "report": ["Left basilar opacity. To evaluate for pneumothorax."]}).write_csv(src)
    out, summ = tmp_path / "m.parquet", tmp_path / "s.parquet"
    args = [
        "label-reports",
        str(src),
        "--id-column",
        "rid",
        "--text-column",
        "report",
        "--out",
        str(out),
        "--summary",
        str(summ),
        "--quiet",
    ]
    res = CliRunner().invoke(app, args + ["--profile", "lanfredi2023"])
    assert res.exit_code == 0, res.output
    s = {r["label"]: r["status"] for r in pl.read_parquet(summ).iter_rows(named=True)}
    assert s["consolidation"] == "positive" and s["pneumothorax"] == "positive"  # 004 has no hypothetical rule
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    s = {r["label"]: r["status"] for r in pl.read_parquet(summ).iter_rows(named=True)}
    assert s["consolidation"] == "absent" and s["pneumothorax"] == "hypothetical"
    m = pl.read_parquet(out)
    assert m.filter(pl.col("label") == "pneumothorax")["hypothetical"].to_list() == [True]


def test_cli_unknown_profile_is_one_error_line(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "r.csv"
    src.write_text("rid,report\na,no edema\n")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "gazeprep.cli",
            "label-reports",
            str(src),
            "--id-column",
            "rid",
            "--text-column",
            "report",
            "--out",
            str(tmp_path / "m.parquet"),
            "--profile",
            "nope",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "lanfredi2023" in lines[0], p.stderr


def _hand_release_module():
    path = Path(__file__).resolve().parents[1] / "pipeline" / "test_build.py"
    spec = importlib.util.spec_from_file_location("_h9_test_build", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_build_records_profile_in_manifest(tmp_path):
    from gazeprep import load_export
    from gazeprep.pipeline.build import BuildOptions, build_heatmaps
    from gazeprep.recipes import load_recipe

    tb = _hand_release_module()
    tb.write_hand_release(tmp_path / "rel")
    recipe = load_recipe("reflacx-label-specific").with_overrides(size=32)
    assert recipe.profile == "lanfredi2023"
    summary = build_heatmaps(
        BuildOptions(
            dataset="reflacx", root=tmp_path / "rel", out=tmp_path / "out", recipe=recipe, workers=1, progress=False
        )
    )
    man = load_export(summary.out).manifest
    blob = repr(man)
    assert "lanfredi2023" in blob and profile_hash("lanfredi2023") in blob
    bad = recipe.model_copy(update={"profile": "nope"})
    with pytest.raises(RecipeError, match="unknown labeler profile 'nope'"):
        build_heatmaps(
            BuildOptions(
                dataset="reflacx", root=tmp_path / "rel", out=tmp_path / "out2", recipe=bad, workers=1, progress=False
            )
        )


def test_gazeprep_dictation_slips_are_not_guessed(gz):
    """Issue 15, second set, category 5: "Marrow pneumothorax, ..." for "No pneumothorax, ...". The
    default profile does not turn an unknown word into a negation (rules/profile.yaml): the slip stays
    a positive mention, and a list whose leading "No" was dropped stays positive."""
    assert st(gz, "Marrow pneumothorax, effusion or consolidation.")["pneumothorax"] == "positive"
    got = st(gz, "Pneumothorax, effusion or consolidation.")
    assert got["pneumothorax"] == "positive" and got["pleural_effusion"] != "negative"
    assert st(gz, "No pneumothorax, effusion or consolidation.")["pleural_effusion"] == "negative"
