"""CheXpert-labeler text handling for regex profiles (paper 004's labeler): cleaning, sentences, aggregation.

Paper 004's labeler (ricbl/eye-tracking-localization ``src/chexpert-labeler``, a modified
stanfordmlgroup/chexpert-labeler) matches its regular expressions in a *cleaned* report
(``loader/load.py``, ``Loader.clean``), split into sentences by NegBio's ``ssplit`` (NLTK's punkt
``sent_tokenize``). :func:`clean_report` applies the same cleaning, in the same order, and also
returns, for every character of the cleaned text, the index of the original character it comes
from, so that mentions found in the cleaned text are reported at offsets of the original report
(004's own offsets point into its cleaned text; REFERENCE_CODE section 2 notes the misalignment).

:func:`report_codes` is CheXpert's ``Aggregator.dict_to_vec`` (``stages/aggregate.py``), including
its order of tests for a label with several mentions, and the "chf" / "heart failure" exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

_AND_OR = re.compile("and/or")
_SLASH = re.compile("(?<=[a-zA-Z])/(?=[a-zA-Z])")
_DOUBLE_PERIOD = re.compile(r"\.\.")
_PUNCT_OR_SPACES = re.compile(r"[.,]\s*|\s{2,}|[^\S ]")


def _punct_or_spaces(m: str) -> str:
    return m[0] + " " if m[0] in ".," else " "


_EMPTY_SENTENCE = re.compile(r"\.\s+\.")


def _sub(text: str, idx: list[int], rx: re.Pattern[str], repl: Callable[[str], str]) -> tuple[str, list[int]]:
    """``rx.sub`` on ``text`` that carries the original-character index list ``idx`` along.

    A replacement that keeps the matched text as its prefix or suffix keeps those characters'
    indices ("and/or" -> "or": the "or"; "." -> ". ": the period); every other new character takes
    the index of the first matched character (its last one for an appended suffix)."""
    out: list[str] = []
    out_idx: list[int] = []
    pos = 0
    for m in rx.finditer(text):
        a, b = m.span()
        out.append(text[pos:a])
        out_idx.extend(idx[pos:a])
        mt = m.group(0)
        r = repl(mt)
        if r.startswith(mt):
            ri = idx[a:b] + [idx[b - 1]] * (len(r) - len(mt))
        elif r.endswith(mt):
            ri = [idx[a]] * (len(r) - len(mt)) + idx[a:b]
        elif mt.endswith(r):
            ri = idx[b - len(r) : b]
        elif mt.startswith(r):
            ri = idx[a : a + len(r)]
        else:
            ri = [idx[a]] * len(r)
        out.append(r)
        out_idx.extend(ri)
        pos = b
    if pos == 0:
        return text, idx
    out.append(text[pos:])
    out_idx.extend(idx[pos:])
    return "".join(out), out_idx


def clean_report(text: str) -> tuple[str, list[int]]:
    """004's ``Loader.clean`` of one report, and the original index of every cleaned character.

    Steps, in 004's order: lower-case; ``and/or`` -> ``or``; a ``/`` between two letters -> `` or ``;
    ``..`` -> ``.``; a space after every ``.`` and ``,``; white-space runs -> one space, none at the
    ends (``' '.join(text.split())``); ``. .`` (an empty sentence) -> ``.``.

    Returns ``(cleaned, idx)`` with ``len(idx) == len(cleaned)``; ``text[idx[i]]`` is the character
    cleaned character ``i`` comes from (an inserted character: the character it was inserted for).
    """
    s = text.lower()
    if len(s) == len(text):
        idx = list(range(len(text)))
    else:  # a character whose lower case is longer ("İ" -> "i̇"): every piece maps to it
        idx = [i for i, c in enumerate(text) for _ in c.lower()]
    s, idx = _sub(s, idx, _AND_OR, lambda _: "or")
    s, idx = _sub(s, idx, _SLASH, lambda _: " or ")
    s, idx = _sub(s, idx, _DOUBLE_PERIOD, lambda _: ".")
    # a space after every "." and ",", then white-space runs -> one space: done in one pass that
    # leaves the (many) single spaces alone
    s, idx = _sub(s, idx, _PUNCT_OR_SPACES, _punct_or_spaces)
    lead = len(s) - len(s.lstrip(" "))
    s, idx = s.strip(" "), idx[lead : lead + len(s.strip(" "))]
    s, idx = _sub(s, idx, _EMPTY_SENTENCE, lambda _: ".")
    return s, idx


#: Tokens after which a period does not end a sentence (punkt's English abbreviations that occur in
#: reports; the cleaned text is lower-case, so punkt's capitalisation cues never apply).
ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "vs", "st"})
_SENT_END = re.compile(r"[.!?]+(?= |$)")


def split_clean_sentences(clean: str) -> list[tuple[int, str]]:
    """``(offset, sentence)`` pieces of a cleaned report, as NegBio's ``ssplit`` (punkt) cuts them:
    after ``.``, ``!`` or ``?`` followed by a space or the end, unless the period ends one of
    :data:`ABBREVIATIONS`. The cleaning puts a space after every period, so "3.5 cm" is cut after
    "3." as punkt cuts "3. 5 cm" (an ordinal-like number before a number is a break for punkt)."""
    out: list[tuple[int, str]] = []
    start = 0
    for m in _SENT_END.finditer(clean):
        if m.group(0) == ".":
            k = m.start()
            j = k
            while j > start and clean[j - 1] not in " ":
                j -= 1
            if clean[j:k] in ABBREVIATIONS:
                continue
        end = m.end()
        piece = clean[start:end].strip(" ")
        if piece:
            out.append((start + (len(clean[start:end]) - len(clean[start:end].lstrip(" "))), piece))
        start = end
    piece = clean[start:].strip(" ")
    if piece:
        out.append((start + (len(clean[start:]) - len(clean[start:].lstrip(" "))), piece))
    return out


# ---------------------------------------------------------------------------------- aggregation
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
_STATUS_CODE = {"positive": POSITIVE, "negative": NEGATIVE, "uncertain": UNCERTAIN}
_CODE_STATUS = {v: k for k, v in _STATUS_CODE.items()}


def dict_to_vec_code(codes: Sequence[int]) -> int:
    """CheXpert's ``dict_to_vec`` for one category's mention codes (1 positive, 0 negative, -1
    uncertain), in its order of tests: one code as is; 0 and -1 present -> -1 (even with a 1); 0
    and 1 -> 1; -1 and 1 -> 1; else the first code."""
    if len(codes) == 1:
        return codes[0]
    if NEGATIVE in codes and UNCERTAIN in codes:
        return UNCERTAIN
    if NEGATIVE in codes and POSITIVE in codes:
        return POSITIVE
    if UNCERTAIN in codes and POSITIVE in codes:
        return POSITIVE
    return codes[0]


def report_codes(
    mentions: Iterable[tuple[str, str, str]],
    chf_label: str | None = None,
) -> dict[str, str]:
    """Report status per label from ``(label, status, matched text)`` triples, CheXpert's way.

    Each label's statuses are aggregated by :func:`dict_to_vec_code`. ``chf_label``: CheXpert's
    exception, a positive or uncertain mention whose matched text is exactly ``chf`` or ``heart
    failure`` adds an uncertain code to this label (004 renamed upstream's Cardiomegaly category,
    so its code names an undefined ``CARDIOMEGALY`` there and would stop with a NameError; the
    exception is applied as upstream meant it). Statuses other than positive / negative / uncertain
    are ignored."""
    per: dict[str, list[int]] = {}
    for label, status, text in mentions:
        code = _STATUS_CODE.get(status)
        if code is None:
            continue
        if chf_label is not None and code != NEGATIVE and text.lower() in ("chf", "heart failure"):
            per.setdefault(chf_label, []).append(UNCERTAIN)
        per.setdefault(label, []).append(code)
    return {lab: _CODE_STATUS[dict_to_vec_code(codes)] for lab, codes in per.items()}
