"""``gazeprep anatomy train|predict``: SAMed anatomy masks (paper 000).

torch and segment_anything are imported inside the command bodies so that ``gazeprep --help``
stays fast and works without the [ml] extra.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from gazeprep.commands import (
    Device,
    Executor,
    hidden_alias,
    images_option,
    known_dataset,
    out_folder,
    quiet_option,
    release_root,
    require_ml,
    usage_error,
)
from gazeprep.paths import sample_data_dir

anatomy_app = typer.Typer(
    help="Anatomy masks with SAMed (SAM + LoRA): fine-tune on EGD-CXR masks, predict for REFLACX.",
    no_args_is_help=True,
)


class AnatomyPreset(str, Enum):
    """SAMed architectures (``gazeprep.anatomy.model.PRESETS``)."""

    vit_b = "vit_b"
    vit_l = "vit_l"
    vit_h = "vit_h"
    tiny = "tiny"


def _dataset_and_root(dataset: str, root: Path | None, quiet: bool) -> tuple[str, Path]:
    """The registered name of ``--dataset`` (a definition file is loaded and registered) and its release
    folder (``--root``, else the definition's folder, else the bundled sample data)."""
    from gazeprep.datasets.registry import resolve_dataset

    adapter = resolve_dataset(dataset)
    definition = getattr(adapter, "definition_path", None)
    return adapter.name, release_root(root, definition, adapter.name, quiet)


def _preset_of(preset: AnatomyPreset | None, config: str | None) -> str:
    """``--preset``, or the hidden old ``--config NAME`` (a preset name here, never a YAML file)."""
    if config is None:
        return (preset or AnatomyPreset.vit_b).value
    names = [p.value for p in AnatomyPreset]
    if config not in names:
        raise usage_error(
            f"{config!r} is not a preset ({', '.join(names)}); use --preset NAME (anatomy train takes no YAML config)",
            "--config",
        )
    if preset is not None and preset.value != config:
        raise usage_error("give --preset once (--config is its old spelling here)", "--config")
    return config


@anatomy_app.command("train")
def train_cmd(
    dataset: str = typer.Option(
        "egd-cxr",
        "--dataset",
        callback=known_dataset,
        help="A release that ships anatomy masks (of the built-in ones, only egd-cxr), or a definition file.",
    ),
    root: Path | None = typer.Option(None, "--root", help="Release folder (default: sample_data/<dataset>)."),
    images: Path | None = images_option("MIMIC-CXR(-JPG) root (default: sample_data/mimic-cxr)."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Official SAM .pth (1024 px) to start from; local file."
    ),
    preset: AnatomyPreset | None = typer.Option(
        None,
        "--preset",
        help="Architecture: vit_b (the default), vit_l, vit_h (need --checkpoint), or tiny (random init, CPU seconds).",
    ),
    config: str | None = hidden_alias("--config"),
    out: Path = typer.Option(
        ..., "--out", callback=out_folder, help="Model folder to write (config.json, samed.pt, metrics.json)."
    ),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Passes over the training cases."),
    batch_size: int = typer.Option(12, "--batch-size", min=1, help="Images per step (SAMed: 12 per GPU)."),
    lr: float = typer.Option(0.005, "--lr", min=0.0, help="Base learning rate (AdamW)."),
    warmup: int = typer.Option(
        250, "--warmup-iters", min=0, help="Linear warm-up iterations (shortened on short runs)."
    ),
    rank: int = typer.Option(4, "--rank", min=1, help="LoRA rank on q and v."),
    val_fraction: float = typer.Option(
        0.2, "--val-fraction", min=0.0, max=0.9, help="Fraction of subjects held out for Dice/IoU."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (split, order, augmentation, init)."),
    device: Device = typer.Option(Device.auto, "--device", help="auto (CUDA when available), cpu or cuda."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use only the first N cases (smoke runs)."),
    quiet: bool = quiet_option(),
) -> None:
    """Fine-tune SAMed on EGD-CXR masks; report Dice/IoU per structure on held-out subjects."""
    name = _preset_of(preset, config)
    if checkpoint is None and name != AnatomyPreset.tiny.value:
        raise usage_error(
            f"--preset {name} starts from the official SAM weights: give --checkpoint SAM.pth "
            "(only --preset tiny trains from random init)",
            "--checkpoint",
        )
    require_ml("gazeprep anatomy train", "segment_anything")
    from gazeprep.anatomy.train import TrainSettings, run_train

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, warmup_iters=warmup, seed=seed)
    name_of_dataset, release = _dataset_and_root(dataset, root, quiet)
    metrics = run_train(
        release,
        images or sample_data_dir() / "mimic-cxr",
        out,
        dataset=name_of_dataset,
        checkpoint=checkpoint,
        config=name,
        settings=settings,
        lora_rank=rank,
        device=device.value,
        val_fraction=val_fraction,
        limit=limit,
        progress=not quiet,
    )
    per = {k: {m: round(v[m], 4) for m in ("dice", "iou")} for k, v in metrics["per_structure"].items()}
    typer.echo(
        f"held-out cases: {metrics['n_cases']}, mean Dice {metrics['mean_dice']:.4f}, mean IoU {metrics['mean_iou']:.4f}"
    )
    typer.echo(json.dumps(per))
    typer.echo(f"model written to {out}")


@anatomy_app.command("predict")
def predict_cmd(
    model: Path = typer.Option(..., "--model", help="Model folder written by `gazeprep anatomy train`."),
    dataset: str = typer.Option(
        "reflacx",
        "--dataset",
        callback=known_dataset,
        help="Release whose images get masks: a registered dataset (see `gazeprep datasets`) or a definition file.",
    ),
    root: Path | None = typer.Option(None, "--root", help="Release folder (default: sample_data/<dataset>)."),
    images: Path | None = images_option("MIMIC-CXR(-JPG) root (default: sample_data/mimic-cxr)."),
    out: Path = typer.Option(
        ..., "--out", callback=out_folder, help="Anatomy folder (masks.zarr + masks.parquet); reruns resume."
    ),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    mask_size: int = typer.Option(512, "--mask-size", min=8, help="Stored mask grid (square, whole image)."),
    device: Device = typer.Option(Device.auto, "--device", help="auto (CUDA when available), cpu or cuda."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images."),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads decoding the next batches' images."),
    executor: Executor = typer.Option(
        Executor.local, "--executor", help="local (this process), or ray (tasks, one GPU each when present)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: start Ray here)."
    ),
    quiet: bool = quiet_option(),
) -> None:
    """Predict anatomy masks for every image of a release (batched, resumable)."""
    require_ml("gazeprep anatomy predict", "segment_anything")
    from gazeprep.anatomy.predict import run_predict

    name_of_dataset, release = _dataset_and_root(dataset, root, quiet)
    stats = run_predict(
        model,
        name_of_dataset,
        release,
        images or sample_data_dir() / "mimic-cxr",
        out,
        batch_size=batch_size,
        device=device.value,
        mask_size=mask_size,
        limit=limit,
        workers=workers,
        executor=executor.value,
        ray_address=ray_address,
        progress=not quiet,
    )
    typer.echo(
        f"{stats['segmented']} segmented, {stats['skipped_done']} already done, {stats['rejected']} rejected "
        f"({stats['images_per_s']} img/s on {stats['device']}); masks in {out}"
    )


@anatomy_app.command("export-masks")
def export_masks_cmd(
    anatomy_dir: Path = typer.Option(..., "--anatomy-dir", help="Folder written by `gazeprep anatomy predict`."),
    out: Path = typer.Option(
        ..., "--out", callback=out_folder, help="Where to write <image_id>/<structure>.png (0/255, original size)."
    ),
    image_id: list[str] | None = typer.Option(None, "--image-id", help="Only these images (repeatable)."),
    structures: str = typer.Option(
        "heart,left_lung,right_lung,mediastinum,aortic_knob",
        "--structures",
        help="Comma-separated structures to write (heart is derived).",
    ),
    heart_cut_top: float = typer.Option(
        1.0 / 3.0,
        "--heart-cut-top",
        min=0.0,
        max=0.99,
        help="Fraction of the mediastinum's height cut from the top for the heart.",
    ),
) -> None:
    """Write masks (overrides applied) as PNGs at the original image size, e.g. to correct them by hand
    and copy the fixed files into <anatomy-dir>/overrides/<image_id>/."""
    from gazeprep.anatomy.masks import export_mask_pngs

    n = export_mask_pngs(
        anatomy_dir,
        out,
        image_ids=image_id or None,
        structures=tuple(s.strip() for s in structures.split(",") if s.strip()),
        heart_cut_top=heart_cut_top,
    )
    typer.echo(f"wrote {n} PNG masks to {out}")


def register(app: typer.Typer) -> None:
    """Add ``gazeprep anatomy ...`` to ``app``."""
    app.add_typer(anatomy_app, name="anatomy")
