"""A bad checkpoint file is one GazeprepError naming it; a bug is not mistaken for a bad file."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from gazeprep.anatomy import model as model_mod
from gazeprep.anatomy.model import load_state_dict_file
from gazeprep.errors import GazeprepError


def _torch_bytes(obj, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


GOOD = _torch_bytes({"w": torch.arange(4.0)})


@pytest.mark.parametrize(
    "name,data",
    [
        ("empty", b""),
        ("text", b"hello world\n"),
        ("random", bytes(range(256)) * 8),
        ("truncated zip", GOOD[: len(GOOD) // 2]),
        ("pickled object", pickle.dumps(object())),
        ("pickled int", pickle.dumps(5)),
        ("legacy truncated", _torch_bytes({"w": torch.ones(2)}, _use_new_zipfile_serialization=False)[:40]),
    ],
)
def test_bad_checkpoint_is_one_error_naming_the_file(tmp_path, name, data):
    p = tmp_path / "ckpt.pt"
    p.write_bytes(data)
    with pytest.raises(GazeprepError) as ei:
        load_state_dict_file(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: cannot read as a torch state dict (") and "\n" not in msg.strip()


def test_good_checkpoint_and_nested_model_key(tmp_path):
    p = tmp_path / "a.pt"
    p.write_bytes(GOOD)
    assert torch.equal(load_state_dict_file(p)["w"], torch.arange(4.0))
    p.write_bytes(_torch_bytes({"model": {"w": torch.ones(1)}, "epoch": 3}))
    assert list(load_state_dict_file(p)) == ["w"]
    with pytest.raises(GazeprepError, match="not found"):
        load_state_dict_file(tmp_path / "missing.pt")


def test_a_bug_inside_torch_load_is_not_reported_as_a_bad_file(tmp_path, monkeypatch):
    p = tmp_path / "a.pt"
    p.write_bytes(GOOD)

    def broken(*a, **k):
        raise ImportError("packaging bug")

    monkeypatch.setattr(model_mod.torch, "load", broken)
    with pytest.raises(ImportError):
        load_state_dict_file(p)


def test_read_fault_is_a_storage_error(tmp_path, monkeypatch):
    from gazeprep.errors import StorageError

    p = tmp_path / "a.pt"
    p.write_bytes(GOOD)

    def eio(*a, **k):
        raise OSError(5, os.strerror(5))

    monkeypatch.setattr(model_mod.torch, "load", eio)
    with pytest.raises(StorageError, match=r"a\.pt: Input/output error"):
        load_state_dict_file(p)
