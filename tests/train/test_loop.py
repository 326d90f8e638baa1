"""Checkpoints: atomic, weights_only-loadable; resume ends where an uninterrupted run ends."""

import torch

from gazeprep.train.data import GazeDataset
from gazeprep.train.loop import CHECKPOINT, TrainConfig, fit, load_checkpoint
from gazeprep.train.models import get_model, get_objective
from gazeprep.train.synthetic import CLASSES, make_synthetic_export


def _setup():
    ex = make_synthetic_export(12)
    cfg = {"preset": "tiny", "data": {"labels": list(CLASSES)}}
    ds = GazeDataset(ex, targets=["full"], labels=list(CLASSES), size=48, augment=True, seed=5)
    torch.manual_seed(0)
    return get_model("ggcam-resnet50", cfg), get_objective("ggcam-resnet50", cfg), ds


def test_resume_gives_the_same_weights_as_uninterrupted(tmp_path):
    base = dict(epochs=3, batch_size=4, lr=3e-3, progress=False, recalibrate_bn=True, seed=1)
    m1, o1, ds1 = _setup()
    h1 = fit(m1, o1, ds1, TrainConfig(**base, out_dir=str(tmp_path / "a")))
    m2, o2, ds2 = _setup()
    fit(m2, o2, ds2, TrainConfig(**base, out_dir=str(tmp_path / "b"), stop_after_epochs=1))
    ck = load_checkpoint(tmp_path / "b" / CHECKPOINT)
    assert ck["epoch"] == 1
    m3, o3, ds3 = _setup()  # a fresh process would rebuild from scratch, then resume
    h3 = fit(m3, o3, ds3, TrainConfig(**base, out_dir=str(tmp_path / "b")))
    s1, s3 = m1.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s3[k]) for k in s1)
    assert torch.equal(o1.weighting.sigma_sm, o3.weighting.sigma_sm)
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h3]
    assert not list((tmp_path / "b").glob("*.tmp"))  # atomic writes leave no temporary files
    # a different seed really gives different weights (the comparison above can fail)
    m4, o4, ds4 = _setup()
    fit(m4, o4, ds4, TrainConfig(**{**base, "seed": 2}))
    assert not all(torch.equal(s1[k], m4.state_dict()[k]) for k in s1)
