"""MIMIC-CXR(-JPG) auxiliary tables (FORMATS.md section 3) and the ``mimic-cxr`` adapter.

The four tables ship as ``mimic-cxr-2.0.0-{chexpert,negbio,metadata,split}.csv.gz``; many users
decompress them, so ``.csv`` is accepted too. They are 004's weak labels for unannotated images:
:func:`read_chexpert` / :func:`read_negbio` (one row per study), :func:`read_metadata` and
:func:`read_split` (one row per image). :func:`labels_for_cases` maps the study labels onto the
cases of another dataset by ``(subject_id, study_id)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from gazeprep import schema
from gazeprep.datasets.base import ROW_DROPPED, CaseData, DatasetAdapter, Release
from gazeprep.datasets.csvio import Col, read_checked_csv
from gazeprep.datasets.registry import register_dataset
from gazeprep.errors import InputFormatError

DATASET = "mimic-cxr"
VERSION = "2.0.0"
CHEXPERT_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # fmt: skip
SPLITS = ("train", "validate", "test")

_LABEL_COLS = {"subject_id": Col("int", lo=0), "study_id": Col("int", lo=0)} | {
    lab: Col("int", required=False, lo=-1, hi=1) for lab in CHEXPERT_LABELS
}
_META_COLS = {
    "dicom_id": Col("str"),
    "subject_id": Col("int", lo=0),
    "study_id": Col("int", lo=0),
    "PerformedProcedureStepDescription": Col("str", required=False),
    "ViewPosition": Col("str", required=False),
    "Rows": Col("int", lo=1),
    "Columns": Col("int", lo=1),
    "StudyDate": Col("int", required=False),
    "StudyTime": Col("float", required=False),
    "ProcedureCodeSequence_CodeMeaning": Col("str", required=False),
    "ViewCodeSequence_CodeMeaning": Col("str", required=False),
    "PatientOrientationCodeSequence_CodeMeaning": Col("str", required=False),
}
_SPLIT_COLS = {
    "dicom_id": Col("str"),
    "study_id": Col("int", lo=0),
    "subject_id": Col("int", lo=0),
    "split": Col("str"),
}


def find_table(root: Path, kind: str) -> Path:
    """Path of ``mimic-cxr-2.0.0-<kind>.csv`` or ``.csv.gz`` under ``root`` (also under the
    ``physionet.org/files/mimic-cxr-jpg/2.0.0/`` prefix); InputFormatError if absent."""
    root = Path(root)
    name = f"mimic-cxr-{VERSION}-{kind}.csv"
    for base in (root, root / f"physionet.org/files/mimic-cxr-jpg/{VERSION}"):
        for cand in (base / name, base / f"{name}.gz"):
            if cand.is_file():
                return cand
    raise InputFormatError(root / f"{name}[.gz]", "file not found")


def _report(rejects: list[dict] | None, path: Path, root: Path, bad: list[Any]) -> None:
    if rejects is None:
        return
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = str(path)
    for b in bad:
        rejects.append(schema.reject(DATASET, None, "ingest", rel, b.row, f"{b.reason}; {ROW_DROPPED}"))


def _labels(root: Path, kind: str, rejects: list[dict] | None) -> pl.DataFrame:
    path = find_table(root, kind)
    t = read_checked_csv(path, _LABEL_COLS)
    _report(rejects, path, Path(root), t.bad)
    return t.df.select(
        pl.col("subject_id").cast(pl.Int64), pl.col("study_id").cast(pl.Int64), *[pl.col(c) for c in CHEXPERT_LABELS]
    )


def read_chexpert(root: Path, rejects: list[dict] | None = None) -> pl.DataFrame:
    """``mimic-cxr-2.0.0-chexpert.csv[.gz]``: one row per study.

    Returns columns ``subject_id``, ``study_id`` (Int64) and the 14 CheXpert labels (Float64:
    1 positive, 0 negative, -1 uncertain, null not mentioned). Bad rows are dropped and, when
    ``rejects`` is given, appended to it.
    """
    return _labels(root, "chexpert", rejects)


def read_negbio(root: Path, rejects: list[dict] | None = None) -> pl.DataFrame:
    """``mimic-cxr-2.0.0-negbio.csv[.gz]``: same layout as :func:`read_chexpert`."""
    return _labels(root, "negbio", rejects)


def read_metadata(root: Path, rejects: list[dict] | None = None) -> pl.DataFrame:
    """``mimic-cxr-2.0.0-metadata.csv[.gz]``: one row per image.

    Columns as in the file; ``subject_id``, ``study_id``, ``Rows`` (height px), ``Columns``
    (width px) and ``StudyDate`` as Int64, ``StudyTime`` Float64 (``HHMMSS.ffffff``), the rest Utf8.
    """
    path = find_table(root, "metadata")
    t = read_checked_csv(path, _META_COLS)
    _report(rejects, path, Path(root), t.bad)
    return t.df.drop("source_row").with_columns(
        [pl.col(c).cast(pl.Int64) for c in ("subject_id", "study_id", "Rows", "Columns", "StudyDate")]
    )


def read_split(root: Path, rejects: list[dict] | None = None) -> pl.DataFrame:
    """``mimic-cxr-2.0.0-split.csv[.gz]``: ``dicom_id, study_id, subject_id, split`` (train/validate/test)."""
    path = find_table(root, "split")
    t = read_checked_csv(path, _SPLIT_COLS)
    df = t.df
    bad = list(t.bad)
    wrong = df.filter(~pl.col("split").is_in(SPLITS))
    if wrong.height:
        from gazeprep.datasets.csvio import BadRow

        bad += [
            BadRow(r, f"column 'split': {s!r} is not one of {list(SPLITS)}")
            for r, s in wrong.select("source_row", "split").iter_rows()
        ]
        df = df.filter(pl.col("split").is_in(SPLITS))
    _report(rejects, path, Path(root), bad)
    return df.drop("source_row").with_columns(pl.col("study_id").cast(pl.Int64), pl.col("subject_id").cast(pl.Int64))


def labels_long(labels: pl.DataFrame, source: str) -> pl.DataFrame:
    """Study-level label frame -> long rows (subject_id, study_id, source, source_label, value)."""
    return (
        labels.unpivot(
            index=["subject_id", "study_id"], on=list(CHEXPERT_LABELS), variable_name="source_label", value_name="value"
        )
        .with_columns(pl.lit(source).alias("source"))
        .select("subject_id", "study_id", "source", "source_label", pl.col("value").cast(pl.Float64))
    )


def labels_for_cases(mimic_root: Path, dataset: str, cases: pl.DataFrame, rejects: list[dict]) -> pl.DataFrame:
    """``case_labels`` rows (sources ``mimic_chexpert``, ``mimic_negbio``) for ``cases``.

    Joined on ``(subject_id, study_id)``: every label of the study, including nulls (not
    mentioned). A missing table is noted in ``rejects`` and contributes no rows.
    """
    frames = []
    for kind, reader in (("chexpert", read_chexpert), ("negbio", read_negbio)):
        try:
            lab = reader(mimic_root, rejects)
        except InputFormatError as exc:
            rejects.append(
                schema.reject(dataset, None, "ingest", exc.path, exc.row, f"{exc.reason}; mimic_{kind} labels left out")
            )
            continue
        long = labels_long(lab, f"mimic_{kind}")
        frames.append(
            cases.select("dataset", "case_id", "subject_id", "study_id")
            .join(long, on=["subject_id", "study_id"], how="inner")
            .select("dataset", "case_id", "source", "source_label", "value")
        )
    if not frames:
        return schema.empty("case_labels")
    return schema.conform(pl.concat(frames, how="vertical"), "case_labels")


def image_relpath(subject_id: int, study_id: int, dicom_id: str, ext: str = "jpg") -> str:
    """``files/pXX/p<subject>/s<study>/<dicom_id>.<ext>`` (MIMIC layout)."""
    s = str(subject_id)
    return f"files/p{s[:2]}/p{s}/s{study_id}/{dicom_id}.{ext}"


class MimicRelease(Release):
    """MIMIC-CXR-JPG as a label-only dataset: one case per image (case_id = dicom_id), no gaze."""

    dataset = DATASET
    tables = ()

    def __init__(self, root: Path):
        super().__init__(root)
        meta = read_metadata(root, self.rejects)
        try:
            split = read_split(root, self.rejects).select("dicom_id", "split")
        except InputFormatError as exc:
            self.rejects.append(
                schema.reject(DATASET, None, "ingest", exc.path, None, f"{exc.reason}; split left empty")
            )
            split = pl.DataFrame(schema={"dicom_id": pl.Utf8, "split": pl.Utf8})
        dup = meta.filter(pl.col("dicom_id").is_duplicated())
        if dup.height:
            for d in dup["dicom_id"].unique().to_list():
                self.rejects.append(
                    schema.reject(
                        DATASET,
                        d,
                        "ingest",
                        find_table(root, "metadata").name,
                        None,
                        f"duplicate dicom_id; later rows {ROW_DROPPED}",
                    )
                )
            meta = meta.unique("dicom_id", keep="first", maintain_order=True)
        cases = meta.join(split.unique("dicom_id", keep="first"), on="dicom_id", how="left").select(
            pl.lit(DATASET).alias("dataset"),
            pl.col("dicom_id").alias("case_id"),
            pl.col("dicom_id").alias("image_id"),
            "subject_id",
            "study_id",
            "split",
            pl.concat_str(  # image_relpath(), vectorised
                pl.lit("files/p"),
                pl.col("subject_id").cast(pl.Utf8).str.slice(0, 2),
                pl.lit("/p"),
                pl.col("subject_id").cast(pl.Utf8),
                pl.lit("/s"),
                pl.col("study_id").cast(pl.Utf8),
                pl.lit("/"),
                pl.col("dicom_id"),
                pl.lit(".jpg"),
            ).alias("image_path"),  # fmt: skip
            pl.col("Rows").alias("image_height_px"),
            pl.col("Columns").alias("image_width_px"),
            pl.lit(False).alias("discarded"),
        )
        self.cases = schema.conform(cases, "cases")
        self.case_labels = labels_for_cases(root, DATASET, self.cases, self.rejects)
        self.stats = {"cases": self.cases.height}

    def _read_case(self, case_id: str) -> CaseData:
        """No per-case files: an empty CaseData."""
        return CaseData(case_id, {}, [])


@register_dataset
class MimicAdapter(DatasetAdapter):
    """MIMIC-CXR-JPG tables (metadata, split, CheXpert/NegBio labels) as a label-only dataset."""

    name = DATASET
    description = "MIMIC-CXR-JPG 2.0.0 tables: metadata, split, CheXpert/NegBio study labels (no gaze)"

    def open(
        self, root: Path, *, gaze_samples: bool = False, images_root: Path | None = None, **kwargs: Any
    ) -> MimicRelease:
        """Open a MIMIC-CXR-JPG folder holding ``mimic-cxr-2.0.0-*.csv[.gz]`` (metadata is required).

        ``images_root`` (old name ``mimic_root``) is accepted like every adapter's and not used:
        the image sizes are the metadata's ``Rows``/``Columns`` and this dataset has no gaze.
        """
        self.images_option(images_root, kwargs)  # checks the folder and rejects unknown options
        return MimicRelease(self.check_root(root))


__all__ = [
    "CHEXPERT_LABELS",
    "find_table",
    "image_relpath",
    "labels_for_cases",
    "labels_long",
    "read_chexpert",
    "read_metadata",
    "read_negbio",
    "read_split",
]
