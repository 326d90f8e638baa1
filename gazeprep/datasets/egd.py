"""EGD-CXR adapter (PhysioNet ``egd-cxr`` 1.0.0; FORMATS.md section 2).

Layout::

    <root>/master_sheet.csv          59 columns, quoted multi-line indication text
    <root>/fixations.csv             37 columns, one row per fixation (all cases)
    <root>/eye_gaze.csv              37 columns, one row per ~60 Hz sample (only with gaze_samples)
    <root>/bounding_boxes.csv        dicom_id,bbox_name,x1,x2,y1,y2
    <root>/audio_segmentation_transcripts/<dicom_id>/{transcript.json, left_lung.png, right_lung.png,
                                                      mediastanum.png (or mediastinum.png), aortic_knob.png}

``case_id`` = ``dicom_id``. Fixation times: ``t_start_s = FPOGS``, ``t_end_s = FPOGS + FPOGD``
(seconds since the image was shown). Positions: the screen fractions FPOGX/FPOGY mapped to
original-image pixels with the master-sheet padding (FORMATS 2.4) *without* integer truncation::

    x_px = W' / (1920 - left - right) * (FPOGX * 1920 - left)
    y_px = H' / (1080 - top - bottom) * (FPOGY * 1080 - top)

where ``W'``/``H'`` are the image width/height rounded up to even (the official code pads odd
sizes before scaling), so ``int(x_px) == X_ORIGINAL`` for gaze on the image. Gaze off the image
keeps its true (negative or too large) position with ``in_image`` False, where the release wrote
a small negative number.

Image sizes (not in the release; every rendered case needs one) come from, in order:

1. the image header under ``images_root`` (the MIMIC-CXR root, CLI ``--images``): DICOM
   ``Rows``/``Columns`` read with ``stop_before_pixels``, or the JPG header (MIMIC-CXR-JPG keeps
   the DICOM resolution); only headers are read (~0.25 ms per DICOM, ~35 us per JPG);
2. the ``Rows``/``Columns`` of ``mimic-cxr-2.0.0-metadata.csv[.gz]`` under ``images_root`` (the
   same DICOM values, for images that are not on disk);
3. the header of the case's first readable mask PNG (EGD-CXR masks are drawn at image size).

A case with none of them is skipped at open time: it is left out of ``cases`` and a rejects row
(``master_sheet.csv`` and its row, or the unreadable mask PNG) says ``image size unknown`` and names
everything looked for (the mask PNGs, the image paths under ``images_root``, the metadata table).
So ``cases.image_height_px`` / ``image_width_px`` are never null.

Mask PNGs are checked (header only) by :meth:`EgdRelease.read_case`: a missing-signature, empty
(0 bytes) or corrupt PNG is a rejects row naming the PNG, and the mask is left out of ``masks``.
When a mask's size differs from the image header's (or metadata's), the image wins: a rejects row
names the PNG and both sizes, the case is kept and the mask is resized (nearest) to the image when
an anatomy recipe uses it. An :class:`OSError` with an ``errno`` (EACCES, EIO, ...) on an existing
file is an I/O fault and propagates; it is never a reject.

Calibration rows (``DICOM_ID`` not in master_sheet, a 39-character prefix of a real id) are
dropped and counted: one rejects row per calibration id, with the row count in the reason, and
``release.stats["calibration_rows"]`` / ``["calibration_ids"]``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from gazeprep import schema
from gazeprep.datasets import mimic
from gazeprep.datasets.base import (
    CASE_SKIPPED,
    ROW_DROPPED,
    CaseData,
    DatasetAdapter,
    ImageListing,
    ImageRecord,
    Release,
    TranscriptStyle,
)
from gazeprep.datasets.checks import time_problems
from gazeprep.datasets.csvio import BadRow, Col, read_checked_csv, scan_checked_csv
from gazeprep.datasets.images import image_candidates, image_size
from gazeprep.datasets.registry import register_dataset
from gazeprep.errors import GazeprepError, InputFormatError
from gazeprep.paths import safe_component, safe_join

DATASET = "egd-cxr"
SOURCE = "egd_master"
SCREEN_W, SCREEN_H = 1920, 1080
TRANSCRIPTS = "audio_segmentation_transcripts"

CLASS_LABELS = ("normal_reports", "Normal", "CHF", "pneumonia")
FINDING_LABELS = (
    "consolidation", "enlarged_cardiac_silhouette", "linear__patchy_atelectasis", "lobar__segmental_collapse",
    "not_otherwise_specified_opacity___pleural__parenchymal_opacity__", "pleural_effusion_or_thickening",
    "pulmonary_edema__hazy_opacity", "normal_anatomically", "elevated_hemidiaphragm", "hyperaeration",
    "vascular_redistribution",
)  # fmt: skip
CHX_LABELS = (
    "atelectasis__chx", "cardiomegaly__chx", "consolidation__chx", "edema__chx", "enlarged_cardiomediastinum__chx",
    "fracture__chx", "lung_lesion__chx", "lung_opacity__chx", "no_finding__chx", "pleural_effusion__chx",
    "pleural_other__chx", "pneumonia__chx", "pneumothorax__chx", "support_devices__chx",
)  # fmt: skip
PADS = ("image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad")
OLD_PAD_NAMES = {
    "image_top": "image_top_pad",
    "image_bottom": "image_bottom_pad",
    "image_left": "image_left_pad",
    "image_right": "image_right_pad",
}

MASTER_COLS = {
    "dicom_id": Col("str"),
    "path": Col("str"),
    "study_id": Col("int", lo=0),
    "patient_id": Col("int", lo=0),
    **{p: Col("int", lo=0) for p in PADS},
    # labels are checked one by one (a bad label drops that label, not the case)
    **{c: Col("str", required=False) for c in CLASS_LABELS + FINDING_LABELS + CHX_LABELS},
}
#: the other documented master_sheet.csv columns (FORMATS 2.2; ``image_ratio`` of the older layout)
MASTER_OTHER = (
    "stay_id", "gender", "anchor_age", *(f"dx{i}{s}" for i in range(1, 10) for s in ("", "_icd")),
    "cxr_exam_indication", "image_ratio",
)  # fmt: skip
LABEL_VALUES = {**{c: (0.0, 1.0) for c in CLASS_LABELS + FINDING_LABELS}, **{c: (-1.0, 0.0, 1.0) for c in CHX_LABELS}}
GAZE_COLS = {
    "SESSION_ID": Col("int"),
    "DICOM_ID": Col("str"),
    "Time (in secs)": Col(),
    "FPOGX": Col(),
    "FPOGY": Col(),
    "FPOGS": Col(),
    "FPOGD": Col(),
    "X_ORIGINAL": Col("int"),
    "Y_ORIGINAL": Col("int"),
}
#: the other documented columns of fixations.csv / eye_gaze.csv (FORMATS 2.3), accepted and not read
GAZE_OTHER = (
    "MEDIA_ID", "CNT", "TIMETICK(f=10000000)", "FPOGID", "FPOGV", "BPOGX", "BPOGY", "BPOGV", "LPCX", "LPCY", "LPD",
    "LPS", "LPV", "RPCX", "RPCY", "RPD", "RPS", "RPV", "BKID", "BKDUR", "BKPMIN", "LPMM", "LPMMV", "RPMM", "RPMMV",
    "SACCADE_MAG", "SACCADE_DIR", "VID_FRAME",
)  # fmt: skip
BOX_COLS = {"dicom_id": Col("str"), "bbox_name": Col("str"), "x1": Col(), "x2": Col(), "y1": Col(), "y2": Col()}
#: the anatomy mask PNGs of a case folder ``audio_segmentation_transcripts/<dicom_id>/``: file names
#: tried in order per structure (the release spells the mediastinum ``mediastanum.png``; FORMATS 2.1).
#: The one place these names are defined: the anatomy stage asks :meth:`EgdAdapter.mask_files`.
MASK_FILES: dict[str, tuple[str, ...]] = {
    "left_lung": ("left_lung.png",),
    "right_lung": ("right_lung.png",),
    "mediastinum": ("mediastanum.png", "mediastinum.png"),
    "aortic_knob": ("aortic_knob.png",),
}
#: where a case's image size came from (``release.stats["size_from_<source>"]`` counts them)
SIZE_SOURCES = ("image", "metadata", "masks")


def is_calibration_id(dicom_id: str, known: set[str]) -> bool:
    """A calibration pseudo-id: 39 characters and a prefix of a master-sheet id (real id minus its last 5)."""
    return len(dicom_id) == 39 and any(k.startswith(dicom_id) for k in known)


class EgdRelease(Release):
    """An opened EGD-CXR release (see module docstring)."""

    dataset = DATASET

    def __init__(self, root: Path, *, gaze_samples: bool = False, images_root: Path | None = None):
        super().__init__(root)
        self.gaze_samples = gaze_samples
        self.tables = ("fixations", "reports", "words", "boxes", "masks") + (("gaze_samples",) if gaze_samples else ())
        self.images_root = Path(images_root) if images_root is not None else None
        self._info: dict[str, dict] = {}
        self._meta_path: Path | None = None  # the MIMIC metadata table, when images_root has one
        self.stats.update({f"size_from_{k}": 0 for k in SIZE_SOURCES}, size_unknown=0)
        self._read_master()
        self._fix = self._read_gaze_file(self.root / "fixations.csv", required=True)
        self._gaze = self._read_gaze_file(self.root / "eye_gaze.csv", required=False) if gaze_samples else {}
        self._boxes = self._read_boxes(self.root / "bounding_boxes.csv")
        self.stats["cases"] = self.cases.height

    # ---- open ---------------------------------------------------------------------------
    def _read_master(self) -> None:
        """``master_sheet.csv`` -> ``cases`` and ``case_labels`` (with the MIMIC root's labels when
        ``images_root`` has them). A row that fails the checks, or whose image size is unknown, is a
        rejects row and skips its case; a bad label value leaves that label out."""
        path = self.root / "master_sheet.csv"
        t = read_checked_csv(path, MASTER_COLS, aliases=OLD_PAD_NAMES, known=MASTER_OTHER)
        rel = self.rel(path)
        self._all_master_ids: set[str] = set()
        self._reject_bad_master_rows(path, rel, t.bad)
        sizes = self._mimic_sizes()
        splits = self._mimic_splits()
        rows, labels = [], []
        for rec in t.df.iter_rows(named=True):
            did, row = rec["dicom_id"].strip(), rec["source_row"]
            self._all_master_ids.add(did)
            pads = [int(rec[p]) for p in PADS]
            tail = rec["path"].strip().replace("\\", "/")
            problem = self._master_row_problem(rec, did, tail, pads)
            if problem:
                self.rejects.append(self.reject(did or None, rel, row, f"{problem}; {CASE_SKIPPED}"))
                continue
            size, source, missing, bad_png = self._image_size(did, tail, sizes)
            if size is None:
                self.stats["size_unknown"] += 1
                where, at = (bad_png, None) if bad_png is not None else (rel, row)
                self.rejects.append(
                    self.reject(did, where, at, f"image size unknown: {'; '.join(missing)}; {CASE_SKIPPED}")
                )
                continue
            self.stats[f"size_from_{source.split()[0]}"] += 1
            h, w = size
            self._info[did] = {"pads": pads, "h": h, "w": w, "size_source": source}
            rows.append(
                {
                    "dataset": DATASET, "case_id": did, "image_id": did, "subject_id": int(rec["patient_id"]),
                    "study_id": int(rec["study_id"]), "split": splits.get(did), "image_path": tail,
                    "image_height_px": h, "image_width_px": w, "discarded": False,
                    "pad_top_px": pads[0], "pad_bottom_px": pads[1], "pad_left_px": pads[2], "pad_right_px": pads[3],
                }
            )  # fmt: skip
            labels += self._master_labels(rec, did, rel, row)
        self._set_case_tables(rows, labels)

    def _reject_bad_master_rows(self, path: Path, rel: str, bad: list[BadRow]) -> None:
        """Rejects rows for master-sheet rows the checked reader dropped, naming their case (whose gaze
        rows are then reported as belonging to a rejected row)."""
        raw_ids: dict[int, str] = {}
        if bad:  # name the case of a dropped row
            raw_ids = self._raw_ids(path, [b.row for b in bad], column="dicom_id")
            self._all_master_ids.update(v.strip() for v in raw_ids.values())
        for b in bad:
            cid = raw_ids.get(b.row)
            self.rejects.append(self.reject(cid.strip() if cid else None, rel, b.row, f"{b.reason}; {CASE_SKIPPED}"))

    def _master_row_problem(self, rec: dict[str, Any], did: str, tail: str, pads: list[int]) -> str | None:
        """Why a master-sheet row cannot be a case (unusable or duplicate id, image path that does not
        match its ids, padding that leaves no image on screen), or None."""
        sid = str(int(rec["patient_id"]))
        expected = mimic.image_relpath(int(rec["patient_id"]), int(rec["study_id"]), did, "dcm")
        try:
            safe_component(did)
        except GazeprepError:
            return f"column 'dicom_id': {did!r} is not a usable id"
        if did in self._info:
            return f"duplicate dicom_id {did!r}"
        if not tail.endswith(expected):
            return f"column 'path': {tail!r} does not match patient_id {sid}, study_id {int(rec['study_id'])} and dicom_id (expected {expected!r})"
        if pads[0] + pads[1] >= SCREEN_H or pads[2] + pads[3] >= SCREEN_W:
            return f"padding {pads} leaves no image area on the {SCREEN_W}x{SCREEN_H} screen"
        return None

    def _master_labels(self, rec: dict[str, Any], did: str, rel: str, row: int) -> list[dict]:
        """The ``case_labels`` rows of a master-sheet row (empty value: not given); a value outside the
        label's allowed values is a rejects row and leaves that label out."""
        labels = []
        for c, allowed in LABEL_VALUES.items():
            raw = rec[c]
            value = None
            if raw is not None and raw.strip():
                try:
                    value = float(raw)
                except ValueError:
                    value = float("nan")
                if value not in allowed:
                    self.rejects.append(
                        self.reject(
                            did,
                            rel,
                            row,
                            f"column '{c}': {raw!r} is not one of {[int(a) for a in allowed]}; label left out",
                        )
                    )
                    continue
            labels.append({"dataset": DATASET, "case_id": did, "source": SOURCE, "source_label": c, "value": value})
        return labels

    def _set_case_tables(self, rows: list[dict], labels: list[dict]) -> None:
        """``cases`` and ``case_labels`` from the kept rows, and the MIMIC root's labels of the cases."""
        self.cases = schema.conform(
            pl.DataFrame(rows, schema={k: schema.CASES[k] for k in rows[0]}) if rows else schema.empty("cases"), "cases"
        )
        self.case_labels = (
            schema.conform(
                pl.DataFrame(
                    labels,
                    schema={
                        k: schema.CASE_LABELS[k] for k in ("dataset", "case_id", "source", "source_label", "value")
                    },
                ),
                "case_labels",
            )
            if labels
            else schema.empty("case_labels")
        )
        if self.images_root is not None:
            extra = mimic.labels_for_cases(self.images_root, DATASET, self.cases, self.rejects)
            self.case_labels = pl.concat([self.case_labels, extra], how="vertical")

    def _mimic_sizes(self) -> dict[str, tuple[int, int]]:
        """dicom_id -> (Rows, Columns) of the MIMIC metadata table under ``images_root``.

        A MIMIC-CXR (DICOM) root has no such table: then nothing is returned and nothing is
        reported here (a case whose size stays unknown names the table in its reject). A table
        that exists but is malformed is a rejects row.
        """
        if self.images_root is None:
            return {}
        try:
            self._meta_path = mimic.find_table(self.images_root, "metadata")
            meta = mimic.read_metadata(self.images_root)
        except InputFormatError as exc:
            if self._meta_path is not None:
                self.rejects.append(
                    self.reject(None, exc.path, exc.row, f"{exc.reason}; image sizes taken from the images")
                )
            return {}
        return {d: (int(r), int(c)) for d, r, c in meta.select("dicom_id", "Rows", "Columns").iter_rows()}

    def _mimic_splits(self) -> dict[str, str]:
        if self.images_root is None:
            return {}
        try:
            sp = mimic.read_split(self.images_root)
        except InputFormatError as exc:
            self.rejects.append(self.reject(None, exc.path, exc.row, f"{exc.reason}; split left empty"))
            return {}
        return dict(sp.select("dicom_id", "split").iter_rows())

    def _image_size(
        self, did: str, image_path: str, meta_sizes: dict[str, tuple[int, int]]
    ) -> tuple[tuple[int, int] | None, str, list[str], Path | None]:
        """(size, source, missing, bad_png) of one case (order: module docstring).

        ``size`` = (height, width) px or None; ``source`` = ``"image <file>"``, ``"metadata <file>"``
        or ``"masks <file>"``; when ``size`` is None, ``missing`` says what was looked for and why
        it gave no size, and ``bad_png`` is the first unreadable mask PNG (None if there was none).
        Only headers are read. An I/O fault (OSError with errno) propagates.
        """
        missing: list[str] = []
        root = self.images_root
        if root is None:
            missing.append(
                "no MIMIC-CXR root given (--images MIMIC_ROOT reads it from the DICOM or JPG header of the image)"
            )
        else:
            cands = image_candidates(root, image_path)
            found = next((c for c in cands if c.is_file()), None)
            if found is not None:
                try:
                    return image_size(found), f"image {found}", [], None
                except InputFormatError as exc:
                    missing.append(f"unreadable image header: {exc}")
            else:
                first = cands[0].with_suffix("")
                missing.append(
                    f"no image under {root}: looked for '{first}.dcm' and '{first}.jpg' "
                    "(also under physionet.org/files/mimic-cxr[-jpg]/2.0.0/)"
                )
            if did in meta_sizes:
                return meta_sizes[did], f"metadata {self._meta_path}", [], None
            if self._meta_path is not None:
                missing.append(f"no row for this dicom_id in {self._meta_path}")
            else:
                missing.append(f"no mimic-cxr-{mimic.VERSION}-metadata.csv[.gz] in {root}")
        folder = self.root / TRANSCRIPTS / safe_component(did)
        bad: list[str] = []
        bad_png: Path | None = None
        for names in MASK_FILES.values():
            for n in names:
                p = folder / n
                if not p.is_file():
                    continue
                try:
                    return image_size(p, require_format="PNG"), f"masks {self.rel(p)}", [], None
                except InputFormatError as exc:
                    bad.append(f"'{self.rel(p)}' ({exc.reason})")
                    bad_png = bad_png or p
                break  # the other spelling of the same structure is not tried after a bad file
        if bad:
            missing.append(f"unreadable mask PNG(s): {', '.join(bad)}")
        else:
            looked = ", ".join(" or ".join(names) for names in MASK_FILES.values())
            missing.append(f"no mask PNG in '{self.rel(folder)}/' (looked for {looked})")
        return None, "", missing, bad_png

    def _read_gaze_file(self, path: Path, *, required: bool) -> dict[str, pl.DataFrame]:
        """Read fixations.csv / eye_gaze.csv once; split by DICOM_ID; drop calibration and unknown ids."""
        rel = self.rel(path)
        kind = "fixation" if path.name == "fixations.csv" else "gaze"
        try:
            t = (
                scan_checked_csv(path, GAZE_COLS, known=GAZE_OTHER)
                if kind == "gaze"
                else read_checked_csv(path, GAZE_COLS, known=GAZE_OTHER)
            )
        except InputFormatError as exc:
            if required:
                raise
            self.rejects.append(self.reject(None, rel, None, f"{exc.reason}; gaze samples left empty"))
            return {}
        if t.bad:
            ids = self._raw_ids(path, [b.row for b in t.bad])
            for b in t.bad:
                self.rejects.append(self.reject(ids.get(b.row), rel, b.row, f"{b.reason}; {ROW_DROPPED}"))
        df = t.df
        known = set(self._info)
        unknown = df.filter(~pl.col("DICOM_ID").is_in(list(known)))
        n_cal_rows = n_cal_ids = 0
        if unknown.height:
            groups = unknown.group_by("DICOM_ID", maintain_order=True).agg(
                pl.len().alias("n"), pl.col("source_row").min().alias("first")
            )
            for did, n, first in groups.iter_rows():
                if is_calibration_id(did, self._all_master_ids):
                    n_cal_rows += n
                    n_cal_ids += 1
                    reason = (
                        f"calibration image (39-character DICOM_ID not in master_sheet.csv): {n} {kind} rows dropped"
                    )
                elif did in self._all_master_ids:
                    reason = f"the master_sheet.csv row of this DICOM_ID was rejected: {n} {kind} rows dropped"
                else:
                    reason = f"DICOM_ID not in master_sheet.csv: {n} {kind} rows dropped"
                self.rejects.append(self.reject(did, rel, first, reason))
            df = df.filter(pl.col("DICOM_ID").is_in(list(known)))
        self.stats[f"calibration_{kind}_rows"] = n_cal_rows
        self.stats[f"calibration_{kind}_ids"] = n_cal_ids
        if kind == "fixation":  # the names the brief documents
            self.stats["calibration_rows"] = n_cal_rows
            self.stats["calibration_ids"] = n_cal_ids
        return (
            {k[0]: v for k, v in df.partition_by("DICOM_ID", as_dict=True, maintain_order=True).items()}
            if df.height
            else {}
        )

    @staticmethod
    def _raw_ids(path: Path, rows: list[int], column: str = "DICOM_ID") -> dict[int, str]:
        """Id text of some data rows (to attach bad rows of a shared file to their case)."""
        try:
            raw = (
                pl.scan_csv(path, infer_schema=False, truncate_ragged_lines=True)
                .with_row_index("r", offset=1)
                .filter(pl.col("r").is_in(rows))
                .select("r", column)
                .collect()
            )
            return {int(r): d for r, d in raw.iter_rows() if d}
        except (pl.exceptions.PolarsError, ValueError):  # ids are a courtesy: a file polars cannot parse gives none
            return {}

    def _read_boxes(self, path: Path) -> dict[str, pl.DataFrame]:
        rel = self.rel(path)
        try:
            t = read_checked_csv(path, BOX_COLS)
        except InputFormatError as exc:
            self.rejects.append(self.reject(None, rel, None, f"{exc.reason}; boxes left empty"))
            return {}
        for b in t.bad:
            self.rejects.append(self.reject(None, rel, b.row, f"{b.reason}; {ROW_DROPPED}"))
        df = t.df
        swapped = df.filter((pl.col("x1") > pl.col("x2")) | (pl.col("y1") > pl.col("y2")))
        for r, did in swapped.select("source_row", "dicom_id").iter_rows():
            self.rejects.append(self.reject(did, rel, r, f"box has x1 > x2 or y1 > y2; {ROW_DROPPED}"))
        df = df.filter((pl.col("x1") <= pl.col("x2")) & (pl.col("y1") <= pl.col("y2")))
        unknown = df.filter(~pl.col("dicom_id").is_in(list(self._info)))
        for did, n, first in (
            unknown.group_by("dicom_id", maintain_order=True).agg(pl.len(), pl.col("source_row").min()).iter_rows()
        ):
            why = (
                "the master_sheet.csv row of this dicom_id was rejected"
                if did in self._all_master_ids
                else "dicom_id not in master_sheet.csv"
            )
            self.rejects.append(self.reject(did, rel, first, f"{why}: {n} box rows dropped"))
        df = df.filter(pl.col("dicom_id").is_in(list(self._info)))
        out = df.select(
            pl.lit(DATASET).alias("dataset"),
            pl.col("dicom_id").alias("case_id"),
            pl.col("bbox_name").alias("box_name"),
            pl.col("x1").alias("xmin_px"),
            pl.col("y1").alias("ymin_px"),
            pl.col("x2").alias("xmax_px"),
            pl.col("y2").alias("ymax_px"),
        )
        return (
            {k[0]: v for k, v in out.partition_by("case_id", as_dict=True, maintain_order=True).items()}
            if out.height
            else {}
        )

    # ---- per case -----------------------------------------------------------------------
    def _read_case(self, case_id: str) -> CaseData:
        """Per-case tables of ``case_id`` (a dicom_id). Never raises on bad data."""
        info = self._info[case_id]
        rejects: list[dict] = []
        tables: dict[str, pl.DataFrame] = {t: schema.empty(t) for t in self.tables}
        fix_path = self.root / "fixations.csv"
        raw = self._fix.get(case_id)
        if raw is None or raw.height == 0:
            rejects.append(self.reject(case_id, fix_path, None, f"no fixation rows for this DICOM_ID; {CASE_SKIPPED}"))
            return self.empty_case(case_id, rejects)
        fix = self._map_positions(case_id, raw, info, fix_path, rejects, fixations=True)
        if fix.height == 0:
            rejects.append(self.reject(case_id, fix_path, None, f"no valid fixation rows; {CASE_SKIPPED}"))
            return self.empty_case(case_id, rejects)
        tables["fixations"] = fix
        if self.gaze_samples:
            graw = self._gaze.get(case_id)
            if graw is not None and graw.height:
                tables["gaze_samples"] = self._map_positions(
                    case_id, graw, info, self.root / "eye_gaze.csv", rejects, fixations=False
                )
        if case_id in self._boxes:
            tables["boxes"] = schema.conform(self._boxes[case_id], "boxes")
        folder = self.root / TRANSCRIPTS / safe_component(case_id)
        self._transcript(case_id, folder / "transcript.json", tables, rejects)
        tables["masks"] = self._masks(case_id, folder, info, rejects)
        return CaseData(case_id, tables, rejects)

    def _map_positions(
        self, case_id: str, df: pl.DataFrame, info: dict, path: Path, rejects: list[dict], *, fixations: bool
    ) -> pl.DataFrame:
        top, bottom, left, right = info["pads"]
        h, w = info["h"], info["w"]
        if fixations:
            neg = df.filter(pl.col("FPOGD") < 0)
            for r, d in neg.select("source_row", "FPOGD").iter_rows():
                rejects.append(self.reject(case_id, path, r, f"negative duration: FPOGD {d:g}; {ROW_DROPPED}"))
            df = df.filter(pl.col("FPOGD") >= 0)
            df, tbad = time_problems(df, "FPOGS", None, start_label="FPOGS")
        else:
            df, tbad = time_problems(df, "Time (in secs)", None, start_label="Time (in secs)")
        for r, reason in tbad:
            rejects.append(self.reject(case_id, path, r, f"{reason}; {ROW_DROPPED}"))
        far = (pl.col("FPOGX") < -1) | (pl.col("FPOGX") > 2) | (pl.col("FPOGY") < -1) | (pl.col("FPOGY") > 2)
        for r, fx, fy in df.filter(far).select("source_row", "FPOGX", "FPOGY").iter_rows():
            rejects.append(
                self.reject(
                    case_id,
                    path,
                    r,
                    f"FPOGX/FPOGY ({fx:g}, {fy:g}) far outside the screen (corrupt value); {ROW_DROPPED}",
                )
            )
        df = df.filter(~far)
        we, he = w + (w % 2), h + (h % 2)
        eye_x = pl.col("FPOGX") * SCREEN_W
        eye_y = pl.col("FPOGY") * SCREEN_H
        x = we / (SCREEN_W - left - right) * (eye_x - left)
        y = he / (SCREEN_H - top - bottom) * (eye_y - top)
        df = df.with_columns(x.alias("__x"), y.alias("__y"))
        inside_screen = (eye_x > left) & (eye_x < SCREEN_W - right) & (eye_y > top) & (eye_y < SCREEN_H - bottom)
        mism = df.filter(
            inside_screen
            & (
                ((pl.col("__x").floor() - pl.col("X_ORIGINAL")).abs() > 1)
                | ((pl.col("__y").floor() - pl.col("Y_ORIGINAL")).abs() > 1)
            )
        )
        if mism.height:
            rejects.append(
                self.reject(
                    case_id, path, int(mism["source_row"][0]),
                    f"X_ORIGINAL/Y_ORIGINAL disagree with the padding mapping of the {w}x{h} image in {mism.height} "
                    "rows (first shown); wrong image size or pads? positions from FPOGX/FPOGY kept",
                )
            )  # fmt: skip
        in_image = (pl.col("__x") >= 0) & (pl.col("__x") < w) & (pl.col("__y") >= 0) & (pl.col("__y") < h)
        base = [pl.lit(DATASET).alias("dataset"), pl.lit(case_id).alias("case_id")]
        if fixations:
            out = df.select(
                *base,
                pl.int_range(0, pl.len(), dtype=pl.Int32).alias("fixation_idx"),
                pl.col("FPOGS").alias("t_start_s"),
                (pl.col("FPOGS") + pl.col("FPOGD")).alias("t_end_s"),
                pl.col("__x").alias("x_px"),
                pl.col("__y").alias("y_px"),
                pl.lit(0.0).alias("shown_xmin_px"),
                pl.lit(0.0).alias("shown_ymin_px"),
                pl.lit(float(w)).alias("shown_xmax_px"),
                pl.lit(float(h)).alias("shown_ymax_px"),
                in_image.alias("in_image"),
                pl.col("source_row"),
            )
            return schema.conform(out, "fixations")
        out = df.select(
            *base,
            pl.int_range(0, pl.len(), dtype=pl.Int32).alias("sample_idx"),
            pl.col("Time (in secs)").alias("t_s"),
            pl.col("__x").alias("x_px"),
            pl.col("__y").alias("y_px"),
            in_image.alias("in_image"),
            pl.col("source_row"),
        )
        return schema.conform(out, "gaze_samples")

    def _transcript(self, case_id: str, path: Path, tables: dict[str, pl.DataFrame], rejects: list[dict]) -> None:
        try:
            text, entries, bad = parse_transcript(path)
        except InputFormatError as exc:
            rejects.append(self.reject(case_id, path, exc.row, f"{exc.reason}; reports and words left empty"))
            return
        for b in bad:
            rejects.append(self.reject(case_id, path, b.row, f"{b.reason}; {ROW_DROPPED}"))
        words = pl.DataFrame(
            entries, schema={"word": pl.Utf8, "t_start_s": pl.Float64, "t_end_s": pl.Float64, "source_row": pl.Int64}
        )
        words, tbad = time_problems(words, "t_start_s", "t_end_s", start_label="begin_time", end_label="end_time")
        for r, reason in tbad:
            rejects.append(self.reject(case_id, path, r, f"entry {r} of time_stamped_text: {reason}; {ROW_DROPPED}"))
        if words.height == 0:
            rejects.append(
                self.reject(
                    case_id,
                    path,
                    None,
                    "empty transcript (no usable time_stamped_text entries); reports and words left empty",
                )
            )
            return
        tables["reports"] = schema.conform(
            pl.DataFrame({"dataset": [DATASET], "case_id": [case_id], "text": [text]}), "reports"
        )
        tables["words"] = schema.conform(
            words.select(
                pl.lit(DATASET).alias("dataset"),
                pl.lit(case_id).alias("case_id"),
                pl.int_range(0, pl.len(), dtype=pl.Int32).alias("word_idx"),
                "word",
                "t_start_s",
                "t_end_s",
            ),
            "words",
        )

    def _masks(self, case_id: str, folder: Path, info: dict, rejects: list[dict]) -> pl.DataFrame:
        """``masks`` rows of the case's PNGs; headers checked (signature, size), pixels not decoded.

        A bad PNG (empty, not a PNG, corrupt header) is a rejects row naming it and the mask is
        left out. A PNG whose size differs from the case's image size is kept with a rejects row
        naming both sizes (the image size wins; see the module docstring).
        """
        rows = []
        h, w = info["h"], info["w"]
        for structure, names in MASK_FILES.items():
            for n in names:
                p = folder / n
                if not p.is_file():
                    continue
                try:
                    mh, mw = image_size(p, require_format="PNG")
                except InputFormatError as exc:
                    rejects.append(self.reject(case_id, p, None, f"{exc.reason}; mask left out"))
                    break
                if (mh, mw) != (h, w):
                    rejects.append(
                        self.reject(
                            case_id, p, None,
                            f"mask PNG is {mw}x{mh} px but the image is {w}x{h} px (from the {info['size_source']}): "
                            "image size kept, the mask is resized to it when used",
                        )
                    )  # fmt: skip
                rows.append(
                    {
                        "dataset": DATASET,
                        "case_id": case_id,
                        "structure": structure,
                        "source": "egd_png",
                        "path": self.rel(p),
                    }
                )
                break
        return pl.DataFrame(rows, schema=schema.MASKS) if rows else schema.empty("masks")


def parse_transcript(path: Path) -> tuple[str, list[dict], list[BadRow]]:
    """Parse an EGD ``transcript.json``.

    Returns
    -------
    (full_text, entries, bad)
        ``entries``: dicts ``word`` (the phrase), ``t_start_s``, ``t_end_s``, ``source_row`` (1-based
        index in ``time_stamped_text``); ``bad``: entries dropped and why.

    Raises
    ------
    InputFormatError
        Missing file, malformed JSON (with its line), wrong structure, empty text.
    OSError
        An I/O fault reading the existing file (EACCES, EIO, ...): not a data problem, propagated.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputFormatError(path, "file missing") from None
    except IsADirectoryError:
        raise InputFormatError(path, "is a folder, not a file") from None
    # any other OSError (EACCES, EIO, ...) is an I/O fault and propagates
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputFormatError(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputFormatError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise InputFormatError(path, f"expected a JSON object, found {type(doc).__name__}")
    for key in ("full_text", "time_stamped_text"):
        if key not in doc:
            raise InputFormatError(path, f"missing key {key!r}")
    text, items = doc["full_text"], doc["time_stamped_text"]
    if not isinstance(text, str):
        raise InputFormatError(path, f"'full_text' is {type(text).__name__}, expected a string")
    if not isinstance(items, list):
        raise InputFormatError(path, f"'time_stamped_text' is {type(items).__name__}, expected a list")
    if not text.strip():
        raise InputFormatError(path, "empty transcript ('full_text' is empty)")
    entries, bad = [], []
    for i, it in enumerate(items, start=1):
        problem = None
        if not isinstance(it, dict):
            problem = f"entry {i} of time_stamped_text is not an object"
        else:
            ph, b, e = it.get("phrase"), it.get("begin_time"), it.get("end_time")
            if not isinstance(ph, str) or not ph.strip():
                problem = f"entry {i} of time_stamped_text: missing or empty 'phrase'"
            elif not _is_num(b) or not _is_num(e):
                problem = f"entry {i} of time_stamped_text: 'begin_time'/'end_time' not finite numbers ({b!r}, {e!r})"
        if problem:
            bad.append(BadRow(i, problem))
            continue
        entries.append(
            {
                "word": it["phrase"],
                "t_start_s": float(it["begin_time"]),
                "t_end_s": float(it["end_time"]),
                "source_row": i,
            }
        )
    return text, entries, bad


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@register_dataset
class EgdAdapter(DatasetAdapter):
    """EGD-CXR: Gazepoint gaze on 1,083 MIMIC-CXR images, transcripts, boxes and anatomy masks."""

    name = DATASET
    description = "EGD-CXR (PhysioNet egd-cxr 1.0.0): fixations mapped to image pixels, transcripts, boxes, masks"
    default_recipe = "egd-static"
    transcript = TranscriptStyle("phrases", words_file="transcript.json", report_file="transcript.json")
    mask_source = "egd_png"

    def open(
        self, root: Path, *, gaze_samples: bool = False, images_root: Path | None = None, **kwargs: Any
    ) -> EgdRelease:
        """Open an EGD-CXR release folder.

        ``images_root`` (optional; old name ``mimic_root``): the MIMIC-CXR(-JPG) root. Gives the
        image sizes (DICOM/JPG headers, else its metadata table), the split, and
        ``mimic_chexpert``/``mimic_negbio`` case labels. Without it, sizes come from the mask PNGs
        and cases without masks are skipped (rejects rows name what is missing).
        """
        images = self.images_option(images_root, kwargs)
        return EgdRelease(self.check_root(root), gaze_samples=gaze_samples, images_root=images)

    def images(self, root: Path, *, images_root: Path | None = None) -> ImageListing:
        """The images of ``master_sheet.csv`` (columns ``dicom_id``, ``path``, ``patient_id``, read
        through the checked CSV reader; the other documented columns may be present or not).

        A row with a bad value, an id that is not a plain name or an id listed before is a rejects
        row (``row dropped``). ``images_root`` is not needed (the sheet names the images).

        Raises
        ------
        InputFormatError
            The sheet is missing, unreadable or has a column outside its documented format.
        """
        path = self.check_root(root) / "master_sheet.csv"
        columns = {k: MASTER_COLS[k] for k in ("dicom_id", "path", "patient_id")}
        known = [c for c in MASTER_COLS if c not in columns] + list(MASTER_OTHER)
        table = read_checked_csv(path, columns, aliases=OLD_PAD_NAMES, known=known)
        rel = path.name
        rejects = [schema.reject(DATASET, None, "ingest", rel, b.row, f"{b.reason}; {ROW_DROPPED}") for b in table.bad]
        seen: dict[str, ImageRecord] = {}
        for rec in table.df.iter_rows(named=True):
            did, row = rec["dicom_id"].strip(), int(rec["source_row"])
            problem = None
            try:
                safe_component(did)
            except GazeprepError:
                problem = f"column 'dicom_id': {did!r} is not a usable id"
            if problem is None and did in seen:
                problem = f"duplicate dicom_id {did!r} (first in row {seen[did].source_row})"
            if problem is not None:
                rejects.append(schema.reject(DATASET, did or None, "ingest", rel, row, f"{problem}; {ROW_DROPPED}"))
                continue
            path_value = rec["path"].strip().replace("\\", "/")
            seen[did] = ImageRecord(did, path_value, str(int(rec["patient_id"])), rel, row)
        return ImageListing(list(seen.values()), rejects)

    def mask_files(self, root: Path, image_id: str) -> dict[str, Path]:
        """The mask PNGs of ``image_id`` in ``audio_segmentation_transcripts/<image_id>/`` (the first
        existing name of :data:`MASK_FILES` per structure; missing structures absent).

        Raises
        ------
        GazeprepError
            ``image_id`` is not a plain file name (it would leave the release folder).
        """
        folder = safe_join(root, TRANSCRIPTS, safe_component(image_id))
        found: dict[str, Path] = {}
        for structure, names in MASK_FILES.items():
            for name in names:
                if (folder / name).is_file():
                    found[structure] = folder / name
                    break
        return found


__all__ = ["EgdAdapter", "EgdRelease", "is_calibration_id", "parse_transcript"]
