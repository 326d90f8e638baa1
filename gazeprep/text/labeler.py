"""Rule-based report labeler: which finding is mentioned where, negated or uncertain.

Pipeline (no trained spaCy model): ``spacy.blank("en")`` -> ``sentencizer`` -> ``entity_ruler``
(lower-cased phrase matching of ``rules/mention/*.txt`` and the neutral phrases of
``rules/neutral.yaml``) -> negspacy ``negex`` with the triggers of ``rules/negation/``. After the
pipeline a NegEx-like pass adds uncertainty (``rules/uncertainty.yaml``, same scopes: sentence and
termination triggers), resolves neutral anatomy phrases through their qualifiers, drops labels
cancelled by ``rules/unmention/`` and expands every label to the labels it implies
(``rules/labels.yaml``).

A mention's status is ``negative`` when negated (negation wins over uncertainty), else ``uncertain``
when uncertain, else ``positive``. A report's status per label is the strongest over its mentions:
positive > uncertain > negative; ``absent`` when not mentioned (CheXpert convention).
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Iterable, NamedTuple

import polars as pl

from gazeprep.schema import MENTIONS, empty
from gazeprep.text.rules import RuleSet, load_rules

_EXT = "gz_negex"
STATUS_ORDER = ("positive", "uncertain", "negative")  # strongest first


class Mention(NamedTuple):
    """One label mentioned in a text.

    ``sentence_idx`` is the index of the sentence inside the labelled text (:func:`split_sentences`);
    ``char_start``/``char_end`` are ``[start, end)`` character offsets into that text.
    """

    label: str
    phrase: str
    sentence_idx: int
    char_start: int
    char_end: int
    negated: bool
    uncertain: bool

    @property
    def status(self) -> str:
        """``negative`` / ``uncertain`` / ``positive`` (negation wins)."""
        if self.negated:
            return "negative"
        return "uncertain" if self.uncertain else "positive"


def report_status(mentions: Iterable[Mention]) -> dict[str, str]:
    """Per label, the strongest status over ``mentions`` (positive > uncertain > negative)."""
    out: dict[str, str] = {}
    for m in mentions:
        s = m.status
        if m.label not in out or STATUS_ORDER.index(s) < STATUS_ORDER.index(out[m.label]):
            out[m.label] = s
    return out


_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def split_sentences(text: str) -> list[tuple[int, str]]:
    """``(char offset, sentence)`` pieces of ``text``: a sentence ends after ``.``/``!``/``?``
    followed by white space or the end of the text; surrounding white space is dropped."""
    out: list[tuple[int, str]] = []
    start = 0
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not ends or ends[-1] < len(text):
        ends.append(len(text))
    for end in ends:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            out.append((start + len(piece) - len(piece.lstrip()), stripped))
        start = end
    return out


_CACHE: dict[str, "Labeler"] = {}
_CACHE_LOCK = threading.Lock()


class Labeler:
    """A compiled rule set. Build it with :meth:`from_rules` (cached per rules folder)."""

    def __init__(self, rules: RuleSet, cache_size: int = 200000):
        import spacy
        from negspacy.negation import Negex  # noqa: F401  (registers the "negex" factory)
        from spacy.matcher import PhraseMatcher

        self.rules = rules
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        labels_of: dict[str, set[str]] = defaultdict(set)
        for lab, phrases in rules.mentions.items():
            for p in phrases:
                labels_of[p].add(lab)
        patterns = [{"label": "|".join(sorted(labs)), "pattern": p} for p, labs in labels_of.items()]
        for i, entry in enumerate(rules.neutral):
            for p in entry.phrases:
                if p not in labels_of:
                    patterns.append({"label": f"~{i}", "pattern": p})
        ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "validate": False})
        ruler.add_patterns(patterns)
        termset = {
            "pseudo_negations": list(rules.negation["pseudo"]),
            "preceding_negations": list(rules.negation["preceding"]),
            "following_negations": list(rules.negation["following"]),
            "termination": list(rules.negation["termination"]),
        }
        nlp.add_pipe("negex", config={"neg_termset": termset, "extension_name": _EXT})
        self.nlp = nlp

        def docs(phrases):
            return list(nlp.tokenizer.pipe(phrases))

        trig = PhraseMatcher(nlp.vocab, attr="LOWER")
        trig.add("TERM", docs(rules.negation["termination"]))
        trig.add("NPRE", docs(rules.negation["preceding"]))
        trig.add("NPSEUDO", docs(rules.negation["pseudo"]))
        trig.add("NFOL", docs(rules.negation["following"]))
        trig.add("UPRE", docs(rules.uncertainty_preceding))
        trig.add("UFOL", docs(rules.uncertainty_following))
        for i, entry in enumerate(rules.neutral):
            for qlabel, qphrases in entry.qualifiers.items():
                trig.add(f"Q{i}:{qlabel}", docs(qphrases))
        self._trig = trig
        unm = PhraseMatcher(nlp.vocab, attr="LOWER")
        for lab, phrases in rules.unmentions.items():
            if phrases:
                unm.add(lab, docs(phrases))
        self._unm = unm
        self._closure = {lab: rules.labels.closure(lab) for lab in rules.labels.names}
        self._cache: OrderedDict[str, list[Mention]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_rules(cls, rules_dir: str | Path | None = None) -> "Labeler":
        """The labeler of a rules folder (default ``gazeprep.paths.default_rules_dir()``), built once
        per process and folder."""
        from gazeprep.paths import default_rules_dir  # the default honours $GAZEPREP_RULES_DIR

        key = str(default_rules_dir(rules_dir).resolve())
        with _CACHE_LOCK:
            lab = _CACHE.get(key)
            if lab is None:
                rules = load_rules(rules_dir)
                lab = cls(rules)
                _CACHE[key] = lab
        return lab

    @property
    def label_ids(self) -> tuple[str, ...]:
        """Every label this labeler can emit (mention labels, qualifier labels and their implications)."""
        out: list[str] = []
        direct = list(self.rules.mentions)
        for e in self.rules.neutral:
            direct += [e.label, *e.qualifiers]
        for lab in direct:
            for x in self._closure[lab]:
                if x not in out:
                    out.append(x)
        order = list(self.rules.labels.names)
        return tuple(sorted(out, key=order.index))

    # ------------------------------------------------------------------ labelling
    def label_text(self, text: str) -> list[Mention]:
        """Mentions in one text, in text order (one per label and span)."""
        return self.label_texts([text])[0]

    def label_texts(self, texts: list[str], batch_size: int = 256) -> list[list[Mention]]:
        """Mentions of many texts.

        Texts are split into sentences (after ``.``, ``!`` or ``?`` followed by white space or the
        end; "3.5 cm" does not split) and every distinct sentence not in the cache is labelled once
        with ``nlp.pipe``. Negation and uncertainty scopes never cross a sentence, so labelling
        sentence by sentence gives the same mentions as labelling the whole text, much faster on
        real reports, which repeat sentences. ``sentence_idx`` is the index of that sentence.
        """
        split = [split_sentences(t or "") for t in texts]
        todo: list[str] = []
        with self._lock:
            known = set()
            for pieces in split:
                for _, sent in pieces:
                    if sent in known:
                        continue
                    known.add(sent)
                    if sent in self._cache:
                        self._cache.move_to_end(sent)
                    else:
                        todo.append(sent)
        fresh: dict[str, list[Mention]] = {}
        if todo:
            for sent, doc in zip(todo, self.nlp.pipe(todo, batch_size=batch_size)):
                fresh[sent] = self._mentions(doc)
            with self._lock:
                self._cache.update(fresh)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        out: list[list[Mention]] = []
        for pieces in split:
            ms: list[Mention] = []
            for i, (off, sent) in enumerate(pieces):
                local = fresh.get(sent)
                if local is None:
                    local = self._cache.get(sent)
                    if local is None:  # evicted meanwhile
                        local = self._mentions(self.nlp(sent))
                ms.extend(
                    Mention(m.label, m.phrase, i, m.char_start + off, m.char_end + off, m.negated, m.uncertain)
                    for m in local
                )
            out.append(ms)
        return out

    def _mentions(self, doc) -> list[Mention]:
        strings = self.nlp.vocab.strings
        groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
        quals: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for mid, s, e in self._trig(doc):
            key = strings[mid]
            if key[0] == "Q":
                i, qlabel = key[1:].split(":", 1)
                quals[int(i)].append((s, e, qlabel))
            else:
                groups[key].append((s, e))
        sent_starts = [s.start for s in doc.sents]
        bounds = sorted(set(sent_starts) | {s for s, _ in groups["TERM"]})
        pseudo = groups["NPSEUDO"]
        npre = [(s, e) for s, e in groups["NPRE"] if not any(ps <= s <= pe for ps, pe in pseudo)]
        unm: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for mid, s, e in self._unm(doc):
            unm[strings[mid]].append((s, e))

        def seg(i: int) -> int:
            return bisect_right(bounds, i) - 1

        stops = set(self.rules.uncertainty_stops)
        out: list[Mention] = []
        seen: set[tuple[str, int, int]] = set()
        for ent in doc.ents:
            es = seg(ent.start)
            negated = bool(getattr(ent._, _EXT))
            key = ent.label_
            start_tok, end_tok = ent.start, ent.end
            if key.startswith("~"):
                i = int(key[1:])
                entry = self.rules.neutral[i]
                best = None
                for qs, qe, qlabel in quals.get(i, ()):
                    if seg(qs) != es:
                        continue
                    if qs >= ent.end:
                        d = qs - ent.end
                        if d > self.rules.neutral_reach_after:
                            continue
                    elif qe <= ent.start:
                        d = ent.start - qe
                        if d > self.rules.neutral_reach_before:
                            continue
                    else:
                        continue
                    if best is None or d < best[0]:
                        best = (d, qs, qe, qlabel)
                if best is not None:
                    _, qs, qe, qlabel = best
                    labels = [qlabel]
                    if qs >= ent.end and any(ent.end <= s < qs for s, _ in npre):
                        negated = True
                    start_tok, end_tok = min(ent.start, qs), max(ent.end, qe)
                elif negated:
                    labels = [entry.label]
                else:
                    continue
            else:
                labels = key.split("|")
            uncertain = any(e <= start_tok and seg(s) == es for s, e in groups["UPRE"]) or any(
                s >= end_tok
                and s - end_tok <= self.rules.uncertainty_reach
                and seg(s) == es
                and not any(doc[k].text in stops for k in range(end_tok, s))
                for s, _ in groups["UFOL"]
            )
            span = doc[start_tok:end_tok]
            sidx = bisect_right(sent_starts, ent.start) - 1
            for lab in labels:
                if any(s < ent.end and ent.start < e for s, e in unm.get(lab, ())):
                    continue
                for x in self._closure[lab]:
                    k = (x, span.start_char, span.end_char)
                    if k in seen:
                        continue
                    seen.add(k)
                    out.append(Mention(x, span.text, sidx, span.start_char, span.end_char, negated, uncertain))
        out.sort(key=lambda m: (m.char_start, m.char_end))
        return out

    def negated_spans(self, text: str, spans: list[tuple[int, int]]) -> list[bool]:
        """Whether each character span ``[start, end)`` of ``text`` lies in a negation scope (a
        preceding negation trigger before it or a following one after it, same sentence and scope,
        pseudo triggers ignored). Used for keyword sentences (paper 000 windows)."""
        doc = self.nlp.make_doc(text or "")
        for name, proc in self.nlp.pipeline:
            if name == "sentencizer":
                doc = proc(doc)
        strings = self.nlp.vocab.strings
        groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for mid, s, e in self._trig(doc):
            groups[strings[mid]].append((s, e))
        sent_starts = [s.start for s in doc.sents]
        bounds = sorted(set(sent_starts) | {s for s, _ in groups["TERM"]})
        pseudo = groups["NPSEUDO"]

        def real(triggers):
            return [(s, e) for s, e in triggers if not any(ps <= s <= pe for ps, pe in pseudo)]

        npre, nfol = real(groups["NPRE"]), real(groups["NFOL"])
        out = []
        for cs, ce in spans:
            span = doc.char_span(cs, ce, alignment_mode="expand")
            if span is None:
                out.append(False)
                continue
            sg = bisect_right(bounds, span.start) - 1
            neg = any(e <= span.start and bisect_right(bounds, s) - 1 == sg for s, e in npre) or any(
                s >= span.end and bisect_right(bounds, s) - 1 == sg for s, _ in nfol
            )
            out.append(neg)
        return out

    # ------------------------------------------------------------------ per case
    def label_case(
        self,
        sentences: pl.DataFrame,
        words: pl.DataFrame,
        report_text: str | None,
        *,
        dataset: str,
        case_id: str,
    ) -> pl.DataFrame:
        """Mentions of one case as a ``mentions`` table (:data:`gazeprep.schema.MENTIONS`).

        ``sentences`` and ``words`` come from :func:`gazeprep.text.sentences.build_sentences` (char
        offsets into ``report_text``; pass the same text as to ``build_sentences``; ``None`` means
        the text rebuilt from the words, as ``build_sentences`` does; so does ``""``). A mention's ``sentence_idx`` is the sentence whose character
        range holds its first character (else the first sentence ending after it, as 004's code
        does); ``t_start_s`` is the start of the word in which it begins and ``t_end_s`` the end of
        the word in which it ends (null when no word covers it).
        """
        if not report_text and words.height:
            from gazeprep.text.sentences import rebuild_reflacx_text

            toks = [t or "" for t in words.sort("word_idx")["word"].to_list()]
            report_text = rebuild_reflacx_text(toks) if dataset == "reflacx" else " ".join(toks)
        if not report_text:
            return empty("mentions")
        mentions = self.label_text(report_text)
        if not mentions:
            return empty("mentions")
        s_ok = sentences.filter(pl.col("char_end").is_not_null()).sort("char_end") if sentences.height else sentences
        s_end = s_ok["char_end"].to_list() if s_ok.height else []
        s_idx = s_ok["sentence_idx"].to_list() if s_ok.height else []
        w = words.filter(pl.col("char_start").is_not_null() & pl.col("char_end").is_not_null()).sort("char_start")
        w_start = w["char_start"].to_list()
        w_end = w["char_end"].to_list()
        w_t0 = w["t_start_s"].to_list()
        w_t1 = w["t_end_s"].to_list()

        def word_at(c: int) -> int | None:
            # last word starting at or before c, if it covers c; else the next word
            k = bisect_right(w_start, c) - 1
            if k >= 0 and w_end[k] > c:
                return k
            return k + 1 if k + 1 < len(w_start) else None

        rows = []
        for m in mentions:
            si = bisect_right(s_end, m.char_start)
            sentence_idx = s_idx[si] if si < len(s_idx) else (s_idx[-1] if s_idx else None)
            k0 = word_at(m.char_start)
            k1 = word_at(max(m.char_end - 1, m.char_start))
            rows.append(
                {
                    "dataset": dataset,
                    "case_id": case_id,
                    "label": m.label,
                    "sentence_idx": sentence_idx,
                    "phrase": m.phrase,
                    "char_start": m.char_start,
                    "char_end": m.char_end,
                    "t_start_s": w_t0[k0] if k0 is not None else None,
                    "t_end_s": w_t1[k1] if k1 is not None else None,
                    "negated": m.negated,
                    "uncertain": m.uncertain,
                }
            )
        return pl.DataFrame(rows, schema=MENTIONS)
