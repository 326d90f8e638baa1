"""One executor: map a function over blocks of items, in this process, on a local pool of spawned
processes, or on Ray (``--executor local|ray``).

Every command that walks cases (``build-heatmaps``, ``sweep-windows``) hands its per-block function
to :meth:`Executor.map_blocks`. The function takes a list of items (case ids) and returns one result
per item; it must be picklable by reference (a module-level function, or a
:func:`functools.partial` of one with picklable arguments), because workers import it.

Fault semantics, the same for every command:

* the function is expected to turn a data problem of one item into a result (the per-case safety
  net, :func:`gazeprep.pipeline.case.fatal_error`); what still escapes it is classified here:
  an I/O fault (``OSError`` with an errno, :class:`~gazeprep.errors.StorageError`), running out of
  memory or any :class:`~gazeprep.errors.GazeprepError` is **fatal**: every worker stops at once and
  the error is raised in the driver;
* locally (pool or in-process) any other exception is fatal too (a bug of the command itself);
  on Ray a failing block is resubmitted up to ``block_retries`` times, then split into single
  items; an item that fails on every attempt is returned in :attr:`BlockRun.failed` (the rejects
  policy: the caller records it as a rejected case and goes on), each failure in
  :attr:`BlockRun.events`;
* Ctrl-C stops the workers at once and propagates; a pool worker that died (killed, out of memory)
  stops the run with one line; a worker whose driver was killed exits on its own.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from gazeprep.errors import GazeprepError, StorageError

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

T = TypeVar("T")
R = TypeVar("R")

#: Test hook: when set to a file path that does not exist yet, the first block to run creates the
#: file and raises, so that tests can show a failed block is retried and recorded.
FAULT_ENV = "GAZEPREP_FAULT_ONCE"

#: What a dead pool worker means for a resumable build (the default message of :class:`LocalExecutor`).
RESUME_HINT = "finished cases are kept: rerun the same command to resume, with fewer --workers if memory is short"


def fatal_error(
    exc: BaseException, case_id: str | None = None, where: Path | str | None = None
) -> GazeprepError | None:
    """The error that must stop the whole run for ``exc``, or None when ``exc`` is a problem of
    one case (a reject).

    Fatal: :class:`StorageError`; any ``OSError`` carrying an errno (disk full, file-size limit,
    permission, device error, a file that vanished), as a :class:`StorageError` naming its file
    (else ``where``); ``MemoryError``. An ``OSError`` without errno is a decoding failure of a
    damaged file (Pillow, gzip), a data problem.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        return StorageError.from_os_error(
            exc, exc.filename if exc.filename is not None else (where or "<unknown file>")
        )
    if isinstance(exc, MemoryError):
        detail = str(exc) or "MemoryError"
        case = f"case {case_id!r}: " if case_id else ""
        return GazeprepError(
            f"{case}out of memory ({detail}); the recipe's output size or the number of workers is "
            "too large for this machine"
        )
    return None


@dataclass
class BlockRun(Generic[T, R]):
    """What :meth:`Executor.map_blocks` returns.

    Attributes
    ----------
    results:
        One result per item that finished, in the order of the items given.
    events:
        Failures that were retried (Ray): ``{"block_start", "size", "attempt", "error"}``.
    failed:
        ``(item, reason)`` of items that failed on every attempt (Ray only; locally a failure is fatal).
    """

    results: list[R] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    failed: list[tuple[T, str]] = field(default_factory=list)


class Progress(Protocol):
    """The part of a tqdm bar the executors use."""

    def update(self, n: float = 1) -> object: ...


class Executor(Protocol):
    """Maps a per-block function over items (see the module docstring for the fault semantics)."""

    def map_blocks(
        self,
        fn: Callable[[list[T]], list[R]],
        items: Sequence[T],
        *,
        block_size: int | None = None,
        progress: Progress | None = None,
    ) -> BlockRun[T, R]:
        """Run ``fn`` on blocks of ``block_size`` consecutive items (None: the executor's choice);
        ``progress`` is advanced by the number of items of every finished block."""
        ...


def _blocks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _check_fault_hook(block: list) -> None:
    """The :data:`FAULT_ENV` test hook: exactly one block (among concurrent workers) fails once."""
    marker = os.environ.get(FAULT_ENV)
    if not marker:
        return
    try:  # O_EXCL: exactly one block creates the marker and fails
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    raise RuntimeError(f"injected fault for block starting at {block[0]}")


def run_block(fn: Callable[[list[T]], list[R]], block: list[T]) -> list[R]:
    """One block in a worker (pool process or Ray task): the fault hook, then ``fn(block)``."""
    _check_fault_hook(block)
    out = fn(block)
    if len(out) != len(block):
        raise GazeprepError(f"internal error: a block of {len(block)} items gave {len(out)} results")
    return out


# ------------------------------------------------------------------------------ local process pool
def init_worker() -> None:
    """Pool worker initializer. Ctrl-C is the driver's to handle (it stops the workers), so the
    worker ignores SIGINT; and a worker whose driver died (``kill -9``) exits instead of waiting
    for work forever (a part it was writing is left as a temporary file, deleted by the next run)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = mp.parent_process()
    if parent is None:  # pragma: no cover - always set in a spawned worker
        return

    def watch() -> None:
        from multiprocessing.connection import wait

        wait([parent.sentinel])  # readable (EOF) once the driver is gone
        os._exit(1)

    threading.Thread(target=watch, name="gazeprep-driver-watch", daemon=True).start()


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT for the duration of the block, then restore the previous handler. Used while
    worker processes start, so that they inherit the ignored disposition (Python keeps an inherited
    SIG_IGN) and a Ctrl-C during their start-up prints no traceback in them; and by the CLI while it
    reports an interruption. Only in the main thread (elsewhere signal handlers cannot be changed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a process pool now: drop queued blocks and terminate the workers (a part being written
    is left as a temporary file, which the next run deletes)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public API before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)


@dataclass
class LocalExecutor:
    """``workers`` spawned processes (1: in this process, no pool).

    spawn, not fork: polars' thread pool does not survive a fork safely, so each worker imports
    ``fn``'s module and opens what it needs itself (keep it cached per process). ``died_hint`` ends
    the one-line error raised when a worker process dies.
    """

    workers: int = 1
    died_hint: str = RESUME_HINT

    def default_block_size(self, n_items: int) -> int:
        """At least 4 blocks per worker, at most 16 items per block (1 when running in-process)."""
        if self.workers <= 1:
            return 1
        return max(1, min(16, n_items // (self.workers * 4) or 1))

    def map_blocks(
        self,
        fn: Callable[[list[T]], list[R]],
        items: Sequence[T],
        *,
        block_size: int | None = None,
        progress: Progress | None = None,
    ) -> BlockRun[T, R]:
        """See :meth:`Executor.map_blocks`."""
        blocks = _blocks(items, block_size or self.default_block_size(len(items)))
        per_block: dict[int, list[R]] = {}
        if self.workers <= 1:
            for i, b in enumerate(blocks):
                per_block[i] = run_block(fn, b)
                if progress is not None:
                    progress.update(len(b))
        else:
            self._run_pool(fn, blocks, per_block, progress)
        return BlockRun(results=[r for i in sorted(per_block) for r in per_block[i]])

    def _run_pool(
        self,
        fn: Callable[[list[T]], list[R]],
        blocks: list[list[T]],
        per_block: dict[int, list[R]],
        progress: Progress | None,
    ) -> None:
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=init_worker)
        finished = False
        try:
            with sigint_ignored():
                pending = {pool.submit(run_block, fn, b): i for i, b in enumerate(blocks)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    per_block[i] = fut.result()  # re-raises a worker's fatal error
                    if progress is not None:
                        progress.update(len(blocks[i]))
            finished = True
        except BrokenProcessPool:
            raise GazeprepError(f"a worker process died (killed, or out of memory?); {self.died_hint}") from None
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:
                stop_pool(pool)


# ------------------------------------------------------------------------------------------- Ray
def _ray() -> ModuleType:
    from gazeprep._optional import require

    return require("ray", "distributed", "--executor ray")


@dataclass
class RayExecutor:
    """Blocks as Ray tasks (``--executor ray``), with the same per-block function as the pool.

    ``address``: ``auto``, ``ray://host:10001``, or None to start Ray in this process with
    ``num_cpus`` workers (unless one is already initialised; Ray started here is shut down at the
    end). Ray restarts a task whose worker process died (``max_retries``); a block that raised is
    resubmitted ``block_retries`` times, then split into single items (see the module docstring).
    ``where`` names the file of an I/O fault that carries none. ``task_options`` are Ray resource
    options of every task (e.g. ``{"num_gpus": 1}``: ``anatomy predict`` on a GPU cluster).
    """

    address: str | None = None
    num_cpus: int | None = None
    block_retries: int = 2
    max_retries: int = 3
    where: Path | str | None = None
    default_block: int = 32
    task_options: dict[str, float] = field(default_factory=dict)

    def map_blocks(
        self,
        fn: Callable[[list[T]], list[R]],
        items: Sequence[T],
        *,
        block_size: int | None = None,
        progress: Progress | None = None,
    ) -> BlockRun[T, R]:
        """See :meth:`Executor.map_blocks`."""
        ray = _ray()
        started_here = False
        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {"num_cpus": self.num_cpus}
            env = {FAULT_ENV: os.environ[FAULT_ENV]} if FAULT_ENV in os.environ else {}
            ray.init(
                **kwargs, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env} if env else None
            )
            started_here = True
        remote = ray.remote(max_retries=self.max_retries, **self.task_options)(run_block)
        run: BlockRun[T, R] = BlockRun()
        per_item: dict[int, R] = {}  # item position -> result
        pending: dict = {}
        finished = False
        try:
            size = block_size or self.default_block
            starts = range(0, len(items), size)
            pending = {remote.remote(fn, list(items[i : i + size])): (i, list(items[i : i + size]), 0) for i in starts}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                first, block, attempt = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as exc:  # a failed block: fatal, retried or rejected
                    cause = getattr(exc, "cause", None) or exc  # RayTaskError wraps the worker's exception
                    fatal = cause if isinstance(cause, GazeprepError) else fatal_error(cause, None, self.where)
                    if fatal is not None:  # I/O fault or out of memory: stop, do not retry
                        raise fatal from None
                    reason = f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
                    run.events.append(
                        {"block_start": block[0], "size": len(block), "attempt": attempt, "error": reason}
                    )
                    if attempt < self.block_retries:
                        pending[remote.remote(fn, block)] = (first, block, attempt + 1)
                    elif len(block) > 1:
                        for k, item in enumerate(block):
                            pending[remote.remote(fn, [item])] = (first + k, [item], attempt + 1)
                    else:
                        run.failed.append((block[0], reason))  # the caller's rejects policy
                        if progress is not None:
                            progress.update(1)
                    continue
                for k, r in enumerate(results):
                    per_item[first + k] = r
                if progress is not None:
                    progress.update(len(results))
            finished = True
        finally:
            if not finished:  # fatal error or Ctrl-C: stop what still runs (on a shared cluster too)
                for ref in pending:
                    try:
                        ray.cancel(ref, force=True)
                    except (ray.exceptions.RayError, ValueError, TypeError):  # best effort while already failing
                        pass
            if started_here:
                ray.shutdown()
        run.results = [per_item[i] for i in sorted(per_item)]
        return run


def make_executor(
    kind: str,
    *,
    workers: int,
    ray_address: str | None = None,
    where: Path | str | None = None,
    died_hint: str = RESUME_HINT,
) -> Executor:
    """The executor named ``kind`` (``local`` or ``ray``) with ``workers`` processes (Ray: CPUs of
    the in-process cluster started when no ``ray_address`` is given). ``where`` names the file of an
    I/O fault that carries none (the output folder)."""
    if kind == "local":
        return LocalExecutor(workers=workers, died_hint=died_hint)
    if kind == "ray":
        return RayExecutor(address=ray_address, num_cpus=workers, where=where)
    raise GazeprepError(f"unknown executor {kind!r}; use local or ray")
