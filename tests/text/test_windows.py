"""Window rules on the constructed case of gz_text_cases.py, checked to the millisecond.

Case: S0 [0.50, 1.60] "lungs are clear."; S1 [3.00, 5.70] "small left effusion and mild
atelectasis." (effusion begins in the word starting 3.60, atelectasis in the word starting 5.00);
S2 [7.00, 8.00] "no pneumothorax." (negated, begins at 7.20).
"""

from __future__ import annotations

import shutil

import polars as pl
import pytest
from gz_text_cases import words_frame

from gazeprep.recipes import KeywordWindow, PhraseWindow, SentenceWindow, WholeRecordingWindow
from gazeprep.schema import validate
from gazeprep.text import Labeler, build_sentences, compute_windows

MS = 1e-3 / 2  # half a millisecond


def windows(rule, case, recording_end_s=9.0, rejects=None, rules_dir=None):
    w, s, m, _ = case
    out = compute_windows(
        rule,
        sentences=s,
        words=w,
        mentions=m,
        recording_end_s=recording_end_s,
        dataset="reflacx",
        case_id="P102R000001",
        recipe="r",
        rejects=rejects,
        rules_dir=rules_dir,
    )
    validate(out, "windows")
    return out


def span(df, target):
    rows = df.filter(pl.col("target") == target)
    assert rows.height == 1, rows
    r = rows.row(0, named=True)
    return r["t_start_s"], r["t_end_s"]


def test_004_default_window(reflacx_case):
    """REFERENCE_CODE 1a: start = max(3.0 - 1.5, previous start 0.5) = 1.5; end = start of the word
    where the sentence's last mention begins (atelectasis, 5.0), shared by every label of S1."""
    out = windows(SentenceWindow(), reflacx_case)
    assert set(out["target"]) == {"pleural_effusion", "pleural_abnormality", "atelectasis", "opacity"}
    for t in out["target"]:
        assert span(out, t) == pytest.approx((1.5, 5.0), abs=MS)
    assert set(out["sentence_idx"]) == {1}
    assert set(out["window_idx"]) == {0}
    assert "pneumothorax" not in set(out["target"])  # negated: no window


@pytest.mark.parametrize(
    "start,lag,floor,expected_start",
    [
        ("sentence_start", 1.5, "previous_sentence_start", 1.5),
        ("sentence_start", 2.5, "previous_sentence_start", 0.5),  # floor wins: max(0.5, 0.5)
        ("sentence_start", 0.0, "none", 3.0),
        ("first_mention", 2.5, "previous_sentence_start", 1.1),  # max(3.6 - 2.5, 0.5)
        ("first_mention", 5.0, "previous_sentence_start", 0.5),
        ("sentence_end", 2.5, "previous_sentence_start", 3.2),  # max(5.7 - 2.5, 0.5)
        ("sentence_end", 7.5, "previous_sentence_end", 1.6),  # max(-1.8, 1.6)
        ("previous_sentence_start", 0.0, "none", 0.5),
        ("previous_sentence_end", 0.0, "none", 1.6),
        ("report_start", 0.0, "none", 0.5),
        ("recording_start", 0.0, "none", 0.0),
        ("sentence_start", 1.5, "report_start", 1.5),
        ("sentence_start", 5.0, "recording_start", 0.0),
    ],
)
def test_start_options(reflacx_case, start, lag, floor, expected_start):
    out = windows(SentenceWindow(start=start, lag_s=lag, not_before=floor, end="sentence_end"), reflacx_case)
    assert span(out, "atelectasis") == pytest.approx((expected_start, 5.7), abs=MS)


@pytest.mark.parametrize(
    "end,expected_end",
    [("sentence_start", 3.0), ("sentence_end", 5.7), ("first_mention", 3.6), ("last_mention", 5.0)],
)
def test_end_options(reflacx_case, end, expected_end):
    out = windows(SentenceWindow(start="previous_sentence_start", lag_s=0.0, not_before="none", end=end), reflacx_case)
    assert span(out, "pleural_effusion") == pytest.approx((0.5, expected_end), abs=MS)


def test_negative_duration_is_dropped_and_reported(reflacx_case):
    rej = []
    out = windows(
        SentenceWindow(start="sentence_end", lag_s=0.0, not_before="none", end="sentence_start"),
        reflacx_case,
        rejects=rej,
    )
    assert out.height == 0
    assert rej and rej[0]["stage"] == "windows" and "before start" in rej[0]["reason"]


def test_mention_status_selection(reflacx_case):
    out = windows(SentenceWindow(mentions=("negative",)), reflacx_case)
    # S2: start = max(7.0 - 1.5, previous start 3.0) = 5.5; end = start of "pneumothorax" = 7.2
    assert set(out["target"]) == {"pneumothorax"}
    assert span(out, "pneumothorax") == pytest.approx((5.5, 7.2), abs=MS)
    assert out["sentence_idx"].to_list() == [2]


def _case(tokens, text):
    w, s, _ = build_sentences(words_frame(tokens), text, dataset="reflacx", case_id="P102R000001")
    m = Labeler.from_rules().label_case(s, w, text, dataset="reflacx", case_id="P102R000001")
    return w, s, m, []


def test_first_sentence_previous_start_is_zero_and_window_idx_counts_sentences():
    tokens = [
        ("small", 1.0, 1.3),
        ("effusion", 1.3, 1.9),
        (".", 1.9, 2.0),
        ("possible", 4.0, 4.5),
        ("effusion", 4.6, 5.2),
        ("on", 5.2, 5.3),
        ("the", 5.3, 5.4),
        ("right", 5.4, 5.8),
        (".", 5.8, 5.9),
    ]
    case = _case(tokens, "small effusion. possible effusion on the right.")
    out = windows(SentenceWindow(), case)
    eff = out.filter(pl.col("target") == "pleural_effusion").sort("window_idx")
    assert eff["window_idx"].to_list() == [0, 1]
    assert eff["sentence_idx"].to_list() == [0, 1]
    # S0: max(1.0 - 1.5, 0) = 0.0 .. 1.3 ; S1 (uncertain mention counts): max(4.0 - 1.5, 1.0) = 2.5 .. 4.6
    assert eff["t_start_s"].to_list() == pytest.approx([0.0, 2.5], abs=MS)
    assert eff["t_end_s"].to_list() == pytest.approx([1.3, 4.6], abs=MS)
    only_pos = windows(SentenceWindow(mentions=("positive",)), case)
    assert only_pos.filter(pl.col("target") == "pleural_effusion").height == 1


KW_TOKENS = [
    ("the", 0.2, 0.4),
    ("heart", 0.4, 0.8),
    ("is", 0.8, 0.9),
    ("enlarged", 0.9, 1.5),
    (".", 1.5, 1.6),
    ("left", 2.0, 2.3),
    ("lower", 2.3, 2.6),
    ("lobe", 2.6, 2.9),
    ("opacity", 2.9, 3.5),
    (".", 3.5, 3.6),
    ("no", 4.0, 4.2),
    ("cardiomegaly", 4.2, 5.0),
    (".", 5.0, 5.1),
    ("lungs", 6.0, 6.3),
    ("clear", 6.3, 6.8),
    (".", 6.8, 6.9),
]
KW_TEXT = "the heart is enlarged. left lower lobe opacity. no cardiomegaly. lungs clear."


def test_keyword_window_rightmost_sentence():
    case = _case(KW_TOKENS, KW_TEXT)
    out = windows(KeywordWindow(), case)
    # heart: "enlarged"+"heart" in S0 and "cardiomegaly" in S2 -> rightmost S2 ends 5.1
    assert span(out, "heart") == pytest.approx((0.0, 5.1), abs=MS)
    assert span(out, "left_lung") == pytest.approx((0.0, 3.6), abs=MS)
    assert "right_lung" not in set(out["target"])
    assert out.filter(pl.col("target") == "heart")["sentence_idx"].to_list() == [2]


def test_keyword_window_can_skip_negated_sentences(tmp_path):
    from gazeprep.paths import default_rules_dir

    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d)
    p = d / "anatomy_keywords.yaml"
    p.write_text(p.read_text().replace("count_negated: true", "count_negated: false"))
    out = windows(KeywordWindow(), _case(KW_TOKENS, KW_TEXT), rules_dir=d)
    assert span(out, "heart") == pytest.approx((0.0, 1.6), abs=MS)  # S0; "no cardiomegaly" skipped


def test_keyword_targets_subset():
    out = windows(KeywordWindow(targets=("heart",)), _case(KW_TOKENS, KW_TEXT))
    assert out["target"].to_list() == ["heart"]


def test_whole_recording(reflacx_case):
    out = windows(WholeRecordingWindow(), reflacx_case, recording_end_s=12.345)
    assert out["target"].to_list() == ["full"]
    assert span(out, "full") == pytest.approx((0.0, 12.345), abs=MS)
    assert out["sentence_idx"].null_count() == 1
    out = windows(WholeRecordingWindow(end="last_word_end"), reflacx_case)
    assert span(out, "full") == pytest.approx((0.0, 8.0), abs=MS)


def test_phrase_windows():
    phrases = [("The lungs are", 0.0, 1.0), ("clear.", 1.0, 1.4), ("Small effusion.", 2.0, 2.9)]
    full = "The lungs are clear. Small effusion."
    w, s, _ = build_sentences(words_frame(phrases, "egd-cxr", "d1"), full, dataset="egd-cxr", case_id="d1")
    out = compute_windows(
        PhraseWindow(lag_s=0.25),
        sentences=s,
        words=w,
        mentions=pl.DataFrame(),
        recording_end_s=3.0,
        dataset="egd-cxr",
        case_id="d1",
        recipe="r",
    )
    validate(out, "windows")
    assert out["target"].to_list() == ["phrase_0000", "phrase_0001", "phrase_0002"]
    assert out["t_start_s"].to_list() == pytest.approx([-0.25, 0.75, 1.75], abs=MS)
    assert out["t_end_s"].to_list() == pytest.approx([1.0, 1.4, 2.9], abs=MS)
    assert out["sentence_idx"].to_list() == [0, 0, 1]
