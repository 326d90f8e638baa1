"""A parametric chest phantom: anatomy geometry, masks, named regions and a rendered radiograph.

All geometry lives in *normalised* image coordinates ``u = x / W`` (column) and ``v = y / H`` (row),
origin top-left, so the same :class:`PhantomParams` describe an image at any size. The image is a
frontal (PA/AP) view as a radiologist reads it: the **patient's right lung is on the image left**
and the **patient's left lung is on the image right**.

Public functions
----------------
* :func:`sample_params` - draw plausible parameters from a numpy ``Generator``.
* :func:`params_for_image` - deterministic parameters and image findings for one dicom id.
* :func:`phantom_masks` - boolean masks (``left_lung``, ``right_lung``, ``mediastinum``,
  ``aortic_knob``) at H x W; the EGD-CXR mask PNGs are written from these.
* :func:`region_boxes` - named anatomical boxes in image pixels (the 17 EGD-CXR ``bbox_name`` values
  plus a few extra names used by findings).
* :func:`chest_box` - the REFLACX ``chest_bounding_box.csv`` rectangle (lungs + heart).
* :func:`render_phantom` - a float image in [0, 1] (1 = bright/dense) with lungs, heart,
  mediastinum, aortic knob, ribs, spine, clavicles, diaphragm, noise and the image findings drawn in.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gazeprep.synth.findings import ImageFinding, sample_image_findings

__all__ = [
    "EGD_BBOX_NAMES",
    "MASK_STRUCTURES",
    "ImageFinding",
    "PhantomParams",
    "chest_box",
    "params_for_image",
    "phantom_masks",
    "region_boxes",
    "render_phantom",
    "sample_params",
    "seed_from_text",
]

#: Structures returned by :func:`phantom_masks` (EGD-CXR mask file stems, spelled correctly here;
#: the EGD writer maps ``mediastinum`` to the release's ``mediastanum.png``).
MASK_STRUCTURES = ("left_lung", "right_lung", "mediastinum", "aortic_knob")

#: The 17 anatomical box names of EGD-CXR ``bounding_boxes.csv`` (sorted as written).
EGD_BBOX_NAMES = tuple(
    sorted(
        [
            "cardiac silhouette",
            "left clavicle",
            "right clavicle",
            "left costophrenic angle",
            "right costophrenic angle",
            "left hilar structures",
            "right hilar structures",
            "left upper lung zone",
            "left mid lung zone",
            "left lower lung zone",
            "right upper lung zone",
            "right mid lung zone",
            "right lower lung zone",
            "trachea",
            "upper mediastinum",
            "left lung",
            "right lung",
        ]
    )
)


@dataclass(frozen=True)
class PhantomParams:
    """Geometry and appearance of one phantom, in normalised coordinates (u = x/W, v = y/H).

    Attributes
    ----------
    midline_u:
        Column of the spine / trachea.
    lung_top_v, lung_bottom_right_v, lung_bottom_left_v:
        Apex row and diaphragm rows of the lungs (the patient's left hemidiaphragm sits a bit lower).
    lung_half_width_right, lung_half_width_left:
        Half widths of the lung outlines (right lung = image left).
    lung_gap:
        Half gap between the lungs at the midline (mediastinum shadow).
    heart_cu, heart_cv, heart_au, heart_av:
        Centre and semi-axes of the heart ellipse; ``heart_au`` > ~0.15 reads as cardiomegaly.
    mediastinum_half_width:
        Half width of the upper mediastinal band.
    knob_cu, knob_cv, knob_r:
        Aortic knob disc (patient's left of the midline = image right); ``knob_r`` relative to W.
    rib_spacing, rib_phase:
        Rib band period and offset (fraction of H).
    noise:
        Standard deviation of the additive image noise (intensity units).
    exposure:
        Global brightness factor (0.85..1.1).
    """

    midline_u: float = 0.5
    lung_top_v: float = 0.15
    lung_bottom_right_v: float = 0.74
    lung_bottom_left_v: float = 0.76
    lung_half_width_right: float = 0.16
    lung_half_width_left: float = 0.155
    lung_gap: float = 0.05
    heart_cu: float = 0.54
    heart_cv: float = 0.62
    heart_au: float = 0.13
    heart_av: float = 0.11
    mediastinum_half_width: float = 0.05
    knob_cu: float = 0.56
    knob_cv: float = 0.30
    knob_r: float = 0.028
    rib_spacing: float = 0.075
    rib_phase: float = 0.0
    noise: float = 0.02
    exposure: float = 1.0

    # derived geometry -------------------------------------------------------------------------
    def lung_center_u(self, side: str) -> float:
        """Centre column of the ``"right"`` (image left) or ``"left"`` (image right) lung."""
        if side == "right":
            return self.midline_u - self.lung_gap - self.lung_half_width_right
        return self.midline_u + self.lung_gap + self.lung_half_width_left

    def lung_half_width(self, side: str) -> float:
        return self.lung_half_width_right if side == "right" else self.lung_half_width_left

    def lung_bottom_v(self, side: str) -> float:
        return self.lung_bottom_right_v if side == "right" else self.lung_bottom_left_v


def seed_from_text(text: str) -> int:
    """A stable 64-bit seed from a string (sha256), used to tie phantoms to dicom ids."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def sample_params(rng: np.random.Generator, cardiomegaly: bool = False) -> PhantomParams:
    """Draw plausible phantom parameters.

    Parameters
    ----------
    rng:
        Random generator (consumed).
    cardiomegaly:
        Draw an enlarged heart (``heart_au`` 0.17..0.20 instead of 0.11..0.14).
    """
    mid = 0.5 + rng.uniform(-0.02, 0.02)
    top = rng.uniform(0.12, 0.18)
    bottom_r = rng.uniform(0.70, 0.78)
    heart_au = rng.uniform(0.17, 0.20) if cardiomegaly else rng.uniform(0.11, 0.14)
    return PhantomParams(
        midline_u=mid,
        lung_top_v=top,
        lung_bottom_right_v=bottom_r,
        lung_bottom_left_v=bottom_r + rng.uniform(0.005, 0.03),
        lung_half_width_right=rng.uniform(0.15, 0.18),
        lung_half_width_left=rng.uniform(0.145, 0.175),
        lung_gap=rng.uniform(0.04, 0.06),
        heart_cu=mid + rng.uniform(0.03, 0.06),
        heart_cv=bottom_r - rng.uniform(0.10, 0.14),
        heart_au=heart_au,
        heart_av=rng.uniform(0.10, 0.12),
        mediastinum_half_width=rng.uniform(0.045, 0.06),
        knob_cu=mid + rng.uniform(0.045, 0.065),
        knob_cv=top + rng.uniform(0.13, 0.17),
        knob_r=rng.uniform(0.024, 0.032),
        rib_spacing=rng.uniform(0.065, 0.085),
        rib_phase=rng.uniform(0.0, 1.0),
        noise=rng.uniform(0.012, 0.03),
        exposure=rng.uniform(0.9, 1.08),
    )


def params_for_image(dicom_id: str) -> tuple[PhantomParams, tuple[ImageFinding, ...]]:
    """Deterministic phantom parameters and image findings for one dicom id.

    The MIMIC generator renders the image from these, and the REFLACX / EGD-CXR generators recompute
    them from the dicom id alone (no side files), so readings describe what the image shows.
    """
    rng = np.random.default_rng(seed_from_text("phantom:" + dicom_id))
    findings = sample_image_findings(rng)
    cardio = any(f.kind == "cardiomegaly" for f in findings)
    params = sample_params(rng, cardiomegaly=cardio)
    return params, findings


# ------------------------------------------------------------------------------------------------
# masks


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates: u of shape (1, W), v of shape (H, 1)."""
    u = ((np.arange(w, dtype=np.float64) + 0.5) / w)[None, :]
    v = ((np.arange(h, dtype=np.float64) + 0.5) / h)[:, None]
    return u, v


def _lung_mask(p: PhantomParams, side: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    cu = p.lung_center_u(side)
    au = p.lung_half_width(side)
    top, bottom = p.lung_top_v, p.lung_bottom_v(side)
    cv = top + 0.72 * (bottom - top)
    av = np.where(v < cv, cv - top, bottom - cv)
    # egg shape: pointed apex (upper half-axis long), flat-ish base; lateral border bulges
    inside = ((u - cu) / au) ** 2 + ((v - cv) / av) ** 4 * (v >= cv) + ((v - cv) / av) ** 2 * (v < cv) <= 1.0
    return inside


def _heart_mask(p: PhantomParams, u: np.ndarray, v: np.ndarray, grow: float = 0.0) -> np.ndarray:
    return ((u - p.heart_cu) / (p.heart_au + grow)) ** 2 + ((v - p.heart_cv) / (p.heart_av + grow)) ** 2 <= 1.0


def _mediastinum_mask(p: PhantomParams, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    band = (np.abs(u - p.midline_u) <= p.mediastinum_half_width) & (v >= p.lung_top_v - 0.06) & (v <= p.heart_cv)
    return band | _heart_mask(p, u, v)


def _knob_mask(p: PhantomParams, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    # knob_r is relative to W; convert the row distance with the aspect ratio H/W
    return ((u - p.knob_cu) ** 2 + ((v - p.knob_cv) * aspect) ** 2) <= p.knob_r**2


def _boxed(
    H: int, W: int, box: tuple[float, float, float, float], fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Evaluate ``fn(u, v)`` only on the pixels whose centres can fall in ``box`` (u0, v0, u1, v1)."""
    u0, v0, u1, v1 = box
    r0, r1 = max(0, int(np.floor(v0 * H)) - 1), min(H, int(np.ceil(v1 * H)) + 1)
    c0, c1 = max(0, int(np.floor(u0 * W)) - 1), min(W, int(np.ceil(u1 * W)) + 1)
    out = np.zeros((H, W), dtype=bool)
    if r1 > r0 and c1 > c0:
        u = ((np.arange(c0, c1, dtype=np.float64) + 0.5) / W)[None, :]
        v = ((np.arange(r0, r1, dtype=np.float64) + 0.5) / H)[:, None]
        out[r0:r1, c0:c1] = fn(u, v)
    return out


def phantom_masks(params: PhantomParams, H: int, W: int) -> dict[str, np.ndarray]:
    """Boolean anatomy masks of the phantom at image size H x W.

    Returns
    -------
    dict
        ``{"left_lung", "right_lung", "mediastinum", "aortic_knob"}`` -> bool arrays of shape (H, W).
        ``left_lung`` is the patient's left lung, i.e. on the **image right**. The lungs exclude the
        heart and mediastinum; the mediastinum includes the heart (as in EGD-CXR, where the heart is
        the lower part of the mediastinum mask). A pixel belongs to a structure when its centre
        ((col + 0.5) / W, (row + 0.5) / H) lies inside it. Only each structure's bounding box is
        evaluated, so full-size (3000 x 2500) masks take tens of milliseconds.
    """
    p = params
    g = 0.005
    heart_box = (
        p.heart_cu - p.heart_au - g,
        p.heart_cv - p.heart_av - g,
        p.heart_cu + p.heart_au + g,
        p.heart_cv + p.heart_av + g,
    )
    heart = _boxed(H, W, heart_box, lambda u, v: _heart_mask(p, u, v))
    heart_grown = _boxed(H, W, heart_box, lambda u, v: _heart_mask(p, u, v, grow=g))
    mw = p.mediastinum_half_width
    band = _boxed(
        H,
        W,
        (p.midline_u - mw, p.lung_top_v - 0.06, p.midline_u + mw, p.heart_cv),
        lambda u, v: (np.abs(u - p.midline_u) <= mw) & (v >= p.lung_top_v - 0.06) & (v <= p.heart_cv),
    )
    med = band | heart
    out = {}
    for side in ("left", "right"):
        cu, au = p.lung_center_u(side), p.lung_half_width(side)
        box = (cu - au, p.lung_top_v, cu + au, p.lung_bottom_v(side))
        out[f"{side}_lung"] = _boxed(H, W, box, functools.partial(_lung_mask, p, side)) & ~med & ~heart_grown
    out["mediastinum"] = med
    rv = p.knob_r * W / H
    out["aortic_knob"] = _boxed(
        H,
        W,
        (p.knob_cu - p.knob_r, p.knob_cv - rv, p.knob_cu + p.knob_r, p.knob_cv + rv),
        lambda u, v: _knob_mask(p, u, v, H / W),
    )
    return {k: out[k] for k in MASK_STRUCTURES}


# ------------------------------------------------------------------------------------------------
# named regions


def _norm_region_boxes(p: PhantomParams) -> dict[str, tuple[float, float, float, float]]:
    """Named boxes (u0, v0, u1, v1) in normalised coordinates."""
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for side in ("right", "left"):
        cu, au = p.lung_center_u(side), p.lung_half_width(side)
        top, bottom = p.lung_top_v, p.lung_bottom_v(side)
        u0, u1 = cu - au, cu + au
        hgt = bottom - top
        lateral_is_low_u = side == "right"
        boxes[f"{side} lung"] = (u0, top, u1, bottom)
        boxes[f"{side} upper lung zone"] = (u0, top, u1, top + hgt / 3)
        boxes[f"{side} mid lung zone"] = (u0, top + hgt / 3, u1, top + 2 * hgt / 3)
        boxes[f"{side} lower lung zone"] = (u0, top + 2 * hgt / 3, u1, bottom)
        boxes[f"{side} apex"] = (u0 + 0.2 * au, top, u1 - 0.2 * au, top + 0.18 * hgt)
        if lateral_is_low_u:
            boxes[f"{side} costophrenic angle"] = (u0, bottom - 0.16 * hgt, u0 + 0.7 * au, bottom)
            boxes[f"{side} hilar structures"] = (u1 - 0.75 * au, top + 0.38 * hgt, u1, top + 0.58 * hgt)
            boxes[f"{side} lateral chest wall"] = (u0, top + 0.25 * hgt, u0 + 0.5 * au, top + 0.75 * hgt)
            clav = (p.midline_u - 0.03 - 2.1 * au - p.lung_gap, top - 0.04, p.midline_u - 0.02, top + 0.05)
        else:
            boxes[f"{side} costophrenic angle"] = (u1 - 0.7 * au, bottom - 0.16 * hgt, u1, bottom)
            boxes[f"{side} hilar structures"] = (u0, top + 0.38 * hgt, u0 + 0.75 * au, top + 0.58 * hgt)
            boxes[f"{side} lateral chest wall"] = (u1 - 0.5 * au, top + 0.25 * hgt, u1, top + 0.75 * hgt)
            clav = (p.midline_u + 0.02, top - 0.04, p.midline_u + 0.03 + 2.1 * au + p.lung_gap, top + 0.05)
        boxes[f"{side} clavicle"] = clav
    boxes["cardiac silhouette"] = (
        p.heart_cu - p.heart_au,
        p.heart_cv - p.heart_av,
        p.heart_cu + p.heart_au,
        p.heart_cv + p.heart_av,
    )
    boxes["retrocardiac"] = (
        p.heart_cu - 0.5 * p.heart_au,
        p.heart_cv,
        p.heart_cu + 0.6 * p.heart_au,
        p.heart_cv + p.heart_av,
    )
    mw = p.mediastinum_half_width
    boxes["upper mediastinum"] = (p.midline_u - mw, p.lung_top_v - 0.05, p.midline_u + mw, p.heart_cv - p.heart_av)
    boxes["trachea"] = (p.midline_u - 0.015, 0.02, p.midline_u + 0.015, p.knob_cv)
    boxes["aortic knob"] = (
        p.knob_cu - p.knob_r,
        p.knob_cv - p.knob_r * 0.8,
        p.knob_cu + p.knob_r,
        p.knob_cv + p.knob_r * 0.8,
    )
    boxes["spine"] = (p.midline_u - 0.03, 0.05, p.midline_u + 0.03, 0.95)
    return boxes


def region_boxes(params: PhantomParams, H: int, W: int) -> dict[str, tuple[float, float, float, float]]:
    """Named anatomical boxes in image pixels, ``name -> (xmin, ymin, xmax, ymax)`` (floats).

    Names: the 17 of :data:`EGD_BBOX_NAMES` plus ``"{side} apex"``, ``"{side} lateral chest wall"``,
    ``"retrocardiac"``, ``"aortic knob"`` and ``"spine"``. Side words follow the patient
    (``"left ..."`` boxes lie on the image right). Boxes are clipped to the image.
    """
    out = {}
    for name, (u0, v0, u1, v1) in _norm_region_boxes(params).items():
        x0 = float(np.clip(u0 * W, 0, W))
        x1 = float(np.clip(u1 * W, 0, W))
        y0 = float(np.clip(v0 * H, 0, H))
        y1 = float(np.clip(v1 * H, 0, H))
        out[name] = (x0, y0, x1, y1)
    return out


def chest_box(params: PhantomParams, H: int, W: int) -> tuple[float, float, float, float]:
    """Rectangle around both lungs and the heart in image pixels (xmin, ymin, xmax, ymax), floats."""
    b = region_boxes(params, H, W)
    r, lf, c = b["right lung"], b["left lung"], b["cardiac silhouette"]
    return (min(r[0], lf[0], c[0]), min(r[1], lf[1], c[1]), max(r[2], lf[2], c[2]), max(r[3], lf[3], c[3]))


# ------------------------------------------------------------------------------------------------
# rendering


def _soft_ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float) -> np.ndarray:
    """Soft elliptic blob centred on (cu, cv) with semi-axes (au, av), all in image fractions."""
    d = ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2
    return np.exp(-1.5 * d)


def render_phantom(
    params: PhantomParams,
    H: int,
    W: int,
    rng: np.random.Generator,
    findings: tuple[ImageFinding, ...] = (),
) -> np.ndarray:
    """Render the phantom as a float64 image in [0, 1] of shape (H, W); 1 = dense (bright).

    Lungs are dark with vessel-like texture and rib bands, the heart/mediastinum, spine, clavicles and
    sub-diaphragmatic area are bright, the surroundings outside the body are dark. Findings add
    opacities (effusion, consolidation, edema, ...), dark apical air (pneumothorax), a bright disc
    (nodule/mass) or a thin line (support device) inside their regions.
    """
    p = params
    u, v = _grid(H, W)
    masks = phantom_masks(p, H, W)
    lungs = masks["left_lung"] | masks["right_lung"]
    med = masks["mediastinum"]
    # body: soft-tissue ellipse
    body = ((u - p.midline_u) / 0.47) ** 2 + ((v - 0.55) / 0.62) ** 4 <= 1.0
    img = np.where(body, 0.55, 0.06) + 0.0 * u * v
    # below the diaphragm: brighter abdomen
    img = img + 0.12 * (body & (v > 0.5 * (p.lung_bottom_left_v + p.lung_bottom_right_v)))
    # spine
    img = img + 0.12 * (np.abs(u - p.midline_u) < 0.03) * body
    # ribs: curved bands (only visible over the lungs)
    rib_wave = np.sin(2 * np.pi * ((v + 0.06 * ((u - p.midline_u) / 0.3) ** 2) / p.rib_spacing + p.rib_phase))
    ribs = 0.07 * (rib_wave > 0.55)
    # lung texture: smooth random field
    coarse = rng.normal(size=(max(2, H // 10), max(2, W // 10)))
    ri = np.linspace(0, coarse.shape[0] - 1, H)
    ci = np.linspace(0, coarse.shape[1] - 1, W)
    r0 = np.minimum(ri.astype(int), coarse.shape[0] - 2)
    c0 = np.minimum(ci.astype(int), coarse.shape[1] - 2)
    fr, fc = (ri - r0)[:, None], (ci - c0)[None, :]
    texture = (  # bilinear upsampling of the coarse field
        coarse[r0][:, c0] * (1 - fr) * (1 - fc)
        + coarse[r0 + 1][:, c0] * fr * (1 - fc)
        + coarse[r0][:, c0 + 1] * (1 - fr) * fc
        + coarse[r0 + 1][:, c0 + 1] * fr * fc
    )
    lung_val = 0.18 + 0.04 * texture + ribs
    img = np.where(lungs, lung_val, img)
    img = np.where(med, 0.72, img)
    img = np.where(masks["aortic_knob"], 0.78, img)
    # clavicles: bright oblique bars near the apices
    for side in ("right", "left"):
        cu = p.lung_center_u(side)
        au = p.lung_half_width(side)
        line_v = p.lung_top_v + 0.02 + 0.05 * np.abs(u - p.midline_u) / (au + p.lung_gap)
        span = np.abs(u - cu) < 1.1 * au
        img = img + 0.15 * ((np.abs(v - line_v) < 0.012) & span)
    # findings
    for f in findings:
        img = _draw_finding(img, f, p, H, W, u, v, lungs)
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(img, sigma=max(0.6, H / 300.0))  # soft anatomical edges
    img = img * p.exposure + rng.normal(0.0, p.noise, size=(H, W))
    return np.clip(img, 0.0, 1.0)


def _draw_finding(
    img: np.ndarray,
    f: ImageFinding,
    p: PhantomParams,
    H: int,
    W: int,
    u: np.ndarray,
    v: np.ndarray,
    lungs: np.ndarray,
) -> np.ndarray:
    boxes = _norm_region_boxes(p)
    for name in f.regions:
        if name not in boxes:
            continue
        u0, v0, u1, v1 = boxes[name]
        cu, cv, au, av = (u0 + u1) / 2, (v0 + v1) / 2, max((u1 - u0) / 2, 1e-3), max((v1 - v0) / 2, 1e-3)
        s = 0.2 + 0.3 * f.severity
        if f.kind == "pleural_effusion":
            # meniscus-shaped opacity rising from the base of the lung
            img = img + s * 1.6 * lungs * (v > v1 - (0.5 + f.severity) * (v1 - v0)) * (np.abs(u - cu) < 1.2 * au)
        elif f.kind == "pneumothorax":
            img = np.where(lungs & (_soft_ellipse(u, v, cu, cv, au, av) > 0.4), 0.08, img)
        elif f.kind in ("nodule", "mass"):
            r = (0.012 if f.kind == "nodule" else 0.035) * (1 + f.severity)
            img = img + 0.35 * (((u - cu) ** 2 + ((v - cv) * H / W) ** 2) <= r * r)
        elif f.kind == "support_devices":
            line = (np.abs(u - p.midline_u - 0.005) < 0.004) & (v > 0.0) & (v < p.knob_cv + 0.04)
            img = img + 0.3 * line
        elif f.kind == "fracture":
            img = img + 0.15 * (np.abs(v - cv) < 0.004) * (np.abs(u - cu) < au)
        elif f.kind in ("emphysema",):
            img = img - 0.06 * lungs * _soft_ellipse(u, v, cu, cv, au, av)
        elif f.kind in ("cardiomegaly", "wide_mediastinum", "hiatal_hernia", "enlarged_hilum", "other"):
            img = img + 0.12 * _soft_ellipse(u, v, cu, cv, au * 0.7, av * 0.7)
        else:  # opacities: consolidation, atelectasis, edema, groundglass, interstitial, thickening
            img = img + s * _soft_ellipse(u, v, cu, cv, au * 0.8, av * 0.8) * lungs
    return img
