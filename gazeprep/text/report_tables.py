"""Tables written by ``gazeprep label-reports``: file formats and the wide (CheXpert-style) layout.

File format
    Chosen from the file extension (case-insensitive): ``.parquet`` (zstd-compressed Parquet),
    ``.csv`` (comma-separated, UTF-8, header row) or ``.tsv`` (tab-separated, otherwise as
    ``.csv``). Text fields that hold the separator, a quote or a line break are quoted (RFC 4180
    style); a null is an empty field. Any other extension is refused (:func:`table_format`).
    Every file is written atomically (:func:`gazeprep._atomic.atomic_write`): a reader sees the
    old file or the complete new one, never a prefix.

Wide layout
    One row per report, in input order: the ``id`` column (text, as read: ``"007"`` stays
    ``"007"``), then one column per label in the label order of ``rules/labels.yaml``, holding
    CheXpert's codes (Int8): ``1`` positive, ``-1`` uncertain, ``0`` negative, null (an empty CSV
    field) not mentioned. A ``hypothetical`` status (a finding only raised as a possibility to
    look for: "to evaluate for pneumothorax") is coded as not mentioned, since CheXpert has no code
    for it; the long summary keeps it.

Aggregation over several mentions of one label in one report
    The report status is the strongest status of the label's mentions, positive > uncertain >
    negative (> hypothetical) (:func:`gazeprep.text.labeler.report_status`). This is CheXpert's
    rule (stanfordmlgroup/chexpert-labeler ``stages/aggregate.py``, ``Aggregator.dict_to_vec``:
    one code as is; 0 with 1 gives 1; -1 with 1 gives 1; 0 with -1 gives -1; equal codes stay)
    for every combination of two codes. The one case where CheXpert's code differs: a label with
    all three codes in one report is -1 there (its "0 and -1" test comes first) and 1 here; we keep
    the plain precedence, so a report with a positive mention of a label is positive for it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from gazeprep._atomic import atomic_write
from gazeprep.errors import GazeprepError, StorageError

#: File extension (lower case) -> table format.
TABLE_FORMATS: dict[str, str] = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}

#: Report status -> CheXpert code; statuses not listed (``hypothetical``, ``absent``) are null.
STATUS_CODES: dict[str, int] = {"positive": 1, "uncertain": -1, "negative": 0}

#: dtype of the label columns of the wide layout.
CODE_DTYPE = pl.Int8


def allowed_extensions() -> str:
    """The accepted extensions as prose: ``.parquet, .csv or .tsv``."""
    exts = list(TABLE_FORMATS)
    return ", ".join(exts[:-1]) + " or " + exts[-1]


def table_format(path: str | Path) -> str:
    """The format (``parquet``, ``csv`` or ``tsv``) named by ``path``'s extension.

    Raises :class:`~gazeprep.errors.GazeprepError` (one line naming the file and the allowed
    extensions) for any other extension or none.
    """
    suffix = Path(path).suffix.lower()
    fmt = TABLE_FORMATS.get(suffix)
    if fmt is None:
        what = f"unknown file extension {Path(path).suffix!r}" if suffix else "no file extension"
        raise GazeprepError(f"{path}: {what}; use {allowed_extensions()}")
    return fmt


def table_bytes(frame: pl.DataFrame, fmt: str) -> bytes:
    """``frame`` serialised as ``fmt`` (a value of :data:`TABLE_FORMATS`)."""
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd")
        return buf.getvalue()
    if fmt in ("csv", "tsv"):
        return frame.write_csv(separator="\t" if fmt == "tsv" else ",").encode("utf-8")
    raise GazeprepError(f"unknown table format {fmt!r}; use one of {sorted(set(TABLE_FORMATS.values()))}")


def write_table(frame: pl.DataFrame, path: str | Path) -> None:
    """Write ``frame`` to ``path`` atomically, in the format of its extension (:func:`table_format`).

    The parent folder is created. Raises :class:`~gazeprep.errors.GazeprepError` for an unknown
    extension (before anything is written) and :class:`~gazeprep.errors.StorageError` naming the
    file on an I/O fault.
    """
    path = Path(path)
    data = table_bytes(frame, table_format(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError.from_os_error(exc, path.parent) from exc
    atomic_write(path, data)


def read_table(path: str | Path, schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Read a table written by :func:`write_table`. For CSV / TSV, columns not in ``schema`` are
    read as text (ids keep their leading zeros); Parquet keeps its own types."""
    path = Path(path)
    fmt = table_format(path)
    if fmt == "parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, separator="\t" if fmt == "tsv" else ",", infer_schema_length=0, schema_overrides=schema)


def status_code(status: str) -> int | None:
    """CheXpert's code of a report status: positive 1, uncertain -1, negative 0, anything else
    (``hypothetical``, ``absent``) None."""
    return STATUS_CODES.get(status)


def summary_to_wide(summary: pl.DataFrame, labels: Sequence[str], ids: Sequence[str] | None = None) -> pl.DataFrame:
    """The wide layout (module docstring) of a long report summary.

    ``summary`` has columns ``id``, ``label``, ``status`` (one row per report and label, as
    ``label-reports`` builds it); ``labels`` gives the columns and their order (labels missing from
    ``summary`` are all null); ``ids`` gives the rows and their order (default: the ids of
    ``summary`` in first-seen order; an id without summary rows is all null). Ids must be unique
    and there must be at most one status per (id, label); otherwise :class:`ValueError`.
    """
    if "id" in labels:
        raise ValueError("a label named 'id' would clash with the id column")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    if ids is None:
        ids = summary["id"].unique(maintain_order=True).to_list()
    elif len(set(ids)) != len(ids):
        raise ValueError("report ids must be unique for the wide layout")
    if summary.select(pl.struct("id", "label").is_duplicated().any()).item():
        raise ValueError("more than one status for one report and label")
    coded = summary.filter(pl.col("label").is_in(list(labels))).select(
        pl.col("id").cast(pl.Utf8),
        pl.col("label"),
        pl.col("status").replace_strict(STATUS_CODES, default=None, return_dtype=CODE_DTYPE).alias("code"),
    )
    out = pl.DataFrame({"id": pl.Series("id", list(ids), dtype=pl.Utf8)})
    if coded.height:
        wide = coded.pivot(on="label", index="id", values="code")
        out = out.join(wide, on="id", how="left", maintain_order="left")
    return out.select(
        pl.col("id"),
        *[(pl.col(lab) if lab in out.columns else pl.lit(None)).cast(CODE_DTYPE).alias(lab) for lab in labels],
    )
