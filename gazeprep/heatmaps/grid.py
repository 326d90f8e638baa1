"""Output grids: where the pixels of a rendered heatmap lie in the original image.

A heatmap is evaluated at the integer pixels ``(row r, column c)`` of an output grid of
``height x width`` pixels. Original-image coordinates ``(x_px, y_px)`` (x = column, y = row, origin
top-left, pixel ``c`` centred on ``x = c``) map into the grid by one affine map per axis::

    x_grid = scale_x * x_px + offset_x        y_grid = scale_y * y_px + offset_y

and a length in original pixels (a sigma) becomes ``scale * length`` grid pixels.

Resized grids use the pixel-centre convention of image resizers (torchvision ``Resize``,
``align_corners=False``): the original pixel area ``[-0.5, W - 0.5)`` lands on
``[pad - 0.5, pad + W * s - 0.5)`` of the grid, so ``x_grid = (x + 0.5) * s - 0.5 + pad``.
The part of the grid covered by the image is :attr:`OutputGrid.image_box`; a grid pixel belongs to
the image when its centre lies in that box (letterbox padding is outside it and stays zero, like the
zero padding of paper 004's ``XRayResizerPadRound32``).

Grids:

* :meth:`OutputGrid.native` - the original pixels (identity map).
* :meth:`OutputGrid.letterbox` - keep the aspect ratio, fit into ``out_h x out_w`` (square ``N x N``
  in the recipes), centre the image and pad the rest. ``rule="centre"`` is the exact continuous
  centring (scale ``min(out_h / H, out_w / W)``, equal padding on both sides); ``rule="ricbl"``
  reproduces paper 004's ``XRayResizerPadRound32(N)`` + ``Resize(N)`` geometry exactly: the long side
  is first resized to ``L = round(N / short * long / 16) * 16``, the short side to
  ``round(short * L / long)``, the short side is zero-padded to ``L`` with ``floor`` of the padding
  before and ``ceil`` after, and the ``L x L`` square is resized to ``N x N``. The two rules differ by
  less than one output pixel (at 512: ~0.5 px of offset on the short axis).
* :meth:`OutputGrid.stretch` - resize each axis independently (no padding).
* :meth:`OutputGrid.pad_crop_stride` - MT-UNet/Qiu: centre pad/crop to a fixed canvas, then keep
  every ``stride``-th pixel (a sampling, so grid pixel ``g`` sits on canvas pixel ``stride * g``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from gazeprep.recipes import OutputSpec

LetterboxRule = Literal["centre", "ricbl"]

#: Tolerance (grid pixels) when deciding whether a pixel centre lies inside a bound: a centre at
#: ``bound - EDGE_EPS`` or above counts as at/after the bound, for lower and upper bounds alike.
EDGE_EPS = 1e-6


@dataclass(frozen=True)
class OutputGrid:
    """An output grid of ``height x width`` pixels and its affine map from original pixels.

    Attributes
    ----------
    height, width:
        Output shape in pixels.
    scale_x, scale_y:
        Grid pixels per original pixel along columns / rows.
    offset_x, offset_y:
        ``x_grid = scale_x * x_px + offset_x`` (same for y).
    image_height_px, image_width_px:
        Size of the original image.
    """

    height: int
    width: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    image_height_px: int
    image_width_px: int

    # ----------------------------------------------------------------- constructors
    @classmethod
    def native(cls, image_height_px: int, image_width_px: int) -> OutputGrid:
        """The original pixel grid (identity map)."""
        _check_size(image_height_px, image_width_px)
        return cls(image_height_px, image_width_px, 1.0, 1.0, 0.0, 0.0, image_height_px, image_width_px)

    @classmethod
    def letterbox(
        cls,
        image_height_px: int,
        image_width_px: int,
        out_h: int,
        out_w: int | None = None,
        rule: LetterboxRule = "centre",
    ) -> OutputGrid:
        """Aspect-preserving resize into ``out_h x out_w`` (``out_w`` defaults to ``out_h``), centred.

        ``rule="ricbl"`` (square outputs only) follows paper 004's ``XRayResizerPadRound32`` geometry;
        see the module docstring.
        """
        H, W = int(image_height_px), int(image_width_px)
        _check_size(H, W)
        out_w = out_h if out_w is None else out_w
        _check_size(out_h, out_w)
        if rule == "centre":
            s = min(out_h / H, out_w / W)
            pad_x = (out_w - W * s) / 2.0
            pad_y = (out_h - H * s) / 2.0
            return cls(out_h, out_w, s, s, 0.5 * s - 0.5 + pad_x, 0.5 * s - 0.5 + pad_y, H, W)
        if rule == "ricbl":
            if out_h != out_w:
                raise ValueError("letterbox rule 'ricbl' makes square outputs only")
            N = out_h
            long_side, short_side = max(H, W), min(H, W)
            L = round(N / short_side * long_side / 16) * 16  # get_32_size(shape, N), size_last_layer=16
            ratio = L / long_side
            new_h, new_w = round(H * ratio), round(W * ratio)  # XRayResizerAR(L, max)
            pad_top, pad_left = math.floor((L - new_h) / 2), math.floor((L - new_w) / 2)
            k = N / L  # Resize(N) of the L x L square
            sx, sy = new_w / W * k, new_h / H * k
            # x_int = (x + .5) * new_w / W - .5 + pad_left ; x_grid = (x_int + .5) * k - .5
            ox = (0.5 * new_w / W + pad_left) * k - 0.5
            oy = (0.5 * new_h / H + pad_top) * k - 0.5
            return cls(N, N, sx, sy, ox, oy, H, W)
        raise ValueError(f"unknown letterbox rule {rule!r}")

    @classmethod
    def stretch(cls, image_height_px: int, image_width_px: int, out_h: int, out_w: int) -> OutputGrid:
        """Resize each axis independently to ``out_h x out_w`` (no padding, aspect not kept)."""
        H, W = int(image_height_px), int(image_width_px)
        _check_size(H, W)
        _check_size(out_h, out_w)
        sx, sy = out_w / W, out_h / H
        return cls(out_h, out_w, sx, sy, 0.5 * sx - 0.5, 0.5 * sy - 0.5, H, W)

    @classmethod
    def pad_crop_stride(
        cls, image_height_px: int, image_width_px: int, out_h: int, out_w: int, stride: int
    ) -> OutputGrid:
        """MT-UNet's grid: centre-pad/crop the image to ``out_h * stride x out_w * stride`` pixels
        (``int(difference / 2)`` before, truncated towards zero as MT-UNet's ``MasterDataHandle.process``;
        negative = crop) and keep every ``stride``-th pixel (``canvas[0::stride, 0::stride]``, no
        anti-aliasing): ``x_grid = (x + pad_left) / stride``."""
        H, W = int(image_height_px), int(image_width_px)
        _check_size(H, W)
        _check_size(out_h, out_w)
        if stride < 1:
            raise ValueError("stride must be >= 1")
        pad_top = int((out_h * stride - H) / 2)  # int(): an odd crop keeps one more row at the bottom
        pad_left = int((out_w * stride - W) / 2)
        s = 1.0 / stride
        return cls(out_h, out_w, s, s, pad_left * s, pad_top * s, H, W)

    @classmethod
    def from_spec(cls, spec: OutputSpec, image_height_px: int, image_width_px: int) -> OutputGrid:
        """The grid an :class:`gazeprep.recipes.OutputSpec` describes for an image of this size."""
        shape = spec.shape
        if shape is None:  # size "native"
            return cls.native(image_height_px, image_width_px)
        out_h, out_w = shape
        if spec.fit == "letterbox":
            return cls.letterbox(image_height_px, image_width_px, out_h, out_w, rule=spec.letterbox_rule)
        if spec.fit == "stretch":
            return cls.stretch(image_height_px, image_width_px, out_h, out_w)
        if spec.fit == "pad_crop_stride":
            return cls.pad_crop_stride(image_height_px, image_width_px, out_h, out_w, spec.stride)
        raise ValueError(f"unknown fit {spec.fit!r}")

    # ----------------------------------------------------------------- maps
    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def scale(self) -> tuple[float, float]:
        """``(scale_y, scale_x)``: grid pixels per original pixel along rows / columns (a sigma of
        ``s`` original pixels is ``s * scale`` grid pixels)."""
        return (self.scale_y, self.scale_x)

    @property
    def is_native(self) -> bool:
        return (self.scale_x, self.scale_y, self.offset_x, self.offset_y) == (1.0, 1.0, 0.0, 0.0) and (
            self.height,
            self.width,
        ) == (self.image_height_px, self.image_width_px)

    def to_grid(self, x_px: ArrayLike, y_px: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Original-image positions (pixels, any array shape) -> grid positions (float arrays)."""
        x = np.asarray(x_px, dtype=np.float64)
        y = np.asarray(y_px, dtype=np.float64)
        if self.is_native:
            return x.copy(), y.copy()
        return self.scale_x * x + self.offset_x, self.scale_y * y + self.offset_y

    def from_grid(self, x_grid: ArrayLike, y_grid: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Grid positions -> original-image positions (inverse of :meth:`to_grid`)."""
        x = np.asarray(x_grid, dtype=np.float64)
        y = np.asarray(y_grid, dtype=np.float64)
        if self.is_native:
            return x.copy(), y.copy()
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y

    @property
    def image_box(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: the image area ``[-0.5, W - 0.5) x [-0.5, H - 0.5)`` in grid coordinates."""
        x0, y0 = self.to_grid(-0.5, -0.5)
        x1, y1 = self.to_grid(self.image_width_px - 0.5, self.image_height_px - 0.5)
        return float(x0), float(y0), float(x1), float(y1)

    def pixel_range(self, lo_px: ArrayLike, hi_px: ArrayLike, axis: Literal["x", "y"]) -> tuple[np.ndarray, np.ndarray]:
        """Grid pixel index ranges ``[start, stop)`` whose centres map into ``[lo_px - 0.5, hi_px - 0.5)``
        (up to :data:`EDGE_EPS`).

        ``lo_px``/``hi_px`` are integer original-pixel bounds (``[lo, hi)`` pixel indices, e.g. a
        rounded shown rectangle); arrays broadcast. The result is clipped to the grid.
        """
        lo = np.asarray(lo_px, dtype=np.float64) - 0.5
        hi = np.asarray(hi_px, dtype=np.float64) - 0.5
        if axis == "x":
            g_lo, _ = self.to_grid(lo, 0.0)
            g_hi, _ = self.to_grid(hi, 0.0)
            n = self.width
        else:
            _, g_lo = self.to_grid(0.0, lo)
            _, g_hi = self.to_grid(0.0, hi)
            n = self.height
        # a centre within EDGE_EPS of a bound counts as on it (exact ties are common with rational scales)
        start = np.clip(np.ceil(g_lo - EDGE_EPS), 0, n).astype(np.int64)
        stop = np.clip(np.ceil(g_hi - EDGE_EPS), 0, n).astype(np.int64)
        return start, np.maximum(stop, start)

    def describe(self) -> dict:
        """JSON-compatible description (for manifests)."""
        return {
            "height": self.height,
            "width": self.width,
            "scale_x": self.scale_x,
            "scale_y": self.scale_y,
            "offset_x": self.offset_x,
            "offset_y": self.offset_y,
            "image_height_px": self.image_height_px,
            "image_width_px": self.image_width_px,
        }


def _check_size(h: int, w: int) -> None:
    if int(h) <= 0 or int(w) <= 0:
        raise ValueError(f"image/grid size must be positive, got {h} x {w}")
