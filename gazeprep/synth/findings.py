"""Finding catalogue of the synthetic generator: kinds, their dataset labels, regions and wording.

A *kind* is one abnormality the phantom can show (``pleural_effusion``, ``consolidation``, ...). For
each kind this module knows

* the label column it maps to in REFLACX phase 1 (``p1``) and phases 2/3 (``p23``), in EGD-CXR
  (granular ``master_sheet`` columns), and in MIMIC CheXpert; a kind that has no column in a REFLACX
  phase goes to that phase's free-text ``Other`` column as ``other_text``;
* the anatomical regions (names of :func:`gazeprep.synth.phantom.region_boxes`) where it lies;
* how a radiologist dictates it, positively (with a size word and the certainty wording) and, for the
  common findings, negatively (``no pneumothorax``, ``heart size is normal``).

Sentence templates mark the mention phrase with square brackets: ``"{size} {side} [pleural effusion]"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "REFLACX_P1_LABELS",
    "REFLACX_P23_LABELS",
    "EGD_GRANULAR",
    "CHEXPERT_LABELS",
    "CERTAINTY_WORDS",
    "ImageFinding",
    "Kind",
    "PlannedSentence",
    "ReadingFinding",
    "label_for",
    "plan_sentences",
    "sample_image_findings",
    "sample_reading_findings",
]

REFLACX_P1_LABELS = tuple(
    sorted(
        [
            "Airway wall thickening",
            "Atelectasis",
            "Consolidation",
            "Emphysema",
            "Enlarged cardiac silhouette",
            "Fibrosis",
            "Fracture",
            "Groundglass opacity",
            "Mass",
            "Nodule",
            "Other",
            "Pleural effusion",
            "Pleural thickening",
            "Pneumothorax",
            "Pulmonary edema",
            "Quality issue",
            "Support devices",
            "Wide mediastinum",
        ]
    )
)
REFLACX_P23_LABELS = tuple(
    sorted(
        [
            "Abnormal mediastinal contour",
            "Acute fracture",
            "Atelectasis",
            "Consolidation",
            "Enlarged cardiac silhouette",
            "Enlarged hilum",
            "Groundglass opacity",
            "Hiatal hernia",
            "High lung volume / emphysema",
            "Interstitial lung disease",
            "Lung nodule or mass",
            "Other",
            "Pleural abnormality",
            "Pneumothorax",
            "Pulmonary edema",
            "Support devices",
        ]
    )
)
#: EGD-CXR granular 0/1 finding columns of master_sheet.csv (in file order).
EGD_GRANULAR = (
    "consolidation",
    "enlarged_cardiac_silhouette",
    "linear__patchy_atelectasis",
    "lobar__segmental_collapse",
    "not_otherwise_specified_opacity___pleural__parenchymal_opacity__",
    "pleural_effusion_or_thickening",
    "pulmonary_edema__hazy_opacity",
    "normal_anatomically",
    "elevated_hemidiaphragm",
    "hyperaeration",
    "vascular_redistribution",
)
CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: REFLACX certainty (1..5) -> (prefix words, suffix words) used in the dictation.
CERTAINTY_WORDS = {
    5: ((), ()),
    4: (("probable",), ()),
    3: (("possible",), ()),
    2: ((), ("is", "less", "likely")),
    1: (("unlikely",), ()),
}


@dataclass(frozen=True)
class Kind:
    """One finding kind of the catalogue (see the module docstring)."""

    key: str
    p1: str | None
    p23: str | None
    other_text: str
    egd: str | None
    chexpert: str | None
    sides: tuple[str, ...]
    zones: tuple[str, ...]
    weight: float
    templates: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    negative_regions: tuple[str, ...] = ()


def _k(*args: Any, **kw: Any) -> Kind:
    return Kind(*args, **kw)


KINDS: dict[str, Kind] = {
    k.key: k
    for k in [
        _k(
            "pleural_effusion",
            "Pleural effusion",
            "Pleural abnormality",
            "Pleural effusion",
            "pleural_effusion_or_thickening",
            "Pleural Effusion",
            ("left", "right", "bilateral"),
            ("lower",),
            0.20,
            (
                "{size} {side} [pleural effusion]",
                "{side} [pleural effusion]",
                "there is a {size} {side} [pleural effusion]",
            ),
            ("no [pleural effusion]", "no [pleural effusion] or [pneumothorax]"),
            ("left costophrenic angle", "right costophrenic angle"),
        ),
        _k(
            "consolidation",
            "Consolidation",
            "Consolidation",
            "Consolidation",
            "consolidation",
            "Consolidation",
            ("left", "right"),
            ("lower", "mid", "upper"),
            0.15,
            (
                "{side} {zone} lobe [consolidation]",
                "[consolidation] in the {side} {zone} lung",
                "focal {side} {zone} lobe [consolidation]",
            ),
            ("no focal [consolidation]",),
            ("left lung", "right lung"),
        ),
        _k(
            "atelectasis",
            "Atelectasis",
            "Atelectasis",
            "Atelectasis",
            "linear__patchy_atelectasis",
            "Atelectasis",
            ("bilateral", "left", "right"),
            ("lower",),
            0.15,
            (
                "{side} basilar [atelectasis]",
                "linear [atelectasis] in the {side} lower lung",
                "{side} basilar [atelectasis] / scarring",
            ),
        ),
        _k(
            "cardiomegaly",
            "Enlarged cardiac silhouette",
            "Enlarged cardiac silhouette",
            "Enlarged cardiac silhouette",
            "enlarged_cardiac_silhouette",
            "Cardiomegaly",
            ("",),
            ("",),
            0.15,
            ("{size} [cardiomegaly]", "the [heart is enlarged]", "[enlarged cardiac silhouette]"),
            ("[heart size] is normal", "the [cardiac silhouette] is within normal limits"),
            ("cardiac silhouette",),
        ),
        _k(
            "pulmonary_edema",
            "Pulmonary edema",
            "Pulmonary edema",
            "Pulmonary edema",
            "pulmonary_edema__hazy_opacity",
            "Edema",
            ("bilateral",),
            ("mid",),
            0.10,
            (
                "{size} [pulmonary edema]",
                "{size} [interstitial edema]",
                "findings consistent with {size} [pulmonary edema]",
            ),
            ("no [pulmonary edema]",),
            ("left mid lung zone", "right mid lung zone"),
        ),
        _k(
            "pneumothorax",
            "Pneumothorax",
            "Pneumothorax",
            "Pneumothorax",
            None,
            "Pneumothorax",
            ("left", "right"),
            ("apex",),
            0.05,
            ("{size} {side} apical [pneumothorax]", "{size} {side} [pneumothorax]"),
            ("no [pneumothorax]",),
            ("left apex", "right apex"),
        ),
        _k(
            "nodule",
            "Nodule",
            "Lung nodule or mass",
            "Nodule",
            "not_otherwise_specified_opacity___pleural__parenchymal_opacity__",
            "Lung Lesion",
            ("left", "right"),
            ("upper", "mid"),
            0.05,
            ("{side} {zone} lobe [nodule]", "{size} [nodule] in the {side} {zone} lung"),
        ),
        _k(
            "mass",
            "Mass",
            "Lung nodule or mass",
            "Mass",
            "not_otherwise_specified_opacity___pleural__parenchymal_opacity__",
            "Lung Lesion",
            ("left", "right"),
            ("upper", "mid"),
            0.02,
            ("{side} {zone} lobe [mass]", "[mass] in the {side} {zone} lung"),
        ),
        _k(
            "emphysema",
            "Emphysema",
            "High lung volume / emphysema",
            "Emphysema",
            "hyperaeration",
            None,
            ("bilateral",),
            ("upper",),
            0.04,
            ("[emphysema]", "[hyperinflated lungs]"),
        ),
        _k(
            "wide_mediastinum",
            "Wide mediastinum",
            "Abnormal mediastinal contour",
            "Wide mediastinum",
            None,
            "Enlarged Cardiomediastinum",
            ("",),
            ("",),
            0.03,
            ("[widened mediastinum]", "the [mediastinum is widened]"),
        ),
        _k(
            "hiatal_hernia",
            None,
            "Hiatal hernia",
            "Hiatal hernia",
            None,
            None,
            ("",),
            ("",),
            0.02,
            ("{size} [hiatal hernia]",),
        ),
        _k(
            "enlarged_hilum",
            None,
            "Enlarged hilum",
            "Enlarged hilum",
            "vascular_redistribution",
            None,
            ("left", "right"),
            ("",),
            0.02,
            ("[enlarged {side} hilum]",),
        ),
        _k(
            "fracture",
            "Fracture",
            "Acute fracture",
            "Fracture",
            None,
            "Fracture",
            ("left", "right"),
            ("",),
            0.02,
            ("acute {side} [rib fracture]", "{side} [rib fracture]"),
        ),
        _k(
            "groundglass_opacity",
            "Groundglass opacity",
            "Groundglass opacity",
            "Groundglass opacity",
            "not_otherwise_specified_opacity___pleural__parenchymal_opacity__",
            "Lung Opacity",
            ("left", "right"),
            ("mid", "lower"),
            0.03,
            ("[groundglass opacity] in the {side} {zone} lung", "{side} {zone} lung [groundglass opacities]"),
        ),
        _k(
            "interstitial_disease",
            "Fibrosis",
            "Interstitial lung disease",
            "Interstitial lung disease",
            "not_otherwise_specified_opacity___pleural__parenchymal_opacity__",
            "Lung Opacity",
            ("bilateral",),
            ("lower",),
            0.03,
            ("[interstitial lung disease]", "bibasilar [interstitial fibrosis]", "[pulmonary fibrosis]"),
        ),
        _k(
            "pleural_thickening",
            "Pleural thickening",
            "Pleural abnormality",
            "Pleural thickening",
            "pleural_effusion_or_thickening",
            "Pleural Other",
            ("left", "right"),
            ("apex",),
            0.02,
            ("{side} apical [pleural thickening]",),
        ),
        _k(
            "airway_wall_thickening",
            "Airway wall thickening",
            None,
            "Airway wall thickening",
            None,
            None,
            ("bilateral",),
            ("hilar",),
            0.02,
            ("[peribronchial thickening]", "[airway wall thickening]"),
        ),
        _k(
            "elevated_hemidiaphragm",
            None,
            None,
            "Elevated hemidiaphragm",
            "elevated_hemidiaphragm",
            None,
            ("left", "right"),
            ("lower",),
            0.02,
            ("elevated {side} [hemidiaphragm]",),
        ),
        _k("scoliosis", None, None, "Scoliosis", None, None, ("",), ("",), 0.02, ("[scoliosis]",)),
        _k(
            "support_devices",
            "Support devices",
            "Support devices",
            "Support devices",
            None,
            "Support Devices",
            ("",),
            ("",),
            0.0,
            (
                "[endotracheal tube] in place",
                "[right internal jugular catheter] with tip in the svc",
                "[nasogastric tube] courses below the diaphragm",
            ),
        ),
    ]
}

_SIZE_WORDS = {
    "pleural_effusion": ("small", "moderate", "large"),
    "pulmonary_edema": ("mild", "moderate", "severe"),
    "cardiomegaly": ("mild", "moderate", "marked"),
    "pneumothorax": ("small", "moderate", "large"),
    "nodule": ("small", "small", "large"),
    "hiatal_hernia": ("small", "moderate", "large"),
}
_FIXED_REGIONS = {
    "cardiomegaly": ("cardiac silhouette",),
    "wide_mediastinum": ("upper mediastinum",),
    "hiatal_hernia": ("retrocardiac",),
    "scoliosis": ("spine",),
    "support_devices": ("trachea",),
    "airway_wall_thickening": ("left hilar structures", "right hilar structures"),
}
#: Kinds an image can show (weights are the prior of each kind among abnormal images).
IMAGE_KINDS = tuple(k for k in KINDS if KINDS[k].weight > 0)


def size_word(kind: str, severity: float) -> str:
    words = _SIZE_WORDS.get(kind, ("small", "moderate", "large"))
    return words[0] if severity < 0.4 else words[1] if severity < 0.75 else words[2]


def regions_for(kind: str, side: str, zone: str) -> tuple[str, ...]:
    """Region names of a finding of ``kind`` on ``side`` ("left"/"right"/"bilateral"/"") in ``zone``."""
    if kind in _FIXED_REGIONS:
        return _FIXED_REGIONS[kind]
    sides = ("right", "left") if side == "bilateral" else (side,)
    out = []
    for s in sides:
        if zone == "apex":
            out.append(f"{s} apex")
        elif zone == "hilar" or kind == "enlarged_hilum":
            out.append(f"{s} hilar structures")
        elif kind == "fracture":
            out.append(f"{s} lateral chest wall")
        else:
            out.append(f"{s} {zone} lung zone")
    return tuple(out)


@dataclass(frozen=True)
class ImageFinding:
    """An abnormality drawn into a phantom image (what the image 'really' shows).

    Defined here, with the catalogue its ``kind`` comes from, so that :mod:`gazeprep.synth.phantom`
    (which draws it) imports this module and not the other way round.

    Attributes
    ----------
    kind:
        Finding kind, a key of :data:`KINDS` (e.g. ``"pleural_effusion"``).
    side:
        ``"left"``, ``"right"``, ``"bilateral"`` or ``""`` (midline structures).
    regions:
        Names of :func:`gazeprep.synth.phantom.region_boxes` regions where the finding lies (one per drawn ellipse).
    severity:
        0..1, scales the drawn opacity and selects the size word (small / moderate / large).
    """

    kind: str
    side: str
    regions: tuple[str, ...]
    severity: float


def sample_image_findings(rng: np.random.Generator) -> tuple[ImageFinding, ...]:
    """What one phantom image shows: 0-3 findings (30 % normal) plus a support device in 25 %."""
    found: list[ImageFinding] = []
    if rng.random() >= 0.3:
        n = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        w = np.array([KINDS[k].weight for k in IMAGE_KINDS])
        picks = rng.choice(len(IMAGE_KINDS), size=n, replace=False, p=w / w.sum())
        for i in sorted(int(x) for x in picks):
            kind = KINDS[IMAGE_KINDS[i]]
            side = str(rng.choice(kind.sides))
            zone = str(rng.choice(kind.zones))
            found.append(ImageFinding(kind.key, side, regions_for(kind.key, side, zone), float(rng.uniform(0.1, 1.0))))
    if rng.random() < 0.25:
        found.append(ImageFinding("support_devices", "", ("trachea",), 1.0))
    return tuple(found)


@dataclass(frozen=True)
class ReadingFinding:
    """A finding as one radiologist reports it.

    Attributes
    ----------
    kind, side, regions, severity:
        As in :class:`ImageFinding` (regions are box names).
    certainty:
        REFLACX certainty 1..5 of the report wording (5 = stated plainly); ``None`` for negations.
    negated:
        True for a negative statement ("no pneumothorax").
    template:
        Index of the sentence template used.
    """

    kind: str
    side: str
    regions: tuple[str, ...]
    severity: float
    certainty: int | None
    negated: bool
    template: int


def _zone_of(regions: tuple[str, ...]) -> str:
    for z in ("upper", "mid", "lower"):
        if any(f" {z} lung zone" in r for r in regions):
            return z
    return "lower"


def sample_reading_findings(
    rng: np.random.Generator,
    image_findings: tuple[ImageFinding, ...],
    allow_uncertain: bool = True,
    negatives: tuple[int, int] = (1, 3),
) -> list[ReadingFinding]:
    """One radiologist's findings for an image: each image finding is reported with probability 0.85
    (certainty 5/4/3/2 with p 0.6/0.2/0.15/0.05), sometimes a doubtful extra opacity is added, and 1-3
    negative statements (``negatives`` range) about common findings that are absent. Order: devices, lungs, pleura,
    heart/mediastinum, bones/other (the usual dictation order)."""
    out: list[ReadingFinding] = []
    present = {f.kind for f in image_findings}
    for f in image_findings:
        if f.kind != "support_devices" and rng.random() > 0.85:
            continue
        c = (
            5
            if f.kind == "support_devices" or not allow_uncertain
            else int(rng.choice([5, 4, 3, 2], p=[0.6, 0.2, 0.15, 0.05]))
        )
        out.append(ReadingFinding(f.kind, f.side, f.regions, f.severity, c, False, int(rng.integers(0, 1 << 16))))
    if allow_uncertain and rng.random() < 0.12:
        kind = str(rng.choice(["consolidation", "atelectasis"]))
        if kind not in present:
            side = str(rng.choice(["left", "right"]))
            regs = regions_for(kind, side, "lower")
            out.append(
                ReadingFinding(kind, side, regs, 0.3, int(rng.choice([3, 2])), False, int(rng.integers(0, 1 << 16)))
            )
    reported = {f.kind for f in out}
    neg_pool = [
        k
        for k in ("pneumothorax", "pleural_effusion", "consolidation", "pulmonary_edema", "cardiomegaly")
        if k not in present and k not in reported
    ]
    n_neg = min(len(neg_pool), int(rng.integers(negatives[0], negatives[1] + 1)))
    for i in sorted(rng.choice(len(neg_pool), size=n_neg, replace=False).tolist()) if n_neg else []:
        k = neg_pool[i]
        out.append(ReadingFinding(k, "", KINDS[k].negative_regions, 0.0, None, True, int(rng.integers(0, 1 << 16))))
    order = {
        k: i
        for i, k in enumerate(
            [
                "support_devices",
                "consolidation",
                "groundglass_opacity",
                "pulmonary_edema",
                "interstitial_disease",
                "atelectasis",
                "nodule",
                "mass",
                "emphysema",
                "airway_wall_thickening",
                "pleural_effusion",
                "pleural_thickening",
                "pneumothorax",
                "cardiomegaly",
                "wide_mediastinum",
                "enlarged_hilum",
                "hiatal_hernia",
                "elevated_hemidiaphragm",
                "fracture",
                "scoliosis",
            ]
        )
    }
    out.sort(key=lambda f: (order.get(f.kind, 99), f.negated))
    return out


@dataclass(frozen=True)
class PlannedMention:
    """A mention inside a planned sentence: token span [start, end) and what it refers to."""

    kind: str
    token_start: int
    token_end: int
    negated: bool
    uncertain: bool
    certainty: int | None
    regions: tuple[str, ...]
    finding_idx: int | None  # index into the reading's positive findings, None for negations


@dataclass(frozen=True)
class PlannedSentence:
    """Tokens of one dictated sentence (ending with the ``.`` token) and its mentions."""

    tokens: tuple[str, ...]
    mentions: tuple[PlannedMention, ...]


def _side_word(kind: str, side: str, template: str) -> str:
    if side == "bilateral":
        return "bibasilar" if "basilar" in template else "bilateral"
    return side


def _fill(template: str, kind: str, side: str, zone: str, severity: float) -> tuple[list[str], list[tuple[int, int]]]:
    """Render a bracketed template into tokens and mention spans."""
    zone_word = zone
    if kind in ("consolidation", "nodule", "mass") and "lobe" in template:
        zone_word = {"upper": "upper", "mid": "middle" if side == "right" else "upper", "lower": "lower"}.get(
            zone, zone
        )
    text = template.format(size=size_word(kind, severity), side=_side_word(kind, side, template), zone=zone_word)
    if side == "bilateral" and "basilar" in template:
        text = text.replace("bibasilar basilar", "bibasilar")
    tokens: list[str] = []
    spans: list[tuple[int, int]] = []
    start = None
    for raw in text.split():
        w = raw
        if w.startswith("["):
            start = len(tokens)
            w = w[1:]
        close = w.endswith("]")
        if close:
            w = w[:-1]
        if w:
            tokens.append(w)
        if close and start is not None:
            spans.append((start, len(tokens)))
            start = None
    if kind == "pleural_effusion" and side == "bilateral":
        tokens = [("effusions" if t == "effusion" else t) for t in tokens]
        if tokens[:3] == ["there", "is", "a"]:
            tokens = ["there", "are"] + tokens[3:]
            spans = [(a - 1, b - 1) for a, b in spans]
    return tokens, spans


def plan_sentences(rng: np.random.Generator, findings: list[ReadingFinding]) -> list[PlannedSentence]:
    """Turn a reading's findings into dictated sentences (tokens with mention spans).

    Positive findings get a size/side/zone template with the certainty wording of
    :data:`CERTAINTY_WORDS`; negations use the kind's negative templates (a compound
    ``no pleural effusion or pneumothorax`` covers two kinds). Reports without positive findings open
    with ``the lungs are clear``. Every sentence ends with a ``.`` token.
    """
    sentences: list[PlannedSentence] = []
    positives = [f for f in findings if not f.negated]
    if not positives:
        sentences.append(PlannedSentence(("the", "lungs", "are", "clear", "."), ()))
    negated_done: set[str] = set()
    for fi, f in enumerate(findings):
        kind = KINDS[f.kind]
        if f.negated:
            if f.kind in negated_done:
                continue
            choices = list(kind.negatives)
            tpl = choices[f.template % len(choices)]
            tokens, spans = _fill(tpl, f.kind, "", "", 0.0)
            mentions = []
            span_kinds = [f.kind] if len(spans) == 1 else [f.kind, "pneumothorax"]
            if len(spans) > 1 and (
                "pneumothorax" in negated_done or any(g.kind == "pneumothorax" and not g.negated for g in findings)
            ):
                tpl = choices[0]
                tokens, spans = _fill(tpl, f.kind, "", "", 0.0)
                span_kinds = [f.kind]
            for (a, b), k in zip(spans, span_kinds):
                mentions.append(PlannedMention(k, a, b, True, False, None, KINDS[k].negative_regions, None))
                negated_done.add(k)
            sentences.append(PlannedSentence(tuple(tokens) + (".",), tuple(mentions)))
            continue
        choices = list(kind.templates)
        pre, post = CERTAINTY_WORDS[f.certainty or 5]
        if pre:  # "possible ..." needs a template that starts with the finding, not "the"/"there is"
            choices = [t for t in choices if not t.startswith(("the ", "there ", "findings "))] or choices
        tpl = choices[f.template % len(choices)]
        tokens, spans = _fill(tpl, f.kind, f.side, _zone_of(f.regions), f.severity)
        shift = len(pre)
        tokens = list(pre) + tokens + list(post)
        a, b = spans[0]
        m = PlannedMention(f.kind, a + shift, b + shift, False, (f.certainty or 5) < 5, f.certainty, f.regions, fi)
        sentences.append(PlannedSentence(tuple(tokens) + (".",), (m,)))
    if positives and rng.random() < 0.3:
        sentences.append(PlannedSentence(("no", "other", "acute", "abnormality", "."), ()))
    return sentences


def label_for(kind: str, labelset: str) -> str | None:
    """The label column of ``kind`` in ``labelset`` (``"reflacx1"``, ``"reflacx23"``, ``"egd"``,
    ``"chexpert"``), or None when the set has no column for it (REFLACX then uses ``Other``)."""
    k = KINDS[kind]
    return {"reflacx1": k.p1, "reflacx23": k.p23, "egd": k.egd, "chexpert": k.chexpert}[labelset]
