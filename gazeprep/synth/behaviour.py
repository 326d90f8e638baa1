"""Reader behaviour: dictation timing and where the eyes go.

Time model (seconds since the audio/image start): the reader looks silently for a while, then
dictates sentence by sentence with pauses. For every mention of a finding with a region, the eyes
concentrate on that region from ``lead`` (1.7-2.6 s) before the sentence starts until the end of
the mention word ("focus segment"); otherwise they wander over the lungs and heart. With the 004
window rule (``max(sentence_start - 1.5 s, previous sentence start)`` to the start of the last
mention word) nearly all fixations inside the window are on the finding's region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gazeprep.synth.findings import PlannedSentence

__all__ = ["FocusSegment", "Timing", "time_tokens", "focus_segments", "scanpath"]

_PUNCT = {".": (0.30, 0.50), ",": (0.25, 0.40), "/": (0.30, 0.45)}


@dataclass
class Timing:
    """Token times of a dictation.

    Attributes
    ----------
    start, end:
        float64 arrays (n_tokens,), seconds rounded to 2 decimals, ``end > start`` and
        ``start[i + 1] >= end[i]``.
    sentence_token_start, sentence_token_end:
        int arrays (n_sentences,), token span [start, end) of each sentence (end includes the ``.``).
    """

    start: np.ndarray
    end: np.ndarray
    sentence_token_start: np.ndarray
    sentence_token_end: np.ndarray


def time_tokens(
    rng: np.random.Generator, sentences: list[PlannedSentence], t_first: float, pause: tuple[float, float]
) -> Timing:
    """Give every token a start and end time (2 dp).

    Parameters
    ----------
    t_first:
        Start of the first word (s).
    pause:
        Range of the silent pause between sentences (s).
    """
    tokens = [t for s in sentences for t in s.tokens]
    n = len(tokens)
    lens = np.array([len(t) for t in tokens], dtype=np.float64)
    dur = 0.12 + 0.05 * lens + rng.uniform(-0.03, 0.08, n)
    for i, tok in enumerate(tokens):
        if tok in _PUNCT:
            lo, hi = _PUNCT[tok]
            dur[i] = rng.uniform(lo, hi)
    gaps = rng.uniform(0.02, 0.12, n)
    starts_of_sentence = np.cumsum([0] + [len(s.tokens) for s in sentences])[:-1]
    gaps[starts_of_sentence] = rng.uniform(pause[0], pause[1], len(sentences))
    gaps[0] = 0.0
    start = np.empty(n)
    end = np.empty(n)
    t = t_first
    for i in range(n):
        s = round(t + gaps[i], 2)
        if i and s < end[i - 1]:
            s = end[i - 1]
        e = round(s + dur[i], 2)
        if e <= s:
            e = round(s + 0.01, 2)
        start[i], end[i] = s, e
        t = e
    sts = np.array(starts_of_sentence, dtype=np.int64)
    ste = np.concatenate([sts[1:], [n]]).astype(np.int64)
    return Timing(start, end, sts, ste)


@dataclass
class FocusSegment:
    """Eyes concentrate on ``boxes`` (image px, (x0, y0, x1, y1)) during [t_start, t_end] s."""

    t_start: float
    t_end: float
    boxes: list[tuple[float, float, float, float]]
    mention: int  # index of the mention (in the reading's mention list) it serves


def focus_segments(
    rng: np.random.Generator,
    sentences: list[PlannedSentence],
    timing: Timing,
    boxes_of_mention: list[list[tuple[float, float, float, float]]],
    lead: tuple[float, float] = (1.7, 2.6),
) -> list[FocusSegment]:
    """Focus segments for every mention with regions (mentions numbered in sentence order).

    The first mention of a sentence is looked at from ``sentence_start - lead`` (but not before the
    end of the previous segment) to the end of its last token; later mentions of the same sentence
    follow on directly.
    """
    segs: list[FocusSegment] = []
    prev_end = -1e9
    m = 0
    for si, s in enumerate(sentences):
        s_start = float(timing.start[timing.sentence_token_start[si]])
        tok0 = int(timing.sentence_token_start[si])
        first = True
        for pm in s.mentions:
            boxes = boxes_of_mention[m]
            t_end = float(timing.end[tok0 + pm.token_end - 1])
            if first:
                t_start = max(s_start - rng.uniform(*lead), prev_end)
            else:
                t_start = prev_end
            first = False
            if boxes:
                segs.append(FocusSegment(t_start, t_end, boxes, m))
                prev_end = t_end
            m += 1
    return segs


def _uniform_in_boxes(
    rng: np.random.Generator, boxes: np.ndarray, n: int, inner: float = 0.85
) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform in randomly chosen boxes (array (k, 4)), shrunk to ``inner`` of their size."""
    if n == 0:
        return np.empty(0), np.empty(0)
    k = rng.integers(0, len(boxes), n)
    b = boxes[k]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) / 2 * inner, (b[:, 3] - b[:, 1]) / 2 * inner
    return cx + rng.uniform(-1, 1, n) * hw, cy + rng.uniform(-1, 1, n) * hh


def scanpath(
    rng: np.random.Generator,
    t0: float,
    t_stop: float,
    segments: list[FocusSegment],
    wander_boxes: list[tuple[float, float, float, float]],
    wander_weights: list[float],
    mean_duration: float = 0.22,
    focus_prob: float = 0.9,
) -> dict[str, np.ndarray]:
    """Fixations from ``t0`` until ``t_stop`` (unrounded).

    Returns
    -------
    dict with float arrays ``start``, ``end`` (s; ordered, non-overlapping, end > start), ``x``,
    ``y`` (image px), int ``segment`` (index of the focus segment whose region the fixation lands
    in, -1 when wandering).
    """
    n_max = int((t_stop - t0) / 0.1) + 8
    dur = np.clip(rng.lognormal(np.log(mean_duration), 0.45, n_max), 0.08, 1.5)
    gap = rng.uniform(0.02, 0.07, n_max)
    start = t0 + np.concatenate([[0.0], np.cumsum(dur + gap)[:-1]])
    keep = start < t_stop
    start, dur = start[keep], dur[keep]
    end = start + dur
    n = len(start)
    mid = (start + end) / 2
    seg_idx = np.full(n, -1, dtype=np.int64)
    if segments:
        a = np.array([s.t_start for s in segments])
        b = np.array([s.t_end for s in segments])
        j = np.searchsorted(a, mid, side="right") - 1
        ok = (j >= 0) & (mid <= b[np.clip(j, 0, None)])
        focused = ok & (rng.random(n) < focus_prob)
        seg_idx[focused] = j[focused]
    x = np.empty(n)
    y = np.empty(n)
    # wandering fixations
    w = np.asarray(wander_weights, dtype=np.float64)
    wb = np.asarray(wander_boxes, dtype=np.float64)
    wand = seg_idx < 0
    nw = int(wand.sum())
    kk = rng.choice(len(wb), size=nw, p=w / w.sum())
    bx = wb[kk]
    x[wand] = rng.uniform(bx[:, 0], bx[:, 2])
    y[wand] = rng.uniform(bx[:, 1], bx[:, 3])
    for si in np.unique(seg_idx[seg_idx >= 0]):
        sel = seg_idx == si
        px, py = _uniform_in_boxes(rng, np.asarray(segments[si].boxes, dtype=np.float64), int(sel.sum()))
        x[sel], y[sel] = px, py
    return {"start": start, "end": end, "x": x, "y": y, "segment": seg_idx}


def wander_boxes(
    boxes: dict[str, tuple[float, float, float, float]], width: int, height: int
) -> list[tuple[float, float, float, float]]:
    """Regions a reader's eyes wander over between targeted looks, as (x0, y0, x1, y1) pixel boxes: both
    lungs, the cardiac silhouette, the upper mediastinum and the whole ``width`` x ``height`` image."""
    return [
        boxes["right lung"],
        boxes["left lung"],
        boxes["cardiac silhouette"],
        boxes["upper mediastinum"],
        (0.0, 0.0, float(width), float(height)),
    ]


def search_visits(
    rng: np.random.Generator,
    t_from: float,
    t_to: float,
    targets: list[tuple[int, list[tuple[float, float, float, float]]]],
) -> list[FocusSegment]:
    """Visits (1-2.5 s each, probability 0.8 per target) to the regions of positive findings during
    the silent viewing before the dictation, in random order, all inside [t_from, t_to]. Abnormal
    regions attract the search, so the first sentence's window (which starts at 0) is informative too."""
    out: list[FocusSegment] = []
    t = t_from
    for k in rng.permutation(len(targets)):
        m, boxes = targets[int(k)]
        if rng.random() > 0.8:
            continue
        d = rng.uniform(1.0, 2.5)
        s = t + rng.uniform(0.3, 2.0)
        if s + d > t_to - 0.2:
            break
        out.append(FocusSegment(s, s + d, boxes, m))
        t = s + d
    return out
