"""``ingest``: open a release, read every case and write the canonical tables as Parquet."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from gazeprep import schema
from gazeprep._atomic import atomic_write_parquet
from gazeprep.datasets.base import CaseData, Release
from gazeprep.datasets.registry import get_adapter

_RELEASES: dict[tuple, Release] = {}  # the release opened in this process, keyed by how it was opened


def _read_block(key: tuple, case_ids: list[str]) -> list[CaseData]:
    """The executor's per-block function: the cases of a block, read from the release that this
    worker process opened once (``key``: adapter name, root, gaze_samples, sorted open kwargs)."""
    release = _RELEASES.get(key)
    if release is None:
        name, root, gaze_samples, kwargs = key
        release = get_adapter(name).open(Path(root), gaze_samples=gaze_samples, **dict(kwargs))
        _RELEASES.clear()
        _RELEASES[key] = release
    return [release.read_case(cid) for cid in case_ids]


def ingest(
    adapter_name: str,
    root: str | Path,
    out: str | Path,
    gaze_samples: bool = False,
    *,
    workers: int = 1,
    progress: bool = True,
    **open_kwargs: Any,
) -> dict[str, int]:
    """Ingest one release folder into Parquet tables.

    Parameters
    ----------
    adapter_name:
        Registered dataset name (``reflacx``, ``egd-cxr``, ``mimic-cxr``).
    root:
        The release folder.
    out:
        Output folder; receives ``cases.parquet``, ``case_labels.parquet``, one file per per-case
        table of the dataset (``fixations``, ``reports``, ``words``, ...) and ``rejects.parquet``,
        each zstd-compressed and conforming to :data:`gazeprep.schema.TABLES`.
    gaze_samples:
        Also read the raw tracker samples (``gaze_samples.parquet``; large).
    workers:
        Worker processes for reading cases (the local executor of
        :mod:`gazeprep.pipeline.executor`: spawned processes, each opening the release once); 1
        reads in this process.
    progress:
        Show a tqdm progress bar on stderr.
    open_kwargs:
        Passed to the adapter's ``open`` (e.g. ``images_root``, the MIMIC-CXR root).

    Returns
    -------
    dict
        Row count of every written table (name -> rows).
    """
    adapter = get_adapter(adapter_name)
    release = adapter.open(Path(root), gaze_samples=gaze_samples, **open_kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[pl.DataFrame]] = {t: [] for t in release.tables}
    rejects: list[dict] = list(release.rejects)
    ids = release.case_ids()
    bar = tqdm(total=len(ids), desc=f"ingest {adapter_name}", unit="case", disable=not progress, file=sys.stderr)
    from gazeprep.pipeline.executor import LocalExecutor

    key = (adapter_name, str(Path(root)), gaze_samples, tuple(sorted((k, v) for k, v in open_kwargs.items())))
    _RELEASES.clear()
    _RELEASES[key] = release  # blocks read in this process (one worker) reuse the open release
    n = max(1, min(workers, len(ids)))
    try:
        # spawn, not fork (polars deadlocks in a forked child); in case order, as a sequential read
        run = LocalExecutor(workers=n, died_hint="rerun with fewer --workers if memory is short").map_blocks(
            partial(_read_block, key), ids, block_size=16 if n > 1 else 1, progress=bar
        )
    finally:
        bar.close()
        _RELEASES.clear()
    for cd in run.results:
        _collect(cd, parts, rejects)
    counts: dict[str, int] = {}
    tables = {"cases": release.cases, "case_labels": release.case_labels}
    for name, frames in parts.items():
        tables[name] = pl.concat(frames, how="vertical") if frames else schema.empty(name)
    tables["rejects"] = schema.rejects_frame(rejects)
    for name, df in tables.items():
        df = schema.conform(df, name)
        atomic_write_parquet(df, out / f"{name}.parquet")  # a killed run leaves no half file
        counts[name] = df.height
    return counts


def _collect(cd: CaseData, parts: dict[str, list[pl.DataFrame]], rejects: list[dict]) -> None:
    for name, df in cd.tables.items():
        if df.height:
            parts.setdefault(name, []).append(df)
    rejects.extend(cd.rejects)
