"""`gazeprep ingest` / `gazeprep datasets` and the Parquet writer."""

from __future__ import annotations

import polars as pl
import pytest
from ingest_fixtures import write_egd, write_mimic, write_reflacx

from gazeprep import schema
from gazeprep.cli import main
from gazeprep.datasets import get_adapter, ingest, list_datasets, register_dataset
from gazeprep.datasets.base import DatasetAdapter
from gazeprep.errors import GazeprepError


def test_registry():
    assert {"reflacx", "egd-cxr", "mimic-cxr"} <= set(list_datasets())
    with pytest.raises(GazeprepError) as e:
        get_adapter("reflax")
    assert "unknown dataset 'reflax'; known datasets: egd-cxr, mimic-cxr, reflacx" in str(e.value)


def test_register_a_new_dataset_is_one_class():
    @register_dataset
    class Toy(DatasetAdapter):
        name = "toy-test"
        description = "a toy"

    try:
        assert "toy-test" in list_datasets() and get_adapter("toy-test").description == "a toy"
    finally:
        from gazeprep.datasets import registry

        registry.DATASETS.unregister("toy-test")


def test_ingest_writes_all_tables(tmp_path):
    write_reflacx(tmp_path / "r")
    counts = ingest("reflacx", tmp_path / "r", tmp_path / "out", gaze_samples=True, progress=False)
    assert counts["cases"] == 3 and counts["fixations"] == 6 and counts["gaze_samples"] == 10 and counts["rejects"] == 0
    for name, n in counts.items():
        df = pl.read_parquet(tmp_path / "out" / f"{name}.parquet")
        schema.validate(df, name)
        assert df.height == n
    # worker processes give the same tables
    ingest("reflacx", tmp_path / "r", tmp_path / "out2", gaze_samples=True, progress=False, workers=2)
    for name in counts:
        assert pl.read_parquet(tmp_path / "out" / f"{name}.parquet").equals(
            pl.read_parquet(tmp_path / "out2" / f"{name}.parquet")
        )


def test_ingest_collects_rejects(tmp_path):
    write_reflacx(tmp_path / "r")
    (tmp_path / "r/main_data/P102R000001/fixations.csv").unlink()
    ingest("reflacx", tmp_path / "r", tmp_path / "out", progress=False)
    rej = pl.read_parquet(tmp_path / "out/rejects.parquet")
    assert rej.select("case_id", "file").row(0) == ("P102R000001", "main_data/P102R000001/fixations.csv")
    assert set(pl.read_parquet(tmp_path / "out/fixations.parquet")["case_id"]) == {"P201R000002"}


def test_cli_ingest_egd_with_mimic(tmp_path, capsys):
    ids = write_egd(tmp_path / "egd")
    write_mimic(tmp_path / "mimic", [(ids["real"], 15628804, 58573295, 3056, 2544)])
    argv = ["ingest", "--dataset", "egd-cxr", "--root", str(tmp_path / "egd"), "--out", str(tmp_path / "o")]
    assert run_main([*argv, "--mimic-root", str(tmp_path / "mimic"), "--gaze-samples"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "fixations 5" in out and "masks 4" in out
    fx = pl.read_parquet(tmp_path / "o/fixations.parquet")
    assert sorted(int(v) for v in fx.filter(pl.col("case_id") == ids["real"])["x_px"]) == [642, 952, 998]
    assert pl.read_parquet(tmp_path / "o/gaze_samples.parquet").height == 5


def run_main(argv):
    try:
        main(argv)
    except SystemExit as e:
        return e.code or 0
    return 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    # an unknown dataset name is an invalid option value: a usage error (exit 2, click's usage message)
    assert run_main(["ingest", "--dataset", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'; known datasets: egd-cxr, mimic-cxr, reflacx" in err and "Traceback" not in err
    assert (
        run_main(["ingest", "--dataset", "reflacx", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
        == 1
    )
    assert "release folder not found" in capsys.readouterr().err
    assert (
        run_main(
            [
                "ingest",
                "--dataset",
                "mimic-cxr",
                "--root",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--mimic-root",
                str(tmp_path),
            ]
        )
        == 1
    )
    # every adapter takes the MIMIC root (mimic-cxr ignores it); here the folder has no metadata table
    assert "mimic-cxr-2.0.0-metadata.csv[.gz]: file not found" in capsys.readouterr().err


def test_cli_default_root_message(tmp_path, capsys, monkeypatch):
    import gazeprep.paths

    monkeypatch.setattr(gazeprep.paths, "sample_data_dir", lambda: tmp_path / "sd")
    write_reflacx(tmp_path / "sd" / "reflacx")
    assert run_main(["ingest", "--dataset", "reflacx", "--out", str(tmp_path / "o")]) == 0
    assert f"--root not given: using the bundled sample data {tmp_path / 'sd' / 'reflacx'}" in capsys.readouterr().err


def test_cli_datasets(capsys):
    assert run_main(["datasets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["egd-cxr", "mimic-cxr", "reflacx"]
    assert all(len(ln.split(None, 1)[1]) > 10 for ln in lines)
