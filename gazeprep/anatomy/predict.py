"""Batched SAMed inference over a release, on the shared executor, into a resumable mask store.

``gazeprep anatomy predict`` hands :func:`predict_block` to :meth:`gazeprep.pipeline.executor.Executor.map_blocks`
(``--executor local``: in this process; ``ray``: Ray tasks, one GPU each when the cluster has GPUs).
A block is a few batches of images; the worker loads the model once per process (cached by the
picklable :class:`PredictSpec`), segments the block and writes its masks as one part file,
``<out>/parts/<key>.npz``, atomically. The driver then appends the parts to the
:class:`~gazeprep.anatomy.store.MaskStore` in the release's image order and deletes them, so the
store is the same whichever executor ran the blocks.

Resume: images already in ``masks.parquet`` are not segmented again; parts left by a run that was
killed before it merged them are merged first (their images are then done too), and images a part
holds that the index already has are skipped, so nothing is stored twice.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from gazeprep._atomic import atomic_write, atomic_write_parquet, is_temp_name
from gazeprep.anatomy.data import ImageRecord, list_images
from gazeprep.anatomy.model import WEIGHTS_FILE, Samed, load_model
from gazeprep.anatomy.segment import segment_batches
from gazeprep.anatomy.store import REJECTS_FILE, MaskStore
from gazeprep.device import resolve_device
from gazeprep.errors import GazeprepError, InputFormatError
from gazeprep.schema import reject, rejects_frame

if TYPE_CHECKING:
    import torch

    from gazeprep.pipeline.executor import BlockRun, Executor

PARTS_DIR = "parts"
#: batches per executor block: one part file each, so a killed run loses at most one block per worker
BATCHES_PER_BLOCK = 4


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class PredictSpec:
    """Everything a worker needs to segment a block (picklable, hashable; no model, no open file)."""

    model_dir: str
    images_root: str
    out: str
    dataset: str
    mask_size: int
    batch_size: int
    device: str  # auto / cpu / cuda, resolved in the worker
    decode_threads: int


@dataclass(frozen=True)
class ImageOutcome:
    """One image of a block: the part file holding its masks, or its rejects row."""

    image_id: str
    part: str | None = None
    reject: dict | None = None


_MODELS: dict[PredictSpec, tuple[Samed, torch.device]] = {}


def _model_for(spec: PredictSpec) -> tuple[Samed, torch.device]:
    """The model of this process (loaded once per worker, kept for the spec's later blocks)."""
    cached = _MODELS.get(spec)
    if cached is None:
        model = load_model(spec.model_dir)
        dev = resolve_device(spec.device)
        model.to(dev).eval()
        cached = (model, dev)
        _MODELS.clear()
        _MODELS[spec] = cached
    return cached


def part_key(image_ids: list[str]) -> str:
    """File stem of the part of a block: a hash of its image ids (stable across executors)."""
    return hashlib.sha256("\n".join(image_ids).encode()).hexdigest()[:24]


def _write_part(path: Path, images: list[tuple[str, int, int]], labels: np.ndarray) -> None:
    """``image_id`` (str), ``height``/``width`` (int64, original size), ``labels`` uint8 (n, m, m)."""
    buf = io.BytesIO()
    np.savez(
        buf,
        image_id=np.array([i for i, _, _ in images], dtype=str),
        height=np.array([h for _, h, _ in images], dtype=np.int64),
        width=np.array([w for _, _, w in images], dtype=np.int64),
        labels=labels,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getbuffer())


def _part_arrays(path: Path, *names: str) -> list[np.ndarray]:
    """The arrays ``names`` of a part (the others are not read); a damaged part is an error naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return [z[name] for name in names]
    except (ValueError, KeyError, EOFError) as exc:
        raise InputFormatError(path, f"damaged anatomy part ({exc}); delete it and rerun") from None


def _read_part(path: Path) -> tuple[list[tuple[str, int, int]], np.ndarray]:
    """The images and label maps of a part (see :func:`_write_part`)."""
    ids, hs, ws, labels = _part_arrays(path, "image_id", "height", "width", "labels")
    return [(str(i), int(h), int(w)) for i, h, w in zip(ids, hs, ws)], labels


def predict_block(spec: PredictSpec, records: list[ImageRecord]) -> list[ImageOutcome]:
    """The executor's per-block function: segment ``records`` in batches of ``spec.batch_size``,
    write their masks as one part file, and return one :class:`ImageOutcome` per record."""
    model, dev = _model_for(spec)
    n = spec.batch_size
    batches = [records[i : i + n] for i in range(0, len(records), n)]
    images: list[tuple[str, int, int]] = []
    labels: list[np.ndarray] = []
    rejected: dict[str, dict] = {}
    for batch in segment_batches(
        model,
        dev,
        batches,
        spec.images_root,
        mask_size=spec.mask_size,
        dataset=spec.dataset,
        decode_threads=spec.decode_threads,
    ):
        images += batch.images
        if batch.labels is not None:
            labels.append(batch.labels)
        rejected.update({r["case_id"]: r for r in batch.rejects})
    part = None
    if images:
        part = part_key([i for i, _, _ in images]) + ".npz"
        _write_part(Path(spec.out) / PARTS_DIR / part, images, np.concatenate(labels))
    return [
        ImageOutcome(r.image_id, reject=rejected[r.image_id])
        if r.image_id in rejected
        else ImageOutcome(r.image_id, part)
        for r in records
    ]


def merge_parts(store: MaskStore, parts: list[Path], dataset: str, classes: tuple[str, ...]) -> int:
    """Append the masks of ``parts`` to ``store`` in that order, skipping images it already holds,
    and delete each part once the index holds its images. Returns the number of images added."""
    added = 0
    done = store.done_images()  # once: a set of the whole index per part grew with the store
    for path in parts:
        if not path.is_file():
            continue
        images, labels = _read_part(path)
        keep = [k for k, (image_id, _, _) in enumerate(images) if image_id not in done]
        if keep:
            store.append(dataset, [images[k] for k in keep], labels[keep], classes)
            done.update(images[k][0] for k in keep)
            added += len(keep)
        path.unlink()
    return added


def _part_ids(path: Path) -> list[str]:
    """The image ids of a part (its label maps are not read)."""
    (ids,) = _part_arrays(path, "image_id")
    return [str(i) for i in ids]


def _leftover_parts(out: Path, records: list[ImageRecord]) -> list[Path]:
    """Parts of a killed run, ordered by the release position of their first image (temporary
    files of a part being written when it was killed are deleted)."""
    folder = out / PARTS_DIR
    if not folder.is_dir():
        return []
    order = {r.image_id: k for k, r in enumerate(records)}
    found = []
    for p in sorted(folder.iterdir()):
        if is_temp_name(p.name):
            p.unlink()
        elif p.suffix == ".npz":
            first = min((order.get(i, len(order)) for i in _part_ids(p)), default=len(order))
            found.append((first, p.name, p))
    return [p for _, _, p in sorted(found)]


@dataclass
class _Plan:
    """How the blocks run: the executor, the spec the workers get, the device shown in the summary."""

    executor: Executor
    spec: PredictSpec
    device: str
    shutdown: list[Any] = field(default_factory=list)  # Ray started here, shut down at the end


def _plan(executor: str, ray_address: str | None, spec: PredictSpec, out: Path) -> _Plan:
    """The local executor (one process: the driver, whose model is cached for its blocks) or Ray
    tasks (one GPU each when the cluster has GPUs, else one CPU each)."""
    from gazeprep.pipeline.executor import RayExecutor, make_executor

    if executor == "local":
        _, dev = _model_for(spec)  # loaded in the driver, reused by every block
        return _Plan(make_executor("local", workers=1, where=out), spec, str(dev))
    if executor != "ray":
        raise GazeprepError(f"unknown executor {executor!r}; use local or ray")
    from gazeprep._optional import require

    ray = require("ray", "distributed", "--executor ray")
    plan_shutdown: list[Any] = []
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
        plan_shutdown.append(ray)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    options: dict[str, float] = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    spec = PredictSpec(**{**spec.__dict__, "device": spec.device if gpus else "cpu"})
    ex = RayExecutor(address=ray_address, where=out, task_options=options)
    return _Plan(ex, spec, f"ray ({gpus} GPU)" if gpus else "ray (cpu)", plan_shutdown)


def run_predict(
    model_dir: str | Path,
    dataset: str,
    root: str | Path,
    images_root: str | Path,
    out: str | Path,
    *,
    batch_size: int = 8,
    device: str = "auto",
    mask_size: int = 512,
    limit: int | None = None,
    workers: int = 2,
    progress: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
) -> dict:
    """Segment every image of ``dataset`` under ``root`` (images from ``images_root``) into ``out``.

    Images already in ``out/masks.parquet`` are skipped (resume). Images that cannot be read are
    listed in ``out/rejects.parquet`` (stage ``anatomy``; rows the release lists badly, stage
    ``ingest``) and the rest goes on. Masks are stored on a ``mask_size`` x ``mask_size`` grid
    covering the whole image. ``workers`` threads decode the images of coming batches while the
    model runs. ``executor="ray"`` runs the blocks as Ray tasks (see the module docstring); the
    store is the same as a local run's. Returns counts and timing.
    """
    model_dir, out = Path(model_dir), Path(out)
    if mask_size <= 0:
        raise GazeprepError("--mask-size must be positive")
    if batch_size <= 0:
        raise GazeprepError("--batch-size must be positive")
    spec = PredictSpec(
        str(model_dir), str(images_root), str(out), dataset, mask_size, batch_size, device, max(1, workers)
    )
    model, _ = _model_for(spec) if executor == "local" else (load_model(model_dir), None)
    cfg = model.config
    meta = {
        "dataset": dataset,
        "model_config": cfg.to_json(),
        "model_sha256": _sha256(model_dir / WEIGHTS_FILE),
        "classes": list(cfg.classes),
        "mask_grid": [mask_size, mask_size],
        "grid": "whole image stretched to the grid (no letterbox); resize back with nearest",
    }
    store = MaskStore(out, meta=meta)
    listing = list_images(dataset, root, images_root=images_root)
    records = listing.images if limit is None else listing.images[:limit]
    merge_parts(store, _leftover_parts(out, records), dataset, cfg.classes)  # a killed run's blocks
    done = store.done_images()
    todo = [r for r in records if r.image_id not in done]
    plan = _plan(executor, ray_address, spec, out)
    t0 = time.time()
    bar = tqdm(total=len(todo), desc="anatomy predict", unit="img", disable=not progress)
    try:
        run = plan.executor.map_blocks(
            partial(predict_block, plan.spec), todo, block_size=batch_size * BATCHES_PER_BLOCK, progress=bar
        )
    finally:
        bar.close()
        for ray in plan.shutdown:
            ray.shutdown()
    parts = list(dict.fromkeys(o.part for o in run.results if o.part is not None))
    n_done = merge_parts(store, [out / PARTS_DIR / p for p in parts], dataset, cfg.classes)
    elapsed = time.time() - t0
    rejects = _write_rejects(out, dataset, listing.rejects, run)
    _remove_empty(out / PARTS_DIR)
    return {
        "images": len(records),
        "skipped_done": len(records) - len(todo),
        "segmented": n_done,
        "rejected": len(rejects),
        "seconds": round(elapsed, 3),
        "images_per_s": round(n_done / elapsed, 3) if n_done and elapsed > 0 else None,
        "device": plan.device,
    }


def _write_rejects(out: Path, dataset: str, listed: list[dict], run: BlockRun[ImageRecord, ImageOutcome]) -> list[dict]:
    """Write ``rejects.parquet`` of this run: rows the release lists badly, unreadable images, and
    images whose block failed on every attempt (Ray); returns the rows."""
    rejects = list(listed) + [o.reject for o in run.results if o.reject is not None]
    rejects += [
        reject(dataset, rec.image_id, "anatomy", rec.source_file, rec.source_row, f"failed on every attempt: {why}")
        for rec, why in run.failed
    ]
    atomic_write_parquet(rejects_frame(rejects), out / REJECTS_FILE)
    return rejects


def _remove_empty(folder: Path) -> None:
    """Remove the parts folder once every part is merged (the folder then holds only the store)."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
