"""``build-heatmaps``: the whole ETL for one dataset and one recipe.

Per case, :func:`gazeprep.pipeline.case.process_case` (read -> text -> windows -> anatomy masks ->
render -> :class:`~gazeprep.export.CaseResult`), mapped over blocks of cases by the executor of
:mod:`gazeprep.pipeline.executor` (in this process, a pool of spawned worker processes, or Ray);
each result is stored as a resumable part. Then the parts are assembled, sorted by case, into the
export (Parquet tables, Zarr heatmaps, manifest).

A case's part is keyed by a hash of its input tables, the recipe hash and the package version, and
the part store by the recipe hash and the labeler profile's rule hash, so a
rerun after a crash (or with more workers) recomputes only what is missing or changed and ends with
byte-identical outputs.

Failure semantics:

* a data problem of one case (bad row, empty window, missing mask, a bug that escaped the checks)
  is a ``rejects`` row and the build goes on;
* an I/O fault (disk full, file-size limit, permission, device error, a file that vanished) or
  running out of memory is never a reject: the build stops with
  :class:`~gazeprep.errors.StorageError` (naming the file) or :class:`GazeprepError`, commits no
  manifest, and the previous export in the folder, if any, stays as it was;
* Ctrl-C (``KeyboardInterrupt``) stops the workers at once and propagates; finished parts stay for
  the rerun, nothing is committed;
* after the export is written, :class:`RejectPolicyError` is raised when it holds no map or when
  more than ``max_reject_fraction`` of the cases were rejected (cases the adapter dropped at ingest,
  e.g. an EGD-CXR case whose image size is unknown, count as rejected cases);
* one build per output folder at a time (:func:`gazeprep.export.lock.writer_lock`), and replacing
  an export built with another recipe needs ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from tqdm import tqdm

from gazeprep._version import __version__
from gazeprep.errors import GazeprepError, StorageError
from gazeprep.pipeline.case import process_case
from gazeprep.pipeline.executor import fatal_error, make_executor
from gazeprep.recipes import Recipe

if TYPE_CHECKING:
    import numpy as np

    from gazeprep.anatomy.masks import AnatomyMasks
    from gazeprep.datasets.base import Release
    from gazeprep.export import PartStore

__all__ = [
    "BuildOptions",
    "BuildSpec",
    "BuildSummary",
    "RejectPolicyError",
    "build_heatmaps",
    "fatal_error",
    "make_state",
    "open_release",
]


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
    max_reject_fraction: float = 0.5  # fail (after writing) when more cases than this were rejected
    images_root: Path | None = None  # MIMIC-CXR(-JPG) root given to the adapter (EGD-CXR image sizes)
    definition: Path | None = None  # the YAML file of a declared dataset (``dataset`` is the name it gives)


@dataclass
class BuildSummary:
    """What a build wrote.

    Attributes
    ----------
    out:
        The export folder.
    n_cases:
        Rows of the ``cases`` table (live and discarded cases).
    n_heatmaps, n_rejects:
        Maps and ``rejects`` rows in the export.
    n_reused:
        Cases whose part from an earlier run was reused.
    n_live:
        Cases not discarded by the release (the ones rendered), plus the cases the adapter dropped
        at ingest (``n_dropped``).
    n_rejected_cases:
        Live cases that produced no map and have a ``rejects`` row saying why (a case without a map
        and without a reject, e.g. a report with no positive finding for a label-specific recipe, is
        not rejected), plus the cases dropped at ingest: the reject fraction counts them.
    n_dropped:
        Cases the adapter dropped while opening the release (a release ``rejects`` row with their
        case id, no ``cases`` row), e.g. EGD-CXR cases whose image size is unknown.
    max_reject_fraction:
        The policy limit the build ran with.
    problem:
        Why the build counts as failed despite writing the export (no map, too many rejects), else None.
    """

    out: Path
    n_cases: int
    n_heatmaps: int
    n_rejects: int
    n_reused: int
    extra: dict = field(default_factory=dict)
    n_live: int = 0
    n_rejected_cases: int = 0
    max_reject_fraction: float = 0.5
    problem: str | None = None
    n_dropped: int = 0

    @property
    def reject_fraction(self) -> float:
        """Rejected live cases / live cases (0 when there are none)."""
        return self.n_rejected_cases / self.n_live if self.n_live else 0.0


class RejectPolicyError(GazeprepError):
    """The export was written, but it holds no map or too many of its cases were rejected.

    ``summary`` is the :class:`BuildSummary` of the written export (its ``problem`` is the message).
    """

    def __init__(self, summary: BuildSummary):
        self.summary = summary
        super().__init__(summary.problem)

    def __reduce__(self) -> tuple[type[RejectPolicyError], tuple[BuildSummary]]:
        return (type(self), (self.summary,))


@dataclass
class _BuildState:
    release: Release
    recipe: Recipe
    recipe_hash: str
    dataset: str
    root: Path
    out: Path
    anatomy_dir: Path | None
    force: bool
    labeler_hash: str = ""  # the labeler profile's rule hash (part of the part store's key)

    @property
    def part_key(self) -> str:
        """What every part of this build must have been written with to be reused: the recipe hash
        and the labeler profile's rule hash (a rule edit recomputes every case on resume; the
        per-case input hash, recorded in the manifest, stays the same)."""
        return f"{self.recipe_hash}|labeler={self.labeler_hash}"

    def store(self) -> PartStore:
        """The resumable part store of this build (``<out>/.parts``), keyed by :attr:`part_key`."""
        from gazeprep.export import PartStore

        return PartStore(self.out, self.part_key, dtype=self.recipe.output.dtype)

    def put_rejected(
        self, case_id: str, input_hash: str, stage: str, reason: str, store: PartStore | None = None
    ) -> None:
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
        self.masks: AnatomyMasks | None = None  # AnatomyMasks provider for recipes with an anatomy filter
        a = self.recipe.anatomy
        if a is not None:
            from gazeprep.anatomy.masks import AnatomyMasks

            # SAMed masks: --anatomy-dir, else <out>/../anatomy; EGD-CXR masks: the release itself
            default = self.root if a.masks == "egd_masks" else (self.anatomy_dir or self.out.parent / "anatomy")
            self.masks = AnatomyMasks(a, default_dir=default)


def open_release(
    dataset: str,
    root: Path,
    recipe: Recipe,
    images_root: Path | str | None = None,
    definition: Path | str | None = None,
) -> Release:
    """Open the release of ``dataset`` at ``root`` as the build reads it (raw gaze samples only for
    recipes rendered from them; ``images_root``, the MIMIC-CXR root, only when given). A declared
    dataset's ``definition`` file is loaded (and registered) first, also in worker processes."""
    from gazeprep.datasets import get_adapter

    if definition is not None:
        from gazeprep.datasets.registry import declare

        declare(definition)

    kwargs = {"images_root": Path(images_root)} if images_root is not None else {}
    return get_adapter(dataset).open(Path(root), gaze_samples=recipe.render.source == "gaze_samples", **kwargs)


def make_state(spec: BuildSpec, release: Release | None = None) -> _BuildState:
    """Build state from a picklable :class:`BuildSpec` (driver, spawned workers and Ray tasks)."""
    recipe = Recipe.from_stored(spec.recipe_json)  # checked by the driver (its dataset may be declared)
    if release is None:
        release = open_release(spec.dataset, Path(spec.root), recipe, spec.images_root, spec.definition)
    return _BuildState(
        labeler_hash=spec.labeler_hash,
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
    images_root: str | None = None
    definition: str | None = None  # a declared dataset's YAML file (absolute), reloaded by each worker
    labeler_hash: str = ""  # the driver's labeler profile hash (profile_hash): every worker keys parts with it

    @classmethod
    def from_options(cls, opts: BuildOptions, *, labeler_hash: str) -> BuildSpec:
        return cls(
            dataset=opts.dataset,
            root=str(opts.root),
            out=str(opts.out),
            recipe_json=opts.recipe.model_dump_json(),
            anatomy_dir=str(opts.anatomy_dir) if opts.anatomy_dir else None,
            force=opts.force,
            images_root=str(opts.images_root) if opts.images_root is not None else None,
            definition=str(Path(opts.definition).absolute()) if opts.definition is not None else None,
            labeler_hash=labeler_hash,
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
    case_row: dict, data_tables: dict[str, pl.DataFrame], recipe_hash: str, masks: dict[str, np.ndarray] | None = None
) -> str:
    """Hash of everything a case's outputs depend on: package version, recipe, its metadata row,
    its input tables and (anatomy recipes) its masks. The labeler profile's rules are part of the
    part store's key (:attr:`_BuildState.part_key`), so a rule edit recomputes the cases too."""
    salt = f"{__version__}|{recipe_hash}|" + "|".join(f"{k}={case_row[k]}" for k in sorted(case_row))
    for target, m in sorted((masks or {}).items()):
        salt += f"|mask:{target}:{m.shape}:" + hashlib.sha256(m.tobytes()).hexdigest()
    return _hash_tables(data_tables, salt)


def _compute_case_safely(st: _BuildState, case_id: str, store: PartStore) -> tuple[int, bool]:
    """:func:`_compute_case` (returns the number of maps and whether the part was reused), turning an unexpected error of one case into a ``rejects`` row.

    Data problems are already rejects; this catches bugs or corrupt inputs that escaped the
    checks, so that one bad case never stops a build of thousands. The part written for such a case
    holds only the rejects row and is recomputed on the next run (its input hash is marked failed).
    I/O faults and ``MemoryError`` are not case problems: they propagate (see :func:`fatal_error`).
    """
    try:
        return _compute_case(st, case_id, store)
    except Exception as exc:  # noqa: BLE001 - the per-case safety net: recorded, not swallowed
        fatal = fatal_error(exc, case_id, st.out)
        if fatal is exc:
            raise
        if fatal is not None:
            raise fatal from exc
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        st.put_rejected(case_id, "failed", "build", f"case failed: {msg}", store)
        return 0, False


def _compute_case(st: _BuildState, case_id: str, store: PartStore) -> tuple[int, bool]:
    """Reuse the case's part when its input hash is unchanged (unless ``force``), else run
    :func:`~gazeprep.pipeline.case.process_case` and store its result; returns (maps, reused)."""
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
    result = process_case(
        release,
        case_id,
        st.recipe,
        dataset=st.dataset,
        data=data,
        masks=masks,
        mask_error=mask_error,
        input_hash=input_hash,
    )
    store.put(result)
    return len(result.heatmaps), False


_WORKER_STATE: dict = {}


def _state_for(spec: BuildSpec) -> _BuildState:
    """The build state of this process (the release is opened once per worker, keyed by the spec)."""
    st = _WORKER_STATE.get(spec)
    if st is None:
        st = make_state(spec)
        _WORKER_STATE.clear()
        _WORKER_STATE[spec] = st
    return st


def build_block(spec: BuildSpec, case_ids: list[str]) -> list[tuple[str, bool, int]]:
    """The executor's per-block function of a build: ``(case_id, reused, n_maps)`` per case (runs
    in the driver, a pool worker or a Ray task)."""
    st = _state_for(spec)
    store = st.store()
    out = []
    for cid in case_ids:
        n_maps, reused = _compute_case_safely(st, cid, store)
        out.append((cid, reused, n_maps))
    return out


def _check_replace(out: Path, recipe: Recipe, force: bool) -> None:
    """Refuse (without ``force``) to replace an export in ``out`` built with another recipe."""
    from gazeprep.export.layout import MANIFEST

    mpath = out / MANIFEST
    if force or not mpath.is_file():
        return
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        manifest = None
    if not isinstance(manifest, dict):
        raise GazeprepError(f"{out} holds an unreadable export ({mpath}); rerun with --force to replace it")
    if manifest.get("recipe_hash") == recipe.hash():
        return
    old = manifest.get("recipe") or {}
    name = old.get("name") if isinstance(old, dict) else None
    if name == recipe.name:
        what = f"recipe {name!r} with other settings (an override such as --size or --dtype, or an edited recipe)"
    elif name:
        what = f"recipe {name!r}, not {recipe.name!r}"
    else:
        what = f"no recipe (a {manifest.get('kind') or 'foreign'} export)"
    raise GazeprepError(
        f"{out} holds an export built with {what}; rerun with --force to replace it, or choose another --out"
    )


def _validate(opts: BuildOptions) -> None:
    recipe = opts.recipe
    if opts.definition is not None:
        from gazeprep.datasets.registry import declare

        declared = declare(opts.definition)  # registers the declared dataset (a bad file stops here, in one line)
        if declared.name != opts.dataset:
            raise GazeprepError(f"{declared.definition_path} declares dataset {declared.name!r}, not {opts.dataset!r}")
    from gazeprep.datasets.registry import recipe_fits

    if not recipe_fits(recipe.dataset, opts.dataset):
        raise GazeprepError(f"recipe {recipe.name!r} is for dataset {recipe.dataset!r}, not {opts.dataset!r}")
    if not opts.root.exists():
        raise GazeprepError(f"release folder not found: {opts.root}")
    if opts.out.exists() and not opts.out.is_dir():
        raise GazeprepError(f"{opts.out}: exists and is not a folder; --out names the export folder")
    f = opts.max_reject_fraction
    if not isinstance(f, (int, float)) or not 0.0 <= float(f) <= 1.0:
        raise GazeprepError(f"max_reject_fraction must be between 0 and 1, got {f!r}")
    if opts.executor not in ("local", "ray"):
        raise GazeprepError(f"unknown executor {opts.executor!r}; use local or ray")
    if opts.workers < 0:
        raise GazeprepError(f"workers must be 0 (all cores) or more, got {opts.workers}")


def _policy(summary: BuildSummary) -> str | None:
    """Why a written export counts as a failed build, or None."""
    table = summary.out / "tables" / "rejects.parquet"
    if summary.n_heatmaps == 0:
        if summary.n_live == 0:
            return f"no heatmaps: the release has no case to render (rejects: {table})"
        if summary.n_rejected_cases == summary.n_live:
            return f"no heatmaps: all {summary.n_live} cases were rejected (reasons: {table})"
        if summary.n_rejected_cases:
            return (
                f"no heatmaps: {summary.n_rejected_cases} of {summary.n_live} cases were rejected and the "
                f"others had no window to render (reasons: {table})"
            )
        return f"no heatmaps: none of the {summary.n_live} cases had a window to render with this recipe"
    if summary.reject_fraction > summary.max_reject_fraction:
        return (
            f"{summary.n_rejected_cases} of {summary.n_live} cases ({summary.reject_fraction:.0%}) were "
            f"rejected, more than --max-reject-fraction {summary.max_reject_fraction:g} allows; the export "
            f"was written, the reasons are in {table}"
        )
    return None


def build_heatmaps(opts: BuildOptions) -> BuildSummary:
    """Run the ETL for ``opts.dataset`` with ``opts.recipe`` and write the export to ``opts.out``.

    Returns a :class:`BuildSummary` (counts). Per-case data problems land in the ``rejects`` table.

    Raises
    ------
    GazeprepError
        Whole-release problems (missing root or metadata), invalid options, an export of another
        recipe in ``opts.out`` without ``opts.force``, running out of memory.
    LockedError
        Another process is writing to ``opts.out``.
    StorageError
        An I/O fault, naming the file; nothing is committed and the previous export stays.
    RejectPolicyError
        After writing the export: it holds no map, or more than ``opts.max_reject_fraction`` of the
        live cases were rejected (``exc.summary`` has the counts).
    KeyboardInterrupt
        Ctrl-C: workers stopped, finished cases kept for the rerun, nothing committed.
    """
    from gazeprep.export.lock import writer_lock

    _validate(opts)
    try:
        with writer_lock(opts.out):
            summary = _build_locked(opts)
    except OSError as exc:  # whatever was not named closer to the fault
        raise StorageError.from_os_error(exc, exc.filename if exc.filename is not None else opts.out) from exc
    summary.problem = _policy(summary)
    if summary.problem is not None:
        raise RejectPolicyError(summary)
    return summary


def _build_locked(opts: BuildOptions) -> BuildSummary:
    """The build, with the output folder's lock held: check the folder and the recipe, open the
    release, compute every live case into its part (:func:`_run_cases`), add the discarded cases'
    parts, write the export and count what it holds (:func:`_summary`)."""
    from gazeprep.export import finalize

    recipe = opts.recipe
    _check_replace(opts.out, recipe, opts.force)
    from gazeprep.text.profiles import profile_hash

    labeler_hash = profile_hash(recipe.profile)  # an unknown labeler profile stops here, in one line
    release = open_release(opts.dataset, opts.root, recipe, opts.images_root, opts.definition)
    cases = release.cases
    live = cases.filter(~pl.col("discarded").fill_null(False))["case_id"].sort().to_list()
    from gazeprep.heatmaps.checks import sigma_check  # once per build: sigma vs the images' short side

    _, sigma_msg = sigma_check(cases.filter(pl.col("case_id").is_in(live)), recipe)
    if sigma_msg:
        print(f"warning: {sigma_msg}", file=sys.stderr)
    spec = BuildSpec.from_options(opts, labeler_hash=labeler_hash)
    state = make_state(spec, release)  # the driver's; workers rebuild theirs from the spec
    reused, events = _run_cases(opts, spec, state, live)
    # discarded cases: a cases row and a rejects row, nothing to render
    store = state.store()
    discarded = cases.filter(pl.col("discarded").fill_null(False))["case_id"].sort().to_list()
    store.prune(live + discarded)  # parts of cases no longer in the release
    for cid in discarded:
        state.put_rejected(cid, "discarded", "ingest", "eye-tracking data discarded in the release", store)
    extra_rejects = list(release.rejects)
    path = finalize(
        opts.out,
        sorted(live + discarded),
        store=store,
        recipe=recipe,
        dtype=recipe.output.dtype,
        manifest_extra=_manifest_extra(opts, labeler_hash),
        extra_rejects=extra_rejects,
        progress=opts.progress,
    )
    dropped = _dropped_at_ingest(extra_rejects, set(cases["case_id"].to_list()))
    return _summary(path, opts, live, discarded, dropped, reused, events)


def _run_cases(opts: BuildOptions, spec: BuildSpec, state: _BuildState, live: list[str]) -> tuple[int, list[dict]]:
    """Map :func:`build_block` over the live cases with the chosen executor (one worker per core by
    default, never more than cases), storing each case's part; a case failing on every attempt gets
    a ``failed`` reject part (the rejects policy). Returns the number of reused parts and the
    executor's events."""
    workers = opts.workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(live) or 1))
    bar = tqdm(total=len(live), desc=f"{opts.dataset}: cases", unit="case", disable=not opts.progress, file=sys.stderr)
    executor = make_executor(opts.executor, workers=workers, ray_address=opts.ray_address, where=opts.out)
    _WORKER_STATE.clear()
    _WORKER_STATE[spec] = state  # blocks run in this process (one worker) reuse the open release
    try:
        run = executor.map_blocks(
            partial(build_block, spec),
            live,
            block_size=opts.ray_block_size if opts.executor == "ray" else None,
            progress=bar,
        )
        reused = sum(r for _, r, _ in run.results)
        for cid, reason in run.failed:  # the rejects policy: a case failing on every attempt is a reject
            state.put_rejected(cid, "failed", "build", f"case failed on every attempt: {reason}")
    finally:
        bar.close()
        _WORKER_STATE.clear()
    return reused, run.events


def _manifest_extra(opts: BuildOptions, labeler_hash: str) -> dict[str, object]:
    """The build's facts for the manifest's ``extra``: dataset, release folder name, command, labeler
    profile and its rule hash, and for a declared dataset its definition file's name and SHA-256."""
    manifest_extra: dict[str, object] = {
        "dataset": opts.dataset,
        "root_name": opts.root.resolve().name,
        "command": "build-heatmaps",
        "labeler_profile": opts.recipe.profile,
        "labeler_profile_hash": labeler_hash,
    }
    if opts.definition is not None:  # a declared dataset: which definition file, and its exact bytes
        d = Path(opts.definition)
        manifest_extra["dataset_definition"] = {"file": d.name, "sha256": hashlib.sha256(d.read_bytes()).hexdigest()}
    return manifest_extra


def _summary(
    path: Path,
    opts: BuildOptions,
    live: list[str],
    discarded: list[str],
    dropped: set[str],
    reused: int,
    events: list[dict],
) -> BuildSummary:
    """Count what the written export holds: a live case is rejected when it has no map and a
    ``rejects`` row; cases ``dropped`` at ingest count as live and rejected."""
    from gazeprep.export import load_export

    ex = load_export(path)
    index, rejects = ex.tables["heatmaps"], ex.tables["rejects"]
    with_maps = set(index["case_id"].to_list())
    rejected = set(rejects["case_id"].drop_nulls().to_list())
    n_rejected = sum(1 for c in live if c not in with_maps and c in rejected)
    return BuildSummary(
        out=path,
        n_cases=len(live) + len(discarded),
        n_heatmaps=index.height,
        n_rejects=rejects.height,
        n_reused=reused,
        extra={"executor_events": events},
        n_live=len(live) + len(dropped),
        n_rejected_cases=n_rejected + len(dropped),
        max_reject_fraction=float(opts.max_reject_fraction),
        n_dropped=len(dropped),
    )


def _dropped_at_ingest(release_rejects: list[dict], case_ids: set[str]) -> set[str]:
    """Cases the adapter dropped while opening the release (e.g. an EGD-CXR case whose image size
    is unknown): a release ``rejects`` row with their case id says the case was skipped
    (:data:`gazeprep.datasets.base.CASE_SKIPPED`) and the ``cases`` table does not hold them. Rows
    about data that is no case (an EGD-CXR calibration image's fixations) do not count."""
    from gazeprep.datasets.base import CASE_SKIPPED

    return {
        r["case_id"]
        for r in release_rejects
        if r.get("case_id") is not None and r["case_id"] not in case_ids and CASE_SKIPPED in (r.get("reason") or "")
    }
