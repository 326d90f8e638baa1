"""Accumulation windows: which time interval of a reading feeds each target's heatmap.

One function, :func:`compute_windows`, for every window rule of :mod:`gazeprep.recipes`:

* :class:`~gazeprep.recipes.SentenceWindow` (paper 004, section 2.8): one window per sentence that
  holds a selected mention (status in ``rule.mentions``), shared by every label selected in it::

      t_start = max(anchor(rule.start) - rule.lag_s, floor(rule.not_before))
      t_end   = anchor(rule.end)

  Anchors: ``sentence_start`` / ``sentence_end`` (first word start / final '.' end),
  ``first_mention`` / ``last_mention`` (start of the word in which the sentence's first / last
  selected mention begins, any label, by character position), ``previous_sentence_start`` /
  ``previous_sentence_end`` (0 for the first sentence), ``report_start`` (start of the first word),
  ``recording_start`` (0). Floor ``none`` means no floor. A window whose end is before its start is
  not emitted (004 only kept combinations with a duration of 0 s or more); it is reported in
  ``rejects`` when a list is given.
* :class:`~gazeprep.recipes.KeywordWindow` (paper 000): per target (heart, left_lung, right_lung),
  ``[0, end of the rightmost sentence containing a keyword of the target]``; keyword sets are
  ``rules/<rule.keywords>.yaml``. Negated keyword sentences count by default, as 000's plain keyword
  search does (``count_negated`` in the YAML).
* :class:`~gazeprep.recipes.WholeRecordingWindow`: target ``full``, ``[0, recording end]`` or
  ``[0, end of the last word]``.
* :class:`~gazeprep.recipes.PhraseWindow`: one window per word/phrase (targets ``phrase_0000``...),
  ``[start - lag_s, end]`` of that word.

All times are seconds on the case's clock (REFLACX: from the audio start; EGD-CXR: from the image
onset). ``window_idx`` numbers the windows of one target 0, 1, ... in time order.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from gazeprep.errors import RecipeError
from gazeprep.recipes import KeywordWindow, PhraseWindow, SentenceWindow, WholeRecordingWindow
from gazeprep.registry import Registry
from gazeprep.schema import WINDOWS, empty, reject
from gazeprep.text.rules import load_keyword_sets

if TYPE_CHECKING:
    from gazeprep.text.labeler import Labeler


def _status_expr() -> pl.Expr:
    return (
        pl.when(pl.col("negated"))
        .then(pl.lit("negative"))
        .when(pl.col("uncertain"))
        .then(pl.lit("uncertain"))
        .otherwise(pl.lit("positive"))
    )


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=WINDOWS) if rows else empty("windows")


def compute_windows(
    rule: SentenceWindow | KeywordWindow | WholeRecordingWindow | PhraseWindow,
    *,
    sentences: pl.DataFrame,
    words: pl.DataFrame,
    mentions: pl.DataFrame,
    recording_end_s: float,
    dataset: str,
    case_id: str,
    recipe: str,
    rejects: list[dict] | None = None,
    rules_dir: str | Path | None = None,
) -> pl.DataFrame:
    """The ``windows`` rows (:data:`gazeprep.schema.WINDOWS`) of one case under ``rule``.

    Parameters
    ----------
    sentences, words, mentions:
        The case's tables (from :func:`~gazeprep.text.sentences.build_sentences` and
        :meth:`~gazeprep.text.labeler.Labeler.label_case`).
    recording_end_s:
        End of the reading in seconds (e.g. the last fixation or gaze sample end).
    recipe:
        Recipe name written into the ``recipe`` column.
    rejects:
        If given, windows that cannot be formed are appended to it as rejects rows (stage ``windows``).
    rules_dir:
        Where KeywordWindow looks for its keyword file and SentenceWindow for its ``label_group``
        (default rules folder).

    A SentenceWindow with a ``label_group`` keeps only the targets of that group of
    ``rules/labels.yaml`` (``window_idx`` still counts each kept target's windows 0, 1, ...).
    Whether a rule can be placed without a transcript is the rule's own declaration,
    ``rule.needs_transcript`` (only a whole-recording window ending at the recording's end needs none).

    The computation is the one registered in :data:`WINDOW_RULES` under ``rule.kind``; a kind with
    none raises :class:`~gazeprep.registry.RegistryError` listing the registered kinds.
    """
    case = WindowCase(
        sentences=sentences,
        words=words,
        mentions=mentions,
        recording_end_s=recording_end_s,
        ctx={"dataset": dataset, "case_id": case_id, "recipe": recipe},
        rejects=rejects,
        rules_dir=rules_dir,
    )
    return WINDOW_RULES.get(rule.kind)(rule, case)


@dataclass(frozen=True)
class WindowCase:
    """One case's inputs to a window rule (the keyword arguments of :func:`compute_windows`);
    ``ctx`` holds the ``dataset``, ``case_id`` and ``recipe`` columns of every row."""

    sentences: pl.DataFrame
    words: pl.DataFrame
    mentions: pl.DataFrame
    recording_end_s: float
    ctx: dict[str, str]
    rejects: list[dict] | None
    rules_dir: str | Path | None


#: A window rule's computation: ``fn(rule, case) -> windows rows``.
WindowFn = Callable[[Any, WindowCase], pl.DataFrame]

#: Window-rule kind (the ``kind`` field of :data:`gazeprep.recipes.WindowRule`) -> its computation;
#: :func:`compute_windows` dispatches through it. A new rule is a recipe model with a new ``kind``
#: and one function registered here with :func:`window_rule`.
WINDOW_RULES: Registry[WindowFn] = Registry("window rule")


def window_rule(kind: str) -> Callable[[WindowFn], WindowFn]:
    """Decorator: register ``fn`` as the computation of window rules of kind ``kind``."""

    def deco(fn: WindowFn) -> WindowFn:
        return WINDOW_RULES.register(kind, fn)

    return deco


@window_rule("sentence")
def _sentence_rule(rule: SentenceWindow, case: WindowCase) -> pl.DataFrame:
    windows = _sentence_windows(rule, case.sentences, case.words, case.mentions, case.ctx, case.rejects)
    if rule.label_group is not None:
        windows = windows.filter(pl.col("target").is_in(list(_group_labels(rule.label_group, case.rules_dir))))
    return windows


@window_rule("keyword_sentences")
def _keyword_rule(rule: KeywordWindow, case: WindowCase) -> pl.DataFrame:
    return _keyword_windows(rule, case.sentences, case.ctx, case.rules_dir)


@window_rule("whole_recording")
def _whole_recording_rule(rule: WholeRecordingWindow, case: WindowCase) -> pl.DataFrame:
    end: float | None
    if rule.end == "recording_end":
        end = case.recording_end_s
    else:
        words = case.words
        ends = [t for t in words["t_end_s"].to_list() if t is not None] if words.height else []
        end = max(ends) if ends else None
    if end is None or (isinstance(end, float) and math.isnan(end)):
        if case.rejects is not None:
            case.rejects.append(
                reject(
                    case.ctx["dataset"],
                    case.ctx["case_id"],
                    "windows",
                    None,
                    None,
                    "no end time for the whole-recording window",
                )
            )
        return empty("windows")
    return _frame(
        [{**case.ctx, "target": "full", "window_idx": 0, "sentence_idx": None, "t_start_s": 0.0, "t_end_s": float(end)}]
    )


@window_rule("phrase")
def _phrase_rule(rule: PhraseWindow, case: WindowCase) -> pl.DataFrame:
    return _phrase_windows(rule, case.sentences, case.words, case.ctx)


def _group_labels(group: str, rules_dir: str | Path | None) -> tuple[str, ...]:
    """The labels of ``group`` in ``rules/labels.yaml`` (RecipeError naming the known groups)."""
    from gazeprep.text.labels import label_groups

    groups = label_groups(rules_dir)
    if group not in groups:
        raise RecipeError(
            f"window label_group {group!r} is not a group of labels.yaml (known: {', '.join(sorted(groups))})"
        )
    return groups[group]


#: One mention row (``label``, ``sentence_idx``, ``char_start``, ``t_start_s``, ...), by column name.
_Mention = dict[str, Any]


@dataclass(frozen=True)
class _SentenceTimes:
    """The case's sentence times in ``sentence_idx`` order (seconds), for the anchors of one sentence."""

    position: dict[int, int]  # sentence_idx -> position in the lists below
    t_start: list[float]
    t_end: list[float]
    report_start: float  # start of the first timed word (first sentence start without words)

    @classmethod
    def of(cls, sentences: pl.DataFrame, words: pl.DataFrame) -> _SentenceTimes:
        s = sentences.sort("sentence_idx")
        s_t0 = s["t_start_s"].to_list()
        w_t0 = [t for t in words["t_start_s"].to_list() if t is not None] if words.height else []
        report_start = min(w_t0) if w_t0 else (s_t0[0] if s_t0 else 0.0)
        position = {k: i for i, k in enumerate(s["sentence_idx"].to_list())}
        return cls(position, s_t0, s["t_end_s"].to_list(), report_start)

    def anchors(self, i: int, timed: list[_Mention]) -> dict[str, float | None]:
        """Anchor name -> time of the sentence at position ``i``, whose mentions with word times are
        ``timed`` (sorted by ``char_start``); mention anchors are None without any."""
        first_m = timed[0]["t_start_s"] if timed else None
        # the mention that begins last (largest char_start); ties keep the later word start
        last_m = max(timed, key=lambda r: (r["char_start"], r["t_start_s"]))["t_start_s"] if timed else None
        floors = self.floors(i)
        return {
            "sentence_start": self.t_start[i],
            "sentence_end": self.t_end[i],
            "first_mention": first_m,
            "last_mention": last_m,
            **{k: floors[k] for k in ("previous_sentence_start", "previous_sentence_end", "report_start")},
            "recording_start": 0.0,
        }

    def floors(self, i: int) -> dict[str, float]:
        """``not_before`` name -> earliest window start of the sentence at position ``i`` (0 before
        the first sentence; ``none``: no floor)."""
        return {
            "previous_sentence_start": self.t_start[i - 1] if i > 0 else 0.0,
            "previous_sentence_end": self.t_end[i - 1] if i > 0 else 0.0,
            "report_start": self.report_start,
            "recording_start": 0.0,
            "none": -math.inf,
        }


def _selected_mentions(rule: SentenceWindow, mentions: pl.DataFrame) -> dict[int, list[_Mention]]:
    """``sentence_idx`` -> the mentions whose status is in ``rule.mentions``, by ``char_start``."""
    sel = mentions.with_columns(_status_expr().alias("_status")).filter(
        pl.col("_status").is_in(list(rule.mentions)) & pl.col("sentence_idx").is_not_null()
    )
    by_sentence: dict[int, list[_Mention]] = {}
    for rec in sel.sort(["sentence_idx", "char_start"]).iter_rows(named=True):
        by_sentence.setdefault(rec["sentence_idx"], []).append(rec)
    return by_sentence


def _sentence_window(
    rule: SentenceWindow, sidx: int, recs: list[_Mention], times: _SentenceTimes
) -> tuple[float, float] | str:
    """``(t_start, t_end)`` of the window of sentence ``sidx`` with the selected mentions ``recs``,
    or the reason there is none."""
    i = times.position.get(sidx)
    if i is None:
        return f"mention in unknown sentence {sidx}"
    a0, a1 = (times.anchors(i, [r for r in recs if r["t_start_s"] is not None])[k] for k in (rule.start, rule.end))
    if a0 is None or a1 is None:
        return f"sentence {sidx}: mention without word times; no window"
    t_start = max(a0 - rule.lag_s, times.floors(i)[rule.not_before])
    if a1 < t_start:
        return f"sentence {sidx}: window end {a1:.3f} s before start {t_start:.3f} s; no window"
    return float(t_start), float(a1)


def _sentence_windows(
    rule: SentenceWindow,
    sentences: pl.DataFrame,
    words: pl.DataFrame,
    mentions: pl.DataFrame,
    ctx: dict[str, str],
    rejects: list[dict[str, Any]] | None,
) -> pl.DataFrame:
    """One window per sentence holding a selected mention, one row per label selected in it (in
    order of first mention); sentences without a window are rejects (see the module docstring)."""
    if sentences.height == 0 or mentions.height == 0:
        return empty("windows")
    by_sentence = _selected_mentions(rule, mentions)
    if not by_sentence:
        return empty("windows")
    times = _SentenceTimes.of(sentences, words)
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for sidx in sorted(by_sentence):
        recs = by_sentence[sidx]
        window = _sentence_window(rule, sidx, recs, times)
        if isinstance(window, str):
            if rejects is not None:
                rejects.append(reject(ctx["dataset"], ctx["case_id"], "windows", None, None, window))
            continue
        for t in dict.fromkeys(r["label"] for r in recs):
            rows.append(
                {
                    **ctx,
                    "target": t,
                    "window_idx": counts.get(t, 0),
                    "sentence_idx": sidx,
                    "t_start_s": window[0],
                    "t_end_s": window[1],
                }
            )
            counts[t] = counts.get(t, 0) + 1
    return _frame(rows)


def _term_pattern(term: str) -> re.Pattern[str]:
    return re.compile(r"(?<![a-z0-9])" + r"\s+".join(re.escape(p) for p in term.split()) + r"(?![a-z0-9])")


_TERM_CACHE: dict[str, re.Pattern[str]] = {}


def keyword_spans(text: str, alternatives: tuple[tuple[str, ...], ...]) -> list[tuple[int, int]]:
    """Character spans of the keyword terms that make ``text`` a keyword sentence (empty if none):
    the union of the spans of every alternative whose terms all occur (whole words, any case)."""
    low = (text or "").lower()
    spans: list[tuple[int, int]] = []
    for alt in alternatives:
        found: list[tuple[int, int]] = []
        for term in alt:
            pat = _TERM_CACHE.get(term)
            if pat is None:
                pat = _TERM_CACHE[term] = _term_pattern(term)
            m = [(x.start(), x.end()) for x in pat.finditer(low)]
            if not m:  # a term of this alternative is missing: the alternative does not match
                found = []
                break
            found += m
        spans += found
    return sorted(set(spans))


def _keyword_windows(
    rule: KeywordWindow, sentences: pl.DataFrame, ctx: dict[str, str], rules_dir: str | Path | None
) -> pl.DataFrame:
    ks = load_keyword_sets(rule.keywords, rules_dir)
    unknown = [t for t in rule.targets if t not in ks.targets]
    if unknown:
        raise RecipeError(f"keyword set {rule.keywords!r} has no target(s) {unknown} (has {sorted(ks.targets)})")
    if sentences.height == 0:
        return empty("windows")
    labeler: Labeler | None = None
    if not ks.count_negated:
        from gazeprep.text.labeler import Labeler

        labeler = Labeler.from_rules(rules_dir)
    rows: list[dict[str, Any]] = []
    s = sentences.sort("sentence_idx")
    for target in rule.targets:
        chosen: dict[str, Any] | None = None
        for rec in s.iter_rows(named=True):
            spans = keyword_spans(rec["text"] or "", ks.targets[target])
            if not spans:
                continue
            if labeler is not None and all(labeler.negated_spans(rec["text"], spans)):
                continue
            if chosen is None or rec["t_end_s"] >= chosen["t_end_s"]:
                chosen = rec  # rightmost = latest sentence
        if chosen is not None:
            rows.append(
                {
                    **ctx,
                    "target": target,
                    "window_idx": 0,
                    "sentence_idx": chosen["sentence_idx"],
                    "t_start_s": 0.0,
                    "t_end_s": float(chosen["t_end_s"]),
                }
            )
    return _frame(rows)


def _phrase_windows(
    rule: PhraseWindow, sentences: pl.DataFrame, words: pl.DataFrame, ctx: dict[str, str]
) -> pl.DataFrame:
    if words.height == 0:
        return empty("windows")
    w = words.sort("word_idx")
    s = sentences.sort("sentence_idx") if sentences.height else sentences
    s_end = s["char_end"].to_list() if s.height else []
    s_idx = s["sentence_idx"].to_list() if s.height else []
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(w.iter_rows(named=True)):
        if rec["t_start_s"] is None or rec["t_end_s"] is None:
            continue
        sidx = None
        if rec["char_start"] is not None and s_end:
            k = bisect_right([e if e is not None else -1 for e in s_end], rec["char_start"])
            sidx = s_idx[k] if k < len(s_idx) else None
        rows.append(
            {
                **ctx,
                "target": f"phrase_{i:04d}",
                "window_idx": 0,
                "sentence_idx": sidx,
                "t_start_s": float(rec["t_start_s"]) - rule.lag_s,
                "t_end_s": float(rec["t_end_s"]),
            }
        )
    return _frame(rows)
