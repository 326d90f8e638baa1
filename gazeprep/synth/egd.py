"""Synthetic EGD-CXR release (``egd-cxr`` 1.0.0 layout, FORMATS.md section 2).

Layout written under ``out``::

    master_sheet.csv               59 columns, LF, multi-line quoted cxr_exam_indication
    fixations.csv, eye_gaze.csv    37 Gazepoint columns (~60 Hz), calibration pseudo-images included
    bounding_boxes.csv             dicom_id,bbox_name,x1,x2,y1,y2 (17 anatomical boxes per image)
    audio_segmentation_transcripts/<dicom_id>/{transcript.json, left_lung.png, right_lung.png,
                                               mediastanum.png, aortic_knob.png}

Audio files (``audio.wav``/``audio.mp3``) are not written. ``Time (in secs)`` restarts at every
image; transcript times use the same zero. Gaze is generated in original-image pixels, mapped to
screen fractions (FPOG) through the padded 1920 x 1024 layout of ``resize_pad`` and back to
``X_ORIGINAL``/``Y_ORIGINAL`` with the official formula (1920 x 1080 screen, int truncation, -1 ->
small negative outside the image). A calibration pseudo-image (id = previous id minus its last 5
characters, a dot at the screen centre) follows every 20th image (every 3rd in sets under 40 images
so small sets contain one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from gazeprep.datasets.egd import MASK_FILES as _RELEASE_MASK_FILES
from gazeprep.synth.behaviour import FocusSegment, focus_segments, scanpath, search_visits, time_tokens, wander_boxes
from gazeprep.synth.findings import (
    CHEXPERT_LABELS,
    EGD_GRANULAR,
    ImageFinding,
    ReadingFinding,
    label_for,
    plan_sentences,
    sample_reading_findings,
)
from gazeprep.synth.images import ImageRef, invent_images, load_mimic_images, read_mimic_table
from gazeprep.synth.io import write_csv, write_text
from gazeprep.synth.phantom import EGD_BBOX_NAMES, params_for_image, phantom_masks, region_boxes
from gazeprep.synth.truth import EgdCalibration, EgdCase, Mention, Sentence, SynthEgd

__all__ = ["generate_egd", "GAZE_COLUMNS", "MASTER_COLUMNS", "MASK_FILES", "resize_pad", "x_original", "y_original"]

MASTER_COLUMNS = (
    "dicom_id",
    "path",
    "study_id",
    "patient_id",
    "stay_id",
    "gender",
    "anchor_age",
    "image_top_pad",
    "image_bottom_pad",
    "image_left_pad",
    "image_right_pad",
    *[c for i in range(1, 10) for c in (f"dx{i}", f"dx{i}_icd")],
    "normal_reports",
    "Normal",
    "CHF",
    "pneumonia",
    *EGD_GRANULAR,
    *[lab.lower().replace(" ", "_") + "__chx" for lab in CHEXPERT_LABELS],
    "cxr_exam_indication",
)
GAZE_COLUMNS = (
    "SESSION_ID",
    "MEDIA_ID",
    "DICOM_ID",
    "CNT",
    "Time (in secs)",
    "TIMETICK(f=10000000)",
    "FPOGX",
    "FPOGY",
    "FPOGS",
    "FPOGD",
    "FPOGID",
    "FPOGV",
    "BPOGX",
    "BPOGY",
    "BPOGV",
    "LPCX",
    "LPCY",
    "LPD",
    "LPS",
    "LPV",
    "RPCX",
    "RPCY",
    "RPD",
    "RPS",
    "RPV",
    "BKID",
    "BKDUR",
    "BKPMIN",
    "LPMM",
    "LPMMV",
    "RPMM",
    "RPMMV",
    "SACCADE_MAG",
    "SACCADE_DIR",
    "VID_FRAME",
    "X_ORIGINAL",
    "Y_ORIGINAL",
)
#: mask file name per phantom structure: the release's own spelling, the first name the adapter
#: tries (:data:`gazeprep.datasets.egd.MASK_FILES`; the mediastinum is ``mediastanum.png``)
MASK_FILES: dict[str, str] = {structure: names[0] for structure, names in _RELEASE_MASK_FILES.items()}
_INT_COLUMNS = {
    "SESSION_ID",
    "MEDIA_ID",
    "CNT",
    "FPOGID",
    "FPOGV",
    "BPOGV",
    "LPV",
    "RPV",
    "BKID",
    "BKPMIN",
    "LPMMV",
    "RPMMV",
    "X_ORIGINAL",
    "Y_ORIGINAL",
}
SCREEN_W, SCREEN_H = 1920, 1080
Box = tuple[float, float, float, float]  # (xmin, ymin, xmax, ymax) image px

_DX = {
    "Normal": [
        ("CHEST PAIN NOS", "786.50"),
        ("Chest pain, unspecified", "R07.9"),
        ("Syncope and collapse", "R55"),
        ("Other chest pain", "R07.89"),
    ],
    "CHF": [
        ("Heart failure, unspecified", "I50.9"),
        ("CONGESTIVE HEART FAILURE, UNSPEC", "428"),
        ("Hypertensive heart disease with heart failure", "I11.0"),
    ],
    "pneumonia": [
        ("Pneumonia, unspecified organism", "J18.9"),
        ("PNEUMONIA,ORGANISM UNSPECIFIED", "486"),
        ("Sepsis, unspecified organism", "A41.9"),
    ],
}
_DX_EXTRA = [
    ("HYPERTENSION NOS", "401.9"),
    ("Shortness of breath", "R06.02"),
    ("Fever, unspecified", "R50.9"),
    ("Cough", "R05"),
    ("DIABETES UNCOMPL ADULT", "250.00"),
    ("Acute kidney failure, unspecified", "N17.9"),
]
_INDICATION = {
    "Normal": [
        "___{g} with chest pain// eval for acute process",
        "___{g} with syncope, r/o pna",
        "History: ___{g} with chest pain\nTECHNIQUE: Chest PA and lateral",
    ],
    "CHF": [
        "___{g} with CHF and  shortness of breath// ?Pulmonary edema",
        "___{g} with hypertension, tachycardia",
        "___{g} with dyspnea, leg swelling\n?CHF",
    ],
    "pneumonia": [
        "___{g} with fever and cough\n?pneumonia",
        "___{g} with productive cough// eval for infiltrate",
        "___{g} with hypoxia, fever",
    ],
}


def resize_pad(H: int, W: int) -> tuple[int, int, int, int]:
    """EGD-CXR ``image_{top,bottom,left,right}_pad`` of an H x W image (1920 wide x 1024 tall canvas)."""
    ratio = 1024 / max(H, W)
    new_h, new_w = int(H * ratio), int(W * ratio)
    dw, dh = 1920 - new_w, 1024 - new_h
    return dh // 2, dh - dh // 2, dw // 2, dw - dw // 2


def _map_original(fpog: np.ndarray, size: int, pad_lo: int, pad_hi: int, screen: int, inside: np.ndarray) -> np.ndarray:
    size = size + (size % 2)  # the official code pads odd dimensions by one before mapping
    eye = fpog * screen
    o = np.where(inside, eye - pad_lo, -1.0)
    return np.trunc(size / (screen - pad_lo - pad_hi) * o).astype(np.int64)


def _inside(fx: np.ndarray, fy: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = pads
    ex, ey = fx * SCREEN_W, fy * SCREEN_H
    return (left < ex) & (ex < SCREEN_W - right) & (top < ey) & (ey < SCREEN_H - bottom)


def x_original(fpogx: np.ndarray, fpogy: np.ndarray, H: int, W: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    """``X_ORIGINAL`` from screen fractions with the official mapping (FORMATS 2.4)."""
    inside = _inside(fpogx, fpogy, pads)
    return _map_original(fpogx, W, pads[2], pads[3], SCREEN_W, inside)


def y_original(fpogx: np.ndarray, fpogy: np.ndarray, H: int, W: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    """``Y_ORIGINAL`` from screen fractions with the official mapping (FORMATS 2.4)."""
    inside = _inside(fpogx, fpogy, pads)
    return _map_original(fpogy, H, pads[0], pads[1], SCREEN_H, inside)


def _q5(v: np.ndarray) -> np.ndarray:
    """Quantise to 5 decimals (correctly rounded: short repr such as 0.45224)."""
    return np.round(np.asarray(v, dtype=np.float64) * 1e5).astype(np.int64) / 1e5


def _q5n(v: np.ndarray) -> np.ndarray:
    """Quantise to 5 decimals as int * 1e-5, which leaves float-repr noise in some values
    (``1.0527600000000001``), as in the released files written by pandas."""
    return np.round(np.asarray(v, dtype=np.float64) * 1e5).astype(np.int64) * 1e-5


def generate_egd(
    out: str | Path, cases: int, seed: int, mimic_root: str | Path | None = None, progress: bool = False
) -> SynthEgd:
    """Write a synthetic EGD-CXR release with ``cases`` images under ``out``.

    Parameters
    ----------
    out:
        Release root (created).
    cases:
        Number of master_sheet rows (distinct images).
    seed:
        Random seed; the same arguments give byte-identical files.
    mimic_root:
        A MIMIC root from :func:`gazeprep.synth.generate_mimic`: images (ids, sizes) and the ``__chx``
        columns come from it; extra images are invented when it has fewer frontal images.

    Returns
    -------
    SynthEgd
        Every value written (master rows, gaze and fixation rows per image, transcripts, boxes,
        calibration pseudo-images) and the findings with their regions.
    """
    if cases < 1:
        raise ValueError("cases must be >= 1")
    out = Path(out)
    rng = np.random.default_rng([int(seed), 0xE6D])
    images, chx_table = _images(rng, cases, mimic_root)
    session_size = 30 if cases >= 90 else max(2, math.ceil(cases / 3))
    calib_every = 20 if cases >= 40 else 3
    out.mkdir(parents=True, exist_ok=True)
    truth: list[EgdCase] = []
    calibrations: list[EgdCalibration] = []
    gaze_parts: list[pl.DataFrame] = []
    fix_parts: list[pl.DataFrame] = []
    session_state: dict[int, dict] = {}
    iterator: Iterable[tuple[int, ImageRef]] = list(enumerate(images))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="egd-cxr", unit="image")
    for i, img in iterator:
        sid = i // session_size + 1
        st = session_state.setdefault(
            sid,
            {
                "cnt": int(rng.integers(1, 50)),
                "tick": float(rng.integers(6 * 10**11, 7 * 10**11)),
                "media": 0,
                "fixid": 0,
                "clock": 0.0,
            },
        )
        case_rng = np.random.default_rng([int(seed), 0xE6D, i])
        c, g, f = _generate_case(case_rng, out, img, sid, st, chx_table)
        truth.append(c)
        gaze_parts.append(g)
        fix_parts.append(f)
        if (i + 1) % calib_every == 0:
            cal, g2, f2 = _calibration(case_rng, img.dicom_id, sid, st)
            calibrations.append(cal)
            gaze_parts.append(g2)
            fix_parts.append(f2)
    _write_master(out / "master_sheet.csv", truth)
    write_csv(out / "fixations.csv", _gaze_frame(pl.concat(fix_parts)))
    write_csv(out / "eye_gaze.csv", _gaze_frame(pl.concat(gaze_parts)))
    _write_boxes(out / "bounding_boxes.csv", truth)
    return SynthEgd(out, int(seed), truth, calibrations)


def _images(
    rng: np.random.Generator, cases: int, mimic_root: str | Path | None
) -> tuple[list[ImageRef], dict[tuple[int, int], dict[str, float]]]:
    """The release's ``cases`` images (a random order of the MIMIC root's frontal images, topped up with
    invented ones; all invented without a root) and the root's CheXpert labels per (subject, study)."""
    chx_table: dict[tuple[int, int], dict[str, float]] = {}
    if mimic_root is None:
        return invent_images(rng, cases), chx_table
    pool = load_mimic_images(mimic_root)
    order = rng.permutation(len(pool))
    images = [pool[int(i)] for i in order[:cases]]
    chx = read_mimic_table(Path(mimic_root), "mimic-cxr-2.0.0-chexpert")
    for row in chx.iter_rows(named=True):
        chx_table[(int(row["subject_id"]), int(row["study_id"]))] = {
            k: float(v) for k, v in row.items() if k not in ("subject_id", "study_id") and v not in (None, "")
        }
    if len(images) < cases:
        images += invent_images(rng, cases - len(images))
    return images, chx_table


def _gaze_frame(df: pl.DataFrame) -> dict[str, object]:
    return {c: df[c] for c in GAZE_COLUMNS}


def _sample_times(rng: np.random.Generator, t_end: float) -> np.ndarray:
    n = int(t_end * 60) + 2
    t = np.arange(n) / 60.0 + rng.uniform(-0.002, 0.002, n)
    t[0] = max(t[0], 0.0)
    return _q5(np.maximum.accumulate(t))


def _rows_from_fixations(
    rng: np.random.Generator,
    t: np.ndarray,
    fstart: np.ndarray,
    fend: np.ndarray,
    fx: np.ndarray,
    fy: np.ndarray,
    st: dict,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-sample Gazepoint columns (without ids/X_ORIGINAL) for fixations given in screen fractions.

    Returns (columns, fixation index per sample (-1 before the first), index of the last sample of each fixation).
    """
    n = len(t)
    a = np.searchsorted(t, fstart, side="left")
    b = np.searchsorted(t, fend, side="right") - 1
    keep = b > a
    a, b, fx, fy = a[keep], b[keep], fx[keep], fy[keep]
    nf = len(a)
    j = np.searchsorted(a, np.arange(n), side="right") - 1  # last fixation started at or before sample
    in_fix = (j >= 0) & (np.arange(n) <= b[np.clip(j, 0, None)])
    jj = np.clip(j, 0, None)
    fpx = fx[jj]
    fpy = fy[jj]
    fpogs = np.where(j >= 0, t[a[jj]], 0.0)
    fpogd = np.where(in_fix, _q5(t - t[a[jj]]), np.where(j >= 0, _q5(t[b[jj]] - t[a[jj]]), 0.0))
    fid = st["fixid"] + jj + 1
    st["fixid"] += nf
    nxt = np.clip(j + 1, 0, nf - 1)
    frac = np.clip((np.arange(n) - b[jj]) / np.maximum(a[nxt] - b[jj], 1), 0, 1)
    bx = np.where(in_fix, fpx, fpx + (fx[nxt] - fpx) * frac) + rng.normal(0, 0.004, n)
    by = np.where(in_fix, fpy, fpy + (fy[nxt] - fpy) * frac) + rng.normal(0, 0.006, n)
    blink = np.zeros(n, dtype=bool)
    for b0 in rng.integers(0, n, max(1, n // 300)):
        blink[b0 : b0 + int(rng.integers(5, 14))] = True
    bkid = np.cumsum(np.diff(np.concatenate([[0], blink.astype(np.int64)])) == 1) * blink
    sac_mag = np.where(in_fix & (np.arange(n) == a[jj]), rng.uniform(20, 200, n), 0.0)
    cols = {
        "CNT": st["cnt"] + np.arange(n, dtype=np.int64),
        "Time (in secs)": t,
        "TIMETICK(f=10000000)": np.round(st["tick"] + (st["clock"] + t) * 1e7),
        "FPOGX": _q5(fpx),
        "FPOGY": _q5(fpy),
        "FPOGS": fpogs,
        "FPOGD": fpogd,
        "FPOGID": fid.astype(np.int64),
        "FPOGV": in_fix.astype(np.int64),
        "BPOGX": _q5(bx),
        "BPOGY": _q5(by),
        "BPOGV": (~blink).astype(np.int64),
        "LPCX": _q5(0.378 + rng.normal(0, 0.002, n)),
        "LPCY": _q5(0.594 + rng.normal(0, 0.002, n)),
        "LPD": _q5(18.2 + rng.normal(0, 0.4, n)),
        "LPS": _q5(1.05 + rng.normal(0, 0.01, n)),
        "LPV": (~blink).astype(np.int64),
        "RPCX": _q5(0.637 + rng.normal(0, 0.002, n)),
        "RPCY": _q5(0.598 + rng.normal(0, 0.002, n)),
        "RPD": _q5(18.3 + rng.normal(0, 0.4, n)),
        "RPS": _q5(1.06 + rng.normal(0, 0.01, n)),
        "RPV": (~blink).astype(np.int64),
        "BKID": bkid.astype(np.int64),
        "BKDUR": np.where(blink, _q5(rng.uniform(0.08, 0.25, n)), 0.0),
        "BKPMIN": rng.integers(17, 22, n).astype(np.int64),
        "LPMM": _q5(3.5 + rng.normal(0, 0.1, n)),
        "LPMMV": (~blink).astype(np.int64),
        "RPMM": _q5n(3.6 + rng.normal(0, 0.1, n)),
        "RPMMV": (~blink).astype(np.int64),
        "SACCADE_MAG": _q5(sac_mag),
        "SACCADE_DIR": _q5(np.where(sac_mag > 0, rng.uniform(0.01, 360, n), 0.0)),
        "VID_FRAME": np.zeros(n),
    }
    st["cnt"] += n
    return cols, a, b


def _finish(cols: dict, sid: int, media: int, dicom_id: str, xo: np.ndarray, yo: np.ndarray) -> dict:
    n = len(cols["CNT"])
    out = {
        "SESSION_ID": np.full(n, sid, dtype=np.int64),
        "MEDIA_ID": np.full(n, media, dtype=np.int64),
        "DICOM_ID": [dicom_id] * n,
    }
    out.update(cols)
    out["X_ORIGINAL"], out["Y_ORIGINAL"] = xo, yo
    return out


def _fixation_rows(g: dict, b: np.ndarray) -> dict:
    """fixations.csv rows: the last sample of each fixation, with Time = FPOGS + FPOGD."""
    f = {k: (np.asarray(v)[b] if not isinstance(v, list) else [v[i] for i in b]) for k, v in g.items()}
    f["Time (in secs)"] = f["FPOGS"] + f["FPOGD"]
    f["FPOGV"] = np.ones(len(b), dtype=np.int64)
    return f


def _frame(d: dict) -> pl.DataFrame:
    return pl.DataFrame(
        {c: (pl.Series(c, d[c], dtype=pl.Int64) if c in _INT_COLUMNS else pl.Series(c, d[c])) for c in GAZE_COLUMNS}
    )


def _phrases(
    rng: np.random.Generator, tokens: list[str], start: np.ndarray, end: np.ndarray, sent_start: set[int]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Transcript entries: punctuation attached to the previous word, sentence starts capitalised,
    some adjacent words merged into one phrase; times rounded to 0.1 s. Returns (phrases, begin,
    end, token->phrase index)."""
    words: list[str] = []
    wb: list[float] = []
    we: list[float] = []
    tok2: list[int] = []
    for i, tok in enumerate(tokens):
        if tok in (".", ",") and words:
            words[-1] += tok
            we[-1] = end[i]
            tok2.append(len(words) - 1)
            continue
        w = tok.capitalize() if i in sent_start else tok
        if tok == "/":
            w = "or"
        merge = words and not words[-1].endswith((".", ",")) and i not in sent_start and rng.random() < 0.08
        if merge:
            words[-1] += " " + w
            we[-1] = end[i]
        else:
            words.append(w)
            wb.append(start[i])
            we.append(end[i])
        tok2.append(len(words) - 1)
    b = np.round(np.array(wb), 1)
    e = np.maximum(np.round(np.array(we), 1), b + 0.1)
    e = np.round(e, 1)
    return words, b, e, np.array(tok2)


class _Transcript(NamedTuple):
    """A dictation as EGD-CXR transcribes it: phrases with begin/end times (s), and its structure."""

    findings: list[ReadingFinding]
    words: list[str]
    word_start: np.ndarray
    word_end: np.ndarray
    sentences: list[Sentence]
    mentions: list[Mention]
    segs: list[FocusSegment]  # focus segments, in mention order
    boxes_of_mention: list[list[Box]]


def _generate_case(
    rng: np.random.Generator,
    out: Path,
    img: ImageRef,
    sid: int,
    st: dict,
    chx_table: dict[tuple[int, int], dict[str, float]],
) -> tuple[EgdCase, pl.DataFrame, pl.DataFrame]:
    """Write one image's transcript folder (transcript and masks) and return its truth with its
    ``eye_gaze.csv`` and ``fixations.csv`` rows; advances the session state ``st``.

    Draws from ``rng`` in a fixed order, which the files depend on: findings, sentences, timing,
    phrases, focus, gaze, master row.
    """
    H, W = img.height, img.width
    params, image_findings = params_for_image(img.dicom_id)
    boxes = region_boxes(params, H, W)
    cls = _class_label(image_findings)
    pads = resize_pad(H, W)
    tr = _transcript(rng, image_findings, boxes)
    full_text = " ".join(tr.words)
    folder = out / "audio_segmentation_transcripts" / img.dicom_id
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "full_text": full_text,
        "time_stamped_text": [
            {"phrase": w, "begin_time": float(b), "end_time": float(e)}
            for w, b, e in zip(tr.words, tr.word_start, tr.word_end)
        ],
    }
    write_text(folder / "transcript.json", json.dumps(doc, indent=2, sort_keys=True))
    from PIL import Image

    for name, m in phantom_masks(params, H, W).items():
        Image.fromarray(m.astype(np.uint8) * 255).save(folder / MASK_FILES[name], format="PNG", compress_level=1)

    g, f, target, media = _gaze(rng, img, pads, boxes, tr, sid, st)
    case = EgdCase(
        dicom_id=img.dicom_id,
        path=img.rel_path,
        study_id=img.study_id,
        patient_id=img.subject_id,
        image_height=H,
        image_width=W,
        pads=pads,
        master=_master_row(rng, img, cls, pads, tr.findings, chx_table),
        class_label=cls,
        session_id=sid,
        media_id=media,
        full_text=full_text,
        words=tr.words,
        word_start_s=tr.word_start,
        word_end_s=tr.word_end,
        sentences=tr.sentences,
        mentions=tr.mentions,
        fixations={k: v for k, v in f.items() if k != "DICOM_ID"},
        fixation_target=target.astype(np.int64),
        gaze={k: v for k, v in g.items() if k != "DICOM_ID"},
        boxes={n: _xxyy(boxes[n]) for n in EGD_BBOX_NAMES},
        mask_files=tuple(MASK_FILES[k] for k in MASK_FILES),
        image_findings=image_findings,
        params=params,
    )
    return case, _frame(g), _frame(f)


def _class_label(image_findings: tuple[ImageFinding, ...]) -> str:
    """The image's EGD-CXR class: pneumonia, CHF or Normal, from what the phantom shows."""
    kinds = {f.kind for f in image_findings}
    if kinds & {"consolidation", "groundglass_opacity"}:
        return "pneumonia"
    if kinds & {"cardiomegaly", "pulmonary_edema", "pleural_effusion"}:
        return "CHF"
    return "Normal"


def _transcript(
    rng: np.random.Generator, image_findings: tuple[ImageFinding, ...], boxes: dict[str, Box]
) -> _Transcript:
    """The radiologist's dictation of the image: findings -> sentences -> timed tokens -> transcript
    phrases; mentions and sentences indexed by phrase, with the focus span of each mention."""
    findings = sample_reading_findings(rng, image_findings)
    sentences = plan_sentences(rng, findings)
    timing = time_tokens(rng, sentences, rng.uniform(2.0, 5.0), (0.3, 1.2))
    tokens = [t for s in sentences for t in s.tokens]
    sent_start = set(int(x) for x in timing.sentence_token_start)
    words, wb, we, tok2 = _phrases(rng, tokens, timing.start, timing.end, sent_start)
    mentions: list[Mention] = []
    tsent: list[Sentence] = []
    bom: list[list[Box]] = []
    for si, s in enumerate(sentences):
        a0 = int(timing.sentence_token_start[si])
        b0 = int(timing.sentence_token_end[si])
        pa, pb = int(tok2[a0]), int(tok2[b0 - 1]) + 1
        m_idx = []
        for pm in s.mentions:
            mb = tuple(boxes[r] for r in pm.regions)
            bom.append(list(mb))
            ws, wend = int(tok2[a0 + pm.token_start]), int(tok2[a0 + pm.token_end - 1]) + 1
            m_idx.append(len(mentions))
            mentions.append(
                Mention(
                    kind=pm.kind,
                    label=label_for(pm.kind, "egd"),
                    phrase=" ".join(s.tokens[pm.token_start : pm.token_end]),
                    sentence_idx=si,
                    token_start=ws,
                    token_end=wend,
                    t_start_s=float(wb[ws]),
                    t_end_s=float(we[wend - 1]),
                    negated=pm.negated,
                    uncertain=pm.uncertain,
                    certainty=pm.certainty,
                    regions=pm.regions,
                    boxes_px=mb,
                )
            )
        tsent.append(Sentence(" ".join(words[pa:pb]), pa, pb, float(wb[pa]), float(we[pb - 1]), tuple(m_idx)))
    segs = focus_segments(rng, sentences, timing, bom)
    for sg in segs:
        mentions[sg.mention].focus_start_s = round(sg.t_start, 3)
        mentions[sg.mention].focus_end_s = round(sg.t_end, 3)
    return _Transcript(findings, words, wb, we, tsent, mentions, segs, bom)


def _gaze(
    rng: np.random.Generator,
    img: ImageRef,
    pads: tuple[int, int, int, int],
    boxes: dict[str, Box],
    tr: _Transcript,
    sid: int,
    st: dict,
) -> tuple[dict, dict, np.ndarray, int]:
    """60 Hz Gazepoint samples of the reading (a scanpath that visits the mentioned regions, with 3% of
    the fixations off the image's screen area). Returns (``eye_gaze.csv`` columns, ``fixations.csv``
    columns, target mention per fixation row (-1: wandering or off the image), the image's MEDIA_ID)."""
    H, W = img.height, img.width
    t_end = float(tr.word_end[-1]) + rng.uniform(0.5, 1.5)
    t = _sample_times(rng, t_end)
    wander = wander_boxes(boxes, W, H)
    bom = tr.boxes_of_mention
    targets = [(i, bom[i]) for i, m in enumerate(tr.mentions) if not m.negated and bom[i]]
    t_first = rng.uniform(0.02, 0.3)
    segs = tr.segs
    segs = sorted(
        search_visits(rng, t_first, segs[0].t_start if segs else float(tr.word_start[0]), targets) + segs,
        key=lambda g: g.t_start,
    )
    sp = scanpath(rng, t_first, float(t[-1]), segs, wander, [0.38, 0.38, 0.12, 0.06, 0.06], mean_duration=0.28)
    top, bottom, left, right = pads
    Wp, Hp = W + W % 2, H + H % 2
    ex = left + sp["x"] * (SCREEN_W - left - right) / Wp
    ey = top + sp["y"] * (SCREEN_H - top - bottom) / Hp
    off = rng.random(len(ex)) < 0.03
    ex = np.where(off, rng.uniform(20, max(21, left - 10) if left > 40 else 1900, len(ex)), ex)
    ey = np.where(off & (left <= 40), rng.uniform(2, max(3, top - 5), len(ey)), ey)
    target = np.where(sp["segment"] >= 0, np.array([s.mention for s in segs] + [-1])[sp["segment"]], -1)
    target = np.where(off, -1, target)
    cols, a, b = _rows_from_fixations(rng, t, sp["start"], sp["end"], ex / SCREEN_W, ey / SCREEN_H, st)
    keep = np.searchsorted(t, sp["end"], side="right") - 1 > np.searchsorted(t, sp["start"], side="left")
    target = target[keep]
    xo = x_original(cols["FPOGX"], cols["FPOGY"], H, W, pads)
    yo = y_original(cols["FPOGX"], cols["FPOGY"], H, W, pads)
    media = st["media"]
    st["media"] += 1
    st["clock"] += float(t[-1]) + 0.5
    g = _finish(cols, sid, media, img.dicom_id, xo, yo)
    return g, _fixation_rows(g, b), target, media


def _calibration(
    rng: np.random.Generator, after_id: str, sid: int, st: dict
) -> tuple[EgdCalibration, pl.DataFrame, pl.DataFrame]:
    pseudo = after_id[:-5]
    t = _sample_times(rng, rng.uniform(1.5, 2.5))
    n_fix = int(rng.integers(3, 7))
    edges = np.sort(rng.uniform(0.1, float(t[-1]) - 0.05, 2 * n_fix))
    fs, fe = edges[0::2], edges[1::2]
    fx = (960 + rng.normal(0, 15, n_fix)) / SCREEN_W
    fy = (540 + rng.normal(0, 15, n_fix)) / SCREEN_H
    cols, a, b = _rows_from_fixations(rng, t, fs, fe, fx, fy, st)
    zero = (0, 0, 0, 0)
    # the official mapping uses a 1920 x 1080 zero image without padding for calibration images
    xo = x_original(cols["FPOGX"], cols["FPOGY"], SCREEN_H, SCREEN_W, zero)
    yo = y_original(cols["FPOGX"], cols["FPOGY"], SCREEN_H, SCREEN_W, zero)
    media = st["media"]
    st["media"] += 1
    st["clock"] += float(t[-1]) + 0.5
    g = _finish(cols, sid, media, pseudo, xo, yo)
    f = _fixation_rows(g, b)
    return EgdCalibration(pseudo, after_id, sid, media, len(b), len(t)), _frame(g), _frame(f)


def _xxyy(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (float(round(x0)), float(round(x1)), float(round(y0)), float(round(y1)))


def _master_row(
    rng: np.random.Generator,
    img: ImageRef,
    cls: str,
    pads: tuple[int, int, int, int],
    findings: list[ReadingFinding],
    chx_table: dict[tuple[int, int], dict[str, float]],
) -> dict[str, object]:
    gender = str(rng.choice(["F", "M"]))
    dec = int(rng.integers(2, 8))
    row: dict[str, object] = {
        "dicom_id": img.dicom_id,
        "path": img.rel_path,
        "study_id": img.study_id,
        "patient_id": img.subject_id,
        "stay_id": int(rng.integers(30_000_000, 40_000_000)),
        "gender": gender,
        "anchor_age": f"{dec * 10} - {dec * 10 + 10}",
        "image_top_pad": pads[0],
        "image_bottom_pad": pads[1],
        "image_left_pad": pads[2],
        "image_right_pad": pads[3],
    }
    dx = [_DX[cls][int(rng.integers(0, len(_DX[cls])))]]
    for k in rng.choice(len(_DX_EXTRA), size=int(rng.integers(0, 4)), replace=False):
        dx.append(_DX_EXTRA[int(k)])
    for i in range(1, 10):
        row[f"dx{i}"], row[f"dx{i}_icd"] = dx[i - 1] if i <= len(dx) else (None, None)
    row["normal_reports"] = int(cls == "Normal")
    for c in ("Normal", "CHF", "pneumonia"):
        row[c] = int(cls == c)
    pos = {label_for(f.kind, "egd") for f in findings if not f.negated}
    for c in EGD_GRANULAR:
        row[c] = int(c in pos)
    if any(f.kind == "atelectasis" and f.severity > 0.8 and not f.negated for f in findings):
        row["lobar__segmental_collapse"] = 1
    row["normal_anatomically"] = int(cls == "Normal" and not (pos - {None}))
    labels = chx_table.get((img.subject_id, img.study_id))
    if labels is None:
        from gazeprep.synth.mimic import _study_labels

        labels = _study_labels(rng, tuple(f for f in findings))
    for lab in CHEXPERT_LABELS:
        v = labels.get(lab)
        row[lab.lower().replace(" ", "_") + "__chx"] = None if v is None else int(v)
    row["cxr_exam_indication"] = _INDICATION[cls][int(rng.integers(0, 3))].format(g=gender)
    return row


def _write_master(path: Path, cases: list[EgdCase]) -> None:
    cols: dict[str, object] = {}
    for c in MASTER_COLUMNS:
        vals = [k.master[c] for k in cases]
        if all(v is None or isinstance(v, int) for v in vals):
            cols[c] = pl.Series(c, vals, dtype=pl.Int64)
        else:
            cols[c] = pl.Series(c, vals, dtype=pl.Utf8)
    write_csv(path, cols)


def _write_boxes(path: Path, cases: list[EgdCase]) -> None:
    rows = sorted((c.dicom_id, n, c.boxes[n]) for c in cases for n in EGD_BBOX_NAMES)
    write_csv(
        path,
        {
            "dicom_id": [r[0] for r in rows],
            "bbox_name": [r[1] for r in rows],
            "x1": np.array([r[2][0] for r in rows]),
            "x2": np.array([r[2][1] for r in rows]),
            "y1": np.array([r[2][2] for r in rows]),
            "y2": np.array([r[2][3] for r in rows]),
        },
    )
