"""Fixtures of the text tests (constructed cases live in gz_text_cases.py)."""

from __future__ import annotations

import pytest
from gz_text_cases import REFLACX_TEXT, REFLACX_TOKENS, words_frame


@pytest.fixture()
def reflacx_case():
    """(words, sentences, mentions, rejects) of the constructed REFLACX case."""
    from gazeprep.text import Labeler, build_sentences

    w, s, rej = build_sentences(words_frame(REFLACX_TOKENS), REFLACX_TEXT, dataset="reflacx", case_id="P102R000001")
    m = Labeler.from_rules().label_case(s, w, REFLACX_TEXT, dataset="reflacx", case_id="P102R000001")
    return w, s, m, rej
