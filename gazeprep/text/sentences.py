"""Sentences from timestamped dictation, with character offsets into the report text.

REFLACX (``timestamps_transcription.csv``): one row per token, punctuation as its own token; a
sentence is the tokens up to and including a ``'.'`` token (paper 004's code); it starts at the start
of its first token and ends at the end of its ``'.'``. Tokens rebuild ``transcription.txt`` when
joined with spaces, without a space before ``.`` and ``,``; a mismatch is reported as a ``rejects``
row and the offsets are still assigned token by token (best effort).

EGD-CXR (``transcript.json``): one row per transcript phrase, punctuation attached; a phrase with a
sentence-ending ``'.'`` (a period not between two digits, so "3.5 cm" does not end a sentence) ends
its sentence. Offsets point into ``full_text``.

Which rule applies is the dataset adapter's transcript style (``tokens`` or ``phrases``, see
:class:`gazeprep.datasets.base.TranscriptStyle`), so a declared dataset chooses either.

Tokens after the last period form a final sentence (the reference code drops them; keeping them
loses nothing and keeps every mention inside some sentence).
"""

from __future__ import annotations

import polars as pl

from gazeprep.datasets.base import TranscriptStyle
from gazeprep.datasets.registry import transcript_style
from gazeprep.schema import SENTENCES, conform, empty, reject

_TOKENS = TranscriptStyle("tokens", words_file="", report_file="")


def rebuild_reflacx_text(tokens: list[str]) -> str:
    """The report text REFLACX tokens stand for: joined with spaces, none before ``.`` and ``,``."""
    return _TOKENS.join(tokens)


def _align(tokens: list[str], text: str) -> tuple[list[int | None], list[int | None], list[int]]:
    """Find each token in ``text`` left to right (case-insensitive). Returns starts, ends and the
    indices of tokens that could not be placed (their offsets are None)."""
    low = text.lower()
    cursor = 0
    starts: list[int | None] = []
    ends: list[int | None] = []
    missing: list[int] = []
    for i, tok in enumerate(tokens):
        t = (tok or "").strip().lower()
        if not t:
            starts.append(None)
            ends.append(None)
            missing.append(i)
            continue
        p = low.find(t, cursor)
        # accept only if what is skipped is short (whitespace or a small edit), so one missing
        # token does not make the search jump far ahead
        if p < 0 or ((p - cursor) > max(20, 2 * len(t)) and low[cursor:p].strip()):
            starts.append(None)
            ends.append(None)
            missing.append(i)
            continue
        starts.append(p)
        ends.append(p + len(t))
        cursor = p + len(t)
    return starts, ends, missing


def build_sentences(
    words: pl.DataFrame,
    report_text: str | None,
    *,
    dataset: str,
    case_id: str,
) -> tuple[pl.DataFrame, pl.DataFrame, list[dict]]:
    """Sentences of one case from its timestamped words.

    Parameters
    ----------
    words:
        The case's ``words`` rows (:data:`gazeprep.schema.WORDS`; ``char_start``/``char_end`` may be
        null). Rows are taken in ``word_idx`` order.
    report_text:
        REFLACX ``transcription.txt`` or EGD-CXR ``full_text``. ``None``: the text rebuilt from the
        words is used (REFLACX rule for both datasets) and a rejects row says so.
    dataset:
        A registered dataset; its adapter's transcript style decides how words read
        (:class:`~gazeprep.datasets.base.TranscriptStyle`): ``tokens`` as REFLACX (a sentence ends
        at a ``'.'`` token) or ``phrases`` as EGD-CXR (a phrase containing a sentence period ends a
        sentence).

    Returns
    -------
    (words, sentences, rejects):
        ``words`` with ``char_start``/``char_end`` filled (offsets into ``report_text``, ``[start,
        end)``, null for a word that could not be found), ``sentences``
        (:data:`gazeprep.schema.SENTENCES`: times in seconds from the words, text =
        ``report_text[char_start:char_end]``), and a list of :func:`gazeprep.schema.reject` rows
        (stage ``text``) for mismatches.
    """
    style = transcript_style(dataset)
    if words.height == 0:
        return conform(words, "words") if words.columns else empty("words"), empty("sentences"), []
    w = words.sort("word_idx") if "word_idx" in words.columns else words
    tokens = [t if t is not None else "" for t in w["word"].to_list()]
    text, rejects = _report_text(style, style.join(tokens), report_text, dataset=dataset, case_id=case_id)
    starts, ends, missing = _align(tokens, text)
    file = style.words_file_for(case_id)
    for i in missing:
        row = w["word_idx"][i] if "word_idx" in w.columns else i
        rejects.append(
            reject(
                dataset,
                case_id,
                "text",
                file,
                int(row) + 1 if row is not None else None,
                f"word {tokens[i]!r} not found in the report text; no character offsets",
            )
        )
    w = w.with_columns(
        pl.Series("char_start", starts, dtype=pl.Int32),
        pl.Series("char_end", ends, dtype=pl.Int32),
    )
    w = conform(w, "words")

    rows = _sentence_rows(style, tokens, starts, ends, text, w["t_start_s"].to_list(), w["t_end_s"].to_list())
    for r in rows:
        r.update(dataset=dataset, case_id=case_id)
    sentences = pl.DataFrame(rows, schema=SENTENCES) if rows else empty("sentences")
    return w, sentences, rejects


def _report_text(
    style: TranscriptStyle, rebuilt: str, report_text: str | None, *, dataset: str, case_id: str
) -> tuple[str, list[dict]]:
    """The text the word offsets point into, and its ``text`` rejects rows: ``report_text``, with a row
    when the style's words should rebuild it and ``rebuilt`` (the words joined) differs; or, without a
    report, ``rebuilt`` and a row saying so."""
    if report_text is None:
        msg = "no report text; offsets refer to the text rebuilt from the words"
        return rebuilt, [reject(dataset, case_id, "text", style.words_file_for(case_id), None, msg)]
    text = report_text
    if not style.words_rebuild_report or rebuilt == text.strip():
        return text, []
    k = next((i for i, (a, b) in enumerate(zip(rebuilt, text)) if a != b), min(len(rebuilt), len(text)))
    msg = (
        f"tokens do not rebuild the transcription (first difference at character {k}: "
        f"{text[max(0, k - 15) : k + 15]!r} vs tokens {rebuilt[max(0, k - 15) : k + 15]!r}); "
        "offsets assigned token by token"
    )
    return text, [reject(dataset, case_id, "text", style.report_file_for(case_id), None, msg)]


def _sentence_rows(
    style: TranscriptStyle,
    tokens: list[str],
    starts: list[int | None],
    ends: list[int | None],
    text: str,
    t0: list[float],
    t1: list[float],
) -> list[dict[str, object]]:
    """Cut the words into sentences: a sentence ends at a word the style says ends one, or at the last
    word. Per sentence: its index, text (``text[char_start:char_end]``, from the first located word's
    start to the last located word's end; None when no word of it was located), and times in seconds
    from its first word's start to its last word's end."""
    rows: list[dict[str, object]] = []
    first = 0
    n = len(tokens)
    for i in range(n):
        if style.ends_sentence(tokens[i]) or i == n - 1:
            cs = next((starts[k] for k in range(first, i + 1) if starts[k] is not None), None)
            ce = next((ends[k] for k in range(i, first - 1, -1) if ends[k] is not None), None)
            rows.append({
                "sentence_idx": len(rows),
                "text": text[cs:ce] if cs is not None and ce is not None else None,
                "t_start_s": t0[first],
                "t_end_s": t1[i],
                "char_start": cs,
                "char_end": ce,
            })  # fmt: skip
            first = i + 1
    return rows
