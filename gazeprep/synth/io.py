"""Small writers shared by the synthetic release generators (byte-exact CSV, gzip, ids)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import polars as pl

__all__ = [
    "bool_strings",
    "dicom_ids",
    "write_csv",
    "write_csv_gz",
    "write_text",
]


def bool_strings(values: Iterable[object]) -> list[str | None]:
    """Python/pandas spelling of booleans (``True`` / ``False``); None stays None (empty field)."""
    return [None if v is None else ("True" if bool(v) else "False") for v in values]


def _to_frame(columns: Mapping[str, object]) -> pl.DataFrame:
    series = []
    for name, values in columns.items():
        if isinstance(values, pl.Series):
            series.append(values.alias(name))
        elif isinstance(values, np.ndarray) and values.dtype.kind == "f":
            # NaN -> null so it is written as an empty field (pandas writes NaN as empty too)
            s = pl.Series(name, values)
            series.append(s.fill_nan(None))
        elif isinstance(values, Iterable):
            series.append(pl.Series(name, values, strict=False))
        else:
            raise TypeError(f"column {name!r}: expected a sequence of values, got {type(values).__name__}")
    return pl.DataFrame(series)


def write_csv(path: str | Path, columns: Mapping[str, object], line_terminator: str = "\n") -> None:
    """Write ``columns`` (name -> values, in order) as CSV the way pandas ``to_csv`` would.

    Floats are written with the shortest round-trip representation (Python ``repr``: ``7.0``,
    ``0.33879000000000004``), integers without ``.0``, None/NaN as empty fields, fields containing a
    comma, quote or newline quoted. Do not pass empty strings (use None) and do not pass floats below
    1e-4 in magnitude (polars writes ``0.00001`` where Python writes ``1e-05``).
    """
    df = _to_frame(columns)
    data = df.write_csv(None, line_terminator=line_terminator, null_value="", quote_style="necessary")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data.encode("utf-8"))


def write_csv_gz(path: str | Path, columns: Mapping[str, object]) -> None:
    """Like :func:`write_csv` with LF endings, gzip-compressed deterministically (mtime 0, no name)."""
    df = _to_frame(columns)
    data = df.write_csv(None, line_terminator="\n", null_value="", quote_style="necessary").encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(buf.getvalue())


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text exactly (no newline translation, no trailing newline added)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(text.encode("utf-8"))


def dicom_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct MIMIC-style dicom ids: 5 groups of 8 lower-case hex digits joined by ``-`` (44 chars)."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        words = rng.integers(0, 1 << 32, size=(n - len(out), 5), dtype=np.uint64)
        for row in words:
            s = "-".join(f"{int(w):08x}" for w in row)
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out
