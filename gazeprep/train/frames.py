"""Frames of the trainer's inputs: where each pixel of an image or map lies in the original image.

An image, an exported heatmap and a training input each live on an
:class:`~gazeprep.heatmaps.grid.OutputGrid`: ``height x width`` pixels and one affine map per axis
from original-image pixels (``x_grid = scale_x * x_px + offset_x``, pixel centres on integers). The
trainer's frame (:class:`TrainFrame`) is one of the papers' geometries:

* ``letterbox`` (004 and most papers): keep the aspect ratio, fit into ``height x width``, centre and
  zero-pad (``rule='centre'`` with whole-pixel placement as :func:`letterbox_params`, or 004's
  ``ricbl`` geometry);
* ``stretch`` (003's code: ``Resize((224, 224))``): resize each axis;
* ``pad_crop_stride`` (GG-CAM, MT-UNet / Qiu): centre-pad/crop the original image to
  ``height * stride x width * stride`` pixels and keep every ``stride``-th pixel, no anti-aliasing;
* ``cover`` (open_clip's ``Resize(short side) + CenterCrop``, I-AI's BiomedCLIP preprocessing): keep the
  aspect ratio, scale so the frame is covered, crop the overhang centred.

:func:`transfer` moves a (C, h, w) tensor from one grid to another: a copy when the grids agree (an
export rendered in the training frame), an antialiased resize plus placement when the source is the
original image (or a uniformly scaled copy of it), exact index sampling for ``pad_crop_stride``, and
otherwise bilinear sampling of the affine map between the grids (after an antialiased reduction when
the target is coarser), zeros outside the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F

from gazeprep.errors import GazeprepError
from gazeprep.heatmaps.grid import OutputGrid

FITS = ("letterbox", "stretch", "pad_crop_stride", "cover")

#: A frame size as configs give it: ``S`` (a square) or ``[height, width]`` pixels.
SizeSpec: TypeAlias = int | np.integer | Sequence[int]


def size_hw(size: SizeSpec) -> tuple[int, int]:
    """``(height, width)`` from an int (square) or a ``[height, width]`` pair."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise GazeprepError(f"data.size must be an integer or [height, width], not {size!r}") from None
    if h < 1 or w < 1:
        raise GazeprepError(f"data.size must be positive, not {size!r}")
    return h, w


def letterbox_params(height: int, width: int, size: SizeSpec) -> tuple[int, int, int, int]:
    """(new_h, new_w, pad_top, pad_left) to fit (height, width) into a centred ``size`` frame
    (int: square; or ``(H, W)``), whole pixels."""
    H, W = size_hw(size)
    scale = min(H / height, W / width)
    nh = max(1, int(round(height * scale)))
    nw = max(1, int(round(width * scale)))
    return nh, nw, (H - nh) // 2, (W - nw) // 2


def placed_grid(ih: int, iw: int, out_h: int, out_w: int, nh: int, nw: int, top: int, left: int) -> OutputGrid:
    """The grid of an image resized to ``nh x nw`` (pixel-centre convention) and placed at
    ``(top, left)`` of an ``out_h x out_w`` frame."""
    sx, sy = nw / iw, nh / ih
    return OutputGrid(out_h, out_w, sx, sy, 0.5 * sx - 0.5 + left, 0.5 * sy - 0.5 + top, ih, iw)


@dataclass(frozen=True)
class TrainFrame:
    """The training input frame: ``size`` (H, W), ``fit`` (see :data:`FITS`), letterbox ``rule``
    (``centre`` / ``ricbl``) and ``stride`` (``pad_crop_stride`` only)."""

    height: int
    width: int
    fit: str = "letterbox"
    rule: str = "centre"
    stride: int = 1

    @classmethod
    def make(cls, size: SizeSpec, fit: str = "letterbox", rule: str = "centre", stride: int = 1) -> TrainFrame:
        h, w = size_hw(size)
        if fit not in FITS:
            raise GazeprepError(f"data.fit must be one of {', '.join(FITS)}, not {fit!r}")
        if rule not in ("centre", "ricbl"):
            raise GazeprepError(f"data.letterbox_rule must be centre or ricbl, not {rule!r}")
        if rule == "ricbl" and h != w:
            raise GazeprepError("data.letterbox_rule ricbl needs a square data.size")
        if int(stride) < 1 or (int(stride) != 1 and fit != "pad_crop_stride"):
            raise GazeprepError("data.stride must be >= 1 and applies to fit pad_crop_stride only")
        return cls(h, w, fit, rule, int(stride))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def grid(self, ih: int, iw: int) -> OutputGrid:
        """The grid of an ``ih x iw`` original image in this frame."""
        if self.fit == "stretch":
            return OutputGrid.stretch(ih, iw, self.height, self.width)
        if self.fit == "pad_crop_stride":
            return OutputGrid.pad_crop_stride(ih, iw, self.height, self.width, self.stride)
        if self.fit == "cover":
            scale = max(self.height / ih, self.width / iw)
            nh, nw = max(1, int(round(ih * scale))), max(1, int(round(iw * scale)))
            return placed_grid(ih, iw, self.height, self.width, nh, nw, (self.height - nh) // 2, (self.width - nw) // 2)
        if self.rule == "ricbl":
            return OutputGrid.letterbox(ih, iw, self.height, self.width, rule="ricbl")
        nh, nw, top, left = letterbox_params(ih, iw, self.shape)
        return placed_grid(ih, iw, self.height, self.width, nh, nw, top, left)


def grid_from_spec(spec: dict | None, ih: int, iw: int, mh: int, mw: int) -> OutputGrid:
    """The grid of an exported ``mh x mw`` map of an ``ih x iw`` image.

    ``spec`` is the recipe's ``output`` section from the export manifest (``size``: ``native`` / int /
    ``[h, w]``, ``fit``, ``letterbox_rule``, ``stride``). Without one (or when it does not give the
    map's shape): a map of the image's aspect ratio is a uniformly resized copy of the image; a square
    map of a non-square image is letterboxed (centre); anything else is stretched."""
    if spec:
        try:
            size = spec.get("size", "native")
            if size == "native":
                g = OutputGrid.native(ih, iw)
            else:
                oh, ow = size_hw(size)
                fit = spec.get("fit", "letterbox")
                if fit == "stretch":
                    g = OutputGrid.stretch(ih, iw, oh, ow)
                elif fit == "pad_crop_stride":
                    g = OutputGrid.pad_crop_stride(ih, iw, oh, ow, int(spec.get("stride", 1)))
                else:
                    g = OutputGrid.letterbox(ih, iw, oh, ow, rule=spec.get("letterbox_rule", "centre"))
            if g.shape == (mh, mw):
                return g
        except (ValueError, GazeprepError):
            pass
    if (mh, mw) == (ih, iw):
        return OutputGrid.native(ih, iw)
    if mh == mw and ih != iw and abs(mh / mw - ih / iw) > 0.01:
        nh, nw, top, left = letterbox_params(ih, iw, mh)
        return placed_grid(ih, iw, mh, mw, nh, nw, top, left)
    return OutputGrid.stretch(ih, iw, mh, mw)


def same_grid(a: OutputGrid, b: OutputGrid, tol: float = 1e-6) -> bool:
    """Whether two grids put every original pixel at the same place (within ``tol`` grid pixels)."""
    if a.shape != b.shape:
        return False
    vals = ((a.scale_x, b.scale_x), (a.scale_y, b.scale_y), (a.offset_x, b.offset_x), (a.offset_y, b.offset_y))
    return all(abs(u - v) <= tol * max(1.0, abs(u), abs(v)) for u, v in vals)


def _is_scaled_image(g: OutputGrid) -> bool:
    """A grid that is the original image resized to its own shape (native or stretched, no padding)."""
    st = OutputGrid.stretch(g.image_height_px, g.image_width_px, g.height, g.width)
    return same_grid(g, st)


def _placement(g: OutputGrid) -> tuple[int, int, int, int] | None:
    """``(nh, nw, top, left)`` when ``g`` is the image resized to whole pixels at a whole-pixel
    position (what :func:`placed_grid` makes), else None."""
    nw, nh = g.scale_x * g.image_width_px, g.scale_y * g.image_height_px
    left, top = g.offset_x - 0.5 * g.scale_x + 0.5, g.offset_y - 0.5 * g.scale_y + 0.5
    r = [round(v) for v in (nh, nw, top, left)]
    if all(abs(v - q) < 1e-6 for v, q in zip((nh, nw, top, left), r)) and r[0] >= 1 and r[1] >= 1:
        return r[0], r[1], r[2], r[3]
    return None


def resize(arr: torch.Tensor, hw: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (C, h, w) to ``hw``: bilinear (antialiased when shrinking, ``align_corners=False``) or
    nearest."""
    if tuple(arr.shape[-2:]) == tuple(hw):
        return arr
    x = arr[None].float()
    if mode == "nearest":
        return F.interpolate(x, size=hw, mode="nearest")[0]
    shrink = hw[0] < arr.shape[-2] or hw[1] < arr.shape[-1]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)[0]


def _place(
    content: torch.Tensor, out_hw: tuple[int, int], top: int, left: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Put (C, h, w) at (top, left) of a zero (C, H, W) frame (negative offsets / overhang crop)."""
    c, h, w = content.shape
    H, W = out_hw
    if out is None:
        out = torch.zeros((c, H, W), dtype=torch.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    if y1 > y0 and x1 > x0:
        out[:, y0:y1, x0:x1] = content[:, y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def _stride_sample(arr: torch.Tensor, src: OutputGrid, dst: OutputGrid, out: torch.Tensor | None) -> torch.Tensor:
    """Exact ``pad_crop_stride`` sampling of a native (C, ih, iw) tensor (MT-UNet / GG-CAM): output
    pixel (r, c) is original pixel ``(r * stride - pad_top, c * stride - pad_left)`` or 0."""
    stride = round(1 / dst.scale_x)
    pad_left, pad_top = round(dst.offset_x * stride), round(dst.offset_y * stride)
    rows = np.arange(dst.height) * stride - pad_top
    cols = np.arange(dst.width) * stride - pad_left
    vr = np.nonzero((rows >= 0) & (rows < src.height))[0]
    vc = np.nonzero((cols >= 0) & (cols < src.width))[0]
    if out is None:
        out = torch.zeros((arr.shape[0], dst.height, dst.width), dtype=torch.float32)
    if len(vr) and len(vc):
        # contiguous runs: a strided slice, no fancy-index copy of the whole image
        r0, c0 = int(rows[vr[0]]), int(cols[vc[0]])
        block = arr[:, r0 : int(rows[vr[-1]]) + 1 : stride, c0 : int(cols[vc[-1]]) + 1 : stride]
        out[:, vr[0] : vr[-1] + 1, vc[0] : vc[-1] + 1] = block
    return out


def _affine_sample(arr: torch.Tensor, src: OutputGrid, dst: OutputGrid, mode: str) -> torch.Tensor:
    """Sample (C, h, w) on ``src`` at the pixel centres of ``dst`` (bilinear / nearest, zeros outside),
    reducing first with an antialiased resize when ``dst`` is more than 1.5x coarser."""
    a = arr[None].float()
    sx, sy, ox, oy = src.scale_x, src.scale_y, src.offset_x, src.offset_y
    h, w = arr.shape[-2:]
    ry, rx = dst.scale_y / sy, dst.scale_x / sx  # dst pixels per src pixel
    if mode != "nearest" and (ry < 1 / 1.5 or rx < 1 / 1.5):
        nh, nw = max(1, round(h * min(ry, 1.0))), max(1, round(w * min(rx, 1.0)))
        a = F.interpolate(a, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        kx, ky = nw / w, nh / h  # the reduced copy is a stretch of the source grid
        sx, sy, ox, oy = sx * kx, sy * ky, (ox + 0.5) * kx - 0.5, (oy + 0.5) * ky - 0.5
        h, w = nh, nw
    c = torch.arange(dst.width, dtype=torch.float64)
    r = torch.arange(dst.height, dtype=torch.float64)
    xs = sx * (c - dst.offset_x) / dst.scale_x + ox  # source pixel coordinates
    ys = sy * (r - dst.offset_y) / dst.scale_y + oy
    gx = ((2 * xs + 1) / w - 1).float()
    gy = ((2 * ys + 1) / h - 1).float()
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    return F.grid_sample(
        a, grid, mode="nearest" if mode == "nearest" else "bilinear", padding_mode="zeros", align_corners=False
    )[0]


def transfer(
    arr: torch.Tensor, src: OutputGrid, dst: OutputGrid, mode: str = "bilinear", out: torch.Tensor | None = None
) -> torch.Tensor:
    """(C, h, w) on grid ``src`` -> (C, H, W) on grid ``dst`` (see the module docstring).

    ``mode``: ``bilinear`` for images and heatmaps, ``nearest`` for masks. ``out``: an optional
    preallocated zero (C, H, W) float32 tensor to write into (returned)."""
    if tuple(arr.shape[-2:]) != src.shape:
        raise ValueError(f"array of shape {tuple(arr.shape[-2:])} on a grid of shape {src.shape}")
    if same_grid(src, dst):
        if out is None:
            return arr.float() if arr.dtype != torch.float32 else arr
        out.copy_(arr)
        return out
    if _is_scaled_image(src):
        if src.shape == (src.image_height_px, src.image_width_px) and _is_stride_grid(dst):
            return _stride_sample(arr, src, dst, out)
        place = _placement(dst)
        if place is not None:
            nh, nw, top, left = place
            return _place(resize(arr, (nh, nw), mode), dst.shape, top, left, out)
    res = _affine_sample(arr, src, dst, mode)
    if out is None:
        return res
    out.copy_(res)
    return out


def _is_stride_grid(g: OutputGrid) -> bool:
    """A ``pad_crop_stride`` grid: scale ``1 / k`` for an integer k and offsets on whole original pixels."""
    if g.scale_x != g.scale_y or g.scale_x <= 0:
        return False
    k = 1 / g.scale_x
    if abs(k - round(k)) > 1e-9:
        return False
    return all(abs(o * round(k) - round(o * round(k))) < 1e-6 for o in (g.offset_x, g.offset_y))


def map_to_grid(pred: np.ndarray, src: OutputGrid, dst: OutputGrid) -> np.ndarray:
    """A (h, w) prediction of any resolution on the frame of ``src`` (its pixels cover ``src``'s
    frame) -> a float32 map on ``dst``, clipped to [0, 1]. Used to bring predicted maps back to the
    frame of each ground-truth map."""
    t = torch.as_tensor(np.asarray(pred, dtype=np.float32))[None]
    if tuple(t.shape[-2:]) != src.shape:  # a coarser (or finer) output of the same frame
        kx, ky = t.shape[-1] / src.width, t.shape[-2] / src.height
        src = OutputGrid(
            t.shape[-2],
            t.shape[-1],
            src.scale_x * kx,
            src.scale_y * ky,
            (src.offset_x + 0.5) * kx - 0.5,
            (src.offset_y + 0.5) * ky - 0.5,
            src.image_height_px,
            src.image_width_px,
        )
    out = transfer(t, src, dst, "bilinear")
    return out[0].clamp(0, 1).numpy()


__all__ = [
    "FITS",
    "TrainFrame",
    "grid_from_spec",
    "letterbox_params",
    "map_to_grid",
    "placed_grid",
    "resize",
    "same_grid",
    "size_hw",
    "transfer",
]
