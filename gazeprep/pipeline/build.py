"""``build-heatmaps``: the whole ETL for one dataset and one recipe.

Per case (in a pool of spawned worker processes, or on Ray): read the case (dataset adapter) -> sentences and word offsets ->
mentions (rule-based labeler) -> windows (the recipe's window rule) -> optional anatomy masks ->
render every target -> a :class:`~gazeprep.export.CaseResult` stored as a resumable part. Then the
parts are assembled, sorted by case, into the export (Parquet tables, Zarr heatmaps, manifest).

A case's part is keyed by a hash of its input tables, the recipe hash and the package version, so a
rerun after a crash (or with more workers) recomputes only what is missing or changed and ends with
byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from tqdm import tqdm

from gazeprep import __version__
from gazeprep.errors import GazeprepError
from gazeprep.recipes import Recipe



@dataclass
class BuildOptions:
    """Options of one build (CLI flags)."""

    dataset: str
    root: Path
    out: Path
    recipe: Recipe
    workers: int = 0  # 0 = all cores
    force: bool = False
    anatomy_dir: Path | None = None
    progress: bool = True
    executor: str = "local"  # local (process pool) or ray
    ray_address: str | None = None
    ray_block_size: int = 32


@dataclass
class BuildSummary:
    out: Path
    n_cases: int
    n_heatmaps: int
    n_rejects: int
    n_reused: int
    extra: dict = field(default_factory=dict)


@dataclass
class _BuildState:
    release: object
    recipe: Recipe
    recipe_hash: str
    dataset: str
    root: Path
    out: Path
    anatomy_dir: Path | None
    force: bool

    def store(self):
        """The resumable part store of this build (``<out>/.parts``)."""
        from gazeprep.export import PartStore

        return PartStore(self.out, self.recipe_hash, dtype=self.recipe.output.dtype)

    def put_rejected(self, case_id: str, input_hash: str, stage: str, reason: str, store=None) -> None:
        """Store the part of a case that produces no maps: its ``cases`` row and one rejects row."""
        from gazeprep.export import CaseResult
        from gazeprep.schema import reject

        (store or self.store()).put(
            CaseResult(
                case_id=case_id,
                input_hash=input_hash,
                tables={"cases": self.release.cases.filter(pl.col("case_id") == case_id)},
                heatmaps={},
                rejects=[reject(self.dataset, case_id, stage, None, None, reason)],
            )
        )

    def __post_init__(self) -> None:
        self.masks = None  # AnatomyMasks provider for recipes with an anatomy filter
        a = self.recipe.anatomy
        if a is not None:
            from gazeprep.anatomy.masks import AnatomyMasks

            # SAMed masks: --anatomy-dir, else <out>/../anatomy; EGD-CXR masks: the release itself
            default = self.root if a.masks == "egd_masks" else (self.anatomy_dir or self.out.parent / "anatomy")
            self.masks = AnatomyMasks(a, default_dir=default)


def make_state(spec: "BuildSpec", release=None) -> _BuildState:
    """Build state from a picklable :class:`BuildSpec` (driver, spawned workers and Ray tasks)."""
    from gazeprep.datasets import get_adapter

    recipe = Recipe.model_validate_json(spec.recipe_json)
    if release is None:
        release = get_adapter(spec.dataset).open(Path(spec.root), gaze_samples=recipe.render.source == "gaze_samples")
    return _BuildState(
        release=release,
        recipe=recipe,
        recipe_hash=recipe.hash(),
        dataset=spec.dataset,
        root=Path(spec.root),
        out=Path(spec.out),
        anatomy_dir=Path(spec.anatomy_dir) if spec.anatomy_dir else None,
        force=spec.force,
    )


@dataclass(frozen=True)
class BuildSpec:
    """Everything a worker needs to rebuild the build state (picklable, hashable, no open files)."""

    dataset: str
    root: str
    out: str
    recipe_json: str  # the resolved recipe, JSON
    anatomy_dir: str | None
    force: bool

    @classmethod
    def from_options(cls, opts: "BuildOptions") -> "BuildSpec":
        return cls(
            dataset=opts.dataset,
            root=str(opts.root),
            out=str(opts.out),
            recipe_json=opts.recipe.model_dump_json(),
            anatomy_dir=str(opts.anatomy_dir) if opts.anatomy_dir else None,
            force=opts.force,
        )


def _hash_tables(tables: dict[str, pl.DataFrame], salt: str) -> str:
    """SHA-256 over the tables' names, schemas and polars row hashes (fixed seed).

    Row hashes are stable for one polars version (recorded in the manifest); an upgrade only
    costs a recompute on the next resume. ~20x cheaper than hashing a CSV rendering.
    """
    h = hashlib.sha256(salt.encode())
    for name in sorted(tables):
        df = tables[name]
        h.update(f"{name}:{df.height}:{df.schema}".encode())
        if df.height:
            h.update(df.hash_rows(seed=0).to_numpy().tobytes())
    return h.hexdigest()


def _case_input_hash(
    case_row: dict, data_tables: dict[str, pl.DataFrame], recipe_hash: str, masks: dict | None = None
) -> str:
    """Hash of everything a case's outputs depend on: package version, recipe, its metadata row,
    its input tables and (anatomy recipes) its masks."""
    salt = f"{__version__}|{recipe_hash}|" + "|".join(f"{k}={case_row[k]}" for k in sorted(case_row))
    for target in sorted(masks or {}):
        m = masks[target]
        salt += f"|mask:{target}:{m.shape}:" + hashlib.sha256(m.tobytes()).hexdigest()
    return _hash_tables(data_tables, salt)


def _compute_case_safely(st: "_BuildState", case_id: str, store) -> tuple[int, bool]:
    """:func:`_compute_case` (returns the number of maps and whether the part was reused), turning an unexpected error of one case into a ``rejects`` row.

    Data problems are already rejects; this catches bugs or corrupt inputs that escaped the
    checks, so that one bad case never stops a build of thousands. The part written for such a case
    holds only the rejects row and is recomputed on the next run (its input hash is marked failed).
    """
    try:
        return _compute_case(st, case_id, store)
    except Exception as exc:  # noqa: BLE001 - recorded, not swallowed
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        st.put_rejected(case_id, "failed", "build", f"case failed: {msg}", store)
        return 0, False


def _compute_case(st: _BuildState, case_id: str, store):
    from gazeprep.export import CaseResult
    from gazeprep.heatmaps import render_case
    from gazeprep.schema import empty, reject
    from gazeprep.text import Labeler, build_sentences, compute_windows

    release = st.release
    case_row = release.cases.filter(pl.col("case_id") == case_id).row(0, named=True)
    data = release.read_case(case_id)
    masks, mask_error = None, None
    if st.masks is not None:
        try:
            masks = st.masks.for_image(case_row["image_id"], (case_row["image_height_px"], case_row["image_width_px"]))
        except GazeprepError as exc:
            mask_error = str(exc)
    input_hash = _case_input_hash(case_row, data.tables, st.recipe_hash, masks)
    if not st.force:
        reader = store.open(case_id) if store.has(case_id, input_hash) else None  # header only
        if reader is not None:
            with reader:
                return len(reader.targets), True

    ds = st.dataset
    rejects: list[dict] = list(data.rejects)
    tables: dict[str, pl.DataFrame] = {k: v for k, v in data.tables.items() if k != "gaze_samples"}
    tables["cases"] = release.cases.filter(pl.col("case_id") == case_id)
    labels = getattr(release, "case_labels", None)
    if labels is not None and labels.height:
        tables["case_labels"] = labels.filter(pl.col("case_id") == case_id)
    heatmaps: dict = {}
    index_rows: list[dict] = []

    words = data.tables.get("words")
    reports = data.tables.get("reports")
    report_text = reports["text"][0] if reports is not None and reports.height else None
    source = st.recipe.render.source
    events = data.tables.get(source)
    has_words = words is not None and words.height > 0
    # a whole-recording window ending at the recording's end needs no transcript
    whole = st.recipe.window.kind == "whole_recording" and st.recipe.window.end == "recording_end"
    if events is None or events.height == 0:
        rejects.append(reject(ds, case_id, "render", None, None, f"no {source} for this case"))
    elif not has_words and not whole:
        rejects.append(reject(ds, case_id, "text", None, None, "empty transcript: no window can be placed"))
    else:
        if has_words:
            words_o, sentences, r = build_sentences(words, report_text, dataset=ds, case_id=case_id)
            rejects.extend(r)
            mentions = Labeler.from_rules().label_case(
                sentences, words_o, report_text or "", dataset=ds, case_id=case_id
            )
        else:  # whole-recording maps need no transcript
            words_o, sentences, mentions = empty("words"), empty("sentences"), empty("mentions")
            rejects.append(reject(ds, case_id, "text", None, None, "empty transcript: map built without text"))
        t_col = "t_end_s" if "t_end_s" in events.columns else "t_s"
        recording_end = float(events[t_col].max())
        windows = compute_windows(
            st.recipe.window,
            sentences=sentences,
            words=words_o,
            mentions=mentions,
            recording_end_s=recording_end,
            dataset=ds,
            case_id=case_id,
            recipe=st.recipe.name,
        )
        group = getattr(st.recipe.window, "label_group", None)
        if group is not None:
            from gazeprep.text import label_groups

            windows = windows.filter(pl.col("target").is_in(list(label_groups()[group])))
        tables.update(words=words_o, sentences=sentences, mentions=mentions, windows=windows)
        if mask_error is not None:
            # an anatomy recipe without masks must not fall back to unfiltered maps
            rejects.append(reject(ds, case_id, "anatomy", None, None, mask_error))
            windows = windows.clear()
        maps, r = render_case(
            events,
            windows,
            st.recipe,
            image_height_px=int(case_row["image_height_px"]),
            image_width_px=int(case_row["image_width_px"]),
            masks=masks,
        )
        rejects.extend(r)
        for target in sorted(maps):
            m = maps[target]
            heatmaps[target] = m.array
            index_rows.append(
                {
                    "dataset": ds,
                    "case_id": case_id,
                    "target": target,
                    "recipe": st.recipe.name,
                    "height_px": int(m.array.shape[0]),
                    "width_px": int(m.array.shape[1]),
                    "n_fixations": int(m.n_fixations),
                    "total_weight": float(m.total_weight),
                }
            )
    if index_rows:
        tables["heatmaps"] = pl.DataFrame(index_rows)
    result = CaseResult(case_id=case_id, input_hash=input_hash, tables=tables, heatmaps=heatmaps, rejects=rejects)
    store.put(result)
    return len(heatmaps), False


def build_heatmaps(opts: BuildOptions) -> BuildSummary:
    """Run the ETL for ``opts.dataset`` with ``opts.recipe`` and write the export to ``opts.out``.

    Returns a :class:`BuildSummary` (counts). Raises :class:`GazeprepError` on whole-release
    problems (missing root or metadata); per-case problems land in the ``rejects`` table.
    """
    from gazeprep.datasets import get_adapter
    from gazeprep.export import finalize

    recipe = opts.recipe
    if recipe.dataset != opts.dataset:
        raise GazeprepError(f"recipe {recipe.name!r} is for dataset {recipe.dataset!r}, not {opts.dataset!r}")
    if not opts.root.exists():
        raise GazeprepError(f"release folder not found: {opts.root}")
    adapter = get_adapter(opts.dataset)
    release = adapter.open(opts.root, gaze_samples=recipe.render.source == "gaze_samples")
    cases = release.cases
    live = cases.filter(~pl.col("discarded").fill_null(False))["case_id"].sort().to_list()
    spec = BuildSpec.from_options(opts)
    state = make_state(spec, release)  # the driver's; workers rebuild theirs from the spec
    opts.out.mkdir(parents=True, exist_ok=True)
    workers = opts.workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(live) or 1))
    reused = 0
    bar = tqdm(total=len(live), desc=f"{opts.dataset}: cases", unit="case", disable=not opts.progress, file=sys.stderr)
    events: list[dict] = []
    try:
        if opts.executor == "ray":
            from gazeprep.pipeline.distributed import run_on_ray

            run = run_on_ray(
                spec,
                live,
                address=opts.ray_address,
                num_cpus=workers,
                block_size=opts.ray_block_size,
                progress=bar,
            )
            reused = sum(r for _, r, _ in run.outcomes)
            events = run.events
            for cid, reason in run.failed:
                state.put_rejected(cid, "failed", "build", f"case failed on every attempt: {reason}")
        elif opts.executor != "local":
            raise GazeprepError(f"unknown executor {opts.executor!r}; use local or ray")
        elif workers == 1:
            store = state.store()
            for cid in live:
                _, was_reused = _compute_case_safely(state, cid, store)
                reused += was_reused
                bar.update()
        else:
            # spawn, not fork: polars' thread pool does not survive a fork safely. Each worker
            # opens the release once (see distributed._state_for) and processes blocks of cases.
            from functools import partial

            from gazeprep.pipeline.distributed import process_block

            block = max(1, min(16, len(live) // (workers * 4) or 1))
            blocks = [live[i : i + block] for i in range(0, len(live), block)]
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers) as pool:
                for results in pool.imap_unordered(partial(process_block, spec), blocks):
                    reused += sum(r for _, r, _ in results)
                    bar.update(len(results))
    finally:
        bar.close()
    # discarded cases: a cases row and a rejects row, nothing to render
    store = state.store()
    discarded = cases.filter(pl.col("discarded").fill_null(False))["case_id"].sort().to_list()
    store.prune(live + discarded)  # parts of cases no longer in the release
    for cid in discarded:
        state.put_rejected(cid, "discarded", "ingest", "eye-tracking data discarded in the release", store)
    extra_rejects = list(release.rejects)
    manifest_extra = {
        "dataset": opts.dataset,
        "root_name": opts.root.resolve().name,
        "command": "build-heatmaps",
    }
    path = finalize(
        opts.out,
        sorted(live + discarded),
        store=store,
        recipe=recipe,
        dtype=recipe.output.dtype,
        manifest_extra=manifest_extra,
        extra_rejects=extra_rejects,
        progress=opts.progress,
    )
    from gazeprep.export import load_export

    ex = load_export(path)
    return BuildSummary(
        out=path,
        n_cases=len(live) + len(discarded),
        n_heatmaps=ex.tables["heatmaps"].height,
        n_rejects=ex.tables["rejects"].height,
        n_reused=reused,
        extra={"executor_events": events},
    )
