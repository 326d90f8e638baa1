"""Canonical tables: one polars schema per entity, units in column names.

Conventions (all stages rely on them):

* times are seconds (``*_s``); REFLACX times are relative to the start of the audio recording,
  EGD-CXR times to the presentation of the image;
* positions are pixels of the original image (``*_px``), x = column, y = row, origin top-left;
* ``case_id`` is the REFLACX reading id (``P102R123456``) or, for EGD-CXR, the ``dicom_id``;
  ``image_id`` is always the MIMIC-CXR ``dicom_id``;
* ``source_row`` is the 1-based data row (header excluded) of the file the row came from, so that
  later stages can still name the offending row.

:func:`conform` casts a frame to its schema (adding missing nullable columns) and
:func:`validate` checks one without changing it.
"""

from __future__ import annotations

import polars as pl

from gazeprep.errors import GazeprepError

# pl.Utf8 and friends are DataType classes; parametrised types (pl.List(pl.Utf8)) are instances.
Schema = dict[str, type[pl.DataType] | pl.DataType]

CASES: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "image_id": pl.Utf8,
    "subject_id": pl.Int64,
    "study_id": pl.Int64,
    "split": pl.Utf8,  # train / validate / test (MIMIC wording)
    "image_path": pl.Utf8,  # relative path as written in the release
    "image_height_px": pl.Int64,
    "image_width_px": pl.Int64,
    "phase": pl.Int8,  # REFLACX phase 1-3, null for EGD-CXR
    "reader": pl.Utf8,  # radiologist where known
    "discarded": pl.Boolean,
    "chest_xmin_px": pl.Float64,  # REFLACX chest_bounding_box.csv
    "chest_ymin_px": pl.Float64,
    "chest_xmax_px": pl.Float64,
    "chest_ymax_px": pl.Float64,
    # EGD-CXR screen layout (master_sheet padding columns); null for REFLACX
    "pad_top_px": pl.Int64,
    "pad_bottom_px": pl.Int64,
    "pad_left_px": pl.Int64,
    "pad_right_px": pl.Int64,
}

# Long form of the per-case labels as written in the release (one row per case and source label).
CASE_LABELS: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "source": pl.Utf8,  # reflacx_metadata / egd_master / mimic_chexpert / mimic_negbio
    "source_label": pl.Utf8,  # column name in the source file
    "value": pl.Float64,  # REFLACX 0..5 (booleans 0/1); CheXpert 1/0/-1; null = not mentioned
    "text": pl.Utf8,  # REFLACX "Other" free text
}

FIXATIONS: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "fixation_idx": pl.Int32,
    "t_start_s": pl.Float64,
    "t_end_s": pl.Float64,
    "x_px": pl.Float64,
    "y_px": pl.Float64,
    "px_per_deg_x": pl.Float64,  # image pixels per degree of visual angle at the current zoom
    "px_per_deg_y": pl.Float64,
    "shown_xmin_px": pl.Float64,  # crop of the image on screen (REFLACX zoom/pan)
    "shown_ymin_px": pl.Float64,
    "shown_xmax_px": pl.Float64,
    "shown_ymax_px": pl.Float64,
    "pupil_area": pl.Float64,
    "window_width": pl.Float64,
    "window_level": pl.Float64,
    "in_image": pl.Boolean,  # position inside [0, W) x [0, H)
    "source_row": pl.Int64,
}

# Raw tracker samples (REFLACX gaze.csv at 1 kHz, EGD-CXR eye_gaze.csv at ~60 Hz).
GAZE_SAMPLES: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "sample_idx": pl.Int32,
    "t_s": pl.Float64,
    "x_px": pl.Float64,  # null while the tracker lost the eye (blink)
    "y_px": pl.Float64,
    "px_per_deg_x": pl.Float64,
    "px_per_deg_y": pl.Float64,
    "in_image": pl.Boolean,
    "source_row": pl.Int64,
}

REPORTS: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "text": pl.Utf8,
}

WORDS: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "word_idx": pl.Int32,
    "word": pl.Utf8,  # REFLACX: one token (punctuation separate); EGD-CXR: one transcript phrase
    "t_start_s": pl.Float64,
    "t_end_s": pl.Float64,
    "char_start": pl.Int32,  # offsets into REPORTS.text, [start, end)
    "char_end": pl.Int32,
}

SENTENCES: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "sentence_idx": pl.Int32,
    "text": pl.Utf8,
    "t_start_s": pl.Float64,
    "t_end_s": pl.Float64,
    "char_start": pl.Int32,
    "char_end": pl.Int32,
}

MENTIONS: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "label": pl.Utf8,  # canonical label id (rules/labels.yaml)
    "sentence_idx": pl.Int32,
    "phrase": pl.Utf8,
    "char_start": pl.Int32,
    "char_end": pl.Int32,
    "t_start_s": pl.Float64,  # start of the word in which the mention begins
    "t_end_s": pl.Float64,  # end of the word in which the mention ends
    "negated": pl.Boolean,
    "uncertain": pl.Boolean,
}

WINDOWS: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "target": pl.Utf8,  # label id, "full", anatomy target, or phrase index
    "recipe": pl.Utf8,
    "window_idx": pl.Int32,  # several windows per target are combined by the recipe's aggregation
    "sentence_idx": pl.Int32,  # null for windows not tied to a sentence
    "t_start_s": pl.Float64,
    "t_end_s": pl.Float64,
}

HEATMAPS: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "target": pl.Utf8,
    "recipe": pl.Utf8,
    "array": pl.Utf8,  # name of the Zarr array in heatmaps.zarr (one array per output shape)
    "row": pl.Int64,  # index along axis 0 of that array
    "height_px": pl.Int32,
    "width_px": pl.Int32,
    "n_fixations": pl.Int32,  # fixations that contributed
    "total_weight": pl.Float64,  # sum of weights before normalisation
}

ELLIPSES: Schema = {  # REFLACX anomaly_location_ellipses.csv, one row per (ellipse, true label)
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "ellipse_idx": pl.Int32,
    "xmin_px": pl.Float64,
    "ymin_px": pl.Float64,
    "xmax_px": pl.Float64,
    "ymax_px": pl.Float64,
    "certainty": pl.Int8,  # 1 (unlikely) .. 5 (consistent with)
    "source_label": pl.Utf8,
}

BOXES: Schema = {  # EGD-CXR bounding_boxes.csv
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "box_name": pl.Utf8,
    "xmin_px": pl.Float64,
    "ymin_px": pl.Float64,
    "xmax_px": pl.Float64,
    "ymax_px": pl.Float64,
}

MASKS: Schema = {  # index of anatomy masks (EGD-CXR PNGs, SAMed predictions, manual overrides)
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "structure": pl.Utf8,  # left_lung / right_lung / mediastinum / aortic_knob / heart
    "source": pl.Utf8,  # egd_png / samed / override
    "path": pl.Utf8,
}

REJECTS: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,
    "stage": pl.Utf8,  # ingest / text / windows / render / anatomy / export
    "file": pl.Utf8,
    "row": pl.Int64,  # 1-based data row, null when the whole file/case is affected
    "reason": pl.Utf8,
}

TABLES: dict[str, Schema] = {
    "cases": CASES,
    "case_labels": CASE_LABELS,
    "fixations": FIXATIONS,
    "gaze_samples": GAZE_SAMPLES,
    "reports": REPORTS,
    "words": WORDS,
    "sentences": SENTENCES,
    "mentions": MENTIONS,
    "windows": WINDOWS,
    "heatmaps": HEATMAPS,
    "ellipses": ELLIPSES,
    "boxes": BOXES,
    "masks": MASKS,
    "rejects": REJECTS,
}


_EMPTY: dict[str, pl.DataFrame] = {}


def empty(name: str) -> pl.DataFrame:
    """An empty frame with the schema of table ``name``.

    The frame is shared (building one costs ~1 ms and the per-case hot path asks for thousands):
    polars operations return new frames, so never modify it in place.
    """
    df = _EMPTY.get(name)
    if df is None:
        df = _EMPTY[name] = pl.DataFrame(schema=TABLES[name])
    return df


def conform(df: pl.DataFrame, name: str) -> pl.DataFrame:
    """Cast ``df`` to the schema of ``name``: add missing columns as nulls, order columns, drop none.

    Extra columns are an error (they signal a typo in a producer).
    """
    schema = TABLES[name]
    if df.schema == schema and list(df.columns) == list(schema):
        return df  # already conformed: the common case on the per-case hot path
    extra = [c for c in df.columns if c not in schema]
    if extra:
        raise GazeprepError(f"table {name!r}: unexpected columns {extra}")
    cols = [
        (pl.col(c).cast(t, strict=True) if c in df.columns else pl.lit(None, dtype=t).alias(c))
        for c, t in schema.items()
    ]
    return df.select(cols)


def validate(df: pl.DataFrame, name: str) -> None:
    """Raise if ``df`` does not have exactly the columns and dtypes of table ``name``."""
    schema = TABLES[name]
    got = dict(df.schema)
    if list(got) != list(schema):
        raise GazeprepError(f"table {name!r}: columns {list(got)} != expected {list(schema)}")
    for c, t in schema.items():
        if got[c] != t:
            raise GazeprepError(f"table {name!r}: column {c!r} has dtype {got[c]}, expected {t}")


def reject(dataset: str, case_id: str | None, stage: str, file: str | None, row: int | None, reason: str) -> dict:
    """One row for the ``rejects`` table (a dict; collect and build the frame with :func:`rejects_frame`)."""
    return {"dataset": dataset, "case_id": case_id, "stage": stage, "file": file, "row": row, "reason": reason}


def rejects_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=REJECTS) if rows else empty("rejects")
