"""What the build computes for one case (:class:`CaseResult`), and its validation.

A worker process turns one case into a :class:`CaseResult`; the :class:`~gazeprep.export.PartStore`
saves it as a part file; :func:`~gazeprep.export.finalize` assembles all parts into the export.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from gazeprep import schema
from gazeprep.errors import GazeprepError
from gazeprep.paths import safe_component

# Columns of the ``heatmaps`` index that the export fills in (a producer may leave them out).
INDEX_FILLED = ("array", "row", "height_px", "width_px")


@dataclass
class CaseResult:
    """Everything the build produced for one case.

    Attributes
    ----------
    case_id:
        The case (REFLACX reading id or EGD-CXR dicom id); must pass
        :func:`gazeprep.paths.safe_component` since it names the case's part file.
    input_hash:
        Hash of the case's input files and of the recipe (see :func:`hash_inputs`); a stored part is
        reused only while it matches.
    tables:
        Canonical tables (names of :data:`gazeprep.schema.TABLES`) restricted to this case: cases,
        fixations, words, sentences, mentions, windows, ellipses, boxes, case_labels, ... The
        ``heatmaps`` index rows may leave ``array``, ``row``, ``height_px``, ``width_px`` null or out:
        the export fills them. Without a ``heatmaps`` table, one index row per map is made.
    heatmaps:
        ``target -> (H, W)`` float map (stored as float32 or float16 at export; must be finite).
    rejects:
        Rows for the ``rejects`` table (:func:`gazeprep.schema.reject` dicts).
    """

    case_id: str
    input_hash: str
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)

    def validated(self, *, recipe_name: str | None = None, dataset: str | None = None) -> CaseResult:
        """A copy with tables conformed to their schemas and maps as float32; raises
        :class:`GazeprepError` naming the case on any inconsistency.

        ``recipe_name`` / ``dataset`` fill null ``recipe`` / ``dataset`` cells of the index.
        """
        cid = self.case_id
        safe_component(cid)
        if not isinstance(self.input_hash, str):
            raise GazeprepError(f"case {cid!r}: input_hash must be a string")
        maps: dict[str, np.ndarray] = {}
        for target, hm in self.heatmaps.items():
            if not isinstance(target, str) or not target:
                raise GazeprepError(f"case {cid!r}: heatmap target must be a non-empty string, got {target!r}")
            a = np.asarray(hm)
            if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
                raise GazeprepError(f"case {cid!r}, target {target!r}: heatmap must be 2-D (H, W), got shape {a.shape}")
            if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
                raise GazeprepError(f"case {cid!r}, target {target!r}: heatmap dtype {a.dtype} is not numeric")
            a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(a).all():
                raise GazeprepError(f"case {cid!r}, target {target!r}: heatmap has NaN or infinite values")
            maps[target] = a
        tables: dict[str, pl.DataFrame] = {}
        for name, df in self.tables.items():
            if name not in schema.TABLES:
                raise GazeprepError(f"case {cid!r}: unknown table {name!r} (known: {sorted(schema.TABLES)})")
            if name == "rejects":
                continue  # merged with self.rejects below
            if not isinstance(df, pl.DataFrame):
                raise GazeprepError(f"case {cid!r}: table {name!r} must be a polars DataFrame")
            df = schema.conform(df, name)
            ids = df.get_column("case_id").unique().to_list()
            if any(i != cid for i in ids):
                raise GazeprepError(f"case {cid!r}: table {name!r} has rows of other cases {sorted(map(str, ids))[:5]}")
            tables[name] = df
        tables["heatmaps"] = _index_for(cid, maps, tables.get("heatmaps"), recipe_name, dataset)
        rej = list(self.rejects)
        frames = [schema.rejects_frame(rej)] if rej else []
        if "rejects" in self.tables:
            frames.append(schema.conform(self.tables["rejects"], "rejects"))
        tables["rejects"] = pl.concat(frames) if frames else schema.empty("rejects")
        return CaseResult(cid, self.input_hash, tables, maps, [])


def _index_for(
    cid: str, maps: dict[str, np.ndarray], given: pl.DataFrame | None, recipe_name: str | None, dataset: str | None
) -> pl.DataFrame:
    """The case's ``heatmaps`` index: one row per map, sorted by target, height/width checked."""
    targets = sorted(maps)
    if given is None or given.height == 0:
        idx = pl.DataFrame(
            {"case_id": [cid] * len(targets), "target": targets}, schema={"case_id": pl.Utf8, "target": pl.Utf8}
        )
        idx = schema.conform(idx, "heatmaps")
    else:
        idx = given
        got = idx.get_column("target").to_list()
        if len(set(got)) != len(got):
            raise GazeprepError(f"case {cid!r}: heatmaps index lists a target twice: {sorted(got)}")
        if sorted(got) != targets:
            raise GazeprepError(
                f"case {cid!r}: heatmaps index targets {sorted(map(str, got))} != rendered maps {targets}"
            )
    shapes = {t: maps[t].shape for t in targets}
    for row in idx.select("target", "height_px", "width_px").iter_rows():
        t, h, w = row
        H, W = shapes[t]
        if (h is not None and h != H) or (w is not None and w != W):
            raise GazeprepError(f"case {cid!r}, target {t!r}: index says {h}x{w} but the map is {H}x{W}")
    fill = []
    if recipe_name is not None:
        fill.append(pl.col("recipe").fill_null(recipe_name))
    if dataset is not None:
        fill.append(pl.col("dataset").fill_null(dataset))
    if fill:
        idx = idx.with_columns(fill)
    idx = idx.with_columns(
        pl.col("target")
        .replace_strict(targets, [shapes[t][0] for t in targets], return_dtype=pl.Int32)
        .alias("height_px"),
        pl.col("target")
        .replace_strict(targets, [shapes[t][1] for t in targets], return_dtype=pl.Int32)
        .alias("width_px"),
    )
    return idx.sort("target")


def _relative_input(base: Path, f: str | Path) -> str:
    """``f`` relative to ``base``; a file outside the release folder is a :class:`GazeprepError`."""
    p = Path(f)
    try:
        rel = p.relative_to(base) if p.is_absolute() else p
    except ValueError:
        raise GazeprepError(f"input file {str(f)!r} is outside the release folder {str(base)!r}") from None
    if ".." in rel.parts:
        raise GazeprepError(f"input file {str(f)!r} leaves the release folder {str(base)!r}")
    return str(rel)


def hash_inputs(root: str | Path, files: Iterable[str | Path], *extra: str) -> str:
    """SHA-256 over the named input files (relative name, size and content) and ``extra`` strings
    (e.g. the recipe hash). Names are taken relative to ``root`` so moving the release folder does
    not invalidate stored parts. Files are hashed in sorted order of their relative names."""
    base = Path(root)
    h = hashlib.sha256()
    rels = sorted({_relative_input(base, f) for f in files})
    for rel in rels:
        p = base / rel
        h.update(rel.encode() + b"\0")
        try:
            st = p.stat()
        except FileNotFoundError:
            h.update(b"<missing>\0")
            continue
        h.update(str(st.st_size).encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    for e in extra:
        h.update(b"\1" + str(e).encode())
    return h.hexdigest()
