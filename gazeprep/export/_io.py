"""Low-level helpers of the export layer: atomic files, the chunk codec, deterministic containers.

Nothing here knows about tables or recipes. Everything that ends up on disk is written so that the
same input gives the same bytes (no timestamps, no random names in outputs, fixed key order).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
from numcodecs.zstd import Zstd

# The atomic writer lives in the neutral module gazeprep._atomic (datasets, anatomy, text and
# evaluate use it without importing the export layer); re-exported here for the export modules.
from gazeprep._atomic import (  # noqa: F401 - re-exported
    atomic_write,
    fsync_dir,
    is_temp_name,
    temp_name,
    write_file,
)

# Codec of every heatmap chunk (zarr v3 codecs "bytes" (little endian) -> "zstd").
# Level 1: on smooth float maps it compresses as well as level 3 at about twice the speed.
ZSTD_LEVEL = 1
_ZSTD = Zstd.from_config({"level": ZSTD_LEVEL, "checksum": False})

DTYPES = ("float16", "float32")


def check_dtype(dtype: str) -> np.dtype:
    """The little-endian numpy dtype for an export dtype name (``float16`` or ``float32``)."""
    if dtype not in DTYPES:
        from gazeprep.errors import GazeprepError

        raise GazeprepError(f"heatmap dtype must be one of {DTYPES}, got {dtype!r}")
    return np.dtype(dtype).newbyteorder("<")


_F16_MIN_NORMAL = np.float32(2.0**-14)


def to_dtype(heatmap: np.ndarray, dtype: str) -> np.ndarray:
    """``heatmap`` as a C-contiguous little-endian array of ``dtype``, rounded to nearest even.

    float16: numpy's float32 -> float16 cast is 5-10x slower on values that become float16
    subnormals (below 2**-14 ~ 6.1e-5: Gaussian tails, sum-normalised maps). Those are converted
    here exactly with integer arithmetic (subnormal bits = round-half-even(|x| * 2**24), which is
    continuous with the normal range at 2**-14); the result is bit-identical to ``astype``.
    Values beyond the float16 range raise :class:`GazeprepError` instead of becoming infinite.
    """
    return _cast(heatmap, dtype)[0]


def _cast(heatmap: np.ndarray, dtype: str) -> tuple[np.ndarray, bool]:
    """(:func:`to_dtype` of ``heatmap``, whether every cast value is zero)."""
    target = check_dtype(dtype)
    a = np.asarray(heatmap)
    if target.itemsize != 2 or a.dtype == target:
        out = np.ascontiguousarray(a, dtype=target)
        return out, not out.any()
    a = np.asarray(a, dtype=np.float32)
    mag = np.abs(a)
    top = float(mag.max(initial=0.0))
    if top > 65504.0:
        from gazeprep.errors import GazeprepError

        raise GazeprepError(f"heatmap values up to {top:.6g} do not fit in float16 (max 65504); use float32")
    empty = top <= 2.0**-25  # everything rounds to (signed) zero
    small = mag < _F16_MIN_NORMAL
    if not small.any():
        return np.ascontiguousarray(a, dtype=target), empty
    out = np.ascontiguousarray(np.where(small, np.float32(0), a), dtype=target)
    m = np.rint(mag[small] * np.float32(2.0**24)).astype(np.uint16)
    out.view(np.uint16)[small] = m | (np.signbit(a[small]).astype(np.uint16) << np.uint16(15))
    return out, empty


def encode_chunk(heatmap: np.ndarray, dtype: str) -> bytes:
    """Encode one 2-D map as a zarr chunk: cast to ``dtype`` (little endian), C order, zstd.

    Returns ``b""`` when the cast map is all zeros: such a chunk is left out of its shard and reads
    back as the fill value 0 (zarr's own ``write_empty_chunks=False`` behaviour).
    """
    a, empty = _cast(heatmap, dtype)
    if empty:
        return b""
    return bytes(_ZSTD.encode(a))


def decode_chunk(data: bytes, shape: tuple[int, int], dtype: str) -> np.ndarray:
    """Inverse of :func:`encode_chunk`; returns float32 ``(H, W)``."""
    if len(data) == 0:
        return np.zeros(shape, dtype=np.float32)
    raw = _ZSTD.decode(data)
    return np.frombuffer(raw, dtype=check_dtype(dtype)).reshape(shape).astype(np.float32)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
