"""Paper 004's weak labels: label-only MIMIC-CXR images added to the training split.

004 (Bigolin Lanfredi et al. 2023, section 2.6) trains on the REFLACX images with eye-tracking maps
("annotated") *and* on about 187k MIMIC-CXR-JPG images that carry only the study's CheXpert labels
("unannotated"), which enter the MIL loss through L_U+ / L_U- (eqs. 3-4; ``annotated=False`` in
:func:`gazeprep.train.losses.mil_loss`). This module selects those images and their labels:

Selection (every rule applies; the counts of what each removed are kept in :attr:`WeakLabels.excluded`)

1. **labelled**: the image's study has a row in the labeler's table (``mimic-cxr-2.0.0-chexpert`` or
   ``-negbio``; joined on ``subject_id, study_id``), as 004's ``mimic_generate_df.py`` (inner merge);
2. **MIMIC's own split**: only images whose ``mimic-cxr-2.0.0-split`` value is ``train`` (004 keeps
   MIMIC's ``validate``/``test`` images for its own validation/test sets);
3. **frontal, one per study**: ``ViewPosition`` PA or AP, in a study with exactly one such image
   (004 section 2.6: "only labeled frontal images from studies with a single frontal image"; the code
   reads that list from ``image_all_paths.txt``);
4. **not an export image**: no image whose ``dicom_id`` is an ``image_id`` (or ``case_id``) of any
   case of the export, whatever its split (the same image never enters twice, once with and once
   without its maps; 004's code does not remove them, see docs/trainer.md);
5. **no held-out subject**: no image of a subject with a case in the run's ``validate`` or ``test``
   split (004 moved its REFLACX validation subjects to the MIMIC validation set, ``val_mimicid.txt``;
   here every held-out subject of the run is kept out of training).

Labels: the table's 14 columns are mapped onto the model's labels by the one label map,
``rules/labels.yaml`` (sources ``mimic_chexpert`` / ``mimic_negbio``, through
:func:`gazeprep.text.labels.map_case_labels`, including implied labels such as Edema -> Opacity).
A label is 1 when present (1, and -1 "uncertain" while ``thresholds.chexpert_uncertain_present`` is
true, as 004's ``MIMICCXRDataset``: ``abs(value) > 0``), 0 when the table says 0 **or leaves it blank**
(004's code reads NaN as 0: ``abs(NaN) > 0`` is false), and NaN (ignored by the loss) only for a model
label that no column of the table maps to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from torch.utils.data import Dataset

from gazeprep import schema
from gazeprep.datasets.mimic import CHEXPERT_LABELS, find_table, read_chexpert, read_metadata, read_negbio, read_split
from gazeprep.errors import GazeprepError
from gazeprep.train.data import GazeDataset, _zeros_for_batch, assemble_batch

#: ``--weak-labeler`` choices: the MIMIC-CXR label table to read.
LABELERS = ("chexpert", "negbio")
#: ``ViewPosition`` values counted as frontal (rule 3).
FRONTAL_VIEWS = ("PA", "AP")
#: ``dataset`` value of the label-only cases.
WEAK_DATASET = "mimic-cxr"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_root(root: str | Path, labeler: str) -> tuple[Path, Path]:
    """The MIMIC-CXR root and the labeler's table, checked; :class:`GazeprepError` (one line naming
    the folder or the file) when either is missing or the labeler is unknown."""
    if labeler not in LABELERS:
        raise GazeprepError(f"--weak-labeler {labeler!r}: use one of {', '.join(LABELERS)}")
    p = Path(root)
    if not p.is_dir():
        raise GazeprepError(f"--weak-labels {p}: MIMIC-CXR root not found (a folder holding mimic-cxr-2.0.0-*.csv.gz)")
    return p, find_table(p, labeler)


def weak_identity(root: str | Path, labeler: str) -> dict[str, Any]:
    """What a run's config records of its weak labels before any selection: the root's folder name,
    the labeler, the label table's file name and SHA-256 (a changed table is a changed config)."""
    p, table = check_root(root, labeler)
    return {"root": p.resolve().name, "labeler": labeler, "table": table.name, "table_sha256": _sha256(table)}


@dataclass
class WeakLabels:
    """The label-only cases of a run.

    ``cases``: rows of the ``cases`` schema (case_id = image_id = dicom_id, image_path relative to
    ``root``, split ``train``); ``label_matrix``: float32 (n_cases, n_labels) in ``labels`` order
    (1 present, 0 negative or blank, NaN for labels the table cannot give); ``excluded``: images removed
    per rule; ``rejects``: table rows dropped as malformed.
    """

    root: Path
    labeler: str
    labels: list[str]
    cases: pl.DataFrame
    label_matrix: np.ndarray
    identity: dict[str, Any]
    excluded: dict[str, int] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The ``weak_labels`` entry of run.yaml."""
        return {
            **self.identity,
            "cases": int(self.cases.height),
            "excluded": dict(self.excluded),
            "rules": "mimic split train; frontal (PA/AP), one per study; not an export image (dicom_id); "
            "no subject of the run's validate/test splits",
        }


def _norm_subject(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s[:-2] if s.endswith(".0") else s


def map_weak_labels(table: pl.DataFrame, labeler: str, labels: Sequence[str]) -> np.ndarray:
    """Label matrix (n_rows, len(labels)) of a CheXpert/NegBio study table (:func:`read_chexpert`),
    mapped by ``rules/labels.yaml`` (source ``mimic_<labeler>``).

    1.0 present (1, or -1 under ``chexpert_uncertain_present``), 0.0 otherwise, blank included (004's
    code); NaN for a label that no column maps to. Each distinct row of the 14 columns is mapped once.
    """
    from gazeprep.text.labels import canonical_label, map_case_labels, source_label_closure

    source = f"mimic_{labeler}"
    reachable = {x for ids in source_label_closure(source).values() for x in ids}
    canon = [canonical_label(lab) or lab for lab in labels]
    unreachable = np.array([c not in reachable for c in canon], dtype=bool)
    if table.height == 0:
        return np.zeros((0, len(labels)), dtype=np.float32)
    cols = list(CHEXPERT_LABELS)
    keyed = table.select([pl.col(c).cast(pl.Float64) for c in cols]).with_columns(
        pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("") for c in cols], separator="|").alias("_key")
    )
    patterns = keyed.unique("_key", keep="first", maintain_order=True)
    long = (
        patterns.select(pl.col("_key").alias("case_id"), *cols)
        .unpivot(index="case_id", on=cols, variable_name="source_label", value_name="value")
        .with_columns(pl.lit(WEAK_DATASET).alias("dataset"), pl.lit(source).alias("source"))
    )
    mapped = map_case_labels(long.select("dataset", "case_id", "source", "source_label", "value"))
    col_of = {c: j for j, c in enumerate(canon)}
    row_of = {k: i for i, k in enumerate(patterns["_key"].to_list())}
    pat = np.zeros((patterns.height, len(labels)), dtype=np.float32)
    for key, lab, present in mapped.select("case_id", "label", "present").iter_rows():
        j = col_of.get(lab)
        if j is not None and present:
            pat[row_of[key], j] = 1.0
    idx = np.asarray([row_of[k] for k in keyed["_key"].to_list()], dtype=np.int64)
    rows = pat[idx]
    rows[:, unreachable] = np.nan
    return rows


def select_weak_labels(
    root: str | Path,
    labeler: str,
    labels: Sequence[str],
    *,
    exclude_images: Sequence[str] = (),
    exclude_subjects: Sequence[Any] = (),
) -> WeakLabels:
    """Label-only cases of the MIMIC-CXR folder ``root`` (rules 1-5 of the module docstring).

    ``exclude_images``: dicom ids of the export's images (rule 4); ``exclude_subjects``: subject ids
    of the run's validate/test cases (rule 5). Raises :class:`GazeprepError` naming a missing root or
    table (label table, ``metadata``, ``split``).
    """
    root_p, _table = check_root(root, labeler)
    identity = weak_identity(root_p, labeler)
    rejects: list[dict] = []
    lab = (read_chexpert if labeler == "chexpert" else read_negbio)(root_p, rejects)
    meta = read_metadata(root_p, rejects)
    split = read_split(root_p, rejects).select("dicom_id", "split").unique("dicom_id", keep="first")
    excluded: dict[str, int] = {}
    img = meta.unique("dicom_id", keep="first", maintain_order=True).join(split, on="dicom_id", how="left")
    n0 = img.height
    lab = lab.unique(["subject_id", "study_id"], keep="first")
    img = img.join(lab, on=["subject_id", "study_id"], how="inner")
    excluded["unlabelled_study"] = n0 - img.height
    n = img.height
    img = img.filter(pl.col("split") == "train")
    excluded["mimic_split_not_train"] = n - img.height
    n = img.height
    view = pl.col("ViewPosition").fill_null("").str.to_uppercase().str.strip_chars()
    img = img.filter(view.is_in(FRONTAL_VIEWS))
    img = img.filter(pl.len().over("study_id") == 1)
    excluded["not_single_frontal"] = n - img.height
    n = img.height
    img = img.filter(~pl.col("dicom_id").is_in([str(x) for x in exclude_images]))
    excluded["export_image"] = n - img.height
    n = img.height
    held = sorted({s for s in (_norm_subject(x) for x in exclude_subjects) if s})
    img = img.filter(~pl.col("subject_id").cast(pl.Utf8).is_in(held))
    excluded["held_out_subject"] = n - img.height
    img = img.sort("subject_id", "study_id", "dicom_id")
    sid = pl.col("subject_id").cast(pl.Utf8)
    cases = img.select(
        pl.lit(WEAK_DATASET).alias("dataset"),
        pl.col("dicom_id").alias("case_id"),
        pl.col("dicom_id").alias("image_id"),
        "subject_id",
        "study_id",
        pl.lit("train").alias("split"),
        pl.concat_str(
            pl.lit("files/p"),
            sid.str.slice(0, 2),
            pl.lit("/p"),
            sid,
            pl.lit("/s"),
            pl.col("study_id").cast(pl.Utf8),
            pl.lit("/"),
            pl.col("dicom_id"),
            pl.lit(".jpg"),
        ).alias("image_path"),
        pl.col("Rows").alias("image_height_px"),
        pl.col("Columns").alias("image_width_px"),
        pl.lit(False).alias("discarded"),
    )
    cases = schema.conform(cases, "cases")
    matrix = map_weak_labels(img.select(list(CHEXPERT_LABELS)), labeler, labels)
    return WeakLabels(root_p, labeler, list(labels), cases, matrix, identity, excluded, rejects)


def weak_labels_for_run(
    root: str | Path, labeler: str, labels: Sequence[str], export_cases: pl.DataFrame, splits: dict[str, list[str]]
) -> WeakLabels:
    """:func:`select_weak_labels` with the exclusions of a run: every image of ``export_cases``
    (``image_id``, else ``case_id``) and every subject of the ``validate`` and ``test`` splits."""
    images: set[str] = set(export_cases["case_id"].cast(pl.Utf8).to_list())
    if "image_id" in export_cases.columns:
        images |= {x for x in export_cases["image_id"].cast(pl.Utf8).to_list() if x}
    held_ids = set(splits.get("validate", [])) | set(splits.get("test", []))
    subjects: list[Any] = []
    if "subject_id" in export_cases.columns:
        subjects = export_cases.filter(pl.col("case_id").is_in(sorted(held_ids)))["subject_id"].to_list()
    return select_weak_labels(root, labeler, labels, exclude_images=sorted(images), exclude_subjects=subjects)


class WeakLabelSource:
    """The label-only cases as an export-like object for :class:`GazeDataset`: a ``cases`` table, no
    heatmaps, no case labels (the labels come as ``label_matrix``), images under ``images_root``."""

    def __init__(self, weak: WeakLabels):
        self.tables = {"cases": weak.cases, "case_labels": schema.empty("case_labels")}
        self.manifest = {"images_root": str(weak.root)}
        self.path = weak.root

    def heatmap(self, case_id: str, target: str) -> np.ndarray:
        """Label-only cases have no maps (the dataset never asks: the source has no heatmaps table)."""
        raise GazeprepError(f"label-only case {case_id} has no heatmap ({target})")


def label_only_dataset(weak: WeakLabels, like: GazeDataset, augment: Any = None, **input_kwargs: Any) -> GazeDataset:
    """A :class:`GazeDataset` of the label-only cases with the targets, labels, masks and training frame
    of ``like`` (every item has ``annotated=False`` and zero maps); its augmentation draws use another
    seed than ``like``'s."""
    return GazeDataset(
        WeakLabelSource(weak),
        targets=like.targets,
        labels=like.labels,
        label_matrix=weak.label_matrix,
        mask_structures=like.mask_structures,
        image_root=weak.root,
        seed=like.seed + 1_000_003,
        augment=augment,
        **input_kwargs,
    )


class WithLabelOnly(Dataset):
    """The training set of a run with weak labels: the export's training cases, then the label-only
    ones (indices ``len(annotated)`` onwards). Batches are written into one preallocated tensor as
    :meth:`GazeDataset.__getitems__` does; ``index`` is the position in this joined set."""

    def __init__(self, annotated: GazeDataset, label_only: GazeDataset):
        if (
            annotated.targets != label_only.targets
            or annotated.labels != label_only.labels
            or annotated.mask_structures != label_only.mask_structures
            or annotated.frame.shape != label_only.frame.shape
        ):
            raise GazeprepError(
                "label-only cases must share the targets, labels, masks and frame of the training cases"
            )
        self.parts = (annotated, label_only)
        self.n_annotated = len(annotated)

    def __len__(self) -> int:
        return len(self.parts[0]) + len(self.parts[1])

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` in both parts."""
        for p in self.parts:
            p.set_epoch(epoch)

    def _locate(self, index: int) -> tuple[GazeDataset, int]:
        if index < 0 or index >= len(self):
            raise IndexError(index)
        return (self.parts[0], index) if index < self.n_annotated else (self.parts[1], index - self.n_annotated)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ds, j = self._locate(int(index))
        return {**ds[j], "index": int(index)}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        first = self.parts[0]
        fh, fw = first.frame.shape
        buf = _zeros_for_batch((len(indices), 1 + len(first.targets) + len(first.mask_structures), fh, fw))
        items = []
        for k, i in enumerate(indices):
            ds, j = self._locate(int(i))
            items.append({**ds._fill(j, buf[k]), "index": int(i)})
        return assemble_batch(first, buf, items)


__all__ = [
    "FRONTAL_VIEWS",
    "LABELERS",
    "WeakLabelSource",
    "WeakLabels",
    "WithLabelOnly",
    "check_root",
    "label_only_dataset",
    "map_weak_labels",
    "select_weak_labels",
    "weak_identity",
    "weak_labels_for_run",
]
