"""Running the per-case stage functions on Ray (``--executor ray``).

The algorithms are not duplicated: a Ray task processes a *block* of case ids by calling the same
function as the local process pool (:func:`gazeprep.pipeline.build._compute_case_safely`), which
writes the same resumable parts through the same atomic writer. The driver then assembles the
export exactly as a local build does, so a Ray build is byte-identical to a local one.

Fault tolerance:

* Ray itself restarts tasks whose worker process died (``max_retries``);
* a block that raises is resubmitted by the driver up to ``block_retries`` times, each failure
  recorded in :attr:`RayRun.events`;
* a block that keeps failing is split into single-case tasks; a case that still fails is returned
  in :attr:`RayRun.failed` and the driver writes its part with only a ``rejects`` row, so the rest
  of the build goes on;
* a block that raises a :class:`~gazeprep.errors.GazeprepError` (only fatal errors leave the
  per-case safety net: an I/O fault as :class:`~gazeprep.errors.StorageError`, running out of
  memory) or an I/O ``OSError`` (see :func:`~gazeprep.pipeline.build.fatal_error`) stops the run:
  the other tasks are cancelled and the error is raised in the driver, as is Ctrl-C;
* a rerun after a crash resumes from the parts already written (same input hashes as local).

Start a local cluster with ``ray start --head`` (or let gazeprep call ``ray.init()`` in-process when
no address is given); point at an existing one with ``--ray-address ray://host:10001`` or
``--ray-address auto``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gazeprep.errors import GazeprepError
from gazeprep.pipeline.build import BuildSpec, fatal_error, make_state

#: Test hook: when set to a file path that does not exist yet, the first block to run creates the
#: file and raises, so that tests can show a failed block is retried and recorded.
FAULT_ENV = "GAZEPREP_FAULT_ONCE"


@dataclass
class RayRun:
    """What happened on the cluster: per-case outcomes and recorded failures."""

    outcomes: list[tuple[str, bool, int]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case_id, reason) failing every attempt


_WORKER_STATE: dict = {}


def _state_for(spec: BuildSpec):
    """Open the release once per worker process and keep it (keyed by the spec)."""
    st = _WORKER_STATE.get(spec)
    if st is None:
        st = make_state(spec)
        _WORKER_STATE.clear()
        _WORKER_STATE[spec] = st
    return st


def process_block(spec: BuildSpec, case_ids: list[str]) -> list[tuple[str, bool, int]]:
    """Process one block of cases (runs inside a Ray task; also callable locally)."""
    from gazeprep.pipeline.build import _compute_case_safely

    marker = os.environ.get(FAULT_ENV)
    if marker:
        try:  # O_EXCL: exactly one block among concurrent workers creates the marker and fails
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            raise RuntimeError(f"injected fault for block starting at {case_ids[0]}")
    st = _state_for(spec)
    store = st.store()
    out = []
    for cid in case_ids:
        n_maps, reused = _compute_case_safely(st, cid, store)
        out.append((cid, reused, n_maps))
    return out


def _ray():
    try:
        import ray
    except ImportError:
        raise GazeprepError(
            "--executor ray needs the distributed extra: pip install 'gazeprep[distributed]'"
        ) from None
    return ray


def run_on_ray(
    spec: BuildSpec,
    case_ids: list[str],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    block_size: int = 32,
    block_retries: int = 2,
    progress=None,
) -> RayRun:
    """Process ``case_ids`` in blocks on a Ray cluster; returns outcomes and failure events.

    Parameters
    ----------
    address:
        Ray address (``auto``, ``ray://host:10001``); ``None`` starts Ray in this process
        (``num_cpus`` workers) unless one is already initialised.
    block_size:
        Cases per task. Larger blocks amortise task overhead; smaller ones balance better.
    block_retries:
        Resubmissions of a block that raised before it is split into single cases.
    progress:
        Optional tqdm bar updated per finished case.
    """
    ray = _ray()
    started_here = False
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": num_cpus}
        env = {FAULT_ENV: os.environ[FAULT_ENV]} if FAULT_ENV in os.environ else {}
        ray.init(
            **kwargs,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env} if env else None,
        )
        started_here = True
    remote = ray.remote(max_retries=3)(process_block)
    run = RayRun()
    pending: dict = {}
    finished = False
    try:
        blocks = [case_ids[i : i + block_size] for i in range(0, len(case_ids), block_size)]
        pending = {remote.remote(spec, b): (b, 0) for b in blocks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            block, attempt = pending.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a failed block is recorded and retried
                cause = getattr(exc, "cause", None) or exc  # RayTaskError wraps the worker's exception
                fatal = cause if isinstance(cause, GazeprepError) else fatal_error(cause, None, Path(spec.out))
                if fatal is not None:  # I/O fault or out of memory: stop, do not retry
                    raise fatal from None
                reason = f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
                run.events.append({"block_start": block[0], "size": len(block), "attempt": attempt, "error": reason})
                if attempt < block_retries:
                    pending[remote.remote(spec, block)] = (block, attempt + 1)
                elif len(block) > 1:
                    for cid in block:
                        pending[remote.remote(spec, [cid])] = ([cid], attempt + 1)
                else:
                    run.outcomes.append((block[0], False, 0))
                    run.failed.append((block[0], reason))  # the driver writes its rejects part
                    if progress is not None:
                        progress.update(1)
                continue
            run.outcomes.extend(results)
            if progress is not None:
                progress.update(len(results))
        finished = True
    finally:
        if not finished:  # fatal error or Ctrl-C: stop what still runs (on a shared cluster too)
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while already failing
                    pass
        if started_here:
            ray.shutdown()
    return run

