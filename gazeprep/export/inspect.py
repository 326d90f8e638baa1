"""Look inside a finished export without writing polars: what it holds and what was rejected.

:func:`export_info` summarises an export (recipe and hash, dataset, counts, targets with their map
counts, array shapes, dtype, size on disk, package versions, build time); :func:`rejects_summary`
groups the ``rejects`` table by reason. Both return plain data (dicts, polars frames) that the
``gazeprep info`` / ``gazeprep rejects`` commands print as text or JSON.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from gazeprep.export.layout import MANIFEST, TABLES_DIR
from gazeprep.export.reader import Export

# Numbers and quoted values inside a reason vary from row to row ("2 fixation rows dropped",
# "5 fixation rows dropped"); grouping replaces them so that one kind of problem is one group.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def reason_kind(reason: str) -> str:
    """The reason with quoted values replaced by ``'…'`` and numbers by ``N`` (the grouping key).

    >>> reason_kind("calibration image: 5 fixation rows dropped")
    'calibration image: N fixation rows dropped'
    """
    return _NUMBER.sub("N", _QUOTED.sub("'…'", reason))


def _folder_bytes(path: Path) -> int:
    """Total size in bytes of the regular files under ``path`` (0 when it does not exist)."""
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_info(ex: Export) -> dict[str, Any]:
    """A JSON-ready summary of an export.

    Keys: ``path``, ``kind``, ``dataset``, ``recipe`` (name), ``recipe_hash``, ``labeler_profile``
    (when recorded), ``built_at`` (UTC, ISO 8601, from the manifest's modification time: the
    manifest itself holds no clock time so that rebuilds stay byte-identical), ``cases`` (rows of the
    ``cases`` table), ``cases_with_maps``, ``rejected_cases`` (distinct case ids in ``rejects``),
    ``maps``, ``dtype``, ``arrays`` (name -> ``[N, H, W]``), ``targets`` (target -> number of maps),
    ``tables`` (name -> rows), ``bytes_export`` (files listed in the manifest), ``bytes_parts``
    (resumable parts, safe to delete), ``versions``.
    """
    m = ex.manifest
    index = ex.index if "heatmaps" in ex.tables else pl.DataFrame({"case_id": [], "target": []})
    per_target = index.group_by("target").agg(pl.len().alias("n")).sort("target") if index.height else pl.DataFrame()
    rejects = ex.tables["rejects"] if "rejects" in ex.tables else pl.DataFrame({"case_id": []})
    mtime = (ex.path / MANIFEST).stat().st_mtime
    recipe = m.get("recipe") or {}
    return {
        "path": str(ex.path),
        "kind": m.get("kind"),
        "dataset": (m.get("extra") or {}).get("dataset", recipe.get("dataset")),
        "recipe": recipe.get("name"),
        "recipe_hash": m.get("recipe_hash"),
        "labeler_profile": m.get("labeler_profile"),
        "built_at": _dt.datetime.fromtimestamp(mtime, tz=_dt.UTC).isoformat(timespec="seconds"),
        "cases": int(m.get("counts", {}).get("cases", 0)),
        "cases_with_maps": int(index["case_id"].n_unique()) if index.height else 0,
        "rejected_cases": int(rejects["case_id"].drop_nulls().n_unique()) if rejects.height else 0,
        "maps": len(ex),
        "dtype": ex.dtype,
        "arrays": {name: list(a["shape"]) for name, a in sorted(m["heatmaps"]["arrays"].items())},
        "targets": {t: int(n) for t, n in per_target.iter_rows()} if per_target.height else {},
        "tables": {k: int(v) for k, v in sorted(m.get("counts", {}).items())},
        "bytes_export": int(sum(int(f["bytes"]) for f in m.get("files", {}).values())),
        "bytes_parts": _folder_bytes(ex.path / ".parts"),
        "versions": dict(m.get("versions", {})),
    }


@dataclass(frozen=True)
class RejectsSummary:
    """The rejects of an export after filtering.

    Attributes
    ----------
    groups:
        One row per (stage, reason kind): ``stage, reason, n_rows, n_cases`` sorted by ``n_rows``
        descending; ``reason`` is the first full reason of the group (an example).
    rows:
        The filtered ``rejects`` rows (``dataset, case_id, stage, file, row, reason``), ``row`` 1-based.
    table:
        Path of the full ``rejects`` Parquet table.
    """

    groups: pl.DataFrame
    rows: pl.DataFrame
    table: Path


def rejects_summary(ex: Export, stage: str | None = None, reason_contains: str | None = None) -> RejectsSummary:
    """Group an export's rejects by stage and reason kind, optionally filtered.

    Parameters
    ----------
    ex:
        The export.
    stage:
        Keep only rows of this stage (``ingest``, ``text``, ``anatomy``, ``render``, ``build``, ...).
    reason_contains:
        Keep only rows whose reason contains this text (case-insensitive).
    """
    df = ex.tables["rejects"] if "rejects" in ex.tables else pl.DataFrame()
    if df.height:
        if stage is not None:
            df = df.filter(pl.col("stage") == stage)
        if reason_contains:
            df = df.filter(pl.col("reason").str.to_lowercase().str.contains(reason_contains.lower(), literal=True))
    if df.height:
        keyed = df.with_columns(pl.col("reason").map_elements(reason_kind, return_dtype=pl.String).alias("_kind"))
        groups = (
            keyed.group_by("stage", "_kind", maintain_order=True)
            .agg(
                pl.col("reason").first(),
                pl.len().alias("n_rows"),
                pl.col("case_id").drop_nulls().n_unique().alias("n_cases"),
            )
            .drop("_kind")
            .sort(["n_rows", "stage", "reason"], descending=[True, False, False])
        )
    else:
        groups = pl.DataFrame(
            schema={"stage": pl.String, "reason": pl.String, "n_rows": pl.UInt32, "n_cases": pl.UInt32}
        )
    return RejectsSummary(groups=groups, rows=df, table=ex.path / TABLES_DIR / "rejects.parquet")


def format_reject_group(group: dict[str, Any]) -> str:
    """One line for a row of :attr:`RejectsSummary.groups`: counts, stage and an example reason."""
    return f"{group['n_rows']:>6} rows {group['n_cases']:>6} cases  [{group['stage']}] {group['reason']}"


def format_reject_row(row: dict[str, Any]) -> str:
    """One line for a rejects row: ``case_id [stage] file, row N: reason`` (missing parts left out)."""
    where = row.get("file") or ""
    if row.get("row") is not None:
        where = f"{where}, row {row['row']}" if where else f"row {row['row']}"
    head = f"{row.get('case_id') or '-'} [{row.get('stage')}]"
    return f"{head} {where}: {row.get('reason')}" if where else f"{head} {row.get('reason')}"
