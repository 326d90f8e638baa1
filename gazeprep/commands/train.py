"""CLI of the trainer: ``gazeprep train``, ``gazeprep predict``, ``gazeprep models``.

Bodies parse options and call :mod:`gazeprep.train.run`; torch is imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _images_root(images_root: Optional[Path]) -> Optional[Path]:
    """The given folder, else the bundled sample MIMIC-CXR images (said on stderr), else None."""
    if images_root is not None:
        return images_root
    from gazeprep.paths import sample_data_dir

    sample = sample_data_dir() / "mimic-cxr"
    if sample.is_dir():
        typer.echo(f"no --images-root given: reading images from the bundled sample data in {sample}", err=True)
        return sample
    return None


def register(app: typer.Typer) -> None:
    """Add the trainer's commands to ``app``."""

    @app.command("train")
    def train_cmd(
        model: str = typer.Option(..., "--model", help="Model name (see `gazeprep models`)."),
        export: Path = typer.Option(..., "--export", help="Export folder written by build-heatmaps (the training data)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML with sections preset/model/loss/data/train."),
        preset: Optional[str] = typer.Option(None, "--preset", help="Start from this preset (default or tiny); overrides the config's."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu or cuda."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per stage (overrides the config)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run folder (checkpoints, history, model.pt). Default runs/<model>."),
        images_root: Optional[Path] = typer.Option(None, "--images-root", help="Folder the cases' image paths are relative to (MIMIC-CXR root; default: the bundled sample images)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Train one of the papers' models on an export; rerunning with the same --out resumes."""
        from gazeprep.train.run import load_config_file, train_run

        cfg = load_config_file(config)
        if preset is not None:
            cfg["preset"] = preset
        run_dir = out or Path("runs") / model
        history = train_run(model, export, run_dir, cfg, device=device, epochs=epochs, images_root=_images_root(images_root), progress=not quiet)
        last = history[-1] if history else {}
        summary = " ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
        typer.echo(f"trained {model}: {len(history)} epochs recorded in {run_dir}" + (f" (last: {summary})" if summary else ""))

    @app.command("predict")
    def predict_cmd(
        model_dir: Path = typer.Option(..., "--model-dir", help="Run folder written by `gazeprep train`."),
        export: Path = typer.Option(..., "--export", help="Export whose cases to predict."),
        out: Path = typer.Option(..., "--out", help="Prediction export to write (read it with `gazeprep evaluate`)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        images_root: Optional[Path] = typer.Option(None, "--images-root", help="Folder the cases' image paths are relative to (MIMIC-CXR root)."),
        batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Write a trained model's heatmaps for every case of an export as a prediction export."""
        from gazeprep.train.run import predict_run

        path = predict_run(model_dir, export, out, device=device, images_root=_images_root(images_root), batch_size=batch_size, progress=not quiet)
        typer.echo(f"wrote predictions to {path}")

    @app.command("models")
    def models_cmd() -> None:
        """List the trainable models, the paper each implements and their presets."""
        from gazeprep.train.models import list_models, spec_of

        for name in list_models():
            spec = spec_of(name)
            typer.echo(f"{name:24s} paper {spec.paper:8s} presets: {', '.join(sorted(spec.presets))}  {spec.summary}")
