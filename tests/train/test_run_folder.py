"""Run folders: a folder holding a run of another config is refused (run.yaml and model.pt untouched)
unless --force; the same config continues from its checkpoint and says so; --resume refuses another
config and a folder without a run."""

import pytest
import yaml
from _run_exports import cli, tiny_config, write_export


@pytest.fixture(scope="module")
def egd(tmp_path_factory):
    return write_export(tmp_path_factory.mktemp("exports"), "egd")


def _train(egd, run, cfg, *extra):
    export, images = egd
    return cli(
        [
            "train",
            "--arch",
            "karargyris-unet",
            "--export",
            export,
            "--config",
            cfg,
            "--out",
            run,
            "--images",
            images,
            "--device",
            "cpu",
            "--quiet",
            *extra,
        ]
    )


def _err_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_refuse_resume_force(egd, tmp_path, capsys):
    run = tmp_path / "run"
    # a run "killed" after its first epoch (stop_after_epochs only says how it runs: not part of the config)
    first = tiny_config(tmp_path, "a.yaml", train={"epochs": 2, "stop_after_epochs": 1})
    same = tiny_config(tmp_path, "b.yaml", train={"epochs": 2})
    other = tiny_config(tmp_path, "c.yaml", train={"epochs": 2, "lr": 0.01})
    assert _train(egd, run, first) == 0
    capsys.readouterr()
    stored = (run / "run.yaml").read_bytes()
    ckpt = (run / "checkpoint.pt").read_bytes()
    assert yaml.safe_load(stored)["config"]["train"]["lr"] == 0.003

    # another config: refused, one line naming the difference, nothing rewritten
    assert _train(egd, run, other) == 1
    line = _err_line(capsys.readouterr().err)
    assert "train.lr: 0.003 -> 0.01" in line and "--force" in line
    assert (run / "run.yaml").read_bytes() == stored and (run / "checkpoint.pt").read_bytes() == ckpt
    assert _train(egd, run, other, "--resume") == 1
    assert "--resume continues only a run of the same config" in _err_line(capsys.readouterr().err)
    assert (run / "run.yaml").read_bytes() == stored

    # the same config continues and says so
    assert _train(egd, run, same, "--resume") == 0
    out, err = capsys.readouterr()
    assert f"resuming run {run} from epoch 1 of 2" in err
    assert "trained karargyris-unet: 2 epochs" in out
    assert (run / "run.yaml").read_bytes() == stored  # never rewritten by a resume
    model = (run / "model.pt").read_bytes()

    # rerunning a finished run trains nothing and says so
    assert _train(egd, run, same) == 0
    assert "is complete (2 of 2 epochs); nothing to train" in capsys.readouterr().err
    assert (run / "model.pt").read_bytes() == model

    # --force starts over with the new config: run.yaml and model.pt agree again
    assert _train(egd, run, other, "--force") == 0
    out, err = capsys.readouterr()
    assert "--force: removed the previous run's run.yaml" in err
    info = yaml.safe_load((run / "run.yaml").read_text())
    assert info["config"]["train"]["lr"] == 0.01
    import torch

    assert torch.load(run / "checkpoint.pt", weights_only=True)["history"][0]["lr"] == 0.01


def test_resume_without_a_run_and_both_flags(egd, tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert _train(egd, tmp_path / "none", cfg, "--resume") == 1
    assert "holds no run to resume" in _err_line(capsys.readouterr().err)
    assert not (tmp_path / "none" / "run.yaml").exists()
    assert _train(egd, tmp_path / "x", cfg, "--resume", "--force") == 2
    err = capsys.readouterr().err
    assert "give one" in err and "Traceback" not in err


def test_leftover_checkpoint_without_run_yaml_is_refused(egd, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not ours")
    (run / "notes.txt").write_text("keep me")
    cfg = tiny_config(tmp_path, train={"epochs": 1})
    assert _train(egd, run, cfg) == 1
    assert "checkpoint.pt but no run.yaml" in _err_line(capsys.readouterr().err)
    assert _train(egd, run, cfg, "--force") == 0
    assert (run / "notes.txt").read_text() == "keep me"  # --force removes only the run's own files
    assert (run / "model.pt").is_file()


def test_config_differences_reads_nested_keys():
    from gazeprep.train.run import config_differences

    a = {"model": "m", "config": {"train": {"lr": 1e-3, "device": "cpu"}, "data": {"labels": ["a", "b"]}}}
    b = {"model": "m", "config": {"train": {"lr": 1e-3, "device": "cuda"}, "data": {"labels": ("a", "b")}}}
    assert config_differences(a, b) == []  # the device says how it runs; tuples equal lists
    c = {
        "model": "n",
        "config": {"train": {"lr": 1e-2}, "data": {"labels": ["a"]}},
        "export": {"recipe": "r", "recipe_hash": "1" * 64},
    }
    d = dict(a, export={"recipe": "s", "recipe_hash": "2" * 64})
    diffs = config_differences(d, c)
    assert diffs[0] == "model: m -> n"
    assert "train.lr: 0.001 -> 0.01" in diffs and "data.labels: ['a', 'b'] -> ['a']" in diffs
    assert any(x.startswith("export recipe: s (") for x in diffs)


def test_a_corrupt_run_yaml_is_refused_and_force_starts_over(egd, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text("config: [unclosed\n", encoding="utf-8")
    cfg = tiny_config(tmp_path, "a.yaml", train={"epochs": 1})
    assert _train(egd, run, cfg) == 1
    line = _err_line(capsys.readouterr().err)
    assert "run.yaml: not valid YAML" in line and "--force" in line
    # the message's advice works: --force does not read the corrupt file, it starts the run over
    assert _train(egd, run, cfg, "--force") == 0
    assert yaml.safe_load((run / "run.yaml").read_text(encoding="utf-8"))["config"]["train"]["epochs"] == 1
