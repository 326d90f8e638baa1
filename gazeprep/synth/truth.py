"""Ground-truth objects returned by the generators: exactly what was written, plus what it means.

Numbers in these objects are the values *as written* (after rounding), so a parser's output can be
compared with them for equality. Times are seconds since the audio start (REFLACX) or since the
image was shown (EGD-CXR); positions are pixels of the original image (x = column, y = row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gazeprep.synth.phantom import ImageFinding, PhantomParams

__all__ = [
    "Ellipse",
    "Mention",
    "Sentence",
    "ReflacxCase",
    "SynthReflacx",
    "EgdCase",
    "EgdCalibration",
    "SynthEgd",
    "MimicImage",
    "SynthMimic",
]

Box = tuple[float, float, float, float]


@dataclass
class Mention:
    """One mention of a finding in a dictation.

    Attributes
    ----------
    kind:
        Finding kind of :data:`gazeprep.synth.findings.KINDS` (``"pleural_effusion"``, ...).
    label:
        The dataset's label column for it: the REFLACX phase's column (``"Pleural effusion"`` in
        phase 1, ``"Pleural abnormality"`` in phases 2/3, ``"Other"`` for kinds without a column) or
        the EGD-CXR granular column; None when the dataset has no column (e.g. negated kinds without
        one, pneumothorax in EGD-CXR).
    phrase:
        The mention's words joined by spaces (``"pleural effusion"``).
    sentence_idx:
        0-based sentence index in the case.
    token_start, token_end:
        Span [start, end) in the case's token list (REFLACX tokens; EGD-CXR: transcript words, i.e.
        :attr:`EgdCase.words`).
    t_start_s, t_end_s:
        Start of the first and end of the last mention token (as written, 2 dp for REFLACX).
    negated, uncertain:
        ``no pneumothorax`` -> negated; ``possible``/``probable``/``less likely`` -> uncertain.
    certainty:
        REFLACX certainty 1..5 of the wording (5 = stated plainly), None for negations.
    regions, boxes_px:
        Anatomical region names and their boxes (x0, y0, x1, y1) in image px where the finding is
        (for negations: where the reader checks, e.g. both apices for pneumothorax).
    focus_start_s, focus_end_s:
        The interval during which the generator aimed fixations at ``boxes_px`` (None when none).
    """

    kind: str
    label: str | None
    phrase: str
    sentence_idx: int
    token_start: int
    token_end: int
    t_start_s: float
    t_end_s: float
    negated: bool
    uncertain: bool
    certainty: int | None
    regions: tuple[str, ...]
    boxes_px: tuple[Box, ...]
    focus_start_s: float | None = None
    focus_end_s: float | None = None


@dataclass
class Sentence:
    """A dictated sentence: token span [token_start, token_end) (ending with the ``.`` token),
    its text (tokens joined as in ``transcription.txt``), times of its first token start and last
    token end, and the indices of its mentions in the case's mention list."""

    text: str
    token_start: int
    token_end: int
    t_start_s: float
    t_end_s: float
    mention_idx: tuple[int, ...]


@dataclass
class Ellipse:
    """A row of ``anomaly_location_ellipses.csv``: int bounding rectangle of the ellipse, certainty
    1..5, the label columns that are True, and the finding kind it was drawn for."""

    xmin: int
    ymin: int
    xmax: int
    ymax: int
    certainty: int
    labels: tuple[str, ...]
    kind: str


@dataclass
class ReflacxCase:
    """One REFLACX reading (a metadata row and its folders).

    Attributes
    ----------
    case_id, phase, trial:
        ``P{phase}{trial:02}R{6 digits}``; phase 3 has trial 0.
    split, discarded, image, dicom_id, subject_id, study_id, image_width, image_height:
        Metadata values as written (``image`` is the physionet-relative DICOM path).
    labels:
        Metadata label columns of the phase -> value as written: int 0..5 for abnormalities, bool for
        ``Support devices`` / ``Quality issue``, str or None (empty) for ``Other``.
    chest_box:
        ``chest_bounding_box.csv`` (xmin, ymin, xmax, ymax) ints.
    ellipses:
        Rows of ``anomaly_location_ellipses.csv`` in file order (empty -> header-only file).
    tokens, token_start_s, token_end_s, transcription:
        ``timestamps_transcription.csv`` and ``transcription.txt`` (empty for discarded cases).
    sentences, mentions:
        The dictation's structure (see :class:`Sentence`, :class:`Mention`).
    fixations:
        ``fixations.csv`` column -> numpy array as written (ints int64, floats float64), None when
        discarded.
    fixation_target:
        int array: for each fixation the index of the mention whose region it was aimed at, -1 when
        wandering (also -1 for off-image glances).
    gaze:
        ``gaze.csv`` column -> array as written (float64 with NaN for empty fields), None when no file.
    image_findings, params:
        What the phantom image shows and its parameters.
    """

    case_id: str
    phase: int
    trial: int
    split: str
    discarded: bool
    image: str
    dicom_id: str
    subject_id: int
    study_id: int
    image_width: int
    image_height: int
    labels: dict[str, object]
    chest_box: tuple[int, int, int, int]
    ellipses: list[Ellipse]
    tokens: list[str] = field(default_factory=list)
    token_start_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    token_end_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    transcription: str = ""
    sentences: list[Sentence] = field(default_factory=list)
    mentions: list[Mention] = field(default_factory=list)
    fixations: dict[str, np.ndarray] | None = None
    fixation_target: np.ndarray | None = None
    gaze: dict[str, np.ndarray] | None = None
    image_findings: tuple[ImageFinding, ...] = ()
    params: PhantomParams | None = None


@dataclass
class SynthReflacx:
    """What :func:`gazeprep.synth.generate_reflacx` wrote.

    ``cases`` are in file order (phase 1 rows, phase 2 rows, phase 3 rows); ``label_columns`` maps a
    phase to its sorted label columns.
    """

    root: Path
    seed: int
    cases: list[ReflacxCase]
    label_columns: dict[int, tuple[str, ...]]

    def by_id(self) -> dict[str, ReflacxCase]:
        return {c.case_id: c for c in self.cases}


@dataclass
class EgdCase:
    """One EGD-CXR image (a master_sheet row, its gaze and its transcript folder).

    Attributes
    ----------
    dicom_id, path, study_id, patient_id, image_height, image_width, pads:
        Master sheet identity; ``pads`` = (top, bottom, left, right) from ``resize_pad``.
    master:
        Master sheet column -> value as written (int, str or None for empty).
    class_label:
        ``"Normal"``, ``"CHF"`` or ``"pneumonia"``.
    session_id, media_id:
        Reading session and media index in it.
    full_text, words, word_start_s, word_end_s:
        transcript.json ``full_text`` and its ``time_stamped_text`` entries (``phrase`` may hold
        several words; punctuation attached).
    sentences, mentions:
        Structure of the dictation (token spans refer to ``words``, i.e. transcript entries).
    fixations, gaze:
        ``fixations.csv`` / ``eye_gaze.csv`` rows of this image: column -> array as written (the 37
        columns; ``DICOM_ID`` omitted since it is constant).
    fixation_target:
        Per fixation row: index of the mention aimed at, -1 when wandering.
    boxes:
        ``bounding_boxes.csv`` rows: bbox_name -> (x1, x2, y1, y2) floats (file column order).
    mask_files:
        Mask file names written in the case folder.
    """

    dicom_id: str
    path: str
    study_id: int
    patient_id: int
    image_height: int
    image_width: int
    pads: tuple[int, int, int, int]
    master: dict[str, object]
    class_label: str
    session_id: int
    media_id: int
    full_text: str
    words: list[str]
    word_start_s: np.ndarray
    word_end_s: np.ndarray
    sentences: list[Sentence]
    mentions: list[Mention]
    fixations: dict[str, np.ndarray]
    fixation_target: np.ndarray
    gaze: dict[str, np.ndarray]
    boxes: dict[str, tuple[float, float, float, float]]
    mask_files: tuple[str, ...]
    image_findings: tuple[ImageFinding, ...] = ()
    params: PhantomParams | None = None


@dataclass
class EgdCalibration:
    """A calibration pseudo-image: 39-char id (``real_id[:-5]``), session, number of rows written."""

    pseudo_id: str
    after_dicom_id: str
    session_id: int
    media_id: int
    n_fixations: int
    n_gaze: int


@dataclass
class SynthEgd:
    """What :func:`gazeprep.synth.generate_egd` wrote; ``cases`` in master_sheet order."""

    root: Path
    seed: int
    cases: list[EgdCase]
    calibrations: list[EgdCalibration]

    @property
    def calibration_ids(self) -> list[str]:
        return [c.pseudo_id for c in self.calibrations]

    def by_id(self) -> dict[str, EgdCase]:
        return {c.dicom_id: c for c in self.cases}


@dataclass
class MimicImage:
    """One MIMIC-CXR image: ids, metadata row values as written, DICOM encoding, file paths
    (relative to the root) and the phantom behind it."""

    dicom_id: str
    subject_id: int
    study_id: int
    view_position: str
    rows: int
    columns: int
    study_date: int
    study_time: float
    split: str
    photometric: str  # MONOCHROME1 / MONOCHROME2
    window_center: float | None
    window_width: float | None
    dcm_path: str
    jpg_path: str
    params: PhantomParams
    findings: tuple[ImageFinding, ...]


@dataclass
class SynthMimic:
    """What :func:`gazeprep.synth.generate_mimic` wrote: images in metadata order, and per study
    (subject_id, study_id) the CheXpert and NegBio label dicts (label -> 1.0/0.0/-1.0, absent = empty)."""

    root: Path
    seed: int
    images: list[MimicImage]
    chexpert: dict[tuple[int, int], dict[str, float]]
    negbio: dict[tuple[int, int], dict[str, float]]
