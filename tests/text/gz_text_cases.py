"""Shared constructed cases for the text tests (times in seconds, hand-chosen)."""

from __future__ import annotations

import polars as pl

# REFLACX-style tokens: (word, start, end). Three sentences:
#   S0 "lungs are clear."                            [0.50, 1.60]
#   S1 "small left effusion and mild atelectasis."    [3.00, 5.70]  mentions begin at 3.60 and 5.00
#   S2 "no pneumothorax."                            [7.00, 8.00]  negated mention at 7.20
REFLACX_TOKENS = [
    ("lungs", 0.50, 0.90),
    ("are", 0.90, 1.10),
    ("clear", 1.10, 1.50),
    (".", 1.50, 1.60),
    ("small", 3.00, 3.30),
    ("left", 3.30, 3.60),
    ("effusion", 3.60, 4.20),
    ("and", 4.20, 4.40),
    ("mild", 4.50, 4.90),
    ("atelectasis", 5.00, 5.60),
    (".", 5.60, 5.70),
    ("no", 7.00, 7.20),
    ("pneumothorax", 7.20, 7.90),
    (".", 7.90, 8.00),
]
REFLACX_TEXT = "lungs are clear. small left effusion and mild atelectasis. no pneumothorax."


def words_frame(tokens, dataset="reflacx", case_id="P102R000001") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "dataset": [dataset] * len(tokens),
            "case_id": [case_id] * len(tokens),
            "word_idx": list(range(len(tokens))),
            "word": [t[0] for t in tokens],
            "t_start_s": [float(t[1]) for t in tokens],
            "t_end_s": [float(t[2]) for t in tokens],
        },
        schema_overrides={"word_idx": pl.Int32},
    )
