"""REFLACX adapter (PhysioNet ``reflacx-xray-localization`` 1.0.0, all three phases).

Layout (FORMATS.md section 1)::

    <root>/main_data/metadata_phase_{1,2,3}.csv
    <root>/main_data/<id>/{fixations.csv, timestamps_transcription.csv, transcription.txt,
                           chest_bounding_box.csv, anomaly_location_ellipses.csv}
    <root>/gaze_data/<id>/gaze.csv

Mapping to the canonical tables:

* ``cases``: one row per metadata row; ``study_id`` from the ``s<study>`` component of ``image``;
  ``image_path`` = the ``image`` column as written; size = ``image_size_y`` x ``image_size_x``;
  chest box from ``chest_bounding_box.csv`` (read at open time; null when that file is broken).
* ``case_labels`` (source ``reflacx_metadata``): abnormality labels 0..5 (``5`` or ``5.0``),
  ``Support devices`` / ``Quality issue`` as 0/1, ``Other`` as text (value null).
* per case: ``fixations``, ``reports`` (transcription.txt), ``words`` (one token per row,
  punctuation separate; char offsets left null), ``ellipses`` (one row per ellipse and True label),
  ``gaze_samples`` when requested. Discarded cases only have ``ellipses``.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
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
    build_table,
)
from gazeprep.datasets.checks import far_outside, time_problems
from gazeprep.datasets.csvio import Col, read_bytes, read_checked_csv
from gazeprep.datasets.registry import register_dataset
from gazeprep.errors import InputFormatError
from gazeprep.paths import safe_component

DATASET = "reflacx"
SOURCE = "reflacx_metadata"

PHASE1_LABELS = (
    "Airway wall thickening", "Atelectasis", "Consolidation", "Emphysema", "Enlarged cardiac silhouette",
    "Fibrosis", "Fracture", "Groundglass opacity", "Mass", "Nodule", "Other", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary edema", "Quality issue", "Support devices",
    "Wide mediastinum",
)  # fmt: skip
PHASE23_LABELS = (
    "Abnormal mediastinal contour", "Acute fracture", "Atelectasis", "Consolidation",
    "Enlarged cardiac silhouette", "Enlarged hilum", "Groundglass opacity", "Hiatal hernia",
    "High lung volume / emphysema", "Interstitial lung disease", "Lung nodule or mass", "Other",
    "Pleural abnormality", "Pneumothorax", "Pulmonary edema", "Support devices",
)  # fmt: skip
LABELS_BY_PHASE = {1: PHASE1_LABELS, 2: PHASE23_LABELS, 3: PHASE23_LABELS}
BOOL_LABELS = frozenset({"Support devices", "Quality issue"})
TEXT_LABELS = frozenset({"Other"})

ID_RE = re.compile(r"^P([123])\d{2}R\d{6}$")
IMAGE_RE = re.compile(r"(?:^|/)files/p(\d{2})/p(\d+)/s(\d+)/([^/]+)\.dcm$")
SPLITS = ("train", "validate", "test")

META_COLS = {
    "id": Col("str"),
    "split": Col("str"),
    "eye_tracking_data_discarded": Col("bool"),
    "image": Col("str"),
    "dicom_id": Col("str"),
    "subject_id": Col("int", lo=0),
    "image_size_x": Col("int", lo=1),
    "image_size_y": Col("int", lo=1),
}
FIX_COLS = {
    "timestamp_start_fixation": Col(),
    "timestamp_end_fixation": Col(),
    "x_position": Col(),
    "y_position": Col(),
    "pupil_area_normalized": Col(required=False, gt=0),  # a ratio, about 1 (FORMATS 1.5)
    "angular_resolution_x_pixels_per_degree": Col(lo=0),  # 0 is rejected below with its own reason
    "angular_resolution_y_pixels_per_degree": Col(lo=0),
    "window_width": Col(required=False, gt=0),
    "window_level": Col(required=False),
    "xmin_shown_from_image": Col(),
    "ymin_shown_from_image": Col(),
    "xmax_shown_from_image": Col(),
    "ymax_shown_from_image": Col(),
    "xmin_in_screen_coordinates": Col(required=False),
    "ymin_in_screen_coordinates": Col(required=False),
    "xmax_in_screen_coordinates": Col(required=False),
    "ymax_in_screen_coordinates": Col(required=False),
}
GAZE_COLS = {
    "timestamp_sample": Col(),
    "x_position": Col(required=False),
    "y_position": Col(required=False),
    "angular_resolution_x_pixels_per_degree": Col(required=False, gt=0),
    "angular_resolution_y_pixels_per_degree": Col(required=False, gt=0),
}
#: the other documented columns of gaze.csv (FORMATS 1.7), accepted and not read
GAZE_OTHER = (
    "pupil_area_normalized", "window_width", "window_level", "xmin_shown_from_image", "ymin_shown_from_image",
    "xmax_shown_from_image", "ymax_shown_from_image", "xmin_in_screen_coordinates", "ymin_in_screen_coordinates",
    "xmax_in_screen_coordinates", "ymax_in_screen_coordinates",
)  # fmt: skip
WORD_COLS = {"word": Col("str"), "timestamp_start_word": Col(), "timestamp_end_word": Col()}
ELLIPSE_BASE = {
    "xmin": Col("int"),
    "ymin": Col("int"),
    "xmax": Col("int"),
    "ymax": Col("int"),
    "certainty": Col("int", lo=1, hi=5),
}
CHEST_HEADER = ["xmin", "ymin", "xmax", "ymax"]


def find_main_data(root: Path) -> Path:
    """``<root>/main_data``, also when ``root`` holds the ``physionet.org/...`` prefix."""
    for cand in (root / "main_data", root / "physionet.org/files/reflacx-xray-localization/1.0.0/main_data"):
        if cand.is_dir():
            return cand
    raise InputFormatError(
        root / "main_data", "folder not found (expected <root>/main_data/metadata_phase_{1,2,3}.csv)"
    )


def _read_chest_box(path: Path) -> tuple[tuple[float, float, float, float] | None, int | None, str | None]:
    """Parse chest_bounding_box.csv: (box, bad_row, reason). Tiny file: csv module, no polars overhead."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None, None, "file missing"
    except IsADirectoryError:
        return None, None, "is a folder, not a file"
    except UnicodeDecodeError:
        return None, None, "not UTF-8 text"
    # any other OSError (EACCES, EIO, ...) is an I/O fault: it propagates, it is not a reject
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not rows:
        return None, None, "empty file (no header line)"
    if [h.strip() for h in rows[0]] != CHEST_HEADER:
        return None, None, f"wrong header {rows[0]}, expected {CHEST_HEADER}"
    if len(rows) != 2:
        return None, None, f"expected 1 data row, found {len(rows) - 1}"
    if len(rows[1]) != 4:
        return None, 1, f"has {len(rows[1])} fields, the header has 4 (truncated or malformed row)"
    try:
        vals = tuple(float(v) for v in rows[1])
    except ValueError:
        return None, 1, f"not a number in {rows[1]}"
    if not all(np.isfinite(vals)):
        return None, 1, f"non-finite value in {rows[1]}"
    if vals[0] > vals[2] or vals[1] > vals[3]:
        return None, 1, f"min > max in {rows[1]}"
    return vals, None, None  # type: ignore[return-value]


class ReflacxRelease(Release):
    """An opened REFLACX release (see module docstring)."""

    dataset = DATASET

    def __init__(self, root: Path, *, gaze_samples: bool = False, images_root: Path | None = None):
        super().__init__(root)
        self.gaze_samples = gaze_samples
        self.tables = ("fixations", "reports", "words", "ellipses") + (("gaze_samples",) if gaze_samples else ())
        self.main_data = find_main_data(self.root)
        self.gaze_root = self.main_data.parent / "gaze_data"
        # plain-python per-case info for read_case (cheap to fork/pickle)
        self._info: dict[str, tuple[int, bool, int, int]] = {}
        case_frames: list[pl.DataFrame] = []
        label_rows: list[dict] = []
        seen: dict[str, str] = {}
        for phase in (1, 2, 3):
            path = self.main_data / f"metadata_phase_{phase}.csv"
            frame, labels = self._read_metadata(path, phase, seen)
            case_frames.append(frame)
            label_rows.extend(labels)
        cases = pl.concat(case_frames, how="vertical") if case_frames else schema.empty("cases")
        cases = self._add_chest_boxes(cases)
        self.cases = schema.conform(cases, "cases")
        self.case_labels = (
            schema.conform(pl.DataFrame(label_rows, schema=schema.CASE_LABELS), "case_labels")
            if label_rows
            else schema.empty("case_labels")
        )
        self.images_root = Path(images_root) if images_root is not None else None
        if self.images_root is not None:  # sizes come from the metadata files; the root adds labels
            extra = mimic.labels_for_cases(self.images_root, DATASET, self.cases, self.rejects)
            self.case_labels = pl.concat([self.case_labels, extra], how="vertical")
        self.stats = {
            "cases": self.cases.height,
            "discarded": int(self.cases["discarded"].sum()),
            "rejected_metadata_rows": sum(1 for r in self.rejects if r["file"] and "metadata_phase" in r["file"]),
        }

    # ---- open ---------------------------------------------------------------------------
    def _read_metadata(self, path: Path, phase: int, seen: dict[str, str]) -> tuple[pl.DataFrame, list[dict]]:
        """One ``metadata_phase_<phase>.csv``: its ``cases`` rows and ``case_labels`` rows. A row that
        fails the checks is a rejects row and skips its case; a bad label value leaves that label out.
        ``seen`` (id -> where first read) carries the ids across the three files."""
        labels = LABELS_BY_PHASE[phase]
        cols = dict(META_COLS)
        cols.update({lab: Col("str", required=False) for lab in labels})
        table = read_checked_csv(path, cols)  # a column not of this phase rejects the file (csvio policy)
        rel = self.rel(path)
        for b in table.bad:
            self.rejects.append(self.reject(None, rel, b.row, f"{b.reason}; {CASE_SKIPPED}"))
        rows_out: list[dict] = []
        label_rows: list[dict] = []
        for rec in table.df.iter_rows(named=True):
            row = rec["source_row"]
            cid = rec["id"].strip()
            im = IMAGE_RE.search(rec["image"].strip())
            problem = _metadata_problem(rec, cid, im, phase, seen)
            if problem:
                self.rejects.append(self.reject(cid or None, rel, row, f"{problem}; {CASE_SKIPPED}"))
                continue
            assert im is not None  # a path that does not match is a problem above
            seen[cid] = f"{rel} row {row}"
            w, h = int(rec["image_size_x"]), int(rec["image_size_y"])
            discarded = bool(rec["eye_tracking_data_discarded"])
            self._info[cid] = (phase, discarded, w, h)
            rows_out.append(
                {
                    "dataset": DATASET,
                    "case_id": cid,
                    "image_id": rec["dicom_id"].strip(),
                    "subject_id": int(rec["subject_id"]),
                    "study_id": int(im.group(3)),
                    "split": rec["split"].strip(),
                    "image_path": rec["image"].strip(),
                    "image_height_px": h,
                    "image_width_px": w,
                    "phase": phase,
                    "discarded": discarded,
                }
            )
            for lab in labels:
                value, text, err = _label_value(lab, rec[lab])
                if err:
                    self.rejects.append(self.reject(cid, rel, row, f"column '{lab}': {err}; label left out"))
                    continue
                label_rows.append(
                    {"dataset": DATASET, "case_id": cid, "source": SOURCE, "source_label": lab, "value": value,
                     "text": text}
                )  # fmt: skip
        return pl.DataFrame(rows_out, schema={k: schema.CASES[k] for k in _CASE_COLUMNS}), label_rows

    def _add_chest_boxes(self, cases: pl.DataFrame) -> pl.DataFrame:
        boxes: dict[str, list[float | None]] = {
            k: [] for k in ("chest_xmin_px", "chest_ymin_px", "chest_xmax_px", "chest_ymax_px")
        }
        for cid in cases["case_id"].to_list():
            path = self.main_data / cid / "chest_bounding_box.csv"
            box, row, reason = _read_chest_box(path)
            if box is None:
                self.rejects.append(self.reject(cid, path, row, f"{reason}; chest box left empty"))
            values: tuple[float | None, ...] = box if box is not None else (None, None, None, None)
            for k, v in zip(boxes, values):
                boxes[k].append(v)
        return cases.with_columns([pl.Series(k, v, dtype=pl.Float64) for k, v in boxes.items()])

    # ---- per case -----------------------------------------------------------------------
    def _read_case(self, case_id: str) -> CaseData:
        """Read the per-case files of ``case_id`` (see module docstring). Never raises on bad data."""
        phase, discarded, w, h = self._info[case_id]
        rejects: list[dict] = []
        folder = self.main_data / safe_component(case_id)  # ids are validated; symlinked folders are fine
        if not folder.is_dir():
            rejects.append(self.reject(case_id, folder, None, f"case folder missing; {CASE_SKIPPED}"))
            return self.empty_case(case_id, rejects)
        tables: dict[str, pl.DataFrame] = {t: schema.empty(t) for t in self.tables}
        try:
            tables["ellipses"] = self._ellipses(case_id, folder / "anomaly_location_ellipses.csv", phase, rejects)
        except InputFormatError as exc:
            rejects.append(
                self.reject(
                    case_id, folder / "anomaly_location_ellipses.csv", exc.row, f"{exc.reason}; ellipses left empty"
                )
            )
        if discarded:
            return CaseData(case_id, tables, rejects)
        fix_path = folder / "fixations.csv"
        try:
            tables["fixations"] = self._fixations(case_id, fix_path, w, h, rejects)
        except InputFormatError as exc:
            rejects.append(self.reject(case_id, fix_path, exc.row, f"{exc.reason}; {CASE_SKIPPED}"))
            return self.empty_case(case_id, rejects)
        self._text(case_id, folder, tables, rejects)
        if self.gaze_samples:
            gpath = self.gaze_root / safe_component(case_id) / "gaze.csv"
            try:
                tables["gaze_samples"] = self._gaze(case_id, gpath, w, h, rejects)
            except InputFormatError as exc:
                rejects.append(self.reject(case_id, gpath, exc.row, f"{exc.reason}; gaze samples left empty"))
        return CaseData(case_id, tables, rejects)

    def _bad_rows(self, case_id: str, path: Path, bad: list[Any], rejects: list[dict]) -> None:
        for b in bad:
            row, reason = (b.row, b.reason) if hasattr(b, "row") else b
            rejects.append(self.reject(case_id, path, row, f"{reason}; {ROW_DROPPED}"))

    def _fixations(self, case_id: str, path: Path, w: int, h: int, rejects: list[dict]) -> pl.DataFrame:
        t = read_checked_csv(path, FIX_COLS)
        self._bad_rows(case_id, path, t.bad, rejects)
        df = t.df
        col = lambda c: df.get_column(c).to_numpy()  # noqa: E731
        x, y = col("x_position"), col("y_position")
        rows = col("source_row")
        bad: list[tuple[int, str]] = []
        shown_bad = (col("xmin_shown_from_image") >= col("xmax_shown_from_image")) | (
            col("ymin_shown_from_image") >= col("ymax_shown_from_image")
        )
        res_bad = (col("angular_resolution_x_pixels_per_degree") <= 0) | (
            col("angular_resolution_y_pixels_per_degree") <= 0
        )
        far = far_outside(x, y, w, h)
        drop = shown_bad | res_bad | far
        for i in np.flatnonzero(drop):
            if shown_bad[i]:
                reason = "shown rectangle is empty or has min > max"
            elif res_bad[i]:
                reason = "angular resolution (pixels per degree) must be > 0"
            else:
                reason = f"position ({x[i]:g}, {y[i]:g}) is far outside the {w}x{h} image (corrupt value)"
            bad.append((int(rows[i]), reason))
        if bad:
            df = df.filter(pl.Series(~drop))
        df, tbad = time_problems(
            df, "timestamp_start_fixation", "timestamp_end_fixation",
            start_label="timestamp_start_fixation", end_label="timestamp_end_fixation",
        )  # fmt: skip
        self._bad_rows(case_id, path, sorted(bad + tbad), rejects)
        n = df.height
        if n == 0:
            raise InputFormatError(path, "no valid fixation rows" if t.n_rows else "no data rows (header only)")
        x, y = df.get_column("x_position").to_numpy(), df.get_column("y_position").to_numpy()
        g = df.get_column
        return build_table(
            "fixations", n,
            {
                "dataset": DATASET, "case_id": case_id, "fixation_idx": np.arange(n, dtype=np.int32),
                "t_start_s": g("timestamp_start_fixation"), "t_end_s": g("timestamp_end_fixation"),
                "x_px": g("x_position"), "y_px": g("y_position"),
                "px_per_deg_x": g("angular_resolution_x_pixels_per_degree"),
                "px_per_deg_y": g("angular_resolution_y_pixels_per_degree"),
                "shown_xmin_px": g("xmin_shown_from_image"), "shown_ymin_px": g("ymin_shown_from_image"),
                "shown_xmax_px": g("xmax_shown_from_image"), "shown_ymax_px": g("ymax_shown_from_image"),
                "pupil_area": g("pupil_area_normalized"), "window_width": g("window_width"),
                "window_level": g("window_level"),
                "in_image": (x >= 0) & (x < w) & (y >= 0) & (y < h), "source_row": g("source_row"),
            },
        )  # fmt: skip

    def _gaze(self, case_id: str, path: Path, w: int, h: int, rejects: list[dict]) -> pl.DataFrame:
        t = read_checked_csv(path, GAZE_COLS, known=GAZE_OTHER)
        self._bad_rows(case_id, path, t.bad, rejects)
        df = t.df
        x, y = df.get_column("x_position").to_numpy(), df.get_column("y_position").to_numpy()
        far = far_outside(x, y, w, h)  # NaN (blink) compares False
        if far.any():
            rows = df.get_column("source_row").to_numpy()
            self._bad_rows(
                case_id,
                path,
                [(int(r), f"position far outside the {w}x{h} image (corrupt value)") for r in rows[far]],
                rejects,
            )
            df = df.filter(pl.Series(~far))
        df, tbad = time_problems(df, "timestamp_sample", None, start_label="timestamp_sample")
        self._bad_rows(case_id, path, tbad, rejects)
        n = df.height
        xs, ys = df.get_column("x_position"), df.get_column("y_position")
        x, y = xs.to_numpy(), ys.to_numpy()
        inside = pl.Series("in_image", (x >= 0) & (x < w) & (y >= 0) & (y < h))
        inside = pl.Series("in_image", inside).set(xs.is_null() | ys.is_null(), None) if n else inside
        g = df.get_column
        return build_table(
            "gaze_samples", n,
            {
                "dataset": DATASET, "case_id": case_id, "sample_idx": np.arange(n, dtype=np.int32),
                "t_s": g("timestamp_sample"), "x_px": xs, "y_px": ys,
                "px_per_deg_x": g("angular_resolution_x_pixels_per_degree"),
                "px_per_deg_y": g("angular_resolution_y_pixels_per_degree"),
                "in_image": inside, "source_row": g("source_row"),
            },
        )  # fmt: skip

    def _text(self, case_id: str, folder: Path, tables: dict[str, pl.DataFrame], rejects: list[dict]) -> None:
        txt_path = folder / "transcription.txt"
        words_path = folder / "timestamps_transcription.csv"
        try:
            raw = read_bytes(txt_path)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputFormatError(txt_path, "not UTF-8 text") from None
            text = text.rstrip("\r\n")
            if not text.strip():
                raise InputFormatError(txt_path, "empty transcript")
            t = read_checked_csv(words_path, WORD_COLS)
            self._bad_rows(case_id, words_path, t.bad, rejects)
            df, tbad = time_problems(
                t.df, "timestamp_start_word", "timestamp_end_word",
                start_label="timestamp_start_word", end_label="timestamp_end_word",
            )  # fmt: skip
            self._bad_rows(case_id, words_path, tbad, rejects)
            if df.height == 0:
                raise InputFormatError(words_path, "empty transcript (no word rows)")
        except InputFormatError as exc:
            rejects.append(self.reject(case_id, Path(exc.path), exc.row, f"{exc.reason}; reports and words left empty"))
            return
        n = df.height
        tables["reports"] = build_table("reports", 1, {"dataset": DATASET, "case_id": case_id, "text": text})
        tables["words"] = build_table(
            "words", n,
            {
                "dataset": DATASET, "case_id": case_id, "word_idx": np.arange(n, dtype=np.int32),
                "word": df.get_column("word"), "t_start_s": df.get_column("timestamp_start_word"),
                "t_end_s": df.get_column("timestamp_end_word"),
            },
        )  # fmt: skip

    def _ellipses(self, case_id: str, path: Path, phase: int, rejects: list[dict]) -> pl.DataFrame:
        labels = LABELS_BY_PHASE[phase]
        cols = dict(ELLIPSE_BASE)
        cols.update({lab: Col("bool") for lab in labels})
        t = read_checked_csv(path, cols)
        self._bad_rows(case_id, path, t.bad, rejects)
        df = t.df
        if df.height == 0:
            return schema.empty("ellipses")
        bad: list[tuple[int, str]] = []
        keep = []
        for rec in df.iter_rows(named=True):
            if rec["xmin"] > rec["xmax"] or rec["ymin"] > rec["ymax"]:
                bad.append((rec["source_row"], "ellipse bounding box has min > max"))
            elif not any(rec[lab] for lab in labels):
                bad.append((rec["source_row"], "no label column is True"))
            else:
                keep.append(rec)
        self._bad_rows(case_id, path, bad, rejects)
        out: dict[str, list] = {
            k: [] for k in ("ellipse_idx", "xmin_px", "ymin_px", "xmax_px", "ymax_px", "certainty", "source_label")
        }
        for idx, rec in enumerate(keep):
            for lab in labels:
                if rec[lab]:
                    for k, v in zip(
                        out, (idx, rec["xmin"], rec["ymin"], rec["xmax"], rec["ymax"], int(rec["certainty"]), lab)
                    ):
                        out[k].append(v)
        n = len(out["ellipse_idx"])
        if n == 0:
            return schema.empty("ellipses")
        return build_table("ellipses", n, {"dataset": DATASET, "case_id": case_id, **out})


#: the ``cases`` columns a metadata row gives, in order
_CASE_COLUMNS = (
    "dataset",
    "case_id",
    "image_id",
    "subject_id",
    "study_id",
    "split",
    "image_path",
    "image_height_px",
    "image_width_px",
    "phase",
    "discarded",
)


def _metadata_problem(
    rec: dict[str, Any], cid: str, im: re.Match[str] | None, phase: int, seen: dict[str, str]
) -> str | None:
    """Why a metadata row cannot be a case, or None: an id that is not a REFLACX id of this phase or
    was read before, an unknown split, an image path (``im``: its match of :data:`IMAGE_RE`) that is
    not a MIMIC-CXR path or does not match the row's dicom_id and subject_id."""
    m = ID_RE.match(cid)
    if not m:
        return f"column 'id': {cid!r} is not a REFLACX id (P<phase><trial>R<6 digits>)"
    if int(m.group(1)) != phase:
        return f"column 'id': {cid!r} belongs to phase {m.group(1)}, not {phase}"
    if cid in seen:
        return f"duplicate id {cid!r} (first in {seen[cid]})"
    if rec["split"].strip() not in SPLITS:
        return f"column 'split': {rec['split']!r} is not one of {list(SPLITS)}"
    problem = _image_problem(rec["image"], rec["dicom_id"], im)
    if problem is not None or im is None:
        return problem
    if int(im.group(2)) != int(rec["subject_id"]) or im.group(2)[:2] != im.group(1):
        return f"column 'subject_id': {int(rec['subject_id'])} does not match the image path ({im.group(0)!r})"
    return None


def _image_problem(image: str, dicom_id: str, im: re.Match[str] | None) -> str | None:
    """Why a metadata row's ``image`` (``im``: its match of :data:`IMAGE_RE`) cannot be used, or None:
    not a MIMIC-CXR path, or its file name is not the row's ``dicom_id``."""
    if im is None:
        return f"column 'image': {image!r} is not a MIMIC-CXR path files/pXX/p<subject>/s<study>/<dicom_id>.dcm"
    if im.group(4) != dicom_id.strip():
        return f"column 'dicom_id': {dicom_id!r} does not match the image path ({im.group(4)!r})"
    return None


def _label_value(label: str, raw: str | None) -> tuple[float | None, str | None, str | None]:
    """(value, text, error) for one REFLACX metadata label cell."""
    if label in TEXT_LABELS:
        return None, (raw if raw not in (None, "") else None), None
    if raw is None or raw.strip() == "":
        return None, None, "empty value"
    s = raw.strip()
    if label in BOOL_LABELS:
        if s in ("True", "true", "1", "1.0"):
            return 1.0, None, None
        if s in ("False", "false", "0", "0.0"):
            return 0.0, None, None
        return None, None, f"not a boolean: {raw!r}"
    try:
        v = float(s)
    except ValueError:
        return None, None, f"not a number: {raw!r}"
    if not np.isfinite(v) or v != int(v) or not 0 <= v <= 5:
        return None, None, f"out of range 0..5: {raw!r}"
    return v, None, None


@register_dataset
class ReflacxAdapter(DatasetAdapter):
    """REFLACX: 3 phases of dictated readings of MIMIC-CXR images with EyeLink gaze and ellipses."""

    name = DATASET
    description = "REFLACX (PhysioNet reflacx-xray-localization 1.0.0): fixations, dictation, ellipses, 3 phases"
    default_recipe = "reflacx-label-specific"
    transcript = TranscriptStyle("tokens", words_file="timestamps_transcription.csv", report_file="transcription.txt")

    def open(
        self, root: Path, *, gaze_samples: bool = False, images_root: Path | None = None, **kwargs: Any
    ) -> ReflacxRelease:
        """Open a REFLACX release folder (reads the three metadata files and the chest boxes).

        ``images_root`` (optional; old name ``mimic_root``): the MIMIC-CXR(-JPG) root. Image sizes
        come from the metadata files (``image_size_x``/``image_size_y``), so the images are not
        read; its chexpert/negbio tables, when present, add ``mimic_chexpert``/``mimic_negbio``
        rows to ``case_labels``.
        """
        images = self.images_option(images_root, kwargs)
        return ReflacxRelease(self.check_root(root), gaze_samples=gaze_samples, images_root=images)

    def images(self, root: Path, *, images_root: Path | None = None) -> ImageListing:
        """The distinct images (``dicom_id``) of the ``main_data/metadata_phase_{1,2,3}.csv`` files
        present, in phase and row order; an image read several times is listed once, at its first
        row. Columns read through the checked CSV reader: ``dicom_id``, ``image``, ``subject_id``
        (the other documented columns may be present or not).

        A row with a bad value, an ``image`` that is not a MIMIC-CXR path or a ``dicom_id`` that
        does not match it is a rejects row (``row dropped``). ``images_root`` is not needed.

        Raises
        ------
        InputFormatError
            No metadata file, or one that is unreadable or has a column outside its format.
        """
        base = self.check_root(root)
        main = find_main_data(base)
        files = [
            main / f"metadata_phase_{p}.csv" for p in LABELS_BY_PHASE if (main / f"metadata_phase_{p}.csv").is_file()
        ]
        if not files:
            raise InputFormatError(main, "no metadata_phase_{1,2,3}.csv (is this a REFLACX release folder?)")
        columns = {k: META_COLS[k] for k in ("dicom_id", "image", "subject_id")}
        labels = {lab for phase_labels in LABELS_BY_PHASE.values() for lab in phase_labels}
        known = [c for c in META_COLS if c not in columns] + sorted(labels)
        seen: dict[str, ImageRecord] = {}
        rejects: list[dict] = []
        for path in files:
            table = read_checked_csv(path, columns, known=known)
            rel = path.relative_to(base).as_posix()
            rejects += [
                schema.reject(DATASET, None, "ingest", rel, b.row, f"{b.reason}; {ROW_DROPPED}") for b in table.bad
            ]
            for rec in table.df.iter_rows(named=True):
                did, image, row = rec["dicom_id"].strip(), rec["image"].strip(), int(rec["source_row"])
                problem = _image_problem(image, did, IMAGE_RE.search(image))
                if problem is not None:
                    rejects.append(schema.reject(DATASET, None, "ingest", rel, row, f"{problem}; {ROW_DROPPED}"))
                elif did not in seen:
                    seen[did] = ImageRecord(did, image, str(int(rec["subject_id"])), rel, row)
        return ImageListing(list(seen.values()), rejects)
