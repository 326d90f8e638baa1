"""Locate and load MIMIC-CXR images named by the releases.

* REFLACX ``image``: ``physionet.org/files/mimic-cxr/2.0.0/files/pXX/p<subject>/s<study>/<dicom_id>.dcm``
* EGD-CXR ``path``: ``files/pXX/p<subject>/s<study>/<dicom_id>.dcm``

:func:`resolve_image` finds the ``.dcm`` or ``.jpg`` of such a path under a MIMIC root laid out as
``files/pXX/...`` (MIMIC-CXR or MIMIC-CXR-JPG), also when the root holds the ``physionet.org/...``
prefix. :func:`load_image` returns a float32 (H, W) array in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gazeprep.errors import GazeprepError, InputFormatError
from gazeprep.paths import safe_component

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PREFIXES = ("", "physionet.org/files/mimic-cxr/2.0.0", "physionet.org/files/mimic-cxr-jpg/2.0.0")
_EXTS = (".dcm", ".jpg")


def _files_part(image_path: str) -> str:
    """The ``files/pXX/...`` tail of a release image path (the path itself if it has none)."""
    p = image_path.replace("\\", "/").strip()
    idx = p.rfind("files/")
    while idx > 0 and p[idx - 1] != "/":  # 'files/' must start a component
        idx = p.rfind("files/", 0, idx)
    return p[idx:] if idx >= 0 else p


def image_candidates(images_root: str | Path, image_path: str) -> list[Path]:
    """Every location :func:`resolve_image` tries, in order (all inside ``images_root``)."""
    root = Path(images_root)
    tail = _files_part(image_path)
    stem, dot, ext = tail.rpartition(".")
    base = stem if dot and ("." + ext.lower()) in _EXTS + (".png", ".jpeg") else tail
    given = ("." + ext.lower()) if dot else ""
    exts = ([given] if given in _EXTS else []) + [e for e in _EXTS if e != given]
    out: list[Path] = []
    for prefix in _PREFIXES:
        for e in exts:
            out.append(_join_checked(root, f"{prefix}/{base}{e}" if prefix else f"{base}{e}"))
    return out


def _join_checked(root: Path, rel: str) -> Path:
    """``root / rel`` where every component of ``rel`` (from data) must be a plain name.

    Checked lexically with :func:`gazeprep.paths.safe_component` (no absolute path, no ``..``, no
    odd characters), so a data path can never leave ``root``, while symlinks *inside* the root
    (e.g. ``files/`` on another disk) are followed as the user set them up.
    """
    if rel.startswith("/"):
        raise GazeprepError(f"absolute path from data is not allowed: {rel!r}")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    for p in parts:
        safe_component(p)
    return root.joinpath(*parts)


def resolve_image(images_root: str | Path, image_path: str) -> Path:
    """Find the image file of a release ``image_path`` under ``images_root``.

    Parameters
    ----------
    images_root:
        A MIMIC-CXR(-JPG) folder holding ``files/pXX/p<subject>/s<study>/<dicom_id>.{dcm,jpg}``,
        or a folder holding ``physionet.org/files/mimic-cxr[-jpg]/2.0.0/files/...``.
    image_path:
        The REFLACX ``image`` value or the EGD-CXR ``path`` value (or any path ending in
        ``files/pXX/...``). The extension written there is tried first, then the other one.
        Every component must be a plain name (no ``..``, no absolute path): data never leaves
        ``images_root``; symlinks inside the root are followed.

    Returns
    -------
    Path
        The existing file.

    Raises
    ------
    GazeprepError
        ``image_path`` would leave ``images_root`` (``..``, absolute path), or no file exists.
    """
    root = Path(images_root)
    if not root.is_dir():
        raise GazeprepError(f"image root not found: {root}")
    cands = image_candidates(root, image_path)
    for c in cands:
        if c.is_file():
            return c
    raise GazeprepError(
        f"image {image_path!r} not found under {root} (tried .dcm and .jpg under files/ and physionet.org/...)"
    )


def is_io_fault(exc: OSError) -> bool:
    """True for an operating-system I/O failure (EACCES, EIO, ENOSPC, a vanished file, ...).

    Such errors carry an ``errno``; decoders (PIL, gzip) raise plain ``OSError`` without one for
    bad bytes (``cannot identify image file``, ``image file is truncated``). I/O faults are never
    turned into per-case rejects: callers re-raise them so that the build stops.
    """
    return exc.errno is not None


def _decode_errors() -> tuple[type[BaseException], ...]:
    """Exception types PIL and pydicom raise on malformed bytes (OSError is handled separately)."""
    import struct
    import zlib

    from PIL import Image
    from pydicom.errors import InvalidDicomError

    return (
        ValueError, TypeError, AttributeError, KeyError, IndexError, EOFError, SyntaxError, NotImplementedError,
        RuntimeError, OverflowError, struct.error, zlib.error, InvalidDicomError, Image.DecompressionBombError,
    )  # fmt: skip


def _empty_file_problem(path: Path) -> str | None:
    """``"empty file (0 bytes)"`` for a 0-byte file (a clearer message than the decoder's)."""
    return "empty file (0 bytes)" if path.stat().st_size == 0 else None


def image_size(path: str | Path, *, require_format: str | None = None) -> tuple[int, int]:
    """(height, width) in pixels from the file header only; the pixel data is never decoded.

    DICOM (``.dcm``): the ``Rows`` / ``Columns`` elements, read with pydicom's
    ``stop_before_pixels`` (about 0.25 ms per file on the bundled sample). Any other extension
    (JPG, PNG): PIL's lazy ``Image.open``, which parses the header only (about 35 us per JPG).
    ``require_format`` (a PIL format name such as ``"PNG"``): the file must hold that format.

    Raises
    ------
    InputFormatError
        The file is missing, empty, not a readable image header, or has no positive size; the
        message names the file.
    OSError
        An I/O fault while reading an existing file (EACCES, EIO, ...): propagated, not a reject.
    """
    path = Path(path)
    try:
        problem = _empty_file_problem(path)
    except FileNotFoundError:
        raise InputFormatError(path, "file not found") from None
    if problem:
        raise InputFormatError(
            path, f"{problem}, " + (f"not a {require_format} image" if require_format else "no image header")
        )
    if require_format == "PNG":
        with path.open("rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                raise InputFormatError(path, "not a PNG file (bad signature)")
    try:
        if path.suffix.lower() == ".dcm":
            import warnings

            import pydicom

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns on sloppy headers
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            rows, cols = ds.get("Rows"), ds.get("Columns")
            if rows is None or cols is None:
                raise InputFormatError(path, "DICOM header has no Rows/Columns")
            h, w = int(rows), int(cols)
        else:
            from PIL import Image

            with Image.open(path) as im:
                w, h = im.size
                fmt = im.format
            if require_format is not None and fmt != require_format:
                raise InputFormatError(path, f"not a {require_format} file ({fmt or 'unknown'} data)")
    except InputFormatError:
        raise
    except OSError as exc:
        if is_io_fault(exc):
            raise
        raise InputFormatError(path, f"cannot read image header ({_short(exc, path)})") from None
    except _decode_errors() as exc:
        raise InputFormatError(path, f"cannot read image header ({type(exc).__name__}: {_short(exc, path)})") from None
    if h <= 0 or w <= 0:
        raise InputFormatError(path, f"image header gives a size of {w}x{h} (width x height) pixels")
    return int(h), int(w)


def read_mask_png(path: str | Path) -> np.ndarray:
    """A mask PNG as bool (H, W): any channel value > 0 is inside (FORMATS.md 2.1).

    Raises
    ------
    InputFormatError
        Missing, empty (0 bytes), not a PNG, or corrupt (truncated, bad chunk CRC): the message
        names the PNG. The caller records it as a reject.
    OSError
        An I/O fault while reading an existing file (EACCES, EIO, ...): propagated, not a reject.
    """
    from PIL import Image

    path = Path(path)
    try:
        problem = _empty_file_problem(path)
    except FileNotFoundError:
        raise InputFormatError(path, "mask PNG not found") from None
    if problem:
        raise InputFormatError(path, f"{problem}, not a mask PNG")
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise InputFormatError(path, f"not a PNG file ({im.format or 'unknown'} data)")
            arr = np.asarray(im)
    except InputFormatError:
        raise
    except OSError as exc:
        if is_io_fault(exc):
            raise
        raise InputFormatError(path, f"cannot read mask PNG ({_short(exc, path)})") from None
    except _decode_errors() as exc:
        raise InputFormatError(path, f"cannot read mask PNG ({type(exc).__name__}: {_short(exc, path)})") from None
    if arr.ndim == 3:
        arr = arr[..., :3].max(-1) if arr.shape[-1] >= 3 else arr[..., 0]
    if arr.ndim != 2:
        raise InputFormatError(path, f"expected a 2-D mask image, got shape {arr.shape}")
    return arr > 0


def _short(exc: BaseException, path: Path) -> str:
    """A decoder message without the repeated file name (PIL writes it into its own message)."""
    return str(exc).replace(f" {str(path)!r}", "").replace(str(path), "the file")


def _window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI window (PS3.3 C.11.2.1.2.1) to [0, 1]."""
    width = max(float(width), 1.0)
    c = float(center) - 0.5
    w = width - 1.0
    if w <= 0:
        return (x > c).astype(np.float32)
    y = (x - c) / w + 0.5
    return np.clip(y, 0.0, 1.0)


def _first(v: Any) -> float:
    """A DICOM numeric value as a float: the first of a MultiValue, else the value itself."""
    try:
        return float(v[0])  # MultiValue
    except (TypeError, IndexError):
        return float(v)


def load_dicom(path: Path) -> np.ndarray:
    """DICOM -> float32 (H, W) in [0, 1]: modality rescale, VOI window if given (else the stored
    bit range), MONOCHROME1 inverted so that 1 is always bright."""
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on sloppy headers; decoding errors still raise
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    if arr.ndim != 2:
        raise InputFormatError(path, f"expected a single-frame grayscale image, got pixel array shape {arr.shape}")
    x = arr.astype(np.float64)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    x = x * slope + intercept
    wc, ww = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if wc is not None and ww is not None:
        out = _window(x, _first(wc), _first(ww))
    else:
        bits = int(getattr(ds, "BitsStored", 0) or arr.dtype.itemsize * 8)
        signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
        lo = -(2 ** (bits - 1)) if signed else 0
        hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        lo, hi = lo * slope + intercept, hi * slope + intercept
        out = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def load_image(path: str | Path) -> np.ndarray:
    """Load a chest X-ray as float32 (H, W) in [0, 1] (1 = bright).

    DICOM (``.dcm``): see :func:`load_dicom`. JPG/PNG: converted to 8- or 16-bit grayscale and
    divided by the type's maximum.

    Raises
    ------
    InputFormatError
        The file is missing or cannot be decoded (the message names it).
    OSError
        An I/O fault while reading an existing file (EACCES, EIO, ...): propagated, not a reject.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(path, "image file not found")
    try:
        if path.suffix.lower() == ".dcm":
            return load_dicom(path)
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                return np.clip(a / 65535.0, 0, 1).astype(np.float32)
            a = np.asarray(im.convert("L"), dtype=np.float32)
        return a / np.float32(255.0)
    except InputFormatError:
        raise
    except OSError as exc:
        if is_io_fault(exc):
            raise  # EACCES, EIO, ...: an I/O fault, not a bad image
        raise InputFormatError(path, f"cannot decode image ({_short(exc, path)})") from None
    except _decode_errors() as exc:
        raise InputFormatError(path, f"cannot decode image ({type(exc).__name__}: {_short(exc, path)})") from None
