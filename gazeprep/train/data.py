"""From an export to torch: a ``Dataset`` of images, heatmaps, labels and masks.

An *export* is anything with the interface of :func:`gazeprep.load_export`'s result:

* ``tables``: dict of polars frames (``cases``, ``heatmaps``, ``case_labels``, ...);
* ``heatmap(case_id, target) -> np.ndarray`` float32 (H, W);
* ``manifest``: dict.

Images come from ``export.image(case_id)`` when the export has that method (the in-memory
:class:`MemoryExport` used in tests does), else from ``cases.image_path`` under ``image_root`` (the
MIMIC-CXR folder): the file itself when it exists there, else ``gazeprep.datasets.images.resolve_image``
(MIMIC layout), loaded with ``gazeprep.datasets.images.load_image`` (windowing, MONOCHROME1).

Geometry (:mod:`gazeprep.train.frames`): by default paper 004's (section 2.8;
``XRayResizerPadRound32``): each image is letterboxed to a square (longest side scaled to ``size``,
the rest zero-padded, centred); ``size`` may be ``[H, W]`` and ``fit`` ``stretch`` (003's code) or
``pad_crop_stride`` (GG-CAM, MT-UNet / Qiu). Heatmaps and masks go through exactly the same
transform (exported maps are taken from the frame their recipe rendered them in). Training augmentation (004: rotation up to 45 degrees,
translation up to 15%, scaling up to 15%; optional horizontal flip) draws one random affine per
sample and applies it to the image, the heatmaps and the masks together. Draws are a pure function
of ``(seed, epoch, index)``, so runs and resumed runs see identical samples.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gazeprep.datasets.images import load_image, resolve_image
from gazeprep.errors import GazeprepError
from gazeprep.heatmaps.grid import OutputGrid
from gazeprep.train.frames import (
    SizeSpec,
    TrainFrame,
    _place,
    grid_from_spec,
    letterbox_params,
    map_to_grid,
    resize,
    size_hw,
    transfer,
)

if TYPE_CHECKING:
    import zarr


class ExportLike(Protocol):
    """What the trainer needs from an export (see module docstring). Optional methods, used when an
    export has them: ``image(case_id)``, ``mask(case_id, structure)``, ``array(name)`` (the Zarr array
    of a map shape) and ``_checked_read(read, what)`` (:class:`gazeprep.export.Export`)."""

    @property
    def tables(self) -> Mapping[str, pl.DataFrame]: ...

    @property
    def manifest(self) -> dict[str, Any]: ...

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


SPLIT_NAMES = ("train", "validate", "test")  # MIMIC-CXR's words, as in the cases table's ``split``
#: Fallback split when the export has none: 70 / 10 / 20 % of the subjects (a held-out test set of
#: one fifth, as the papers' own random splits, e.g. MT-UNet's 70/10/20; a validation tenth for
#: model selection).
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


def _subject_keys(cases: pl.DataFrame) -> list[str]:
    """One subject key per row of ``cases``: ``subject_id`` as text, or ``case:<case_id>`` where the
    id is unknown (such a case is its own subject)."""
    ids = cases["case_id"].to_list()
    subj = cases["subject_id"].to_list() if "subject_id" in cases.columns else [None] * len(ids)
    return [f"case:{c}" if s is None else str(s) for c, s in zip(ids, subj)]


def export_split(cases: pl.DataFrame) -> dict[str, list[str]] | None:
    """The split shipped in the cases table (``split``: train / validate / test), or ``None`` when no
    case has one. ``val`` is read as ``validate``.

    Raises :class:`GazeprepError` when only some cases have a split, or a value is not a split name:
    mixing a shipped split with a drawn one could put one subject on both sides.
    """
    if "split" not in cases.columns or cases.height == 0:
        return None
    vals = [None if v is None or not str(v).strip() else str(v).strip().lower() for v in cases["split"].to_list()]
    known = sum(v is not None for v in vals)
    if known == 0:
        return None
    if known < len(vals):
        raise GazeprepError(
            f"{len(vals) - known} of {len(vals)} cases have no value in the export's split column; "
            "set data.split: subject in the config to draw a subject-disjoint split instead"
        )
    out: dict[str, list[str]] = {n: [] for n in SPLIT_NAMES}
    for cid, v in zip(cases["case_id"].to_list(), vals):
        v = "validate" if v == "val" else v
        if v not in out:
            raise GazeprepError(f"case {cid}: split {v!r} is not one of {list(SPLIT_NAMES)}")
        out[v].append(cid)
    return out


def stratified_subject_split(
    cases: pl.DataFrame,
    strata: dict[str, str] | None = None,
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
) -> dict[str, list[str]]:
    """Split case ids so that no subject appears in two splits, stratified by ``strata``.

    ``strata`` maps case id -> stratum (e.g. the class, or the set of positive labels); a subject's
    stratum is the most frequent one among its cases (ties: the smallest). Strata are visited in a
    seeded random order and their subjects in a seeded random order; walking that list, each subject
    goes to the split whose count lags most behind ``fraction * subjects so far`` (ties: the first
    split). Every stretch of the list, hence every stratum, is then split in the given proportions
    to within one subject per split. A split with a positive fraction that ends empty takes one
    subject from the largest split when there are enough subjects. Fractions are of subjects, not
    cases. Returns ``{name: [case_id]}`` with case ids in table order.
    """
    if len(fractions) != len(names):
        raise ValueError("fractions and names must have the same length")
    fr = np.asarray(fractions, dtype=float)
    if (fr < 0).any() or fr.sum() <= 0:
        raise GazeprepError(f"split fractions must be >= 0 with a positive sum, got {list(fractions)}")
    fr = fr / fr.sum()
    out: dict[str, list[str]] = {n: [] for n in names}
    if cases.height == 0:
        return out
    ids = cases["case_id"].to_list()
    keys = _subject_keys(cases)
    votes: dict[str, dict[str, int]] = {}
    for cid, k in zip(ids, keys):
        st = "" if strata is None else str(strata.get(cid, ""))
        votes.setdefault(k, {})
        votes[k][st] = votes[k].get(st, 0) + 1
    subject_stratum = {k: sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for k, v in votes.items()}
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = {}
    for k in sorted(subject_stratum):
        by_stratum.setdefault(subject_stratum[k], []).append(k)
    order: list[str] = []
    for st_i in rng.permutation(len(by_stratum)):
        members = by_stratum[sorted(by_stratum)[st_i]]
        order += [members[j] for j in rng.permutation(len(members))]
    counts = np.zeros(len(names))
    assign: dict[str, int] = {}
    members_of: list[list[str]] = [[] for _ in names]
    for i, k in enumerate(order):
        j = int(np.argmax(fr * (i + 1) - counts))
        counts[j] += 1
        assign[k] = j
        members_of[j].append(k)
    if len(order) >= int((fr > 0).sum()):
        for j in range(len(names)):
            if fr[j] > 0 and counts[j] == 0:
                big = int(np.argmax(counts))
                k = members_of[big].pop()
                counts[big] -= 1
                counts[j] += 1
                assign[k] = j
                members_of[j].append(k)
    for cid, k in zip(ids, keys):
        out[names[assign[k]]].append(cid)
    return out


# ----------------------------------------------------------------------------------------------
# geometry (see gazeprep.train.frames for the frames and their transfers)


def letterbox(arr: torch.Tensor, size: SizeSpec, mode: str = "bilinear") -> torch.Tensor:
    """Letterbox (C, H, W) to (C, size, size) (or ``size = (h, w)``): keep the aspect ratio, scale to
    fit, zero-pad the rest evenly (paper 004). ``mode``: ``bilinear`` (antialiased when shrinking) for
    images/heatmaps, ``nearest`` for masks."""
    c, h, w = arr.shape
    out_hw = size_hw(size)
    nh, nw, top, left = letterbox_params(h, w, out_hw)
    return _place(resize(arr.float(), (nh, nw), mode), out_hw, top, left)


@dataclass
class AugmentConfig:
    """Training augmentation (defaults: paper 004, section 2.8).

    A random affine shared by image, heatmaps and masks (rotation up to ``rotation_deg`` degrees,
    translation up to ``translation`` of each side, scaling by ``1 +- scale``, an optional horizontal
    flip), rotations taken in pixel space so non-square frames are not sheared; then, on the image
    only, brightness (``+- brightness`` added), contrast (``1 +- contrast`` times the deviation from the
    image mean) and Gaussian noise of standard deviation ``noise_std`` (001 chapter 3)."""

    rotation_deg: float = 45.0
    translation: float = 0.15  # fraction of the side
    scale: float = 0.15  # +- fraction
    hflip: bool = False  # chest X-rays have a laterality; off by default
    brightness: float = 0.0
    contrast: float = 0.0
    noise_std: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | bool | None) -> AugmentConfig | None:
        if d is None or d is False:
            return None
        if d is True:
            return cls()
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise GazeprepError(f"unknown data.augment options {extra}; known: {sorted(known)}")
        return cls(**d)

    @property
    def is_photometric(self) -> bool:
        return bool(self.brightness or self.contrast or self.noise_std)


def random_affine(gen: torch.Generator, cfg: AugmentConfig, aspect: float = 1.0) -> torch.Tensor:
    """One draw of a 2 x 3 affine matrix (normalised coordinates, for ``affine_grid``) on a frame of
    ``aspect = height / width``. Draws five uniforms in [-1, 1): angle, scale, tx, ty, flip."""
    u = torch.rand(5, generator=gen) * 2 - 1  # in [-1, 1)
    angle = math.radians(float(u[0]) * cfg.rotation_deg)
    scale = 1.0 + float(u[1]) * cfg.scale
    tx, ty = float(u[2]) * cfg.translation * 2, float(u[3]) * cfg.translation * 2  # normalised [-1,1] span
    flip = -1.0 if (cfg.hflip and float(u[4]) > 0) else 1.0
    cos, sin = math.cos(angle), math.sin(angle)
    # output -> input sampling map: inverse of (scale, rotate, translate); the rotation acts on pixel
    # coordinates, i.e. D^-1 R D on normalised ones with D = diag(width, height) / 2
    rot = torch.tensor([[cos, -sin * aspect], [sin / aspect, cos]], dtype=torch.float32)
    a = rot / scale
    a = a @ torch.diag(torch.tensor([flip, 1.0]))
    t = -a @ torch.tensor([tx, ty])
    return torch.cat([a, t[:, None]], dim=1)


def apply_affine(stack: torch.Tensor, theta: torch.Tensor, n_nearest: int = 0) -> torch.Tensor:
    """Warp (C, H, W) channels with one affine ``theta`` (2 x 3); the last ``n_nearest`` channels
    (masks) use nearest sampling, the others bilinear. Outside the image reads as 0. Bilinear values
    are convex combinations of the inputs (and 0), so a map in [0, 1] stays in [0, 1]."""
    grid = F.affine_grid(theta[None], [1, *stack.shape], align_corners=False)
    c = stack.shape[0]
    if n_nearest == 0:
        return F.grid_sample(stack[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    parts = []
    if c - n_nearest > 0:
        parts.append(
            F.grid_sample(
                stack[None, : c - n_nearest], grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )[0]
        )
    parts.append(
        F.grid_sample(stack[None, c - n_nearest :], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    )
    return torch.cat(parts, 0)


def clahe(image: np.ndarray, clip_limit: float = 0.01, kernel_size: int | None = None, nbins: int = 256) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a grey float image in [0, 1]
    (``skimage.exposure.equalize_adapthist``; defaults: scikit-image's, tiles of 1/8 of the image,
    clip limit 0.01, 256 bins; 001 chapter 3 names CLAHE without its parameters)."""
    from skimage.exposure import equalize_adapthist

    return equalize_adapthist(np.clip(image, 0, 1), kernel_size=kernel_size, clip_limit=clip_limit, nbins=nbins).astype(
        np.float32
    )


# ----------------------------------------------------------------------------------------------
# images and labels


def labels_from_case_labels(
    case_labels: pl.DataFrame | None, case_ids: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """Label matrix (n_cases, n_labels): 1 present, 0 absent, NaN unknown.

    Rows come from ``gazeprep.text.map_case_labels`` (canonical label ids, 1/0; when the table has
    the ``dataset`` and ``source`` columns of :data:`gazeprep.schema.CASE_LABELS`), plus the raw rows
    whose ``source_label`` equals a label id in :func:`gazeprep.text.labels.normalise_label` form; values > 0 and CheXpert's -1 (uncertain, counted present as in paper 004) mean present,
    0 absent; several rows for one label combine with max. No row at all gives NaN.
    """
    ids = list(case_ids)
    out = np.full((len(ids), len(labels)), np.nan, dtype=np.float32)
    if case_labels is None or case_labels.height == 0 or not labels:
        return out
    from gazeprep.text.labels import map_case_labels, normalise_label

    frames = []
    # canonical label ids of rules/labels.yaml need the rows' dataset and source (an export's
    # case_labels table has them; a bare (case_id, source_label, value) table matches by name only)
    mapped = map_case_labels(case_labels) if {"dataset", "source"} <= set(case_labels.columns) else case_labels.clear()
    if mapped.height:
        frames.append(mapped.select("case_id", pl.col("label").alias("source_label"), pl.col("value").cast(pl.Float64)))
    frames.append(case_labels.select("case_id", "source_label", pl.col("value").cast(pl.Float64)))

    want = {normalise_label(lab): j for j, lab in enumerate(labels)}
    row_of = {c: i for i, c in enumerate(ids)}
    df = pl.concat(frames).filter(pl.col("case_id").is_in(ids) & pl.col("value").is_not_null())
    for cid, src, val in zip(df["case_id"].to_list(), df["source_label"].to_list(), df["value"].to_list()):
        j = want.get(normalise_label(src or ""))
        if j is None:
            continue
        present = 1.0 if (val > 0 or val == -1) else 0.0
        i = row_of[cid]
        out[i, j] = present if np.isnan(out[i, j]) else max(out[i, j], present)
    return out


# ----------------------------------------------------------------------------------------------
# the Dataset

#: The ``data`` options of a config that shape the input (passed to :class:`GazeDataset`).
INPUT_OPTIONS = ("size", "fit", "letterbox_rule", "stride", "clahe", "cache_images")
#: Key of the batch a :meth:`GazeDataset.__getitems__` item belongs to (read by the loop's collate).
BATCH_KEY = "_batch"


def _photometric(image: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> None:
    """Brightness, contrast and Gaussian noise of ``cfg`` on the (H, W) image, in place, clipped to
    [0, 1]; the draws come from ``gen`` (two uniforms, then the noise)."""
    u = torch.rand(2, generator=gen) * 2 - 1
    if cfg.contrast:
        mean = image.mean()
        image.sub_(mean).mul_(1 + float(u[1]) * cfg.contrast).add_(mean)
    if cfg.brightness:
        image.add_(float(u[0]) * cfg.brightness)
    if cfg.noise_std:
        image.add_(torch.randn(image.shape, generator=gen) * cfg.noise_std)
    image.clamp_(0, 1)


def _zeros_for_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """A zero float32 tensor of ``shape``; in a DataLoader worker it lives in shared memory (new
    shared-memory pages are zero), so sending it to the main process copies nothing."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        return torch.zeros(shape, dtype=torch.float32)
    numel = math.prod(shape)
    template = torch.empty(0, dtype=torch.float32)
    storage = template._typed_storage()._new_shared(numel, device="cpu")
    return template.new(storage).resize_(*shape)


#: Default budget of the decoded-image cache (float32 images at the training size), in bytes.
IMAGE_CACHE_BUDGET = 4 * 1024**3


def input_options(data: dict) -> dict[str, Any]:
    """The :class:`GazeDataset` keyword arguments among a config's ``data`` section
    (:data:`INPUT_OPTIONS` plus ``mask_structures``)."""
    out = {k: data[k] for k in INPUT_OPTIONS if k in data and data[k] is not None}
    if data.get("mask_structures"):
        out["mask_structures"] = data["mask_structures"]
    return out


def assemble_batch(ds: GazeDataset, buf: torch.Tensor, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items of one batch written into ``buf`` (B, 1 + T + M, H, W) by ``GazeDataset._fill``
    (``items[k]`` its other fields), each with its planes as views of ``buf`` and the whole batch under
    :data:`BATCH_KEY` (what :func:`gazeprep.train.loop._collate` hands on without stacking). Also used
    by :class:`gazeprep.train.weak.WithLabelOnly`, whose items come from two datasets of one frame."""
    batch: dict[str, Any] = dict(ds._planes(buf))
    for key in items[0] if items else ():
        vals = [it[key] for it in items]
        batch[key] = (
            torch.stack(vals)
            if isinstance(vals[0], torch.Tensor)
            else (torch.tensor(vals) if isinstance(vals[0], (int, float, bool)) else vals)
        )
    planes = [ds._planes(buf[k]) for k in range(len(items))]
    return [{**p, **it, BATCH_KEY: batch} for p, it in zip(planes, items)]


def _selected_cases(cases: pl.DataFrame, case_ids: Sequence[str] | None) -> pl.DataFrame:
    """The rows of ``cases`` a dataset serves: the non-discarded ones, or exactly ``case_ids`` in that
    order (a case id not in the table is an error)."""
    if "discarded" in cases.columns:
        cases = cases.filter(~pl.col("discarded").fill_null(False))
    if case_ids is None:
        return cases
    keep = list(case_ids)
    missing = set(keep) - set(cases["case_id"].to_list())
    if missing:
        raise GazeprepError(f"cases not in the export: {sorted(missing)[:5]}")
    order = {c: i for i, c in enumerate(keep)}
    return (
        cases.filter(pl.col("case_id").is_in(keep))
        .with_columns(pl.col("case_id").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("_o")
        .drop("_o")
    )


#: One map a dataset reads: (channel, Zarr array name or None, row in that array or -1).
MapRow = tuple[int, str | None, int]


def _map_rows(hm: pl.DataFrame | None, case_ids: Sequence[str], targets: Sequence[str]) -> dict[str, list[MapRow]]:
    """``case_id -> [(channel, array, row)]`` of the maps of ``targets`` (channels in ``targets``
    order) that the heatmaps index ``hm`` lists for ``case_ids``."""
    rows: dict[str, list[MapRow]] = {}
    if hm is None or not hm.height:
        return rows
    chan = {t: i for i, t in enumerate(targets)}
    wanted = set(case_ids)
    cols = [c for c in ("case_id", "target", "array", "row") if c in hm.columns]
    for rec in hm.select(cols).iter_rows():
        cid, tgt = rec[0], rec[1]
        if cid in wanted and tgt in chan:
            arr = rec[2] if len(rec) > 2 else None
            row = int(rec[3]) if len(rec) > 3 and rec[3] is not None else -1
            rows.setdefault(cid, []).append((chan[tgt], arr, row))
    return rows


def _mask_paths(export: ExportLike, structures: Sequence[str]) -> dict[tuple[str, str], str]:
    """``(case_id, structure) -> path`` from the export's ``masks`` table, for exports without a
    ``mask()`` method; sources preferred in the order override, samed, egd_png."""
    paths: dict[tuple[str, str], str] = {}
    mt = export.tables.get("masks")
    if structures and mt is not None and mt.height and not hasattr(export, "mask"):
        rank = {"override": 0, "samed": 1, "egd_png": 2}
        rows = sorted(mt.select("case_id", "structure", "source", "path").iter_rows(), key=lambda r: rank.get(r[2], 9))
        for cid, struct, _src, path in rows:
            paths.setdefault((cid, struct), path)
    return paths


@dataclass
class _ImageCache:
    """Decoded images at the training size, in shared memory: DataLoader workers (forked) fill one
    cache that every process reads. ``images`` (N, H, W) float32, ``hw`` (N, 2) int32 original sizes,
    ``ok`` (N,) uint8 filled flags."""

    images: torch.Tensor
    hw: torch.Tensor
    ok: torch.Tensor

    @classmethod
    def allocate(cls, n: int, frame_hw: tuple[int, int], enabled: bool | None) -> _ImageCache | None:
        """A cache of ``n`` images of ``frame_hw``, or None when ``enabled`` is False, or is None and
        the images would not fit in :data:`IMAGE_CACHE_BUDGET`."""
        fh, fw = frame_hw
        if enabled is None:
            enabled = n * fh * fw * 4 <= IMAGE_CACHE_BUDGET
        if not (enabled and n):
            return None
        return cls(
            torch.zeros((n, fh, fw), dtype=torch.float32).share_memory_(),
            torch.zeros((n, 2), dtype=torch.int32).share_memory_(),
            torch.zeros(n, dtype=torch.uint8).share_memory_(),
        )


class GazeDataset(Dataset):
    """Samples of an export for training (one per case).

    Each item is a dict:

    * ``image``: float32 (3, H, W) grey repeated to 3 channels (an expanded view), values in [0, 1],
      in the training frame;
    * ``heatmaps``: float32 (T, H, W), one map per target in ``targets`` order (zeros where missing);
    * ``heatmap_valid``: bool (T,), whether the export has that case's map for the target;
    * ``annotated``: bool scalar, any heatmap present (004's "annotated" images);
    * ``labels``: float32 (L,) 1/0/NaN in ``labels`` order;
    * ``class_index``: long scalar, index of the single positive label, -1 otherwise;
    * ``masks``: float32 (M, H, W), anatomy masks in ``mask_structures`` order (zeros where missing);
    * ``case_id`` (str), ``subject_id`` (int, -1 unknown), ``index`` (int).

    Image, maps and masks of an item are slices of one (1 + T + M, H, W) tensor filled in place (no
    stacking copies); all maps of a case are read from the export's Zarr array in one call per array
    (their rows are contiguous, else one orthogonal selection); maps already in the training frame
    (an export rendered at the training geometry) are copied as they are, others are moved into it
    (:func:`gazeprep.train.frames.transfer`). Decoded images are cached at the training size
    (in shared memory, so DataLoader workers fill one cache) when ``cache_images`` allows.

    Parameters
    ----------
    export: an export (see module docstring).
    case_ids: cases to include (default: every non-discarded case in ``cases``).
    targets: heatmap targets in channel order (default: sorted targets of the heatmaps index).
    labels: label ids in order (default: ``targets`` minus ``full``).
    size: the training frame, ``S`` (square) or ``[H, W]`` pixels.
    fit: ``letterbox`` (default), ``stretch`` or ``pad_crop_stride`` (see :mod:`gazeprep.train.frames`).
    letterbox_rule: ``centre`` or ``ricbl`` (paper 004's exact geometry).
    stride: the ``pad_crop_stride`` sampling step (GG-CAM 2, MT-UNet 5, Qiu 5).
    clahe: CLAHE on the image at the training size (``True`` or a dict of :func:`clahe` options).
    cache_images: keep decoded images at the training size (``None``: when they fit in
        :data:`IMAGE_CACHE_BUDGET`).
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
        size: SizeSpec = 512,
        augment: AugmentConfig | dict[str, Any] | bool | None = None,
        label_matrix: np.ndarray | None = None,
        mask_structures: Sequence[str] = (),
        image_root: str | Path | None = None,
        seed: int = 0,
        masks_root: str | Path | None = None,
        fit: str = "letterbox",
        letterbox_rule: str = "centre",
        stride: int = 1,
        clahe: bool | dict[str, Any] | None = None,
        cache_images: bool | None = None,
    ):
        self.export = export
        self.cases = _selected_cases(export.tables["cases"], case_ids)
        self.case_ids: list[str] = self.cases["case_id"].to_list()
        hm = export.tables.get("heatmaps")
        if targets is None:
            targets = sorted(set(hm["target"].to_list())) if hm is not None and hm.height else ["full"]
        self.targets = list(targets)
        self.labels = list(labels) if labels is not None else [t for t in self.targets if t != "full"]
        # case -> [(channel, array name or None, row)] of the maps this dataset reads
        self._rows = _map_rows(hm, self.case_ids, self.targets)
        if label_matrix is not None:
            lm = np.asarray(label_matrix, dtype=np.float32)
            if lm.shape != (len(self.case_ids), len(self.labels)):
                raise GazeprepError(
                    f"label_matrix has shape {lm.shape}, expected {(len(self.case_ids), len(self.labels))}"
                )
            self.label_matrix = lm
        else:
            self.label_matrix = labels_from_case_labels(export.tables.get("case_labels"), self.case_ids, self.labels)
        self.frame = TrainFrame.make(size, fit, letterbox_rule, stride)
        self.size: SizeSpec = size if isinstance(size, (int, np.integer)) else tuple(self.frame.shape)
        self.clahe: dict[str, Any] | None = None if not clahe else ({} if clahe is True else dict(clahe))
        self.augment = (
            augment if isinstance(augment, AugmentConfig) or augment is None else AugmentConfig.from_dict(augment)
        )
        self.mask_structures = list(mask_structures)
        self.image_root = Path(image_root) if image_root is not None else None
        self.masks_root = Path(masks_root) if masks_root is not None else None
        self._mask_paths = _mask_paths(export, self.mask_structures)
        self.seed = int(seed)
        self.epoch = 0
        self._subjects = (
            [(-1 if s is None else int(s)) for s in self.cases["subject_id"].to_list()]
            if "subject_id" in self.cases.columns
            else [-1] * len(self.case_ids)
        )
        recipe = (getattr(export, "manifest", None) or {}).get("recipe") or {}
        self._map_spec = recipe.get("output") if isinstance(recipe, dict) else None
        self._cache = _ImageCache.allocate(len(self.case_ids), self.frame.shape, cache_images)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (called by the training loop)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.case_ids)

    # -- loading -----------------------------------------------------------------------------
    def load_image(self, index: int) -> np.ndarray:
        """Grey float32 (H, W) image of case ``index`` in [0, 1], at its original size."""
        cid = self.case_ids[index]
        if hasattr(self.export, "image"):
            img = np.asarray(self.export.image(cid), dtype=np.float32)
            return img.mean(-1) if img.ndim == 3 else img
        row = self.cases.row(index, named=True)
        rel = row.get("image_path")
        if not rel:
            raise GazeprepError(f"case {cid}: no image_path in the cases table")
        root = self.image_root
        if root is None:
            manifest = getattr(self.export, "manifest", None) or {}
            root = manifest.get("images_root")
        if root is None:
            raise GazeprepError(f"case {cid}: give the folder of the images (--images, the MIMIC-CXR root)")
        direct = Path(root) / rel
        # the package's one image loader (MIMIC layout, VOI windowing, MONOCHROME1)
        path = direct if direct.is_file() else resolve_image(root, rel)
        img = np.asarray(load_image(path), dtype=np.float32)
        return img.mean(-1) if img.ndim == 3 else img

    def image_grid(self, index: int, image_hw: tuple[int, int]) -> OutputGrid:
        """The training-frame grid of case ``index`` (its original image is ``image_hw``)."""
        return self.frame.grid(*image_hw)

    def _framed_image(self, index: int, out: torch.Tensor) -> tuple[int, int]:
        """Write case ``index``'s image in the training frame into ``out`` (1, H, W); returns the
        original (height, width). Served from the cache when it holds the case."""
        cache = self._cache
        if cache is not None and bool(cache.ok[index]):
            out[0].copy_(cache.images[index])
            h, w = cache.hw[index].tolist()
            return int(h), int(w)
        img = self.load_image(index)
        ih, iw = img.shape
        transfer(
            torch.from_numpy(np.ascontiguousarray(img))[None],
            OutputGrid.native(ih, iw),
            self.frame.grid(ih, iw),
            "bilinear",
            out=out,
        )
        if self.clahe is not None:
            out[0] = torch.from_numpy(clahe(out[0].numpy(), **self.clahe))
        if cache is not None:
            cache.images[index].copy_(out[0])
            cache.hw[index, 0], cache.hw[index, 1] = ih, iw
            cache.ok[index] = 1
        return ih, iw

    def _read_maps(self, cid: str, image_hw: tuple[int, int], out: torch.Tensor) -> list[bool]:
        """Write the case's maps into ``out`` (T, H, W) (zeros stay where a target has no map);
        returns the validity per target."""
        valid = [False] * len(self.targets)
        rows = self._rows.get(cid, [])
        if not rows:
            return valid
        dst = None
        blocks: list[tuple[int, np.ndarray]] = []
        by_array: dict[str, list[tuple[int, int]]] = {}
        export = self.export
        stored = [(ch, a, r) for ch, a, r in rows if a is not None and r >= 0]
        if hasattr(export, "array") and len(stored) == len(rows):
            for ch, arr, row in stored:
                by_array.setdefault(arr, []).append((row, ch))
            for arr, items in by_array.items():
                items.sort()
                rr = [r for r, _ in items]
                data = self._zarr_rows(export.array(arr), arr, rr)
                blocks += [(ch, data[i]) for i, (_, ch) in enumerate(items)]
        else:
            blocks = [(ch, np.asarray(self.export.heatmap(cid, self.targets[ch]))) for ch, _, _ in rows]
        for ch, m in blocks:
            mh, mw = m.shape
            src = grid_from_spec(self._map_spec, image_hw[0], image_hw[1], mh, mw)
            if dst is None:
                dst = self.frame.grid(*image_hw)
            transfer(torch.from_numpy(np.ascontiguousarray(m))[None], src, dst, "bilinear", out=out[ch : ch + 1])
            valid[ch] = True
        return valid

    def _zarr_rows(self, arr: zarr.Array, array: str, rows: list[int]) -> np.ndarray:
        """Rows ``rows`` (sorted) of the export's Zarr array ``arr`` (named ``array``) in one read: a
        slice when they are contiguous, else an orthogonal selection. Checked against a replaced export
        the way ``Export.heatmap`` reads are."""
        lo, hi = rows[0], rows[-1]

        def read() -> np.ndarray:
            if hi - lo + 1 == len(rows):
                return np.asarray(arr[lo : hi + 1])
            return np.asarray(arr.get_orthogonal_selection((np.asarray(rows), slice(None), slice(None))))

        checked = getattr(self.export, "_checked_read", None)  # gazeprep Export: replacement check
        return checked(read, f"maps {array}[{lo}..{hi}]") if checked is not None else read()

    def _load_mask(self, case_id: str, structure: str) -> np.ndarray | None:
        rel = self._mask_paths.get((case_id, structure))
        if rel is None:
            return None
        p = Path(rel) if self.masks_root is None else self.masks_root / rel
        if not p.is_file():
            raise GazeprepError(
                f"{p}: mask of case {case_id} ({structure}) not found; pass masks_root (the release folder)"
            )
        from PIL import Image

        with Image.open(p) as im:
            return np.asarray(im.convert("L")) > 0

    def _fill(self, index: int, buf: torch.Tensor) -> dict[str, Any]:
        """Write case ``index``'s image, maps and masks into ``buf`` (1 + T + M, H, W), zero on entry;
        returns the item's other fields."""
        cid = self.case_ids[index]
        n_t, n_m = len(self.targets), len(self.mask_structures)
        fh, fw = self.frame.shape
        ih, iw = self._framed_image(index, buf[0:1])
        valid = self._read_maps(cid, (ih, iw), buf[1 : 1 + n_t])
        for j, s in enumerate(self.mask_structures):
            m = self.export.mask(cid, s) if hasattr(self.export, "mask") else self._load_mask(cid, s)
            if m is not None:
                mh, mw = m.shape
                src = OutputGrid.native(ih, iw) if (mh, mw) == (ih, iw) else grid_from_spec(None, ih, iw, mh, mw)
                transfer(
                    torch.from_numpy(np.asarray(m, dtype=np.float32))[None],
                    src,
                    self.frame.grid(ih, iw),
                    "nearest",
                    out=buf[1 + n_t + j : 2 + n_t + j],
                )
        if self.augment is not None:
            gen = torch.Generator().manual_seed(_stable_int(self.seed, self.epoch, index))
            theta = random_affine(gen, self.augment, aspect=fh / fw)
            buf.copy_(apply_affine(buf, theta, n_nearest=n_m))
            if self.augment.is_photometric:
                _photometric(buf[0], gen, self.augment)
        lab = torch.from_numpy(self.label_matrix[index])
        pos = torch.nonzero(lab > 0.5).flatten()
        return {
            "heatmap_valid": torch.tensor(valid, dtype=torch.bool),
            "annotated": torch.tensor(any(valid)),
            "labels": lab,
            "class_index": torch.tensor(int(pos[0]) if len(pos) == 1 else -1),
            "case_id": cid,
            "subject_id": self._subjects[index],
            "index": index,
        }

    def _planes(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image (expanded to 3 channels, no copy), heatmaps and masks as views of ``buf`` (..., C, H, W)."""
        n_t = len(self.targets)
        fh, fw = self.frame.shape
        return {
            "image": buf[..., 0:1, :, :].expand(*buf.shape[:-3], 3, fh, fw),
            "heatmaps": buf[..., 1 : 1 + n_t, :, :],
            "masks": buf[..., 1 + n_t :, :, :],
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        fh, fw = self.frame.shape
        buf = torch.zeros((1 + len(self.targets) + len(self.mask_structures), fh, fw), dtype=torch.float32)
        item = self._fill(index, buf)
        return {**self._planes(buf), **item}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A whole batch written into one preallocated (B, 1 + T + M, H, W) tensor, in shared memory
        inside a DataLoader worker (what ``default_collate`` does for its output), zero-filled by the
        allocation: absent maps cost nothing and :func:`gazeprep.train.loop._collate` hands the batch
        on without stacking. Each returned item is a view of it (``BATCH_KEY`` names the batch)."""
        fh, fw = self.frame.shape
        shape = (len(indices), 1 + len(self.targets) + len(self.mask_structures), fh, fw)
        buf = _zeros_for_batch(shape)
        items = [self._fill(int(i), buf[k]) for k, i in enumerate(indices)]
        return assemble_batch(self, buf, items)

    def prediction_to_map_frame(
        self,
        pred: np.ndarray,
        index: int,
        out_hw: tuple[int, int] | None = None,
        image_hw: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """A predicted map of case ``index`` (any resolution, covering the training frame) in the frame
        of that case's exported maps of shape ``out_hw`` (default: the original image size), clipped
        to [0, 1]."""
        if image_hw is None:
            row = self.cases.row(index, named=True)
            h, w = row.get("image_height_px"), row.get("image_width_px")
            if h and w:
                image_hw = (int(h), int(w))
            else:
                img_h, img_w = self.load_image(index).shape
                image_hw = (img_h, img_w)
        ih, iw = image_hw
        oh, ow = out_hw if out_hw is not None else (ih, iw)
        return map_to_grid(pred, self.frame.grid(ih, iw), grid_from_spec(self._map_spec, ih, iw, oh, ow))
