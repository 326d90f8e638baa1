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

Names of labels are compared in one way only, :func:`normalise_label` (case and punctuation
ignored): :func:`canonical_label` turns any spelling of a label (its id, its display name, or an
``aliases`` entry of ``labels.yaml`` such as 004's ``Cardiomegaly``) into its canonical id, and
:func:`source_label_closure` gives what a dataset's own label stands for. No label map is kept in
Python: everything comes from ``labels.yaml`` (the shipped rules, or ``GAZEPREP_RULES_DIR``).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from gazeprep.errors import RecipeError
from gazeprep.paths import default_rules_dir
from gazeprep.text.rules import LabelDefs, load_label_defs

_DEFS: dict[str, LabelDefs] = {}
_SPELLINGS: dict[str, dict[str, str]] = {}
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


def normalise_label(name: str) -> str:
    """The one loose form of a label name: lower case, every run of characters other than ``a-z``
    and ``0-9`` replaced by one ``_``, no ``_`` at either end.

    ``"Pleural Effusion"``, ``"pleural-effusion"`` and ``"pleural_effusion"`` all give
    ``"pleural_effusion"``; ``"High lung volume / emphysema"`` gives ``"high_lung_volume_emphysema"``.
    """
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def label_spellings(label: str, rules_dir: str | Path | None = None) -> tuple[str, ...]:
    """Every name of canonical label ``label``: its id, its display name and its ``aliases`` (in
    that order, duplicates left out). An unknown id gives just ``(label,)``."""
    defs = label_defs(rules_dir)
    out = [label]
    for s in (defs.names.get(label, label), *defs.aliases.get(label, ())):
        if s not in out:
            out.append(s)
    return tuple(out)


def _spelling_index(rules_dir: str | Path | None) -> dict[str, str]:
    """normalised spelling -> canonical id, built once per rules folder; a spelling that names two
    labels is a :class:`RecipeError` (``labels.yaml`` would be ambiguous)."""
    d = Path(rules_dir) if rules_dir is not None else default_rules_dir()
    key = str(d.resolve())
    if key not in _SPELLINGS:
        defs = label_defs(d)
        index: dict[str, str] = {}
        # ids first, then display names, then aliases: the message names the later, added spelling
        spellings = [(lid, lid) for lid in defs.names] + [(lid, name) for lid, name in defs.names.items()]
        spellings += [(lid, a) for lid, al in defs.aliases.items() for a in al]
        for lid, s in spellings:
            n = normalise_label(s)
            if index.setdefault(n, lid) != lid:
                raise RecipeError(
                    f"{d / 'labels.yaml'}: the name {s!r} of label {lid!r} also names label {index[n]!r} "
                    "(ids, names and aliases are compared ignoring case and punctuation)"
                )
        _SPELLINGS[key] = index
    return _SPELLINGS[key]


def canonical_label(name: str, rules_dir: str | Path | None = None) -> str | None:
    """The canonical id ``name`` spells (id, display name or alias, compared by
    :func:`normalise_label`), or None when it names no label of ``labels.yaml``.

    ``canonical_label("Cardiomegaly") == "enlarged_cardiac_silhouette"`` (004's name);
    ``canonical_label("Lung Lesion") == "lung_lesion"``."""
    return _spelling_index(rules_dir).get(normalise_label(name))


def source_label_closure(source: str, rules_dir: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """What each label of one ``sources`` entry stands for: ``source_label.lower()`` -> its canonical
    ids followed by everything they imply (no duplicates), e.g. for ``reflacx_metadata``
    ``"pleural effusion" -> ("pleural_effusion", "pleural_abnormality")``. Empty for an unknown
    source."""
    defs = label_defs(rules_dir)
    out: dict[str, tuple[str, ...]] = {}
    for sl, (ids, _kind) in defs.sources.get(source, {}).items():
        closure: list[str] = []
        for i in ids:
            closure += [x for x in defs.closure(i) if x not in closure]
        out[sl.lower()] = tuple(closure)
    return out


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
    th: dict[str, float | bool] = {
        "reflacx_min_certainty": 3,
        "reflacx_positive_certainty": 4,
        "chexpert_uncertain_present": True,
    }
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
        present = st == "positive" or (
            st == "uncertain" and (kind != "chexpert" or bool(th["chexpert_uncertain_present"]))
        )
        for lid in ids:
            for x in defs.closure(lid):
                key = (rec["dataset"], rec["case_id"], x)
                old = best.get(key)
                if old is None:
                    best[key] = (st, present)
                else:
                    best[key] = (st if _RANK[st] < _RANK[old[0]] else old[0], present or old[1])
    rows = [
        {
            "dataset": d,
            "case_id": c,
            "label": lab,
            "status": st,
            "present": pres,
            "value": None if st == "absent" else float(pres),
        }
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
