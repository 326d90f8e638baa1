"""Run-level API behind ``gazeprep train`` and ``gazeprep predict``.

A *run folder* holds ``run.yaml`` (model name, resolved config, source export), ``checkpoint.pt``
(resumable), ``history.json`` and, at the end, ``model.pt`` (the model's state dict, atomic write).
``predict`` rebuilds the model from ``run.yaml``, loads ``model.pt`` (or the last checkpoint) with
``weights_only=True`` and writes predicted maps, mapped back to each ground-truth map's frame, as a
prediction export (``gazeprep.export.write_prediction_export``) that ``gazeprep evaluate`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
import yaml

from gazeprep.device import resolve_device
from gazeprep.errors import GazeprepError
from gazeprep.train.data import GazeDataset, letterbox_params, subject_split
from gazeprep.train.loop import CHECKPOINT, TrainConfig, fit, load_checkpoint, save_atomic
from gazeprep.train.models import get_model, get_objective, resolve_config

RUN_FILE = "run.yaml"
MODEL_FILE = "model.pt"
DATA_KEYS = {"size", "targets", "labels", "augment", "mask_structures", "split_fractions", "split_seed"}


def load_config_file(path: str | Path | None) -> dict:
    """Read a YAML config (``yaml.safe_load``); ``None`` gives an empty config."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise GazeprepError(f"{p}: config file not found")
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise GazeprepError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise GazeprepError(f"{p}: expected a mapping with sections preset/model/loss/data/train")
    return cfg


def _open_export(export):
    if not isinstance(export, (str, Path)):
        return export
    if not Path(export).exists():
        raise GazeprepError(f"export {export} does not exist")
    from gazeprep.export import load_export

    return load_export(export)


def _datasets(ex, cfg: dict, images_root, seed: int) -> tuple[GazeDataset, GazeDataset | None, dict]:
    data = cfg["data"]
    unknown = set(data) - DATA_KEYS
    if unknown:
        raise GazeprepError(f"unknown data options {sorted(unknown)}; known: {sorted(DATA_KEYS)}")
    cases = ex.tables["cases"]
    if "discarded" in cases.columns:
        cases = cases.filter(~pl.col("discarded").fill_null(False))
    splits = subject_split(cases, data.get("split_fractions", (0.8, 0.2, 0.0)), seed=data.get("split_seed", seed))
    common = dict(targets=data.get("targets"), labels=data.get("labels"), size=data.get("size", 512), mask_structures=data.get("mask_structures", ()), image_root=images_root, seed=seed)
    train = GazeDataset(ex, case_ids=splits["train"], augment=data.get("augment"), **common)
    val = GazeDataset(ex, case_ids=splits["validate"], augment=None, **common) if splits["validate"] else None
    return train, val, splits


def train_run(model: str, export, out_dir: str | Path, config: dict | None = None, *, device: str = "auto", epochs: int | None = None,
              images_root: str | Path | None = None, progress: bool = True) -> list[dict]:
    """Train ``model`` on an export (path or loaded) into ``out_dir``; resumes an unfinished run there.

    ``config``: the sections of :func:`gazeprep.train.models.resolve_config` (``preset``, ``model``,
    ``loss``, ``data``, ``train``). ``epochs`` overrides ``train.epochs``. Returns the history.
    """
    out = Path(out_dir)
    cfg = resolve_config(model, config)
    if epochs is not None:
        cfg["train"]["epochs"] = int(epochs)
        cfg["train"]["stage_epochs"] = {}
    cfg["train"].update({"device": device, "out_dir": str(out), "progress": progress})
    tc = TrainConfig.from_dict(cfg["train"])
    ex = _open_export(export)
    train, val, splits = _datasets(ex, cfg, images_root, tc.seed)
    if len(train) == 0:
        raise GazeprepError("no training cases in the export")
    cfg["data"].update({"targets": train.targets, "labels": train.labels})
    run_info = {"model": model, "export": str(export) if isinstance(export, (str, Path)) else None, "config": cfg,
                "splits": {k: len(v) for k, v in splits.items()}}
    run_file = out / RUN_FILE
    if run_file.exists() and (out / CHECKPOINT).exists():
        old = yaml.safe_load(run_file.read_text(encoding="utf-8")) or {}
        if old.get("model") != model:
            raise GazeprepError(f"{out} holds a run of {old.get('model')!r}; use another --out for {model!r}")
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(yaml.safe_dump(run_info, sort_keys=False), encoding="utf-8")
    torch.manual_seed(tc.seed)
    net = get_model(model, cfg)
    objective = get_objective(model, cfg)
    history = fit(net, objective, train, tc, val_data=val)
    save_atomic({"model": net.state_dict(), "objective": objective.state_dict()}, out / MODEL_FILE)
    return history


def load_run(run_dir: str | Path, device: str = "auto"):
    """(model, run_info) from a run folder: ``model.pt`` if present, else the last checkpoint."""
    run_dir = Path(run_dir)
    rf = run_dir / RUN_FILE
    if not rf.is_file():
        raise GazeprepError(f"{run_dir}: not a training run folder ({RUN_FILE} missing)")
    info = yaml.safe_load(rf.read_text(encoding="utf-8"))
    cfg = info["config"]
    net = get_model(info["model"], cfg)
    src = run_dir / MODEL_FILE if (run_dir / MODEL_FILE).exists() else run_dir / CHECKPOINT
    state = load_checkpoint(src)
    net.load_state_dict(state["model"])
    stages = getattr(net, "stage_names", ("main",))
    if hasattr(net, "set_stage"):
        net.set_stage(stages[-1])
    net.to(resolve_device(device)).eval()
    return net, info


def map_to_frame(pred: np.ndarray, image_hw: tuple[int, int], size: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Bring a predicted map of the letterboxed square (any resolution) back to a map of shape
    ``out_hw`` in the frame of the ground truth: a square ``out_hw`` for a non-square image means the
    ground truth is itself letterboxed (resize only); otherwise crop the padding and resize."""
    t = torch.as_tensor(pred, dtype=torch.float32)[None, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    ih, iw = image_hw
    if not (out_hw[0] == out_hw[1] and ih != iw):
        nh, nw, top, left = letterbox_params(ih, iw, size)
        t = t[..., top : top + nh, left : left + nw]
    t = F.interpolate(t, size=tuple(out_hw), mode="bilinear", align_corners=False)
    return t[0, 0].clamp(0, 1).numpy()


@torch.no_grad()
def predict_maps(net, ds: GazeDataset, device, batch_size: int = 8, progress: bool = True) -> dict[tuple[str, str], np.ndarray]:
    """Predicted maps for every case of ``ds``, keyed ``(case_id, target)`` in each GT map's frame."""
    from tqdm.auto import tqdm

    out: dict[tuple[str, str], np.ndarray] = {}
    hm = ds.export.tables.get("heatmaps")
    shapes = {}
    if hm is not None and {"height_px", "width_px"} <= set(hm.columns):
        shapes = {(c, t): (int(h), int(w)) for c, t, h, w in hm.select("case_id", "target", "height_px", "width_px").iter_rows()}
    from gazeprep.train.models.ggcam import GGCAM

    for start in tqdm(range(0, len(ds), batch_size), desc="predict", disable=not progress):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        img = torch.stack([it["image"] for it in items]).to(device)
        maps = net.predict_heatmaps(img)
        if maps is None:
            raise GazeprepError(f"{type(net).__name__} predicts no heatmaps")
        if isinstance(net, GGCAM):  # the CAM of the predicted class is the model's map
            cls = net(img)["logits"].argmax(1)
            maps = maps[torch.arange(len(items)), cls][:, None]
            names = ds.targets[:1]
        else:
            names = net.map_names
        maps = maps.detach().cpu().numpy()
        for it, m in zip(items, maps):
            row = ds.cases.row(it["index"], named=True)
            ihw = (int(row.get("image_height_px") or ds.size), int(row.get("image_width_px") or ds.size))
            for j, target in enumerate(names):
                out[(it["case_id"], target)] = map_to_frame(m[j], ihw, ds.size, shapes.get((it["case_id"], target), ihw))
    return out


def predict_run(run_dir: str | Path, export, out: str | Path, *, device: str = "auto", images_root: str | Path | None = None,
                batch_size: int = 8, progress: bool = True) -> Path:
    """Predict heatmaps of every case of ``export`` with the trained run and write a prediction export."""
    dev = resolve_device(device)
    net, info = load_run(run_dir, device)
    cfg = info["config"]
    ex = _open_export(export)
    data = cfg["data"]
    ds = GazeDataset(ex, targets=data.get("targets"), labels=data.get("labels"), size=data.get("size", 512), image_root=images_root)
    maps = predict_maps(net, ds, dev, batch_size, progress)
    from gazeprep.export import write_prediction_export

    extra: dict[str, Any] = {"training": {"model": info["model"], "run_dir": str(run_dir), "preset": cfg.get("preset")}}
    return write_prediction_export(out, maps, model=f"{info['model']} ({Path(run_dir).name})", source_export=ex if not isinstance(export, (str, Path)) else export,
                                   manifest_extra=extra, progress=progress)
