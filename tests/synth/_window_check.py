"""Helper for the synth tests: how well does the 004 window rule localise a finding?"""

from __future__ import annotations

import numpy as np


def in_boxes(x, y, boxes) -> np.ndarray:
    inside = np.zeros(len(x), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return inside


def window_vs_whole(case) -> list[tuple[float, float]]:
    """For each sentence with a positive (or uncertain) mention: (fraction of window-weighted fixation
    time inside the mention boxes, same fraction over the whole recording)."""
    fx = case.fixations
    s, e = fx["timestamp_start_fixation"], fx["timestamp_end_fixation"]
    x, y = fx["x_position"].astype(float), fx["y_position"].astype(float)
    out = []
    for si, sent in enumerate(case.sentences):
        ms = [case.mentions[i] for i in sent.mention_idx if not case.mentions[i].negated]
        if not ms or not any(m.boxes_px for m in ms):
            continue
        prev = case.sentences[si - 1].t_start_s if si else 0.0
        w0 = max(sent.t_start_s - 1.5, prev) if si else 0.0
        w1 = case.token_start_s[ms[-1].token_start]
        boxes = [b for m in ms for b in m.boxes_px]
        wt = np.clip(np.minimum(e, w1) - np.maximum(s, w0), 0, None)
        inside = in_boxes(x, y, boxes)
        if wt.sum() <= 0:
            continue
        whole = e - s
        out.append((float((wt * inside).sum() / wt.sum()), float((whole * inside).sum() / whole.sum())))
    return out
