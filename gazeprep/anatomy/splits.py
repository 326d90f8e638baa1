"""Paper 000's classification settings C/L/R/M, their yes/no questions, and the split builder (no torch).

Settings (000 section 4.1): C = readings whose transcript mentions cardiomegaly (target ``heart``),
L = the left lung, R = the right lung, M = all samples of C, L and R merged. Each subset is split
70 / 15 / 15 (train / val / test) with positives and negatives balanced 1:1.

:func:`build_setting_splits` assigns whole *subjects* to splits (one assignment shared by every
setting), so no patient is in two splits of any setting, including M, which is the union of C, L
and R. :func:`reflacx_setting_samples` derives the samples from gazeprep tables (our reading of
000, whose labels were made by hand: see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from gazeprep.errors import GazeprepError
from gazeprep.schema import Schema

SETTINGS: tuple[str, ...] = ("C", "L", "R", "M")
TARGET_OF_SETTING: dict[str, str] = {"C": "heart", "L": "left_lung", "R": "right_lung"}
SETTING_OF_TARGET: dict[str, str] = {v: k for k, v in TARGET_OF_SETTING.items()}

CLASSIFICATION_QUESTIONS: dict[str, str] = {  # 000 section 4.3
    "C": "Is there cardiomegaly?",
    "L": "Is there a finding (excluding Cardiomegaly) in the left lung of the image?",
    "R": "Is there a finding (excluding Cardiomegaly) in the right lung of the image?",
    "M": "Is there a finding in the masked image?",
}

# 000 section 4.2 "Anatomical prompt": prefix "diagnosis of {}" + "left lung" / "right lung" / "heart"
ANATOMICAL_PROMPTS: dict[str, str] = {
    "heart": "diagnosis of heart",
    "left_lung": "diagnosis of left lung",
    "right_lung": "diagnosis of right lung",
}

SPLITS: tuple[str, ...] = ("train", "val", "test")

SAMPLES_SCHEMA: Schema = {
    "case_id": pl.Utf8,
    "subject_id": pl.Utf8,
    "setting": pl.Utf8,  # C / L / R (M is built from them)
    "positive": pl.Boolean,
}


def balance_classes(samples: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """Per setting, keep all samples of the minority class and as many randomly chosen samples of the
    majority class (seeded), so positives : negatives = 1 : 1 exactly. A setting with no positives
    or no negatives ends up empty."""
    rng = np.random.default_rng(seed)
    parts = []
    for setting in sorted(samples["setting"].unique().to_list()):
        sub = samples.filter(pl.col("setting") == setting)
        pos = sub.filter(pl.col("positive"))
        neg = sub.filter(~pl.col("positive"))
        n = min(pos.height, neg.height)
        for part in (pos, neg):
            keep = np.sort(rng.choice(part.height, size=n, replace=False)) if n else np.array([], dtype=np.int64)
            parts.append(part[keep.tolist()] if n else part.head(0))
    return pl.concat(parts) if parts else samples.head(0)


def assign_subjects(
    samples: pl.DataFrame, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, str]:
    """Subject -> split, aiming at ``fractions`` of the samples of every (setting, class) cell.

    Greedy: subjects in decreasing order of sample count (seeded random order among equals) go to
    the split with the largest deficit ``sum_cell n_subject[cell] * (target[split, cell] -
    current[split, cell])``, where ``target = fraction * cell total``.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise GazeprepError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    if samples.height == 0:
        return {}
    cells = (
        samples.with_columns((pl.col("setting") + ":" + pl.col("positive").cast(pl.Utf8)).alias("_cell"))
        .group_by("subject_id", "_cell")
        .len()
    )
    cell_names = sorted(cells["_cell"].unique().to_list())
    subjects = sorted(cells["subject_id"].unique().to_list())
    s_index = {s: i for i, s in enumerate(subjects)}
    c_index = {c: i for i, c in enumerate(cell_names)}
    counts = np.zeros((len(subjects), len(cell_names)))
    for r in cells.iter_rows(named=True):
        counts[s_index[r["subject_id"]], c_index[r["_cell"]]] = r["len"]
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(subjects))
    order = np.lexsort((tiebreak, -counts.sum(1)))
    target = np.asarray(fractions)[:, None] * counts.sum(0)[None, :]
    current = np.zeros_like(target)
    out: dict[str, str] = {}
    for i in order:
        deficit = ((target - current) * counts[i][None, :]).sum(1)
        k = int(np.argmax(deficit))
        current[k] += counts[i]
        out[subjects[i]] = SPLITS[k]
    return out


def build_setting_splits(
    samples: pl.DataFrame,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    balance: bool = True,
) -> pl.DataFrame:
    """C/L/R/M splits of 000.

    Parameters
    ----------
    samples:
        Columns ``case_id``, ``subject_id``, ``setting`` (C, L or R), ``positive`` (the answer to the
        setting's question); a case may appear in several settings.
    fractions:
        train / val / test shares (000: 70 / 15 / 15).
    balance:
        Downsample the majority class of each setting to 1:1 first (:func:`balance_classes`).

    Returns
    -------
    DataFrame with ``case_id, subject_id, setting, target, positive, question, split``: the C, L and R
    rows, then every one of them again with ``setting = "M"`` (M merges C, L and R). Subjects are
    disjoint across splits in every setting.
    """
    missing = [c for c in SAMPLES_SCHEMA if c not in samples.columns]
    if missing:
        raise GazeprepError(f"split samples need columns {list(SAMPLES_SCHEMA)}; missing {missing}")
    df = samples.select(list(SAMPLES_SCHEMA)).cast(SAMPLES_SCHEMA)  # type: ignore[arg-type]
    bad = sorted(set(df["setting"].unique().to_list()) - set(TARGET_OF_SETTING))
    if bad:
        raise GazeprepError(f"unknown setting(s) {bad}; samples are C, L or R (M is built from them)")
    df = df.unique(subset=["case_id", "setting"], keep="first", maintain_order=True)
    if balance:
        df = balance_classes(df, seed)
    assignment = assign_subjects(df, fractions, seed)
    split_map = pl.DataFrame(
        {"subject_id": list(assignment), "split": list(assignment.values())},
        schema={"subject_id": pl.Utf8, "split": pl.Utf8},
    )
    df = df.join(split_map, on="subject_id", how="left")
    df = df.with_columns(
        pl.col("setting").replace_strict(TARGET_OF_SETTING).alias("target"),
    )
    merged = df.with_columns(pl.lit("M").alias("setting"))
    out = pl.concat([df, merged]).with_columns(
        pl.col("setting").replace_strict(CLASSIFICATION_QUESTIONS).alias("question")
    )
    order = {s: i for i, s in enumerate(SETTINGS)}
    return (
        out.with_columns(pl.col("setting").replace_strict(order, return_dtype=pl.Int32).alias("_o"))
        .sort("_o", "case_id", "target")
        .select("case_id", "subject_id", "setting", "target", "positive", "question", "split")
    )


def split_summary(splits: pl.DataFrame) -> pl.DataFrame:
    """Counts per setting and split (train:val:test as in 000's Table 2) with the positive share."""
    return (
        splits.group_by("setting", "split")
        .agg(pl.len().alias("n"), pl.col("positive").mean().alias("positive_share"))
        .sort("setting", "split")
    )


# --------------------------------------------------------------------------- from gazeprep tables

CARDIOMEGALY_LABELS: tuple[str, ...] = ("Enlarged cardiac silhouette", "Cardiomegaly")
NON_LUNG_LABELS: tuple[str, ...] = (
    "Enlarged cardiac silhouette",
    "Cardiomegaly",
    "Support devices",
    "Quality issue",
    "Wide mediastinum",
    "Abnormal mediastinal contour",
    "Fracture",
    "Acute fracture",
    "Hiatal hernia",
)


def reflacx_setting_samples(
    windows: pl.DataFrame,
    cases: pl.DataFrame,
    case_labels: pl.DataFrame,
    ellipses: pl.DataFrame,
    lung_masks: Callable[[str, tuple[int, int]], dict[str, np.ndarray]] | None = None,
    min_certainty: int = 1,
) -> pl.DataFrame:
    """Samples for :func:`build_setting_splits` from gazeprep tables (our reading of 000).

    * A case belongs to setting C / L / R when the ``reflacx-anatomy`` windows have a window for
      target heart / left_lung / right_lung (its transcript mentions the target's keywords).
    * C is positive when the REFLACX label ``Enlarged cardiac silhouette`` (phase 3:
      ``Cardiomegaly``) has a value > 0 in ``case_labels`` (source ``reflacx_metadata``).
    * L / R are positive when an ellipse of a lung finding (a label not in
      :data:`NON_LUNG_LABELS`, certainty >= ``min_certainty``) has its centre inside that lung:
      ``lung_masks(image_id, (H, W)) -> {"left_lung": bool, "right_lung": bool}`` (for instance
      ``functools.partial(load_anatomy_masks, anatomy_dir, structures=("left_lung", "right_lung"))``
      with the arguments reordered); without ``lung_masks`` the image half is used (the patient's
      left lung is on the image's right).

    000 made its labels by hand; this is a reproducible approximation, not the paper's data.
    """
    need = {
        "windows": (windows, ["case_id", "target"]),
        "cases": (cases, ["case_id", "subject_id", "image_id"]),
        "case_labels": (case_labels, ["case_id", "source_label", "value"]),
        "ellipses": (ellipses, ["case_id", "xmin_px", "ymin_px", "xmax_px", "ymax_px", "certainty", "source_label"]),
    }
    for name, (df, cols) in need.items():
        miss = [c for c in cols if c not in df.columns]
        if miss:
            raise GazeprepError(f"table {name!r} lacks columns {miss}")
    members = windows.select("case_id", "target").unique().filter(pl.col("target").is_in(list(SETTING_OF_TARGET)))
    info = cases.select(
        "case_id",
        pl.col("subject_id").cast(pl.Utf8),
        "image_id",
        *[c for c in ("image_height_px", "image_width_px") if c in cases.columns],
    ).unique("case_id")
    cardio = (
        case_labels.filter(pl.col("source_label").is_in(list(CARDIOMEGALY_LABELS)))
        .group_by("case_id")
        .agg((pl.col("value").fill_null(0) > 0).any().alias("cardiomegaly"))
    )
    ell = ellipses.filter(~pl.col("source_label").is_in(list(NON_LUNG_LABELS)) & (pl.col("certainty") >= min_certainty))
    ell = ell.with_columns(
        ((pl.col("xmin_px") + pl.col("xmax_px")) / 2).alias("cx"),
        ((pl.col("ymin_px") + pl.col("ymax_px")) / 2).alias("cy"),
    )
    rows = []
    info_by_case = {r["case_id"]: r for r in info.iter_rows(named=True)}
    cardio_by_case = dict(zip(cardio["case_id"].to_list(), cardio["cardiomegaly"].to_list()))
    for r in members.sort("case_id", "target").iter_rows(named=True):
        case = info_by_case.get(r["case_id"])
        if case is None:
            continue
        setting = SETTING_OF_TARGET[r["target"]]
        if setting == "C":
            positive = bool(cardio_by_case.get(r["case_id"], False))
        else:
            e = ell.filter(pl.col("case_id") == r["case_id"])
            positive = False
            if e.height:
                h = int(case.get("image_height_px") or 0)
                w = int(case.get("image_width_px") or 0)
                cx, cy = e["cx"].to_numpy(), e["cy"].to_numpy()
                if lung_masks is not None and h > 0 and w > 0:
                    mask = lung_masks(case["image_id"], (h, w))[r["target"]]
                    xi = np.clip(np.floor(cx).astype(int), 0, w - 1)
                    yi = np.clip(np.floor(cy).astype(int), 0, h - 1)
                    positive = bool(mask[yi, xi].any())
                elif w > 0:
                    side = cx >= w / 2 if r["target"] == "left_lung" else cx < w / 2
                    positive = bool(side.any())
        rows.append(
            {"case_id": r["case_id"], "subject_id": case["subject_id"], "setting": setting, "positive": positive}
        )
    return pl.DataFrame(rows, schema=SAMPLES_SCHEMA)
