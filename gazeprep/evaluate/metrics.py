"""Saliency and localisation metrics of the papers, as pure array-in, float-out functions.

Conventions shared by every function here (each docstring repeats what applies):

* ``pred`` is the prediction (model output, CAM, or the map under test); ``ref`` / ``gt`` is the
  reference (empirical) map. Arrays are 2-D ``(H, W)``; values are unitless.
* **Resizing rule**: when shapes differ, ``pred`` is resized to the reference shape with
  nearest-neighbour interpolation (004: "heatmaps upscaled to the resolution of the GT ellipses
  using nearest-neighbor interpolation"); the reference is never resized. ``resize="bilinear"``
  is available where a metric takes it.
* Degenerate inputs (an empty mask, a constant map) return ``nan`` unless the source code of the
  paper defines a value (e.g. ricbl's IoU turns NaN into 0); the docstring says which.
* **Non-finite values are refused**: a map holding NaN or +-inf raises :class:`NonFiniteMapError`
  (a :class:`~gazeprep.errors.GazeprepError` and a :class:`ValueError`) naming which argument. No
  metric is defined on such a map, and the normalisations below would otherwise hide it (``max`` of a
  map with NaN is NaN, and a NaN maximum turns the whole map into zeros). Callers that know where a
  map came from (:mod:`gazeprep.evaluate.evaluator`) check first and name the export, case and target.

Sources: 000 = Pham et al. I-AI (UARK-AICV/IAI evaluator), 001 = Qiu (MT-UNet
``hzhu_metrics_saliency.py`` and chapter 3), 002 = GG-CAM eq. 12, 003 = Karargyris/EGD U-Net
(bootstrap CIs), 004 = Bigolin Lanfredi et al. (ricbl ``localization_score_fn``), MIT = the MIT/Tuebingen
saliency benchmark MATLAB code (``code_forMetrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from gazeprep.errors import GazeprepError
from gazeprep.evaluate.registry import register_metric

EPS_MATLAB = 2.220446049250313e-16  # MATLAB ``eps`` (MIT benchmark)

#: IoU thresholds of 004 (ricbl ``opts.py``), applied to max-normalised maps.
THRESHOLDS_004: tuple[float, ...] = (
    0.0, 0.001, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6,
    0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 0.999,
)  # fmt: skip

ResizeMode = Literal["nearest", "bilinear"]


# --------------------------------------------------------------------------------------------------
# helpers


class NonFiniteMapError(GazeprepError, ValueError):
    """A map given to a metric holds NaN or +-inf values.

    Attributes: ``what`` (which argument, e.g. ``"prediction"``), ``n_nan``, ``n_posinf``,
    ``n_neginf`` (pixel counts) and ``size`` (pixels in the map)."""

    def __init__(self, what: str, n_nan: int, n_posinf: int, n_neginf: int, size: int):
        self.what, self.n_nan, self.n_posinf, self.n_neginf, self.size = what, n_nan, n_posinf, n_neginf, size
        super().__init__(f"{what}: {describe_non_finite(n_nan, n_posinf, n_neginf, size)}")


def describe_non_finite(n_nan: int, n_posinf: int, n_neginf: int, size: int) -> str:
    """``"map holds 3 NaN and 1 +inf values (of 1024 pixels)"``: the counts that are not zero."""
    parts = [f"{n} {name}" for n, name in ((n_nan, "NaN"), (n_posinf, "+inf"), (n_neginf, "-inf")) if n]
    return f"map holds {' and '.join(parts)} value{'s' if n_nan + n_posinf + n_neginf > 1 else ''} (of {size} pixels)"


def non_finite_counts(a: np.ndarray) -> tuple[int, int, int] | None:
    """``None`` when every value of ``a`` is finite (one ``np.isfinite`` pass), else the counts
    ``(n_nan, n_posinf, n_neginf)``. Boolean and integer arrays are always finite."""
    a = np.asarray(a)
    if a.dtype.kind in "biu" or bool(np.isfinite(a).all()):
        return None
    return int(np.isnan(a).sum()), int(np.isposinf(a).sum()), int(np.isneginf(a).sum())


def check_finite(a: np.ndarray, what: str) -> np.ndarray:
    """Return ``a`` unchanged if every value is finite, else raise :class:`NonFiniteMapError` naming
    ``what`` and how many NaN / +inf / -inf values it holds."""
    bad = non_finite_counts(a)
    if bad is not None:
        raise NonFiniteMapError(what, *bad, int(np.asarray(a).size))
    return a


def _as2d(values: ArrayLike, what: str) -> np.ndarray:
    """``values`` as a 2-D array (a leading axis of length 1 is dropped), checked finite."""
    a = np.asarray(values)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise GazeprepError(f"{what}: expected a 2-D map, got shape {a.shape}")
    return check_finite(a, what)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid-rule area under ``y(x)`` (``np.trapezoid``, which only exists from NumPy 2.0 on)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def resize_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to ``shape`` (rows, cols).

    Output pixel ``i`` samples input pixel ``floor((i + 0.5) * in / out)`` (pixel-centre mapping, as
    ``torch.nn.functional.interpolate(mode="nearest-exact")`` and PIL ``NEAREST``). An integer
    upscale factor therefore repeats every input pixel exactly ``factor`` times.
    """
    a = np.asarray(a)
    h, w = a.shape[:2]
    oh, ow = int(shape[0]), int(shape[1])
    if (h, w) == (oh, ow):
        return a
    ri = np.minimum(((np.arange(oh) + 0.5) * h / oh).astype(np.int64), h - 1)
    ci = np.minimum(((np.arange(ow) + 0.5) * w / ow).astype(np.int64), w - 1)
    return a[ri[:, None], ci[None, :]]


def resize_bilinear(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (pixel-centre aligned, ``align_corners=False``, edge-clamped) of a 2-D array."""
    a = np.asarray(a, dtype=np.float64)
    h, w = a.shape
    oh, ow = int(shape[0]), int(shape[1])
    if (h, w) == (oh, ow):
        return a

    def coords(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        x0 = np.floor(x).astype(np.int64)
        x1 = np.minimum(x0 + 1, n_in - 1)
        return x0, x1, x - x0

    r0, r1, fr = coords(h, oh)
    c0, c1, fc = coords(w, ow)
    top = a[r0][:, c0] * (1 - fc) + a[r0][:, c1] * fc
    bot = a[r1][:, c0] * (1 - fc) + a[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bot * fr[:, None]


def match_shape(pred: ArrayLike, ref_shape: tuple[int, ...], resize: ResizeMode = "nearest") -> np.ndarray:
    """``pred`` resized to ``ref_shape[:2]`` (the documented resizing rule), as float64.

    Raises :class:`NonFiniteMapError` when ``pred`` holds NaN or inf."""
    pred = _as2d(pred, "prediction")
    target = (int(ref_shape[0]), int(ref_shape[1]))
    if pred.shape != target:
        pred = resize_nearest(pred, target) if resize == "nearest" else resize_bilinear(pred, target)
    return np.asarray(pred, dtype=np.float64)


def _sum_norm(a: np.ndarray) -> np.ndarray:
    s = a.sum()
    return a / s if s > 0 else a


def _max_norm(a: np.ndarray) -> np.ndarray:
    # callers pass finite maps only (_prep checks): with a NaN the maximum would be NaN and the map 0
    m = a.max() if a.size else 0.0
    return a / m if m > 0 else np.zeros_like(a)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _prep(pred: ArrayLike, ref: ArrayLike, resize: ResizeMode = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """``(pred, ref)`` as float64 2-D maps of the reference's shape, both checked finite."""
    ref = np.asarray(_as2d(ref, "reference"), dtype=np.float64)
    return match_shape(pred, ref.shape, resize), ref


# --------------------------------------------------------------------------------------------------
# geometry: ellipses and boxes (grids of exported maps: gazeprep.heatmaps.grid.OutputGrid)


def ellipse_mask(
    h: int,
    w: int,
    ellipses: np.ndarray | Sequence[Sequence[float]],
    *,
    min_certainty: int = 3,
) -> np.ndarray:
    """Rasterise REFLACX ellipses into a boolean ``(h, w)`` mask (union over ellipses).

    ``ellipses``: rows ``(xmin, ymin, xmax, ymax)`` or ``(xmin, ymin, xmax, ymax, certainty)`` in the
    pixel coordinates of the ``(h, w)`` grid (the ellipse's axis-aligned bounding rectangle,
    FORMATS 1.11). Rows with ``certainty < min_certainty`` are dropped (default 3, i.e. ricbl's
    ``certainty > 2``: "Possibly" or higher). As ``skimage.draw.ellipse`` with centre = midpoints and
    semi-axes = half the side lengths, pixel ``(r, c)`` is inside iff
    ``((r - cy) / ry)**2 + ((c - cx) / rx)**2 < 1``. Degenerate ellipses (a zero semi-axis) are empty;
    a kept row with a missing (NaN) or infinite coordinate is a :class:`GazeprepError`.
    """
    mask = np.zeros((int(h), int(w)), dtype=bool)
    e = np.asarray(ellipses, dtype=np.float64)
    if e.size == 0:
        return mask
    e = e.reshape(-1, e.shape[-1])
    if e.shape[1] >= 5:
        e = e[e[:, 4] >= min_certainty]
    bad = ~np.isfinite(e[:, :4]).all(axis=1)
    if bad.any():
        raise GazeprepError(f"ellipse with missing or non-finite coordinates: {e[int(np.argmax(bad)), :4].tolist()}")
    for xmin, ymin, xmax, ymax in e[:, :4]:
        cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
        rx, ry = abs(xmax - xmin) / 2, abs(ymax - ymin) / 2
        if rx <= 0 or ry <= 0:
            continue
        r0, r1 = max(int(np.ceil(cy - ry)), 0), min(int(np.floor(cy + ry)), h - 1)
        c0, c1 = max(int(np.ceil(cx - rx)), 0), min(int(np.floor(cx + rx)), w - 1)
        if r1 < r0 or c1 < c0:
            continue
        rr = (np.arange(r0, r1 + 1)[:, None] - cy) / ry
        cc = (np.arange(c0, c1 + 1)[None, :] - cx) / rx
        mask[r0 : r1 + 1, c0 : c1 + 1] |= rr**2 + cc**2 < 1
    return mask


def box_mask(h: int, w: int, boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Boolean ``(h, w)`` mask of the union of boxes ``(xmin, ymin, xmax, ymax)`` (inclusive, as EGD-CXR's
    ``x1 <= x <= x2 and y1 <= y <= y2``)."""
    mask = np.zeros((int(h), int(w)), dtype=bool)
    r = np.arange(h)[:, None]
    c = np.arange(w)[None, :]
    for xmin, ymin, xmax, ymax in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        mask |= (r >= ymin) & (r <= ymax) & (c >= xmin) & (c <= xmax)
    return mask


# --------------------------------------------------------------------------------------------------
# 004: IoU at thresholds (ricbl localization_score_fn)


def iou_at_threshold(
    pred: ArrayLike, gt_mask: ArrayLike, *, threshold: float = 0.15, resize: ResizeMode = "nearest"
) -> float:
    """IoU of ``pred > threshold`` with a binary reference mask (004, ricbl ``localization_score_fn``).

    ``inter = sum(bin(pred) * gt)``, ``union = sum(max(bin(pred), gt))``; an empty union (NaN in the
    reference code) gives 0. ``pred`` is resized to the mask's shape (nearest) and thresholded as is:
    pass a max-normalised map (004's heatmaps and decoder outputs are in [0, 1]).
    """
    p, g = _prep(pred, gt_mask, resize)
    return float(_iou_curve(p, g > 0.5, (threshold,))[0])


def iou_curve(
    pred: ArrayLike, gt_mask: ArrayLike, thresholds: Sequence[float] = THRESHOLDS_004, resize: ResizeMode = "nearest"
) -> np.ndarray:
    """IoU at every threshold (vectorised); shape ``(len(thresholds),)``. Same convention as
    :func:`iou_at_threshold`."""
    p, g = _prep(pred, gt_mask, resize)
    return _iou_curve(p, g > 0.5, thresholds)


register_metric(
    "iou",
    kind="region",
    source="004 ricbl src/train.py localization_score_fn",
    threshold_curve=iou_curve,
    threshold=0.15,
)(iou_at_threshold)


def _iou_curve(p: np.ndarray, g: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """:func:`iou_curve` on a prepared float map ``p`` and a boolean mask ``g`` of the same shape."""
    t = np.asarray(thresholds, dtype=np.float64)
    above, above_in = _count_above(p.ravel(), g.ravel(), t)
    union = above + int(g.sum()) - above_in
    return np.where(union > 0, above_in / np.maximum(union, 1), 0.0).astype(np.float64)


def _count_above(values: np.ndarray, inside: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every threshold ``t``: how many ``values > t``, and how many of those are ``inside``.

    One pass: each value's bin among the sorted thresholds (``searchsorted``) then cumulative counts,
    O(N log T) instead of one pass per threshold or a full sort of the values."""
    order = np.argsort(thresholds, kind="stable")
    ts = thresholds[order]
    n = ts.size
    k: np.ndarray  # bin of each value: uint8 counts below, intp from searchsorted
    if n <= 64:  # a few vectorised comparisons beat a binary search per value
        k = np.zeros(values.shape, dtype=np.uint8)
        for t in ts:
            k += values > t
    else:
        k = np.searchsorted(ts, values, side="left")  # number of thresholds strictly below each value
    tot = np.bincount(k, minlength=n + 1)
    ins = np.bincount(k[inside], minlength=n + 1)
    # value > ts[j]  <=>  k > j  -> counts of bins j+1..n
    above_sorted = np.cumsum(tot[::-1])[::-1][1:]
    in_sorted = np.cumsum(ins[::-1])[::-1][1:]
    above = np.empty(n, dtype=np.int64)
    above_in = np.empty(n, dtype=np.int64)
    above[order] = above_sorted
    above_in[order] = in_sorted
    return above, above_in


def best_thresholds(iou_table: np.ndarray, thresholds: Sequence[float] = THRESHOLDS_004) -> tuple[float, float]:
    """The threshold with the highest mean IoU over images (004: chosen per label on validation).

    ``iou_table``: ``(n_images, n_thresholds)`` from :func:`iou_curve`. Returns ``(threshold,
    mean IoU at it)``; ties go to the first (lowest) threshold, as ``np.argmax``. Rows with NaN are
    ignored; with no valid row the result is ``(nan, nan)``.
    """
    tab = np.asarray(iou_table, dtype=np.float64).reshape(-1, len(thresholds))
    tab = tab[~np.isnan(tab).any(axis=1)]  # images without a reference (NaN rows) do not vote
    if tab.shape[0] == 0:
        return float("nan"), float("nan")
    means = tab.mean(axis=0)
    i = int(np.argmax(means))
    return float(thresholds[i]), float(means[i])


# --------------------------------------------------------------------------------------------------
# 000: I-AI evaluator (binary IoUs from a 2-class confusion matrix; SSIM, PSNR, L1, L2)


def binarize_iai(gt: np.ndarray) -> np.ndarray:
    """I-AI's binary ground truth: ``gt > sorted(unique(gt))[len(unique) // 5]`` (a quantile of the
    *unique* grey levels, not of the pixels; ``iai/utils/misc.py read_gt_heatmap``)."""
    g = np.asarray(gt)
    u = np.unique(g)
    return g > u[len(u) // 5]


def confusion_2class(pred_bin: ArrayLike, gt_bin: ArrayLike, resize: ResizeMode = "nearest") -> np.ndarray:
    """2 x 2 pixel confusion matrix ``cm[gt, pred]`` (0 = background, 1 = foreground) as int64.

    Sum these over a data set for the dataset-level IoUs of I-AI's evaluator."""
    p, g = _prep(np.asarray(pred_bin, dtype=np.float64), np.asarray(gt_bin, dtype=np.float64), resize)
    p, g = p > 0.5, g > 0.5
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size - tp - fp - fn)
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def ious_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Per-class, mean and frequency-weighted IoU from a 2-class confusion matrix ``cm[gt, pred]``.

    The rule is detectron2's ``SemSegEvaluator.evaluate`` (``detectron2/evaluation/
    sem_seg_evaluation.py``), which I-AI's evaluator copies (``iai/evaluator/
    tiai_evaluator_l2_e2e_v2.py``, mask and heatmap sides alike)::

        tp = diag(cm); pos_gt = reference pixels of class c; pos_pred = predicted pixels of class c
        union = pos_gt + pos_pred - tp
        iou_valid = (pos_gt > 0) & (union > 0)
        IoU_c = tp_c / union_c           where iou_valid, else NaN
        mIoU  = mean of IoU_c over the iou_valid classes
        fwIoU = sum over iou_valid classes of IoU_c * pos_gt_c / sum(pos_gt)

    So a class absent from the *reference* has no IoU (NaN), even when it was predicted: a ground
    truth without foreground gives ``fgiou = nan`` and ``miou = bgiou`` (not ``(bgiou + 0) / 2``).
    Its predicted pixels still lower the background IoU through ``union``. With an empty matrix every
    value is NaN. Fractions in [0, 1] (the paper prints them x 100)."""
    cm = np.asarray(cm, dtype=np.float64)
    if cm.shape != (2, 2):
        raise GazeprepError(f"expected a 2 x 2 confusion matrix, got shape {cm.shape}")
    tp = np.diag(cm)
    pos_gt = cm.sum(axis=1)
    pos_pred = cm.sum(axis=0)
    union = pos_gt + pos_pred - tp
    valid = (pos_gt > 0) & (union > 0)
    iou = np.full(2, np.nan)
    iou[valid] = tp[valid] / union[valid]
    total = pos_gt.sum()
    return {
        "bgiou": float(iou[0]),
        "fgiou": float(iou[1]),
        "miou": float(iou[valid].mean()) if valid.any() else float("nan"),
        "fwiou": float((iou[valid] * pos_gt[valid] / total).sum()) if valid.any() else float("nan"),
    }


def _binary_metric(key: str) -> Callable[..., float]:
    def fn(pred_bin: ArrayLike, gt_bin: ArrayLike, *, resize: ResizeMode = "nearest") -> float:
        return ious_from_confusion(confusion_2class(pred_bin, gt_bin, resize))[key]

    fn.__name__ = key
    fn.__doc__ = (
        f"Per-image {key} of a binary prediction vs a binary reference (000, I-AI). See "
        ":func:`ious_from_confusion`; the evaluator's default is the dataset-level form (confusion "
        "matrices summed over images)."
    )
    return fn


fg_iou = _binary_metric("fgiou")
bg_iou = _binary_metric("bgiou")
fw_iou = _binary_metric("fwiou")
m_iou = _binary_metric("miou")
for _k, _f in (("fgiou", fg_iou), ("bgiou", bg_iou), ("fwiou", fw_iou), ("miou", m_iou)):
    register_metric(_k, kind="binary", source="000 I-AI iai/evaluator (2-class confusion matrix)", confusion_key=_k)(_f)


@register_metric("ssim", kind="map", source="000 I-AI (torchmetrics SSIM, data_range 1)")
def ssim(
    pred: ArrayLike, gt: ArrayLike, *, normalize: Literal["max", "none"] = "max", resize: ResizeMode = "nearest"
) -> float:
    """Mean structural similarity (000's mSSIM per image).

    Both maps are divided by their max first (I-AI: pred = channel / max, GT = soft PNG / max; an
    all-zero map stays 0), unless ``normalize="none"``. ``skimage.metrics.structural_similarity`` with
    Gaussian weights sigma 1.5 (11 x 11 support), K1 = 0.01, K2 = 0.03, population covariance,
    ``data_range=1`` - the torchmetrics defaults I-AI used. Maps smaller than 11 x 11 are an error.
    """
    from skimage.metrics import structural_similarity

    p, g = _prep(pred, gt, resize)
    if normalize == "max":
        p, g = _max_norm(p), _max_norm(g)
    if min(g.shape) < 11:
        raise GazeprepError(f"ssim needs maps of at least 11 x 11 pixels (Gaussian window), got {g.shape}")
    return float(
        structural_similarity(p, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    )


@register_metric("psnr", kind="map", source="000 I-AI (torchmetrics PSNR, data_range 1)")
def psnr(
    pred: ArrayLike, gt: ArrayLike, *, normalize: Literal["max", "none"] = "max", resize: ResizeMode = "nearest"
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(1 / MSE)`` (data range 1, after max-normalising both
    maps as :func:`ssim`); identical maps give ``inf``."""
    p, g = _prep(pred, gt, resize)
    if normalize == "max":
        p, g = _max_norm(p), _max_norm(g)
    mse = float(np.mean((p - g) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


@register_metric("l1", kind="map", higher_is_better=False, source="000 I-AI (F.l1_loss)")
def l1(
    pred: ArrayLike, gt: ArrayLike, *, normalize: Literal["max", "none"] = "max", resize: ResizeMode = "nearest"
) -> float:
    """Mean absolute difference (000's mL1 per image), both maps max-normalised as :func:`ssim`."""
    p, g = _prep(pred, gt, resize)
    if normalize == "max":
        p, g = _max_norm(p), _max_norm(g)
    return float(np.mean(np.abs(p - g)))


@register_metric("l2", kind="map", higher_is_better=False, source="000 I-AI (F.mse_loss)")
def l2(
    pred: ArrayLike, gt: ArrayLike, *, normalize: Literal["max", "none"] = "max", resize: ResizeMode = "nearest"
) -> float:
    """Mean squared difference (000's mL2 per image = ``F.mse_loss``), both maps max-normalised."""
    p, g = _prep(pred, gt, resize)
    if normalize == "max":
        p, g = _max_norm(p), _max_norm(g)
    return float(np.mean((p - g) ** 2))


# --------------------------------------------------------------------------------------------------
# 001 / MIT: distribution metrics


@register_metric("kld", kind="map", higher_is_better=False, source="MIT KLdiv.m (001 reports KLD)")
@register_metric(
    "kld_mtunet", kind="map", higher_is_better=False, source="001 MT-UNet hzhu_metrics_saliency.py", convention="mtunet"
)
def kld(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    convention: Literal["mit", "mtunet"] = "mit",
    eps: float = EPS_MATLAB,
    resize: ResizeMode = "nearest",
) -> float:
    """KL divergence of the prediction from the empirical map ``gt`` (``gt`` is the reference P).

    Both maps are sum-normalised first. ``convention="mit"`` (default, MIT ``KLdiv.m``):
    ``sum(G * log(eps + G / (P + eps)))`` with eps = 2.2204e-16. ``convention="mtunet"`` (001's
    reported numbers, ``F.kl_div(log P, G)``): ``sum(G * (log G - log(P + eps)))`` with ``0 log 0 = 0``.
    Lower is better; 0 for identical maps. NaN when ``gt`` sums to 0.
    """
    p, g = _prep(pred, gt, resize)
    if g.sum() <= 0:
        return float("nan")
    p, g = _sum_norm(p), _sum_norm(g)
    if convention == "mit":
        return float(np.sum(g * np.log(eps + g / (p + eps))))
    pos = g > 0
    return float(np.sum(g[pos] * (np.log(g[pos]) - np.log(p[pos] + eps))))


@register_metric("cc", kind="map", source="MIT CC.m / 001 (scipy pearsonr)")
def cc(pred: ArrayLike, gt: ArrayLike, *, resize: ResizeMode = "nearest") -> float:
    """Pearson linear correlation of the two maps, flattened (symmetric; 001's PCC).

    A constant ``gt`` gives NaN; a constant ``pred`` with a non-constant ``gt`` gives 0 (pysaliency)."""
    p, g = _prep(pred, gt, resize)
    if np.ptp(g) == 0:
        return float("nan")
    if np.ptp(p) == 0:
        return 0.0
    pz = (p - p.mean()) / p.std()
    gz = (g - g.mean()) / g.std()
    return float(np.mean(pz * gz))


@register_metric("hs", kind="map", source="001 MT-UNet hzhu_metrics_saliency.py (histogram similarity)")
def histogram_similarity(pred: ArrayLike, gt: ArrayLike, *, resize: ResizeMode = "nearest") -> float:
    """001's histogram similarity: ``sum(min(P, G))`` with both maps sum-normalised (no min-max
    step, unlike MIT SIM). 1 for identical maps, 0 for disjoint support. NaN if either sums to 0."""
    p, g = _prep(pred, gt, resize)
    if p.sum() <= 0 or g.sum() <= 0:
        return float("nan")
    return float(np.minimum(_sum_norm(p), _sum_norm(g)).sum())


@register_metric("sim", kind="map", source="MIT similarity.m")
def sim(pred: ArrayLike, gt: ArrayLike, *, resize: ResizeMode = "nearest") -> float:
    """MIT similarity: min-max normalise each map, then sum-normalise, then ``sum(min(P, G))``.

    (pysaliency subtracts the minimum only when it is negative; named deviation: use ``hs`` on
    non-negative maps for that behaviour.) NaN when a map is constant."""
    p, g = _prep(pred, gt, resize)
    if np.ptp(p) == 0 or np.ptp(g) == 0:
        return float("nan")
    return float(np.minimum(_sum_norm(_minmax(p)), _sum_norm(_minmax(g))).sum())


@register_metric("nss", kind="fixations", source="MIT NSS.m")
def nss(
    pred: ArrayLike,
    fixation_map: ArrayLike,
    *,
    ddof: int = 1,
    count_duplicates: bool = False,
    resize: ResizeMode = "nearest",
) -> float:
    """Normalised scanpath saliency: mean of the z-scored prediction at fixated pixels.

    ``fixation_map``: binary map (MIT) or, with ``count_duplicates=True``, fixation counts per pixel
    (pysaliency/Kuemmerer: every fixation counts). ``ddof=1`` is MATLAB's ``std`` (N - 1); ``ddof=0``
    is pysaliency's. NaN with no fixation or a constant prediction.
    """
    p, f = _prep(pred, fixation_map, resize)
    if not (f > 0).any() or np.ptp(p) == 0:
        return float("nan")
    z = (p - p.mean()) / p.std(ddof=ddof)
    if count_duplicates:
        return float(np.sum(z * f) / np.sum(f))
    return float(z[f > 0].mean())


@register_metric("auc_judd", kind="fixations", source="MIT AUC_Judd.m")
def auc_judd(
    pred: ArrayLike,
    fixation_map: ArrayLike,
    *,
    jitter: bool = True,
    seed: int = 0,
    resize: ResizeMode = "nearest",
) -> float:
    """AUC-Judd (MIT ``AUC_Judd.m``): thresholds = the prediction's values at fixated pixels; true
    positive rate over fixated pixels, false positive rate over the *other* pixels; trapezoid area.

    With ``jitter`` (default, as MIT) uniform noise in ``[0, 1e-7)`` from ``np.random.default_rng(seed)``
    breaks ties; then the map is min-max normalised. NaN without fixations.
    """
    p, f = _prep(pred, fixation_map, resize)
    fix = (f > 0).ravel()
    if not fix.any() or fix.all():
        return float("nan")
    s = p.ravel()
    if jitter:
        s = s + np.random.default_rng(seed).random(s.size) / 1e7
    s = _minmax(s)
    n_pix, n_fix = s.size, int(fix.sum())
    th = np.sort(s[fix])[::-1]
    sorted_all = np.sort(s)
    above = n_pix - np.searchsorted(sorted_all, th, side="left")  # pixels with value >= threshold
    i = np.arange(1, n_fix + 1)
    tp = np.concatenate([[0.0], i / n_fix, [1.0]])
    fp = np.concatenate([[0.0], (above - i) / (n_pix - n_fix), [1.0]])
    return _trapezoid(tp, fp)


# --------------------------------------------------------------------------------------------------
# 001 chapter 3: Grad-CAM quality; 002: interpretability


@register_metric("diffgradcam", kind="region", source="001 ch. 3 (DiffGradCAM)")
def diff_gradcam(
    pred: ArrayLike, mask: ArrayLike, *, normalize: Literal["minmax", "none"] = "minmax", resize: ResizeMode = "nearest"
) -> float:
    """DiffGradCAM (001 ch. 3): mean CAM value inside the reference mask minus the mean outside.

    The CAM is min-max normalised to [0, 1] first (as pytorch-grad-cam outputs), unless
    ``normalize="none"``. NaN if the mask is empty or covers the whole map."""
    p, m = _prep(pred, mask, resize)
    m = m > 0.5
    if not m.any() or m.all():
        return float("nan")
    if normalize == "minmax":
        p = _minmax(p)
    return float(p[m].mean() - p[~m].mean())


@register_metric("ehr_auc", kind="region", source="001 ch. 3 / Wollek et al. 2022 (effective heat ratio)")
def ehr_auc(
    pred: ArrayLike,
    mask: ArrayLike,
    *,
    n_thresholds: int = 100,
    normalize: Literal["minmax", "none"] = "minmax",
    resize: ResizeMode = "nearest",
) -> float:
    """Area under the effective-heat-ratio curve (001 ch. 3, after Wollek et al.).

    The CAM is min-max normalised; at equidistant thresholds ``t_k = k / n_thresholds``,
    ``k = 0 .. n_thresholds - 1``, ``EHR(t) = |{cam > t} & mask| / |{cam > t}|`` (0 when no pixel
    passes); the score is the trapezoid area of EHR over ``t`` on ``[0, 1 - 1/n]``. An ideal CAM
    (zero outside the mask) scores about 1; a CAM inside-out scores 0. NaN for an empty mask.
    """
    p, m = _prep(pred, mask, resize)
    m = (m > 0.5).ravel()
    if not m.any():
        return float("nan")
    if normalize == "minmax":
        p = _minmax(p)
    t = np.arange(n_thresholds) / n_thresholds
    above, above_in = _count_above(p.ravel(), m, t)
    ehr = np.where(above > 0, above_in / np.maximum(above, 1), 0.0)
    return _trapezoid(ehr, t)


@register_metric("interpretability", kind="region", source="002 GG-CAM eq. 12")
def interpretable(pred: ArrayLike, organ_mask: ArrayLike, *, ties: Literal["first", "any"] = "first") -> float:
    """GG-CAM interpretability (002 eq. 12) for one image: 1.0 if the CAM's argmax lies inside the
    organ mask, else 0.0; the rate is the mean over images.

    As in the paper, the *mask* is scaled to the CAM's resolution (nearest), not the CAM to the mask.
    ``ties="first"``: ``np.argmax`` (first maximum in row-major order); ``"any"``: any maximum inside.
    """
    p = np.asarray(_as2d(pred, "prediction"), dtype=np.float64)
    m = resize_nearest(np.asarray(_as2d(organ_mask, "mask")) > 0.5, p.shape)
    if ties == "any":
        return float(bool(m[p == p.max()].any()))
    return float(bool(m.ravel()[int(np.argmax(p))]))


# --------------------------------------------------------------------------------------------------
# image-level AUC and bootstrap CIs (003 / 004)


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Image-level ROC AUC (``sklearn.metrics.roc_auc_score``); NaN when only one class is present.

    Scores holding NaN or inf raise :class:`NonFiniteMapError`."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(int).ravel()
    s = check_finite(np.asarray(y_score, dtype=np.float64).ravel(), "scores")
    if y.size == 0 or np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


register_metric("auc", kind="image", source="003/004 (sklearn roc_auc_score)")(roc_auc)


def bootstrap_ci(
    statistic: Callable[..., float] | Callable[..., np.ndarray],
    *arrays: Iterable,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    vectorized: bool = False,
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: the statistic on the data and its percentile-bootstrap interval.

    The one bootstrap of gazeprep (the evaluator's per-pair means and dataset-level IoUs, the AUCs
    and accuracy of :mod:`gazeprep.evaluate.classification` all call it):

    * **resamples**: ``n_boot`` resamples of the ``n`` rows (axis 0 of every array; the same rows
      for every array, so paired values stay paired), drawn with replacement at once as an
      ``(n_boot, n)`` index matrix ``np.random.default_rng(seed).integers(0, n, (n_boot, n))``;
    * **seed**: the same data, ``n_boot`` and ``seed`` give the same interval (no global RNG state);
    * **percentile interval**: the statistic of each resample, NaN results left out (e.g. an AUC of
      a resample holding one class only), then the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles
      of the rest (numpy's default linear interpolation). NaN bounds when no resample gives a number
      or there are no rows.

    003 used 30 resamples and the 2.5th / 97.5th percentiles (``n_boot=30``).

    Parameters
    ----------
    statistic:
        ``statistic(*arrays) -> float`` on one (resampled) set of rows; with ``vectorized`` it
        receives every resample at once (each array with a leading resample axis, shape
        ``(n_boot, n, ...)``) and returns the ``n_boot`` values (e.g. ``lambda v: v.mean(axis=1)``),
        which gives the same interval as the row-by-row call, faster.
    arrays:
        Equal-length arrays (at least one).
    n_boot, ci, seed:
        Number of resamples, coverage (0.95 for a 95% interval), seed of the resampling.
    """
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs[0])
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    if vectorized:
        est = float(np.asarray(statistic(*(a[None] for a in arrs)), dtype=np.float64)[0])
    else:
        est = float(statistic(*arrs))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    if vectorized:
        vals = np.asarray(statistic(*(a[idx] for a in arrs)), dtype=np.float64).reshape(n_boot)
    else:
        vals = np.array([statistic(*(a[i] for a in arrs)) for i in idx], dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return est, float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    with np.errstate(invalid="ignore"):  # +inf values (PSNR of identical maps) give an inf bound
        lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
    return est, float(lo), float(hi)


def _auc_ranks(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """ROC AUC as the Mann-Whitney statistic (average ranks for ties): the same number as
    ``roc_auc_score`` without its per-call overhead (used inside the bootstrap)."""
    from scipy.stats import rankdata

    y = np.asarray(y_true).astype(bool).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(np.asarray(y_score, dtype=np.float64).ravel())
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc(
    y_true: ArrayLike, y_score: ArrayLike, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Image-level AUC with a seeded percentile-bootstrap CI (003/004): ``(auc, low, high)``.

    The point estimate is ``roc_auc_score``; resamples use the equivalent rank formula."""
    y, s = np.asarray(y_true), check_finite(np.asarray(y_score, dtype=np.float64), "scores")
    _, lo, hi = bootstrap_ci(_auc_ranks, y, s, n_boot=n_boot, ci=ci, seed=seed)
    return roc_auc(y, s), lo, hi


def _resample_means(v: np.ndarray) -> np.ndarray:
    """Means over the last axis (one per resample; +inf values give +inf, silently)."""
    with np.errstate(invalid="ignore"):
        return v.mean(axis=-1)


def bootstrap_mean(
    values: ArrayLike, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-image values with a seeded percentile-bootstrap CI (:func:`bootstrap_ci`).

    NaN values (a metric undefined on that image) are left out first; the resamples are drawn from
    the remaining ``n`` values. ``(nan, nan, nan)`` when none is left."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    return bootstrap_ci(_resample_means, v, n_boot=n_boot, ci=ci, seed=seed, vectorized=True)
