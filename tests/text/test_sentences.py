"""Sentences, character offsets and mention times on constructed dictations."""

from __future__ import annotations

import polars as pl
import pytest
from gz_text_cases import REFLACX_TEXT, REFLACX_TOKENS, words_frame

from gazeprep.schema import validate
from gazeprep.text import Labeler, build_sentences, rebuild_reflacx_text


def test_reflacx_sentences_times_and_offsets(reflacx_case):
    w, s, m, rej = reflacx_case
    validate(w, "words")
    validate(s, "sentences")
    assert rej == []
    assert s["sentence_idx"].to_list() == [0, 1, 2]
    assert s["t_start_s"].to_list() == pytest.approx([0.5, 3.0, 7.0], abs=1e-9)
    assert s["t_end_s"].to_list() == pytest.approx([1.6, 5.7, 8.0], abs=1e-9)
    assert s["text"].to_list() == ["lungs are clear.", "small left effusion and mild atelectasis.", "no pneumothorax."]
    for rec in w.iter_rows(named=True):
        assert REFLACX_TEXT[rec["char_start"] : rec["char_end"]] == rec["word"]
    # sentence offsets: first token start .. end of the '.' token
    assert s["char_start"].to_list() == [0, 17, 59]
    assert s["char_end"].to_list() == [16, 58, 75]


def test_rebuild_reflacx_text_has_no_space_before_period_and_comma():
    assert (
        rebuild_reflacx_text(["small", "effusion", ",", "no", "pneumothorax", "."])
        == "small effusion, no pneumothorax."
    )


def test_reflacx_mismatch_is_reported_not_fatal():
    tokens = [
        ("small", 0.0, 0.5),
        ("effusion", 0.5, 1.0),
        (".", 1.0, 1.1),
        ("no", 2.0, 2.2),
        ("edema", 2.2, 2.8),
        (".", 2.8, 2.9),
    ]
    text = "small effusions. no edema."  # transcription differs from the tokens
    w, s, rej = build_sentences(words_frame(tokens), text, dataset="reflacx", case_id="C1")
    assert any("do not rebuild" in r["reason"] and r["stage"] == "text" for r in rej)
    assert s.height == 2
    edema = w.filter(pl.col("word") == "edema").row(0, named=True)
    assert text[edema["char_start"] : edema["char_end"]] == "edema"


def test_reflacx_token_not_found_gets_null_offsets_and_a_reject():
    tokens = [
        ("small", 0.0, 0.5),
        ("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", 0.5, 1.0),
        ("effusion", 1.0, 1.5),
        (".", 1.5, 1.6),
    ]
    w, s, rej = build_sentences(words_frame(tokens), "small effusion.", dataset="reflacx", case_id="C1")
    assert w["char_start"].null_count() == 1
    assert any(r["row"] == 2 and "not found" in r["reason"] for r in rej)
    assert s["text"].to_list() == ["small effusion."]


def test_missing_report_text_uses_rebuilt_text():
    w, s, rej = build_sentences(words_frame(REFLACX_TOKENS), None, dataset="reflacx", case_id="C1")
    assert len(rej) == 1 and "no report text" in rej[0]["reason"]
    assert " ".join(s["text"].to_list()) == REFLACX_TEXT


def test_trailing_tokens_without_period_form_a_last_sentence():
    tokens = [("no", 0.0, 0.2), ("edema", 0.2, 0.6), (".", 0.6, 0.7), ("small", 1.0, 1.3), ("effusion", 1.3, 1.9)]
    _, s, _ = build_sentences(words_frame(tokens), "no edema. small effusion", dataset="reflacx", case_id="C1")
    assert s["t_end_s"].to_list() == pytest.approx([0.7, 1.9])
    assert s["text"].to_list() == ["no edema.", "small effusion"]


def test_egd_phrases_sentences_and_offsets():
    phrases = [
        ("The lungs are", 0.0, 1.0),
        ("clear.", 1.0, 1.4),
        ("A 3.5 cm", 2.0, 2.6),
        ("right upper lobe mass", 2.6, 3.9),
        ("is noted.", 3.9, 4.5),
    ]
    full = "The lungs are clear. A 3.5 cm right upper lobe mass is noted."
    w, s, rej = build_sentences(words_frame(phrases, "egd-cxr", "d1"), full, dataset="egd-cxr", case_id="d1")
    assert rej == []
    assert s["text"].to_list() == ["The lungs are clear.", "A 3.5 cm right upper lobe mass is noted."]
    assert s["t_start_s"].to_list() == pytest.approx([0.0, 2.0])
    assert s["t_end_s"].to_list() == pytest.approx([1.4, 4.5])
    for rec in w.iter_rows(named=True):
        assert full[rec["char_start"] : rec["char_end"]] == rec["word"]
    m = Labeler.from_rules().label_case(s, w, full, dataset="egd-cxr", case_id="d1")
    mass = m.filter(pl.col("label") == "mass").row(0, named=True)
    assert mass["sentence_idx"] == 1
    # "mass" begins and ends inside the phrase "right upper lobe mass" (2.6 .. 3.9)
    assert (mass["t_start_s"], mass["t_end_s"]) == pytest.approx((2.6, 3.9))


def test_mention_times_from_words(reflacx_case):
    _, _, m, _ = reflacx_case
    validate(m, "mentions")
    eff = m.filter(pl.col("label") == "pleural_effusion").row(0, named=True)
    assert (eff["t_start_s"], eff["t_end_s"], eff["sentence_idx"]) == pytest.approx((3.6, 4.2, 1))
    ptx = m.filter(pl.col("label") == "pneumothorax").row(0, named=True)
    assert ptx["negated"] and ptx["sentence_idx"] == 2
    assert (ptx["t_start_s"], ptx["t_end_s"]) == pytest.approx((7.2, 7.9))


def test_multiword_mention_spans_two_words():
    tokens = [("small", 0.0, 0.4), ("pleural", 0.4, 0.9), ("effusion", 1.0, 1.6), (".", 1.6, 1.7)]
    text = "small pleural effusion."
    w, s, _ = build_sentences(words_frame(tokens), text, dataset="reflacx", case_id="C1")
    m = Labeler.from_rules().label_case(s, w, text, dataset="reflacx", case_id="C1")
    row = m.filter(pl.col("label") == "pleural_effusion").row(0, named=True)
    assert row["phrase"] == "pleural effusion"
    assert (row["t_start_s"], row["t_end_s"]) == pytest.approx((0.4, 1.6))


def test_empty_words():
    from gazeprep.schema import empty

    w, s, rej = build_sentences(empty("words"), "", dataset="reflacx", case_id="C1")
    assert w.height == 0 and s.height == 0 and rej == []


def test_label_case_without_report_text_uses_rebuilt_text():
    w, s, _ = build_sentences(words_frame(REFLACX_TOKENS), None, dataset="reflacx", case_id="C1")
    m = Labeler.from_rules().label_case(s, w, None, dataset="reflacx", case_id="C1")
    eff = m.filter(pl.col("label") == "pleural_effusion").row(0, named=True)
    assert eff["t_start_s"] == pytest.approx(3.6)
