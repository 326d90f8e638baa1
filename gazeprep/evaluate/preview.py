"""Visual QA: PNG overlays of one case and an HTML contact sheet of a whole export (PIL only).

Each panel is drawn in the *original image's* frame, scaled so that its longer side is ``size`` pixels:

* the chest X-ray, found the way ``gazeprep train`` finds it (:class:`ImageFinder`: ``--images``, else
  the ``images_root`` the export recorded, else the bundled sample images of a source checkout); a
  missing or unreadable image is a warning naming the path (once per image) and a flat grey canvas;
* the target's heatmap as a translucent colour layer, scaled to *this panel's* maximum (opacity and
  colour grow with ``value / max``; zero stays transparent), mapped from its output grid back to the
  image with the grid's affine map (nearest neighbour), so letterbox padding is cut away; a colour
  bar under the image gives 0 and the panel's maximum in the map's units (from the recipe's
  normalisation, :func:`map_units`);
* overlays, each switchable (:data:`OVERLAYS`): the fixations of the target's windows (numbered
  1, 2, ... in time order, circle area proportional to duration, joined by the scanpath; a fixation
  outside the image is drawn at the border as a triangle pointing out of the image), REFLACX
  ellipses of that target coloured by certainty, EGD-CXR anatomy boxes (numbered, named in the
  legend) and anatomy mask outlines; for anatomy recipes only the target's mask and the fixations
  inside it (the ones its map was rendered from);
* under the image: a wrapped caption (case, target, recipe or model, map maximum, fixations), the
  window text (the sentence or phrase and its time span, :func:`window_text`) and, on full-size
  panels, a legend of every overlay drawn (:func:`legend_entries`).

:func:`contact_sheet` writes an HTML page listing every case of the export (rejected cases with
their reasons, cases without maps), one thumbnail per target with its window text, and one legend;
given a prediction export it shows ground truth / prediction / difference side by side
(:func:`render_comparison`).
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl

from gazeprep._atomic import atomic_write_text
from gazeprep.errors import GazeprepError
from gazeprep.evaluate import metrics as M
from gazeprep.paths import safe_component, safe_join

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

    from gazeprep.heatmaps.grid import OutputGrid

    _Font = ImageFont.ImageFont | ImageFont.FreeTypeFont

# An inferno-like ramp (dark purple -> orange -> pale yellow), linear between these stops.
_STOPS = np.array(
    [
        [0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99],
        [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164],
    ],
    dtype=np.float64,
)  # fmt: skip

OVERLAYS = ("heatmap", "fixations", "ellipses", "boxes", "masks")
"""Layers a panel can show; :func:`parse_overlays` reads a comma-separated selection."""
DEFAULT_OVERLAYS = ("heatmap", "fixations", "ellipses", "masks")
"""EGD-CXR's 17 anatomy boxes are off by default (they cover every panel); ``boxes`` adds them."""

FIX_COLOUR = (0, 230, 255)
ELLIPSE_COLOURS = {5: (0, 255, 90), 4: (170, 255, 0), 3: (255, 120, 255), 2: (205, 205, 205), 1: (130, 130, 130)}
CERTAINTY_WORDS = {
    5: "consistent with (>90%)",
    4: "suspicious for / probably (~75%)",
    3: "possibly (~50%)",
    2: "less likely (~25%)",
    1: "unlikely (<10%)",
}
BOX_COLOUR = (90, 200, 255)
MASK_COLOURS = ((255, 80, 80), (80, 150, 255), (255, 215, 50), (200, 120, 255), (120, 255, 220))
_MASK_ORDER = ("left_lung", "right_lung", "heart", "mediastinum", "aortic_knob")
DIFF_COLOURS = ((40, 120, 255), (255, 60, 40))  # prediction below / above the ground truth
_GREY = 0.35  # canvas when the image is unavailable

_NORM_UNITS = {
    "max": "max-normalised (peak = 1)",
    "sum": "sum = 1 (fraction of the map per pixel)",
    "minmax": "min-max scaled (0..1)",
    "none": "unnormalised (weight x Gaussian density per px^2)",
}


def mask_colour(name: str) -> tuple[int, int, int]:
    """Outline colour of a mask, fixed per structure (``"heart (mediastinum)"`` -> heart's) so that
    every panel and the sheet's legend agree."""
    key = str(name).split(" (")[0]
    if key in _MASK_ORDER:
        return MASK_COLOURS[_MASK_ORDER.index(key) % len(MASK_COLOURS)]
    return MASK_COLOURS[sum(key.encode()) % len(MASK_COLOURS)]


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --- colours -----------------------------------------------------------------------------------


def colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB ``(..., 3)`` along the inferno-like ramp."""
    v = np.clip(np.nan_to_num(np.asarray(v, dtype=np.float64)), 0.0, 1.0)
    pos = v * (len(_STOPS) - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), len(_STOPS) - 2)
    f = (pos - i0)[..., None]
    return np.rint(_STOPS[i0] * (1 - f) + _STOPS[i0 + 1] * f).astype(np.uint8)


# overlay colours skip the near-black start of the ramp (invisible on an X-ray): value v -> ramp 0.3 + 0.7 v
_LUT = colormap(0.3 + 0.7 * np.linspace(0.0, 1.0, 256)).astype(np.float32)


def heat_alpha(v: np.ndarray, max_alpha: float) -> np.ndarray:
    """Opacity of a value ``v`` in [0, 1] (already divided by the panel's max): ``max_alpha * sqrt(v)``,
    so that the tails of a map stay visible on small thumbnails; 0 stays fully transparent."""
    return np.float32(max_alpha) * np.sqrt(np.clip(np.asarray(v, dtype=np.float32), 0, 1))


def overlay_heatmap(gray: np.ndarray, heat: np.ndarray, *, max_alpha: float = 0.75) -> np.ndarray:
    """Blend a heatmap over a grey image. ``gray``: (H, W) in [0, 1]; ``heat``: (H, W) >= 0.

    Returns uint8 RGB (H, W, 3). The heatmap is divided by its max ``m`` (the colour scale is per
    panel); a pixel of value ``h`` gets the ramp colour of ``h / m`` with opacity
    :func:`heat_alpha` ``(h / m)``, so empty areas show the image unchanged."""
    g = np.clip(np.asarray(gray, dtype=np.float64), 0, 1)
    base = np.repeat((g * 255.0)[..., None], 3, axis=2)
    h = np.asarray(heat, dtype=np.float64)
    m = float(np.nanmax(h)) if h.size else 0.0
    if not m > 0:
        return np.rint(base).astype(np.uint8)
    v = np.clip(np.nan_to_num(h / m), 0, 1).astype(np.float32)
    a = heat_alpha(v, max_alpha)[..., None]
    col = _LUT[np.rint(v * 255).astype(np.uint8)]  # 256-level quantisation of the colour only
    return np.rint(base.astype(np.float32) * (1 - a) + col * a).astype(np.uint8)


def overlay_difference(gray: np.ndarray, diff: np.ndarray, *, max_alpha: float = 0.8) -> np.ndarray:
    """Blend a signed difference in [-1, 1] over a grey image: blue where it is negative, red where
    positive, opacity ``max_alpha * sqrt(|d|)``. Returns uint8 RGB (H, W, 3)."""
    g = np.clip(np.asarray(gray, dtype=np.float64), 0, 1)
    base = np.repeat((g * 255.0)[..., None], 3, axis=2).astype(np.float32)
    d = np.clip(np.nan_to_num(np.asarray(diff, dtype=np.float32)), -1, 1)
    a = heat_alpha(np.abs(d), max_alpha)[..., None]
    below, above = (np.asarray(c, dtype=np.float32) for c in DIFF_COLOURS)
    col = np.where((d < 0)[..., None], below, above)
    return np.rint(base * (1 - a) + col * a).astype(np.uint8)


# --- export access -----------------------------------------------------------------------------


def _table(export: Any, name: str) -> pl.DataFrame | None:
    t = getattr(export, "tables", {}) or {}
    try:
        df = t.get(name) if hasattr(t, "get") else None
    except KeyError:
        df = None
    return df if isinstance(df, pl.DataFrame) else None


def _manifest(export: Any) -> dict:
    m = getattr(export, "manifest", None)
    return m if isinstance(m, dict) else {}


def _recipe_dict(export: Any) -> dict:
    r = _manifest(export).get("recipe")
    return r if isinstance(r, dict) else {}


def _case_row(export: Any, case_id: str) -> dict:
    cases = _table(export, "cases")
    if cases is None or cases.height == 0 or "case_id" not in cases.columns:
        return {}
    rows = cases.filter(pl.col("case_id") == case_id)
    return rows.row(0, named=True) if rows.height else {}


def map_units(export: Any) -> str:
    """What a map's values mean, from the export's recipe (``render.normalize``) or kind.

    ``"max-normalised (peak = 1)"``, ``"sum = 1 (fraction of the map per pixel)"``,
    ``"min-max scaled (0..1)"``, ``"unnormalised (...)"``; ``"model output"`` for a prediction
    export; ``"values"`` when the export records no recipe."""
    if _manifest(export).get("kind") == "prediction":
        return "model output"
    norm = (_recipe_dict(export).get("render") or {}).get("normalize")
    return _NORM_UNITS.get(str(norm), "values") if norm is not None else "values"


def model_name(export: Any) -> str | None:
    """The model of a prediction export (``manifest.extra.prediction.model``), else None."""
    m = _manifest(export)
    if m.get("kind") != "prediction":
        return None
    pred = (m.get("extra") or {}).get("prediction") or {}
    return str(pred.get("model") or "unknown model")


def _source_label(export: Any, case_id: str | None = None) -> str:
    """``recipe NAME`` for ground truth, ``prediction by MODEL`` for a prediction export."""
    model = model_name(export)
    if model is not None:
        return f"prediction by {model}"
    name = _recipe_dict(export).get("name")
    if not name and case_id is not None:
        name = _case_row(export, case_id).get("recipe")
    return f"recipe {name}" if name else "ground truth"


# --- images ------------------------------------------------------------------------------------


def default_images_root(export: Any) -> tuple[Path | None, str]:
    """Where the case images are when no ``--images`` is given, as ``train`` looks: the
    ``images_root`` the export's manifest records, else the bundled sample MIMIC-CXR images of a
    source checkout. Returns ``(folder or None, how it was found)``."""
    from gazeprep.paths import bundled_sample_data

    m = _manifest(export)
    for rec in (m.get("images_root"), (m.get("extra") or {}).get("images_root")):
        if rec and Path(rec).is_dir():
            return Path(rec), "the images_root recorded in the export's manifest"
    sample = bundled_sample_data()
    if sample is not None and (sample / "mimic-cxr").is_dir():
        return sample / "mimic-cxr", "the bundled sample images"
    return None, "none"


class ImageFinder:
    """Loads case images (float32 (H, W) in [0, 1]) and warns once per image that cannot be used.

    Parameters
    ----------
    export:
        The export whose ``cases`` table names ``image_path`` and the image size.
    images_root:
        The MIMIC-CXR(-JPG) root (``--images``); None: :func:`default_images_root`.
    warn:
        Called with one line per problem (default: ``warning: ...`` on stderr).
    """

    def __init__(self, export: Any, images_root: str | Path | None = None, warn: Callable[[str], None] | None = None):
        self.export = export
        self.warn = warn or _warn_stderr
        self._warned: set[str] = set()
        self._cache: dict[str, np.ndarray | None] = {}
        if images_root is not None:
            self.root: Path | None = Path(images_root)
            self.source = "--images"
            if not self.root.is_dir():
                self._once("root", f"--images {self.root} is not a folder: previews are drawn on a grey canvas")
        else:
            self.root, self.source = default_images_root(export)

    def _once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

    def load(self, case_id: str) -> np.ndarray | None:
        """The case's image, or None (after a warning naming the path) when it cannot be used."""
        if case_id not in self._cache:
            self._cache[case_id] = self._load(case_id)
        return self._cache[case_id]

    def _load(self, case_id: str) -> np.ndarray | None:
        row = _case_row(self.export, case_id)
        rel = row.get("image_path")
        if not rel:
            self._once(f"norel:{case_id}", f"case {case_id}: the cases table names no image_path; grey canvas")
            return None
        if self.root is None:
            self._once(
                "noroot",
                "no --images given and no bundled sample images in this installation: previews "
                "are drawn on a grey canvas (pass --images, the MIMIC-CXR root)",
            )
            return None
        if not self.root.is_dir():
            return None  # said once in __init__
        from gazeprep.datasets.images import image_candidates, load_image, resolve_image

        direct = self.root / rel
        try:
            path = direct if direct.is_file() else resolve_image(self.root, rel)
        except GazeprepError:
            try:
                tried = image_candidates(self.root, rel)[0]
            except GazeprepError:
                tried = direct
            self._once(
                f"missing:{rel}",
                f"image of case {case_id} not found: {tried} (also tried .dcm/.jpg and the "
                f"physionet.org/... prefix under {self.root}, {self.source}); grey canvas",
            )
            return None
        try:
            img = np.asarray(load_image(path), dtype=np.float32)
        except (GazeprepError, OSError, ValueError) as exc:
            self._once(f"bad:{path}", f"image of case {case_id} cannot be read: {path}: {exc}; grey canvas")
            return None
        H, W = row.get("image_height_px"), row.get("image_width_px")
        if H and W and tuple(img.shape[:2]) != (int(H), int(W)):
            self._once(
                f"size:{path}",
                f"image {path} is {img.shape[1]}x{img.shape[0]} px but the export's cases table "
                f"says {int(W)}x{int(H)} px for case {case_id}: not used (grey canvas)",
            )
            return None
        return img


def load_case_image(export: Any, case_id: str, images_root: str | Path | None) -> np.ndarray | None:
    """The case's X-ray as float32 (H, W) in [0, 1], or None (with a warning on stderr)."""
    return ImageFinder(export, images_root).load(case_id)


# --- geometry ----------------------------------------------------------------------------------


def _display_grid(image_hw: tuple[int, int], size: int) -> tuple[int, int, float]:
    H, W = image_hw
    s = size / max(H, W)
    return max(1, int(round(H * s))), max(1, int(round(W * s))), s


def _gray_on_display(image: np.ndarray, dh: int, dw: int) -> np.ndarray:
    from PIL import Image

    g = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0, 1)
    im = Image.fromarray(np.rint(g * 255).astype(np.uint8))
    down = dh < g.shape[0] or dw < g.shape[1]
    im = im.resize((dw, dh), Image.Resampling.BOX if down else Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float64) / 255.0


def _heat_on_display(heat: np.ndarray, grid: OutputGrid, dh: int, dw: int, s: float) -> np.ndarray:
    """Sample a grid map at the display pixels (display px -> original px -> grid, nearest)."""
    xs = (np.arange(dw) + 0.5) / s - 0.5
    ys = (np.arange(dh) + 0.5) / s - 0.5
    gx, _ = grid.to_grid(xs, np.zeros_like(xs))
    _, gy = grid.to_grid(np.zeros_like(ys), ys)
    c = np.rint(gx).astype(np.int64)
    r = np.rint(gy).astype(np.int64)
    okc = (c >= 0) & (c < grid.width)
    okr = (r >= 0) & (r < grid.height)
    out = np.asarray(heat, dtype=np.float64)[
        np.clip(r, 0, grid.height - 1)[:, None], np.clip(c, 0, grid.width - 1)[None, :]
    ]
    out[~okr, :] = 0
    out[:, ~okc] = 0
    return out


@dataclass(frozen=True)
class FixationMark:
    """Where one fixation is drawn.

    ``number``: 1, 2, ... in time order over the fixations with a position (no gaps);
    ``x``, ``y``: display pixels (clamped inside the panel for off-image fixations);
    ``off_image``: the fixation lies outside the image; ``direction``: for those, the unit vector
    from the drawn point towards the true position (the marker points that way)."""

    number: int
    x: float
    y: float
    off_image: bool
    direction: tuple[float, float] = (0.0, 0.0)


def fixation_marks(
    x_px: np.ndarray, y_px: np.ndarray, image_hw: tuple[int, int], scale: float, *, margin: float = 0.0
) -> list[FixationMark]:
    """Display positions of fixations given in original-image pixels (``x`` column, ``y`` row).

    A fixation is inside the image when ``0 <= x < W`` and ``0 <= y < H`` (the pixel it falls in
    exists). Display position: ``(x + 0.5) * scale - 0.5``; an off-image fixation is clamped to
    ``[margin, W * scale - 1 - margin]`` (same for y) so its marker stays visible at the border.
    Fixations without a finite position are skipped and do not take a number."""
    H, W = int(image_hw[0]), int(image_hw[1])
    dw, dh = W * scale, H * scale
    x = np.asarray(x_px, dtype=np.float64)
    y = np.asarray(y_px, dtype=np.float64)
    out: list[FixationMark] = []
    n = 0
    for xi, yi in zip(x, y):
        if not (np.isfinite(xi) and np.isfinite(yi)):
            continue
        n += 1
        dx, dy = (xi + 0.5) * scale - 0.5, (yi + 0.5) * scale - 0.5
        off = not (0 <= xi < W and 0 <= yi < H)
        if not off:
            out.append(FixationMark(n, float(dx), float(dy), False))
            continue
        lo_x, hi_x = margin, max(margin, dw - 1 - margin)
        lo_y, hi_y = margin, max(margin, dh - 1 - margin)
        cx, cy = float(np.clip(dx, lo_x, hi_x)), float(np.clip(dy, lo_y, hi_y))
        vx, vy = dx - cx, dy - cy
        norm = float(np.hypot(vx, vy)) or 1.0
        out.append(FixationMark(n, cx, cy, True, (vx / norm, vy / norm)))
    return out


# --- which fixations, windows and masks belong to a panel --------------------------------------


def _target_fixations(export: Any, case_id: str, target: str) -> pl.DataFrame | None:
    fx = _table(export, "fixations")
    if fx is None or fx.height == 0:
        return None
    fx = fx.filter(pl.col("case_id") == case_id)
    if fx.height == 0:
        return fx
    if "t_start_s" in fx.columns:
        fx = fx.sort("t_start_s")
    win = _table(export, "windows")
    if win is None or target == "full" or not {"t_start_s", "t_end_s"} <= set(fx.columns):
        return fx
    w = win.filter((pl.col("case_id") == case_id) & (pl.col("target") == target))
    if w.height == 0:
        return fx
    t0 = fx.get_column("t_start_s").cast(pl.Float64).fill_null(np.nan).to_numpy()
    t1 = fx.get_column("t_end_s").cast(pl.Float64).fill_null(np.nan).to_numpy()
    ws = w.get_column("t_start_s").cast(pl.Float64).fill_null(-np.inf).to_numpy()
    we = w.get_column("t_end_s").cast(pl.Float64).fill_null(np.inf).to_numpy()
    keep = ((t1[:, None] > ws[None, :]) & (t0[:, None] <= we[None, :])).any(axis=1)
    return fx.filter(pl.Series(keep))


def inside_mask(x_px: np.ndarray, y_px: np.ndarray, mask: np.ndarray, rounding: str = "none") -> np.ndarray:
    """Which fixations fall inside ``mask`` (bool (H, W), original pixels), as the renderer's
    anatomy filter decides: positions rounded as the recipe says (``floor``/``round``/``none``),
    then the nearest pixel; outside the image is outside the mask."""
    x = np.asarray(x_px, dtype=np.float64)
    y = np.asarray(y_px, dtype=np.float64)
    if rounding == "floor":
        x, y = np.floor(x), np.floor(y)
    elif rounding == "round":
        x, y = np.rint(x), np.rint(y)
    m = np.asarray(mask, dtype=bool)
    H, W = m.shape
    rx, ry = np.rint(x), np.rint(y)
    ok = np.isfinite(rx) & np.isfinite(ry) & (rx >= 0) & (rx < W) & (ry >= 0) & (ry < H)
    keep = np.zeros(x.shape, dtype=bool)
    keep[ok] = m[ry[ok].astype(np.int64), rx[ok].astype(np.int64)]
    return keep


def _fmt_span(t0: Any, t1: Any) -> str:
    a = "?" if t0 is None else f"{float(t0):.2f}"
    b = "?" if t1 is None else f"{float(t1):.2f}"
    return f"{a}-{b} s"


_PHRASE = re.compile(r"^phrase_(\d+)$")


def window_text(export: Any, case_id: str, target: str) -> list[str]:
    """What time span of the reading a panel's map covers, in words (one line per window).

    * phrase windows (``phrase_0003``, EGD-CXR temporal): ``phrase "tube" 4.50-4.90 s, in "<sentence>"``;
    * sentence windows (label-specific maps): ``"<sentence text>" 3.72-5.22 s`` per window;
    * keyword windows (anatomy recipes): ``0.00-13.57 s, up to "<last keyword sentence>"``;
    * whole recording (``full``): ``whole recording 0.00-35.20 s``.

    Text comes from the export's ``windows``, ``sentences`` and ``words`` tables; an empty list
    when the export has no windows for the panel."""
    win = _table(export, "windows")
    if win is None or win.height == 0:
        return []
    w = win.filter((pl.col("case_id") == case_id) & (pl.col("target") == target))
    if w.height == 0:
        return []
    w = w.sort([c for c in ("window_idx", "t_start_s") if c in w.columns])
    sents = _table(export, "sentences")
    stext: dict[int, str] = {}
    if sents is not None and sents.height and {"sentence_idx", "text"} <= set(sents.columns):
        for idx, stx in sents.filter(pl.col("case_id") == case_id).select("sentence_idx", "text").iter_rows():
            if idx is not None:
                stext[int(idx)] = str(stx or "").strip()
    kind = (_recipe_dict(export).get("window") or {}).get("kind")
    lines: list[str] = []
    ph = _PHRASE.match(target)
    if ph is not None or kind == "phrase":
        word = None
        words = _table(export, "words")
        if ph is not None and words is not None and words.height and "word" in words.columns:
            ws = words.filter(pl.col("case_id") == case_id).sort("word_idx")
            i = int(ph.group(1))
            if i < ws.height:
                word = ws.get_column("word")[i]
        for r in w.iter_rows(named=True):
            s = stext.get(r["sentence_idx"]) if r.get("sentence_idx") is not None else None
            head = f'phrase "{word}" ' if word is not None else "phrase "
            lines.append(head + _fmt_span(r["t_start_s"], r["t_end_s"]) + (f', in "{s}"' if s else ""))
        return lines
    for r in w.iter_rows(named=True):
        span = _fmt_span(r["t_start_s"], r["t_end_s"])
        s = stext.get(r["sentence_idx"]) if r.get("sentence_idx") is not None else None
        if target == "full" or kind == "whole_recording":
            lines.append(f"whole recording {span}")
        elif kind == "keyword_sentences":
            lines.append(f'{span}, up to "{s}"' if s else span)
        else:
            lines.append(f'"{s}" {span}' if s else span)
    return lines


def _anatomy_spec(export: Any) -> dict | None:
    a = _recipe_dict(export).get("anatomy")
    return a if isinstance(a, dict) and a.get("target_structures") else None


def _anatomy_target_mask(
    export: Any, case_id: str, target: str, anatomy_dir: str | Path | None, warn: Callable[[str], None]
) -> np.ndarray | None:
    """The mask an anatomy recipe filtered ``target``'s fixations with (bool, image size), or None."""
    spec = _anatomy_spec(export)
    if spec is None or target not in spec["target_structures"]:
        return None
    row = _case_row(export, case_id)
    if not row.get("image_id") or not row.get("image_height_px") or not row.get("image_width_px"):
        return None
    from gazeprep.anatomy.masks import AnatomyMasks
    from gazeprep.paths import bundled_sample_data
    from gazeprep.recipes import AnatomyFilter

    folder: Path | None
    if anatomy_dir is not None:
        folder = Path(anatomy_dir)
    elif spec.get("masks") == "egd_masks":
        sample = bundled_sample_data()
        folder = sample / "egd-cxr" if sample is not None else None
    else:
        folder = Path(getattr(export, "path", ".")).parent / "anatomy"
    try:
        prov = AnatomyMasks(AnatomyFilter.model_validate(spec), default_dir=folder)
        return prov.for_image(str(row["image_id"]), (int(row["image_height_px"]), int(row["image_width_px"])))[target]
    except (GazeprepError, ImportError, OSError, KeyError, ValueError) as exc:
        warn(
            f"anatomy mask of case {case_id}, target {target} not found ({exc}); pass --anatomy-dir: "
            "all fixations of its window are shown"
        )
        return None


def _table_masks(
    export: Any, case_id: str, anatomy_dir: str | Path | None, warn: Callable[[str], None]
) -> dict[str, np.ndarray]:
    """Masks listed in the export's ``masks`` table for the case: {structure: bool (H, W)} at the
    image size. Paths are tried as given, under the export, under ``anatomy_dir`` and under the
    bundled sample release of the export's dataset."""
    mtab = _table(export, "masks")
    if mtab is None or mtab.height == 0:
        return {}
    row = _case_row(export, case_id)
    H, W = row.get("image_height_px"), row.get("image_width_px")
    from PIL import Image

    from gazeprep.paths import bundled_sample_data

    roots = [Path(getattr(export, "path", "."))]
    if anatomy_dir is not None:
        roots.append(Path(anatomy_dir))
    sample = bundled_sample_data()
    root_name = (_manifest(export).get("extra") or {}).get("root_name")
    if sample is not None and root_name and (sample / str(root_name)).is_dir():
        roots.append(sample / str(root_name))
    out: dict[str, np.ndarray] = {}
    missing = []
    for m in mtab.filter(pl.col("case_id") == case_id).iter_rows(named=True):
        rel = str(m["path"])
        if "#" in rel or str(m["structure"]) in out:  # zarr-stored predictions: read with --anatomy-dir
            continue
        cands = [Path(rel)] if Path(rel).is_absolute() else [r / rel for r in roots]
        p = next((c for c in cands if c.is_file()), None)
        if p is None:
            missing.append(rel)
            continue
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("L")) > 0
        except (OSError, ValueError) as exc:
            warn(f"mask {p} of case {case_id} cannot be read: {exc}")
            continue
        if H and W and a.shape != (int(H), int(W)):
            a = M.resize_nearest(a, (int(H), int(W))).astype(bool)
        out[str(m["structure"])] = a
    if missing:
        warn(
            f"{len(missing)} mask PNG(s) of case {case_id} not found, e.g. {missing[0]} (paths in the masks table "
            "are relative to the release folder: pass it as --anatomy-dir)"
        )
    return out


# --- legend ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegendEntry:
    """One legend item: the overlay it explains, its colour (RGB) and the text.

    ``shape``: ``circle`` (fixation), ``triangle`` (off-image fixation), ``ellipse`` (thick),
    ``ellipse-thin`` (dashed, certainty <= 2), ``box``, ``outline`` (mask), ``ramp`` (heatmap)."""

    overlay: str
    colour: tuple[int, int, int]
    text: str
    shape: str


def legend_entries(
    *,
    fixations: bool = False,
    off_image: bool = False,
    certainties: Sequence[int] = (),
    boxes: Sequence[str] = (),
    masks: Sequence[str] = (),
    mask_note: str = "",
    heat_units: str | None = None,
) -> list[LegendEntry]:
    """The legend of what a panel (or a whole sheet) shows, one entry per drawn overlay kind.

    ``certainties``: REFLACX ellipse certainty levels present (1..5, each its own colour);
    ``boxes``: EGD-CXR box names in their drawn order (numbered 1, 2, ...); ``masks``: structure
    names (outline colours in this order); ``mask_note``: appended to mask entries (e.g. the
    anatomy filter's explanation)."""
    out: list[LegendEntry] = []
    if heat_units is not None:
        top = _LUT[-1]
        out.append(
            LegendEntry(
                "heatmap",
                (int(top[0]), int(top[1]), int(top[2])),
                f"heatmap, colour scaled to the panel's max; {heat_units}",
                "ramp",
            )
        )
    if fixations:
        out.append(
            LegendEntry(
                "fixations", FIX_COLOUR, "fixation: numbered in time order, area ~ duration, line = scanpath", "circle"
            )
        )
    if off_image:
        out.append(
            LegendEntry(
                "fixations", FIX_COLOUR, "fixation outside the image, drawn at the border (points outwards)", "triangle"
            )
        )
    for c in sorted({int(c) for c in certainties if c is not None}, reverse=True):
        colour = ELLIPSE_COLOURS.get(c, ELLIPSE_COLOURS[1])
        word = CERTAINTY_WORDS.get(c, "unknown")
        kind = "ellipse" if c > 2 else "ellipse-thin"
        note = "" if c > 2 else ", not counted as positive"
        out.append(LegendEntry("ellipses", colour, f"REFLACX ellipse, certainty {c}: {word}{note}", kind))
    if boxes:
        names = "; ".join(f"{i} {n}" for i, n in enumerate(boxes, 1))
        out.append(LegendEntry("boxes", BOX_COLOUR, f"EGD-CXR anatomy boxes: {names}", "box"))
    for name in masks:
        out.append(LegendEntry("masks", mask_colour(name), f"mask outline: {name}{mask_note}", "outline"))
    return out


# --- drawing -----------------------------------------------------------------------------------


def _font(size: int) -> _Font:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _text_width(font: _Font, text: str) -> float:
    try:
        return float(font.getlength(text))
    except AttributeError:  # bitmap font
        return 6.0 * len(text)


def wrap_text(text: str, font: _Font, width: float) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` pixels in ``font`` (words longer than a
    line are cut at the character that overflows)."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        cur = ""
        for word in para.split(" "):
            cand = word if not cur else cur + " " + word
            if _text_width(font, cand) <= width:
                cur = cand
                continue
            if cur:
                lines.append(cur)
            while _text_width(font, word) > width and len(word) > 1:
                k = len(word)
                while k > 1 and _text_width(font, word[:k]) > width:
                    k -= 1
                lines.append(word[:k])
                word = word[k:]
            cur = word
        lines.append(cur)
    return lines


def _dashed_ellipse(
    draw: ImageDraw.ImageDraw, box: Sequence[float], colour: tuple[int, ...], width: int = 1, step: int = 24
) -> None:
    for a in range(0, 360, step):
        draw.arc(box, a, a + step // 2, fill=colour, width=width)


def _triangle(cx: float, cy: float, r: float, direction: tuple[float, float]) -> list[tuple[float, float]]:
    ux, uy = direction
    if ux == 0 and uy == 0:
        ux, uy = 0.0, -1.0
    px, py = -uy, ux  # perpendicular
    tip = (cx + ux * r, cy + uy * r)
    return [
        tip,
        (cx - ux * r + px * r * 0.8, cy - uy * r + py * r * 0.8),
        (cx - ux * r - px * r * 0.8, cy - uy * r - py * r * 0.8),
    ]


def _draw_swatch(draw: ImageDraw.ImageDraw, x: float, y: float, e: LegendEntry, h: int) -> None:
    c = e.colour + (255,)
    if e.shape == "ramp":
        for i in range(2 * h):
            v = i / (2 * h - 1)
            col = tuple(int(t) for t in _LUT[int(round(v * 255))])
            draw.line([(x + i, y), (x + i, y + h - 1)], fill=col + (255,))
    elif e.shape == "circle":
        draw.ellipse([x + 2, y + 1, x + h - 1, y + h - 2], outline=c, fill=e.colour + (60,), width=2)
    elif e.shape == "triangle":
        draw.polygon(_triangle(x + h / 2, y + h / 2, h / 2 - 1, (1.0, 0.0)), fill=c, outline=(0, 0, 0, 255))
    elif e.shape == "ellipse":
        draw.ellipse([x, y + 2, x + 2 * h - 2, y + h - 2], outline=c, width=3)
    elif e.shape == "ellipse-thin":
        _dashed_ellipse(draw, [x, y + 2, x + 2 * h - 2, y + h - 2], c, 1, 40)
    elif e.shape == "box":
        draw.rectangle([x + 1, y + 1, x + 2 * h - 2, y + h - 2], outline=c, width=1)
    else:  # outline
        draw.rectangle([x + 1, y + 1, x + 2 * h - 2, y + h - 2], outline=c, width=2)


@dataclass
class _Layers:
    """Everything a panel draws, collected before drawing (so the footer can be sized)."""

    heat: np.ndarray | None  # map sampled at the display grid (None: heatmap overlay off)
    heat_max: float
    gray: np.ndarray
    has_image: bool
    marks: list[FixationMark]
    durations: np.ndarray
    ellipses: list[dict]
    boxes: list[dict]
    masks: dict[str, np.ndarray]
    mask_note: str
    n_fix_note: str


def parse_overlays(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"fixations,ellipses"`` -> ``("fixations", "ellipses")``; ``all`` / ``none`` / None (the
    defaults, :data:`DEFAULT_OVERLAYS`). Raises ValueError naming an unknown overlay."""
    if text is None:
        return DEFAULT_OVERLAYS
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items == ["all"]:
        return OVERLAYS
    if items == ["none"] or not items:
        return ()
    bad = [t for t in items if t not in OVERLAYS]
    if bad:
        raise ValueError(f"unknown overlay {bad[0]!r}; choose from {', '.join(OVERLAYS)}, or all / none")
    return tuple(t for t in OVERLAYS if t in items)


def _collect(
    export: Any,
    case_id: str,
    target: str,
    *,
    heat: np.ndarray,
    grid: OutputGrid,
    image: np.ndarray | None,
    dh: int,
    dw: int,
    s: float,
    overlays: Sequence[str],
    masks: dict[str, np.ndarray] | None,
    anatomy_dir: str | Path | None,
    warn: Callable[[str], None],
    marker_r: float,
) -> _Layers:
    from gazeprep.evaluate.evaluator import ellipse_labels_to_targets

    H, W = grid.image_height_px, grid.image_width_px
    gray = _gray_on_display(image, dh, dw) if image is not None else np.full((dh, dw), _GREY)
    hd = _heat_on_display(heat, grid, dh, dw, s) if "heatmap" in overlays else None
    hmax = float(np.nanmax(heat)) if heat.size else 0.0

    anatomy = _anatomy_spec(export)
    target_mask = _anatomy_target_mask(export, case_id, target, anatomy_dir, warn) if anatomy else None
    shown_masks: dict[str, np.ndarray] = {}
    mask_note = ""
    if target_mask is not None and anatomy is not None:
        st = anatomy["target_structures"].get(target, target)
        shown_masks = {f"{target} ({st})" if st != target else target: target_mask}
        mask_note = ": only fixations inside it are shown (the map's anatomy filter)"
    elif "masks" in overlays:
        shown_masks = dict(sorted((masks or {}).items())) or _table_masks(export, case_id, anatomy_dir, warn)
        shown_masks = {k: v for k, v in shown_masks.items() if np.asarray(v).shape == (H, W)}

    marks: list[FixationMark] = []
    dur = np.zeros(0)
    note = ""
    if "fixations" in overlays:
        fx = _target_fixations(export, case_id, target)
        if fx is not None and fx.height:
            x = fx.get_column("x_px").cast(pl.Float64).fill_null(np.nan).to_numpy()
            y = fx.get_column("y_px").cast(pl.Float64).fill_null(np.nan).to_numpy()
            if {"t_start_s", "t_end_s"} <= set(fx.columns):
                d = (fx.get_column("t_end_s") - fx.get_column("t_start_s")).cast(pl.Float64).fill_null(0).to_numpy()
            else:
                d = np.ones(fx.height)
            if target_mask is not None:
                rounding = (_recipe_dict(export).get("render") or {}).get("position_rounding", "none")
                keep = inside_mask(x, y, target_mask, str(rounding))
                note = f"{int(keep.sum())} of {fx.height} window fixations inside the mask"
                x, y, d = x[keep], y[keep], d[keep]
            ok = np.isfinite(x) & np.isfinite(y)
            marks = fixation_marks(x, y, (H, W), s, margin=marker_r)
            dur = d[ok]
    ells: list[dict] = []
    ell = _table(export, "ellipses")
    if "ellipses" in overlays and ell is not None and ell.height:
        e = ell.filter(pl.col("case_id") == case_id)
        if e.height:
            if target == "full":
                ells = list(e.iter_rows(named=True))
            else:
                mapping = ellipse_labels_to_targets(e.get_column("source_label").unique().to_list(), [target])
                mine = [lab for lab, ts in mapping.items() if target in ts]
                ells = list(e.filter(pl.col("source_label").is_in(mine)).iter_rows(named=True))
    bx: list[dict] = []
    boxes = _table(export, "boxes")
    if "boxes" in overlays and boxes is not None and boxes.height:
        bx = list(boxes.filter(pl.col("case_id") == case_id).iter_rows(named=True))
    return _Layers(hd, hmax, gray, image is not None, marks, dur, ells, bx, shown_masks, mask_note, note)


@dataclass(frozen=True)
class _Pen:
    """Where and how one panel's layers are drawn: ``draw`` on the canvas, original-image pixels
    scaled by ``s`` and shifted right by ``ox`` (the panel's offset), text only on big panels."""

    draw: ImageDraw.ImageDraw
    s: float
    ox: int
    size: int  # the panel's longer side in pixels
    font: _Font

    @property
    def big(self) -> bool:
        """Labels (structure names, ellipse labels, box numbers) only from 400 px up."""
        return self.size >= 400

    def to_disp(self, x: float, y: float) -> tuple[float, float]:
        """Original-image pixel ``(x, y)`` -> display pixel of this panel."""
        return (float(x) + 0.5) * self.s - 0.5 + self.ox, (float(y) + 0.5) * self.s - 0.5

    def label(self, xy: tuple[float, float], text: str, fill: tuple[int, ...]) -> None:
        """``text`` at ``xy`` with a black outline (readable on any background)."""
        self.draw.text(xy, text, fill=fill, font=self.font, stroke_width=1, stroke_fill=(0, 0, 0, 255))


def _draw_layers(canvas: Image.Image, L: _Layers, *, s: float, size: int, numbers: bool, ox: int = 0) -> None:
    """Draw the overlays of ``L`` on ``canvas`` (the heatmap is already in it): mask outlines,
    ellipses, boxes, then fixations on top, the panel's image starting at column ``ox``."""
    from PIL import ImageDraw

    pen = _Pen(ImageDraw.Draw(canvas, "RGBA"), s, ox, size, _font(max(10, size // 50)))
    _draw_masks(pen, L)
    _draw_ellipses(pen, L.ellipses)
    _draw_boxes(pen, L.boxes)
    if L.marks:
        _draw_fixations(pen, L, numbers)


def _draw_masks(pen: _Pen, L: _Layers) -> None:
    """A 2-px outline of each non-empty mask in its structure's colour, named on big panels."""
    dh, dw = L.gray.shape
    for name, mk in L.masks.items():
        mask = np.asarray(mk).astype(bool)
        if not mask.any():
            continue
        md = M.resize_nearest(mask, (dh, dw)).astype(bool)
        inner = md.copy()
        inner[1:-1, 1:-1] = md[1:-1, 1:-1] & md[:-2, 1:-1] & md[2:, 1:-1] & md[1:-1, :-2] & md[1:-1, 2:]
        edge = md & ~inner
        edge[1:, :] |= edge[:-1, :].copy()  # 2 px thick: visible on thumbnails
        edge[:, 1:] |= edge[:, :-1].copy()
        ys, xs = np.nonzero(edge)
        col = mask_colour(name)
        pen.draw.point(list(zip((xs + pen.ox).tolist(), ys.tolist())), fill=col + (235,))
        if pen.big and xs.size:
            pen.label((int(xs.mean()) + pen.ox, int(ys.min()) + 2), name, col + (255,))


def _draw_ellipses(pen: _Pen, ellipses: Sequence[dict[str, Any]]) -> None:
    """Ellipses coloured by certainty: solid above 2 (those 004 evaluates), dashed otherwise;
    ``label (certainty)`` above them on big panels."""
    for r in ellipses:
        x0, y0 = pen.to_disp(r["xmin_px"], r["ymin_px"])
        x1, y1 = pen.to_disp(r["xmax_px"], r["ymax_px"])
        c = int(r.get("certainty") or 1)
        rgba = ELLIPSE_COLOURS.get(c, ELLIPSE_COLOURS[1]) + (255,)
        if c > 2:
            pen.draw.ellipse([x0, y0, x1, y1], outline=rgba, width=3 if pen.big else 2)
        else:
            _dashed_ellipse(pen.draw, [x0, y0, x1, y1], rgba, 2 if pen.big else 1)
        if pen.big:
            fs = max(10, pen.size // 50)
            ty = y0 - fs - 3 if y0 > fs + 3 else y1 + 2
            pen.label((x0, ty), f"{r['source_label']} ({c})", rgba)


def _draw_boxes(pen: _Pen, boxes: Sequence[dict[str, Any]]) -> None:
    """Anatomy boxes as thin rectangles, numbered 1, 2, ... on big panels (the legend names them)."""
    for i, r in enumerate(boxes, 1):
        x0, y0 = pen.to_disp(r["xmin_px"], r["ymin_px"])
        x1, y1 = pen.to_disp(r["xmax_px"], r["ymax_px"])
        pen.draw.rectangle([x0, y0, x1, y1], outline=BOX_COLOUR + (210,), width=1)
        if pen.big:
            pen.label((x0 + 2, y0 + 1), str(i), BOX_COLOUR + (255,))


def _draw_fixations(pen: _Pen, L: _Layers, numbers: bool) -> None:
    """The scanpath: a line through the fixations, circles with area by duration, off-image
    fixations as triangles at the border, and their order numbers when ``numbers``."""
    dh, dw = L.gray.shape
    size, ox = pen.size, pen.ox
    dmax = float(np.max(L.durations)) if L.durations.size and np.any(L.durations > 0) else 1.0
    pts = [(m.x + ox, m.y) for m in L.marks]
    if len(pts) > 1:
        pen.draw.line(pts, fill=FIX_COLOUR + (120,), width=1)
    for m, d in zip(L.marks, L.durations if L.durations.size == len(L.marks) else np.ones(len(L.marks))):
        rr = 2.0 + (size / 40.0) * float(np.sqrt(max(float(d), 0.0) / dmax))
        cx, cy = m.x + ox, m.y
        if m.off_image:
            r2 = max(5.0, size / 50.0)
            pen.draw.polygon(_triangle(cx, cy, r2, m.direction), fill=FIX_COLOUR + (255,), outline=(0, 0, 0, 255))
        else:
            pen.draw.ellipse(
                [cx - rr, cy - rr, cx + rr, cy + rr], outline=FIX_COLOUR + (235,), fill=FIX_COLOUR + (40,), width=2
            )
        if numbers:
            tx = min(max(cx + rr * 0.7, ox), ox + dw - 14)
            ty = min(max(cy - rr * 0.7 - 6, 0), dh - 12)
            pen.label((tx, ty), str(m.number), (255, 255, 255, 255))


def _colour_bar(
    draw: ImageDraw.ImageDraw,
    x: int,
    y: int,
    w: int,
    h: int,
    lo_text: str,
    hi_text: str,
    font: _Font,
    *,
    diverging: bool = False,
) -> None:
    """A horizontal colour bar: what each value looks like over mid-grey, with end labels."""
    n = max(2, w)
    v = np.linspace(-1.0, 1.0, n) if diverging else np.linspace(0.0, 1.0, n)
    grey = np.full((1, n), 0.5)
    row = overlay_difference(grey, v[None, :]) if diverging else overlay_heatmap(grey, v[None, :])
    for i in range(n):
        draw.line([(x + i, y), (x + i, y + h - 1)], fill=tuple(int(c) for c in row[0, i]) + (255,))
    draw.rectangle([x, y, x + n - 1, y + h - 1], outline=(90, 90, 90, 255))
    th = y + h + 1
    draw.text((x, th), lo_text, fill=(235, 235, 235, 255), font=font)
    draw.text((x + n - _text_width(font, hi_text), th), hi_text, fill=(235, 235, 235, 255), font=font)


def _footer(
    canvas_w: int,
    size: int,
    caption: list[str],
    legend: list[LegendEntry],
    bar: tuple[str, str, str] | None,
    diverging: bool = False,
) -> tuple[int, Callable[[ImageDraw.ImageDraw, int], None]]:
    """(height, draw function) of the area under the image: colour bar, caption lines, legend."""
    fs = max(10, min(16, size // 40))
    font = _font(fs)
    pad = 4
    lw = canvas_w - 2 * pad
    lines = [ln for c in caption for ln in wrap_text(c, font, lw)]
    sw = 2 * fs
    leg = [(e, wrap_text(e.text, font, lw - sw - 6)) for e in legend]
    bar_h = 0
    units_lines: list[str] = []
    if bar is not None:
        units_lines = wrap_text(bar[2], font, lw)
        bar_h = max(6, fs // 2 + 4) + fs + 4 + len(units_lines) * (fs + 3)
    line_h = fs + 3
    height = pad + bar_h + len(lines) * line_h + sum(len(t) * line_h + 2 for _, t in leg) + pad

    def paint(draw: ImageDraw.ImageDraw, y0: int) -> None:
        y = y0 + pad
        if bar is not None:
            bh = max(6, fs // 2 + 4)
            _colour_bar(draw, pad, y, lw, bh, bar[0], bar[1], font, diverging=diverging)
            y += bh + fs + 4
            for ln in units_lines:
                draw.text((pad, y), ln, fill=(200, 200, 200, 255), font=font)
                y += line_h
        for ln in lines:
            draw.text((pad, y), ln, fill=(235, 235, 235, 255), font=font)
            y += line_h
        for e, tl in leg:
            _draw_swatch(draw, pad, y + 1, e, fs)
            for ln in tl:
                draw.text((pad + sw + 6, y), ln, fill=(225, 225, 225, 255), font=font)
                y += line_h
            y += 2

    return height, paint


def _panel_legend(L: _Layers, units: str | None) -> list[LegendEntry]:
    return legend_entries(
        fixations=bool(L.marks),
        off_image=any(m.off_image for m in L.marks),
        certainties=[int(r.get("certainty") or 1) for r in L.ellipses],
        boxes=[str(r.get("box_name", "")) for r in L.boxes],
        masks=list(L.masks),
        mask_note=L.mask_note,
        heat_units=None if units is None else units,
    )


def _grid_and_heat(
    export: Any, case_id: str, target: str, ref_row: dict | None = None
) -> tuple[np.ndarray, OutputGrid]:
    from gazeprep.evaluate.evaluator import grid_for
    from gazeprep.heatmaps.grid import OutputGrid

    heat = np.asarray(export.heatmap(case_id, target), dtype=np.float64)
    row = ref_row if ref_row else _case_row(export, case_id)
    grid = grid_for(export, case_id, heat.shape, row or None)
    if grid is None:  # image size unknown: show the map's own grid
        grid = OutputGrid.native(*heat.shape)
    return heat, grid


def panel_caption(
    export: Any, case_id: str, target: str, heat_max: float, n_fix: int, *, has_image: bool, note: str = ""
) -> str:
    """``case | target | recipe NAME (or prediction by MODEL) | max V | N fixations [| no image]``."""
    parts = [case_id, target, _source_label(export, case_id), f"max {heat_max:.3g}", f"{n_fix} fixations"]
    if note:
        parts.append(note)
    if not has_image:
        parts.append("no image (grey canvas)")
    return " | ".join(parts)


def render_preview(export: Any, case_id: str, target: str, **kwargs: Any) -> Image.Image:
    """A PIL RGB image: the case's X-ray with ``target``'s heatmap and overlays (module docstring).

    Keyword arguments as :func:`render_panel`."""
    return render_panel(export, case_id, target, **kwargs)[0]


def render_panel(
    export: Any,
    case_id: str,
    target: str,
    *,
    images_root: str | Path | None = None,
    image: np.ndarray | None = None,
    size: int = 640,
    numbers: bool = True,
    masks: dict[str, np.ndarray] | None = None,
    overlays: Sequence[str] = DEFAULT_OVERLAYS,
    anatomy_dir: str | Path | None = None,
    finder: ImageFinder | None = None,
    legend: bool | None = None,
    caption: bool = True,
    warn: Callable[[str], None] | None = None,
) -> tuple[Image.Image, _Layers]:
    """``(PIL RGB image, layers)``: the panel of :func:`render_preview` and what was drawn on it
    (``layers.marks``: the fixations, ``layers.masks``, ``layers.heat_max``, ``layers.has_image``).

    ``image`` (float (H, W) in [0, 1]) overrides the lookup (``finder``, else an
    :class:`ImageFinder` over ``images_root``). ``size``: longer side of the drawing in pixels.
    ``numbers``: label fixations with their order. ``masks``: ``{structure: bool (H, W)}`` at the
    original image size (e.g. from :func:`gazeprep.anatomy.load_anatomy_masks`), drawn as outlines
    (default: the masks the export's ``masks`` table lists). ``overlays``: see :data:`OVERLAYS`.
    ``legend``: draw the legend under the panel (default: when ``size >= 400``). ``caption``: the
    wrapped caption and window text (off for contact-sheet thumbnails, whose page shows them)."""
    from PIL import Image

    warn = warn or (finder.warn if finder is not None else _warn_stderr)
    heat, grid = _grid_and_heat(export, case_id, target)
    H, W = grid.image_height_px, grid.image_width_px
    if image is None:
        image = (finder or ImageFinder(export, images_root, warn)).load(case_id)
    if image is not None and tuple(image.shape[:2]) != (H, W):
        warn(
            f"case {case_id}: image of {image.shape[1]}x{image.shape[0]} px does not match the export's "
            f"{W}x{H} px; grey canvas"
        )
        image = None
    dh, dw, s = _display_grid((H, W), size)
    marker_r = max(5.0, size / 50.0)
    L = _collect(
        export,
        case_id,
        target,
        heat=heat,
        grid=grid,
        image=image,
        dh=dh,
        dw=dw,
        s=s,
        overlays=overlays,
        masks=masks,
        anatomy_dir=anatomy_dir,
        warn=warn,
        marker_r=marker_r,
    )
    rgb = overlay_heatmap(L.gray, L.heat) if L.heat is not None else overlay_heatmap(L.gray, np.zeros((dh, dw)))
    units = map_units(export)
    show_legend = size >= 400 if legend is None else legend
    lines: list[str] = []
    if caption:
        lines.append(
            panel_caption(export, case_id, target, L.heat_max, len(L.marks), has_image=L.has_image, note=L.n_fix_note)
        )
        lines.extend(window_text(export, case_id, target))
    bar = None
    if L.heat is not None:
        bar = ("0", f"{L.heat_max:.3g}", f"colour: 0 to this panel's max; {units}" if caption or show_legend else "")
    entries = _panel_legend(L, None) if show_legend else []
    fh, paint = _footer(dw, size, lines, entries, bar)
    canvas = Image.new("RGB", (dw, dh + fh), (20, 20, 20))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    _draw_layers(canvas, L, s=s, size=size, numbers=numbers)
    from PIL import ImageDraw

    paint(ImageDraw.Draw(canvas, "RGBA"), dh)
    return canvas, L


def render_comparison(gt: Any, pred: Any, case_id: str, target: str, **kwargs: Any) -> Image.Image:
    """Ground truth | prediction | difference of one (case, target), side by side (PIL RGB).

    Keyword arguments as :func:`render_comparison_panel`."""
    return render_comparison_panel(gt, pred, case_id, target, **kwargs)[0]


def render_comparison_panel(
    gt: Any,
    pred: Any,
    case_id: str,
    target: str,
    *,
    finder: ImageFinder | None = None,
    image: np.ndarray | None = None,
    size: int = 640,
    numbers: bool = True,
    overlays: Sequence[str] = DEFAULT_OVERLAYS,
    anatomy_dir: str | Path | None = None,
    legend: bool | None = None,
    caption: bool = True,
    warn: Callable[[str], None] | None = None,
) -> tuple[Image.Image, _Layers]:
    """``(PIL RGB image, layers of the ground-truth panel)``: ground truth | prediction | difference.

    Each map is brought to the image frame through its own output grid and divided by its own
    maximum; the difference panel shows ``pred / max(pred) - gt / max(gt)`` in [-1, 1] (blue: the
    prediction is lower, red: higher). Overlays (fixations, ellipses, ...) come from ``gt``."""
    warn = warn or (finder.warn if finder is not None else _warn_stderr)
    gheat, ggrid = _grid_and_heat(gt, case_id, target)
    pheat, pgrid = _grid_and_heat(pred, case_id, target, _case_row(gt, case_id))
    H, W = ggrid.image_height_px, ggrid.image_width_px
    if image is None:
        image = (finder or ImageFinder(gt, None, warn)).load(case_id)
    if image is not None and tuple(image.shape[:2]) != (H, W):
        image = None
    dh, dw, s = _display_grid((H, W), size)
    L = _collect(
        gt,
        case_id,
        target,
        heat=gheat,
        grid=ggrid,
        image=image,
        dh=dh,
        dw=dw,
        s=s,
        overlays=overlays,
        masks=None,
        anatomy_dir=anatomy_dir,
        warn=warn,
        marker_r=max(5.0, size / 50.0),
    )
    gd = _heat_on_display(gheat, ggrid, dh, dw, s)
    pd = _heat_on_display(pheat, pgrid, dh, dw, s) if (pgrid.image_height_px, pgrid.image_width_px) == (H, W) else None
    if pd is None:
        warn(f"case {case_id}: the prediction's image size differs from the ground truth's; difference not drawn")
        pd = np.zeros_like(gd)
    panels = _comparison_panels(gt, pred, case_id, L, gd, pd, float(np.nanmax(pheat)) if pheat.size else 0)
    head_lines = []
    if caption:
        head_lines = [f"{case_id} | {target}" + ("" if L.has_image else " | no image (grey canvas)")] + window_text(
            gt, case_id, target
        )
    show_legend = size >= 400 if legend is None else legend
    legend_rows = _panel_legend(L, None) if show_legend else []
    canvas = _side_by_side(panels, L, head_lines, legend_rows, size=size, s=s, numbers=numbers, caption=caption)
    return canvas, L


class _SidePanel(NamedTuple):
    """One panel of a comparison: the blended image, its caption parts and colour bar."""

    rgb: np.ndarray  # (dh, dw, 3) uint8
    caption: list[str]  # joined with " | "
    bar: tuple[str, str, str]  # low label, high label, units line
    diverging: bool  # the bar of the difference panel (blue - grey - red)


def _comparison_panels(
    gt: Any, pred: Any, case_id: str, L: _Layers, gd: np.ndarray, pd: np.ndarray, pred_max: float
) -> list[_SidePanel]:
    """Ground truth, prediction and difference panels from the two maps on the display grid (``gd``,
    ``pd``; ``pred_max``: the stored prediction's maximum, for its caption and bar)."""
    gmax, pmax = float(gd.max()), float(pd.max())
    diff = (pd / pmax if pmax > 0 else pd * 0) - (gd / gmax if gmax > 0 else gd * 0)
    return [
        _SidePanel(
            overlay_heatmap(L.gray, gd),
            [f"ground truth ({_source_label(gt, case_id)})", f"max {L.heat_max:.3g}"]
            + ([f"{len(L.marks)} fixations"] if L.marks else []),
            ("0", f"{L.heat_max:.3g}", f"0 to this panel's max; {map_units(gt)}"),
            False,
        ),
        _SidePanel(
            overlay_heatmap(L.gray, pd),
            [_source_label(pred, case_id), f"max {pred_max:.3g}"],
            ("0", f"{pred_max:.3g}", f"0 to this panel's max; {map_units(pred)}"),
            False,
        ),
        _SidePanel(
            overlay_difference(L.gray, diff),
            ["difference: prediction/max - ground truth/max"],
            ("-1", "+1", "blue: prediction lower, red: prediction higher"),
            True,
        ),
    ]


def _side_by_side(
    panels: Sequence[_SidePanel],
    L: _Layers,
    head_lines: list[str],
    legend: list[LegendEntry],
    *,
    size: int,
    s: float,
    numbers: bool,
    caption: bool,
) -> Image.Image:
    """The panels in a row 6 px apart, each with the overlays of ``L`` (fixation numbers on the
    first only) and its own footer (caption, colour bar), then one shared footer: ``head_lines``
    and the legend."""
    from PIL import Image, ImageDraw

    dh, dw = L.gray.shape
    gap = 6
    footers = [_footer(dw, size, [" | ".join(p.caption)] if caption else [], [], p.bar, p.diverging) for p in panels]
    total_w = len(panels) * dw + (len(panels) - 1) * gap
    hh, hpaint = _footer(total_w, size, head_lines, legend, None)
    fh = max(f[0] for f in footers)
    canvas = Image.new("RGB", (total_w, dh + fh + hh), (20, 20, 20))
    for k, p in enumerate(panels):
        ox = k * (dw + gap)
        canvas.paste(Image.fromarray(p.rgb), (ox, 0))
        _draw_layers(canvas, L, s=s, size=size, numbers=numbers and k == 0, ox=ox)
    draw = ImageDraw.Draw(canvas, "RGBA")
    for k, (_, paint) in enumerate(footers):
        ox = k * (dw + gap)
        sub = Image.new("RGB", (dw, fh), (20, 20, 20))
        paint(ImageDraw.Draw(sub, "RGBA"), 0)
        canvas.paste(sub, (ox, dh))
    hpaint(draw, dh + fh)
    return canvas


# --- files -------------------------------------------------------------------------------------


def case_masks(export: Any, case_id: str, anatomy_dir: str | Path | None) -> dict[str, np.ndarray] | None:
    """Anatomy masks of the case from ``gazeprep anatomy predict`` output (None when unavailable)."""
    if anatomy_dir is None:
        return None
    row = _case_row(export, case_id)
    if not row.get("image_id") or not row.get("image_height_px"):
        return None
    try:
        from gazeprep.anatomy import load_anatomy_masks

        return load_anatomy_masks(
            anatomy_dir, row["image_id"], (int(row["image_height_px"]), int(row["image_width_px"]))
        )
    except (GazeprepError, ImportError, OSError):
        return None


def _targets_of(export: Any, case_id: str) -> list[str]:
    idx = _table(export, "heatmaps")
    if idx is None or idx.height == 0:
        return []
    return sorted(idx.filter(pl.col("case_id") == case_id).get_column("target").unique().to_list())


def preview_case(
    export: Any,
    case_id: str,
    out_dir: str | Path,
    *,
    targets: Sequence[str] | None = None,
    images_root: str | Path | None = None,
    size: int = 640,
    anatomy_dir: str | Path | None = None,
    overlays: Sequence[str] = DEFAULT_OVERLAYS,
    pred: Any = None,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<case_id>/<target>.png`` for every target of the case (with ``pred``, a
    prediction export: ``<target>_compare.png``, ground truth / prediction / difference); returns the paths."""
    tg = list(targets) if targets else _targets_of(export, case_id)
    if not tg:
        why = case_statuses(export, [case_id])[0].reasons
        raise GazeprepError(
            f"case {case_id!r} has no heatmap in this export" + (f" (rejected: {why[0]})" if why else "")
        )
    finder = ImageFinder(export, images_root, warn)
    image = finder.load(case_id)
    masks = case_masks(export, case_id, anatomy_dir)
    ptargets = set(_targets_of(pred, case_id)) if pred is not None else set()
    paths = []
    for t in tg:
        if pred is not None and t in ptargets:
            p = safe_join(Path(out_dir), safe_component(case_id), f"{safe_component(t)}_compare.png")
            im = render_comparison(
                export,
                pred,
                case_id,
                t,
                finder=finder,
                image=image,
                size=size,
                overlays=overlays,
                anatomy_dir=anatomy_dir,
                warn=finder.warn,
            )
        else:
            p = safe_join(Path(out_dir), safe_component(case_id), f"{safe_component(t)}.png")
            im = render_preview(
                export,
                case_id,
                t,
                image=image,
                size=size,
                masks=masks,
                overlays=overlays,
                anatomy_dir=anatomy_dir,
                finder=finder,
            )
        p.parent.mkdir(parents=True, exist_ok=True)
        im.save(p, compress_level=6)
        paths.append(p)
    return paths


# --- contact sheet -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseStatus:
    """A row of the contact sheet: the case, its targets with maps, and why it has none (or notes)."""

    case_id: str
    targets: tuple[str, ...]
    reasons: tuple[str, ...]
    discarded: bool = False
    in_cases_table: bool = True

    @property
    def status(self) -> str:
        """``maps``, ``rejected`` (no map, rejects rows say why) or ``no map``."""
        if self.targets:
            return "maps"
        return "rejected" if self.reasons or self.discarded else "no map"


def _reject_text(r: dict) -> str:
    where = ""
    if r.get("file"):
        where = f" ({r['file']}" + (f", row {r['row']}" if r.get("row") is not None else "") + ")"
    return f"[{r.get('stage') or '?'}] {r.get('reason') or ''}{where}"


def case_statuses(export: Any, case_ids: Sequence[str] | None = None) -> list[CaseStatus]:
    """Every case of the export, sorted: ids of the ``cases`` table, of the ``heatmaps`` index and
    of ``rejects`` rows (rows without a case id are release-wide, see :func:`release_rejects`).
    ``case_ids`` restricts the list (in the given order)."""
    idx = _table(export, "heatmaps")
    cases = _table(export, "cases")
    rej = _table(export, "rejects")
    targets: dict[str, list[str]] = {}
    if idx is not None and idx.height:
        for c, t in idx.select("case_id", "target").iter_rows():
            targets.setdefault(c, []).append(t)
    in_cases: set[str] = set()
    discarded: set[str] = set()
    if cases is not None and cases.height and "case_id" in cases.columns:
        in_cases = set(cases.get_column("case_id").to_list())
        if "discarded" in cases.columns:
            discarded = set(cases.filter(pl.col("discarded").fill_null(False)).get_column("case_id").to_list())
    reasons: dict[str, list[str]] = {}
    if rej is not None and rej.height and "case_id" in rej.columns:
        for r in rej.filter(pl.col("case_id").is_not_null()).iter_rows(named=True):
            txt = _reject_text(r)
            lst = reasons.setdefault(r["case_id"], [])
            if txt not in lst:
                lst.append(txt)
    ids = list(case_ids) if case_ids is not None else sorted(in_cases | set(targets) | set(reasons))
    return [
        CaseStatus(
            c,
            tuple(sorted(set(targets.get(c, [])))),
            tuple(reasons.get(c, [])),
            c in discarded,
            c in in_cases or c in targets,
        )
        for c in ids
    ]


def release_rejects(export: Any) -> list[str]:
    """Rejects rows that concern no single case (a release-wide file), as text."""
    rej = _table(export, "rejects")
    if rej is None or rej.height == 0 or "case_id" not in rej.columns:
        return []
    return [_reject_text(r) for r in rej.filter(pl.col("case_id").is_null()).iter_rows(named=True)]


def _legend_html(entries: list[LegendEntry]) -> str:
    items = []
    for e in entries:
        rgb = "rgb({},{},{})".format(*e.colour)
        if e.shape == "ramp":
            stops = ", ".join(
                "rgb({},{},{})".format(*(int(c) for c in _LUT[int(round(v * 255))])) for v in np.linspace(0, 1, 8)
            )
            sw = f'<span class="sw ramp" style="background:linear-gradient(to right, {stops})"></span>'
        elif e.shape == "circle":
            sw = f'<span class="sw" style="background:{rgb};border-radius:50%"></span>'
        elif e.shape == "triangle":
            sw = f'<span class="sw tri" style="color:{rgb}">&#9650;</span>'
        elif e.shape in ("ellipse", "ellipse-thin"):
            sw = f'<span class="sw" style="background:{rgb};border-radius:50%/40%;width:28px"></span>'
        else:
            sw = f'<span class="sw" style="background:{rgb}"></span>'
        items.append(f'<li data-overlay="{html.escape(e.overlay)}">{sw} {html.escape(e.text)}</li>')
    return '<ul class="legend" id="legend">' + "".join(items) + "</ul>"


def _sheet_legend(export: Any, ids: Sequence[str], overlays: Sequence[str], has_masks: list[str]) -> list[LegendEntry]:
    certs: list[int] = []
    ell = _table(export, "ellipses")
    if "ellipses" in overlays and ell is not None and ell.height and "certainty" in ell.columns:
        certs = [
            int(c)
            for c in ell.filter(pl.col("case_id").is_in(list(ids)))
            .get_column("certainty")
            .drop_nulls()
            .unique()
            .to_list()
        ]
    boxes = _table(export, "boxes")
    box_names: list[str] = []
    if "boxes" in overlays and boxes is not None and boxes.height:
        first = boxes.filter(pl.col("case_id").is_in(list(ids)))
        if first.height:
            c0 = first.get_column("case_id")[0]
            box_names = [str(n) for n in first.filter(pl.col("case_id") == c0).get_column("box_name").to_list()]
    fx = _table(export, "fixations")
    return legend_entries(
        fixations="fixations" in overlays and fx is not None and fx.height > 0,
        off_image="fixations" in overlays and fx is not None and fx.height > 0,
        certainties=certs,
        boxes=box_names,
        masks=has_masks,
        mask_note=" (anatomy recipe: only the fixations inside it)" if _anatomy_spec(export) else "",
        heat_units=map_units(export) if "heatmap" in overlays else None,
    )


_CSS = """
body { background:#111; color:#ddd; font-family:sans-serif; margin:12px; }
table { border-collapse:collapse; } th, td { padding:4px; border:1px solid #333; vertical-align:top; }
thead th { position:sticky; top:0; background:#222; z-index:1; }
tbody th { font-weight:normal; font-family:monospace; text-align:left; max-width:260px; }
td.empty { color:#666; text-align:center; }
img { display:block; }
.cap { font-size:12px; line-height:1.3; color:#ccc; overflow-wrap:anywhere; }
.win { font-size:12px; color:#9cf; overflow-wrap:anywhere; }
.status { font-family:sans-serif; font-size:12px; margin-top:4px; overflow-wrap:anywhere; }
.rejected { color:#f99; } .nomap { color:#fc6; } .note { color:#aaa; }
.legend { list-style:none; padding:8px; margin:8px 0; background:#1b1b1b; border:1px solid #333; }
.legend li { margin:3px 0; font-size:13px; }
.sw { display:inline-block; width:18px; height:14px; vertical-align:middle; margin-right:6px; }
.sw.ramp { width:72px; }
.sw.tri { width:auto; height:auto; font-size:16px; }
#broken { display:none; background:#a00; color:#fff; padding:6px; }
"""

_BROKEN_JS = """
window.addEventListener('load', function () {
  var bad = Array.prototype.filter.call(document.images, function (im) { return im.complete && im.naturalWidth === 0; });
  document.body.setAttribute('data-broken-images', String(bad.length));
  if (bad.length) { var b = document.getElementById('broken'); b.style.display = 'block';
    b.textContent = bad.length + ' image(s) could not be loaded, e.g. ' + bad[0].getAttribute('src'); }
});
"""


def contact_sheet(
    export: Any,
    out_dir: str | Path,
    *,
    case_ids: Sequence[str] | None = None,
    max_cases: int | None = None,
    targets: Sequence[str] | None = None,
    images_root: str | Path | None = None,
    thumb: int = 256,
    full: int = 640,
    progress: bool = True,
    anatomy_dir: str | Path | None = None,
    overlays: Sequence[str] = DEFAULT_OVERLAYS,
    pred: Any = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Write ``<out_dir>/index.html``: every case of the export, one thumbnail per target (click:
    full size), the window text under each, one legend; rejected cases and cases without maps are
    listed with their reasons.

    Thumbnails are ``thumb`` px on the longer side (``thumbs/<case>/<target>.png``), full-size
    previews ``full`` px (``<case>/<target>.png``). With ``pred`` (a prediction export) targets the
    prediction has are drawn as ground truth / prediction / difference. ``max_cases``: only the
    first N cases (sorted ids); ``targets``: only these columns. Returns the HTML path."""
    out = Path(out_dir)
    statuses = case_statuses(export, case_ids)
    if max_cases is not None:
        statuses = statuses[: int(max_cases)]
    if not statuses:
        raise GazeprepError("the export lists no case to preview")
    ids = [st.case_id for st in statuses]
    all_targets = sorted({t for st in statuses for t in st.targets if not targets or t in targets})
    finder = ImageFinder(export, images_root, warn)
    it: Any = statuses
    if progress:
        from tqdm import tqdm

        it = tqdm(statuses, desc="preview", unit="case", file=sys.stderr)
    rows_html = []
    mask_names: list[str] = []
    n_missing_image = 0
    for st in it:
        cid = st.case_id
        head = f"<th>{html.escape(cid)}" + _status_html(st) + "</th>"
        if not st.targets:
            rows_html.append(
                f'<tr class="{st.status.replace(" ", "")}">{head}'
                f'<td class="empty" colspan="{max(1, len(all_targets))}">no map</td></tr>'
            )
            continue
        if not any(t in st.targets for t in all_targets):
            rows_html.append(
                f'<tr>{head}<td class="empty" colspan="{max(1, len(all_targets))}">no map of the '
                f"selected targets</td></tr>"
            )
            continue
        image = finder.load(cid)
        n_missing_image += image is None
        masks = case_masks(export, cid, anatomy_dir)
        ptargets = set(_targets_of(pred, cid)) if pred is not None else set()
        cells = [head]
        for t in all_targets:
            if t not in st.targets:
                cells.append('<td class="empty">-</td>')
                continue
            cells.append(_sheet_cell(
                export, pred if t in ptargets else None, out, cid, t, image=image, masks=masks, finder=finder,
                sizes=(full, thumb), overlays=overlays, anatomy_dir=anatomy_dir, mask_names=mask_names,
            ))  # fmt: skip
        rows_html.append("<tr>" + "".join(cells) + "</tr>")
    legend = _legend_html(_sheet_legend(export, ids, overlays, mask_names))
    page = _sheet_page(export, pred, statuses, all_targets, rows_html, legend, finder, n_missing_image)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    atomic_write_text(path, page)
    return path


def _sheet_cell(
    export: Any,
    pred: Any,
    out: Path,
    cid: str,
    t: str,
    *,
    image: np.ndarray | None,
    masks: dict[str, np.ndarray] | None,
    finder: ImageFinder,
    sizes: tuple[int, int],
    overlays: Sequence[str],
    anatomy_dir: str | Path | None,
    mask_names: list[str],
) -> str:
    """One ``<td>`` of the contact sheet: writes the full-size and the thumbnail panel of (``cid``,
    ``t``) under ``out`` (``sizes``: (full, thumb) px; with ``pred``, ground truth / prediction /
    difference) and returns the cell's HTML (thumbnail linking to the full panel, caption, window
    text). Mask names drawn on the thumbnail are appended to ``mask_names`` in first-seen order."""
    full, thumb = sizes
    compare = pred is not None
    name = f"{safe_component(t)}_compare.png" if compare else f"{safe_component(t)}.png"
    rel_full = Path(safe_component(cid)) / name
    rel_thumb = Path("thumbs") / rel_full
    meta: dict = {}
    for rel, sz in ((rel_full, full), (rel_thumb, thumb)):
        p = safe_join(out, *rel.parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        small = sz < 400
        if compare:
            im, lay = render_comparison_panel(
                export,
                pred,
                cid,
                t,
                finder=finder,
                image=image,
                size=sz,
                numbers=not small,
                overlays=overlays,
                anatomy_dir=anatomy_dir,
                caption=not small,
                warn=finder.warn,
            )
        else:
            im, lay = render_panel(
                export,
                cid,
                t,
                image=image,
                size=sz,
                numbers=not small,
                masks=masks,
                overlays=overlays,
                anatomy_dir=anatomy_dir,
                finder=finder,
                caption=not small,
                legend=not small,
            )
        im.save(p, compress_level=6)
        if small:
            meta = _thumb_meta(lay)
            for mname in lay.masks:
                if mname not in mask_names:
                    mask_names.append(mname)
    cap = html.escape(meta["caption"] + (" | prediction vs ground truth (blue lower, red higher)" if compare else ""))
    wins = "".join(f'<div class="win">{html.escape(w)}</div>' for w in window_text(export, cid, t))
    return (
        f'<td><a href="{html.escape(rel_full.as_posix())}"><img loading="lazy" '
        f'src="{html.escape(rel_thumb.as_posix())}" alt="{html.escape(cid + " / " + t)}" '
        f'title="{html.escape(cid + " / " + t)}"></a><div class="cap">{cap}</div>{wins}</td>'
    )


def _sheet_page(
    export: Any,
    pred: Any,
    statuses: Sequence[CaseStatus],
    all_targets: Sequence[str],
    rows_html: Sequence[str],
    legend: str,
    finder: ImageFinder,
    n_missing_image: int,
) -> str:
    """The contact sheet's HTML page around its table rows: title and counts, sources, legend,
    release-wide rejects and a note on cases drawn without their image."""
    head = "".join(f"<th>{html.escape(t)}</th>" for t in all_targets) or "<th>maps</th>"
    title = html.escape(str(getattr(export, "path", "export")))
    n_maps = sum(1 for st in statuses if st.targets)
    n_rej = sum(1 for st in statuses if st.status == "rejected")
    n_none = sum(1 for st in statuses if st.status == "no map")
    src = html.escape(_source_label(export))
    if pred is not None:
        src += " vs " + html.escape(_source_label(pred))
    rel_rejects = release_rejects(export)
    rel_html = (
        ("<p>Release-wide rejects:</p><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rel_rejects) + "</ul>")
        if rel_rejects
        else ""
    )
    img_note = ""
    if n_missing_image:
        img_note = (
            f'<p class="nomap">{n_missing_image} case(s) drawn on a grey canvas: image not found '
            f"(looked under {html.escape(str(finder.root))}, {html.escape(finder.source)}; pass --images).</p>"
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gazeprep preview: {title}</title>
<style>{_CSS}</style><script>{_BROKEN_JS}</script></head><body>
<div id="broken"></div>
<h3>{title}: {len(statuses)} cases ({n_maps} with maps, {n_rej} rejected, {n_none} without a map) x {len(all_targets)} targets</h3>
<p>{src}. Thumbnails: each panel's colour map is scaled to that panel's own maximum (0 to max, shown under
it); click a thumbnail for the full-size panel with its legend and caption.</p>
{legend}
{img_note}{rel_html}
<table><thead><tr><th>case</th>{head}</tr></thead><tbody>
{chr(10).join(rows_html)}
</tbody></table></body></html>
"""
    return page


def _status_html(st: CaseStatus) -> str:
    parts = []
    if st.discarded:
        parts.append('<div class="status rejected">discarded in the release</div>')
    if not st.targets:
        if st.reasons:
            parts.append(
                '<div class="status rejected">rejected: ' + "<br>".join(html.escape(r) for r in st.reasons) + "</div>"
            )
        elif not st.discarded:
            parts.append('<div class="status nomap">no map: no window for any target (e.g. no positive finding)</div>')
        if not st.in_cases_table:
            parts.append('<div class="status note">not in the cases table (rejected rows only)</div>')
    elif st.reasons:
        parts.append('<div class="status note">notes: ' + "<br>".join(html.escape(r) for r in st.reasons) + "</div>")
    return "".join(parts)


def _thumb_meta(L: _Layers) -> dict:
    """Caption of a thumbnail for the HTML page (map max, fixations drawn, grey canvas)."""
    cap = f"max {L.heat_max:.3g} (colour scaled to this panel) | {len(L.marks)} fixations"
    if L.n_fix_note:
        cap += f" ({L.n_fix_note})"
    if any(m.off_image for m in L.marks):
        cap += f", {sum(m.off_image for m in L.marks)} outside the image"
    if not L.has_image:
        cap += " | no image (grey canvas)"
    return {"caption": cap}
