"""CLI of the trainer: ``gazeprep train``, ``gazeprep predict``, ``gazeprep models``.

Bodies parse options and call :mod:`gazeprep.train.run`; torch is imported only when a command runs,
after :func:`~gazeprep.commands.require_ml` has checked that the ``[ml]`` extra is installed.

Flag names: ``train --arch NAME`` is the architecture to train (a name from ``gazeprep models``; the old
``--model NAME`` still parses, hidden), ``predict --model FOLDER`` is a trained run folder (old:
``--model-dir``), ``--images`` the MIMIC-CXR root (old: ``--images-root``), ``--preset`` a named preset
and ``--config`` a YAML file. ``train --resume`` / ``--force`` say what to do with a run folder that
already holds a run; ``predict --split`` chooses the run's cases to predict (``test`` by default).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from gazeprep.commands import (
    Device,
    hidden_alias,
    images_option,
    merge_alias,
    missing_option,
    out_folder,
    quiet_option,
    require_ml,
    usage_error,
)


class WeakLabeler(str, Enum):
    """``train --weak-labeler``: the MIMIC-CXR label table of the label-only images."""

    chexpert = "chexpert"
    negbio = "negbio"


class Split(str, Enum):
    """``predict --split``: the run's saved splits, or every case of the export."""

    test = "test"
    val = "val"
    train = "train"
    all = "all"


def _images_root(images_root: Path | None) -> Path | None:
    """The given folder, else the bundled sample MIMIC-CXR images (said on stderr), else None."""
    if images_root is not None:
        return images_root
    from gazeprep.paths import sample_data_dir

    sample = sample_data_dir() / "mimic-cxr"
    if sample.is_dir():
        typer.echo(f"no --images given: reading images from the bundled sample data in {sample}", err=True)
        return sample
    return None


def train_cmd(
    arch: str | None = typer.Option(
        None, "--arch", metavar="NAME", help="Architecture to train: a model name from `gazeprep models`.  [required]"
    ),
    arch_old: str | None = hidden_alias("--model"),
    export: Path = typer.Option(..., "--export", help="Export folder written by build-heatmaps (the training data)."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with sections preset/model/loss/data/train."),
    preset: str | None = typer.Option(
        None, "--preset", metavar="NAME", help="Start from this preset (default or tiny); overrides the config's."
    ),
    device: Device = typer.Option(Device.auto, "--device", help="auto (CUDA when available), cpu or cuda."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs per stage (overrides the config)."),
    out: Path | None = typer.Option(
        None, "--out", callback=out_folder, help="Run folder (checkpoints, history, model.pt). Default runs/<arch>."
    ),
    images: Path | None = images_option(
        "MIMIC-CXR root the cases' image paths are relative to (default: the bundled sample images)."
    ),
    images_old: Path | None = hidden_alias("--images-root"),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out (it must hold a run of the same config)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Start over: remove the run files in --out (a run of another config included)."
    ),
    weak_labels: Path | None = typer.Option(
        None,
        "--weak-labels",
        metavar="MIMIC_ROOT",
        help="Paper 004 only: add MIMIC-CXR's label-only images (its train split, no export image, no held-out "
        "subject) to the training split, through the unannotated-image loss.",
    ),
    weak_labeler: WeakLabeler | None = typer.Option(
        None, "--weak-labeler", help="Label table of --weak-labels: chexpert (default) or negbio."
    ),
    quiet: bool = quiet_option(),
) -> None:
    """Train one of the papers' models on an export (checked against the model's inputs first).

    Splits: the export's split column when every case has one, else a seeded subject-disjoint split
    stratified by class (70/10/20 %), saved in the run folder. Rerunning with the same --out and the
    same config continues the run; another config is refused unless --force.
    """
    model = merge_alias(arch, arch_old, "--arch", "--model")
    if model is None:
        raise missing_option("--arch")
    if resume and force:
        raise usage_error("--resume continues a run and --force starts it over; give one", "--force")
    images = merge_alias(images, images_old, "--images", "--images-root")
    if weak_labeler is not None and weak_labels is None:
        raise usage_error("--weak-labeler chooses the table of --weak-labels MIMIC_ROOT; give both", "--weak-labeler")
    if config is not None and not config.is_file():
        raise usage_error(
            f"{str(config)!r} is not a file (--config takes a YAML file; named presets go to --preset)", "--config"
        )
    require_ml("gazeprep train")
    from gazeprep.train.run import load_config_file, train_run

    cfg = load_config_file(config)
    if preset is not None:
        cfg["preset"] = preset
    run_dir = out or Path("runs") / model
    history = train_run(
        model,
        export,
        run_dir,
        cfg,
        device=device.value,
        epochs=epochs,
        images_root=_images_root(images),
        progress=not quiet,
        resume=resume,
        force=force,
        notify=lambda msg: typer.echo(msg, err=True),
        weak_labels=weak_labels,
        weak_labeler=(weak_labeler or WeakLabeler.chexpert).value,
    )
    last = history[-1] if history else {}
    summary = " ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
    typer.echo(
        f"trained {model}: {len(history)} epochs recorded in {run_dir}" + (f" (last: {summary})" if summary else "")
    )


def predict_cmd(
    model: Path | None = typer.Option(
        None, "--model", metavar="FOLDER", help="Run folder written by `gazeprep train`.  [required]"
    ),
    model_old: Path | None = hidden_alias("--model-dir"),
    export: Path = typer.Option(..., "--export", help="Export whose cases to predict."),
    out: Path = typer.Option(
        ..., "--out", callback=out_folder, help="Prediction export to write (read it with `gazeprep evaluate`)."
    ),
    device: Device = typer.Option(Device.auto, "--device", help="auto (CUDA when available), cpu or cuda."),
    images: Path | None = images_option(
        "MIMIC-CXR root the cases' image paths are relative to (default: the bundled sample images)."
    ),
    images_old: Path | None = hidden_alias("--images-root"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    split: Split = typer.Option(
        Split.test, "--split", help="The run's cases to predict (saved at training); all: every case of the export."
    ),
    quiet: bool = quiet_option(),
) -> None:
    """Write a trained model's heatmaps and class scores for the run's test cases (--split) as a prediction export."""
    model_dir = merge_alias(model, model_old, "--model", "--model-dir")
    if model_dir is None:
        raise missing_option("--model")
    images = merge_alias(images, images_old, "--images", "--images-root")
    require_ml("gazeprep predict")
    from gazeprep.train.run import predict_run

    path = predict_run(
        model_dir,
        export,
        out,
        split=split.value,
        device=device.value,
        images_root=_images_root(images),
        batch_size=batch_size,
        progress=not quiet,
    )
    which = "every case" if split is Split.all else f"the {split.value} cases"
    typer.echo(f"wrote predictions of {which} to {path}")


def models_cmd() -> None:
    """List the trainable models: paper, presets, and the export each trains on (recipe, targets, labels)."""
    require_ml("gazeprep models")
    from gazeprep.train.models import list_models, resolve_config, spec_of
    from gazeprep.train.run import resolve_data

    for name in list_models():
        spec = spec_of(name)
        typer.echo(f"{name:24s} paper {spec.paper:8s} presets: {', '.join(sorted(spec.presets))}  {spec.summary}")
        cfg = resolve_config(name, {"preset": "default"})
        resolve_data(name, cfg)
        need = spec.inputs
        labels = ", ".join(cfg["data"]["labels"]) or "none"
        kind = "each scored alone" if (need is not None and need.multilabel) else "one class per case"
        if need is not None and need.maps_per_label and cfg["data"]["targets"] == cfg["data"]["labels"]:
            maps = "one heatmap per label"
        else:
            maps = "heatmap targets " + (", ".join(cfg["data"]["targets"]) or "none")
        if need is not None and not need.needs_maps:
            maps += " (evaluation only)"
        src = f"recipe {need.recipe} on {need.dataset}" if need is not None else "any export"
        typer.echo(f"{'':24s} trains on: {src}; {maps}; labels {labels} ({kind})")
    from gazeprep.papers import PAPERS

    typer.echo("\npapers:")
    for paper in PAPERS.values():
        typer.echo(f"  {paper.number} {paper.short}: {paper.citation}")


def register(app: typer.Typer) -> None:
    """Add the trainer's commands to ``app``."""
    app.command("train")(train_cmd)
    app.command("predict")(predict_cmd)
    app.command("models")(models_cmd)
