"""Rule-based report labeler: which finding is mentioned where, negated, uncertain or hypothetical.

Pipeline (no trained spaCy model): ``spacy.blank("en")`` tokenizer and ``sentencizer``; mentions
from the profile's phrases (``entity_ruler``, lower-cased phrase matching of ``mention/*.txt`` and
the neutral phrases of ``neutral.yaml``; the longest overlapping phrase wins) or, in a ``regex``
profile, from CheXpert-style regular expressions (``mention_regex/``, every match a mention, a match
overlapping an ``unmention_regex/`` match dropped); then a ConText-style pass over trigger phrases:
negation (``negation/``), uncertainty (``uncertainty.yaml``) and the profile's context rules
(``context.yaml``: hypothetical statements, chronic findings that cancel an acute label, label-specific
rules). See :mod:`gazeprep.text.profiles` for the profile layout.

Scopes: a *preceding* trigger covers the mentions that start after it, a *following* trigger the
mentions that end before it, both within one sentence and up to a termination phrase ("but",
"there is", ...), a profile scope break (``profile.yaml``: e.g. "with", so that "cardiomegaly with
normal vessels" stays positive) and the rule's reach in tokens. A following uncertainty trigger also
stops at ``following_stops`` tokens and ``following_reach_tokens``. A negation trigger inside a
pseudo trigger ("no change", "cannot exclude") is ignored.

A mention is dropped when a ``cancel`` rule covers it (e.g. "old healed rib fracture" for the acute
fracture labels). Its status is ``uncertain`` under a pre-negation uncertainty rule (CheXpert's "no
new ..."), else ``negative`` when negated, else ``hypothetical`` under a hypothetical rule ("to
evaluate for pneumothorax", "evaluation for pneumothorax is limited"), else ``uncertain`` when
uncertain, else ``positive``. A report's status per label is the strongest over its mentions:
positive > uncertain > negative > hypothetical; ``absent`` when not mentioned (CheXpert convention).
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast

import polars as pl

from gazeprep.schema import MENTIONS, empty
from gazeprep.text.profiles import ProfileSpec, load_profile_spec, resolve_profile
from gazeprep.text.rules import RuleSet, load_rules

if TYPE_CHECKING:  # spaCy's add_pipe and Language.tokenizer are typed as plain callables
    from spacy.pipeline import EntityRuler
    from spacy.pipeline.entityruler import PatternType
    from spacy.tokens import Doc


class _Tokenizer(Protocol):
    """What the labeler uses of spaCy's (Cython, unstubbed) Tokenizer."""

    def pipe(self, texts: Iterable[str]) -> Iterable[Doc]: ...


STATUS_ORDER = ("positive", "uncertain", "negative", "hypothetical")  # strongest first


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
    hypothetical: bool = False

    @property
    def status(self) -> str:
        """``negative`` / ``hypothetical`` / ``uncertain`` / ``positive`` (in that precedence)."""
        if self.negated:
            return "negative"
        if self.hypothetical:
            return "hypothetical"
        return "uncertain" if self.uncertain else "positive"


def report_status(
    mentions: Iterable[Mention], aggregation: str = "strongest", chf_label: str | None = None
) -> dict[str, str]:
    """Per label, the report status over ``mentions``.

    ``aggregation="strongest"``: the strongest status (positive > uncertain > negative >
    hypothetical). ``"chexpert"``: CheXpert's ``dict_to_vec`` (a label with negative, uncertain and
    positive mentions is uncertain there) and, when ``chf_label`` is given, its "chf" / "heart
    failure" exception (:func:`gazeprep.text.chexpert_text.report_codes`); hypothetical mentions
    count as absent there.
    """
    if aggregation == "chexpert":
        from gazeprep.text.chexpert_text import report_codes

        return report_codes(((m.label, m.status, " ".join(m.phrase.split())) for m in mentions), chf_label)
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


_CACHE: dict[tuple[str, str], Labeler] = {}
_CACHE_LOCK = threading.Lock()


class _Trigger(NamedTuple):
    start: int  # token index, inclusive
    end: int  # token index, exclusive
    category: str  # negated / uncertain / uncertain_first / hypothetical / cancel / unnegated
    direction: str  # preceding / following / overlap
    labels: frozenset[str] | None
    reach: int | None
    stops: bool  # a following trigger that does not reach back over uncertainty stop tokens
    mentions: re.Pattern[str] | None = None  # the mention's lower-cased text must contain a match


class _Context(NamedTuple):
    """Trigger matches of one doc (token indices): see :meth:`Labeler._context`."""

    triggers: list[_Trigger]
    quals: dict[int, list[tuple[int, int, str]]]  # qualifier entry -> (start, end, label)
    sent_starts: list[int]
    b_pre: list[int]  # boundaries of preceding-trigger scopes
    b_fol: list[int]  # boundaries of following-trigger scopes
    groups: dict[str, list[tuple[int, int]]]  # trigger group -> spans


class _Flags(NamedTuple):
    cancel: bool
    negated: bool
    uncertain: bool
    hypothetical: bool


#: A candidate mention: (labels, token start, token end, char start, char end, negated by its qualifier).
_Span = tuple[list[str], int, int, int, int, bool]


class Labeler:
    """A compiled rule profile. Build it with :meth:`from_rules` (cached per rules folder and profile)."""

    def __init__(self, rules: RuleSet, cache_size: int = 200000, spec: ProfileSpec | None = None):
        import spacy
        from spacy.matcher import PhraseMatcher

        self.rules = rules
        self.spec = spec if spec is not None else ProfileSpec(name="gazeprep", dir=rules.rules_dir)
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        self._regex = self.spec.matching == "regex"
        self._clean = self.spec.cleaning == "chexpert"
        if not self._regex:
            labels_of: dict[str, set[str]] = defaultdict(set)
            for lab, phrases in rules.mentions.items():
                for p in phrases:
                    labels_of[p].add(lab)
            patterns: list[PatternType] = [
                {"label": "|".join(sorted(labs)), "pattern": p} for p, labs in labels_of.items()
            ]
            for i, entry in enumerate(rules.neutral):
                for p in entry.phrases:
                    if p not in labels_of:
                        patterns.append({"label": f"~{i}", "pattern": p})
            ruler = cast(
                "EntityRuler",
                nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "validate": False}),
            )
            ruler.add_patterns(patterns)
        # regex profiles: per label, one combined pre-filter and the expressions in file order
        self._mention_re: list[tuple[str, re.Pattern, list[re.Pattern]]] = []
        for lab, exprs in self.spec.mention_regex.items():
            if exprs:
                self._mention_re.append(
                    (lab, re.compile("|".join(f"(?:{x})" for x in exprs)), [re.compile(x) for x in exprs])
                )
        self._unmention_re = {lab: [re.compile(x) for x in xs] for lab, xs in self.spec.unmention_regex.items() if xs}
        self.nlp = nlp

        def docs(phrases: Iterable[str]) -> list[Doc]:
            return list(cast(_Tokenizer, nlp.tokenizer).pipe(phrases))

        trig = PhraseMatcher(nlp.vocab, attr="LOWER")

        def add(key: str, phrases: Sequence[str]) -> None:
            if phrases:
                trig.add(key, docs(phrases))

        add("TERM", rules.negation["termination"])
        add("NPRE", rules.negation["preceding"])
        add("NPSEUDO", rules.negation["pseudo"])
        add("NFOL", rules.negation["following"])
        add("UPRE", rules.uncertainty_preceding)
        add("UFOL", rules.uncertainty_following)
        add("BPRE", self.spec.breaks_preceding)
        add("BFOL", self.spec.breaks_following)
        for i, rule in enumerate(self.spec.context):
            add(f"C{i}", rule.phrases)
        for i, entry in enumerate(rules.neutral):
            for qlabel, qphrases in entry.qualifiers.items():
                add(f"Q{i}:{qlabel}", qphrases)
        self._trig = trig
        unm = PhraseMatcher(nlp.vocab, attr="LOWER")
        for lab, phrases in rules.unmentions.items():
            if phrases:
                unm.add(lab, docs(phrases))
        self._unm = unm
        self._closure = {lab: rules.labels.closure(lab) for lab in rules.labels.names}
        self._final_next = frozenset(self.spec.clause_final_next)
        self._rule_mentions = [re.compile(r.mentions) if r.mentions else None for r in self.spec.context]
        self._cache: OrderedDict[str, list[Mention]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_rules(cls, rules_dir: str | Path | None = None, profile: str | None = None) -> Labeler:
        """The labeler of a rules folder (default ``gazeprep.paths.default_rules_dir()``) and profile
        (default ``gazeprep``; ``lanfredi2023`` reproduces paper 004's labeler), built once per
        process, folder and profile.

        Raises :class:`~gazeprep.errors.RecipeError` (one line listing the known profiles) for an
        unknown profile, or naming the file and line of a bad rule.
        """
        from gazeprep.paths import default_rules_dir  # the default honours $GAZEPREP_RULES_DIR

        name = resolve_profile(profile)
        key = (str(default_rules_dir(rules_dir).resolve()), name)
        with _CACHE_LOCK:
            lab = _CACHE.get(key)
            if lab is None:
                rules = load_rules(rules_dir, name)
                lab = cls(rules, spec=load_profile_spec(name, rules_dir))
                _CACHE[key] = lab
        return lab

    @property
    def profile(self) -> str:
        """Name of the rule profile (``gazeprep``, ``lanfredi2023``, ...)."""
        return self.spec.name

    @property
    def profile_hash(self) -> str:
        """SHA-256 of ``labels.yaml`` and the profile's rule files (:func:`gazeprep.text.profiles.profile_hash`)."""
        return self.spec.hash

    @property
    def label_ids(self) -> tuple[str, ...]:
        """Every label this labeler can emit (mention labels, qualifier labels and their implications)."""
        out: list[str] = []
        direct = list(self.rules.mentions) + [lab for lab, _, _ in self._mention_re]
        for e in self.rules.neutral:
            direct += [e.label, *e.qualifiers]
        for lab in direct:
            for x in self._closure[lab]:
                if x not in out:
                    out.append(x)
        order = list(self.rules.labels.names)
        return tuple(sorted(out, key=order.index))

    def report_status(self, mentions: Iterable[Mention]) -> dict[str, str]:
        """Report status per label of one text's mentions, with the profile's aggregation
        (:func:`report_status`; ``lanfredi2023``: CheXpert's, whose chf exception names
        ``enlarged_cardiac_silhouette``, 004's renamed Cardiomegaly category)."""
        if self.spec.aggregation == "chexpert":
            chf = "enlarged_cardiac_silhouette" if "enlarged_cardiac_silhouette" in self._closure else None
            return report_status(mentions, "chexpert", chf)
        return report_status(mentions)

    def _split(self, text: str) -> tuple[list[tuple[int, str]], list[int] | None]:
        """Sentences of one text as ``(offset, sentence)`` and, for a ``chexpert``-cleaning profile,
        the original index of every character of the cleaned text the offsets refer to."""
        if self._clean:
            from gazeprep.text.chexpert_text import clean_report, split_clean_sentences

            clean, idx = clean_report(text)
            return split_clean_sentences(clean), idx
        return split_sentences(text), None

    # ------------------------------------------------------------------ labelling
    def label_text(self, text: str) -> list[Mention]:
        """Mentions in one text, in text order (one per label and span)."""
        return self.label_texts([text])[0]

    def label_texts(self, texts: list[str], batch_size: int = 256) -> list[list[Mention]]:
        """Mentions of many texts.

        Texts are split into sentences (after ``.``, ``!`` or ``?`` followed by white space or the
        end; "3.5 cm" does not split) and every distinct sentence not in the cache is labelled once
        with ``nlp.pipe``. Scopes never cross a sentence, so labelling sentence by sentence gives the
        same mentions as labelling the whole text, much faster on real reports, which repeat
        sentences. ``sentence_idx`` is the index of that sentence.
        """
        texts = [t or "" for t in texts]
        split = [self._split(t) for t in texts]
        todo: list[str] = []
        with self._lock:
            known = set()
            for pieces, _ in split:
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
        for text, (pieces, idx) in zip(texts, split):
            ms: list[Mention] = []
            for i, (off, sent) in enumerate(pieces):
                local = fresh.get(sent)
                if local is None:
                    local = self._cache.get(sent)
                    if local is None:  # evicted meanwhile
                        local = self._mentions(self.nlp(sent))
                for m in local:
                    cs, ce, phrase = m.char_start + off, m.char_end + off, m.phrase
                    if idx is not None:  # offsets into the cleaned text -> into the original
                        cs, ce = idx[cs], idx[ce - 1] + 1
                        phrase = text[cs:ce]
                    ms.append(Mention(m.label, phrase, i, cs, ce, m.negated, m.uncertain, m.hypothetical))
            out.append(ms)
        return out

    # ------------------------------------------------------------------ scopes
    def _context(self, doc: Doc) -> _Context:
        """Trigger matches of one doc: (triggers, qualifier matches, sentence starts, boundaries)."""
        strings = self.nlp.vocab.strings
        groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
        quals: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for mid, s, e in self._trig(doc):
            key = strings[mid]
            if key[0] == "Q":
                qidx, qlabel = key[1:].split(":", 1)
                quals[int(qidx)].append((s, e, qlabel))
            else:
                groups[key].append((s, e))
        # sentence starts from the sentencizer's flags (iterating doc.sents builds every Token)
        flags = doc.to_array("SENT_START") if len(doc) else ()
        sent_starts = [0] + [i for i in range(1, len(flags)) if flags[i] == 1] if len(doc) else [0]
        term = sorted({s for s, _ in groups["TERM"]})
        b_pre = sorted(set(term) | {s for s, _ in groups["BPRE"]} | set(sent_starts[1:]))
        bfol = {s for s, _ in groups["BFOL"]}
        if self.spec.list_commas:
            bfol -= self._list_commas(doc)
        b_fol = sorted(set(term) | bfol | set(sent_starts[1:]))
        pseudo = groups["NPSEUDO"]

        def real(
            spans: Iterable[tuple[int, int]],
        ) -> list[tuple[int, int]]:  # a negation trigger that starts inside a pseudo trigger is no trigger
            return [(s, e) for s, e in spans if not any(ps <= s < pe for ps, pe in pseudo)]

        n = len(doc)
        term_starts = set(term) | {s for s, _ in groups["BFOL"]}

        def clause_final(e: int) -> bool:
            return e >= n or doc[e].is_punct or doc[e].lower_ in self._final_next or e in term_starts

        trig: list[_Trigger] = []
        trig += [_Trigger(s, e, "negated", "preceding", None, None, False) for s, e in real(groups["NPRE"])]
        trig += [_Trigger(s, e, "negated", "following", None, None, False) for s, e in real(groups["NFOL"])]
        trig += [_Trigger(s, e, "uncertain", "preceding", None, None, False) for s, e in groups["UPRE"]]
        reach = self.rules.uncertainty_reach
        trig += [_Trigger(s, e, "uncertain", "following", None, reach, True) for s, e in groups["UFOL"]]
        for i, rule in enumerate(self.spec.context):
            spans = groups.get(f"C{i}", ())
            if rule.category in ("negated", "hypothetical"):  # "cannot rule out" is no "rule out"
                spans = real(spans)
            for s, e in spans:
                if rule.clause_final and rule.direction == "following" and not clause_final(e):
                    continue
                mrx = self._rule_mentions[i]
                trig.append(_Trigger(s, e, rule.category, rule.direction, rule.labels, rule.reach_tokens, False, mrx))
        return _Context(trig, quals, sent_starts, b_pre, b_fol, groups)

    @staticmethod
    def _list_commas(doc: Doc) -> set[int]:
        """Token indices of the commas of a list ("A, B and C"): a comma followed, before the next
        comma, semicolon or sentence end, by "and" / "or", or followed by another list comma."""
        out: set[int] = set()
        conj_ahead = False  # scanning right to left: an and/or (or a list comma) before the next stop
        for i in range(len(doc) - 1, -1, -1):
            w = doc[i].lower_
            if w == ",":
                if conj_ahead:
                    out.add(i)
                conj_ahead = i in out  # a list comma chains to the comma before it
            elif w in ("and", "or"):
                conj_ahead = True
            elif w in (";", ":", ".") or doc[i].is_sent_start:
                conj_ahead = False
        return out

    def _covers(self, t: _Trigger, start: int, end: int, doc: Doc, b_pre: list[int], b_fol: list[int]) -> bool:
        """Whether trigger ``t`` covers the token span ``[start, end)``."""
        if t.direction == "overlap":
            return t.start < end and start < t.end
        if t.direction == "preceding":
            if t.end > start:
                return False
            if t.reach is not None and start - t.end > t.reach:
                return False
            k = bisect_right(b_pre, t.end - 1)  # first boundary at or after the trigger's end
            return not (k < len(b_pre) and b_pre[k] <= start)
        # following
        if t.start < end:
            return False
        if t.reach is not None and t.start - end > t.reach:
            return False
        k = bisect_right(b_fol, end - 1)  # first boundary at or after the mention's end
        if k < len(b_fol) and b_fol[k] < t.start:
            return False
        if t.stops:
            stops = self.rules.uncertainty_stops
            if any(doc[j].text in stops for j in range(end, t.start)):
                return False
        return True

    def _flags(
        self,
        trig: list[_Trigger],
        label: str | None,
        start: int,
        end: int,
        doc: Doc,
        b_pre: list[int],
        b_fol: list[int],
    ) -> _Flags:
        hit = {
            "cancel": False,
            "negated": False,
            "uncertain": False,
            "uncertain_first": False,
            "hypothetical": False,
            "unnegated": False,
        }
        mtext: str | None = None
        for t in trig:
            if hit[t.category]:
                continue
            if t.labels is not None and label not in t.labels:
                continue
            if t.mentions is not None:
                if mtext is None:
                    mtext = doc[start:end].text.lower()
                if not t.mentions.search(mtext):
                    continue
            if self._covers(t, start, end, doc, b_pre, b_fol):
                hit[t.category] = True
        if hit["unnegated"]:
            hit["negated"] = False
        if hit["uncertain_first"]:
            return _Flags(hit["cancel"], False, True, False)
        return _Flags(hit["cancel"], hit["negated"], hit["uncertain"], hit["hypothetical"])

    def _spans(
        self,
        doc: Doc,
        quals: dict[int, list[tuple[int, int, str]]],
        trig: list[_Trigger],
        b_pre: list[int],
        b_fol: list[int],
        sent_starts: list[int],
    ) -> list[_Span]:
        """Candidate mentions: (labels, token start, token end, char start, char end, negated-by-qualifier),
        from the regular expressions of a ``regex`` profile, else from the matched phrases."""
        if self._regex:
            return self._regex_spans(doc)
        return self._phrase_spans(doc, quals, trig, b_pre, b_fol, sent_starts)

    def _regex_spans(self, doc: Doc) -> list[_Span]:
        """Every non-empty match of a label's mention expressions in the lower-cased text that overlaps no
        match of the label's unmention expressions, widened to whole tokens (dropped when no token
        covers it)."""
        out: list[_Span] = []
        text = doc.text.lower()
        for lab, pre, exprs in self._mention_re:
            if not pre.search(text):
                continue
            unm_rx = self._unmention_re.get(lab, ())
            unm: list[tuple[int, int]] | None = None  # the label's unmention spans, found once if needed
            for rx in exprs:
                for m in rx.finditer(text):
                    cs, ce = m.span()
                    if ce <= cs:
                        continue
                    if unm is None:
                        unm = [x.span() for u in unm_rx for x in u.finditer(text)]
                    if any(us < ce and cs < ue for us, ue in unm):
                        continue
                    span = doc.char_span(cs, ce, alignment_mode="expand")
                    if span is None:
                        continue
                    out.append(([lab], span.start, span.end, cs, ce, False))
        return out

    def _phrase_spans(
        self,
        doc: Doc,
        quals: dict[int, list[tuple[int, int, str]]],
        trig: list[_Trigger],
        b_pre: list[int],
        b_fol: list[int],
        sent_starts: list[int],
    ) -> list[_Span]:
        """The phrase matches (``doc.ents``): a mention phrase counts for each of its labels that no
        unmention phrase of that label overlaps; a neutral phrase as :meth:`_neutral_span` says."""
        strings = self.nlp.vocab.strings
        unm: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for mid, s, e in self._unm(doc):
            unm[strings[mid]].append((s, e))
        seg_bounds = sorted(set(sent_starts) | set(b_pre) | set(b_fol))
        out: list[_Span] = []
        for ent in doc.ents:
            key = ent.label_
            start_tok, end_tok, qneg = ent.start, ent.end, False
            if key.startswith("~"):
                found = self._neutral_span(doc, ent.start, ent.end, int(key[1:]), quals, trig, b_pre, b_fol, seg_bounds)
                if found is None:
                    continue
                labels, start_tok, end_tok, qneg = found
            else:
                labels = [
                    lab for lab in key.split("|") if not any(s < ent.end and ent.start < e for s, e in unm.get(lab, ()))
                ]
            if labels:
                span = doc[start_tok:end_tok]
                out.append((labels, start_tok, end_tok, span.start_char, span.end_char, qneg))
        return out

    def _neutral_span(
        self,
        doc: Doc,
        start: int,
        end: int,
        i: int,
        quals: dict[int, list[tuple[int, int, str]]],
        trig: list[_Trigger],
        b_pre: list[int],
        b_fol: list[int],
        seg_bounds: list[int],
    ) -> tuple[list[str], int, int, bool] | None:
        """A neutral phrase (tokens ``[start, end)``, entry ``i`` of ``neutral.yaml``) as (labels, token
        start, token end, negated-by-qualifier). It takes the label of its nearest qualifier in the same
        segment (sentence or scope break) within the neutral reach (after it, else before it; the first
        of equally near ones), the span growing to cover the qualifier, negated when a preceding negation
        trigger lies between the phrase and a qualifier after it. Without a qualifier it is a mention of
        its own label only when negated ("heart size is stable" says nothing); else None."""

        def seg(t: int) -> int:
            return bisect_right(seg_bounds, t)

        best = None
        es = seg(start)
        for qs, qe, qlabel in quals.get(i, ()):
            if seg(qs) != es and seg(qe - 1) != es:
                continue
            if qs >= end:
                d = qs - end
                if d > self.rules.neutral_reach_after:
                    continue
            elif qe <= start:
                d = start - qe
                if d > self.rules.neutral_reach_before:
                    continue
            else:
                continue
            if best is None or d < best[0]:
                best = (d, qs, qe, qlabel)
        if best is None:
            label = self.rules.neutral[i].label
            if not self._flags(trig, label, start, end, doc, b_pre, b_fol).negated:
                return None
            return [label], start, end, False
        _, qs, qe, qlabel = best
        npre = [t for t in trig if t.category == "negated" and t.direction == "preceding"]
        qneg = qs >= end and any(end <= t.start < qs for t in npre)
        return [qlabel], min(start, qs), max(end, qe), qneg

    def _mentions(self, doc: Doc) -> list[Mention]:
        trig, quals, sent_starts, b_pre, b_fol, _ = self._context(doc)
        out: list[Mention] = []
        seen: set[tuple[str, int, int]] = set()
        text = doc.text
        for labels, start_tok, end_tok, cs, ce, qneg in self._spans(doc, quals, trig, b_pre, b_fol, sent_starts):
            sidx = bisect_right(sent_starts, start_tok) - 1
            for lab in labels:
                f = self._flags(trig, lab, start_tok, end_tok, doc, b_pre, b_fol)
                if f.cancel:
                    continue
                negated = f.negated or qneg
                for x in self._closure[lab]:
                    k = (x, cs, ce)
                    if k in seen:
                        continue
                    seen.add(k)
                    out.append(Mention(x, text[cs:ce], sidx, cs, ce, negated, f.uncertain, f.hypothetical))
        out.sort(key=lambda m: (m.char_start, m.char_end))
        return out

    def negated_spans(self, text: str, spans: list[tuple[int, int]]) -> list[bool]:
        """Whether each character span ``[start, end)`` of ``text`` lies in a negation scope (a
        preceding negation trigger before it or a following one after it, same sentence and scope,
        pseudo triggers ignored; label-specific context rules do not apply). Used for keyword
        sentences (paper 000 windows)."""
        doc = self.nlp.make_doc(text or "")
        for name, proc in self.nlp.pipeline:
            if name == "sentencizer":
                doc = proc(doc)
        trig, _, _, b_pre, b_fol, _ = self._context(doc)
        neg = [t for t in trig if t.category == "negated" and t.labels is None]
        out = []
        for cs, ce in spans:
            span = doc.char_span(cs, ce, alignment_mode="expand")
            if span is None:
                out.append(False)
                continue
            out.append(any(self._covers(t, span.start, span.end, doc, b_pre, b_fol) for t in neg))
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
        the word in which it ends (null when no word covers it). Hypothetical mentions are not
        rows of this table (it has no column for them; see :meth:`label_text`).
        """
        if not report_text and words.height:
            from gazeprep.datasets.registry import transcript_style

            toks = [t or "" for t in words.sort("word_idx")["word"].to_list()]
            report_text = transcript_style(dataset).join(toks)
        if not report_text:
            return empty("mentions")
        # the mentions table has no hypothetical flag: hypothetical mentions ("to evaluate for
        # pneumothorax") are neither positive nor negated, so they are left out of it
        mentions = [m for m in self.label_text(report_text) if not m.hypothetical]
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
