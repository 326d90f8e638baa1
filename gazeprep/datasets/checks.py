"""Row checks shared by the adapters: durations, time order, positions far off the image."""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
import polars as pl


def ordered_keep_mask(t: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest set of rows whose times are non-decreasing in file order.

    Rows outside that set are the out-of-order ones: one swapped pair drops one row, a single
    wild timestamp drops only that row (a running maximum would drop everything after it). Among
    equally large sets the one keeping the earliest rows wins, so the row that breaks the order
    is the one reported. O(n log n); returns all-True at once when ``t`` is already sorted.
    """
    n = len(t)
    if n < 2 or bool(np.all(t[1:] >= t[:-1])):
        return np.ones(n, dtype=bool)
    vals = t.tolist()
    end_len = [0] * n  # longest non-decreasing run of kept rows ending at i
    tails: list[float] = []
    for i, v in enumerate(vals):
        k = bisect_right(tails, v)
        end_len[i] = k + 1
        if k == len(tails):
            tails.append(v)
        else:
            tails[k] = v
    start_len = [0] * n  # ... starting at i (non-increasing when read backwards)
    tails = []
    for i in range(n - 1, -1, -1):
        v = -vals[i]
        k = bisect_right(tails, v)
        start_len[i] = k + 1
        if k == len(tails):
            tails.append(v)
        else:
            tails[k] = v
    best = max(end_len)
    keep = np.zeros(n, dtype=bool)
    level, last = 1, -np.inf
    for i in range(n):
        if end_len[i] == level and end_len[i] + start_len[i] - 1 == best and vals[i] >= last:
            keep[i] = True
            level += 1
            last = vals[i]
    return keep


def time_problems(
    df: pl.DataFrame, start: str, end: str | None, *, start_label: str, end_label: str | None = None
) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """Drop rows with ``end < start`` (negative duration) and rows whose ``start`` goes backwards.

    Parameters
    ----------
    df:
        Frame with float columns ``start`` (and ``end``) in seconds and ``source_row``.
    start_label, end_label:
        Column names as written in the file, used in the messages.

    Returns
    -------
    (kept rows, [(source_row, reason), ...]) sorted by row.
    """
    t = df.get_column(start).to_numpy()
    rows = df.get_column("source_row").to_numpy()
    bad: list[tuple[int, str]] = []
    ok = np.ones(len(t), dtype=bool)
    if end is not None:
        e = df.get_column(end).to_numpy()
        neg = e < t
        if neg.any():
            for i in np.flatnonzero(neg):
                bad.append((int(rows[i]), f"negative duration: {end_label} {e[i]:g} is before {start_label} {t[i]:g}"))
            ok &= ~neg
    idx = np.flatnonzero(ok)
    keep_sub = ordered_keep_mask(t[idx])
    if not keep_sub.all():
        last_kept = -1
        for j, i in enumerate(idx):
            if keep_sub[j]:
                last_kept = int(i)
                continue
            ref = (
                f"earlier than row {rows[last_kept]} ({t[last_kept]:g})"
                if last_kept >= 0
                else "earlier than the rows that follow"
            )
            bad.append((int(rows[i]), f"timestamps out of order: {start_label} {t[i]:g} is {ref}"))
        ok[idx[~keep_sub]] = False
    if bad:
        df = df.filter(pl.Series(ok))
        bad.sort()
    return df, bad


def far_outside(x: np.ndarray, y: np.ndarray, width: float, height: float) -> np.ndarray:
    """True where a position is more than one image size beyond the border (a corrupt value).

    Off-image gaze on a real screen stays within about a quarter of the image size of its border
    (REFLACX control strip, EGD letterbox), so anything this far off cannot be a gaze position.
    NaN (lost track) gives False.
    """
    with np.errstate(invalid="ignore"):
        return (x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height)
