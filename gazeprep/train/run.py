"""Run-level API behind ``gazeprep train`` and ``gazeprep predict``.

A *run folder* holds ``run.yaml`` (model name, resolved config, source export, split summary),
``splits.parquet`` (the case ids of each split), ``checkpoint.pt`` (resumable), ``history.json``
and, at the end, ``model.pt`` (the model's state dict, atomic write).

Before any training, :func:`train_run` checks

* the model's declared inputs (:class:`~gazeprep.train.models.ModelInputs`: heatmap targets, labels,
  one class per case or several, the recipe that produces them) against the export
  (:func:`check_export`): a mismatch, or a training split where no case has anything to learn from, is
  one :class:`GazeprepError` naming what the model needs, what the export has and the recipe to build;
* the run folder: ``run.yaml`` is written once, when a run starts, and never rewritten to disagree with
  ``model.pt``. A folder holding a run of another config (model, resolved config or the export's
  recipe) is refused; ``force`` clears the run's files and starts over; the same config continues
  from the last checkpoint (``resume`` asks for exactly that and refuses a folder without a run).

Splits: the export's ``split`` column (REFLACX and EGD-CXR carry MIMIC-CXR's patient-disjoint split)
when every case has one, else a seeded subject-disjoint split stratified by class
(:func:`gazeprep.train.data.stratified_subject_split`, 70/10/20 % of the subjects by default);
``data.split`` (``auto``, ``export``, ``subject``), ``data.split_fractions`` and ``data.split_seed``
choose. The case ids of every split are saved in ``splits.parquet``; a resumed run reuses them.

``predict`` rebuilds the model from ``run.yaml``, loads ``model.pt`` (or the last checkpoint) with
``weights_only=True`` and writes, for the cases of one split (``test`` by default), the predicted maps
mapped back to each ground-truth map's frame and the class scores (``tables/class_scores.parquet``:
``case_id, label, score, truth``) as a prediction export that ``gazeprep evaluate`` reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from gazeprep._atomic import atomic_write_parquet, atomic_write_text
from gazeprep.device import resolve_device
from gazeprep.errors import GazeprepError
from gazeprep.train.data import (
    DEFAULT_SPLIT_FRACTIONS,
    INPUT_OPTIONS,
    SPLIT_NAMES,
    ExportLike,
    GazeDataset,
    export_split,
    input_options,
    labels_from_case_labels,
    letterbox_params,
    stratified_subject_split,
)
from gazeprep.train.loop import (
    BEST,
    CHECKPOINT,
    EpochRecord,
    TrainConfig,
    _plan,
    _set_stage,
    fit,
    load_checkpoint,
    save_atomic,
)
from gazeprep.train.models import get_model, get_objective, resolve_config, spec_of
from gazeprep.train.models.base import GazeModel

if TYPE_CHECKING:
    from gazeprep.train.weak import WithLabelOnly

RUN_FILE = "run.yaml"
MODEL_FILE = "model.pt"
SPLITS_FILE = "splits.parquet"
HISTORY_FILE = "history.json"
#: The files a run writes into its folder (what ``force`` removes; nothing else is touched).
RUN_FILES = (RUN_FILE, CHECKPOINT, BEST, MODEL_FILE, SPLITS_FILE, HISTORY_FILE)
DATA_KEYS = {
    "size",
    "targets",
    "labels",
    "augment",
    "mask_structures",
    "split",
    "split_fractions",
    "split_seed",
    *INPUT_OPTIONS,
}
SPLIT_METHODS = ("auto", "export", "subject")
#: Train options that say how a run executes, not what it learns: not part of the stored config.
RUNTIME_TRAIN_KEYS = ("device", "out_dir", "progress", "num_workers", "resume", "stop_after_epochs")
#: ``predict --split`` choices (``val`` is the ``validate`` split).
PREDICT_SPLITS = ("test", "val", "validate", "train", "all")
#: The ``weak_labels`` entries of run.yaml that belong to a run's config (a change is another run).
WEAK_IDENTITY_KEYS = ("root", "labeler", "table", "table_sha256")
CLASS_SCORES = "class_scores"

Notify = Callable[[str], None]
#: An export as the run functions take it: its folder, or one already loaded (or held in memory).
ExportSource: TypeAlias = str | Path | ExportLike


def load_config_file(path: str | Path | None) -> dict[str, Any]:
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


def _open_export(export: ExportSource) -> ExportLike:
    if not isinstance(export, (str, Path)):
        return export
    if not Path(export).exists():
        raise GazeprepError(f"export {export} does not exist")
    from gazeprep.export import load_export

    return load_export(export)


def _export_name(export: ExportSource) -> str:
    if isinstance(export, (str, Path)):
        return str(export)
    path = getattr(export, "path", None)
    return str(path) if path is not None else "the export"


def _export_recipe(ex: ExportLike) -> tuple[str | None, str | None, str | None]:
    """(recipe name, recipe hash, dataset) recorded in the export's manifest (None when unknown)."""
    manifest = getattr(ex, "manifest", None) or {}
    rec = manifest.get("recipe") if isinstance(manifest, dict) else None
    name = rec.get("name") if isinstance(rec, dict) else None
    dataset = rec.get("dataset") if isinstance(rec, dict) else None
    if dataset is None:
        cases = ex.tables["cases"] if "cases" in ex.tables else None
        if cases is not None and "dataset" in cases.columns and cases.height:
            dataset = cases["dataset"][0]
    return name, manifest.get("recipe_hash"), dataset


def _usable_cases(ex: ExportLike) -> pl.DataFrame:
    cases = ex.tables["cases"]
    if "discarded" in cases.columns:
        cases = cases.filter(~pl.col("discarded").fill_null(False))
    return cases


def _fmt(names: Sequence[object], limit: int = 6) -> str:
    texts = [str(n) for n in names]
    if not texts:
        return "none"
    more = f" (+{len(texts) - limit} more)" if len(texts) > limit else ""
    return ", ".join(texts[:limit]) + more


# ----------------------------------------------------------------------------------------------
# the model's inputs against the export


def resolve_data(model: str, cfg: dict) -> None:
    """Fill ``cfg['data']`` targets and labels from the model's defaults where the config leaves them
    out: labels of the default preset; targets of the default preset, or the labels for models with
    one map per label (004). ``targets: []`` / ``labels: []`` stay empty on purpose."""
    spec = spec_of(model)
    data = cfg["data"]
    default = spec.presets.get("default", {}).get("data", {})
    if data.get("labels") is None:
        data["labels"] = list(default.get("labels") or [])
    if data.get("targets") is None:
        per_label = spec.inputs is not None and spec.inputs.maps_per_label
        data["targets"] = list(data["labels"]) if per_label else list(default.get("targets") or ["full"])
    data["labels"], data["targets"] = list(data["labels"]), list(data["targets"])


def is_multilabel(model: str, cfg: dict) -> bool:
    """Whether ``model`` scores its labels independently (sigmoid) under ``cfg``, else one class per
    case (softmax)."""
    inputs = spec_of(model).inputs
    return bool((inputs is not None and inputs.multilabel) or cfg.get("loss", {}).get("multilabel"))


def _export_contents(ex: ExportLike) -> str:
    """What an export holds, for messages: recipe, heatmap targets and label names."""
    recipe, _, dataset = _export_recipe(ex)
    hm = ex.tables["heatmaps"] if "heatmaps" in ex.tables else None
    targets = sorted(set(hm["target"].to_list())) if hm is not None and hm.height else []
    cl = ex.tables["case_labels"] if "case_labels" in ex.tables else None
    labels: list[str] = []
    if cl is not None and cl.height:
        labels = sorted(set(cl.filter(pl.col("value").is_not_null())["source_label"].drop_nulls().to_list()))
    where = f"recipe {recipe}" if recipe else "no recorded recipe"
    if dataset:
        where = f"dataset {dataset}, {where}"
    return f"{where}; heatmap targets {_fmt(targets)}; labels {_fmt(labels)}"


def check_export(
    model: str, cfg: dict[str, Any], ex: ExportLike, case_ids: Sequence[str], export_name: str = "the export"
) -> list[str]:
    """Check that the training cases ``case_ids`` of ``ex`` hold what ``model`` trains on.

    ``cfg`` is the resolved config (:func:`resolve_data` applied). Raises :class:`GazeprepError` (one
    line: what the model needs, what the export has, which recipe produces it) when no training case
    has a heatmap of any of the targets (models that learn maps), when the labels are unknown for
    every case (for one-class-per-case models: no case has exactly one positive label), or when no
    case has anything to learn from. Returns warnings for partial gaps (targets or labels that no
    training case has).
    """
    spec = spec_of(model)
    need = spec.inputs
    data = cfg["data"]
    targets, labels = list(data["targets"]), list(data["labels"])
    multilabel = is_multilabel(model, cfg)
    ids = list(case_ids)
    hm = ex.tables["heatmaps"] if "heatmaps" in ex.tables else None
    idset = set(ids)
    per_target = {t: 0 for t in targets}
    with_map: set[str] = set()
    if hm is not None and hm.height:
        for cid, t in zip(hm["case_id"].to_list(), hm["target"].to_list()):
            if t in per_target and cid in idset:
                per_target[t] += 1
                with_map.add(cid)
    lm = labels_from_case_labels(ex.tables["case_labels"] if "case_labels" in ex.tables else None, ids, labels)
    known = ~np.isnan(lm)
    if multilabel:
        label_ok = known.any(axis=1)
        label_need = f"labels {_fmt(labels, 10)}"
    else:
        label_ok = (np.nan_to_num(lm, nan=0.0) > 0.5).sum(axis=1) == 1
        label_need = f"one of the classes {_fmt(labels, 10)} per case"
    wants_maps = need is None or need.needs_maps
    missing: list[str] = []
    if wants_maps and targets and not any(per_target.values()):
        missing.append(f"heatmaps of target{'s' if len(targets) > 1 else ''} {_fmt(targets, 10)}")
    if labels and not label_ok.any():
        missing.append(label_need)
    if missing:
        recipe = f"; recipe {need.recipe} on {need.dataset} produces them" if need is not None else ""
        hint = f" (gazeprep build-heatmaps --dataset {need.dataset} --recipe {need.recipe})" if need is not None else ""
        raise GazeprepError(
            f"{model} needs {' and '.join(missing)} in its training cases{recipe}; {export_name} has "
            f"{_export_contents(ex)}; build that export{hint} or set data.targets / data.labels in --config"
        )
    usable = label_ok.copy() if labels else np.zeros(len(ids), dtype=bool)
    if wants_maps:
        usable |= np.array([c in with_map for c in ids], dtype=bool)
    if not usable.any():
        raise GazeprepError(
            f"none of the {len(ids)} training cases of {export_name} has a heatmap of "
            f"{_fmt(targets)} or a label of {_fmt(labels)}: nothing to train on"
        )
    warnings = []
    if wants_maps:
        absent = [t for t, n in per_target.items() if n == 0]
        if absent:
            warnings.append(f"no training case has a heatmap of {_fmt(absent)} (those outputs learn nothing)")
    absent_l = [lab for j, lab in enumerate(labels) if not known[:, j].any()]
    if absent_l:
        warnings.append(f"no training case has a value for label {_fmt(absent_l)}")
    return warnings


# ----------------------------------------------------------------------------------------------
# splits


def _strata(model: str, cfg: dict[str, Any], ex: ExportLike, cases: pl.DataFrame) -> dict[str, str]:
    """Stratum of each case for the fallback split: its class (one-class models) or the set of its
    positive labels (multi-label models); ``""`` when unknown."""
    labels = list(cfg["data"]["labels"])
    ids = cases["case_id"].to_list()
    if not labels:
        return {c: "" for c in ids}
    lm = labels_from_case_labels(ex.tables["case_labels"] if "case_labels" in ex.tables else None, ids, labels)
    pos = np.nan_to_num(lm, nan=0.0) > 0.5
    return {c: "+".join(labels[j] for j in np.flatnonzero(row)) for c, row in zip(ids, pos)}


def make_splits(
    model: str, cfg: dict[str, Any], ex: ExportLike, seed: int
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The run's splits ``{train, validate, test: [case_id]}`` and how they were made (for run.yaml).

    ``data.split``: ``auto`` (default: the export's split column when every case has one, else a
    subject split), ``export`` (the column, required) or ``subject`` (seeded subject-disjoint split,
    stratified by class, ``data.split_fractions`` default 70/10/20, ``data.split_seed`` default the
    train seed)."""
    data = cfg["data"]
    method = data.get("split", "auto")
    if method not in SPLIT_METHODS:
        raise GazeprepError(f"data.split is {method!r}; use one of {', '.join(SPLIT_METHODS)}")
    cases = _usable_cases(ex)
    if cases.height == 0:
        raise GazeprepError("the export has no cases (all discarded?): nothing to train on")
    shipped = export_split(cases) if method in ("auto", "export") else None
    if method == "export" and shipped is None:
        raise GazeprepError("data.split is 'export' but the export's cases have no split column values")
    if shipped is not None:
        return shipped, {"source": "export"}
    fractions = tuple(float(f) for f in data.get("split_fractions", DEFAULT_SPLIT_FRACTIONS))
    if len(fractions) != 3:
        raise GazeprepError(f"data.split_fractions needs 3 numbers (train, validate, test), got {list(fractions)}")
    split_seed = int(data.get("split_seed", seed))
    splits = stratified_subject_split(cases, _strata(model, cfg, ex, cases), fractions, seed=split_seed)
    return splits, {"source": "subject", "fractions": list(fractions), "seed": split_seed, "stratified_by": "labels"}


def write_splits(path: Path, splits: dict[str, list[str]], ex: ExportLike) -> None:
    """Save the case ids of each split (``case_id, subject_id, split``) as Parquet, atomically."""
    cases = _usable_cases(ex)
    subj = dict(zip(cases["case_id"].to_list(), cases["subject_id"].to_list())) if "subject_id" in cases.columns else {}
    rows = [
        (cid, None if subj.get(cid) is None else str(subj.get(cid)), name)
        for name in SPLIT_NAMES
        for cid in splits.get(name, [])
    ]
    df = pl.DataFrame(rows, schema={"case_id": pl.Utf8, "subject_id": pl.Utf8, "split": pl.Utf8}, orient="row")
    atomic_write_parquet(df, path)


def read_splits(run_dir: str | Path) -> dict[str, list[str]] | None:
    """The splits saved in a run folder, or ``None`` when it has none (runs of older versions)."""
    p = Path(run_dir) / SPLITS_FILE
    if not p.is_file():
        return None
    df = pl.read_parquet(p)
    return {n: df.filter(pl.col("split") == n)["case_id"].to_list() for n in SPLIT_NAMES}


# ----------------------------------------------------------------------------------------------
# run folders


def _stored_config(cfg: dict) -> dict:
    """The config as stored in run.yaml: without the train options that only say how it runs."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}
    out["train"] = {k: v for k, v in cfg["train"].items() if k not in RUNTIME_TRAIN_KEYS}
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """Readable differences between two run identities (``model``, ``config``, ``export_recipe_hash``):
    ``"train.lr: 0.003 -> 0.01"``. Lists and tuples compare equal by content."""

    def norm(v: object) -> object:
        return list(v) if isinstance(v, tuple) else v

    diffs = []
    if old.get("model") != new.get("model"):
        diffs.append(f"model: {old.get('model')} -> {new.get('model')}")
    a, b = _flatten(old.get("config") or {}), _flatten(new.get("config") or {})
    for k in sorted(set(a) | set(b)):
        if k.split(".")[0] == "train" and k.split(".")[1:2] and k.split(".")[1] in RUNTIME_TRAIN_KEYS:
            continue
        if norm(a.get(k)) != norm(b.get(k)):
            diffs.append(f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}")
    wo, wn = ({k: (d.get("weak_labels") or {}).get(k) for k in WEAK_IDENTITY_KEYS} for d in (old, new))
    if wo != wn:

        def weak(w: dict) -> str:
            return "none" if w["labeler"] is None else f"{w['labeler']} of {w['root']} ({str(w['table_sha256'])[:12]})"

        diffs.append(f"weak_labels: {weak(wo)} -> {weak(wn)}")
    ho = (old.get("export") or {}).get("recipe_hash")
    hn = (new.get("export") or {}).get("recipe_hash")
    if ho and hn and ho != hn:
        diffs.append(
            f"export recipe: {(old.get('export') or {}).get('recipe')} ({ho[:12]}) -> "
            f"{(new.get('export') or {}).get('recipe')} ({hn[:12]})"
        )
    return diffs


def _read_run_file(path: Path) -> dict:
    try:
        info = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise GazeprepError(f"{path}: not valid YAML ({exc}); use --force to start the run over") from None
    if not isinstance(info, dict):
        raise GazeprepError(f"{path}: not a run description; use --force to start the run over")
    return info


def _write_yaml_atomic(path: Path, obj: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def clear_run(out: Path) -> list[str]:
    """Remove the files a run wrote in ``out`` (:data:`RUN_FILES`); other files stay. Returns the names."""
    removed = []
    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


def _plan_length(net: nn.Module, tc: TrainConfig, n_train: int) -> int:
    """Epochs of the whole run (every stage; iteration-based stages counted in epochs of ``n_train``)."""
    return len(_plan(net, tc, n_train))


# ----------------------------------------------------------------------------------------------
# train


def _resolve_run_config(
    model: str,
    config: dict[str, Any] | None,
    epochs: int | None,
    weak_labels: str | Path | None,
    weak_labeler: str,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The resolved config of a run (``--epochs`` applied, data options checked, targets and labels
    filled in) and the identity of its weak-label source (``None`` without ``--weak-labels``)."""
    cfg = resolve_config(model, config)
    if epochs is not None:
        cfg["train"]["epochs"] = int(epochs)
        cfg["train"]["stage_epochs"] = {}
        cfg["train"]["iterations"] = None  # --epochs also replaces an iteration budget (I-AI)
        cfg["train"]["stage_iterations"] = {}
    unknown = set(cfg["data"]) - DATA_KEYS
    if unknown:
        raise GazeprepError(f"unknown data options {sorted(unknown)}; known: {sorted(DATA_KEYS)}")
    resolve_data(model, cfg)
    if weak_labels is None:
        return cfg, None
    paper = spec_of(model).paper
    if paper != "004":
        raise GazeprepError(
            f"--weak-labels adds label-only images through paper 004's unannotated-image loss; "
            f"{model} is a model of paper {paper} (use lanfredi-mil)"
        )
    from gazeprep.train.weak import weak_identity

    return cfg, weak_identity(weak_labels, weak_labeler)


def _run_identity(
    model: str, export: ExportSource, ex: ExportLike, cfg: dict[str, Any], weak_id: dict[str, Any] | None
) -> dict[str, Any]:
    """What makes a run this run (stored in run.yaml, compared by :func:`config_differences`): the
    model, the export's path and recipe, the stored config and the weak-label source."""
    recipe, recipe_hash, dataset = _export_recipe(ex)
    return {
        "model": model,
        "export": {
            "path": str(export) if isinstance(export, (str, Path)) else None,
            "recipe": recipe,
            "recipe_hash": recipe_hash,
            "dataset": dataset,
        },
        "config": _stored_config(cfg),
        **({"weak_labels": weak_id} if weak_id is not None else {}),
    }


def _split_datasets(
    ex: ExportLike, splits: dict[str, list[str]], data: dict[str, Any], images_root: str | Path | None, seed: int
) -> tuple[GazeDataset, GazeDataset | None]:
    """The training dataset (augmented as ``data.augment`` says) and the validation one (``None``
    when that split is empty). Reads the first training image, so that a missing image root or file
    stops the run here rather than in the first batch."""
    common: dict[str, Any] = dict(
        targets=data["targets"],
        labels=data["labels"],
        image_root=images_root,
        seed=seed,
        **{"size": 512, **input_options(data)},
    )
    train = GazeDataset(ex, case_ids=splits["train"], augment=data.get("augment"), **common)
    val = GazeDataset(ex, case_ids=splits["validate"], augment=None, **common) if splits.get("validate") else None
    train.load_image(0)
    return train, val


def _check_run_folder(out: Path, identity: dict[str, Any], resume: bool, force: bool) -> dict[str, Any] | None:
    """The stored ``run.yaml`` of the run that ``out`` holds and this call continues, or ``None`` when
    it starts a run. Refuses (before any work) a folder with a run of another config, one without
    saved splits, ``resume`` without a run, and a run's leftover files without ``run.yaml``; ``force``
    starts over whatever the folder holds."""
    if force:  # before reading run.yaml: --force also starts over from a corrupt one
        return None
    run_file = out / RUN_FILE
    stored = _read_run_file(run_file) if run_file.is_file() else None
    if stored is not None:
        diffs = config_differences(stored, identity)
        if diffs:
            shown = "; ".join(diffs[:4]) + (f"; {len(diffs) - 4} more" if len(diffs) > 4 else "")
            why = (
                "--resume continues only a run of the same config"
                if resume
                else "its checkpoints belong to the stored one"
            )
            raise GazeprepError(
                f"{out} holds a run of another config ({shown}); {why}: use --force to start over, or another --out"
            )
        if not (out / SPLITS_FILE).is_file():
            raise GazeprepError(
                f"{out} holds a run without saved splits (an older gazeprep); use --force to start over"
            )
        return stored
    if resume:
        raise GazeprepError(f"--resume: {out} holds no run to resume ({RUN_FILE} missing)")
    leftovers = [n for n in (CHECKPOINT, MODEL_FILE, SPLITS_FILE) if (out / n).exists()]
    if leftovers:
        raise GazeprepError(
            f"{out} holds {', '.join(leftovers)} but no {RUN_FILE}; use --force to start over, or another --out"
        )
    return None


def _run_splits(
    model: str, cfg: dict[str, Any], ex: ExportLike, seed: int, out: Path, stored: dict[str, Any] | None, name: str
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The splits of the run and how they were made: those saved in ``out`` when continuing the
    ``stored`` run (every case must still be in the export), else new ones (:func:`make_splits`).
    Refuses an empty training split."""
    if stored is not None:
        splits = read_splits(out) or {}
        have = set(_usable_cases(ex)["case_id"].to_list())
        lost = [c for n in SPLIT_NAMES for c in splits.get(n, []) if c not in have]
        if lost:
            raise GazeprepError(
                f"{len(lost)} cases of the run in {out} are not in {name} (first: {lost[0]}); "
                "continue it on its own export, or use --force to start over"
            )
        split_info = dict(stored.get("splits") or {})
    else:
        splits, split_info = make_splits(model, cfg, ex, seed)
    if not splits.get("train"):
        raise GazeprepError(
            f"the training split of {name} is empty ({split_info.get('source')} split: "
            f"{', '.join(f'{n} {len(splits.get(n, []))}' for n in SPLIT_NAMES)}); nothing to train on"
        )
    return splits, split_info


def _with_weak_labels(
    train: GazeDataset,
    ex: ExportLike,
    splits: dict[str, list[str]],
    data: dict[str, Any],
    weak_labels: str | Path,
    weak_labeler: str,
    identity: dict[str, Any],
    say: Notify,
) -> WithLabelOnly:
    """The training split joined by the label-only MIMIC-CXR images of ``weak_labels`` (every export
    image kept out, discarded cases included: their image may still be a REFLACX one); records the
    source in ``identity['weak_labels']``."""
    from gazeprep.train.weak import WithLabelOnly, label_only_dataset, weak_labels_for_run

    weak = weak_labels_for_run(weak_labels, weak_labeler, data["labels"], ex.tables["cases"], splits)
    if weak.cases.height == 0:
        raise GazeprepError(
            f"--weak-labels {weak_labels}: no label-only image is left by the rules (removed: "
            f"{', '.join(f'{k} {v}' for k, v in weak.excluded.items())}); nothing to add"
        )
    label_only = label_only_dataset(weak, train, augment=data.get("augment"), **{"size": 512, **input_options(data)})
    label_only.load_image(0)
    joined = WithLabelOnly(train, label_only)
    identity["weak_labels"] = weak.record()
    if weak.rejects:
        say(
            f"warning: {len(weak.rejects)} malformed rows of the MIMIC-CXR tables left out (first: {weak.rejects[0]['file']} row {weak.rejects[0]['row']}: {weak.rejects[0]['reason']})"
        )
    say(
        f"weak labels: {weak.cases.height} label-only MIMIC-CXR images ({weak_labeler}) join the "
        f"{len(joined) - weak.cases.height} training cases"
    )
    return joined


def train_run(
    model: str,
    export: ExportSource,
    out_dir: str | Path,
    config: dict[str, Any] | None = None,
    *,
    device: str = "auto",
    epochs: int | None = None,
    images_root: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    force: bool = False,
    notify: Notify | None = None,
    weak_labels: str | Path | None = None,
    weak_labeler: str = "chexpert",
) -> list[EpochRecord]:
    """Train ``model`` on an export (path or loaded) into the run folder ``out_dir``; returns the history.

    ``config``: the sections of :func:`gazeprep.train.models.resolve_config` (``preset``, ``model``,
    ``loss``, ``data``, ``train``). ``epochs`` overrides ``train.epochs``. Before training, the export
    is checked against the model's inputs (:func:`check_export`) and the run folder against the
    requested config: a folder with a run of the same config continues from its checkpoint (and says
    so through ``notify``); one of another config is refused unless ``force`` (its run files are
    removed once the checks pass); ``resume`` refuses a folder without a run. ``notify`` receives
    one-line notes (resuming, warnings).

    ``weak_labels``: a MIMIC-CXR root whose label-only images (``weak_labeler``'s table, ``chexpert``
    or ``negbio``) join the training split (paper 004's models only; :mod:`gazeprep.train.weak` says
    which images and how their labels are read); run.yaml records the source (``weak_labels``).
    """
    if resume and force:
        raise GazeprepError("give --resume or --force, not both")
    say = notify or (lambda _msg: None)
    out = Path(out_dir)
    cfg, weak_id = _resolve_run_config(model, config, epochs, weak_labels, weak_labeler)
    cfg["train"].update({"device": device, "out_dir": str(out), "progress": progress})
    tc = TrainConfig.from_dict(cfg["train"])
    ex = _open_export(export)
    name = _export_name(export)
    identity = _run_identity(model, export, ex, cfg, weak_id)

    # 1. the run folder: refuse another config before any work
    stored = _check_run_folder(out, identity, resume, force)

    # 2. splits and the model's inputs against the export
    splits, split_info = _run_splits(model, cfg, ex, tc.seed, out, stored, name)
    for w in check_export(model, cfg, ex, splits["train"], name):
        say(f"warning: {w}")
    train, val = _split_datasets(ex, splits, cfg["data"], images_root, tc.seed)
    train_set: GazeDataset | WithLabelOnly = train
    if weak_labels is not None:
        train_set = _with_weak_labels(train, ex, splits, cfg["data"], weak_labels, weak_labeler, identity, say)

    # 3. start or continue
    torch.manual_seed(tc.seed)
    net = get_model(model, cfg)
    objective = get_objective(model, cfg)
    total = _plan_length(net, tc, len(train_set))
    if stored is not None:
        done = int(load_checkpoint(out / CHECKPOINT).get("epoch", 0)) if (out / CHECKPOINT).exists() else 0
        if done >= total and (out / MODEL_FILE).exists():
            say(f"run {out} is complete ({done} of {total} epochs); nothing to train (--force trains it again)")
            return list(load_checkpoint(out / CHECKPOINT).get("history", []))
        say(f"resuming run {out} from epoch {done} of {total}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        if force:
            removed = clear_run(out)
            if removed:
                say(f"--force: removed the previous run's {', '.join(removed)} from {out}")
        write_splits(out / SPLITS_FILE, splits, ex)
        counts = {n: len(splits.get(n, [])) for n in SPLIT_NAMES}
        _write_yaml_atomic(
            out / RUN_FILE, {**identity, "splits": {**split_info, "file": SPLITS_FILE, "counts": counts}}
        )
    history = fit(net, objective, train_set, tc, val_data=val)
    save_atomic({"model": net.state_dict(), "objective": objective.state_dict()}, out / MODEL_FILE)
    return history


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[GazeModel, dict[str, Any]]:
    """(model, run_info) from a run folder: ``model.pt`` if present, else the last checkpoint."""
    run_dir = Path(run_dir)
    rf = run_dir / RUN_FILE
    if not rf.is_file():
        raise GazeprepError(f"{run_dir}: not a training run folder ({RUN_FILE} missing)")
    info = _read_run_file(rf)
    cfg = info["config"]
    net = get_model(info["model"], cfg)
    if not isinstance(net, GazeModel):
        raise GazeprepError(f"model {info['model']!r} is not a GazeModel: it cannot predict heatmaps")
    src = run_dir / MODEL_FILE if (run_dir / MODEL_FILE).exists() else run_dir / CHECKPOINT
    state = load_checkpoint(src)
    net.load_state_dict(state["model"])
    _set_stage(net, net.stage_names[-1])
    net.to(resolve_device(device)).eval()
    return net, info


# ----------------------------------------------------------------------------------------------
# predict


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


def class_scores(outputs: dict[str, torch.Tensor], multilabel: bool) -> torch.Tensor | None:
    """Per-label scores (B, L) in [0, 1] from a model's forward outputs: ``prob`` (004) or
    ``sigmoid(logits)`` for multi-label models, ``softmax(logits)`` over the classes otherwise;
    ``None`` for a model without class outputs."""
    if multilabel and "prob" in outputs:
        return outputs["prob"]
    logits = outputs.get("logits")
    if logits is None:
        return None
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict_outputs(
    net: GazeModel,
    ds: GazeDataset,
    device: torch.device,
    batch_size: int = 8,
    progress: bool = True,
    multilabel: bool = False,
) -> tuple[dict[tuple[str, str], np.ndarray], pl.DataFrame]:
    """Predicted maps of every case of ``ds`` keyed ``(case_id, target)`` in each GT map's frame, and
    the class scores: one row per (case, label) with ``case_id, label, score`` and ``truth`` (1/0 from
    the export's labels, null when unknown)."""
    from tqdm.auto import tqdm

    from gazeprep.train.models.ggcam import GGCAM

    out: dict[tuple[str, str], np.ndarray] = {}
    hm = ds.export.tables["heatmaps"] if "heatmaps" in ds.export.tables else None
    shapes = {}
    if hm is not None and {"height_px", "width_px"} <= set(hm.columns):
        shapes = {
            (c, t): (int(h), int(w))
            for c, t, h, w in hm.select("case_id", "target", "height_px", "width_px").iter_rows()
        }
    rows: list[tuple[str, str, float, float | None]] = []
    labels = list(ds.labels)
    for start in tqdm(range(0, len(ds), batch_size), desc="predict", disable=not progress):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        img = torch.stack([it["image"] for it in items]).to(device)
        fwd = net(img)
        scores = class_scores(fwd, multilabel) if isinstance(fwd, dict) else None
        maps = net.predict_heatmaps(img)
        if maps is None:
            raise GazeprepError(f"{type(net).__name__} predicts no heatmaps")
        if isinstance(net, GGCAM):  # the CAM of the predicted class is the model's map
            cls = fwd["logits"].argmax(1)
            maps = maps[torch.arange(len(items)), cls][:, None]
            names = ds.targets[:1]
        else:
            names = net.map_names
        maps_np = maps.detach().cpu().numpy()
        sc = scores.detach().float().cpu().numpy() if scores is not None else None
        if sc is not None and sc.shape[1] != len(labels):
            raise GazeprepError(
                f"{type(net).__name__} scores {sc.shape[1]} classes but the run has {len(labels)} labels"
            )
        for k, (it, m) in enumerate(zip(items, maps_np)):
            row = ds.cases.row(it["index"], named=True)
            ihw = (
                (int(row["image_height_px"]), int(row["image_width_px"]))
                if row.get("image_height_px") and row.get("image_width_px")
                else None
            )
            for j, target in enumerate(names):  # back into the frame of the case's exported map (or the image)
                out[(it["case_id"], target)] = ds.prediction_to_map_frame(
                    m[j], it["index"], shapes.get((it["case_id"], target), ihw), image_hw=ihw
                )
            if sc is not None:
                truth = ds.label_matrix[it["index"]]
                for j, lab in enumerate(labels):
                    rows.append((it["case_id"], lab, float(sc[k, j]), None if np.isnan(truth[j]) else float(truth[j])))
    table = pl.DataFrame(
        rows, schema={"case_id": pl.Utf8, "label": pl.Utf8, "score": pl.Float64, "truth": pl.Float64}, orient="row"
    )
    return out, table


def predict_maps(
    net: GazeModel, ds: GazeDataset, device: torch.device, batch_size: int = 8, progress: bool = True
) -> dict[tuple[str, str], np.ndarray]:
    """Predicted maps for every case of ``ds``, keyed ``(case_id, target)`` in each GT map's frame."""
    return predict_outputs(net, ds, device, batch_size, progress)[0]


def select_cases(run_dir: str | Path, ex: ExportLike, split: str, export_name: str = "the export") -> list[str]:
    """Case ids of ``ex`` to predict: those of the run's ``split`` (``test``, ``val``/``validate``,
    ``train``; saved in ``splits.parquet``) or every case (``all``)."""
    if split not in PREDICT_SPLITS:
        raise GazeprepError(f"split {split!r}: use one of {', '.join(PREDICT_SPLITS)}")
    ids = _usable_cases(ex)["case_id"].to_list()
    if split == "all":
        return ids
    key = "validate" if split == "val" else split
    splits = read_splits(run_dir)
    if splits is None:
        raise GazeprepError(f"{run_dir} has no {SPLITS_FILE} (trained by an older gazeprep); use --split all")
    want = splits.get(key, [])
    if not want:
        counts = ", ".join(f"{n} {len(splits.get(n, []))}" for n in SPLIT_NAMES)
        raise GazeprepError(f"the run's {key} split is empty ({counts} cases); choose another with --split")
    have = set(ids)
    chosen = [c for c in want if c in have]
    if not chosen:
        raise GazeprepError(
            f"none of the run's {len(want)} {key} cases is in {export_name}; "
            "--split all predicts every case of another export"
        )
    return chosen


def predict_run(
    run_dir: str | Path,
    export: ExportSource,
    out: str | Path,
    *,
    split: str = "test",
    device: str = "auto",
    images_root: str | Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> Path:
    """Predict the cases of the run's ``split`` of ``export`` (default ``test``; ``all`` for every case)
    with the trained run and write a prediction export: maps plus ``tables/class_scores.parquet``."""
    dev = resolve_device(device)
    net, info = load_run(run_dir, device)
    cfg = info["config"]
    ex = _open_export(export)
    name = _export_name(export)
    ids = select_cases(run_dir, ex, split, name)
    data = cfg["data"]
    ds = GazeDataset(
        ex,
        case_ids=ids,
        targets=data.get("targets"),
        labels=data.get("labels"),
        image_root=images_root,
        **{"size": 512, **input_options(data)},
    )
    multilabel = is_multilabel(info["model"], cfg)
    maps, scores = predict_outputs(net, ds, dev, batch_size, progress, multilabel=multilabel)
    from gazeprep.export import Export, write_prediction_export

    extra: dict[str, Any] = {
        "training": {
            "model": info["model"],
            "run_dir": str(run_dir),
            "preset": cfg.get("preset"),
            "split": split,
            "cases": len(ids),
        },
        CLASS_SCORES: {"activation": "sigmoid" if multilabel else "softmax", "labels": list(ds.labels)},
    }
    tables = {CLASS_SCORES: scores} if scores.height else None
    return write_prediction_export(
        out,
        maps,
        model=f"{info['model']} ({Path(run_dir).name})",
        # a path is read again there; an export held only in memory has no source to record
        source_export=export if isinstance(export, (str, Path, Export)) else None,
        manifest_extra=extra,
        tables=tables,
        progress=progress,
    )
