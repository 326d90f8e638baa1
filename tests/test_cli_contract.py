"""The CLI contract, for every command: usage errors exit 2 with click's short message, domain errors
one ``error:`` line and exit 1, Ctrl-C 130, internal errors one line plus a saved traceback.

The commands are found by walking the typer app, so a command added later is covered without editing
this file. Most cases run in-process through :func:`gazeprep.cli.run` (what the console script runs);
the signal, broken-pipe and missing-extra cases run ``python -m gazeprep`` in a subprocess.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import typer

from gazeprep import cli

ROOT_COMMAND = typer.main.get_command(cli.app)


def _leaf_commands(group, path=()):
    out = []
    for name, sub in sorted(group.commands.items()):
        if getattr(sub, "commands", None):
            out += _leaf_commands(sub, (*path, name))
        else:
            out.append(((*path, name), sub))
    return out


LEAVES = _leaf_commands(ROOT_COMMAND)
IDS = [" ".join(p) for p, _ in LEAVES]
GROUPS = [()] + [(name,) for name, sub in ROOT_COMMAND.commands.items() if getattr(sub, "commands", None)]


def _visible_options(cmd):
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and not p.hidden]


def _value_options(cmd):
    """Visible options taking a value (not flags), with their parameter object."""
    return [
        p for p in _visible_options(cmd) if not getattr(p, "is_flag", False) and p.opts and p.opts[0].startswith("--")
    ]


def _kind(param) -> str:
    """'int', 'float', 'choice' or 'other', read from the help metavar the CLI shows."""
    mv = param.metavar or ""
    if mv == "INT":
        return "int"
    if mv == "FLOAT":
        return "float"
    if "|" in mv and "NUMBER" not in mv:
        return "choice"
    return "other"


def run(argv, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.run([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_usage_error(code, out, err, *, contains=None):
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    assert err.count("Error:") == 1, err
    assert re.search(r"Try 'gazeprep( [\w-]+)* --help' for help\.", err), err
    assert len(err.strip().splitlines()) <= 6, err  # usage line, pointer, blank, one message (maybe wrapped)
    if contains is not None:
        assert contains in err, err


def test_the_walk_finds_every_command():
    names = set(IDS)
    # the commands the issue names, plus the groups' leaves
    for expected in (
        "synth",
        "ingest",
        "datasets",
        "label-reports",
        "build-heatmaps",
        "recipes",
        "evaluate",
        "preview",
        "sweep-windows",
        "train",
        "predict",
        "models",
        "anatomy train",
        "anatomy predict",
        "anatomy export-masks",
    ):
        assert expected in names


# --- usage errors, every command -----------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=IDS)
def test_unknown_option_is_a_usage_error(path, capsys):
    code, out, err = run([*path, "--bogus-option-xyz"], capsys)
    assert_usage_error(code, out, err, contains="No such option: --bogus-option-xyz")


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=IDS)
def test_misspelt_option_gets_a_hint(path, capsys):
    cmd = next(c for p, c in LEAVES if p == path)
    opts = [o for p in _visible_options(cmd) for o in p.opts if o.startswith("--") and len(o) > 5 and o != "--help"]
    if not opts:
        pytest.skip(f"gazeprep {' '.join(path)} has no long option to misspell")
    typo = opts[0][:-1] + opts[0][-1] * 2  # --dataset -> --datasett
    code, out, err = run([*path, typo], capsys)
    assert_usage_error(code, out, err, contains=opts[0])  # "(Possible options: ...)" / "Did you mean"


@pytest.mark.parametrize(
    "path",
    [p for p, c in LEAVES if any(x.required for x in c.params)],
    ids=[i for i, (p, c) in zip(IDS, LEAVES) if any(x.required for x in c.params)],
)
def test_missing_required_value_is_a_usage_error(path, capsys):
    code, out, err = run(list(path), capsys)
    assert_usage_error(code, out, err)
    assert "Missing" in err


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=IDS)
def test_invalid_values_are_usage_errors(path, capsys):
    cmd = next(c for p, c in LEAVES if p == path)
    checked = 0
    for param in _value_options(cmd):
        kind = _kind(param)
        bad = {"int": "not-a-number", "float": "not-a-number", "choice": "no-such-choice"}.get(kind)
        if bad is None:
            continue
        code, out, err = run([*path, param.opts[0], bad], capsys)
        assert_usage_error(code, out, err, contains="Invalid value")
        assert param.opts[0] in err
        checked += 1
        lo = getattr(param, "min", None)
        if kind == "int" and lo is not None:  # out of range
            code, out, err = run([*path, param.opts[0], str(int(lo) - 1)], capsys)
            assert_usage_error(code, out, err, contains="Invalid value")
    if not checked:
        pytest.skip(f"gazeprep {' '.join(path)} has no typed option")


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "--dataset", "reflacx", "--workers", "0"],
        ["synth", "--dataset", "reflacx", "--cases", "0"],
        ["train", "--arch", "x", "--export", "e", "--epochs", "0"],
        ["anatomy", "train", "--preset", "tiny", "--epochs", "0"],
        ["anatomy", "train", "--preset", "tiny", "--val-fraction", "1.5"],
        ["sweep-windows", "--workers", "-1"],
        ["evaluate", "--n-boot", "3"],
        ["anatomy", "predict", "--executor", "dask"],
        ["sweep-windows", "--executor", "dask"],
        ["train", "--arch", "x", "--export", "e", "--device", "tpu"],
        ["anatomy", "export-masks", "--heart-cut-top", "2"],
        ["synth", "--dataset", "nope"],
        ["ingest", "--dataset", "nope"],
        ["evaluate", "--by", "case"],
        ["evaluate", "--iou-threshold", "best"],
        ["evaluate", "--gt-binarize", "otsu"],
        ["evaluate", "--out", "summary.txt"],
        ["sweep-windows", "--stage", "3"],
    ],
)
def test_out_of_range_and_unknown_choices(args, capsys):
    code, out, err = run(args, capsys)
    assert_usage_error(code, out, err, contains="Invalid value")


def test_unknown_command_says_did_you_mean(capsys):
    code, out, err = run(["datasetz"], capsys)
    assert_usage_error(code, out, err, contains="Did you mean 'datasets'?")
    code, out, err = run(["anatomy", "trian"], capsys)
    assert_usage_error(code, out, err, contains="Did you mean 'train'?")


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: " ".join(("gazeprep", *g)))
def test_a_group_without_a_command_prints_its_help_on_stderr_and_exits_2(group, capsys):
    code, out, err = run(list(group), capsys)
    assert code == 2  # click's convention for no_args_is_help
    assert out == ""
    assert "Usage: gazeprep" in err and "Commands:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "mode"),
    [
        (["synth", "--dataset", "reflacx", "--out", "{file}"], "folder"),
        (["ingest", "--dataset", "reflacx", "--out", "{file}"], "folder"),
        (["preview", "--export", "e", "--out", "{file}"], "folder"),
        (["train", "--arch", "x", "--export", "e", "--out", "{file}"], "folder"),
        (["predict", "--model", "m", "--export", "e", "--out", "{file}"], "folder"),
        (["anatomy", "train", "--preset", "tiny", "--out", "{file}"], "folder"),
        (["anatomy", "predict", "--model", "m", "--out", "{file}"], "folder"),
        (["anatomy", "export-masks", "--anatomy-dir", "a", "--out", "{file}"], "folder"),
        (["build-heatmaps", "--dataset", "reflacx", "--out", "{file}"], "folder"),
        (["label-reports", "r.csv", "--id-column", "i", "--text-column", "t", "--out", "{dir}"], "file"),
        (["evaluate", "--pred", "p", "--gt", "g", "--out", "{dir}/s.csv", "--pairs-out", "{dir}"], "file"),
    ],
)
def test_out_naming_the_wrong_kind_of_path_is_a_usage_error(args, mode, tmp_path, capsys):
    f = tmp_path / "exists.txt"
    f.write_text("keep me\n")
    argv = [a.replace("{file}", str(f)).replace("{dir}", str(tmp_path)) for a in args]
    code, out, err = run(argv, capsys)
    assert_usage_error(code, out, err, contains="Invalid value for '--")
    assert f.read_text() == "keep me\n"  # untouched


def test_preview_unknown_target_lists_the_known_ones(tmp_path, capsys):
    import numpy as np
    import polars as pl

    from gazeprep.export import CaseResult, finalize

    cases = pl.DataFrame(
        {"dataset": ["reflacx"], "case_id": ["c1"], "split": ["test"], "image_height_px": [8], "image_width_px": [8]}
    )
    maps = {"full": np.ones((8, 8), np.float32), "pleural_abnormality": np.ones((8, 8), np.float32)}
    export = finalize(tmp_path / "ex", [CaseResult("c1", "h-c1", {"cases": cases}, maps)], recipe=None, fsync=False)
    code, out, err = run(
        ["preview", "--export", export, "--case", "c1", "--target", "pleural_abnormalty", "--out", tmp_path / "pv"],
        capsys,
    )
    assert_usage_error(code, out, err, contains="'pleural_abnormalty'")
    assert "full, pleural_abnormality" in err
    assert not (tmp_path / "pv").exists()


# --- hidden old spellings still parse, and the vocabulary is one ---------------------------------

ALIASES = [
    (("synth",), "--mimic-root", "--images", "images"),
    (("ingest",), "--mimic-root", "--images", "images"),
    (("train",), "--images-root", "--images", "images"),
    (("train",), "--model", "--arch", "arch"),
    (("predict",), "--images-root", "--images", "images"),
    (("predict",), "--model-dir", "--model", "model"),
    (("anatomy", "train"), "--config", "--preset", "preset"),
]


ALIAS_BASE = {
    ("synth",): ["--dataset", "reflacx", "--out", "o"],
    ("ingest",): ["--dataset", "reflacx", "--out", "o"],
    ("train",): ["--arch", "x", "--export", "e"],
    ("predict",): ["--model", "m", "--export", "e", "--out", "o"],
}


@pytest.mark.parametrize(("path", "old", "new", "dest"), ALIASES, ids=[f"{' '.join(a[0])} {a[1]}" for a in ALIASES])
def test_old_spellings_are_hidden_but_still_work(path, old, new, dest, capsys, monkeypatch):
    cmd = next(c for p, c in LEAVES if p == path)
    shown = {o for p in _visible_options(cmd) for o in p.opts}
    assert new in shown and old not in shown
    code, out, err = run([*path, "--help"], capsys)
    assert code == 0 and new in out and f"{old} " not in out
    if path == ("anatomy", "train"):  # --config NAME: a preset name here (never a YAML file)
        import gazeprep.commands.anatomy as A

        assert A._preset_of(None, "tiny") == "tiny"
        code, out, err = run([*path, old, "tiny", "--epochs", "0"], capsys)  # parses, then a range error
        assert_usage_error(code, out, err, contains="--epochs")
        return
    # run the command body up to the merge of the new and old spellings and look at what it was given
    import gazeprep.commands as C

    real = C.merge_alias
    seen = {}

    class Reached(Exception):
        pass

    def spy(value, old_value, name, old_name):
        seen[name] = (value, old_value)
        if name == new:
            raise Reached
        return real(value, old_value, name, old_name)

    module = {"predict": "train"}.get(path[0], path[0])  # predict lives in commands/train.py
    monkeypatch.setattr(f"gazeprep.commands.{module}.merge_alias", spy)
    base = list(ALIAS_BASE[path])
    if new in base:  # testing the old spelling of an option the base gives: drop the new one
        i = base.index(new)
        del base[i : i + 2]
    command = typer.main.get_command(cli.app)
    with pytest.raises(Reached):
        with command.make_context("gazeprep", [*path, *base, old, "some/where"]) as ctx:
            command.invoke(ctx)
    want = "some/where" if dest == "arch" else Path("some/where")
    assert seen[new] == (None, want)
    assert real(None, want, new, old) == want


def test_old_and_new_spelling_with_different_values_is_a_usage_error(capsys):
    code, out, err = run(["train", "--arch", "a", "--model", "b", "--export", "e"], capsys)
    assert_usage_error(code, out, err, contains="give --arch once")
    code, out, err = run(["anatomy", "train", "--config", "cfg.yaml", "--out", "o"], capsys)
    assert_usage_error(code, out, err, contains="--preset")


def test_one_vocabulary_in_help():
    """No visible old spelling anywhere; --config is always a file, --model always a folder."""
    for path, cmd in LEAVES:
        for p in _visible_options(cmd):
            for o in p.opts + p.secondary_opts:
                assert o not in ("--mimic-root", "--images-root", "--model-dir", "--progress", "--no-progress"), (
                    path,
                    o,
                )
            if "--config" in p.opts:
                assert p.metavar == "PATH", path
            if "--model" in p.opts:
                assert p.metavar in ("PATH", "FOLDER"), path


@pytest.mark.parametrize("path", [(), *[p for p, _ in LEAVES]], ids=["gazeprep", *IDS])
def test_help_reads_well(path, capsys):
    code, out, err = run([*path, "--help"], capsys)
    assert code == 0 and err == ""
    for bad in ("<bool>", "<list[", "<str>", "<int", "<float", "<path>", "0.333333"):
        assert bad not in out, (bad, out)
    usage = out.strip().splitlines()[0]
    assert usage.startswith("Usage: gazeprep") and "{" not in usage, usage
    assert not re.search(r"default: \d+\.\d{5,}", out), out
    if not path:
        assert "--install-completion" in out and "--debug" in out


# --- domain errors, interrupts, internal errors -------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "--dataset", "reflacx", "--root", "{tmp}/missing", "--out", "{tmp}/o"],
        ["build-heatmaps", "--dataset", "reflacx", "--root", "{tmp}/missing", "--out", "{tmp}/o"],
        ["info", "{tmp}/missing"],
        ["evaluate", "--pred", "{tmp}/missing", "--gt", "{tmp}/missing"],
        ["label-reports", "{tmp}/missing.csv", "--id-column", "i", "--text-column", "t", "--out", "{tmp}/m.parquet"],
    ],
)
def test_domain_errors_are_one_error_line_and_exit_1(args, tmp_path, capsys):
    code, out, err = run([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 1, err
    assert "Traceback" not in out + err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err


def _patch_ingest(monkeypatch, exc):
    import gazeprep.datasets.writer as writer

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(writer, "ingest", boom)


def test_keyboard_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    _patch_ingest(monkeypatch, KeyboardInterrupt())
    code, out, err = run(["ingest", "--dataset", "reflacx", "--out", tmp_path / "o"], capsys)
    assert code == 130
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1 and "rerun the same command to resume" in lines[0]
    assert "Traceback" not in err


def test_interrupt_line_stands_alone_when_a_progress_bar_was_left_open(tmp_path, capsys, monkeypatch):
    """One Ctrl-C can raise twice (polars raises inside Rust, Python again at the next bytecode), the
    second time inside the ``finally`` that closes the progress bar: the bar stays open mid-line."""
    import sys

    from tqdm import tqdm

    import gazeprep.datasets.writer as writer

    def interrupted_with_an_open_bar(*args, **kwargs):
        bar = tqdm(total=10, desc="cases", file=sys.stderr)
        bar.update(3)  # drawn, no newline; never closed
        monkeypatch.setattr(bar, "close", lambda: None)  # as if the cleanup itself was interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "ingest", interrupted_with_an_open_bar)
    code, out, err = run(["ingest", "--dataset", "reflacx", "--out", tmp_path / "o"], capsys)
    assert code == 130
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1 and lines[0] == cli.INTERRUPTED_MESSAGE, repr(err)


def test_abort_exits_130(tmp_path, capsys, monkeypatch):
    _patch_ingest(monkeypatch, typer.Abort())
    code, out, err = run(["ingest", "--dataset", "reflacx", "--out", tmp_path / "o"], capsys)
    assert code == 130 and "interrupted:" in err


def test_main_exits_with_the_code(tmp_path, monkeypatch, capsys):
    _patch_ingest(monkeypatch, KeyboardInterrupt())
    with pytest.raises(SystemExit) as exc:
        cli.main(["ingest", "--dataset", "reflacx", "--out", str(tmp_path / "o")])
    assert exc.value.code == 130
    cli.main(["datasets"])  # success returns normally (tests and scripts call main() directly)


def test_unexpected_exception_is_one_line_and_a_saved_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(cli.TRACEBACK_DIR_ENV, str(tmp_path / "tb"))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    _patch_ingest(monkeypatch, ZeroDivisionError("float division by zero"))
    code, out, err = run(["ingest", "--dataset", "reflacx", "--out", tmp_path / "o"], capsys)
    assert code == 1
    assert "Traceback" not in out + err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    m = re.fullmatch(
        r"error: internal error: ZeroDivisionError: float division by zero \(traceback saved to (.+)\)", errors[0]
    )
    assert m, errors[0]
    saved = Path(m.group(1))
    assert saved.parent == tmp_path / "tb" and saved.is_file()
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError: float division by zero" in text
    assert "gazeprep ingest --dataset reflacx" in text  # the command line, to reproduce


@pytest.mark.parametrize("how", ["flag", "flag after the command", "env"])
def test_debug_shows_the_traceback(how, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(cli.TRACEBACK_DIR_ENV, str(tmp_path / "tb"))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    _patch_ingest(monkeypatch, ZeroDivisionError("float division by zero"))
    argv = ["ingest", "--dataset", "reflacx", "--out", tmp_path / "o"]
    if how == "flag":
        argv = ["--debug", *argv]
    elif how == "flag after the command":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv(cli.DEBUG_ENV, "1")
    code, out, err = run(argv, capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "in boom" in err
    assert "error: internal error: ZeroDivisionError" in err


def test_without_debug_there_is_no_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(cli.TRACEBACK_DIR_ENV, str(tmp_path / "tb"))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    _patch_ingest(monkeypatch, ZeroDivisionError("x"))
    code, out, err = run(["ingest", "--dataset", "reflacx", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) <= 2  # (+ the --root note)


def test_shell_completion_is_on():
    env = {
        **os.environ,
        "_GAZEPREP_COMPLETE": "complete_bash",
        "COMP_WORDS": "gazeprep synth --dataset ",
        "COMP_CWORD": "3",
        "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1]),
    }
    proc = subprocess.run([sys.executable, "-m", "gazeprep"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["reflacx", "egd-cxr", "mimic-cxr"]
    env.update(COMP_WORDS="gazeprep datas", COMP_CWORD="1")
    proc = subprocess.run([sys.executable, "-m", "gazeprep"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.split() == ["datasets"]


def test_debug_on_a_domain_error_keeps_exit_1(tmp_path, capsys):
    code, out, err = run(
        ["--debug", "ingest", "--dataset", "reflacx", "--root", tmp_path / "missing", "--out", tmp_path / "o"], capsys
    )
    assert code == 1 and "Traceback (most recent call last)" in err and "error:" in err


# --- subprocesses: the [ml] extra, a real Ctrl-C, a closed pipe -------------------------------------

BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class _NoML:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "segment_anything", "timm"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoML())
    sys.modules.pop("torch", None)
    from gazeprep.cli import main

    sys.argv = ["gazeprep", *sys.argv[1:]]
    main()
    """
)

ML_COMMANDS = [
    ["models"],
    ["train", "--arch", "ggcam-resnet50", "--export", "{tmp}"],
    ["predict", "--model", "{tmp}", "--export", "{tmp}", "--out", "{tmp}/p"],
    ["anatomy", "train", "--preset", "tiny", "--out", "{tmp}/m"],
    ["anatomy", "predict", "--model", "{tmp}", "--out", "{tmp}/a"],
]


def _python(args, **kw):
    env = dict(os.environ)
    env.pop(cli.DEBUG_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(cli.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300, **kw)


@pytest.mark.parametrize("args", ML_COMMANDS, ids=[" ".join(a[:2]) for a in ML_COMMANDS])
def test_torch_commands_without_the_ml_extra_say_so_in_one_line(args, tmp_path):
    proc = _python(["-c", BLOCK_TORCH, *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: gazeprep ") and "pip install 'gazeprep[ml]'" in lines[0]


def test_help_of_every_command_works_without_torch():
    paths = ["--help"] + [" ".join([*p, "--help"]) for p, _ in LEAVES]
    script = BLOCK_TORCH.replace(
        'sys.argv = ["gazeprep", *sys.argv[1:]]\nmain()',
        "from gazeprep.cli import run\n"
        f"codes = [run(a.split()) for a in {paths!r}]\n"
        "assert codes == [0] * len(codes), codes\n"
        "assert 'torch' not in sys.modules\n",
    )
    proc = _python(["-c", script])
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_closed_stdout_exits_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "gazeprep", "recipes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])},
    )
    proc.stdout.close()  # like `| head -0`: nobody reads
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == cli.EXIT_BROKEN_PIPE
    assert "Traceback" not in err and "error" not in err.lower()


@pytest.mark.slow
def test_ctrl_c_during_build_heatmaps_exits_130_and_commits_nothing(tmp_path):
    """A real SIGINT to a running build on a freshly synthesised release bigger than the sample data."""
    root, out = tmp_path / "reflacx", tmp_path / "out"
    proc = _python(
        [
            "-m",
            "gazeprep",
            "synth",
            "--dataset",
            "reflacx",
            "--cases",
            "200",
            "--gaze-cases",
            "0",
            "--out",
            str(root),
            "--quiet",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(cli.__file__).resolve().parents[1])
    build = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gazeprep",
            "build-heatmaps",
            "--dataset",
            "reflacx",
            "--root",
            str(root),
            "--out",
            str(out),
            "--workers",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    chunks: list[str] = []

    def pump():
        for ch in iter(lambda: build.stderr.read(1), ""):
            chunks.append(ch)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    started = re.compile(r"\|\s*([1-9]\d*)/(\d+)")  # tqdm: at least one case done
    while time.monotonic() < deadline and build.poll() is None:
        m = started.search("".join(chunks))
        if m and int(m.group(1)) < int(m.group(2)):
            break
        time.sleep(0.05)
    assert build.poll() is None, "the build ended before it could be interrupted: " + "".join(chunks)[-500:]
    build.send_signal(signal.SIGINT)
    code = build.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(chunks)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1 and "rerun the same command to resume" in lines[0], repr(err[-1500:])
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("command", [["anatomy", "predict", "--model", "m"], ["anatomy", "train"]])
def test_anatomy_dataset_is_any_registered_dataset_or_definition_file(command, tmp_path, capsys):
    """`anatomy train/predict --dataset` take what build-heatmaps takes (one vocabulary): an unknown name
    lists the registered ones; a missing definition file is named."""
    code, out, err = run([*command, "--dataset", "nope", "--out", tmp_path / "o"], capsys)
    assert_usage_error(code, out, err)
    assert "unknown dataset 'nope'" in err and "reflacx" in err and "egd-cxr" in err
    code, out, err = run([*command, "--dataset", tmp_path / "missing.yaml", "--out", tmp_path / "o"], capsys)
    assert_usage_error(code, out, err)
    assert "missing.yaml" in err and "not found" in err
