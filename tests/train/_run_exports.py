"""Small on-disk exports shaped like the datasets' (EGD-CXR: one ``full`` map and one class per case;
REFLACX: one map per positive label, several labels per case) for the trainer's run-level tests.

Images and maps come from :func:`gazeprep.train.synthetic.make_synthetic_export` (a bright object whose
Gaussian is the map); the three synthetic classes are renamed to the dataset's labels, so a model
can learn from them. The shipped recipe of that dataset is recorded in the manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from gazeprep import schema
from gazeprep.train.synthetic import CLASSES, make_synthetic_export

EGD_NAMES = ("normal", "chf", "pneumonia")
REFLACX_NAMES = ("edema", "atelectasis", "consolidation")


def cli(args) -> int:
    """Run the gazeprep CLI in-process; the exit status."""
    from gazeprep.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def write_export(
    tmp_path: Path,
    kind: str = "egd",
    n: int = 12,
    split: list[str | None] | None = None,
    name: str | None = None,
    size: tuple[int, int] = (48, 40),
    prefix: str = "",
) -> tuple[Path, Path]:
    """Write an export of ``n`` cases shaped like ``kind`` (``egd``, ``reflacx`` or ``synthetic``,
    the latter keeping the disc/ring/bar classes and a ``full`` map) and their PNG images.

    ``split``: the cases table's split value per case (default none). Two cases share each subject.
    ``prefix`` goes before every case id (another export's cases). Returns (export folder, images folder).
    """
    from gazeprep.export import CaseResult, finalize
    from gazeprep.recipes import load_recipe

    mem = make_synthetic_export(n, height=size[0], width=size[1])
    if prefix:
        mem.images = {prefix + c: a for c, a in mem.images.items()}
        mem.heatmaps = {(prefix + c, t): a for (c, t), a in mem.heatmaps.items()}
        for k in ("cases", "case_labels"):
            mem.tables[k] = mem.tables[k].with_columns((pl.lit(prefix) + pl.col("case_id")).alias("case_id"))
    base = Path(tmp_path) / (name or f"{kind}-export")
    img_dir = base.parent / f"{base.name}-images"
    img_dir.mkdir(parents=True)
    names = {"egd": EGD_NAMES, "reflacx": REFLACX_NAMES, "synthetic": CLASSES}[kind]
    rename = dict(zip(CLASSES, names))
    cases = mem.tables["cases"]
    paths = []
    for cid in cases["case_id"]:
        Image.fromarray((mem.images[cid] * 255).round().astype(np.uint8)).save(img_dir / f"{cid}.png")
        paths.append(f"{cid}.png")
    cases = cases.with_columns(pl.Series("image_path", paths), pl.lit(kind).alias("dataset"))
    if split is not None:
        cases = cases.with_columns(pl.Series("split", split, dtype=pl.Utf8))
    cases = schema.conform(cases, "cases")
    labels = mem.tables["case_labels"].with_columns(
        pl.col("source_label").replace_strict(rename, return_dtype=pl.Utf8), pl.lit(kind).alias("dataset")
    )
    labels = schema.conform(labels, "case_labels")
    results = []
    for cid in cases["case_id"]:
        maps = {}
        for (c, t), a in mem.heatmaps.items():
            if c != cid:
                continue
            if kind == "reflacx" and t != "full":
                maps[rename[t]] = a  # one map per positive label, no whole-recording map
            elif kind != "reflacx" and t == "full":
                maps[t] = a
        results.append(
            CaseResult(
                cid,
                f"h-{kind}-{cid}",
                {
                    "cases": cases.filter(pl.col("case_id") == cid),
                    "case_labels": labels.filter(pl.col("case_id") == cid),
                },
                maps,
                [],
            )
        )
    recipe = {"egd": load_recipe("egd-static"), "reflacx": load_recipe("reflacx-label-specific"), "synthetic": None}[
        kind
    ]
    out = finalize(base, results, recipe=recipe, fsync=False)
    return Path(out), img_dir


def tiny_config(
    tmp_path: Path, name: str = "cfg.yaml", *, data: dict | None = None, train: dict | None = None, **sections
) -> Path:
    """A YAML config file: the tiny preset at 32 px with batch 4, updated with ``data``, ``train`` and
    other sections (``loss``, ``model``)."""
    import yaml

    cfg = {
        "preset": "tiny",
        "data": {"size": 32, **(data or {})},
        "train": {"batch_size": 4, **(train or {})},
        **sections,
    }
    p = Path(tmp_path) / name
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p
