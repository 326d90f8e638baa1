"""From an export to torch: a ``Dataset`` of images, heatmaps, labels and masks.

An *export* is anything with the interface of :func:`gazeprep.load_export`'s result:

* ``tables``: dict of polars frames (``cases``, ``heatmaps``, ``case_labels``, ...);
* ``heatmap(case_id, target) -> np.ndarray`` float32 (H, W);
* ``manifest``: dict.

Images come from ``export.image(case_id)`` when the export has that method (the in-memory
:class:`MemoryExport` used in tests does), else from ``cases.image_path`` under ``image_root`` (the
MIMIC-CXR folder): the file itself when it exists there, else ``gazeprep.datasets.images.resolve_image``
(MIMIC layout), loaded with ``gazeprep.datasets.images.load_image`` (windowing, MONOCHROME1).

Geometry follows paper 004 (section 2.8; ``XRayResizerPadRound32``): each image is letterboxed to a
square (longest side scaled to ``size``, the rest zero-padded, centred) and heatmaps and masks go
through exactly the same transform. Training augmentation (004: rotation up to 45 degrees,
translation up to 15%, scaling up to 15%; optional horizontal flip) draws one random affine per
sample and applies it to the image, the heatmaps and the masks together. Draws are a pure function
of ``(seed, epoch, index)``, so runs and resumed runs see identical samples.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gazeprep.errors import GazeprepError


class ExportLike(Protocol):
    """What the trainer needs from an export (see module docstring)."""

    tables: dict[str, pl.DataFrame]
    manifest: dict

    def heatmap(self, case_id: str, target: str) -> np.ndarray: ...


@dataclass
class MemoryExport:
    """An export held in memory: the same interface as a loaded export, plus ``image()``/``mask()``.

    ``heatmaps`` maps ``(case_id, target)`` to float32 (H, W); ``images`` maps ``case_id`` to a float32
    (H, W) grey image in [0, 1]; ``masks`` maps ``(case_id, structure)`` to a bool (H, W) array.
    """

    tables: dict[str, pl.DataFrame]
    heatmaps: dict[tuple[str, str], np.ndarray]
    images: dict[str, np.ndarray]
    masks: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def heatmap(self, case_id: str, target: str) -> np.ndarray:
        return np.asarray(self.heatmaps[(case_id, target)], dtype=np.float32)

    def image(self, case_id: str) -> np.ndarray:
        return np.asarray(self.images[case_id], dtype=np.float32)

    def mask(self, case_id: str, structure: str) -> np.ndarray | None:
        m = self.masks.get((case_id, structure))
        return None if m is None else np.asarray(m, dtype=bool)


# ----------------------------------------------------------------------------------------------
# seeds and splits


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _stable_int(*parts: Any) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 62) - 1)


def subject_split(
    cases: pl.DataFrame,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    names: Sequence[str] = ("train", "validate", "test"),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split case ids so that no subject (patient) appears in two splits.

    Subjects (``subject_id``; a missing id counts as its own subject per case) are shuffled with a
    seeded generator and cut by cumulative ``fractions`` of subjects. Every split with a positive
    fraction gets at least one subject when there are enough subjects. Returns ``{name: [case_id]}``
    with case ids in table order.
    """
    if len(fractions) != len(names):
        raise ValueError("fractions and names must have the same length")
    if cases.height == 0:
        return {n: [] for n in names}
    subj = cases.select(
        pl.col("case_id"),
        pl.when(pl.col("subject_id").is_null())
        .then(pl.lit("case:") + pl.col("case_id"))
        .otherwise(pl.col("subject_id").cast(pl.Utf8))
        .alias("_subject"),
    )
    subjects = sorted(set(subj["_subject"].to_list()))
    order = np.random.default_rng(seed).permutation(len(subjects))
    total = float(sum(fractions))
    bounds = np.round(np.cumsum(np.asarray(fractions, dtype=float) / total) * len(subjects)).astype(int)
    # make sure each positive-fraction split gets one subject where possible
    if len(subjects) >= sum(f > 0 for f in fractions):
        prev = 0
        for i, f in enumerate(fractions):
            if f > 0 and bounds[i] <= prev:
                bounds[i] = prev + 1
            bounds[i] = min(bounds[i], len(subjects) - sum(ff > 0 for ff in fractions[i + 1 :]))
            prev = bounds[i]
    bounds[-1] = len(subjects)
    assign: dict[str, str] = {}
    start = 0
    for name, end in zip(names, bounds):
        for k in order[start:end]:
            assign[subjects[k]] = name
        start = end
    out: dict[str, list[str]] = {n: [] for n in names}
    for cid, s in zip(subj["case_id"].to_list(), subj["_subject"].to_list()):
        out[assign[s]].append(cid)
    return out


# ----------------------------------------------------------------------------------------------
# geometry


def letterbox_params(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(new_h, new_w, pad_top, pad_left) to fit (height, width) into a centred size x size square."""
    scale = size / max(height, width)
    nh = max(1, int(round(height * scale)))
    nw = max(1, int(round(width * scale)))
    return nh, nw, (size - nh) // 2, (size - nw) // 2


def letterbox(arr: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Letterbox (C, H, W) to (C, size, size): keep the aspect ratio, scale the longest side to
    ``size``, zero-pad the other side evenly (paper 004). ``mode``: ``bilinear`` (antialiased when
    shrinking) for images/heatmaps, ``nearest`` for masks."""
    c, h, w = arr.shape
    nh, nw, top, left = letterbox_params(h, w, size)
    if (nh, nw) != (h, w):
        if mode == "nearest":
            res = F.interpolate(arr[None].float(), size=(nh, nw), mode="nearest")[0]
        else:
            res = F.interpolate(arr[None].float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w)[0]
    else:
        res = arr.float()
    out = torch.zeros((c, size, size), dtype=torch.float32)
    out[:, top : top + nh, left : left + nw] = res
    return out


def _fit_like_image(arr: np.ndarray, image_hw: tuple[int, int], size: int, mode: str) -> torch.Tensor:
    """Bring a heatmap/mask to the letterboxed frame of its image.

    A map with the image's aspect ratio is letterboxed like the image; a square map of another aspect
    is taken as already letterboxed (e.g. 004's 512 x 512 recipe) and only resized.
    """
    t = torch.as_tensor(np.asarray(arr, dtype=np.float32))[None]
    h, w = arr.shape
    ih, iw = image_hw
    if h == w and ih != iw and abs(h / w - ih / iw) > 0.01:
        return F.interpolate(t[None], size=(size, size), mode="nearest" if mode == "nearest" else "bilinear", align_corners=False if mode != "nearest" else None)[0]
    return letterbox(t, size, mode)


@dataclass
class AugmentConfig:
    """Random affine shared by image, heatmaps and masks (defaults: paper 004, section 2.8)."""

    rotation_deg: float = 45.0
    translation: float = 0.15  # fraction of the side
    scale: float = 0.15  # +- fraction
    hflip: bool = False  # chest X-rays have a laterality; off by default

    @classmethod
    def from_dict(cls, d: dict | None) -> "AugmentConfig | None":
        if d is None or d is False:
            return None
        if d is True:
            return cls()
        return cls(**d)


def random_affine(gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """One draw of a 2 x 3 affine matrix (normalised coordinates, for ``affine_grid``)."""
    u = torch.rand(5, generator=gen) * 2 - 1  # in [-1, 1)
    angle = math.radians(float(u[0]) * cfg.rotation_deg)
    scale = 1.0 + float(u[1]) * cfg.scale
    tx, ty = float(u[2]) * cfg.translation * 2, float(u[3]) * cfg.translation * 2  # normalised [-1,1] span
    flip = -1.0 if (cfg.hflip and float(u[4]) > 0) else 1.0
    cos, sin = math.cos(angle), math.sin(angle)
    # output -> input sampling map: inverse of (scale, rotate, translate)
    a = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float32) / scale
    a = a @ torch.diag(torch.tensor([flip, 1.0]))
    t = -a @ torch.tensor([tx, ty])
    return torch.cat([a, t[:, None]], dim=1)


def apply_affine(stack: torch.Tensor, theta: torch.Tensor, n_nearest: int = 0) -> torch.Tensor:
    """Warp (C, S, S) channels with one affine ``theta`` (2 x 3); the last ``n_nearest`` channels
    (masks) use nearest sampling, the others bilinear. Outside the image reads as 0."""
    grid = F.affine_grid(theta[None], [1, *stack.shape], align_corners=False)
    c = stack.shape[0]
    parts = []
    if c - n_nearest > 0:
        parts.append(F.grid_sample(stack[None, : c - n_nearest], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0])
    if n_nearest:
        parts.append(F.grid_sample(stack[None, c - n_nearest :], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0])
    return torch.cat(parts, 0)


# ----------------------------------------------------------------------------------------------
# images and labels


def _load_image_file(path: Path) -> np.ndarray:
    """Grey float32 image in [0, 1] from PNG/JPG (PIL) or DICOM (pydicom, MONOCHROME1 inverted)."""
    if not path.exists():
        raise GazeprepError(f"{path}: image not found")
    if path.suffix.lower() == ".dcm":
        import pydicom

        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            arr = 1.0 - arr
        return arr
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return arr


def labels_from_case_labels(case_labels: pl.DataFrame, case_ids: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Label matrix (n_cases, n_labels): 1 present, 0 absent, NaN unknown.

    Rows come from ``gazeprep.text.map_case_labels`` (canonical label ids, 1/0) when available, plus
    the raw rows whose ``source_label`` equals a label id case-insensitively (spaces, ``-`` and ``_``
    equal); values > 0 and CheXpert's -1 (uncertain, counted present as in paper 004) mean present,
    0 absent; several rows for one label combine with max. No row at all gives NaN.
    """
    ids = list(case_ids)
    out = np.full((len(ids), len(labels)), np.nan, dtype=np.float32)
    if case_labels is None or case_labels.height == 0 or not labels:
        return out
    frames = []
    try:  # the text area's mapping to canonical label ids (rules/labels.yaml), when it exists
        from gazeprep.text import map_case_labels  # type: ignore[attr-defined]

        mapped = map_case_labels(case_labels)
        if {"case_id", "label", "value"} <= set(mapped.columns) and mapped.height:
            frames.append(mapped.select("case_id", pl.col("label").alias("source_label"), pl.col("value").cast(pl.Float64)))
    except Exception:  # noqa: BLE001 - optional dependency on another area's helper
        pass
    frames.append(case_labels.select("case_id", "source_label", pl.col("value").cast(pl.Float64)))

    def norm(s: str) -> str:
        return s.lower().replace("_", " ").replace("-", " ").strip()

    want = {norm(l): j for j, l in enumerate(labels)}
    row_of = {c: i for i, c in enumerate(ids)}
    df = pl.concat(frames).filter(pl.col("case_id").is_in(ids) & pl.col("value").is_not_null())
    for cid, src, val in zip(df["case_id"].to_list(), df["source_label"].to_list(), df["value"].to_list()):
        j = want.get(norm(src or ""))
        if j is None:
            continue
        present = 1.0 if (val > 0 or val == -1) else 0.0
        i = row_of[cid]
        out[i, j] = present if np.isnan(out[i, j]) else max(out[i, j], present)
    return out


# ----------------------------------------------------------------------------------------------
# the Dataset


class GazeDataset(Dataset):
    """Samples of an export for training (one per case).

    Each item is a dict:

    * ``image``: float32 (3, S, S) grey repeated to 3 channels, values in [0, 1], letterboxed;
    * ``heatmaps``: float32 (T, S, S), one map per target in ``targets`` order (zeros where missing);
    * ``heatmap_valid``: bool (T,), whether the export has that case's map for the target;
    * ``annotated``: bool scalar, any heatmap present (004's "annotated" images);
    * ``labels``: float32 (L,) 1/0/NaN in ``labels`` order;
    * ``class_index``: long scalar, index of the single positive label, -1 otherwise;
    * ``masks``: float32 (M, S, S), anatomy masks in ``mask_structures`` order (zeros where missing);
    * ``case_id`` (str), ``subject_id`` (int, -1 unknown), ``index`` (int).

    Parameters
    ----------
    export: an export (see module docstring).
    case_ids: cases to include (default: every non-discarded case in ``cases``).
    targets: heatmap targets in channel order (default: sorted targets of the heatmaps index).
    labels: label ids in order (default: ``targets`` minus ``full``).
    size: side S of the letterboxed square in pixels.
    augment: :class:`AugmentConfig` (or dict/True) for training; ``None`` for evaluation.
    label_matrix: optional (n_cases, L) array overriding labels from ``case_labels``.
    mask_structures: anatomy structures to return as masks (needs ``export.mask``).
    image_root: folder that ``cases.image_path`` is relative to (the MIMIC-CXR root).
    masks_root: folder that the ``masks`` table's paths are relative to (the dataset release root),
        used when the export has no ``mask()`` method; PNG values > 0 are inside. Sources are preferred
        in the order override, samed, egd_png.
    seed: base seed of the augmentation draws.
    """

    def __init__(
        self,
        export: ExportLike,
        case_ids: Sequence[str] | None = None,
        targets: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        size: int = 512,
        augment: AugmentConfig | dict | bool | None = None,
        label_matrix: np.ndarray | None = None,
        mask_structures: Sequence[str] = (),
        image_root: str | Path | None = None,
        seed: int = 0,
        masks_root: str | Path | None = None,
    ):
        self.export = export
        cases = export.tables["cases"]
        if "discarded" in cases.columns:
            cases = cases.filter(~pl.col("discarded").fill_null(False))
        if case_ids is not None:
            keep = list(case_ids)
            missing = set(keep) - set(cases["case_id"].to_list())
            if missing:
                raise GazeprepError(f"cases not in the export: {sorted(missing)[:5]}")
            order = {c: i for i, c in enumerate(keep)}
            cases = cases.filter(pl.col("case_id").is_in(keep)).with_columns(
                pl.col("case_id").replace_strict(order, return_dtype=pl.Int64).alias("_o")
            ).sort("_o").drop("_o")
        self.cases = cases
        self.case_ids: list[str] = cases["case_id"].to_list()
        hm = export.tables.get("heatmaps")
        if targets is None:
            targets = sorted(set(hm["target"].to_list())) if hm is not None and hm.height else ["full"]
        self.targets = list(targets)
        self.labels = list(labels) if labels is not None else [t for t in self.targets if t != "full"]
        self._have = set()
        if hm is not None and hm.height:
            self._have = set(zip(hm["case_id"].to_list(), hm["target"].to_list()))
        if label_matrix is not None:
            lm = np.asarray(label_matrix, dtype=np.float32)
            if lm.shape != (len(self.case_ids), len(self.labels)):
                raise GazeprepError(f"label_matrix has shape {lm.shape}, expected {(len(self.case_ids), len(self.labels))}")
            self.label_matrix = lm
        else:
            self.label_matrix = labels_from_case_labels(export.tables.get("case_labels"), self.case_ids, self.labels)
        self.size = int(size)
        self.augment = augment if isinstance(augment, AugmentConfig) or augment is None else AugmentConfig.from_dict(augment)
        self.mask_structures = list(mask_structures)
        self.image_root = Path(image_root) if image_root is not None else None
        self.masks_root = Path(masks_root) if masks_root is not None else None
        self._mask_paths: dict[tuple[str, str], str] = {}
        mt = export.tables.get("masks") if hasattr(export.tables, "get") else None
        if self.mask_structures and mt is not None and mt.height and not hasattr(export, "mask"):
            rank = {"override": 0, "samed": 1, "egd_png": 2}
            rows = sorted(mt.select("case_id", "structure", "source", "path").iter_rows(), key=lambda r: rank.get(r[2], 9))
            for cid, struct, _src, path in rows:
                self._mask_paths.setdefault((cid, struct), path)
        self.seed = int(seed)
        self.epoch = 0
        self._subjects = (
            [(-1 if s is None else int(s)) for s in cases["subject_id"].to_list()] if "subject_id" in cases.columns else [-1] * len(self.case_ids)
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (called by the training loop)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.case_ids)

    # -- loading -----------------------------------------------------------------------------
    def load_image(self, index: int) -> np.ndarray:
        """Grey float32 (H, W) image of case ``index`` in [0, 1]."""
        cid = self.case_ids[index]
        if hasattr(self.export, "image"):
            return np.asarray(self.export.image(cid), dtype=np.float32)
        row = self.cases.row(index, named=True)
        rel = row.get("image_path")
        if not rel:
            raise GazeprepError(f"case {cid}: no image_path in the cases table")
        root = self.image_root
        if root is None:
            manifest = getattr(self.export, "manifest", None) or {}
            root = manifest.get("images_root")
        if root is None:
            raise GazeprepError(f"case {cid}: give the folder of the images (--images-root, the MIMIC-CXR root)")
        direct = Path(root) / rel
        try:  # the ingest area's loader (MIMIC layout, windowing, MONOCHROME1)
            from gazeprep.datasets.images import load_image, resolve_image

            path = direct if direct.is_file() else resolve_image(root, rel)
            return np.asarray(load_image(path), dtype=np.float32)
        except ImportError:
            return _load_image_file(direct)

    def _load_mask(self, case_id: str, structure: str) -> np.ndarray | None:
        rel = self._mask_paths.get((case_id, structure))
        if rel is None:
            return None
        p = Path(rel) if self.masks_root is None else self.masks_root / rel
        if not p.is_file():
            raise GazeprepError(f"{p}: mask of case {case_id} ({structure}) not found; pass masks_root (the release folder)")
        from PIL import Image

        with Image.open(p) as im:
            return np.asarray(im.convert("L")) > 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        cid = self.case_ids[index]
        img = self.load_image(index)
        if img.ndim == 3:
            img = img.mean(-1)
        hw = img.shape
        image = letterbox(torch.as_tensor(img)[None], self.size)
        maps, valid = [], []
        for t in self.targets:
            if (cid, t) in self._have:
                maps.append(_fit_like_image(self.export.heatmap(cid, t), hw, self.size, "bilinear")[0])
                valid.append(True)
            else:
                maps.append(torch.zeros((self.size, self.size)))
                valid.append(False)
        heat = torch.stack(maps) if maps else torch.zeros((0, self.size, self.size))
        masks = []
        for s in self.mask_structures:
            m = self.export.mask(cid, s) if hasattr(self.export, "mask") else self._load_mask(cid, s)
            masks.append(torch.zeros((self.size, self.size)) if m is None else _fit_like_image(m.astype(np.float32), hw, self.size, "nearest")[0])
        mask_t = torch.stack(masks) if masks else torch.zeros((0, self.size, self.size))
        if self.augment is not None:
            gen = torch.Generator().manual_seed(_stable_int(self.seed, self.epoch, index))
            theta = random_affine(gen, self.augment)
            stack = apply_affine(torch.cat([image, heat, mask_t], 0), theta, n_nearest=mask_t.shape[0])
            image, heat, mask_t = stack[:1], stack[1 : 1 + heat.shape[0]], stack[1 + heat.shape[0] :]
        lab = torch.as_tensor(self.label_matrix[index])
        pos = torch.nonzero(lab > 0.5).flatten()
        return {
            "image": image.clamp(0, 1).expand(3, -1, -1).contiguous(),
            "heatmaps": heat.clamp(min=0),
            "heatmap_valid": torch.tensor(valid, dtype=torch.bool),
            "annotated": torch.tensor(any(valid)),
            "labels": lab,
            "class_index": torch.tensor(int(pos[0]) if len(pos) == 1 else -1),
            "masks": mask_t,
            "case_id": cid,
            "subject_id": self._subjects[index],
            "index": index,
        }
