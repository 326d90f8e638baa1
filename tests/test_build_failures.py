"""Failure semantics of ``build-heatmaps`` (issue 11, items 3 and 4).

I/O faults stop the build naming the file and commit nothing; data problems stay rejects; Ctrl-C
stops the workers; a build with no map or too many rejects exits 1 after writing; one writer per
output folder; readers of a replaced export get :class:`ExportReplacedError`.

Library behaviour is tested in-process; exit codes, messages and signals through the CLI in
subprocesses (``python -m gazeprep``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gazeprep.errors import ExportReplacedError, GazeprepError, InputFormatError, LockedError, StorageError
from gazeprep.export import load_export
from gazeprep.export.lock import LOCK_NAME, holder_pid, writer_lock
from gazeprep.paths import sample_data_dir
from gazeprep.pipeline import build as build_mod
from gazeprep.pipeline.build import BuildOptions, RejectPolicyError, build_heatmaps, fatal_error
from gazeprep.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
SAMPLE = sample_data_dir() / "reflacx"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason="sample data not generated")


def _opts(out: Path, size: int = 32, **kw) -> BuildOptions:
    kw.setdefault("workers", 1)
    return BuildOptions(
        dataset="reflacx",
        root=kw.pop("root", SAMPLE),
        out=out,
        recipe=load_recipe(kw.pop("recipe", "reflacx-label-specific")).with_overrides(size=size),
        progress=False,
        **kw,
    )


def _digests(root: Path) -> dict[str, str]:
    return {
        f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file() and ".parts" not in f.parts
    }


def _env(tmp_path: Path, delay_s: float = 0.0, kill_case: str | None = None) -> dict[str, str]:
    """Environment of a CLI subprocess. Through a ``sitecustomize`` module (so that the pool's
    spawned workers get it too), ``delay_s`` > 0 slows every case down, so that a test can act
    mid-build, and ``kill_case`` makes the worker process that computes that case die (SIGKILL)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "GAZEPREP_TRACEBACK_DIR": str(tmp_path / "tb")}
    if delay_s or kill_case:
        hook = tmp_path / "hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(
            "import multiprocessing, os, signal, time\n"
            "import gazeprep.pipeline.build as b\n"
            "_real = b._compute_case\n"
            "def _hooked(st, case_id, store):\n"
            f"    time.sleep({delay_s})\n"
            f"    if case_id == {kill_case!r} and multiprocessing.parent_process() is not None:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return _real(st, case_id, store)\n"
            "b._compute_case = _hooked\n"
        )
        env["PYTHONPATH"] = f"{hook}{os.pathsep}{REPO}"
    return env


def _cli(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gazeprep", *args], capture_output=True, text=True, env=env, **kw)


# -- which errors are fatal -----------------------------------------------------------------------
def test_fatal_error_classifies_io_memory_and_data_problems(tmp_path):
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # write(): no file name of its own
    got = fatal_error(enospc, "c1", tmp_path)
    assert isinstance(got, StorageError) and got.path == str(tmp_path) and "No space left" in str(got)
    gone = FileNotFoundError(errno.ENOENT, "No such file or directory", "/rel/main_data/c1/fixations.csv")
    assert fatal_error(gone, "c1").path == "/rel/main_data/c1/fixations.csv"
    for code in (errno.EFBIG, errno.EIO, errno.EACCES):
        assert isinstance(fatal_error(OSError(code, os.strerror(code), "f"), "c1"), StorageError)
    mem = fatal_error(MemoryError("Unable to allocate 3.64 TiB"), "c1")
    assert isinstance(mem, GazeprepError) and "out of memory" in str(mem) and "3.64 TiB" in str(mem)
    # decoding failures of a damaged file carry no errno (Pillow, gzip): a data problem, a reject
    assert fatal_error(OSError("cannot identify image file 'mask.png'"), "c1") is None
    assert fatal_error(ValueError("bad value"), "c1") is None
    assert fatal_error(InputFormatError("f.csv", "bad", row=3), "c1") is None


def test_errors_cross_process_boundaries():
    """Workers hand their fatal errors to the driver by pickling them."""
    for exc in (
        StorageError("/o/.parts/c.part", "File too large"),
        InputFormatError("f.csv", "bad", row=4, column="x"),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.path == exc.path


# -- I/O faults: in-process fault injection --------------------------------------------------------
def _fail_writes(monkeypatch, where: str, code: int = errno.ENOSPC) -> list[Path]:
    """Every file write whose path contains ``where`` fails with ``code`` (as ``write()`` does:
    no file name on the OSError)."""
    import gazeprep._atomic as io_mod  # the one atomic writer (export._io re-exports it)

    real = io_mod._write_raw
    hits: list[Path] = []

    def faulty(path, data, fsync):
        if where in str(path):
            hits.append(Path(path))
            raise OSError(code, os.strerror(code))
        return real(path, data, fsync)

    monkeypatch.setattr(io_mod, "_write_raw", faulty)
    return hits


def test_disk_full_in_part_store_stops_the_build_and_keeps_the_previous_export(tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = build_heatmaps(_opts(out))
    before = _digests(out)
    assert first.n_heatmaps > 0
    hits = _fail_writes(monkeypatch, ".parts")
    with pytest.raises(StorageError) as ei:
        build_heatmaps(_opts(out, force=True))  # recompute every case: the first part write fails
    assert len(hits) == 1  # the build stopped at the first fault, it did not go on case after case
    msg = str(ei.value)
    assert msg.startswith(str(out / ".parts")) and msg.endswith(".part: No space left on device")
    assert ".tmp-" not in msg  # the part's name, not its temporary file's
    monkeypatch.undo()
    assert _digests(out) == before  # previous export untouched, still loadable, no rejects added
    ex = load_export(out)
    ex.verify()
    assert ex.tables["rejects"].height == first.n_rejects
    assert not (out / LOCK_NAME).exists()


def test_disk_full_while_staging_the_export_commits_nothing(tmp_path, monkeypatch):
    out = tmp_path / "fresh"
    _fail_writes(monkeypatch, ".staging", errno.EFBIG)
    with pytest.raises(StorageError, match=r"\.staging/.*: File too large"):
        build_heatmaps(_opts(out))
    monkeypatch.undo()
    assert not (out / "manifest.json").exists()
    with pytest.raises(GazeprepError, match="incomplete export|not a gazeprep export"):
        load_export(out)
    # the parts were kept: the rerun reuses every case and commits the same bytes as a clean build
    s = build_heatmaps(_opts(out))
    assert s.n_reused == s.n_live == 11
    clean = tmp_path / "clean"
    build_heatmaps(_opts(clean))
    assert _digests(out) == _digests(clean)


def test_memory_error_is_fatal_and_data_errors_stay_rejects(tmp_path, monkeypatch):
    real = build_mod._compute_case
    victim = "P102R260846"

    def broken(st, case_id, store, exc):
        if case_id == victim:
            raise exc
        return real(st, case_id, store)

    monkeypatch.setattr(
        build_mod, "_compute_case", lambda st, c, s: broken(st, c, s, MemoryError("Unable to allocate 3.64 TiB"))
    )
    with pytest.raises(GazeprepError, match=rf"case '{victim}': out of memory \(Unable to allocate 3.64 TiB\)"):
        build_heatmaps(_opts(tmp_path / "a"))
    assert not (tmp_path / "a" / "manifest.json").exists()
    # an OSError without errno (a damaged image Pillow cannot decode) is a problem of that case only
    monkeypatch.setattr(
        build_mod, "_compute_case", lambda st, c, s: broken(st, c, s, OSError("cannot identify image file"))
    )
    s = build_heatmaps(_opts(tmp_path / "b"))
    rej = load_export(s.out).tables["rejects"]
    row = rej.filter(rej["case_id"] == victim).row(0, named=True)
    assert row["stage"] == "build" and "cannot identify image file" in row["reason"]
    assert s.n_rejected_cases == 1


# -- I/O faults: a real file-size limit, through the CLI --------------------------------------------
def _limit_file_size(nbytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_file_size_limit_exits_1_naming_the_file(tmp_path, workers):
    """``ulimit -f 64``: Python ignores SIGXFSZ, so the write fails with EFBIG, in the spawned
    workers too; the build stops with one line naming the file and writes no manifest."""
    out = tmp_path / "out"
    proc = _cli(
        [
            "build-heatmaps",
            "--dataset",
            "reflacx",
            "--out",
            str(out),
            "--size",
            "256",
            "--recipe",
            "reflacx-official",
            "--dtype",
            "float32",
            "--workers",
            workers,
            "--quiet",
        ],
        _env(tmp_path),
        preexec_fn=_limit_file_size(64 * 1024),
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].startswith(f"error: {out}") and err[0].endswith(": File too large"), err
    assert ".part" in err[0]
    assert not (out / "manifest.json").exists()
    assert "wrote" not in proc.stdout


# -- Ctrl-C ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_workers_commits_nothing_and_resumes(tmp_path, workers):
    out = tmp_path / "out"
    args = [
        "build-heatmaps",
        "--dataset",
        "reflacx",
        "--out",
        str(out),
        "--size",
        "32",
        "--workers",
        workers,
        "--quiet",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gazeprep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path, delay_s=1.0),
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not list((out / ".parts").glob("*.part")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 30  # prompt: workers are terminated, not waited for
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout and "KeyboardInterrupt" not in stderr
    assert "interrupted" in stderr and "rerun the same command to resume" in stderr
    assert not (out / "manifest.json").exists()
    kept = list((out / ".parts").glob("*.part"))
    assert 1 <= len(kept) < 12
    if workers == "2":  # no worker process outlives the driver
        time.sleep(0.5)
        assert _session_alive(proc.pid) == []
    again = _cli(args, _env(tmp_path))
    assert again.returncode == 0, again.stderr
    reused = int(again.stdout.split(" rejects (")[1].split(" cases reused")[0])
    assert reused >= len(kept) - 1  # (a part of a discarded case is rewritten, not reused)


@pytest.mark.slow
def test_a_worker_killed_mid_build_stops_it_with_one_line(tmp_path):
    """A worker that dies (OOM killer, kill -9) must not hang the pool or lose its cases silently."""
    out = tmp_path / "out"
    args = ["build-heatmaps", "--dataset", "reflacx", "--out", str(out), "--size", "32", "--workers", "2", "--quiet"]
    proc = _cli(args, _env(tmp_path, kill_case="P201R336780"), timeout=300)
    assert proc.returncode == 1, proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert err == [
        "error: a worker process died (killed, or out of memory?); finished cases are kept: rerun "
        "the same command to resume, with fewer --workers if memory is short"
    ]
    assert "Traceback" not in proc.stderr
    assert not (out / "manifest.json").exists()
    again = _cli(args, _env(tmp_path))
    assert again.returncode == 0, again.stderr


def _session_alive(sid: int) -> list[str]:
    ps = subprocess.run(["ps", "-o", "pid=,stat=,args=", "--sid", str(sid)], capture_output=True, text=True)
    return [ln for ln in ps.stdout.splitlines() if ln.split()[1][0] != "Z"]  # zombies are dead, unreaped


@pytest.mark.slow
def test_kill_9_of_the_driver_then_rerun(tmp_path):
    """kill -9 of the build (its workers are orphaned): they exit too, nothing is committed, the lock
    file left behind does not block the rerun, which resumes and ends like a clean build."""
    out = tmp_path / "out"
    args = ["build-heatmaps", "--dataset", "reflacx", "--out", str(out), "--size", "32", "--workers", "2", "--quiet"]
    # no pipes: orphaned workers would hold them open
    proc = subprocess.Popen(
        [sys.executable, "-m", "gazeprep", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(tmp_path, delay_s=1.0),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list((out / ".parts").glob("*.part")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None
        proc.kill()  # the driver only, as the OOM killer or `kill -9 PID` would
        proc.wait()
        deadline = time.monotonic() + 30
        while _session_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _session_alive(proc.pid) == []
    finally:  # never leave this test's processes behind, even when it fails
        for line in _session_alive(proc.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    assert holder_pid(out) == proc.pid and not (out / "manifest.json").exists()
    again = _cli(args, _env(tmp_path))
    assert again.returncode == 0, again.stderr
    clean = tmp_path / "clean"
    assert _cli([*args[:4], str(clean), *args[5:]], _env(tmp_path)).returncode == 0
    assert _digests(out) == _digests(clean)


# -- the reject policy ----------------------------------------------------------------------------
def _break_cases(root: Path, n: int) -> list[str]:
    """Give ``n`` live cases a fixations file with a wrong header (a data problem: a reject)."""
    cases = sorted(p.name for p in (root / "main_data").iterdir() if p.is_dir() and p.name != "P102R429792")
    for c in cases[:n]:
        (root / "main_data" / c / "fixations.csv").write_text("garbage\n")
    return cases[:n]


def test_reject_fraction_above_the_limit_exits_1_after_writing(tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(SAMPLE, root)
    broken = _break_cases(root, 6)  # 6 of the 11 live cases (P102R429792 is discarded)
    with pytest.raises(
        RejectPolicyError, match=r"6 of 11 cases \(55%\) were rejected, more than --max-reject-fraction 0.5"
    ) as ei:
        build_heatmaps(_opts(tmp_path / "a", root=root))
    s = ei.value.summary
    assert (s.n_live, s.n_rejected_cases) == (11, 6) and s.reject_fraction == pytest.approx(6 / 11)
    ex = load_export(tmp_path / "a")  # written all the same
    assert set(broken).isdisjoint(ex.tables["heatmaps"]["case_id"].to_list())
    assert ex.tables["heatmaps"].height == s.n_heatmaps > 0
    # the limit is inclusive: 6/11 = 0.545 passes a limit of 0.55 and fails one of 0.54
    assert build_heatmaps(_opts(tmp_path / "b", root=root, max_reject_fraction=0.55)).n_rejected_cases == 6
    with pytest.raises(RejectPolicyError):
        build_heatmaps(_opts(tmp_path / "c", root=root, max_reject_fraction=0.54))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(GazeprepError, match="max_reject_fraction must be between 0 and 1"):
            build_heatmaps(_opts(tmp_path / "d", root=root, max_reject_fraction=bad))


def test_zero_maps_exits_1_with_the_reasons(tmp_path, capsys):
    """reflacx-anatomy without masks: every case is rejected, the export says why."""
    from gazeprep.cli import run

    out = tmp_path / "anat"
    code = run(
        [
            "build-heatmaps",
            "--dataset",
            "reflacx",
            "--recipe",
            "reflacx-anatomy",
            "--out",
            str(out),
            "--size",
            "32",
            "--workers",
            "1",
            "--quiet",
            "--anatomy-dir",
            str(tmp_path / "no-masks"),
        ]
    )
    cap = capsys.readouterr()
    assert code == 1
    errors = [ln for ln in cap.err.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: no heatmaps: all 11 cases were rejected (reasons: {out / 'tables' / 'rejects.parquet'})"]
    lines = cap.out.splitlines()
    assert lines[0] == f"wrote {out}: 12 cases, 0 heatmaps, 12 rejects (0 cases reused from a previous run)"
    assert "rejected cases: 11 of 11 (100%; limit --max-reject-fraction 0.5)" in lines
    i = lines.index("rejects by reason (12 rows in 2 groups):")
    assert lines[i + 1].split()[:4] == ["11", "rows", "11", "cases"] and "[anatomy]" in lines[i + 1]
    assert lines[i + 2].split()[:4] == ["1", "rows", "1", "cases"] and "discarded" in lines[i + 2]
    j = lines.index("first rejects:")
    assert len([x for x in lines[j + 1 :] if x.startswith("  ")]) == 5
    assert f"full rejects table: {out / 'tables' / 'rejects.parquet'}" in lines
    assert lines[-1] == f"next: gazeprep rejects {out}"
    assert load_export(out).tables["rejects"].height == 12


def test_summary_lists_file_and_row_of_rejects(tmp_path, capsys):
    from gazeprep.cli import run

    egd = sample_data_dir() / "egd-cxr"
    out = tmp_path / "egd"
    assert (
        run(
            [
                "build-heatmaps",
                "--dataset",
                "egd-cxr",
                "--root",
                str(egd),
                "--out",
                str(out),
                "--size",
                "32",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    rej = load_export(out).tables["rejects"].sort("case_id")
    first = rej.row(0, named=True)
    assert first["file"] and first["row"]
    assert f"  {first['case_id']} [{first['stage']}] {first['file']}, row {first['row']}: {first['reason']}" in lines
    assert lines[-1] == f"next: gazeprep info {out}"


# -- one writer at a time -------------------------------------------------------------------------
_HOLD = """
import sys, time
from gazeprep.export.lock import writer_lock
with writer_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _holder(out: Path, tmp_path: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_writer_fails_at_once_naming_the_pid_and_kill_9_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "out"
    holder = _holder(out, tmp_path)
    try:
        assert holder_pid(out) == holder.pid
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=rf"locked by another gazeprep process .*\(pid {holder.pid}\)"):
            build_heatmaps(_opts(out))
        assert time.monotonic() - t0 < 5  # at once, not after the release was read
        with pytest.raises(LockedError):
            with writer_lock(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists() and holder_pid(out) == holder.pid  # the dead holder's file stays
    s = build_heatmaps(_opts(out))  # ... and does not block
    assert s.n_heatmaps > 0
    assert not (out / LOCK_NAME).exists()  # a clean run removes its lock file


def test_lock_is_reentrant_within_a_process(tmp_path):
    with writer_lock(tmp_path / "o") as path:
        assert holder_pid(tmp_path / "o") == os.getpid()
        with writer_lock(tmp_path / "o"):
            pass
        assert path.exists()  # still held after the inner release
    assert not path.exists()


@pytest.mark.slow
def test_two_concurrent_cli_builds(tmp_path):
    out = tmp_path / "out"
    args = ["build-heatmaps", "--dataset", "reflacx", "--out", str(out), "--size", "32", "--workers", "1", "--quiet"]
    env = _env(tmp_path, delay_s=0.5)  # >= 6 s of cases: the two runs overlap
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gazeprep", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(r[3] for r in results)
    assert codes == [0, 1], results
    winner = next(r for r in results if r[3] == 0)
    loser = next(r for r in results if r[3] == 1)
    err = [ln for ln in loser[2].splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].startswith(f"error: {out} is locked") and f"pid {winner[0]}" in err[0], err
    assert "Traceback" not in loser[2]
    ex = load_export(out)
    ex.verify()  # every file the manifest lists is there, with its checksum
    assert f" {ex.tables['heatmaps'].height} heatmaps, " in winner[1]


def test_replacing_another_recipes_export_needs_force(tmp_path):
    out = tmp_path / "out"
    build_heatmaps(_opts(out, size=32))
    before = _digests(out)
    with pytest.raises(GazeprepError, match=r"built with recipe 'reflacx-label-specific' with other settings.*--force"):
        build_heatmaps(_opts(out, size=48))
    with pytest.raises(
        GazeprepError, match=r"built with recipe 'reflacx-label-specific', not 'reflacx-official'.*--force"
    ):
        build_heatmaps(_opts(out, recipe="reflacx-official"))
    assert _digests(out) == before
    build_heatmaps(_opts(out, size=32))  # the same recipe: a rebuild, no --force needed
    assert _digests(out) == before
    s = build_heatmaps(_opts(out, size=48, force=True))
    assert load_export(out).manifest["recipe"]["output"]["size"] == 48 and s.n_heatmaps > 0


# -- readers of a replaced export ----------------------------------------------------------------
def test_reader_of_a_replaced_export_gets_export_replaced_error(tmp_path):
    out = tmp_path / "out"
    build_heatmaps(_opts(out, size=32))
    ex = load_export(out)
    key = ex.keys()[0]
    m32 = ex.heatmap(*key)
    pickled = pickle.dumps(ex)
    build_heatmaps(_opts(out, size=32, force=True))  # recomputed, byte-identical: not a replacement
    assert np.array_equal(ex.heatmap(*key), m32)
    build_heatmaps(_opts(out, size=48, force=True))
    with pytest.raises(ExportReplacedError, match="replaced by another build since it was opened"):
        ex.heatmap(*key)
    with pytest.raises(ExportReplacedError):
        ex.tables["fixations"]  # not read yet: read now, from the new build
    with pytest.raises(ExportReplacedError):
        pickle.loads(pickled).heatmap(*key)  # a DataLoader worker's copy notices too
    assert load_export(out).heatmap(*key).shape == (48, 48)  # opening again gives the new maps


def test_reader_racing_a_rebuild_sees_old_maps_or_export_replaced_error(tmp_path):
    """A reader thread loops over the maps while another build replaces the export: each read gives
    the map as it was at opening, or ExportReplacedError; never a zarr error or a map of the new build."""
    import threading

    out = tmp_path / "out"
    build_heatmaps(_opts(out, size=32))
    ex = load_export(out)
    keys = ex.keys()
    old = {k: ex.heatmap(*k) for k in keys}
    outcomes: dict[str, int] = {"old": 0, "replaced": 0}
    other: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        i = 0
        while not stop.is_set():
            k = keys[i % len(keys)]
            i += 1
            try:
                got = ex.heatmap(*k)
            except ExportReplacedError:
                outcomes["replaced"] += 1
                continue
            except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
                other.append(exc)
                return
            if got.shape != old[k].shape or not np.array_equal(got, old[k]):
                other.append(AssertionError(f"read a map of the new build for {k}"))
                return
            outcomes["old"] += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        build_heatmaps(_opts(out, size=48, force=True))
        time.sleep(0.2)
    finally:
        stop.set()
        t.join()
    assert other == []
    assert outcomes["old"] > 0 and outcomes["replaced"] > 0


def test_reader_of_a_removed_or_half_replaced_export(tmp_path):
    out = tmp_path / "out"
    build_heatmaps(_opts(out))
    ex = load_export(out)
    key = ex.keys()[0]
    (out / "manifest.json").unlink()  # what a rebuild's commit does first
    with pytest.raises(ExportReplacedError, match="removed or is being rebuilt"):
        ex.heatmap(*key)
    shutil.rmtree(out)
    with pytest.raises(ExportReplacedError):
        ex.heatmap(*key)


# -- command-line usage errors ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--dtype", "float64"], "--dtype"),
        (["--workers", "-1"], "--workers"),
        (["--executor", "spark"], "--executor"),
        (["--size", "0"], "--size"),
        (["--size", "big"], "--size"),
        (["--max-reject-fraction", "1.5"], "--max-reject-fraction"),
        (["--max-reject-fraction", "-0.1"], "--max-reject-fraction"),
        (["--out", "FILE"], "--out"),
        (["--dataset", "reflacks"], "known datasets: egd-cxr, mimic-cxr, reflacx"),
        (["--images", "/a", "--mimic-root", "/b"], "--mimic-root"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, extra, needle):
    from gazeprep.cli import run

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    extra = [str(a_file) if x == "FILE" else x for x in extra]
    args = ["build-heatmaps", "--dataset", "reflacx", "--out", str(tmp_path / "o"), *extra]
    code = run(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_images_root_reaches_the_adapter_in_workers(tmp_path, monkeypatch):
    """--images (and its old spelling --mimic-root) is carried in the build spec that spawned
    workers and Ray tasks reopen the release from."""
    from gazeprep.pipeline.build import BuildSpec, open_release

    opts = _opts(tmp_path / "o", images_root=tmp_path / "mimic")
    spec = BuildSpec.from_options(opts, labeler_hash="h")
    assert spec.images_root == str(tmp_path / "mimic") and pickle.loads(pickle.dumps(spec)) == spec
    seen = {}

    class Adapter:
        def open(self, root, **kw):
            seen.update(kw)
            return "release"

    import gazeprep.datasets as ds

    monkeypatch.setattr(ds, "get_adapter", lambda name: Adapter())
    assert open_release("reflacx", SAMPLE, opts.recipe, tmp_path / "mimic") == "release"
    assert seen == {"gaze_samples": False, "images_root": tmp_path / "mimic"}
    seen.clear()
    open_release("reflacx", SAMPLE, opts.recipe, None)
    assert seen == {"gaze_samples": False}


def test_manifest_written_by_a_normal_build_lists_only_existing_files(tmp_path):
    s = build_heatmaps(_opts(tmp_path / "o", workers=2))
    m = json.loads((s.out / "manifest.json").read_text())
    assert all((s.out / rel).is_file() for rel in m["files"])
    assert not (s.out / LOCK_NAME).exists()
