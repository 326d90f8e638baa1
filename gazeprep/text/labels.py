"""Canonical labels and the mapping of each dataset's case labels onto them (``rules/labels.yaml``).

:func:`map_case_labels` turns the long ``case_labels`` table (one row per case and source label, as
written in the release) into one row per case and canonical label. Value reading per source kind:

* ``certainty`` (REFLACX metadata, 0..5 = max ellipse certainty, 0 = not selected): present when
  ``value >= reflacx_min_certainty`` (default 3, the cut of REFLACX ``interrater.py``: "Possibly" or
  higher); status ``positive`` when ``value >= reflacx_positive_certainty`` (default 4), ``uncertain``
  for values in between, ``negative`` below (the reader looked at the whole image, so an unselected
  label is negative, not absent);
* ``chexpert`` (MIMIC CheXpert / NegBio, EGD ``*__chx``): 1 positive, -1 uncertain, 0 negative,
  empty absent; ``-1`` is present when ``chexpert_uncertain_present`` (default true, as 004's
  ``translate_mimic_to_label``);
* ``binary``: non-zero / True positive, 0 / False negative, empty absent.

Every source label adds its canonical ids and everything they imply; several source labels that
reach one canonical id combine by the strongest status (positive > uncertain > negative > absent).
Source labels not in the map (REFLACX "Other", EGD ``dx1``...) are ignored.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from gazeprep.paths import default_rules_dir
from gazeprep.text.rules import LabelDefs, load_label_defs

_DEFS: dict[str, LabelDefs] = {}
_RANK = {"positive": 0, "uncertain": 1, "negative": 2, "absent": 3}

CANONICAL_LABELS_SCHEMA = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "label": pl.Utf8,
    "status": pl.Utf8,  # positive / uncertain / negative / absent
    "present": pl.Boolean,  # positive, or uncertain counted as present under the thresholds
    "value": pl.Float64,  # 1.0 present, 0.0 mentioned but not present, null absent
}


def label_defs(rules_dir: str | Path | None = None) -> LabelDefs:
    """The parsed ``labels.yaml`` (cached per folder)."""
    d = Path(rules_dir) if rules_dir is not None else default_rules_dir()
    key = str(d.resolve())
    if key not in _DEFS:
        _DEFS[key] = load_label_defs(d)
    return _DEFS[key]


def label_ids(rules_dir: str | Path | None = None) -> tuple[str, ...]:
    """Every canonical label id, in ``labels.yaml`` order."""
    return tuple(label_defs(rules_dir).names)


def label_groups(rules_dir: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """Named ordered label lists: ``lanfredi2023`` (004's ten labels, model output order),
    ``reflacx_phase_1``, ``reflacx_phase_2_3``, ``chexpert``."""
    return dict(label_defs(rules_dir).groups)


def implied_labels(label: str, rules_dir: str | Path | None = None) -> tuple[str, ...]:
    """``label`` and every label it implies (e.g. ``nodule`` -> lung_nodule_or_mass, lung_lesion, opacity)."""
    return label_defs(rules_dir).closure(label)


def _status(kind: str, v: float | None, th: dict) -> str:
    if v is None or v != v:  # null / NaN
        return "absent"
    if kind == "certainty":
        if v >= th["reflacx_positive_certainty"]:
            return "positive"
        if v >= th["reflacx_min_certainty"]:
            return "uncertain"
        return "negative"
    if kind == "chexpert":
        if v == 1:
            return "positive"
        if v == -1:
            return "uncertain"
        return "negative"
    return "positive" if v != 0 else "negative"


def map_case_labels(
    case_labels: pl.DataFrame,
    *,
    reflacx_min_certainty: float | None = None,
    reflacx_positive_certainty: float | None = None,
    chexpert_uncertain_present: bool | None = None,
    rules_dir: str | Path | None = None,
) -> pl.DataFrame:
    """Canonical per-case labels from the release's labels.

    Parameters
    ----------
    case_labels:
        Rows of :data:`gazeprep.schema.CASE_LABELS` (dataset, case_id, source, source_label, value).
    reflacx_min_certainty, reflacx_positive_certainty, chexpert_uncertain_present:
        Override the defaults of ``labels.yaml`` ``thresholds`` (3, 4, true).

    Returns
    -------
    One row per (dataset, case_id, canonical label) reached by a mapped source label:
    ``dataset, case_id, label, status, present, value``. ``present`` is true for ``positive`` and
    for ``uncertain`` (REFLACX values in ``[min, positive)``; CheXpert -1 only when
    ``chexpert_uncertain_present``); ``value`` is 1.0 when present, 0.0 when not, null when absent.
    """
    defs = label_defs(rules_dir)
    th = {"reflacx_min_certainty": 3, "reflacx_positive_certainty": 4, "chexpert_uncertain_present": True}
    th.update(defs.thresholds)
    if reflacx_min_certainty is not None:
        th["reflacx_min_certainty"] = reflacx_min_certainty
    if reflacx_positive_certainty is not None:
        th["reflacx_positive_certainty"] = reflacx_positive_certainty
    if chexpert_uncertain_present is not None:
        th["chexpert_uncertain_present"] = chexpert_uncertain_present
    th["reflacx_positive_certainty"] = max(th["reflacx_positive_certainty"], th["reflacx_min_certainty"])

    best: dict[tuple[str, str, str], tuple[str, bool]] = {}
    for rec in case_labels.select("dataset", "case_id", "source", "source_label", "value").iter_rows(named=True):
        smap = defs.sources.get(rec["source"])
        if not smap or rec["source_label"] not in smap:
            continue
        ids, kind = smap[rec["source_label"]]
        st = _status(kind, rec["value"], th)
        present = st == "positive" or (st == "uncertain" and (kind != "chexpert" or th["chexpert_uncertain_present"]))
        for lid in ids:
            for x in defs.closure(lid):
                key = (rec["dataset"], rec["case_id"], x)
                old = best.get(key)
                if old is None:
                    best[key] = (st, present)
                else:
                    best[key] = (st if _RANK[st] < _RANK[old[0]] else old[0], present or old[1])
    rows = [
        {"dataset": d, "case_id": c, "label": lab, "status": st, "present": pres,
         "value": None if st == "absent" else float(pres)}
        for (d, c, lab), (st, pres) in best.items()
    ]
    order = {lab: i for i, lab in enumerate(defs.names)}
    out = pl.DataFrame(rows, schema=CANONICAL_LABELS_SCHEMA)
    if out.height:
        out = (
            out.with_columns(pl.col("label").replace_strict(order, return_dtype=pl.Int32).alias("_o"))
            .sort("dataset", "case_id", "_o")
            .drop("_o")
        )
    return out
