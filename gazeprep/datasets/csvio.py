"""Checked CSV reading: exact headers, typed columns, bad rows reported with their 1-based row number.

Every release file goes through :func:`read_checked_csv`. It reads all fields as text with polars
(fast path), checks the header, casts each column to its declared kind with vectorised polars
expressions and splits the result into the good rows (typed) and a list of :class:`BadRow`
(``row`` is the 1-based data row, header excluded, as in :class:`~gazeprep.errors.InputFormatError`).
A file polars cannot tokenise (a row with too many fields, a broken quote) is re-read with the
:mod:`csv` module so that the offending row can still be named and the others kept.

File-level problems (missing or empty file, wrong header, undecodable bytes) raise
:class:`~gazeprep.errors.InputFormatError` naming the file.

Column policy: one rule for every CSV gazeprep reads (REFLACX metadata, fixations, gaze,
transcript word timings and ellipses; EGD-CXR master sheet, fixations, eye gaze and bounding boxes;
the MIMIC-CXR tables). Each file kind has a documented header (FORMATS.md); its reader declares the
columns it uses (``columns``) and the other documented ones it ignores (``known``). A header that

* lacks a declared column,
* names a column twice, or
* has a column that is neither declared nor known (e.g. an extra ``note`` column),

makes the whole file invalid: :class:`~gazeprep.errors.InputFormatError` naming the file and the
column(s), and none of its rows are used. The adapter then records it as usual for the file's scope:
a per-case file (REFLACX ``fixations.csv``, ``gaze.csv``, word timings, ellipses) becomes a
``rejects`` row naming the file and column and that case (or that table of it) is skipped while the
other cases go on; so is an optional shared file (EGD-CXR ``eye_gaze.csv`` and
``bounding_boxes.csv``, the MIMIC label tables), whose table is then left out; a release-wide file
that every case needs (a REFLACX metadata file, the EGD-CXR master sheet or ``fixations.csv``) stops
the ingest with that one-line error, since no case can be read from it with confidence. Column
order does not matter.

Values: every numeric field must be finite (unless a column allows NaN) and inside the physical
range its format defines (``Col.lo``/``hi`` inclusive, ``Col.gt`` exclusive, e.g. pupil area and
pixels per degree ``> 0``); a value outside is a row error naming the 1-based row and the column,
that row becomes a ``rejects`` row and the rest of the file is kept.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from gazeprep.errors import InputFormatError

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then

#: column kinds understood by :class:`Col`
KINDS = ("float", "int", "bool", "str")

_TRUE = ("True", "true", "TRUE", "1", "1.0")
_FALSE = ("False", "false", "FALSE", "0", "0.0")


@dataclass(frozen=True)
class Col:
    """Declaration of one CSV column.

    kind:
        ``float`` (finite unless ``allow_nonfinite``), ``int`` (a float with no fractional part, so
        ``5`` and ``5.0`` are both accepted; stored as Float64 to keep nulls simple), ``bool``
        (``True``/``False``, also ``true``/``1``/``0``) or ``str``.
    required:
        An empty field is a row error. Optional columns give null.
    lo, hi:
        Inclusive numeric range; a value outside is a row error.
    gt:
        Exclusive lower bound (the value must be greater), e.g. ``0`` for quantities that are
        physically positive (pupil area, pixels per degree, window width).
    """

    kind: str = "float"
    required: bool = True
    lo: float | None = None
    hi: float | None = None
    allow_nonfinite: bool = False
    gt: float | None = None


@dataclass
class BadRow:
    """A data row that was dropped: 1-based data row number and why."""

    row: int
    reason: str


@dataclass
class CheckedTable:
    """Result of :func:`read_checked_csv`: good rows (typed, with ``source_row``) and dropped rows."""

    df: pl.DataFrame
    bad: list[BadRow] = field(default_factory=list)
    n_rows: int = 0  # data rows in the file (good + bad)


def read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping ``*.gz``.

    A missing file, a folder or bad gzip data raise InputFormatError (a data problem); any other
    OSError (EACCES, EIO, ...) is an I/O fault and propagates (never a reject).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputFormatError(path, "file not found") from None
    except IsADirectoryError:
        raise InputFormatError(path, "is a folder, not a file") from None
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputFormatError(path, f"not a valid gzip file ({exc})") from None
    return data


def _header(data: bytes, path: Path) -> list[str]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise InputFormatError(path, "empty file (no header line)")
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if b"\x00" in data[:4096]:
        raise InputFormatError(path, "binary file (NUL bytes), not CSV text")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFormatError(path, "header line is not UTF-8 text (binary or corrupt file?)") from None
    return next(csv.reader([text]))


def _check_header(path: Path, header: list[str], columns: dict[str, Col], known: Iterable[str] = ()) -> None:
    """Apply the column policy (module docstring): missing, duplicate or unknown columns reject the file."""
    missing = [c for c in columns if c not in header]
    if missing and len(missing) == len(columns):
        raise InputFormatError(path, f"wrong header {header[:20]}; expected {list(columns)}")
    if missing:
        raise InputFormatError(path, f"wrong header: missing column(s) {missing}; found {header}", column=missing[0])
    seen: set[str] = set()
    dup = [h for h in header if h in seen or seen.add(h)]  # type: ignore[func-returns-value]
    if dup:
        raise InputFormatError(path, f"wrong header: duplicate column(s) {sorted(set(dup))}", column=dup[0])
    allowed = set(columns) | set(known)
    extra = [h for h in header if h not in allowed]
    if extra:
        raise InputFormatError(
            path,
            f"wrong header: unexpected column(s) {extra}, not in this file's documented format; "
            "the file is not read (remove or rename the column)",
            column=extra[0],
        )


def _fallback_strings(data: bytes, path: Path, header: list[str]) -> tuple[pl.DataFrame, list[BadRow]]:
    """Tokenise with the csv module; rows with a wrong number of fields become BadRows."""
    text = data.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str | None]] = []
    idx: list[int] = []
    bad: list[BadRow] = []
    n = len(header)
    next(reader, None)
    row_no = 0
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row_no += 1
            bad.append(BadRow(row_no, f"cannot parse the row ({exc}); the rest of the file is ignored"))
            break
        row_no += 1
        if not rec:  # blank line
            bad.append(BadRow(row_no, "blank line"))
            continue
        if len(rec) != n:
            bad.append(BadRow(row_no, f"has {len(rec)} fields, the header has {n} (truncated or malformed row)"))
            continue
        rows.append([v if v != "" else None for v in rec])
        idx.append(row_no)
    cols = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    df = pl.DataFrame(cols, schema={h: pl.Utf8 for h in header})
    df = df.with_columns(pl.Series("source_row", idx, dtype=pl.Int64))
    return df, bad


def _read_strings(data: bytes, path: Path, header: list[str]) -> tuple[pl.DataFrame, list[BadRow]]:
    try:
        df = pl.read_csv(
            data,
            infer_schema=False,
            has_header=True,
            truncate_ragged_lines=False,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError:  # ComputeError / NoDataError on malformed tokens: the slow path names the rows
        return _fallback_strings(data, path, header)
    if df.width != len(header):  # duplicate names renamed, etc.: use the header we parsed
        return _fallback_strings(data, path, header)
    df = df.rename(dict(zip(df.columns, header)))
    df = df.with_row_index("source_row", offset=1).with_columns(pl.col("source_row").cast(pl.Int64))
    bad: list[BadRow] = []
    # a blank line is a row of nulls; a row that is cut short leaves its last column(s) null
    all_null = pl.all_horizontal([pl.col(h).is_null() for h in header])
    blank = df.filter(all_null)
    if blank.height:
        # the trailing newline polars may turn into one final blank row is not a data row
        bad.extend(BadRow(int(r), "blank line") for r in blank["source_row"])
        df = df.filter(~all_null)
    return df, bad


def _cast(name: str, spec: Col) -> tuple[pl.Expr, pl.Expr]:
    """Return (typed value expression, error-message expression or null) for one string column."""
    raw = pl.col(name).str.strip_chars()
    empty = raw.is_null() | (raw == "")
    if spec.kind == "str":
        val = pl.when(empty).then(None).otherwise(pl.col(name))
        err = pl.when(empty).then(pl.lit("empty value") if spec.required else None).otherwise(None)
        return val.alias(name), err
    if spec.kind == "bool":
        val = pl.when(raw.is_in(_TRUE)).then(True).when(raw.is_in(_FALSE)).then(False).otherwise(None)
        err = (
            pl.when(empty)
            .then(pl.lit("empty value") if spec.required else None)
            .when(val.is_null())
            .then(pl.lit("not a boolean: '") + pl.col(name) + pl.lit("'"))
            .otherwise(None)
        )
        return val.cast(pl.Boolean).alias(name), err
    num = raw.cast(pl.Float64, strict=False)
    conds: list[tuple[pl.Expr, pl.Expr]] = []
    quoted = pl.lit("'") + pl.col(name) + pl.lit("'")
    conds.append((empty, pl.lit("empty value") if spec.required else pl.lit(None, pl.Utf8)))
    conds.append((num.is_null(), pl.lit("not a number: ") + quoted))
    if not spec.allow_nonfinite:
        conds.append((num.is_nan(), pl.lit("value is NaN")))
        conds.append((num.is_infinite(), pl.lit("value is infinite: ") + quoted))
    if spec.kind == "int":
        conds.append((num != num.round(0), pl.lit("not an integer: ") + quoted))
    if spec.gt is not None:
        conds.append((num <= spec.gt, pl.lit(f"must be greater than {spec.gt:g}: ") + quoted))
    if spec.lo is not None and spec.hi is not None:
        conds.append(((num < spec.lo) | (num > spec.hi), pl.lit(f"out of range [{spec.lo:g}, {spec.hi:g}]: ") + quoted))
    elif spec.lo is not None:
        conds.append((num < spec.lo, pl.lit(f"below {spec.lo:g}: ") + quoted))
    elif spec.hi is not None:
        conds.append((num > spec.hi, pl.lit(f"above {spec.hi:g}: ") + quoted))
    chain: Then | ChainedThen = pl.when(conds[0][0]).then(conds[0][1])
    for c, m in conds[1:]:
        chain = chain.when(c).then(m)
    err = chain.otherwise(pl.lit(None, pl.Utf8))
    return num.alias(name), err


_TRUE_SET = frozenset(_TRUE)
_BOOL_SET = frozenset(_TRUE + _FALSE)


def _fast_path(data: bytes, header: list[str], columns: dict[str, Col]) -> pl.DataFrame | None:
    """Typed polars read; None when anything is off (the slow path then names the rows).

    Per-case files are small and many, so this path makes one polars call (the read) and checks
    with numpy / plain Python: a few hundred microseconds per file.
    """
    schema = {h: (pl.Float64 if h in columns and columns[h].kind in ("float", "int") else pl.Utf8) for h in header}
    try:
        df = pl.read_csv(data, schema=schema, has_header=True, truncate_ragged_lines=False, raise_if_empty=False)
    except pl.exceptions.PolarsError:  # ComputeError / SchemaError: a value that does not parse
        return None
    if df.width != len(header):
        return None
    return _check_typed(df, columns)


def _check_typed(df: pl.DataFrame, columns: dict[str, Col]) -> pl.DataFrame | None:
    """Check a typed read (numeric columns Float64, others Utf8) against ``columns`` with numpy;
    the result frame (``source_row`` first, bools converted), or None when any row breaks a rule."""
    n = df.height
    if n == 0:
        return None
    out: dict[str, pl.Series] = {"source_row": pl.Series("source_row", np.arange(1, n + 1, dtype=np.int64))}
    for name, spec in columns.items():
        ser = df.get_column(name)
        if spec.kind in ("float", "int"):
            arr = ser.to_numpy()
            nan = np.isnan(arr)
            if nan.any():
                if spec.required or (not spec.allow_nonfinite and int(nan.sum()) > ser.null_count()):
                    return None
                arr = arr[~nan]
            if not spec.allow_nonfinite and np.isinf(arr).any():
                return None
            if spec.kind == "int" and (arr != np.round(arr)).any():
                return None
            if spec.lo is not None and (arr < spec.lo).any():
                return None
            if spec.gt is not None and (arr <= spec.gt).any():
                return None
            if spec.hi is not None and (arr > spec.hi).any():
                return None
            out[name] = ser
        else:
            if spec.required and ser.null_count():
                return None
            if spec.kind == "bool":
                vals = ser.to_list()
                if not all(v is None or v in _BOOL_SET for v in vals):
                    return None
                out[name] = pl.Series(name, [None if v is None else v in _TRUE_SET for v in vals], dtype=pl.Boolean)
            else:
                out[name] = ser
    return pl.DataFrame(out)


def read_checked_csv(
    path: Path,
    columns: dict[str, Col],
    *,
    aliases: dict[str, str] | None = None,
    data: bytes | None = None,
    known: Iterable[str] = (),
) -> CheckedTable:
    """Read ``path`` and check it against ``columns``.

    Parameters
    ----------
    path:
        The CSV file (``.csv`` or ``.csv.gz``); used in messages.
    columns:
        Declared columns (name -> :class:`Col`). All must be in the header (any order).
    known:
        The other columns of the file's documented format, accepted in the header and not returned.
        Any column neither declared nor known rejects the file (see the module docstring).
    aliases:
        Old column name -> declared name, accepted in the header instead of the declared name.
    data:
        The file's bytes when already read.

    Returns
    -------
    CheckedTable
        ``df`` has the declared columns (typed: Float64 for float/int, Boolean, Utf8) plus
        ``source_row`` (Int64, 1-based data row). Rows with any error are left out and listed in
        ``bad`` with a message naming the column and value.

    Raises
    ------
    InputFormatError
        The file is missing, empty or not text, or its header breaks the column policy (a declared
        column missing, a column twice, a column neither declared nor known); ``column`` names it.
    """
    if data is None:
        data = read_bytes(path)
    header = _header(data, path)
    if aliases:
        header = [aliases.get(h, h) if aliases.get(h) not in header else h for h in header]
    _check_header(path, header, columns, known)
    fast = _fast_path(data, header, columns)
    if fast is not None:
        return CheckedTable(fast, [], fast.height)
    strings, bad = _read_strings(data, path, header)
    return _typed(strings, bad, columns)


def _typed(strings: pl.DataFrame, bad: list[BadRow], columns: dict[str, Col]) -> CheckedTable:
    """Cast string columns (plus ``source_row``) to their kinds; rows with errors go to ``bad``."""
    n_rows = strings.height + len(bad)
    if strings.height == 0:
        empty = pl.DataFrame(
            schema={
                "source_row": pl.Int64,
                **{
                    c: (pl.Boolean if s.kind == "bool" else pl.Utf8 if s.kind == "str" else pl.Float64)
                    for c, s in columns.items()
                },
            }
        )
        return CheckedTable(empty, sorted(bad, key=lambda b: b.row), n_rows)
    vals, errs = [], []
    for name, spec in columns.items():
        v, e = _cast(name, spec)
        vals.append(v)
        errs.append(e.alias(f"__err_{name}"))
    typed = strings.select([pl.col("source_row"), *vals, *errs])
    err_cols = [f"__err_{n}" for n in columns]
    any_err = pl.any_horizontal([pl.col(c).is_not_null() for c in err_cols])
    has_err = typed.select(any_err).to_series()
    if has_err.any():
        bad_df = typed.filter(has_err)
        names = list(columns)
        for rec in bad_df.select(["source_row", *err_cols]).iter_rows():
            msgs = [f"column '{names[i]}': {m}" for i, m in enumerate(rec[1:]) if m is not None]
            bad.append(BadRow(int(rec[0]), "; ".join(msgs)))
        typed = typed.filter(~has_err)
    out = typed.select(["source_row", *columns])
    return CheckedTable(out, sorted(bad, key=lambda b: b.row), n_rows)


def scan_checked_csv(path: Path, columns: dict[str, Col], *, known: Iterable[str] = ()) -> CheckedTable:
    """:func:`read_checked_csv` for large files (EGD ``eye_gaze.csv``, ~400 MB): polars scans only
    the declared columns; the whole file is never held as text. Same checks (column policy
    included) and result."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
    except FileNotFoundError:
        raise InputFormatError(path, "file not found") from None
    except IsADirectoryError:
        raise InputFormatError(path, "is a folder, not a file") from None
    header = _header(head, path)
    _check_header(path, header, columns, known)
    try:  # fast path: typed scan of the needed columns only
        typed = (
            pl.scan_csv(
                path,
                infer_schema=False,
                schema_overrides={c: pl.Float64 for c, s in columns.items() if s.kind in ("float", "int")},
                truncate_ragged_lines=False,
                raise_if_empty=False,
            )
            .select(list(columns))
            .collect()
        )
        checked = _check_typed(typed, columns)
        if checked is not None:
            return CheckedTable(checked, [], checked.height)
    except (pl.exceptions.PolarsError, OSError):  # a value that does not parse, or the file went away:
        pass  # the string scan below (or read_checked_csv) names the rows or the file
    try:
        strings = (
            pl.scan_csv(path, infer_schema=False, truncate_ragged_lines=False, raise_if_empty=False)
            .with_row_index("source_row", offset=1)
            .select([pl.col("source_row").cast(pl.Int64), *[pl.col(c) for c in columns]])
            .collect()
        )
    except (pl.exceptions.PolarsError, OSError):  # ragged or unreadable: the in-memory reader names rows / the file
        return read_checked_csv(path, columns, known=known)
    all_null = pl.all_horizontal([pl.col(c).is_null() for c in columns])
    blank = strings.filter(all_null)
    bad = [BadRow(int(r), "blank line or row without any of the needed fields") for r in blank["source_row"]]
    if blank.height:
        strings = strings.filter(~all_null)
    return _typed(strings, bad, columns)
