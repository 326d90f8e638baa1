"""Visual QA: PNG overlays of one case and an HTML contact sheet of a whole export (PIL only).

Each overlay is drawn in the *original image's* frame, scaled so that its longer side is ``size``
pixels:

* the chest X-ray (``cases.image_path`` resolved under ``images_root`` with
  :func:`gazeprep.datasets.images.resolve_image`), or a flat grey canvas when it is unavailable;
* the target's heatmap as a translucent colour layer (colour and opacity grow with the value,
  normalised to the map's max; zero stays transparent), mapped from its output grid back to the image
  with the grid's affine map (nearest neighbour), so letterbox padding is cut away;
* the fixations of the target's windows (all fixations for ``full`` or when the export has no
  windows), numbered in time order, circle area proportional to duration, joined by a thin scanpath;
* REFLACX ellipses of that target (solid: certainty > 2, dashed-looking thin: lower certainty),
  EGD-CXR bounding boxes, and anatomy mask outlines listed in the ``masks`` table when present;
* a caption: case, target, recipe, map max, number of fixations.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import metrics as M
from gazeprep.paths import safe_component, safe_join

# An inferno-like ramp (dark purple -> orange -> pale yellow), linear between these stops.
_STOPS = np.array(
    [
        [0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99],
        [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164],
    ],
    dtype=np.float64,
)  # fmt: skip

_ELLIPSE_COLOURS = ((80, 255, 120), (255, 255, 255))  # certainty > 2, other
_BOX_COLOUR = (90, 200, 255)
_MASK_COLOURS = ((255, 90, 90), (90, 160, 255), (255, 220, 60), (200, 120, 255), (120, 255, 220))
_FIX_COLOUR = (0, 230, 255)


def colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB ``(..., 3)`` along the inferno-like ramp."""
    v = np.clip(np.nan_to_num(np.asarray(v, dtype=np.float64)), 0.0, 1.0)
    pos = v * (len(_STOPS) - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), len(_STOPS) - 2)
    f = (pos - i0)[..., None]
    return np.rint(_STOPS[i0] * (1 - f) + _STOPS[i0 + 1] * f).astype(np.uint8)


_LUT = colormap(np.linspace(0.0, 1.0, 256)).astype(np.float32)  # 8-bit lookup table of the ramp


def overlay_heatmap(gray: np.ndarray, heat: np.ndarray, *, max_alpha: float = 0.65) -> np.ndarray:
    """Blend a heatmap over a grey image. ``gray``: (H, W) in [0, 1]; ``heat``: (H, W) >= 0.

    Returns uint8 RGB (H, W, 3). The heatmap is divided by its max; each pixel's opacity is
    ``max_alpha * value`` so that empty areas show the image unchanged."""
    g = np.clip(np.asarray(gray, dtype=np.float64), 0, 1)
    base = np.repeat((g * 255.0)[..., None], 3, axis=2)
    h = np.asarray(heat, dtype=np.float64)
    m = float(h.max()) if h.size else 0.0
    if m <= 0:
        return np.rint(base).astype(np.uint8)
    v = np.clip(h / m, 0, 1).astype(np.float32)
    a = (np.float32(max_alpha) * v)[..., None]
    col = _LUT[np.rint(v * 255).astype(np.uint8)]  # 256-level quantisation of the colour only
    return np.rint(base.astype(np.float32) * (1 - a) + col * a).astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _table(export: Any, name: str) -> pl.DataFrame | None:
    t = getattr(export, "tables", {}) or {}
    df = t.get(name) if hasattr(t, "get") else None
    return df if isinstance(df, pl.DataFrame) else None


def _case_row(export: Any, case_id: str) -> dict:
    cases = _table(export, "cases")
    if cases is None or cases.height == 0:
        return {}
    rows = cases.filter(pl.col("case_id") == case_id)
    return rows.row(0, named=True) if rows.height else {}


def load_case_image(export: Any, case_id: str, images_root: str | Path | None) -> np.ndarray | None:
    """The case's X-ray as float32 (H, W) in [0, 1], or None when it cannot be found/read."""
    row = _case_row(export, case_id)
    if images_root is None or not row.get("image_path"):
        return None
    from gazeprep.datasets.images import load_image, resolve_image

    try:
        return load_image(resolve_image(images_root, row["image_path"]))
    except GazeprepError:
        return None


def _display_grid(image_hw: tuple[int, int], size: int) -> tuple[int, int, float]:
    H, W = image_hw
    s = size / max(H, W)
    return max(1, int(round(H * s))), max(1, int(round(W * s))), s


def _resample_to_display(a: np.ndarray, dh: int, dw: int) -> np.ndarray:
    from gazeprep.evaluate.metrics import resize_bilinear

    return resize_bilinear(np.asarray(a, dtype=np.float64), (dh, dw))


def _heat_on_display(heat: np.ndarray, grid, dh: int, dw: int, s: float) -> np.ndarray:
    """Sample a grid map at the display pixels (display px -> original px -> grid, nearest)."""
    xs = (np.arange(dw) + 0.5) / s - 0.5
    ys = (np.arange(dh) + 0.5) / s - 0.5
    gx, _ = grid.to_grid(xs, np.zeros_like(xs))
    _, gy = grid.to_grid(np.zeros_like(ys), ys)
    c = np.rint(gx).astype(np.int64)
    r = np.rint(gy).astype(np.int64)
    okc = (c >= 0) & (c < grid.width)
    okr = (r >= 0) & (r < grid.height)
    out = np.asarray(heat, dtype=np.float64)[np.clip(r, 0, grid.height - 1)[:, None], np.clip(c, 0, grid.width - 1)[None, :]]
    out[~okr, :] = 0
    out[:, ~okc] = 0
    return out


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


def render_preview(
    export: Any,
    case_id: str,
    target: str,
    *,
    images_root: str | Path | None = None,
    image: np.ndarray | None = None,
    size: int = 640,
    numbers: bool = True,
    masks: dict[str, np.ndarray] | None = None,
):
    """A PIL RGB image: the case's X-ray with ``target``'s heatmap and annotations (module docstring).

    ``image`` (float (H, W) in [0, 1]) overrides loading from ``images_root``. ``size``: longer
    side of the drawing in pixels. ``numbers``: label fixations with their order. ``masks``:
    ``{structure: bool (H, W)}`` at the original image size (e.g. from
    :func:`gazeprep.anatomy.load_anatomy_masks`), drawn as outlines."""
    from PIL import Image, ImageDraw

    from gazeprep.evaluate.evaluator import ellipse_labels_to_targets, grid_for
    from gazeprep.heatmaps.grid import OutputGrid

    heat = np.asarray(export.heatmap(case_id, target), dtype=np.float64)
    row = _case_row(export, case_id)
    grid = grid_for(export, case_id, heat.shape, row or None)
    if grid is None:  # image size unknown: show the map's own grid
        grid = OutputGrid.native(*heat.shape)
    H, W = grid.image_height_px, grid.image_width_px
    if image is None:
        image = load_case_image(export, case_id, images_root)
    if image is not None and tuple(image.shape[:2]) != (H, W):
        image = None  # the file does not match the table's size: do not mislead
    dh, dw, s = _display_grid((H, W), size)
    gray = _resample_to_display(image, dh, dw) if image is not None else np.full((dh, dw), 0.35)
    rgb = overlay_heatmap(gray, _heat_on_display(heat, grid, dh, dw, s))

    cap_h = 34
    canvas = Image.new("RGB", (dw, dh + cap_h), (20, 20, 20))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas, "RGBA")
    small = _font(max(10, size // 50))

    def to_disp(x, y):
        return (np.asarray(x, dtype=np.float64) + 0.5) * s - 0.5, (np.asarray(y, dtype=np.float64) + 0.5) * s - 0.5

    # anatomy mask outlines: arrays given by the caller, then files listed in the masks table
    for k, (name, mk) in enumerate(sorted((masks or {}).items())):
        m = np.asarray(mk).astype(bool)
        if m.shape != (H, W) or not m.any():
            continue
        md = M.resize_nearest(m, (dh, dw))
        inner = md.copy()
        inner[1:-1, 1:-1] = md[1:-1, 1:-1] & md[:-2, 1:-1] & md[2:, 1:-1] & md[1:-1, :-2] & md[1:-1, 2:]
        ys, xs = np.nonzero(md & ~inner)
        col = _MASK_COLOURS[k % len(_MASK_COLOURS)]
        draw.point(list(zip(xs.tolist(), ys.tolist())), fill=col + (230,))
        if size >= 400 and xs.size:
            draw.text((int(xs.mean()), int(ys.min()) + 2), name, fill=col + (255,), font=small,
                      stroke_width=1, stroke_fill=(0, 0, 0, 255))
    mtab = _table(export, "masks")
    if mtab is not None and mtab.height:
        from PIL import ImageFilter

        base = Path(getattr(export, "path", "."))
        for k, m in enumerate(mtab.filter(pl.col("case_id") == case_id).iter_rows(named=True)):
            p = Path(m["path"]) if Path(m["path"]).is_absolute() else base / m["path"]
            try:
                with Image.open(p) as im:
                    mk = im.convert("L").resize((dw, dh), Image.NEAREST)
            except (OSError, ValueError):
                continue
            edge = np.asarray(mk.filter(ImageFilter.FIND_EDGES)) > 0
            ys, xs = np.nonzero(edge)
            col = _MASK_COLOURS[k % len(_MASK_COLOURS)]
            draw.point(list(zip(xs.tolist(), ys.tolist())), fill=col + (230,))
            if xs.size:
                draw.text((int(xs.min()) + 2, int(ys.min()) + 2), str(m["structure"]), fill=col + (255,), font=small)

    # ellipses (REFLACX) of this target
    ell = _table(export, "ellipses")
    if ell is not None and ell.height:
        e = ell.filter(pl.col("case_id") == case_id)
        if e.height:
            mapping = ellipse_labels_to_targets(e.get_column("source_label").unique().to_list(), [target])
            mine = [lab for lab, ts in mapping.items() if target in ts]
            for r in e.filter(pl.col("source_label").is_in(mine)).iter_rows(named=True):
                x0, y0 = to_disp(r["xmin_px"], r["ymin_px"])
                x1, y1 = to_disp(r["xmax_px"], r["ymax_px"])
                strong = (r.get("certainty") or 0) > 2
                draw.ellipse([float(x0), float(y0), float(x1), float(y1)],
                             outline=_ELLIPSE_COLOURS[0 if strong else 1] + (255,), width=3 if strong else 1)
                if size < 400:  # thumbnails: no text on the image
                    continue
                fs = max(10, size // 50)
                ty = float(y0) - fs - 3 if float(y0) > fs + 3 else float(y1) + 2  # above, else below
                draw.text((float(x0), ty), f"{r['source_label']} (certainty {r.get('certainty')})",
                          fill=_ELLIPSE_COLOURS[0 if strong else 1] + (255,), font=small,
                          stroke_width=1, stroke_fill=(0, 0, 0, 255))

    # boxes (EGD-CXR)
    boxes = _table(export, "boxes")
    if boxes is not None and boxes.height:
        for r in boxes.filter(pl.col("case_id") == case_id).iter_rows(named=True):
            x0, y0 = to_disp(r["xmin_px"], r["ymin_px"])
            x1, y1 = to_disp(r["xmax_px"], r["ymax_px"])
            draw.rectangle([float(x0), float(y0), float(x1), float(y1)], outline=_BOX_COLOUR + (200,), width=1)

    # fixations
    fx = _target_fixations(export, case_id, target)
    n_fix = 0 if fx is None else fx.height
    if fx is not None and fx.height:
        x = fx.get_column("x_px").cast(pl.Float64).fill_null(np.nan).to_numpy()
        y = fx.get_column("y_px").cast(pl.Float64).fill_null(np.nan).to_numpy()
        if {"t_start_s", "t_end_s"} <= set(fx.columns):
            dur = (fx.get_column("t_end_s") - fx.get_column("t_start_s")).cast(pl.Float64).fill_null(0).to_numpy()
        else:
            dur = np.ones(fx.height)
        dx, dy = to_disp(x, y)
        ok = np.isfinite(dx) & np.isfinite(dy)
        dmax = float(np.nanmax(dur)) if np.any(dur > 0) else 1.0
        rad = 2.0 + (size / 40.0) * np.sqrt(np.clip(dur, 0, None) / dmax)  # area ~ duration
        pts = [(float(a), float(b)) for a, b, o in zip(dx, dy, ok) if o]
        if len(pts) > 1:
            draw.line(pts, fill=_FIX_COLOUR + (110,), width=1)
        for i in np.flatnonzero(ok):
            cx, cy, rr = float(dx[i]), float(dy[i]), float(rad[i])
            draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], outline=_FIX_COLOUR + (230,), fill=_FIX_COLOUR + (40,), width=2)
            if numbers:
                draw.text((cx + rr * 0.7, cy - rr * 0.7 - 6), str(i + 1), fill=(255, 255, 255, 255), font=small,
                          stroke_width=1, stroke_fill=(0, 0, 0, 255))

    recipe = row.get("recipe") or (getattr(export, "manifest", {}) or {}).get("recipe", {}).get("name", "")
    caption = f"{case_id} | {target} | {recipe} | max {heat.max():.3g} | {n_fix} fix" + (
        "" if image is not None else " | no image"
    )
    if size < 400:  # thumbnails: the contact sheet's row names the case
        caption = f"{target} | {n_fix} fix"
    draw.text((6, dh + 6), caption, fill=(235, 235, 235, 255), font=_font(max(11, min(16, size // 40))))
    return canvas


def case_masks(export: Any, case_id: str, anatomy_dir: str | Path | None) -> dict[str, np.ndarray] | None:
    """Anatomy masks of the case from ``gazeprep anatomy predict`` output (None when unavailable)."""
    if anatomy_dir is None:
        return None
    row = _case_row(export, case_id)
    if not row.get("image_id") or not row.get("image_height_px"):
        return None
    try:
        from gazeprep.anatomy import load_anatomy_masks

        return load_anatomy_masks(anatomy_dir, row["image_id"], (int(row["image_height_px"]), int(row["image_width_px"])))
    except (GazeprepError, ImportError, OSError):
        return None


def _targets_of(export: Any, case_id: str) -> list[str]:
    idx = _table(export, "heatmaps")
    if idx is None:
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
) -> list[Path]:
    """Write ``<out_dir>/<case_id>/<target>.png`` for every target of the case; returns the paths."""
    tg = list(targets) if targets else _targets_of(export, case_id)
    if not tg:
        raise GazeprepError(f"case {case_id!r} has no heatmap in this export")
    image = load_case_image(export, case_id, images_root)
    masks = case_masks(export, case_id, anatomy_dir)
    paths = []
    for t in tg:
        p = safe_join(Path(out_dir), safe_component(case_id), f"{safe_component(t)}.png")
        p.parent.mkdir(parents=True, exist_ok=True)
        render_preview(export, case_id, t, image=image, size=size, masks=masks).save(p, compress_level=6)
        paths.append(p)
    return paths


def contact_sheet(
    export: Any,
    out_dir: str | Path,
    *,
    case_ids: Sequence[str] | None = None,
    images_root: str | Path | None = None,
    thumb: int = 220,
    full: int = 640,
    progress: bool = True,
    anatomy_dir: str | Path | None = None,
) -> Path:
    """Write ``<out_dir>/index.html``: one row per case, one thumbnail per target (click: full size).

    Thumbnails are ``thumb`` px on the longer side (``thumbs/<case>/<target>.png``); full-size
    previews ``full`` px (``<case>/<target>.png``). Returns the HTML path."""
    out = Path(out_dir)
    idx = _table(export, "heatmaps")
    if idx is None or idx.height == 0:
        raise GazeprepError("the export has no heatmaps to preview")
    ids = list(case_ids) if case_ids else sorted(idx.get_column("case_id").unique().to_list())
    all_targets = sorted(idx.filter(pl.col("case_id").is_in(ids)).get_column("target").unique().to_list())
    it = ids
    if progress:
        from tqdm import tqdm

        it = tqdm(ids, desc="preview", unit="case")
    rows_html = []
    for cid in it:
        image = load_case_image(export, cid, images_root)
        masks = case_masks(export, cid, anatomy_dir)
        have = set(_targets_of(export, cid))
        cells = [f"<th>{html.escape(cid)}</th>"]
        for t in all_targets:
            if t not in have:
                cells.append("<td></td>")
                continue
            rel_full = Path(safe_component(cid)) / f"{safe_component(t)}.png"
            rel_thumb = Path("thumbs") / rel_full
            for rel, sz in ((rel_full, full), (rel_thumb, thumb)):
                p = safe_join(out, *rel.parts)
                p.parent.mkdir(parents=True, exist_ok=True)
                render_preview(export, cid, t, image=image, size=sz, numbers=sz >= 400, masks=masks).save(
                    p, compress_level=6
                )
            cells.append(
                f'<td><a href="{html.escape(rel_full.as_posix())}"><img loading="lazy" '
                f'src="{html.escape(rel_thumb.as_posix())}" title="{html.escape(cid + " / " + t)}"></a></td>'
            )
        rows_html.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(t)}</th>" for t in all_targets)
    title = html.escape(str(getattr(export, "path", "export")))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gazeprep preview: {title}</title>
<style>
body {{ background:#111; color:#ddd; font-family:sans-serif; }}
table {{ border-collapse:collapse; }} th, td {{ padding:3px; border:1px solid #333; vertical-align:top; }}
thead th {{ position:sticky; top:0; background:#222; }}
tbody th {{ font-weight:normal; font-family:monospace; text-align:left; }}
img {{ display:block; max-width:{thumb}px; }}
</style></head><body>
<h3>{title}: {len(ids)} cases x {len(all_targets)} targets</h3>
<p>Heatmap = translucent colour (opacity ~ value); cyan circles = fixations (area ~ duration, numbered in
time order); green ellipses = REFLACX ellipses with certainty &gt; 2; blue boxes = EGD-CXR boxes.</p>
<table><thead><tr><th>case</th>{head}</tr></thead><tbody>
{chr(10).join(rows_html)}
</tbody></table></body></html>
"""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
