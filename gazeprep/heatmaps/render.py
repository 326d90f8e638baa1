"""Gaussian gaze heatmaps: the rendering contract of DESIGN.md, fast.

Contract. Fixation ``i`` (grid position ``x_i, y_i``, per-axis sigmas ``sx_i, sy_i`` in grid pixels,
weight ``w_i``) contributes the normalised 2-D Gaussian density at every integer pixel of the output
grid::

    H[r, c] = sum_i w_i / (2 pi sx_i sy_i) * exp(-((c - x_i)^2 / (2 sx_i^2) + (r - y_i)^2 / (2 sy_i^2)))

Mass outside the image (and, when clipping, outside the fixation's shown rectangle) is dropped,
never reflected. Positions and sigmas are scaled into the grid by :class:`OutputGrid`.

How it is fast. The density is separable, and so is every clipping rectangle, so::

    H = Gy^T diag(w) Gx,   Gy[i, r] = N1(r; y_i, sy_i) [r in rows_i],  Gx[i, c] = N1(c; x_i, sx_i) [c in cols_i]

Each fixation costs one 1-D row profile and one 1-D column profile (``n x (H + W)`` exponentials
instead of ``n x H x W``); the sum over fixations is one BLAS matrix product per band of output
rows, restricted to the fixations whose truncated support reaches that band (and to the columns
they cover). The profiles of a case are built once and shared by all its windows (a window only
changes the weights). Profiles are cut at ``R`` sigmas with ``R`` chosen so that the dropped tails
of all fixations together stay below ``1e-7`` of the largest single-fixation peak ``max_i w_i p_i``.

Arithmetic is float32 (profiles computed with the centre split into integer and fraction so that
``index - centre`` keeps ~1e-7 px); measured against the float64 reference the maps agree to
< 1e-6 of the peak (6e-7 with 300 fixations at 3000 x 2500). Output arrays are float32, C order.

Clipping to the shown rectangle follows 004's ``get_gaussian``: the rectangle's bounds are rounded to
integer pixels ``[xmin, xmax) x [ymin, ymax)``; on a resized grid a pixel belongs to the rectangle
when its centre maps into ``[xmin - 0.5, xmax - 0.5) x [ymin - 0.5, ymax - 0.5)`` (the original pixel
areas). A fixation without a shown rectangle (null columns) is clipped to the image only.

Paper rules. A recipe named after a paper reproduces that paper's code instead (:class:`KernelRule`,
see :class:`gazeprep.recipes.RenderSpec`): ``kernel: discrete`` is the sampled kernel of
``scipy.ndimage.gaussian_filter`` / ``cv2.GaussianBlur`` (normalised over its taps; radius
``int(truncate * sigma + 0.5)`` or ``(ksize - 1) / 2``), and ``border: reflect`` / ``reflect101`` fold
the mass beyond the image border back in. The folding stays separable and needs no padded canvas:
per axis, every point contributes the 1-D kernel of each of its mirror images that reaches the image
(:func:`mirror_copies`; one image per reflection, as many reflections as the kernel is wide), evaluated
on the output grid; a point far from the border has one image, so the cost over ``drop`` is small.

:func:`naive_render` is the reference approach (one full density per fixation over the whole grid,
float64, no truncation, a Python loop over fixations) used by the tests and the benchmark.
:func:`render_case` is the entry point of the build pipeline: windows -> weights -> maps.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from gazeprep.errors import GazeprepError
from gazeprep.heatmaps.grid import EDGE_EPS, OutputGrid
from gazeprep.recipes import Recipe, RenderSpec, map_size_problem
from gazeprep.schema import reject

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_TAIL_TOL = 1e-7  # truncation budget relative to the largest single-fixation peak

__all__ = [
    "GaussianProfiles",
    "KernelRule",
    "PROFILE_BUDGET",
    "RenderedMap",
    "blas_threads",
    "keep_freed_memory",
    "mirror_copies",
    "naive_render",
    "normalize_map",
    "render_case",
    "render_points",
    "truncation_radius",
]


def blas_threads(n: int | None) -> contextlib.AbstractContextManager[object]:
    """Context limiting BLAS threads to ``n`` (``None``: unchanged).

    Rendering multiplies many small matrices; in a process pool (one worker per core) multi-threaded
    BLAS oversubscribes the cores and gets 5-30x slower. Uses ``threadpoolctl`` when installed
    (it comes with scikit-learn); without it this is a no-op - then set ``OPENBLAS_NUM_THREADS=1``
    in the workers.
    """
    global _CONTROLLER
    if n is None:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - optional
            _CONTROLLER = False
        else:
            _CONTROLLER = ThreadpoolController()  # scanning the loaded libraries costs ~2 ms: once
    if _CONTROLLER is False:  # pragma: no cover
        return contextlib.nullcontext()
    return _CONTROLLER.limit(limits=int(n), user_api="blas")


_CONTROLLER: Any = None  # threadpoolctl.ThreadpoolController once loaded; False: not installed
_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed heap memory for the maps instead of returning it to the OS.

    A 512 x 512 float32 map is 1 MiB: glibc serves it with a fresh ``mmap`` and unmaps it on free, so
    every map costs ~256 page faults (measured: 60% of a case's render time, 8 -> 3 ms for ten
    windows). Raising ``M_MMAP_THRESHOLD`` (32 MiB, glibc's maximum; a native-size map is ~30 MiB) and
    ``M_TRIM_THRESHOLD`` (256 MiB) keeps that memory in the process for reuse. Called once per process
    by :func:`render_case`; a no-op (returns False) where glibc's ``mallopt`` is unavailable.

    Kept because it is measured to matter end to end: the ``make bench`` 3000-case build
    (reflacx-label-specific at 512, 2 workers, same session) took 86.6 s of CPU without this call
    and 76.6 s with it (13% more without), at the same peak memory of the process tree (1.29 and
    1.30 GB).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    _MALLOC_TUNED = True
    try:
        import ctypes
        import ctypes.util
        import sys

        if not sys.platform.startswith("linux"):
            return False
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024) == 1
        ok &= libc.mallopt(m_trim_threshold, 256 * 1024 * 1024) == 1
        return bool(ok)
    except (OSError, AttributeError):  # pragma: no cover - no libc to load, or a libc without mallopt (non-glibc)
        return False


_NBANDS = 8  # row bands per render: measured best at 512 and native (4-16 are within 10%)


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------
def normalize_map(heatmap: np.ndarray, how: str, *, inplace: bool = False) -> np.ndarray | None:
    """Normalise a map; ``None`` when it cannot be (all zeros, or constant for ``minmax``).

    ``sum``: divide by the total (a probability map); ``max``: divide by the maximum;
    ``minmax``: ``(H - min) / (max - min)``; ``none``: unchanged. Never divides by zero.
    Returns float32 of the input shape (the input itself, modified, when ``inplace`` and it is float32).
    """
    h = np.asarray(heatmap, dtype=np.float32)
    out = h if inplace else None
    if how == "none":
        return h
    if how == "sum":
        total = float(h.sum(dtype=np.float64))
        return np.multiply(h, np.float32(1.0 / total), out=out) if total > 0 and math.isfinite(total) else None
    hi = float(h.max()) if h.size else 0.0
    if how == "max":
        return np.divide(h, np.float32(hi), out=out) if hi > 0 and math.isfinite(hi) else None
    if how == "minmax":
        lo = float(h.min()) if h.size else 0.0
        span = hi - lo
        if not (span > 0 and math.isfinite(span)):
            return None
        res = np.subtract(h, np.float32(lo), out=out)
        res /= np.float32(span)
        return res
    raise ValueError(f"unknown normalisation {how!r}")


# ---------------------------------------------------------------------------------------------
# the separable renderer
# ---------------------------------------------------------------------------------------------
def truncation_radius(n_points: int, min_sigmas: float = 6.0) -> float:
    """Kernel half-width in sigmas: at least ``min_sigmas``, wide enough that ``n_points`` cut tails
    (each at most ``exp(-R^2 / 2)`` of its own peak) stay below ``1e-7`` of the largest peak."""
    need = math.sqrt(2.0 * math.log(max(int(n_points), 1) / _TAIL_TOL))
    return max(float(min_sigmas), need)


def _profiles_1d(
    centre: np.ndarray, sigma: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise 1-D normalised Gaussian profiles on ``0..n-1``, zero outside ``[start, stop)``.

    ``centre``, ``sigma`` in grid pixels (shape (k,)); ``[lo, hi)`` the allowed pixel range
    (clipping). Returns (profiles float32 (k, n), start (k,), stop (k,)) where ``[start, stop)`` is
    the truncated, clipped support.
    """
    start = np.maximum(lo, np.floor(centre - radius * sigma)).astype(np.int64)
    stop = np.minimum(hi, np.ceil(centre + radius * sigma) + 1).astype(np.int64)
    start = np.clip(start, 0, n)
    stop = np.clip(stop, start, n)
    # float32 arithmetic; the centre is split into integer + fraction so that ``index - centre`` stays
    # exact to ~1e-7 px (a plain float32 subtraction would lose ~3e-5 px at index 3000)
    c_int = np.floor(centre)
    c_frac = (centre - c_int).astype(np.float32)
    inv = 1.0 / sigma
    d = np.arange(n, dtype=np.float32)[None, :] - c_int.astype(np.float32)[:, None]
    d -= c_frac[:, None]
    d *= inv.astype(np.float32)[:, None]
    d *= d
    d *= np.float32(-0.5)
    np.exp(d, out=d)
    d *= (inv / _SQRT_2PI).astype(np.float32)[:, None]
    pix = np.arange(n)
    d[(pix[None, :] < start[:, None]) | (pix[None, :] >= stop[:, None])] = 0.0
    return d, start, stop


@dataclass(frozen=True)
class KernelRule:
    """The kernel and border rule of a render (see :class:`gazeprep.recipes.RenderSpec`).

    Attributes
    ----------
    kernel:
        ``density`` (the contract: the normalised Gaussian density, cut where all tails together are
        below 1e-7 of the peak) or ``discrete`` (scipy.ndimage / OpenCV: ``exp(-d^2 / (2 sigma^2))``
        at the integer offsets ``|d| <= radius``, divided by its sum over them).
    border:
        ``drop``, ``reflect`` (mirror about the pixel edges ``-0.5`` and ``N - 0.5``, scipy) or
        ``reflect101`` (mirror about the edge pixels ``0`` and ``N - 1``, OpenCV).
    truncate_sigmas:
        ``density``: minimum half-width in sigmas; ``discrete``: radius ``int(truncate_sigmas *
        sigma + 0.5)`` original pixels (scipy's rule).
    kernel_size:
        ``discrete`` only: OpenCV's odd ``ksize``; radius ``(kernel_size - 1) // 2``.
    """

    kernel: str = "density"
    border: str = "drop"
    truncate_sigmas: float = 6.0
    kernel_size: int | None = None

    @classmethod
    def from_spec(cls, spec: RenderSpec) -> KernelRule:
        """The rule a :class:`gazeprep.recipes.RenderSpec` describes."""
        return cls(spec.kernel, spec.border, float(spec.truncate_sigmas), spec.kernel_size)

    @property
    def is_contract(self) -> bool:
        """True for the contract's rule (dropped border mass, continuous density)."""
        return self.kernel == "density" and self.border == "drop"

    def radius_px(self, sigma_px: np.ndarray, n_points: int) -> np.ndarray:
        """Kernel half-width in original pixels per point (float array)."""
        sigma_px = np.asarray(sigma_px, dtype=np.float64)
        if self.kernel == "discrete":
            if self.kernel_size is not None:
                return np.full(sigma_px.shape, float((int(self.kernel_size) - 1) // 2))
            return np.floor(self.truncate_sigmas * sigma_px + 0.5)  # scipy: int(truncate * sd + 0.5)
        return truncation_radius(n_points, self.truncate_sigmas) * sigma_px

    def norm(self, sigma_px: np.ndarray, radius_px: np.ndarray) -> np.ndarray:
        """Factor of ``exp(-d^2 / (2 sigma^2))`` per point: ``1 / (sqrt(2 pi) sigma)`` for the density,
        ``1 / sum_{|d| <= radius} exp(-d^2 / (2 sigma^2))`` (sum over integer ``d``) for the discrete
        kernel."""
        sigma_px = np.asarray(sigma_px, dtype=np.float64)
        if self.kernel != "discrete":
            return 1.0 / (_SQRT_2PI * sigma_px)
        out = np.empty(sigma_px.shape, dtype=np.float64)
        pairs = np.stack([sigma_px, radius_px], axis=1) if sigma_px.size else np.zeros((0, 2))
        uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
        inv = inv.ravel()
        for u, (sd, r) in enumerate(uniq):
            d = np.arange(-int(r), int(r) + 1, dtype=np.float64)
            out[inv == u] = 1.0 / np.exp(-0.5 / (sd * sd) * d * d).sum()
        return out


def mirror_copies(pos: np.ndarray, radius: np.ndarray, extent: int, border: str) -> tuple[np.ndarray, np.ndarray]:
    """Where the reflected copies of each point lie, along one axis.

    A point at ``p`` (original pixels) on an axis of ``extent`` pixels ``[0, extent)`` has, under
    ``reflect`` (mirrors at ``-0.5`` and ``extent - 0.5``, period ``P = 2 extent``), the images
    ``p + P t`` and ``-1 - p + P t``; under ``reflect101`` (mirrors at ``0`` and ``extent - 1``,
    ``P = 2 (extent - 1)``) the images ``p + P t`` and ``-p + P t``, each position once (at an edge
    pixel both families coincide). Folding the mass beyond the border back into the image is the same
    as adding the kernels of all images that reach the image (``|image - pixel| <= radius``), however
    many reflections that takes. ``drop`` has the point itself only. A one-pixel axis under
    ``reflect101`` (OpenCV reads its only pixel for every tap) behaves as ``reflect``.

    Returns ``(owner, position)``: the point index (sorted, ascending) and the image position of
    every copy, original pixels.
    """
    pos = np.asarray(pos, dtype=np.float64).ravel()
    k = pos.shape[0]
    if border == "drop" or k == 0:
        return np.arange(k), pos.copy()
    if border == "reflect" or extent == 1:
        period, mirror = 2.0 * extent, -1.0
    elif border == "reflect101":
        period, mirror = 2.0 * (extent - 1), 0.0
    else:
        raise ValueError(f"unknown border {border!r}")
    radius = np.broadcast_to(np.asarray(radius, dtype=np.float64), (k,))
    reach_lo, reach_hi = -0.5 - radius, extent - 0.5 + radius
    bases = (pos, mirror - pos)
    tmins, counts = [], []
    for fam, base in enumerate(bases):
        tmin = np.ceil((reach_lo - base) / period)
        count = np.maximum(np.floor((reach_hi - base) / period) - tmin + 1, 0).astype(np.int64)
        if fam == 1 and border == "reflect101" and extent > 1:
            # an edge-pixel point is its own mirror image: its second family repeats the first
            r = np.mod(2.0 * pos, period)
            count[(np.minimum(r, period - r) < 1e-9)] = 0
        tmins.append(tmin)
        counts.append(count)
    # per point: its first-family copies, then its second-family ones (owners come out sorted)
    per_point = counts[0] + counts[1]
    owner = np.repeat(np.arange(k), per_point)
    rank = np.arange(owner.shape[0]) - (np.cumsum(per_point) - per_point)[owner]
    second = rank >= counts[0][owner]
    t = np.where(second, tmins[1][owner] + rank - counts[0][owner], tmins[0][owner] + rank)
    image = np.where(second, bases[1][owner], bases[0][owner]) + period * t
    return owner, image


def _rule_profiles_1d(
    pos: np.ndarray,
    sigma: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    n: int,
    scale: float,
    offset: float,
    extent: int,
    rule: KernelRule,
    n_points: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-point 1-D profiles on a grid axis under a :class:`KernelRule` (border folding, kernels).

    ``pos``, ``sigma`` in original pixels (k,); grid position ``g = scale * u + offset``; ``[lo, hi)``
    the allowed grid pixels per point (the image, clipped); ``extent`` the image size along the axis
    (original pixels, where the border reflects). Each copy of :func:`mirror_copies` adds
    ``norm * exp(-d^2 / (2 sigma^2)) / scale`` at the grid pixels within its radius (``d`` in original
    pixels; ``1 / scale`` makes it a density per grid pixel, as the contract's profiles).
    Returns (profiles float32 (k, n), start (k,), stop (k,)).
    """
    k = pos.shape[0]
    radius = rule.radius_px(sigma, n_points)
    norm = rule.norm(sigma, radius) / scale
    owner, image = mirror_copies(pos, radius, extent, rule.border)
    # row order: one copy per point in rows 0..k-1 (a point without any copy gets an empty dummy row),
    # the further copies after them, so the first k rows are the profiles and the rest are added in
    n_copies = np.bincount(owner, minlength=k)
    first = np.cumsum(n_copies) - n_copies
    has = n_copies > 0
    extra = np.ones(owner.shape[0], dtype=bool)
    extra[first[has]] = False
    rows_owner = np.concatenate([np.arange(k), owner[extra]])
    rows_image = np.concatenate(
        [
            np.where(has, image[np.minimum(first, max(owner.shape[0] - 1, 0))] if owner.shape[0] else 0.0, np.nan),
            image[extra],
        ]
    )
    cg = scale * rows_image + offset
    sg = sigma[rows_owner] * scale
    half = radius[rows_owner] * scale
    # discrete kernels stop exactly at |d| = radius (integer offsets; EDGE_EPS absorbs rounding)
    with np.errstate(invalid="ignore"):
        start = np.maximum(lo[rows_owner], np.ceil(cg - half - EDGE_EPS))
        stop = np.minimum(hi[rows_owner], np.floor(cg + half + EDGE_EPS) + 1)
    dummy = ~np.isfinite(cg)
    start[dummy], stop[dummy], cg[dummy] = 0, 0, 0.0
    start = np.clip(start.astype(np.int64), 0, n)
    stop = np.clip(stop.astype(np.int64), start, n)
    c_int = np.floor(cg)
    c_frac = (cg - c_int).astype(np.float32)
    d = np.arange(n, dtype=np.float32)[None, :] - c_int.astype(np.float32)[:, None]
    d -= c_frac[:, None]
    d *= (1.0 / sg).astype(np.float32)[:, None]
    d *= d
    d *= np.float32(-0.5)
    np.exp(d, out=d)
    d *= norm[rows_owner].astype(np.float32)[:, None]
    pix = np.arange(n)
    d[(pix[None, :] < start[:, None]) | (pix[None, :] >= stop[:, None])] = 0.0
    if rows_owner.shape[0] == k:
        return d, start, stop
    prof = d[:k]
    p_start, p_stop = start[:k].copy(), stop[:k].copy()
    empty = p_stop <= p_start  # a copy that misses the grid does not widen the support
    p_start[empty], p_stop[empty] = n, 0
    x_owner, x_start, x_stop = rows_owner[k:], start[k:], stop[k:]
    x_rank = np.arange(x_owner.shape[0]) - (np.cumsum(n_copies - has) - (n_copies - has))[x_owner]
    for r in range(int(x_rank.max()) + 1):  # rank by rank: no owner twice in one fancy-index add
        m = x_rank == r
        prof[x_owner[m]] += d[k:][m]
        ok = m & (x_stop > x_start)
        p_start[x_owner[ok]] = np.minimum(p_start[x_owner[ok]], x_start[ok])
        p_stop[x_owner[ok]] = np.maximum(p_stop[x_owner[ok]], x_stop[ok])
    p_stop = np.maximum(p_stop, p_start)
    return prof, p_start, p_stop


class GaussianProfiles:
    """Per-point 1-D profiles on one grid; :meth:`render` sums any weighting of them.

    Parameters
    ----------
    grid:
        The output grid.
    x_px, y_px:
        Positions in original-image pixels, shape (n,).
    sx_px, sy_px:
        Per-axis sigmas in original-image pixels, shape (n,), > 0.
    clip_rects:
        Optional (n, 4) array ``[xmin, ymin, xmax, ymax]`` of integer original-pixel bounds
        (``[xmin, xmax)`` columns, as 004's rounded shown rectangle); a row of NaN means no clip.
    truncate_sigmas:
        Minimum truncation half-width in sigmas (see :func:`truncation_radius`).
    rule:
        A :class:`KernelRule` (border folding, discrete kernels); ``None`` or the contract's rule
        keeps the contract's arithmetic bit for bit (``truncate_sigmas`` applies). The border
        reflects at the image edges ``grid.image_width_px`` / ``grid.image_height_px``.
    """

    def __init__(
        self,
        grid: OutputGrid,
        x_px: ArrayLike,
        y_px: ArrayLike,
        sx_px: ArrayLike,
        sy_px: ArrayLike,
        clip_rects: ArrayLike | None = None,
        *,
        truncate_sigmas: float = 6.0,
        rule: KernelRule | None = None,
    ) -> None:
        self.grid = grid
        x_px = np.asarray(x_px, dtype=np.float64).ravel()
        y_px = np.asarray(y_px, dtype=np.float64).ravel()
        sx_px = np.broadcast_to(np.asarray(sx_px, dtype=np.float64), x_px.shape)
        sy_px = np.broadcast_to(np.asarray(sy_px, dtype=np.float64), x_px.shape)
        n = x_px.shape[0]
        if y_px.shape[0] != n:
            raise ValueError("x_px and y_px differ in length")
        if n and not (np.all(sx_px > 0) and np.all(sy_px > 0)):
            raise ValueError("sigmas must be positive")
        self.n = n
        xg, yg = grid.to_grid(x_px, y_px)
        sxg = sx_px * grid.scale_x
        syg = sy_px * grid.scale_y
        # allowed ranges: the image area [0, W) x [0, H), intersected with the clip rectangle
        cs, ce = grid.pixel_range(0, grid.image_width_px, "x")
        rs, re_ = grid.pixel_range(0, grid.image_height_px, "y")
        col_lo, col_hi = np.full(n, int(cs), dtype=np.int64), np.full(n, int(ce), dtype=np.int64)
        row_lo, row_hi = np.full(n, int(rs), dtype=np.int64), np.full(n, int(re_), dtype=np.int64)
        if clip_rects is not None and n:
            rects = np.asarray(clip_rects, dtype=np.float64).reshape(n, 4)
            has = np.all(np.isfinite(rects), axis=1)
            if has.any():
                r = rects[has]
                cs, ce = grid.pixel_range(r[:, 0], r[:, 2], "x")
                rs, re_ = grid.pixel_range(r[:, 1], r[:, 3], "y")
                col_lo[has] = np.maximum(col_lo[has], cs)
                col_hi[has] = np.minimum(col_hi[has], ce)
                row_lo[has] = np.maximum(row_lo[has], rs)
                row_hi[has] = np.minimum(row_hi[has], re_)
        if rule is None or rule.is_contract:
            radius = truncation_radius(n, truncate_sigmas)
            self.radius: float | None = radius  # None: the rule's kernel has no truncation radius
            self.gx, self.col_start, self.col_stop = _profiles_1d(xg, sxg, col_lo, col_hi, grid.width, radius)
            self.gy, self.row_start, self.row_stop = _profiles_1d(yg, syg, row_lo, row_hi, grid.height, radius)
        else:
            self.radius = truncation_radius(n, rule.truncate_sigmas) if rule.kernel == "density" else None
            self.gx, self.col_start, self.col_stop = _rule_profiles_1d(
                x_px,
                np.asarray(sx_px, dtype=np.float64),
                col_lo,
                col_hi,
                grid.width,
                grid.scale_x,
                grid.offset_x,
                grid.image_width_px,
                rule,
                n,
            )
            self.gy, self.row_start, self.row_stop = _rule_profiles_1d(
                y_px,
                np.asarray(sy_px, dtype=np.float64),
                row_lo,
                row_hi,
                grid.height,
                grid.scale_y,
                grid.offset_y,
                grid.image_height_px,
                rule,
                n,
            )

    def render(self, weights: ArrayLike) -> np.ndarray:
        """``sum_i weights[i] * outer(gy[i], gx[i])`` as float32 (height, width); zero weights are skipped
        (weights are >= 0 except for MT-UNet's wrapped int8 counts)."""
        H, W = self.grid.height, self.grid.width
        if self.n == 0:
            return np.zeros((H, W), dtype=np.float32)
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape[0] != self.n:
            raise ValueError(f"expected {self.n} weights, got {w.shape[0]}")
        sel = np.flatnonzero((w != 0) & (self.row_stop > self.row_start) & (self.col_stop > self.col_start))
        if sel.size == 0:
            return np.zeros((H, W), dtype=np.float32)
        # every output element is written exactly once (no zero-fill pass: the maps are memory-bound)
        out = np.empty((H, W), dtype=np.float32)
        rs, re_ = self.row_start[sel], self.row_stop[sel]
        top, bottom = int(rs.min()), int(re_.max())
        out[:top] = 0.0
        out[bottom:] = 0.0
        # bands of output rows; each band multiplies only the fixations whose support reaches it
        band = max(32, -(-(bottom - top) // _NBANDS))
        ws = w.astype(np.float32)
        for b0 in range(top, bottom, band):
            b1 = min(b0 + band, bottom)
            hit = (rs < b1) & (re_ > b0)
            if not hit.any():
                out[b0:b1] = 0.0
                continue
            m = sel[hit]
            c0, c1 = int(self.col_start[m].min()), int(self.col_stop[m].max())
            out[b0:b1, :c0] = 0.0
            out[b0:b1, c1:] = 0.0
            a = self.gy[m, b0:b1]  # (k, band)
            bmat = self.gx[m, c0:c1] * ws[m, None]  # (k, cols)
            np.matmul(a.T, bmat, out=out[b0:b1, c0:c1])
        return out


class _ChunkedProfiles:
    """Same interface as :class:`GaussianProfiles` for point sets too large to keep all profiles in
    memory (e.g. 1 kHz gaze samples at native size): each :meth:`render` builds the profiles of the
    points it needs, ``chunk`` at a time."""

    def __init__(
        self,
        grid: OutputGrid,
        x_px: np.ndarray,
        y_px: np.ndarray,
        sx_px: np.ndarray,
        sy_px: np.ndarray,
        clip_rects: np.ndarray | None,
        *,
        truncate_sigmas: float,
        chunk: int,
        rule: KernelRule | None = None,
    ) -> None:
        self.grid, self.n, self.chunk = grid, len(x_px), max(1, int(chunk))
        self.x, self.y, self.sx, self.sy, self.clip = x_px, y_px, sx_px, sy_px, clip_rects
        # the tail budget is for all points together, not per chunk
        self.truncate = truncation_radius(self.n, truncate_sigmas if rule is None else rule.truncate_sigmas)
        self.rule = rule
        if rule is not None and rule.kernel == "density":
            self.rule = replace(rule, truncate_sigmas=self.truncate)

    def render(self, weights: ArrayLike) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64).ravel()
        sel = np.flatnonzero(w > 0)
        out = np.zeros(self.grid.shape, dtype=np.float32)
        for s0 in range(0, sel.size, self.chunk):
            m = sel[s0 : s0 + self.chunk]
            prof = GaussianProfiles(
                self.grid,
                self.x[m],
                self.y[m],
                self.sx[m],
                self.sy[m],
                None if self.clip is None else self.clip[m],
                truncate_sigmas=self.truncate,
                rule=self.rule,
            )
            out += prof.render(w[m])
        return out


#: Largest profile store kept for a case (float32 elements, n_points x (height + width)); 256 MiB.
PROFILE_BUDGET = 64 * 1024 * 1024


def _profiles_for(
    grid: OutputGrid,
    x: np.ndarray,
    y: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    clip: np.ndarray | None,
    truncate_sigmas: float,
    rule: KernelRule | None = None,
) -> GaussianProfiles | _ChunkedProfiles:
    n = len(x)
    per_point = grid.height + grid.width
    if n * per_point <= PROFILE_BUDGET:
        return GaussianProfiles(grid, x, y, sx, sy, clip, truncate_sigmas=truncate_sigmas, rule=rule)
    return _ChunkedProfiles(
        grid, x, y, sx, sy, clip, truncate_sigmas=truncate_sigmas, chunk=PROFILE_BUDGET // (4 * per_point), rule=rule
    )


def render_points(
    grid: OutputGrid,
    x_px: ArrayLike,
    y_px: ArrayLike,
    sx_px: ArrayLike,
    sy_px: ArrayLike,
    weights: ArrayLike,
    clip_rects: ArrayLike | None = None,
    *,
    truncate_sigmas: float = 6.0,
    rule: KernelRule | None = None,
) -> np.ndarray:
    """Render weighted Gaussians on ``grid`` (unnormalised), float32 (height, width).

    Same arguments as :class:`GaussianProfiles` plus ``weights`` (n,). Positions and sigmas are in
    original-image pixels.
    """
    prof = GaussianProfiles(grid, x_px, y_px, sx_px, sy_px, clip_rects, truncate_sigmas=truncate_sigmas, rule=rule)
    return prof.render(weights)


def naive_render(
    grid: OutputGrid,
    x_px: ArrayLike,
    y_px: ArrayLike,
    sx_px: ArrayLike,
    sy_px: ArrayLike,
    weights: ArrayLike,
    clip_rects: ArrayLike | None = None,
    *,
    rule: KernelRule | None = None,
) -> np.ndarray:
    """Reference renderer: one full 2-D density per fixation over the whole grid (float64).

    With a non-contract ``rule`` (border folding, discrete kernels; no ``clip_rects``) it stamps one
    full-grid 2-D kernel for every pair of the fixation's mirror images (:func:`mirror_copies` per
    axis), each cut at the rule's radius, instead.

    This is the approach of paper 004's ``get_gaussian`` (one normalised PDF per fixation over the
    shown area), evaluated at the grid pixels with positions and sigmas mapped into the grid; no
    truncation, no separability. A grid pixel counts when its centre, mapped back to the original
    image, lies in the image area ``[-0.5, W - 0.5) x [-0.5, H - 0.5)`` and, with ``clip_rects``,
    in ``[xmin - 0.5, xmax - 0.5) x [ymin - 0.5, ymax - 0.5)``.
    """
    if rule is not None and not rule.is_contract:
        return _naive_rule_render(grid, x_px, y_px, sx_px, sy_px, weights, rule)
    H, W = grid.height, grid.width
    cols = np.arange(W, dtype=np.float64)
    rows = np.arange(H, dtype=np.float64)
    xo, _ = grid.from_grid(cols, 0.0)  # grid pixel centres in original coordinates
    _, yo = grid.from_grid(0.0, rows)
    ex, ey = EDGE_EPS / grid.scale_x, EDGE_EPS / grid.scale_y  # the grid's tie tolerance, in original pixels
    col_in = (xo >= -0.5 - ex) & (xo < grid.image_width_px - 0.5 - ex)
    row_in = (yo >= -0.5 - ey) & (yo < grid.image_height_px - 0.5 - ey)
    x_px = np.asarray(x_px, dtype=np.float64).ravel()
    y_px = np.asarray(y_px, dtype=np.float64).ravel()
    n = x_px.shape[0]
    sx_px = np.broadcast_to(np.asarray(sx_px, dtype=np.float64), (n,))
    sy_px = np.broadcast_to(np.asarray(sy_px, dtype=np.float64), (n,))
    w = np.asarray(weights, dtype=np.float64).ravel()
    rects = None if clip_rects is None else np.asarray(clip_rects, dtype=np.float64).reshape(n, 4)
    out = np.zeros((H, W), dtype=np.float64)
    for i in range(n):
        if w[i] == 0:
            continue
        ci, ri = col_in, row_in
        if rects is not None and np.all(np.isfinite(rects[i])):
            xmin, ymin, xmax, ymax = rects[i]
            ci = ci & (xo >= xmin - 0.5 - ex) & (xo < xmax - 0.5 - ex)
            ri = ri & (yo >= ymin - 0.5 - ey) & (yo < ymax - 0.5 - ey)
        cidx, ridx = np.flatnonzero(ci), np.flatnonzero(ri)
        if cidx.size == 0 or ridx.size == 0:
            continue
        # the shown area is a rectangle of the grid: evaluate the full 2-D density over it
        c0, c1, r0, r1 = cidx[0], cidx[-1] + 1, ridx[0], ridx[-1] + 1
        xi, yi = grid.to_grid(x_px[i], y_px[i])
        sx, sy = sx_px[i] * grid.scale_x, sy_px[i] * grid.scale_y
        cc, rr = np.meshgrid(cols[c0:c1], rows[r0:r1])
        dens = np.exp(-((cc - xi) ** 2 / (2 * sx * sx) + (rr - yi) ** 2 / (2 * sy * sy))) / (2 * np.pi * sx * sy)
        out[r0:r1, c0:c1] += w[i] * dens
    return out


def _naive_rule_render(
    grid: OutputGrid,
    x_px: ArrayLike,
    y_px: ArrayLike,
    sx_px: ArrayLike,
    sy_px: ArrayLike,
    weights: ArrayLike,
    rule: KernelRule,
) -> np.ndarray:
    """:func:`naive_render` under a :class:`KernelRule`: a full-grid 2-D stamp per pair of mirror images."""
    H, W = grid.height, grid.width
    xo, _ = grid.from_grid(np.arange(W, dtype=np.float64), 0.0)
    _, yo = grid.from_grid(0.0, np.arange(H, dtype=np.float64))
    ex, ey = EDGE_EPS / grid.scale_x, EDGE_EPS / grid.scale_y
    col_in = (xo >= -0.5 - ex) & (xo < grid.image_width_px - 0.5 - ex)
    row_in = (yo >= -0.5 - ey) & (yo < grid.image_height_px - 0.5 - ey)
    x_px = np.asarray(x_px, dtype=np.float64).ravel()
    y_px = np.asarray(y_px, dtype=np.float64).ravel()
    n = x_px.shape[0]
    sx_px = np.broadcast_to(np.asarray(sx_px, dtype=np.float64), (n,))
    sy_px = np.broadcast_to(np.asarray(sy_px, dtype=np.float64), (n,))
    w = np.asarray(weights, dtype=np.float64).ravel()
    rx, ry = rule.radius_px(sx_px, n), rule.radius_px(sy_px, n)
    nx, ny = rule.norm(sx_px, rx), rule.norm(sy_px, ry)
    cc, rr = np.meshgrid(xo, yo)
    inside = row_in[:, None] & col_in[None, :]
    out = np.zeros((H, W), dtype=np.float64)
    for i in range(n):
        if w[i] == 0:
            continue
        _, mxs = mirror_copies(x_px[i : i + 1], rx[i : i + 1], grid.image_width_px, rule.border)
        _, mys = mirror_copies(y_px[i : i + 1], ry[i : i + 1], grid.image_height_px, rule.border)
        for my in mys:
            for mx in mxs:
                dx, dy = cc - mx, rr - my
                k = nx[i] * ny[i] * np.exp(-(dx * dx / (2 * sx_px[i] ** 2) + dy * dy / (2 * sy_px[i] ** 2)))
                k[(np.abs(dx) > rx[i] + 1e-9) | (np.abs(dy) > ry[i] + 1e-9) | ~inside] = 0.0
                out += w[i] * k
    return out / (grid.scale_x * grid.scale_y)


# ---------------------------------------------------------------------------------------------
# cases: windows -> weights -> maps
# ---------------------------------------------------------------------------------------------
@dataclass
class RenderedMap:
    """One target's heatmap.

    Attributes
    ----------
    array:
        float32 (height, width) on the output grid, normalised per the recipe.
    n_fixations:
        Distinct fixations (or gaze samples) with positive weight in the target's windows.
    total_weight:
        Sum of their weights over the target's windows, before normalisation (seconds for duration
        weights, a count for ``count``).
    target:
        The target id (label id, ``"full"``, anatomy target or phrase id).
    n_windows:
        Windows that were rendered (empty windows skipped by policy excluded).
    grid:
        The :class:`OutputGrid` of ``array`` (maps original-image pixels to it and back).
    """

    array: np.ndarray
    n_fixations: int
    total_weight: float
    target: str = ""
    n_windows: int = 0
    grid: OutputGrid | None = None


def _col(df: pl.DataFrame, name: str, default: float = np.nan) -> np.ndarray:
    """A column as float64 numpy (nulls -> NaN); ``default`` everywhere when the column is absent."""
    if name not in df.columns:
        return np.full(df.height, default, dtype=np.float64)
    s = df.get_column(name)
    if s.dtype != pl.Float64:
        s = s.cast(pl.Float64)
    return np.asarray(s.to_numpy(), dtype=np.float64)


def _first_str(df: pl.DataFrame, name: str) -> str | None:
    if name in df.columns and df.height:
        v = df.get_column(name)[0]
        return None if v is None else str(v)
    return None


def render_case(
    fixations: pl.DataFrame,
    windows: pl.DataFrame,
    recipe: Recipe,
    *,
    image_height_px: int,
    image_width_px: int,
    masks: dict[str, np.ndarray] | None = None,
    blas_threads_limit: int | None = 1,
    case: Mapping | None = None,
) -> tuple[dict[str, RenderedMap], list[dict]]:
    """Render every target of one case.

    Parameters
    ----------
    fixations:
        The case's rows of the ``fixations`` table (``t_start_s``, ``t_end_s``, ``x_px``, ``y_px``,
        ``px_per_deg_x/y``, ``shown_*_px``) or of ``gaze_samples`` (``t_s`` instead of the start/end
        times: point events). Positions in original-image pixels.
    windows:
        The case's rows of the ``windows`` table (``target``, ``t_start_s``, ``t_end_s``; a null start
        or end is open). A fixation belongs to a window when ``t_end > w_start and t_start <= w_end``
        (004's rule); a point event when ``w_start <= t <= w_end``.
    recipe:
        Gives sigma, weighting, clipping, normalisation, aggregation, empty-window policy and grid.
    image_height_px, image_width_px:
        Original image size.
    masks:
        Optional ``{target: bool array (image_height_px, image_width_px)}``; fixations whose rounded
        position is outside the target's mask (or outside the image) are dropped for that target.
    blas_threads_limit:
        BLAS threads while rendering (default 1: right for a process pool; ``None`` leaves the
        setting alone). See :func:`blas_threads`.
    case:
        The case's row of the ``cases`` table (a mapping). Only ``point_filter: mt-unet`` reads it:
        the EGD-CXR screen layout (``pad_*_px``) decides where MT-UNet's code put gaze that was off the
        image's screen area.

    Returns
    -------
    (maps, rejects):
        ``maps[target]`` is a :class:`RenderedMap` on the recipe's output grid (insertion order = first
        appearance in ``windows``); ``rejects`` are rows for the ``rejects`` table (stage ``render``):
        empty windows skipped by policy, targets left without a map, fixations without pixels per
        degree when sigma is in degrees.
    """
    keep_freed_memory()
    with blas_threads(blas_threads_limit):
        return _render_case(fixations, windows, recipe, int(image_height_px), int(image_width_px), masks, case)


def _mtunet_off_area_pixel(case: Mapping | None, H: int, W: int) -> tuple[bool, tuple[int, int] | None]:
    """``(layout_known, pixel)``: where MT-UNet's ``get_gaze_dot`` puts gaze that was off the image's
    screen area (``None``: it drops it).

    EGD-CXR's release wrote ``X_ORIGINAL = int(W' / screen_w * -1)`` for such gaze (``W'`` the width
    padded to even, ``screen_w = 1920 - left - right`` the image's width on screen; the same for y
    with 1080), and ``get_gaze_dot`` keeps ``0 <= X < W``: an image smaller than its screen area in
    both axes gets all its off-area gaze at pixel (0, 0)."""
    if case is None:
        return False, None
    from gazeprep.datasets.egd import SCREEN_H, SCREEN_W

    try:
        top, bottom = int(case["pad_top_px"]), int(case["pad_bottom_px"])
        left, right = int(case["pad_left_px"]), int(case["pad_right_px"])
    except (KeyError, TypeError, ValueError):
        return False, None
    sw, sh = SCREEN_W - left - right, SCREEN_H - top - bottom
    if sw <= 0 or sh <= 0:
        return False, None
    px = int((W + W % 2) / sw * -1)  # int() truncates towards zero, as the release's code
    py = int((H + H % 2) / sh * -1)
    return True, ((px, py) if (0 <= px < W and 0 <= py < H) else None)


@dataclass
class _CaseLog:
    """The ``render`` rejects rows of one case, in the order they arise."""

    dataset: str
    case_id: str | None
    rows: list[dict] = field(default_factory=list)

    def reject(self, reason: str, file: str | None = None) -> None:
        self.rows.append(reject(self.dataset, self.case_id, "render", file, None, reason))


@dataclass
class _CasePoints:
    """The render events of one case after the recipe's point rules; arrays of length ``n`` (all events).

    ``t0``, ``t1``: start and end in seconds (equal for point events); ``x``, ``y``: positions in original
    pixels (rounded, or moved by MT-UNet's off-area rule, where the recipe says so); ``sx``, ``sy``: sigmas in
    original pixels; ``valid``: the events that take part in the render; ``duration``: ``max(t1 - t0, 0)``.
    """

    t0: np.ndarray
    t1: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    valid: np.ndarray
    point_events: bool

    @property
    def duration(self) -> np.ndarray:
        return np.maximum(self.t1 - self.t0, 0.0)


#: A window's map before aggregation: (map or shared map, per-event weights, map-sharing key; None = own map).
_WindowMap = tuple[np.ndarray, np.ndarray, tuple | None]


def _render_case(
    fixations: pl.DataFrame,
    windows: pl.DataFrame,
    recipe: Recipe,
    H: int,
    W: int,
    masks: dict[str, np.ndarray] | None,
    case: Mapping | None = None,
) -> tuple[dict[str, RenderedMap], list[dict]]:
    """:func:`render_case` without the process settings: points -> distinct profiles -> windows -> maps."""
    spec = recipe.render
    # EGD-CXR's canvas: odd sizes padded by one zero row/column at the bottom/right (its l.258-261)
    Hc, Wc = (H + H % 2, W + W % 2) if spec.pad_to_even else (H, W)
    grid = OutputGrid.from_spec(recipe.output, Hc, Wc)
    crop = spec.pad_to_even and recipe.output.size == "native" and (Hc, Wc) != (H, W)
    dataset = _first_str(fixations, "dataset") or _first_str(windows, "dataset") or recipe.dataset
    log = _CaseLog(dataset, _first_str(fixations, "case_id") or _first_str(windows, "case_id"))

    too_big = map_size_problem(*grid.shape)  # native size: the recipe's memory limit, per case
    if too_big:
        log.reject(f"image of {H} x {W} px: {too_big}; case not rendered")
        return {}, log.rows

    pts = _case_points(fixations, spec, H, W, (Hc, Wc), case, log)
    renderer = _WindowRenderer(pts, fixations, spec, grid)
    mask_filter = _MaskFilter(masks, pts.x, pts.y, H, W, log.case_id)
    per_target, uses = _render_windows(windows, renderer, mask_filter, spec.empty_window, log)
    maps = _target_maps(per_target, uses, spec, grid, (H, W) if crop else None, log)
    if renderer.wrapped_pixels:
        _report_int8_wrap(renderer.wrapped_pixels, spec.int8_count_wrap, log)
    return maps, log.rows


# --------------------------------------------------------------------------------- case stage 1: points
def _case_points(
    fixations: pl.DataFrame,
    spec: RenderSpec,
    H: int,
    W: int,
    canvas: tuple[int, int],
    case: Mapping | None,
    log: _CaseLog,
) -> _CasePoints:
    """The events of ``fixations`` (fixations, or gaze samples as point events) under the recipe's point
    filter, position rounding, image test and sigma rule; ``canvas`` is the (height, width) rendered on
    (the image, padded to even for EGD-CXR's code)."""
    point_events = "t_s" in fixations.columns and "t_start_s" not in fixations.columns
    if point_events:
        t0 = t1 = _col(fixations, "t_s")
    else:
        t0, t1 = _col(fixations, "t_start_s"), _col(fixations, "t_end_s")
    x, y = _col(fixations, "x_px"), _col(fixations, "y_px")
    valid = np.isfinite(x) & np.isfinite(y) & np.isfinite(t0) & np.isfinite(t1)
    x, y = _apply_point_filter(spec, x, y, valid, H, W, case, log)
    if spec.position_rounding == "floor":
        x, y = np.floor(x), np.floor(y)
    elif spec.position_rounding == "round":
        x, y = np.rint(x), np.rint(y)
    if spec.drop_outside_image and spec.point_filter == "contract":
        Hc, Wc = canvas
        valid &= (x >= 0) & (x < Wc) & (y >= 0) & (y < Hc)
    sx, sy = _sigmas_px(fixations, spec, valid, log)
    return _CasePoints(t0, t1, x, y, sx, sy, valid, point_events)


def _apply_point_filter(
    spec: RenderSpec,
    x: np.ndarray,
    y: np.ndarray,
    valid: np.ndarray,
    H: int,
    W: int,
    case: Mapping | None,
    log: _CaseLog,
) -> tuple[np.ndarray, np.ndarray]:
    """The paper codes' point tests (``point_filter``): narrows ``valid`` in place and returns the
    positions, moved where MT-UNet's code moves off-area gaze (new arrays then)."""
    if spec.point_filter == "contract":
        return x, y
    # the codes' point tests read the unrounded positions (gazeprep's EGD positions are the release's
    # mapping before int(), on the width/height padded to even)
    He, We = H + H % 2, W + W % 2
    on_area = (x > 0) & (x < We) & (y > 0) & (y < He)  # EGD-CXR: strictly inside the shown image area
    if spec.point_filter == "egd-cxr":
        # process_eye_gaze_table: off-area gaze becomes int(-H'/h) <= 0 and `if y_original_in_pixels > 0`
        # drops it, and the image's first row with it; x may land in the padded column
        valid &= on_area & (np.floor(y) >= 1)
        if not spec.pad_to_even:
            valid &= (x < W) & (y < H)
    elif spec.point_filter == "mt-unet":
        # get_gaze_dot: 0 <= int(X_ORIGINAL) < W, 0 <= int(Y_ORIGINAL) < H on the release's integers
        moved = valid & ~on_area
        n_valid = int(valid.sum())
        valid &= on_area & (np.floor(x) < W) & (np.floor(y) < H)
        if moved.any():
            known, off_px = _mtunet_off_area_pixel(case, H, W)
            if off_px is not None:
                x, y = x.copy(), y.copy()
                x[moved], y[moved] = float(off_px[0]), float(off_px[1])
                valid |= moved
            elif not known:
                log.reject(
                    f"{int(moved.sum())} of {n_valid} samples are off the image's screen area and the screen "
                    "layout is unknown; dropped (MT-UNet's code counts them at pixel (0, 0) when the image is "
                    "smaller than its screen area)"
                )
    return x, y


def _sigmas_px(
    fixations: pl.DataFrame, spec: RenderSpec, valid: np.ndarray, log: _CaseLog
) -> tuple[np.ndarray, np.ndarray]:
    """Per-event sigmas (x, y) in original pixels; with sigma in degrees, events without pixels per
    degree are dropped from ``valid`` (in place) and reported."""
    n_all = fixations.height
    if spec.sigma.unit != "deg":
        return np.full(n_all, spec.sigma.value), np.full(n_all, spec.sigma.value)
    sx = _col(fixations, "px_per_deg_x") * spec.sigma.value
    sy = _col(fixations, "px_per_deg_y") * spec.sigma.value
    bad = valid & ~((sx > 0) & (sy > 0) & np.isfinite(sx) & np.isfinite(sy))
    if bad.any():
        log.reject(
            f"{int(bad.sum())} of {n_all} fixations have no pixels-per-degree; dropped (sigma in degrees)",
            "fixations",
        )
        valid &= ~bad
    return sx, sy


# ------------------------------------------------------------------------------ case stage 2: profiles
class _WindowRenderer:
    """The profiles of a case's distinct valid points, built once, and the map of one window's weights.

    Points with the same position, sigmas and shown rectangle share one profile; their weights add up
    (gaze samples repeat pixels). ``wrapped_pixels`` is the largest number of pixels, over the windows
    rendered so far, whose MT-UNet int8 count reached 128.
    """

    def __init__(self, pts: _CasePoints, fixations: pl.DataFrame, spec: RenderSpec, grid: OutputGrid) -> None:
        self.pts = pts
        self.spec = spec
        self.shape = grid.shape
        self.duration = pts.duration
        clip = None
        if spec.clip_to_shown_rect:
            clip = np.stack(
                [
                    np.round(_col(fixations, c))
                    for c in ("shown_xmin_px", "shown_ymin_px", "shown_xmax_px", "shown_ymax_px")
                ],
                axis=1,
            )
        self.idx, self.inverse, rep = _distinct_points(pts, clip)
        rule = KernelRule.from_spec(spec)
        self.profiles = _profiles_for(
            grid,
            pts.x[rep],
            pts.y[rep],
            pts.sx[rep],
            pts.sy[rep],
            None if clip is None else clip[rep],
            spec.truncate_sigmas,
            None if rule.is_contract else rule,
        )
        self.n_unique = rep.shape[0]
        # MT-UNet's count image is int8: per-pixel counts of 128 or more wrap negative
        self.int8_counts = (
            spec.weight == "count"
            and spec.position_rounding != "none"
            and (spec.int8_count_wrap or spec.point_filter == "mt-unet")
        )
        self.wrapped_pixels = 0

    def weights(self, ws: float, we: float, keep: np.ndarray | None) -> np.ndarray:
        """Per-event weight (length n) in the window ``[ws, we]`` s, restricted to ``keep`` when given."""
        pts, weight = self.pts, self.spec.weight
        if pts.point_events:
            sel = pts.valid & (pts.t0 >= ws) & (pts.t0 <= we)
        else:
            sel = pts.valid & (pts.t1 > ws) & (pts.t0 <= we)
        if keep is not None:
            sel &= keep
        if weight == "count":
            return sel.astype(np.float64)
        if weight == "duration":
            return np.where(sel, self.duration, 0.0)
        # window_overlap
        return np.where(sel, np.maximum(np.minimum(pts.t1, we) - np.maximum(pts.t0, ws), 0.0), 0.0)

    def render(self, w: np.ndarray) -> np.ndarray | None:
        """The window's map for per-event weights ``w`` (normalised when the recipe normalises each
        window); ``None`` when it has no weight on the image or cannot be normalised."""
        spec = self.spec
        n_unique = self.n_unique
        w_unique = np.bincount(self.inverse, weights=w[self.idx], minlength=n_unique) if n_unique else np.zeros(0)
        if self.int8_counts:
            over = w_unique >= 128
            self.wrapped_pixels = max(self.wrapped_pixels, int(over.sum()))
            if spec.int8_count_wrap and over.any():
                w_unique = np.mod(w_unique + 128.0, 256.0) - 128.0  # numpy's int8 cast of the counts
        if not np.any(w_unique != 0):
            return None
        raw = self.profiles.render(w_unique)
        peak = float(raw.max())
        if not peak > 0:
            return None  # every fixation's mass fell outside the image / its shown rectangle
        if spec.normalize_each_window and spec.normalize == "max":
            raw /= np.float32(peak)
        elif spec.normalize_each_window:
            return normalize_map(raw, spec.normalize, inplace=True)  # None: e.g. constant for minmax
        return raw


def _distinct_points(pts: _CasePoints, clip: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(idx, inverse, rep)``: the valid events, the distinct configuration of each of them (index into
    ``rep``) and one representative event per distinct configuration (position, sigmas, shown rectangle)."""
    idx = np.flatnonzero(pts.valid)
    if not idx.size:
        return idx, np.zeros(0, dtype=np.int64), idx
    keys = np.stack([pts.x[idx], pts.y[idx], pts.sx[idx], pts.sy[idx]], axis=1)
    if clip is not None:
        keys = np.concatenate([keys, clip[idx]], axis=1)
    keys = np.nan_to_num(keys, nan=-1e300)  # NaN clip rows compare equal
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    rep = idx[np.unique(inverse, return_index=True)[1]]
    return idx, inverse, rep


class _MaskFilter:
    """Per target, the events whose rounded position lies inside the target's anatomy mask (cached)."""

    def __init__(
        self, masks: dict[str, np.ndarray] | None, x: np.ndarray, y: np.ndarray, H: int, W: int, case_id: str | None
    ) -> None:
        self.masks, self.x, self.y, self.H, self.W, self.case_id = masks, x, y, H, W, case_id
        self.cache: dict[str, np.ndarray] = {}

    def keep(self, target: str) -> np.ndarray | None:
        """Boolean per event, or ``None`` when the target has no mask. Raises GazeprepError when the mask
        is not image-sized."""
        if not self.masks or target not in self.masks:
            return None
        if target not in self.cache:
            H, W = self.H, self.W
            m = np.asarray(self.masks[target])
            if m.shape != (H, W):
                raise GazeprepError(
                    f"case {self.case_id}: mask for target {target!r} has shape {m.shape}, "
                    f"expected the image size {(H, W)}"
                )
            rx, ry = np.rint(self.x), np.rint(self.y)
            ok = np.isfinite(rx) & np.isfinite(ry) & (rx >= 0) & (rx < W) & (ry >= 0) & (ry < H)
            keep = np.zeros(rx.shape[0], dtype=bool)
            keep[ok] = m.astype(bool)[ry[ok].astype(np.int64), rx[ok].astype(np.int64)]
            self.cache[target] = keep
        return self.cache[target]


# ------------------------------------------------------------------------------- case stage 3: windows
def _render_windows(
    windows: pl.DataFrame,
    renderer: _WindowRenderer,
    mask_filter: _MaskFilter,
    empty_window: str,
    log: _CaseLog,
) -> tuple[dict[str, list[_WindowMap]], dict[tuple | None, int]]:
    """Each window row's map, grouped by target (in order of first appearance).

    Windows with the same span (and mask) share one map; ``uses`` counts the windows holding each
    shared map (key ``None``: fresh zero maps of empty windows, never shared). Empty windows are
    skipped (``empty_window: skip``, reported) or zero maps.
    """
    ws_all = _col(windows, "t_start_s", np.nan)
    we_all = _col(windows, "t_end_s", np.nan)
    ws_all = np.where(np.isnan(ws_all), -np.inf, ws_all)
    we_all = np.where(np.isnan(we_all), np.inf, we_all)
    targets = windows.get_column("target").cast(pl.Utf8).to_list() if "target" in windows.columns else []
    if "window_idx" in windows.columns:
        window_idx = windows.get_column("window_idx").to_list()
    else:
        window_idx = list(range(windows.height))

    per_target: dict[str, list[_WindowMap]] = {}
    uses: dict[tuple | None, int] = {}
    cache: dict[tuple, tuple[np.ndarray | None, np.ndarray]] = {}
    for k in range(windows.height):
        target, ws, we = targets[k], float(ws_all[k]), float(we_all[k])
        if target is None:
            log.reject(f"window row {k + 1} has no target; skipped", "windows")
            continue
        items = per_target.setdefault(target, [])
        keep = mask_filter.keep(target)
        key = (ws, we, target if keep is not None else None)
        if key not in cache:
            w = renderer.weights(ws, we, keep)
            cache[key] = (renderer.render(w), w)
        raw, w = cache[key]
        use_key: tuple | None = key  # None: a map of its own (never shared)
        if raw is None:
            if empty_window == "skip":
                log.reject(
                    f"target {target!r} window {window_idx[k]} [{ws:g}, {we:g}] s has no fixation weight "
                    f"on the image; skipped",
                    "windows",
                )
                continue
            use_key = None  # a fresh zero map
            raw = np.zeros(renderer.shape, dtype=np.float32)
        uses[use_key] = uses.get(use_key, 0) + 1
        items.append((raw, w, use_key))
    return per_target, uses


# ------------------------------------------------------------------------------ case stage 4: targets
def _target_maps(
    per_target: dict[str, list[_WindowMap]],
    uses: dict[tuple | None, int],
    spec: RenderSpec,
    grid: OutputGrid,
    crop_to: tuple[int, int] | None,
    log: _CaseLog,
) -> dict[str, RenderedMap]:
    """One map per target: its windows' maps aggregated and normalised; ``crop_to`` (H, W): the
    image's size when the maps were rendered on EGD-CXR's padded native canvas."""
    out_grid = OutputGrid.native(*crop_to) if crop_to else grid
    maps: dict[str, RenderedMap] = {}
    for target, items in per_target.items():
        if not items:
            log.reject(f"target {target!r}: every window is empty; no map")
            continue
        normed = _aggregate(items, uses, spec)
        if normed is None:
            if spec.empty_window == "skip":
                log.reject(f"target {target!r}: map is zero or constant, cannot normalise ({spec.normalize}); no map")
                continue
            normed = np.zeros(grid.shape, dtype=np.float32)
        if crop_to:  # normalised over EGD-CXR's padded canvas, returned at the image's size
            normed = normed[: crop_to[0], : crop_to[1]]
        weights = np.stack([w for _, w, _ in items])
        maps[target] = RenderedMap(
            array=np.ascontiguousarray(normed, dtype=np.float32),
            n_fixations=int(np.count_nonzero((weights > 0).any(axis=0))),
            total_weight=float(weights.sum()),
            target=target,
            n_windows=len(items),
            grid=out_grid,
        )
    return maps


def _aggregate(items: list[_WindowMap], uses: dict[tuple | None, int], spec: RenderSpec) -> np.ndarray | None:
    """The target's windows combined (``aggregate``) and normalised; ``None`` when it cannot be normalised.

    A window map shared with another target or window is copied before it is written into. Re-normalising
    is a no-op (skipped) when every window is already normalised and either there is one window or the max
    of max-normalised maps is taken (its max is exactly 1).
    """
    first, _, key0 = items[0]
    agg = first if (len(items) == 1 and uses.get(key0, 0) <= 1) else first.copy()
    for a, _, _ in items[1:]:
        if spec.aggregate == "max":
            np.maximum(agg, a, out=agg)
        else:
            agg += a
    idempotent = spec.normalize_each_window and spec.normalize != "none"
    skip_final = idempotent and (len(items) == 1 or (spec.normalize == "max" and spec.aggregate == "max"))
    if skip_final and agg.max() > 0:
        return agg
    return normalize_map(agg, spec.normalize, inplace=True)


def _report_int8_wrap(wrapped_pixels: int, wrap: bool, log: _CaseLog) -> None:
    """The rejects row and warning for pixels where MT-UNet's int8 count image wraps (or would wrap)."""
    if wrap:
        msg = (
            f"{wrapped_pixels} pixels hold 128 or more samples; their counts wrapped negative as in MT-UNet's "
            "int8 count image (render.int8_count_wrap: true)"
        )
    else:
        msg = (
            f"{wrapped_pixels} pixels hold 128 or more samples; MT-UNet's int8 count image would wrap them "
            "negative and change the map; counted exactly (render.int8_count_wrap: false)"
        )
    log.reject(msg)
    # stacklevel: this function, _render_case, render_case, its caller
    warnings.warn(f"case {log.case_id}: {msg}", RuntimeWarning, stacklevel=4)
