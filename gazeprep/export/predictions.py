"""Exports of predicted heatmaps (``gazeprep predict``, the evaluator), same layout as ground truth.

A prediction export is an ordinary export with ``manifest["kind"] == "prediction"``: read it with
:func:`gazeprep.export.load_export` and compare ``pred.heatmap(c, t)`` with ``gt.heatmap(c, t)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from gazeprep import schema
from gazeprep.errors import GazeprepError
from gazeprep.export._io import sha256_file
from gazeprep.export.layout import MANIFEST
from gazeprep.export.reader import Export, load_export
from gazeprep.export.results import CaseResult
from gazeprep.export.writer import finalize
from gazeprep.recipes import Recipe


def _maps_hash(maps: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for t in sorted(maps):
        a = maps[t]
        h.update(t.encode() + b"\0" + repr(a.shape).encode() + b"\0")
        h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return h.hexdigest()


def write_prediction_export(
    out_dir: str | Path,
    heatmaps: Mapping[tuple[str, str], np.ndarray],
    *,
    model: str,
    source_export: str | Path | Export | None = None,
    recipe: Recipe | None = None,
    dtype: str = "float32",
    manifest_extra: Mapping | None = None,
    tables: Mapping[str, pl.DataFrame] | None = None,
    shard_size: int = 64,
    fsync: bool = True,
    progress: bool = False,
) -> Path:
    """Write predicted maps as an export and return ``out_dir`` (load it with ``load_export``).

    Parameters
    ----------
    out_dir:
        Where to write (must differ from the source export).
    heatmaps:
        ``(case_id, target) -> (H, W)`` predicted map (any float; stored in ``dtype``). Targets use
        the ground truth's names (label ids, ``"full"``) so both exports join on ``(case_id, target)``.
    model:
        Short description of the model (name, checkpoint file name), recorded in the manifest.
    source_export:
        The ground-truth export the model was evaluated on: its recipe is recorded (unless
        ``recipe`` is given), its ``cases`` rows of the predicted cases are copied, and its manifest
        checksum is recorded to tie the two exports together.
    recipe:
        Recipe to record; defaults to the source export's.
    dtype:
        ``float32`` (default) or ``float16``.
    manifest_extra:
        More JSON facts for the manifest's ``extra`` (e.g. the training configuration).
    tables:
        Tables stored beside the maps (read back as ``load_export(out).tables[name]``): only
        ``class_scores`` (``case_id, label, score, truth``: a classifier's per-label scores in [0, 1]
        and the ground truth 1/0, null when unknown), which ``gazeprep evaluate`` turns into AUCs.
    shard_size, fsync, progress:
        As :func:`gazeprep.export.finalize`.
    """
    src = _open_source(source_export)
    if src is not None and Path(out_dir).resolve() == src.path.resolve():
        raise GazeprepError(f"{out_dir}: a prediction export cannot overwrite its source export")
    if recipe is None and src is not None:
        recipe = src.recipe
    per_case = _maps_per_case(heatmaps)
    results = _case_results(per_case, recipe.dataset if recipe is not None else None)
    extra_tables = dict(tables or {})
    source_info = None
    if src is not None:
        extra_tables["cases"], source_info = _source_facts(src, sorted(per_case))
    extra = {"prediction": {"model": str(model), "source_export": source_info}}
    extra.update(dict(manifest_extra or {}))
    return finalize(
        out_dir,
        results,
        recipe=recipe,
        dtype=dtype,
        manifest_extra=extra,
        shard_size=shard_size,
        extra_tables=extra_tables,
        kind="prediction",
        fsync=fsync,
        progress=progress,
    )


def _open_source(source_export: str | Path | Export | None) -> Export | None:
    """The source export, loaded when given as a folder."""
    if source_export is None or isinstance(source_export, Export):
        return source_export
    return load_export(source_export)


def _maps_per_case(heatmaps: Mapping[tuple[str, str], np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``case_id -> target -> map`` (float32) from the ``(case_id, target)`` keyed maps, cases in the
    order they first appear."""
    per_case: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in heatmaps.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise GazeprepError(f"prediction keys must be (case_id, target) pairs, got {key!r}")
        cid, target = key
        per_case.setdefault(cid, {})[target] = np.asarray(arr, dtype=np.float32)
    return per_case


def _case_results(per_case: dict[str, dict[str, np.ndarray]], dataset: str | None) -> list[CaseResult]:
    """One :class:`CaseResult` per case: its maps, a ``heatmaps`` index of its targets (sorted) and,
    as input hash, a SHA-256 of the maps themselves."""
    results = []
    for cid, maps in per_case.items():
        idx = pl.DataFrame(
            {"dataset": [dataset] * len(maps), "case_id": [cid] * len(maps), "target": sorted(maps)},
            schema={"dataset": pl.Utf8, "case_id": pl.Utf8, "target": pl.Utf8},
        )
        results.append(CaseResult(cid, _maps_hash(maps), {"heatmaps": idx}, maps, []))
    return results


def _source_facts(src: Export, case_ids: list[str]) -> tuple[pl.DataFrame, dict]:
    """The source export's ``cases`` rows of the predicted cases, and the manifest's record of the
    source (its kind, recipe hash, manifest SHA-256 and number of maps)."""
    cases = src.tables["cases"] if "cases" in src.tables else schema.empty("cases")
    cases = cases.filter(pl.col("case_id").is_in(case_ids))
    info = {
        "kind": src.kind,
        "recipe_hash": src.manifest.get("recipe_hash"),
        "manifest_sha256": sha256_file(src.path / MANIFEST),
        "heatmaps": len(src),
    }
    return cases, info
