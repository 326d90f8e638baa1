"""Running a gazeprep command for the benchmarks and measuring it (bench/run.py, bench/baseline.py)."""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
import time
from pathlib import Path


def gazeprep_command() -> list[str]:
    """``python -m gazeprep`` with this interpreter."""
    return [sys.executable, "-m", "gazeprep"]


def build_command(
    root: Path,
    out: Path,
    *,
    recipe: str = "reflacx-label-specific",
    size: str = "512",
    workers: int,
    executor: str = "local",
) -> list[str]:
    """The benchmarks' ``build-heatmaps`` of a REFLACX release ``root`` into ``out``."""
    return [
        *gazeprep_command(),
        "build-heatmaps",
        "--dataset",
        "reflacx",
        "--root",
        str(root),
        "--recipe",
        recipe,
        "--out",
        str(out),
        "--size",
        size,
        "--workers",
        str(workers),
        "--executor",
        executor,
    ]


def _tree_rss(proc: subprocess.Popen) -> int:
    import psutil

    try:
        p = psutil.Process(proc.pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict:
    """Run ``cmd`` (exits the benchmark with its stderr when it fails); return its wall time (s),
    CPU seconds of its process tree (``cpu_s``: the pool workers are reaped by the command, so they
    count; on a shared machine this moves far less than the wall time, so before/after comparisons
    use both), the peak summed RSS of the tree (bytes) and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": peak, "stdout": out.strip()}
