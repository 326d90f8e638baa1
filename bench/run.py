"""``make bench``: the performance figures of the README, measured in one run.

1. Renderer vs the naive reference (one full-resolution density per fixation, as 004's code does)
   on the same inputs: speed ratio and max |difference| relative to the peak (bench/render.py).
2. Labeler: 10,000 reports on one core (bench/labeler.py).
3. Training input: ``GazeDataset`` against the naive ``.npy`` + PIL loader on a 300-case export at
   512, same batch and workers (``input_throughput_ratio``; bench/input.py).
4. End-to-end ``build-heatmaps --recipe reflacx-label-specific`` on a 3000-case synthetic REFLACX
   release at 512 (wall time, cases/s, peak memory of the process tree) and, on a subset, at native
   size (native maps are ~30 MB each in float32, so the full native export would not fit this disk).
5. The same 3000-case build against the gazeprep it was refactored from (issue 13's baseline), both
   taken alternately a few times: median wall and CPU ratios (bench/baseline.py).

Every figure is a ratio or a rate measured here in the same process; nothing is a timed unit test.
Environment variables: ``BENCH_CASES`` (default 3000), ``BENCH_NATIVE_CASES`` (default 100),
``BENCH_WORKERS`` (default: all cores), ``BENCH_BASELINE_REPS`` (default 3; 0 skips the A/B against
the baseline commit, bench/baseline.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.measure import build_command, gazeprep_command, run_measured

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
OUT = HERE / "_out"


def ensure_release(cases: int) -> Path:
    root = DATA / f"reflacx-{cases}"
    marker = root / ".complete"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        synth = ["synth", "--dataset", "reflacx", "--out", str(root), "--cases", str(cases), "--seed", "11"]
        subprocess.run([*gazeprep_command(), *synth], check=True)
        print(f"generated {cases}-case synthetic REFLACX release in {time.perf_counter() - t0:.1f} s")
        marker.write_text("ok")
    return root


def bench_build(root: Path, size: str, workers: int, tag: str, executor: str = "local") -> dict:
    out = OUT / tag
    shutil.rmtree(out, ignore_errors=True)
    res = run_measured(build_command(root, out, size=size, workers=workers, executor=executor))
    from gazeprep import load_export

    ex = load_export(out)
    n_cases = ex.tables["cases"].height
    res.update(
        n_cases=n_cases,
        n_heatmaps=ex.tables["heatmaps"].height,
        cases_per_s=n_cases / res["wall_s"],
        export_bytes=sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
    )
    return res


def _tree_digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.is_file() and not rel.startswith((".parts", ".staging", ".trash")):
            h.update(rel.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def main() -> None:
    cases = int(os.environ.get("BENCH_CASES", "3000"))
    native_cases = int(os.environ.get("BENCH_NATIVE_CASES", "100"))
    workers = int(os.environ.get("BENCH_WORKERS", str(os.cpu_count() or 1)))
    report: dict = {"cores": os.cpu_count(), "workers": workers}

    print("== renderer vs naive reference ==")
    from bench import render as render_bench

    report["renderer"] = render_bench.run()
    print(json.dumps(report["renderer"], indent=2))
    print("== renderer border rules (drop / reflect / reflect101, scipy and OpenCV kernels) ==")
    report["renderer_border"] = render_bench.run_border()
    print(json.dumps(report["renderer_border"], indent=2))

    print("== labeler ==")
    from bench import labeler as labeler_bench

    report["labeler"] = labeler_bench.run()
    print(json.dumps(report["labeler"], indent=2))
    report["labeler_lanfredi2023"] = labeler_bench.run(profile="lanfredi2023")
    print(json.dumps(report["labeler_lanfredi2023"], indent=2))

    print(f"== build-heatmaps reflacx-label-specific, {cases} cases ==")
    root = ensure_release(cases)
    r512 = bench_build(root, "512", workers, "size512")
    r512.pop("stdout")
    report["build_512"] = r512
    print(json.dumps(r512, indent=2))

    reps = int(os.environ.get("BENCH_BASELINE_REPS", "3"))
    if reps > 0 and cases >= 3000:
        from bench import baseline

        print(f"== same build against gazeprep {baseline.BASELINE_COMMIT}, alternated {reps}x (medians) ==")
        ab = baseline.run(root, DATA, OUT, workers, reps)
        if "baseline" in ab:  # the shipped recipe (lanfredi2023 labeler, more maps) against the same baseline
            ab["shipped_recipe_wall_ratio"] = r512["wall_s"] / ab["baseline"]["wall_s"]
        report["build_512_vs_baseline"] = ab
        print(json.dumps({k: v for k, v in report["build_512_vs_baseline"].items() if k != "runs"}, indent=2))

    try:
        import ray  # noqa: F401

        print(f"== same build on Ray (local cluster, {workers} CPUs) ==")
        rray = bench_build(root, "512", workers, "size512_ray", executor="ray")
        rray.pop("stdout")
        rray["overhead_vs_local"] = rray["wall_s"] / r512["wall_s"]
        same = _tree_digest(OUT / "size512") == _tree_digest(OUT / "size512_ray")
        rray["byte_identical_to_local"] = same
        report["build_512_ray"] = rray
        print(json.dumps(rray, indent=2))
    except ImportError:
        print("ray not installed (pip install 'gazeprep[distributed]'): Ray overhead not measured")

    sub = DATA / f"reflacx-{native_cases}"
    if not (sub / ".complete").exists():
        ensure_release(native_cases)
    rn = bench_build(sub, "native", workers, "native")
    rn.pop("stdout")
    report["build_native_subset"] = rn
    print(json.dumps(rn, indent=2))

    print("== training input: GazeDataset vs the naive .npy + PIL loader (300 cases at 512) ==")
    from bench import input as input_bench

    report["input"] = input_bench.run()
    report["input_throughput_ratio"] = report["input"]["input_throughput_ratio"]
    print(json.dumps(report["input"], indent=2))

    native = report["renderer"]["sizes"]["native"]
    ok_ratio = native["ratio"] >= 100
    ok_err = max(s["max_abs_diff_rel_peak"] for s in report["renderer"]["sizes"].values()) < 1e-5
    ok_build = r512["wall_s"] < 60 if cases >= 3000 else None
    if "build_512_ray" in report:
        report["targets_ray_overhead_under_1.3x"] = report["build_512_ray"]["overhead_vs_local"] < 1.3
    report["targets"] = {
        "renderer_100x_native": ok_ratio,
        "renderer_error_below_1e-5": ok_err,
        "renderer_border_slowdown_under_10pct": max(
            v["slowdown_vs_drop"] for sz in report["renderer_border"]["sizes"].values() for v in sz["rules"].values()
        )
        <= 1.10,
        "build_3000_512_under_60s": ok_build,
        "build_3000_512_within_10pct_of_baseline_and_identical": (
            report["build_512_vs_baseline"]["wall_ratio"] <= 1.10 and report["build_512_vs_baseline"]["byte_identical"]
            if "wall_ratio" in report.get("build_512_vs_baseline", {})
            else None
        ),
        "input_throughput_1.5x_naive": report["input_throughput_ratio"] >= 1.5,
    }
    print("== summary ==")
    print(json.dumps(report["targets"], indent=2))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_report.json").write_text(json.dumps(report, indent=2))
    print(f"full report: {OUT / 'bench_report.json'}")


if __name__ == "__main__":
    main()
