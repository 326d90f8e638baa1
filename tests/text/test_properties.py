"""Properties of sentence building on random REFLACX-style token streams (hypothesis)."""

from __future__ import annotations

from gz_text_cases import words_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from gazeprep.text import build_sentences, rebuild_reflacx_text

VOCAB = [
    "small",
    "left",
    "effusion",
    "no",
    "pneumothorax",
    "heart",
    "size",
    "normal",
    "mild",
    "edema",
    "ground-glass",
    "opacities",
    ".",
    ",",
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(VOCAB), min_size=1, max_size=40), st.lists(st.floats(0.01, 0.5), min_size=40, max_size=40)
)
def test_offsets_and_sentence_partition(tokens, gaps):
    t, rows = 0.0, []
    for tok, g in zip(tokens, gaps):
        rows.append((tok, t, t + g))
        t += g + 0.05
    text = rebuild_reflacx_text(tokens)
    w, s, rej = build_sentences(words_frame(rows), text, dataset="reflacx", case_id="C")
    assert rej == []
    for rec in w.iter_rows(named=True):
        assert text[rec["char_start"] : rec["char_end"]] == rec["word"]
    n_periods = tokens.count(".")
    expected = n_periods + (0 if tokens[-1] == "." else 1)
    assert s.height == expected
    # sentences tile the token stream in order: each starts at the token after the previous '.'
    ends = [i for i, tok in enumerate(tokens) if tok == "."]
    if tokens[-1] != ".":
        ends.append(len(tokens) - 1)
    starts = [0] + [e + 1 for e in ends[:-1]]
    assert s["t_start_s"].to_list() == [rows[i][1] for i in starts]
    assert s["t_end_s"].to_list() == [rows[i][2] for i in ends]
    for rec in s.iter_rows(named=True):
        assert rec["text"] == text[rec["char_start"] : rec["char_end"]]
