"""Synthetic REFLACX release (``reflacx-xray-localization`` 1.0.0 layout, FORMATS.md section 1).

Layout written under ``out``::

    main_data/metadata_phase_{1,2,3}.csv
    main_data/<id>/{fixations.csv, timestamps_transcription.csv, transcription.txt}   (not discarded)
    main_data/<id>/{chest_bounding_box.csv, anomaly_location_ellipses.csv}           (always)
    gaze_data/<id>/gaze.csv                      (for the first ``gaze_cases`` non-discarded readings)

Phases 1 and 2 show each image to 5 readers (same trial number, different ids), phase 3 one reader
per image. All CSVs have CRLF endings, ints without ``.0``, empty fields for NaN, booleans as
``True``/``False``.

Screen model (FORMATS 1.5): 3840 x 2160 screen, image area right of the 660-px control strip, drawn
from x = 661, y = 0 at scale ``min(3179 / W, 2160 / H) * zoom``. The shown crop
(``*_shown_from_image``) and its screen rectangle (``*_in_screen_coordinates``) change when the reader
zooms or pans; ``angular_resolution = round(ppd * (crop width px) / (screen width px))`` with the
EyeLink ``ppd`` about 94 screen px per degree. Looks at the control strip map through the same
rectangle formula to negative image x.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np

from gazeprep.synth.behaviour import (
    FocusSegment,
    Timing,
    focus_segments,
    scanpath,
    search_visits,
    time_tokens,
    wander_boxes,
)
from gazeprep.synth.findings import (
    KINDS,
    REFLACX_P1_LABELS,
    REFLACX_P23_LABELS,
    PlannedSentence,
    ReadingFinding,
    label_for,
    plan_sentences,
    sample_reading_findings,
)
from gazeprep.synth.images import ImageRef, invent_images, load_mimic_images
from gazeprep.synth.io import bool_strings, write_csv, write_text
from gazeprep.synth.phantom import chest_box, params_for_image, region_boxes
from gazeprep.synth.truth import Ellipse, Mention, ReflacxCase, Sentence, SynthReflacx

__all__ = [
    "generate_reflacx",
    "FIXATION_COLUMNS",
    "GAZE_COLUMNS",
    "METADATA_FIXED_COLUMNS",
    "view_rects",
    "join_tokens",
]

CRLF = "\r\n"
SCREEN_W, SCREEN_H = 3840, 2160
IMAGE_X0 = 661  # first screen column of the image area (control strip is x < 660)
AREA_W = SCREEN_W - IMAGE_X0  # 3179
METADATA_FIXED_COLUMNS = (
    "id",
    "split",
    "eye_tracking_data_discarded",
    "image",
    "dicom_id",
    "subject_id",
    "image_size_x",
    "image_size_y",
)
RECT_COLUMNS = (
    "xmin_shown_from_image",
    "ymin_shown_from_image",
    "xmax_shown_from_image",
    "ymax_shown_from_image",
    "xmin_in_screen_coordinates",
    "ymin_in_screen_coordinates",
    "xmax_in_screen_coordinates",
    "ymax_in_screen_coordinates",
)
FIXATION_COLUMNS = (
    "timestamp_start_fixation",
    "timestamp_end_fixation",
    "x_position",
    "y_position",
    "pupil_area_normalized",
    "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree",
    "window_width",
    "window_level",
) + RECT_COLUMNS
GAZE_COLUMNS = (
    "timestamp_sample",
    "x_position",
    "y_position",
    "pupil_area_normalized",
    "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree",
    "window_width",
    "window_level",
) + RECT_COLUMNS
PHYSIONET_PREFIX = "physionet.org/files/mimic-cxr/2.0.0/"
Box = tuple[float, float, float, float]  # (xmin, ymin, xmax, ymax) image px


def join_tokens(tokens: list[str]) -> str:
    """``transcription.txt`` from tokens: joined by spaces, spaces before ``.`` and ``,`` removed."""
    return " ".join(tokens).replace(" .", ".").replace(" ,", ",")


def view_rects(W: int, H: int, zoom: float, cx: float, cy: float) -> tuple[int, ...]:
    """Shown crop and its screen rectangle for a view.

    Parameters
    ----------
    W, H:
        Image size (px).
    zoom:
        1 = whole image fitted to the 3179 x 2160 image area; >1 magnifies.
    cx, cy:
        Requested crop centre (image px); the crop is kept inside the image.

    Returns
    -------
    (xmin_img, ymin_img, xmax_img, ymax_img, xmin_scr, ymin_scr, xmax_scr, ymax_scr) ints.
    """
    s = min(AREA_W / W, SCREEN_H / H) * zoom
    cw, ch = AREA_W / s, SCREEN_H / s
    if cw >= W:
        x0, x1 = 0.0, float(W)
    else:
        x0 = float(np.clip(cx - cw / 2, 0, W - cw))
        x1 = x0 + cw
    if ch >= H:
        y0, y1 = 0.0, float(H)
    else:
        y0 = float(np.clip(cy - ch / 2, 0, H - ch))
        y1 = y0 + ch
    xi0, xi1, yi0, yi1 = round(x0), round(x1), round(y0), round(y1)
    sx0, sy0 = IMAGE_X0, 0
    sx1 = min(SCREEN_W, sx0 + round((xi1 - xi0) * s))
    sy1 = min(SCREEN_H, sy0 + round((yi1 - yi0) * s))
    return (xi0, yi0, xi1, yi1, sx0, sy0, sx1, sy1)


def _phase_plan(n: int) -> tuple[int, int, int]:
    """Images in phase 1 and 2 (5 readers each) and readings in phase 3 for ``n`` readings."""
    if n >= 11:
        k1 = min(59, max(1, round(n * 0.097 / 5)))
        k2 = min(50, max(1, round(n * 0.082 / 5)))
    elif n >= 6:
        k1, k2 = 1, 0
    else:
        k1, k2 = 0, 0
    return k1, k2, n - 5 * (k1 + k2)


def _case_ids(rng: np.random.Generator, phases: list[tuple[int, int]]) -> list[str]:
    r = rng.choice(1_000_000, size=len(phases), replace=False)
    return [f"P{p}{t:02}R{int(x):06}" for (p, t), x in zip(phases, r)]


def generate_reflacx(
    out: str | Path,
    cases: int,
    seed: int,
    mimic_root: str | Path | None = None,
    gaze_cases: int = 1,
    progress: bool = False,
) -> SynthReflacx:
    """Write a synthetic REFLACX release with ``cases`` readings under ``out``.

    Parameters
    ----------
    out:
        Release root (created).
    cases:
        Number of readings (metadata rows over the three phases).
    seed:
        Random seed; the same arguments give byte-identical files.
    mimic_root:
        A MIMIC root written by :func:`gazeprep.synth.generate_mimic`: readings then use its frontal
        images (real sizes, ids, splits). Without it, image ids/sizes are invented (~2500 x 3000), no
        image files exist, and readings are long (~200-400 fixations: ~30-70 s of silent viewing
        before the dictation); with it readings are short (sample-data size).
    gaze_cases:
        How many non-discarded readings (in file order) get a 1 kHz ``gaze.csv`` (~25-90k rows
        each); the other readings have an empty ``gaze_data/<id>/`` folder.

    Returns
    -------
    SynthReflacx
        Ground truth of every value written.
    """
    if cases < 1:
        raise ValueError("cases must be >= 1")
    out = Path(out)
    rng = np.random.default_rng([int(seed), 0x5EF1AC])
    long_mode = mimic_root is None
    rows = _readings(rng, cases, mimic_root)
    main = out / "main_data"
    main.mkdir(parents=True, exist_ok=True)
    (out / "gaze_data").mkdir(parents=True, exist_ok=True)
    truth_cases: list[ReflacxCase] = []
    gaze_left = gaze_cases
    iterator: Iterable[_Reading] = rows
    if progress:
        from tqdm import tqdm

        iterator = tqdm(rows, desc="reflacx", unit="case")
    for cid, (phase, trial, img), disc in iterator:
        case_rng = np.random.default_rng([int(seed), 0x5EF1AC, int(cid[5:]), phase, trial])
        with_gaze = (not disc) and gaze_left > 0
        if with_gaze:
            gaze_left -= 1
        c = _generate_case(
            case_rng,
            out,
            cid,
            phase,
            trial,
            img,
            disc,
            with_gaze,
            long_mode,
            first_gaze=with_gaze and gaze_left == gaze_cases - 1,
        )
        truth_cases.append(c)
    label_columns = {1: REFLACX_P1_LABELS, 2: REFLACX_P23_LABELS, 3: REFLACX_P23_LABELS}
    for phase in (1, 2, 3):
        _write_metadata(
            main / f"metadata_phase_{phase}.csv", [c for c in truth_cases if c.phase == phase], label_columns[phase]
        )
    return SynthReflacx(out, int(seed), truth_cases, label_columns)


#: One reading of the release: (case id, (phase, trial, image), eye-tracking data discarded).
_Reading = tuple[str, tuple[int, int, ImageRef], bool]


def _readings(rng: np.random.Generator, cases: int, mimic_root: str | Path | None) -> list[_Reading]:
    """The release's ``cases`` readings in metadata file order (phases 1 and 2 by id, phase 3 by image
    path): images (from ``mimic_root`` or invented), 5 readers per image in phases 1-2, ids and the
    discarded readings."""
    k1, k2, n3 = _phase_plan(cases)
    n_images = k1 + k2 + n3
    if mimic_root is not None:
        pool = load_mimic_images(mimic_root)
        order = rng.permutation(len(pool))
        images = [pool[int(order[i % len(pool)])] for i in range(n_images)]
    else:
        images = invent_images(rng, n_images)
    # (phase, trial, image) per reading
    plan: list[tuple[int, int, ImageRef]] = []
    for j in range(k1):
        plan += [(1, j + 2, images[j])] * 5
    for j in range(k2):
        plan += [(2, j + 1, images[k1 + j])] * 5
    for j in range(n3):
        plan.append((3, 0, images[k1 + k2 + j]))
    ids = _case_ids(rng, [(p, t) for p, t, _ in plan])
    n_disc = max(1, round(cases * 0.007)) if cases >= 8 else 0
    discarded = set(int(i) for i in rng.choice(cases, size=n_disc, replace=False)) if n_disc else set()
    rows = list(zip(ids, plan, [i in discarded for i in range(cases)]))

    def sort_key(r: _Reading) -> tuple[int, str, str]:
        cid, (p, t, img), _ = r
        return (p, cid if p < 3 else PHYSIONET_PREFIX + img.rel_path, cid)

    rows.sort(key=sort_key)
    return rows


def _write_metadata(path: Path, cases: list[ReflacxCase], labels: tuple[str, ...]) -> None:
    cols: dict[str, object] = {
        "id": [c.case_id for c in cases],
        "split": [c.split for c in cases],
        "eye_tracking_data_discarded": bool_strings(c.discarded for c in cases),
        "image": [c.image for c in cases],
        "dicom_id": [c.dicom_id for c in cases],
        "subject_id": np.array([c.subject_id for c in cases], dtype=np.int64),
        "image_size_x": np.array([c.image_width for c in cases], dtype=np.int64),
        "image_size_y": np.array([c.image_height for c in cases], dtype=np.int64),
    }
    for lab in labels:
        if lab in ("Support devices", "Quality issue"):
            cols[lab] = bool_strings(c.labels[lab] for c in cases)
        elif lab == "Other":
            cols[lab] = [c.labels[lab] for c in cases]
        else:
            cols[lab] = np.array([c.labels[lab] for c in cases], dtype=np.int64)
    if not cases:  # header-only file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((",".join(cols) + CRLF).encode())
        return
    write_csv(path, cols, CRLF)


def _ellipse_from_box(
    rng: np.random.Generator, box: tuple[float, float, float, float], W: int, H: int
) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
    cx += rng.uniform(-0.08, 0.08) * hw
    cy += rng.uniform(-0.08, 0.08) * hh
    hw *= rng.uniform(0.95, 1.25)
    hh *= rng.uniform(0.95, 1.25)
    xa = int(np.clip(round(cx - hw), 0, W - 1))
    xb = int(np.clip(round(cx + hw), 0, W - 1))
    ya = int(np.clip(round(cy - hh), 0, H - 1))
    yb = int(np.clip(round(cy + hh), 0, H - 1))
    return xa, ya, max(xb, xa + 1), max(yb, ya + 1)


class _Views(NamedTuple):
    """The reader's views (zoom / pan / windowing), piecewise constant in time: view ``i`` holds from
    ``times[i]`` (s) on; ``rects`` the 8 :data:`RECT_COLUMNS` ints per view, ``window`` its (width, level),
    ``zoomed`` whether it is magnified."""

    times: np.ndarray
    rects: np.ndarray
    window: np.ndarray
    zoomed: np.ndarray


def _generate_case(
    rng: np.random.Generator,
    out: Path,
    cid: str,
    phase: int,
    trial: int,
    img: ImageRef,
    disc: bool,
    with_gaze: bool,
    long_mode: bool,
    first_gaze: bool,
) -> ReflacxCase:
    """Write one reading's folders and return its truth.

    Draws from ``rng`` in a fixed order, which the files depend on: chest box, findings and sentences,
    ellipses, dictation timing and focus, scanpath, views, fixation details, gaze samples. A discarded
    reading stops after its ellipses.
    """
    columns = REFLACX_P1_LABELS if phase == 1 else REFLACX_P23_LABELS
    labelset = "reflacx1" if phase == 1 else "reflacx23"
    case, sentences, boxes = _reading(rng, cid, phase, trial, img, disc, long_mode, labelset, columns)
    folder = out / "main_data" / cid
    folder.mkdir(parents=True, exist_ok=True)
    (out / "gaze_data" / cid).mkdir(parents=True, exist_ok=True)
    chest = case.chest_box
    write_csv(
        folder / "chest_bounding_box.csv",
        {"xmin": [chest[0]], "ymin": [chest[1]], "xmax": [chest[2]], "ymax": [chest[3]]},
        CRLF,
    )
    _write_ellipses(folder / "anomaly_location_ellipses.csv", case.ellipses, columns)
    if disc:
        return case

    silent, timing, segs, boxes_of_mention = _dictation(rng, case, sentences, boxes, long_mode, labelset)
    write_csv(
        folder / "timestamps_transcription.csv",
        {"word": case.tokens, "timestamp_start_word": timing.start, "timestamp_end_word": timing.end},
        CRLF,
    )
    write_text(folder / "transcription.txt", case.transcription)

    negative_start = first_gaze or rng.random() < 0.25
    t0 = -rng.uniform(0.005, 0.25) if negative_start else rng.uniform(0.05, 0.4)
    t_stop = float(timing.end[-1]) + rng.uniform(0.5, 2.5)
    W, H = img.width, img.height
    wander = wander_boxes(boxes, W, H)
    mentions = case.mentions
    targets = [(i, boxes_of_mention[i]) for i, m in enumerate(mentions) if not m.negated and boxes_of_mention[i]]
    visits = search_visits(rng, max(t0, 0.0), segs[0].t_start if segs else silent, targets)
    sp = scanpath(
        rng, t0, t_stop, sorted(visits + segs, key=lambda g: g.t_start), wander, [0.38, 0.38, 0.12, 0.06, 0.06]
    )
    segs = sorted(visits + segs, key=lambda g: g.t_start)
    target = np.where(sp["segment"] >= 0, np.array([s.mention for s in segs] + [-1])[sp["segment"]], -1)

    views = _views(rng, W, H, t0, t_stop, segs, wander)
    res_x, res_y = rng.uniform(92.0, 96.0), rng.uniform(92.0, 96.0)
    fix, target = _fixation_table(rng, sp, target, views, res_x, res_y)
    case.fixations = fix
    case.fixation_target = target.astype(np.int64)
    write_csv(folder / "fixations.csv", fix, CRLF)
    if with_gaze:
        case.gaze = _gaze_samples(rng, fix, views.times, views.rects, views.window, res_x, res_y)
        write_csv(out / "gaze_data" / cid / "gaze.csv", _gaze_columns_for_csv(case.gaze), CRLF)
    return case


def _reading(
    rng: np.random.Generator,
    cid: str,
    phase: int,
    trial: int,
    img: ImageRef,
    disc: bool,
    long_mode: bool,
    labelset: str,
    columns: tuple[str, ...],
) -> tuple[ReflacxCase, list[PlannedSentence], dict[str, Box]]:
    """The reading's truth before dictation: the reader's chest box, the findings' metadata labels and
    ellipses; with the planned sentences and the image's region boxes (image px)."""
    W, H = img.width, img.height
    params, image_findings = params_for_image(img.dicom_id)
    boxes = region_boxes(params, H, W)
    # chest box: reader-drawn rectangle around lungs + heart
    cb = chest_box(params, H, W)
    jit = rng.uniform(-0.015, 0.015, 4) * np.array([W, H, W, H])
    chest = tuple(int(round(v)) for v in np.array(cb) + jit)
    chest = (
        min(chest[0], chest[2] - 1),
        min(chest[1], chest[3] - 1),
        max(chest[2], chest[0] + 1),
        max(chest[3], chest[1] + 1),
    )
    findings = sample_reading_findings(rng, image_findings, negatives=(2, 4) if long_mode else (1, 3))
    quality = phase == 1 and rng.random() < 0.05
    sentences = plan_sentences(rng, findings)
    if quality:
        sentences.insert(0, PlannedSentence(("the", "study", "is", "limited", "by", "patient", "rotation", "."), ()))
    labels, ellipses = _labels_and_ellipses(rng, findings, quality, boxes, W, H, labelset, columns)
    case = ReflacxCase(
        case_id=cid,
        phase=phase,
        trial=trial,
        split=img.split,
        discarded=disc,
        image=PHYSIONET_PREFIX + img.rel_path,
        dicom_id=img.dicom_id,
        subject_id=img.subject_id,
        study_id=img.study_id,
        image_width=W,
        image_height=H,
        labels=labels,
        chest_box=chest,
        ellipses=ellipses,
        image_findings=image_findings,
        params=params,
    )
    return case, sentences, boxes


def _labels_and_ellipses(
    rng: np.random.Generator,
    findings: list[ReadingFinding],
    quality: bool,
    boxes: dict[str, Box],
    W: int,
    H: int,
    labelset: str,
    columns: tuple[str, ...],
) -> tuple[dict[str, object], list[Ellipse]]:
    """Metadata label columns (0-5 certainty, bool, or the ``Other`` text) and the ellipses drawn around
    the regions of the positive findings."""
    labels: dict[str, object] = {}
    for lab in columns:
        labels[lab] = False if lab in ("Support devices", "Quality issue") else (None if lab == "Other" else 0)
    if quality:
        labels["Quality issue"] = True
    other_texts: set[str] = set()
    ellipses: list[Ellipse] = []
    for f in findings:
        if f.negated:
            continue
        col = label_for(f.kind, labelset) or "Other"
        cert = int(f.certainty or 5)
        if col == "Support devices":
            labels[col] = True
            if rng.random() < 0.4:
                e = _ellipse_from_box(rng, boxes["trachea"], W, H)
                ellipses.append(Ellipse(*e, 5, (col,), f.kind))
            continue
        if col == "Other":
            other_texts.add(KINDS[f.kind].other_text)
        else:
            labels[col] = max(int(cast(int, labels[col])), cert)  # a 0-5 certainty column
        for r in f.regions:
            e = _ellipse_from_box(rng, boxes[r], W, H)
            ellipses.append(Ellipse(*e, cert, (col,), f.kind))
    if other_texts:
        labels["Other"] = "|".join(sorted(other_texts))
    return labels, ellipses


def _dictation(
    rng: np.random.Generator,
    case: ReflacxCase,
    sentences: list[PlannedSentence],
    boxes: dict[str, Box],
    long_mode: bool,
    labelset: str,
) -> tuple[float, Timing, list[FocusSegment], list[list[Box]]]:
    """Time the sentences' tokens and fill the case's transcript, sentences and mentions (with the focus
    span of each). Returns (silent viewing before the first word in s, the token timing, the focus
    segments, the region boxes of each mention)."""
    silent = rng.uniform(10.0, 22.0) if long_mode else rng.uniform(2.0, 6.0)
    pause = (7.0, 15.0) if long_mode else (0.4, 2.0)
    timing = time_tokens(rng, sentences, silent, pause)
    tokens = [t for s in sentences for t in s.tokens]
    mentions: list[Mention] = []
    truth_sentences: list[Sentence] = []
    boxes_of_mention: list[list[Box]] = []
    for si, s in enumerate(sentences):
        a = int(timing.sentence_token_start[si])
        b = int(timing.sentence_token_end[si])
        m_idx = []
        for pm in s.mentions:
            mention_col = label_for(pm.kind, labelset)
            if mention_col is None and not pm.negated:
                mention_col = "Other"
            mb = tuple(boxes[r] for r in pm.regions)
            boxes_of_mention.append(list(mb))
            m_idx.append(len(mentions))
            mentions.append(
                Mention(
                    kind=pm.kind,
                    label=mention_col,
                    phrase=" ".join(s.tokens[pm.token_start : pm.token_end]),
                    sentence_idx=si,
                    token_start=a + pm.token_start,
                    token_end=a + pm.token_end,
                    t_start_s=float(timing.start[a + pm.token_start]),
                    t_end_s=float(timing.end[a + pm.token_end - 1]),
                    negated=pm.negated,
                    uncertain=pm.uncertain,
                    certainty=pm.certainty,
                    regions=pm.regions,
                    boxes_px=mb,
                )
            )
        truth_sentences.append(
            Sentence(join_tokens(list(s.tokens)), a, b, float(timing.start[a]), float(timing.end[b - 1]), tuple(m_idx))
        )
    segs = focus_segments(rng, sentences, timing, boxes_of_mention)
    for sg in segs:
        mentions[sg.mention].focus_start_s = round(sg.t_start, 3)
        mentions[sg.mention].focus_end_s = round(sg.t_end, 3)
    case.tokens, case.token_start_s, case.token_end_s = tokens, timing.start, timing.end
    case.transcription, case.sentences, case.mentions = join_tokens(tokens), truth_sentences, mentions
    return silent, timing, segs, boxes_of_mention


def _views(
    rng: np.random.Generator,
    W: int,
    H: int,
    t0: float,
    t_stop: float,
    segs: list[FocusSegment],
    wander: list[Box],
) -> _Views:
    """The whole image at first; half of the readers zoom in once or twice (on the region they focus on
    then) and back out, some adjust window/level from some time on."""
    times = [-1e9]
    views = [(1.0, W / 2, H / 2, 1.0, 0.5)]
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 3))):
            ts = rng.uniform(t0 + 1.0, max(t0 + 1.5, t_stop - 4.0))
            te = ts + rng.uniform(3.0, 9.0)
            if ts <= times[-1] + 0.5:
                continue
            tm = (ts + te) / 2
            act = [s for s in segs if s.t_start <= tm <= s.t_end]
            bx = act[0].boxes[0] if act else wander[int(rng.integers(0, 2))]
            z = float(rng.uniform(1.4, 2.6))
            prev = views[-1]
            times += [ts, te]
            views += [
                (z, (bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2, prev[3], prev[4]),
                (1.0, W / 2, H / 2, prev[3], prev[4]),
            ]
    if rng.random() < 0.3:  # window/level adjustment from some time on
        tw = rng.uniform(t0, t_stop)
        ww, wl = round(float(rng.uniform(0.55, 0.98)), 5), round(float(rng.uniform(0.42, 0.58)), 5)
        k = int(np.searchsorted(np.array(times), tw, side="right"))
        times.insert(k, tw)
        views.insert(k, views[k - 1])
        views = [v if i < k else (v[0], v[1], v[2], ww, wl) for i, v in enumerate(views)]
    return _Views(
        times=np.array(times),
        rects=np.array([view_rects(W, H, v[0], v[1], v[2]) for v in views], dtype=np.int64),
        window=np.array([(v[3], v[4]) for v in views], dtype=np.float64),
        zoomed=np.array([v[0] > 1.0 for v in views]),
    )


def _fixation_table(
    rng: np.random.Generator,
    sp: dict[str, np.ndarray],
    target: np.ndarray,
    views: _Views,
    res_x: float,
    res_y: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``fixations.csv`` columns of the scanpath ``sp`` seen through ``views`` (``res_*``: EyeLink
    screen px per degree), and the fixations' targets (-1 for glances at the control strip)."""
    n = len(sp["start"])
    start = np.round(sp["start"], 3) + 0.0
    end = np.round(sp["end"], 3) + 0.0
    vi = np.searchsorted(views.times, start, side="right") - 1
    rects = views.rects[vi]
    x, y = sp["x"].copy(), sp["y"].copy()
    zoomed = views.zoomed[vi]
    # keep fixations inside the shown crop while zoomed
    mx = 0.03 * (rects[:, 2] - rects[:, 0])
    my = 0.03 * (rects[:, 3] - rects[:, 1])
    x = np.where(zoomed, np.clip(x, rects[:, 0] + mx, rects[:, 2] - mx), x)
    y = np.where(zoomed, np.clip(y, rects[:, 1] + my, rects[:, 3] - my), y)
    # looks at the control strip ("next" button) go through the screen->image rectangle formula
    off = (~zoomed) & (rng.random(n) < 0.015)
    if n and not zoomed[-1] and rng.random() < 0.6:
        off[-1] = True
    if off.any():
        xs = rng.uniform(20, 640, n)
        ys = rng.uniform(1040, 1115, n)
        rf = rects.astype(np.float64)
        xi = (rf[:, 2] - rf[:, 0]) / (rf[:, 6] - rf[:, 4]) * (xs - rf[:, 4]) + rf[:, 0]
        yi = (rf[:, 3] - rf[:, 1]) / (rf[:, 7] - rf[:, 5]) * (ys - rf[:, 5]) + rf[:, 1]
        x = np.where(off, xi, x)
        y = np.where(off, yi, y)
        target = np.where(off, -1, target)
    px_scale_x = (rects[:, 2] - rects[:, 0]) / (rects[:, 6] - rects[:, 4])
    px_scale_y = (rects[:, 3] - rects[:, 1]) / (rects[:, 7] - rects[:, 5])
    pupil = np.round(1.0 + 0.08 * np.sin(np.cumsum(rng.normal(0, 0.3, n))) + rng.normal(0, 0.02, n), 3)
    fix = {
        "timestamp_start_fixation": start,
        "timestamp_end_fixation": end,
        "x_position": np.round(x).astype(np.int64),
        "y_position": np.round(y).astype(np.int64),
        "pupil_area_normalized": pupil,
        "angular_resolution_x_pixels_per_degree": np.round(res_x * px_scale_x).astype(np.int64),
        "angular_resolution_y_pixels_per_degree": np.round(res_y * px_scale_y).astype(np.int64),
        "window_width": views.window[vi, 0],
        "window_level": views.window[vi, 1],
    }
    for j, name in enumerate(RECT_COLUMNS):
        fix[name] = rects[:, j].copy()
    return fix, target


def _gaze_samples(
    rng: np.random.Generator,
    fix: dict[str, np.ndarray],
    times_arr: np.ndarray,
    rect_table: np.ndarray,
    win_table: np.ndarray,
    res_x: float,
    res_y: float,
) -> dict[str, np.ndarray]:
    """1 kHz samples consistent with the fixations: jitter around each fixation, linear saccades
    between them, blinks (80-250 ms) with empty position/pupil/resolution fields. The first sample
    is up to 0.2 s before the first fixation (so it can be negative)."""
    fs = np.round(fix["timestamp_start_fixation"] * 1000).astype(np.int64)
    fe = np.round(fix["timestamp_end_fixation"] * 1000).astype(np.int64)
    k0 = int(fs[0] - rng.integers(0, 200))
    k1 = int(fe[-1])
    k = np.arange(k0, k1 + 1)
    t = np.round(k / 1000.0, 3) + 0.0
    n = len(k)
    j = np.clip(np.searchsorted(fs, k, side="right") - 1, 0, len(fs) - 1)
    fx = fix["x_position"].astype(np.float64)
    fy = fix["y_position"].astype(np.float64)
    in_fix = (k >= fs[j]) & (k <= fe[j])
    nxt = np.clip(j + 1, 0, len(fs) - 1)
    frac = np.clip((k - fe[j]) / np.maximum(fs[nxt] - fe[j], 1), 0, 1)
    x = np.where(in_fix, fx[j], fx[j] + (fx[nxt] - fx[j]) * frac)
    y = np.where(in_fix, fy[j], fy[j] + (fy[nxt] - fy[j]) * frac)
    vi = np.searchsorted(times_arr, t, side="right") - 1
    rects = rect_table[vi]
    sx = (rects[:, 2] - rects[:, 0]) / (rects[:, 6] - rects[:, 4])
    sy = (rects[:, 3] - rects[:, 1]) / (rects[:, 7] - rects[:, 5])
    x = x + rng.normal(0, 4.0, n) * sx  # ~4 screen px of tracker noise
    y = y + rng.normal(0, 4.0, n) * sy
    pupil = np.round(1.0 + 0.05 * np.sin(k / 3000.0) + rng.normal(0, 0.01, n), 3)
    blink = np.zeros(n, dtype=bool)
    n_blinks = max(1, int(n / 4000))
    for b0 in rng.integers(0, n, n_blinks):
        blink[b0 : b0 + int(rng.integers(80, 250))] = True
    xr = np.round(x)
    yr = np.round(y)
    ax = np.round(res_x * sx)
    ay = np.round(res_y * sy)
    nan = np.nan
    g = {
        "timestamp_sample": t,
        "x_position": np.where(blink, nan, xr),
        "y_position": np.where(blink, nan, yr),
        "pupil_area_normalized": np.where(blink, nan, pupil),
        "angular_resolution_x_pixels_per_degree": np.where(blink, nan, ax),
        "angular_resolution_y_pixels_per_degree": np.where(blink, nan, ay),
        "window_width": win_table[vi, 0],
        "window_level": win_table[vi, 1],
    }
    for jj, name in enumerate(RECT_COLUMNS):
        g[name] = rects[:, jj].copy()
    return g


_GAZE_INT_COLUMNS = (
    "x_position",
    "y_position",
    "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree",
)


def _gaze_columns_for_csv(g: dict[str, np.ndarray]) -> dict[str, object]:
    """Integer-valued gaze columns with NaN -> nullable Int64 (written without ``.0``)."""
    import polars as pl

    cols: dict[str, object] = {}
    for name, arr in g.items():
        if name in _GAZE_INT_COLUMNS:
            cols[name] = pl.Series(name, arr).fill_nan(None).cast(pl.Int64)
        else:
            cols[name] = arr
    return cols


def _write_ellipses(path: Path, ellipses: list[Ellipse], columns: tuple[str, ...]) -> None:
    header = ["xmin", "ymin", "xmax", "ymax", "certainty", *columns]
    lines = [",".join(header)]
    for e in ellipses:
        vals = [str(e.xmin), str(e.ymin), str(e.xmax), str(e.ymax), str(e.certainty)]
        vals += ["True" if c in e.labels else "False" for c in columns]
        lines.append(",".join(vals))
    write_text(path, CRLF.join(lines) + CRLF)
